"""Turn FHIR search parameters into SQL over the record's index tables.

The index holds, for the current version of each resource, every identifier
(fhir_token) and its `subject`/`patient` references (fhir_ref), each row naming its
resource by the integer key `rid` (fhir_resource). Parameters are ANDed.
SQL uses `?` placeholders; the PostgreSQL store converts them.
"""

from __future__ import annotations

from collections.abc import Iterable
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
_BODY = " JOIN fhir_history h ON h.rid = r.rid AND h.version = r.version"
"""The current version's body is the history row of the current version (fhir_resource holds no body)."""


def search_sql(resource_type: str, params: Iterable[tuple[str, str]], *, select: str) -> tuple[str, list[Any]]:
    """Return SQL and arguments selecting *select* from current resources matching *params*.

    *select* names columns of `r` (fhir_resource) or `h.body`, the current version's body.

    Raises:
        InvalidContent: a parameter is unknown or its value is empty or malformed.
    """
    where = ["r.type = ?", "r.deleted = 0"]
    args: list[Any] = [resource_type]
    by_index = False  # a token or reference subquery constrains the search
    for name, value in params:
        if not value:
            raise InvalidContent("search parameter has no value", location=name)
        if name == "_id":
            where.append("r.id = ?")
            args.append(value)
        elif name == "identifier":
            clause, more = _token(value)
            where.append(clause)
            args.extend([resource_type, *more])
            by_index = True
        elif name == "_tag":
            where.append(_REF.format("= '_tag'"))
            args.extend([resource_type, value])
            by_index = True
        elif name in ("patient", "subject"):
            target = value if "/" in value else f"Patient/{value}"
            if name == "patient" and not target.startswith("Patient/"):
                raise InvalidContent("patient must name a Patient", location=name)
            where.append(_REF.format("IN ('subject', 'patient')" if name == "patient" else "= 'subject'"))
            args.extend([resource_type, target])
            by_index = True
        else:
            raise InvalidContent("unsupported search parameter", location=name)
    if by_index:
        # The subquery names resources of this type only (a rid is one resource). Without
        # `r.type = ?`, SQLite drives the search from the subquery's rids rather than scanning
        # the type in id order to test each one.
        del where[0], args[0]
    body = _BODY if "h." in select else ""
    return f"SELECT {select} FROM fhir_resource r{body} WHERE {' AND '.join(where)} ORDER BY r.id", args


def _token(value: str) -> tuple[str, list[str]]:
    # FHIR token syntax: `value` (any system), `system|value`, `|value` (no system),
    # `system|` (any value in that system).
    system, bar, code = value.partition("|")
    if not bar:
        return _TOKEN.format(" AND t.value = ?"), [value]
    if not code:
        return _TOKEN.format(" AND t.system = ?"), [system]
    return _TOKEN.format(" AND t.value = ? AND t.system = ?"), [code, system]


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
