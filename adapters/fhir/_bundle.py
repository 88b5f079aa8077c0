"""Read a transaction Bundle into checked entries, before the database is touched.

Everything here is pure: shape checks, request URLs, lock keys and the rewriting of
`urn:uuid:` references. Resolving identities and writing belong to _transaction.py.
Error reasons never quote a value from the Bundle: identifiers are patient data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from router.contracts import FhirJson
from router.errors import InvalidContent

Method = Literal["PUT", "POST", "DELETE"]
"""The request methods a transaction entry may use here (no GET, no PATCH)."""

Criteria = tuple[tuple[str, str], ...]
"""Search parameters of a conditional request, in the order they were written."""

TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
"""A FHIR resource type name."""

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
"""A FHIR logical id (R4 §2.24.0.1: id datatype)."""

_METHODS = frozenset({"PUT", "POST", "DELETE"})
_QUERY_SPECIAL = ("&", "%", "+")  # what makes parse_qsl split or unquote


@dataclass(frozen=True, slots=True)
class Entry:
    """One Bundle entry, checked: what to do, to which type, found how."""

    index: int
    method: Method
    resource_type: str
    id: str | None  # from `Type/id`
    criteria: Criteria | None  # from `Type?…` or ifNoneExist
    resource: FhirJson | None
    full_url: str | None

    @property
    def location(self) -> str:
        """Where this entry sits in the Bundle, for error positions."""
        return f"Bundle.entry[{self.index}]"


def parse_bundle(bundle: Any) -> list[Entry]:
    """Check *bundle* is a transaction Bundle and return its entries in order.

    Raises:
        InvalidContent: the Bundle or one of its entries is malformed or unsupported.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidContent("not a Bundle", location="Bundle")
    if bundle.get("type") != "transaction":
        raise InvalidContent("Bundle.type must be transaction", location="Bundle.type")
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise InvalidContent("Bundle.entry must be a list", location="Bundle.entry")
    return [_parse_entry(i, e) for i, e in enumerate(raw)]


