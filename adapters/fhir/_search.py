"""Turn FHIR search parameters into SQL over the record's index tables.

The index holds, for the current version of each resource, every identifier
(fhir_token) and its `subject`/`patient` references (fhir_ref), each row naming its
resource by the integer key `rid` (fhir_resource). Parameters are ANDed.
SQL uses `?` placeholders; the PostgreSQL store converts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from router.contracts import FhirJson
from router.errors import InvalidContent

SEARCH_PARAMS = ("_id", "identifier", "patient", "subject", "_tag")
"""Search parameters the record understands, on every resource type."""

INDEXED_TAG_SYSTEMS = ("urn:helsebro:document",)
"""meta.tag systems the record indexes for `_tag` (Helsebro's document identity)."""

REFERENCE_ELEMENTS = ("subject", "patient")
"""Top-level elements whose references are indexed for `patient` and `subject`."""

# `r.rid IN (subquery)` rather than a correlated EXISTS: both planners then drive the
# search from the index on the value, instead of probing once per resource of the type.
_TOKEN = "r.rid IN (SELECT t.rid FROM fhir_token t WHERE t.type = ?{})"
_REF = "r.rid IN (SELECT f.rid FROM fhir_ref f WHERE f.type = ? AND f.target = ? AND f.param {})"
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)  # FHIR search escaping: a backslash takes the next character as it is
_BODY = " JOIN fhir_history h ON h.rid = r.rid AND h.version = r.version"
"""The current version's body is the history row of the current version (fhir_resource holds no body)."""


Term = str | tuple[str | None, str | None]
"""One value a parameter may match: a string, or for `identifier` its (system, code), None for any."""


def search_sql(resource_type: str, params: Iterable[tuple[str, str]], *, select: str) -> tuple[str, list[Any]]:
    """Return SQL and arguments selecting *select* from current resources matching *params*, in id order.

    *params* are a conditional URL's pairs (a transaction's criteria), each one value as the
    mapping engine writes it: `system|value` split at its first bar, no FHIR escapes.
    *select* names columns of `r` (fhir_resource) or `h.body`, the current version's body.

    Raises:
        InvalidContent: a parameter is unknown or its value is empty or malformed.
    """
    terms = []
    for name, value in params:
        if not value:
            raise InvalidContent("search parameter has no value", location=name)
        terms.append((name, [_criteria_term(name, value)]))
    return terms_sql(resource_type, terms, select=select)


def terms_sql(
    resource_type: str,
    params: Iterable[tuple[str, Sequence[Term]]],
    *,
    select: str,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[str, list[Any]]:
    """Return SQL and arguments selecting *select* from current resources matching *params*.

    Each parameter matches any of its terms (FHIR's `a,b`); parameters, a repeated one
    too, are ANDed. *after* keeps the ids after it, *limit* the first that many in id order
    (a page); `select="COUNT(*)"` counts instead, unordered.

    Raises:
        InvalidContent: a parameter is unknown or a term is empty or malformed.
    """
    where = ["r.type = ?", "r.deleted = 0"]
    args: list[Any] = [resource_type]
    by_index = False  # a token or reference subquery constrains the search
    for name, values in params:
        clauses = []
        for value in values:
            clause, more, indexed = _clause(resource_type, name, value)
            clauses.append(clause)
            args.extend(more)
            by_index = by_index or indexed
        if not clauses:
            raise InvalidContent("search parameter has no value", location=name)
        where.append(clauses[0] if len(clauses) == 1 else f"({' OR '.join(clauses)})")
    if by_index:
        # The subquery names resources of this type only (a rid is one resource). Without
        # `r.type = ?`, SQLite drives the search from the subquery's rids rather than scanning
        # the type in id order to test each one.
        del where[0], args[0]
    if after is not None:
        where.append("r.id > ?")
        args.append(after)
    body = _BODY if "h." in select else ""
    sql = f"SELECT {select} FROM fhir_resource r{body} WHERE {' AND '.join(where)}"
    if select == "COUNT(*)":
        return sql, args
    sql += " ORDER BY r.id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


def rest_terms(name: str, value: str) -> list[Term]:
    """Return the terms of one REST search value: its `,` alternatives, FHIR escapes undone.

    FHIR §3.1.1.5.7: `\\,` `\\|` `\\$` and `\\\\` are a comma, bar, dollar and backslash inside a
    value; an unescaped bar splits a token's system from its code.

    Raises:
        InvalidContent: an alternative is empty.
    """
    terms: list[Term] = []
    for part in _split(value, ","):
        if not part:
            raise InvalidContent("search parameter has no value", location=name)
        pieces = _split(part, "|", 1)
        if name == "identifier":
            terms.append((None, _unescape(part)) if len(pieces) == 1 else (_unescape(pieces[0]), _unescape(pieces[1]) or None))
        else:  # _tag's target is stored as `system|code`; other values hold no bar of their own
            terms.append("|".join(_unescape(p) for p in pieces))
    return terms


def _split(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    """Split *text* at each *separator* no backslash escapes, keeping the escapes in the parts."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == separator and maxsplit != 0:
            parts.append(text[start:i])
            start, maxsplit = i + 1, maxsplit - 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


def _criteria_term(name: str, value: str) -> Term:
    if name != "identifier":
        return value
    # FHIR token syntax: `value` (any system), `system|value`, `|value` (no system),
    # `system|` (any value in that system).
    system, bar, code = value.partition("|")
    return (None, value) if not bar else (system, code or None)


def _clause(resource_type: str, name: str, value: Term) -> tuple[str, list[Any], bool]:
    """Return one term's WHERE clause, its arguments, and whether it searches an index."""
    if isinstance(value, tuple):
        if name != "identifier":
            raise InvalidContent("unsupported search parameter", location=name)
        system, code = value
        if code is None:
            return _TOKEN.format(" AND t.system = ?"), [resource_type, system], True
        if system is None:
            return _TOKEN.format(" AND t.value = ?"), [resource_type, code], True
        return _TOKEN.format(" AND t.value = ? AND t.system = ?"), [resource_type, code, system], True
    if not value:
        raise InvalidContent("search parameter has no value", location=name)
    if name == "_id":
        return "r.id = ?", [value], False
    if name == "_tag":
        return _REF.format("= '_tag'"), [resource_type, value], True
    if name in ("patient", "subject"):
        target = value if "/" in value else f"Patient/{value}"
        if name == "patient" and not target.startswith("Patient/"):
            raise InvalidContent("patient must name a Patient", location=name)
        return _REF.format("IN ('subject', 'patient')" if name == "patient" else "= 'subject'"), [resource_type, target], True
    if name == "identifier":
        return _clause(resource_type, name, _criteria_term(name, value))
    raise InvalidContent("unsupported search parameter", location=name)


def references(resource: FhirJson) -> list[tuple[str, str]]:
    """Return (element, reference) for the indexed references of *resource*, and its indexed tags as ("_tag", "system|code")."""
    out: list[tuple[str, str]] = []
    meta = resource.get("meta")
    for tag in meta.get("tag", []) if isinstance(meta, dict) else []:
        if isinstance(tag, dict) and tag.get("system") in INDEXED_TAG_SYSTEMS and isinstance(tag.get("code"), str):
            out.append(("_tag", f"{tag['system']}|{tag['code']}"))
    for element in REFERENCE_ELEMENTS:
        value = resource.get(element)
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                out.append((element, ref["reference"]))
    return out