def _parse_entry(index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise InvalidContent("entry has no request", location=where)
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in _METHODS:
        raise InvalidContent("unsupported request method", location=f"{where}.request.method")
    if not isinstance(url, str) or not url:
        raise InvalidContent("request has no url", location=f"{where}.request.url")
    resource_type, id_, criteria = _parse_url(url, f"{where}.request.url")
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if method != "POST" or not isinstance(if_none_exist, str):
            raise InvalidContent("ifNoneExist needs a POST", location=f"{where}.request.ifNoneExist")
        criteria = parse_criteria(if_none_exist, f"{where}.request.ifNoneExist")
    if method == "POST" and id_ is not None:
        raise InvalidContent("POST url must be a type", location=f"{where}.request.url")
    if method == "PUT" and id_ is None and criteria is None:
        raise InvalidContent("PUT needs an id or a condition", location=f"{where}.request.url")
    if method == "DELETE" and id_ is None and criteria is None:
        raise InvalidContent("DELETE needs an id or a condition", location=f"{where}.request.url")
    resource = _check_resource(raw.get("resource"), method, resource_type, id_, where)
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InvalidContent("fullUrl must be a string", location=f"{where}.fullUrl")
    return Entry(index, method, resource_type, id_, criteria, resource, full_url)


def _parse_url(url: str, where: str) -> tuple[str, str | None, Criteria | None]:
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    if len(parts) > 2 or not TYPE_RE.fullmatch(parts[0]):
        raise InvalidContent("request url must be Type, Type/id or Type?query", location=where)
    id_ = parts[1] if len(parts) == 2 else None
    if id_ is not None and not ID_RE.fullmatch(id_):
        raise InvalidContent("request url has a malformed id", location=where)
    if query and id_ is not None:
        raise InvalidContent("request url has both an id and a query", location=where)
    return parts[0], id_, parse_criteria(query, where) if query else None


def parse_criteria(query: str, where: str) -> Criteria:
    """Split a conditional request's query (`identifier=sys|val&_id=x`) into pairs."""
    query = query.lstrip("?")
    name, eq, value = query.partition("=")
    if eq and not any(c in query for c in _QUERY_SPECIAL) and "=" not in value:
        return ((name, value),)  # one plain pair, as every mapped entry has: what parse_qsl returns, without its cost
    pairs = tuple(parse_qsl(query, keep_blank_values=True))
    if not pairs:
        raise InvalidContent("condition is empty", location=where)
    return pairs


def _check_resource(resource: Any, method: str, resource_type: str, id_: str | None, where: str) -> FhirJson | None:
    if method == "DELETE":
        return None
    if not isinstance(resource, dict):
        raise InvalidContent("entry has no resource", location=f"{where}.resource")
    if resource.get("resourceType") != resource_type:
        raise InvalidContent("resourceType differs from the request url", location=f"{where}.resource.resourceType")
    own = resource.get("id")
    if own is not None and (not isinstance(own, str) or not ID_RE.fullmatch(own)):
        raise InvalidContent("resource id is malformed", location=f"{where}.resource.id")
    if id_ is not None and own is not None and own != id_:
        raise InvalidContent("resource id differs from the request url", location=f"{where}.resource.id")
    return resource


def lock_keys(entries: list[Entry]) -> list[int]:
    """Return the sorted advisory-lock keys for every identity *entries* may touch.

    A key covers (type, identifier value) regardless of system, so `sys|v` and a bare
    `v` serialise on the same lock; and (type, id) for explicit ids. Sorting gives every
    transaction the same lock order, so two of them cannot deadlock on these locks.
    """
    names: set[str] = set()
    for entry in entries:
        if entry.id is not None:
            names.add(f"{entry.resource_type}/{entry.id}")
        for name, value in entry.criteria or ():
            if name == "identifier":
                names.add(f"{entry.resource_type}|{value.rpartition('|')[2]}")
            elif name == "_id":
                names.add(f"{entry.resource_type}/{value}")
        for system_value in identifiers(entry.resource or {}):
            names.add(f"{entry.resource_type}|{system_value[1]}")
    return sorted({_key(n) for n in names})


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def identifiers(resource: FhirJson) -> list[tuple[str, str]]:
    """Return (system, value) for every identifier of *resource* that has a value."""
    found = resource.get("identifier")
    if not isinstance(found, list):
        return []
    out: list[tuple[str, str]] = []
    for ident in found:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            system = ident.get("system")
            out.append((system if isinstance(system, str) else "", ident["value"]))
    return out


_URN_REFERENCE = re.compile(rb'"reference":"(urn:[^"\\]*)"')
"""A `reference` member whose value starts with urn: in orjson's compact output (a quoted
key can only be a key there: inside a string its quotes are escaped)."""


def rewrite(value: Any, targets: dict[str, str], where: str, *, copy: bool = True) -> Any:
    """Return a deep copy of *value* with each `urn:uuid:` reference replaced by `Type/id`.

    With *copy* False, a *value* that has no `urn:` reference comes back itself, not
    copied: for a caller that only reads the result (the apply, which serialises it).

    Copying, rather than editing in place, leaves the caller's Bundle as it was, so a
    later destination can still send the original. The copy is made in C (orjson out
    and back in, references replaced in the text between): a Python walk of every
    resource cost a third of an apply.

    Raises:
        InvalidContent: a `urn:uuid:` reference names no entry of the Bundle.
    """
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _rewrite_walk(value, targets, where)
    if b'"reference":"urn:' not in text:
        return orjson.loads(text) if copy else value
    found = _URN_REFERENCE.findall(text)
    if len(found) != text.count(b'"reference":"urn:'):
        return _rewrite_walk(value, targets, where)  # an escaped character in one: the walk decides

    def replace(match: re.Match[bytes]) -> bytes:
        ref = match.group(1).decode("utf-8")
        target = targets.get(ref)
        if target is None:
            if ref.startswith("urn:uuid:"):
                raise InvalidContent("reference to no entry of the Bundle", location=where)
            return match.group(0)
        return b'"reference":' + orjson.dumps(target)

    return orjson.loads(_URN_REFERENCE.sub(replace, text))


def _rewrite_walk(value: Any, targets: dict[str, str], where: str) -> Any:
    """`rewrite` in Python, for what orjson cannot write (and to define what rewrite does)."""
    if isinstance(value, dict):
        out = {k: _rewrite_walk(v, targets, where) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:"):
            target = targets.get(ref)
            if target is None:
                if ref.startswith("urn:uuid:"):
                    raise InvalidContent("reference to no entry of the Bundle", location=where)
            else:
                out["reference"] = target
        return out
    if isinstance(value, list):
        return [_rewrite_walk(v, targets, where) for v in value]
    return value
