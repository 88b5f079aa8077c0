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

Method = Literal["PUT", "POST", "DELETE", "PATCH"]
"""The request methods a transaction entry may use here (no GET; PATCH with a FHIRPath Patch, see _patch.py)."""

Criteria = tuple[tuple[str, str], ...]
"""Search parameters of a conditional request, in the order they were written."""

TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
"""A FHIR resource type name."""

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
"""A FHIR logical id (R4 §2.24.0.1: id datatype)."""

_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})

PATCH_ABSENT = "urn:helsebro:patch-absent"
"""The request extension (valueCode `skip`) that makes a PATCH of a resource the record lacks do nothing, not refuse the
transaction (router/mapping/_patch.py writes it: an M9.6 list names prescriptions the record may never have seen)."""


# Not frozen, as an exception to STYLE §7: one is made per Bundle entry, and a frozen
# dataclass's __init__ sets each field through object.__setattr__ (about 12 k instructions an
# entry, against 3 k). Nothing assigns to an Entry once parse_bundle has made it.
@dataclass(slots=True)
class Entry:
    """One Bundle entry, checked: what to do, to which type, found how."""

    index: int
    method: Method
    resource_type: str
    id: str | None  # from `Type/id`
    criteria: Criteria | None  # from `Type?…` or ifNoneExist
    resource: FhirJson | None  # for a PATCH, the Parameters that say what changes
    full_url: str | None
    skip_absent: bool = False  # a PATCH whose resource is not in the record does nothing (PATCH_ABSENT)
    owner: Criteria = ()  # a PATCH's `subject=`/`patient=` conditions, any spelling: checked on the resource its identity finds (split_owner)
    if_match: int | None = None  # request.ifMatch: the version the entry writes over or deletes (FHIR's version-aware update)

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


def _at(index: int, member: str = "") -> str:
    """The error location of entry *index* (or of its *member*): built only when raising, as an f-string per entry cost more than its checks."""
    return f"Bundle.entry[{index}]{member}"


def _parse_entry(index: int, raw: Any) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise InvalidContent("entry has no request", location=_at(index))
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in _METHODS:
        raise InvalidContent("unsupported request method", location=_at(index, ".request.method"))
    if not isinstance(url, str) or not url:
        raise InvalidContent("request has no url", location=_at(index, ".request.url"))
    resource_type, id_, criteria = _parse_url(url, index)
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if method != "POST" or not isinstance(if_none_exist, str):
            raise InvalidContent("ifNoneExist needs a POST", location=_at(index, ".request.ifNoneExist"))
        criteria = _plain_pair(if_none_exist) or _parsed(if_none_exist, index, ".request.ifNoneExist")
    if method == "POST" and id_ is not None:
        raise InvalidContent("POST url must be a type", location=_at(index, ".request.url"))
    if method == "PUT" and id_ is None and criteria is None:
        raise InvalidContent("PUT needs an id or a condition", location=_at(index, ".request.url"))
    if method == "DELETE" and id_ is None and criteria is None:
        raise InvalidContent("DELETE needs an id or a condition", location=_at(index, ".request.url"))
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InvalidContent("fullUrl must be a string", location=_at(index, ".fullUrl"))
    if_match = _if_match(request, method, index) if "ifMatch" in request else None
    if method == "PATCH":
        entry = _patch_entry(index, request, resource_type, id_, criteria, raw.get("resource"), full_url)
        entry.if_match = if_match
        return entry
    resource = _check_resource(raw.get("resource"), method, resource_type, id_, index)
    return Entry(index, method, resource_type, id_, criteria, resource, full_url, if_match=if_match)


_ETAG = re.compile(r'(?:W/)?"([1-9][0-9]{0,17})"')
"""A version's ETag as FHIR writes it, W/"3" (the weak mark may be left out)."""


def _if_match(request: dict[str, Any], method: str, index: int) -> int:
    """The version a request's ifMatch names.

    Why: a client that read version 3 and sends its change with ifMatch W/"3" must not
    write over a version 4 it has not seen (FHIR's 412): ignored, the change was applied
    and version 4's content lost. One the record cannot read is refused, never taken for none.

    Raises:
        InvalidContent: ifMatch on a POST, or not an ETag of a version.
    """
    if method == "POST":
        raise InvalidContent("ifMatch needs a PUT, PATCH or DELETE", location=_at(index, ".request.ifMatch"))
    value = request["ifMatch"]
    found = _ETAG.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise InvalidContent('ifMatch must name a version as W/"n"', location=_at(index, ".request.ifMatch"))
    return int(found.group(1))


def _patch_entry(
    index: int, request: dict[str, Any], resource_type: str, id_: str | None, criteria: Criteria | None, body: Any, full_url: str | None,
) -> Entry:
    """A PATCH entry: `Type/id` or `Type?condition`, a FHIRPath Patch (Parameters) the record can apply, and PATCH_ABSENT."""
    from adapters.fhir._patch import check_patch

    if id_ is None and criteria is None:
        raise InvalidContent("PATCH needs an id or a condition", location=_at(index, ".request.url"))
    check_patch(body, resource_type, _at(index, ".resource"))
    skip = False
    extensions = request.get("extension") or []
    if not isinstance(extensions, list):
        raise InvalidContent("request.extension must be a list", location=_at(index, ".request.extension"))
    for ext in extensions:
        if isinstance(ext, dict) and ext.get("url") == PATCH_ABSENT:
            if ext.get("valueCode") != "skip":
                raise InvalidContent("the patch-absent extension's valueCode must be skip", location=_at(index, ".request.extension"))
            skip = True
    criteria, owner = split_owner(criteria, _at(index))
    return Entry(index, "PATCH", resource_type, id_, criteria, body, full_url, skip, owner)


OWNER_PARAMS = ("subject", "patient")
"""The search parameters of a PATCH's condition that say whose the resource must be, not which it is."""


@dataclass(frozen=True, slots=True)
class OwnerParam:
    """One owner condition's parameter name, read: `subject`, `patient:Patient`, `subject:Patient.identifier` …"""

    element: str
    """subject or patient: `subject` checks the resource's subject, `patient` its subject or patient."""
    kind: str | None
    """The type modifier (`subject:Patient`): the owner must be a resource of this type; None when not written."""
    by_identifier: bool
    """`.identifier` chained: the value is a token (system|value) of the owner's identifiers, not a reference."""


def owner_param(name: str, where: str = "Bundle") -> OwnerParam | None:
    """Read *name* as an owner condition's parameter, or None when it is no `subject`/`patient` parameter.

    Any spelling FHIR gives a reference parameter of the owner counts:
    `subject`, `subject:Type` (type modifier), `subject.identifier` and
    `subject:Type.identifier` (chained on the owner's identifier), and the
    same for `patient` (whose type can only be Patient).

    Raises:
        InvalidContent: a `subject`/`patient` parameter the record cannot check
            (another modifier or chain: `:missing`, `:identifier`, `.name` …):
            found by, it would stand for the owner check; left out, the owner unchecked.
    """
    head = name.partition(".")[0].partition(":")[0]
    if head not in OWNER_PARAMS:
        return None
    if name == head:
        return OwnerParam(head, None, False)
    base, dot, chain = name.partition(".")
    kind = base.partition(":")[2] if ":" in base else None
    if (dot and chain != "identifier") or (kind is not None and not _is_type(kind)) or (head == "patient" and kind not in (None, "Patient")):
        raise InvalidContent(
            f"the record checks a PATCH's {head} condition written {head}=, {head}:Type=, {head}.identifier= or {head}:Type.identifier=;"
            " not with this modifier or chain", location=f"{where}.request.url",
        )
    return OwnerParam(head, kind, bool(dot))


def split_owner(criteria: Criteria | None, where: str = "Bundle") -> tuple[Criteria | None, Criteria]:
    """Split a PATCH's condition into what finds the resource (its identifier) and whose it must be (`subject=`, `patient=`).

    Why (patient safety): an M5 names a patient and the ReseptId of the
    prescription it withdraws. Searched with both, another patient's
    prescription under that ReseptId would look absent, and an M9.6 skips an
    absent one; found by the identifier and then checked, it refuses the
    transaction, saying which of the two is wrong (_transaction.py). An owner
    condition is one in any of its spellings (owner_param: `subject:Patient=`,
    `patient.identifier=` …), so none of them slips into the search. A
    condition of owner parameters only is left whole: they are then what finds it.

    Raises:
        InvalidContent: an owner parameter the record cannot check (owner_param).
    """
    if criteria is None:
        return criteria, ()
    owner = tuple(p for p in criteria if owner_param(p[0], where) is not None)
    if not owner or len(owner) == len(criteria):
        return criteria, ()
    return tuple(p for p in criteria if p not in owner), owner


def _parse_url(url: str, index: int) -> tuple[str, str | None, Criteria | None]:
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    if len(parts) > 2 or not _is_type(parts[0]):
        raise InvalidContent("request url must be Type, Type/id or Type?query", location=_at(index, ".request.url"))
    id_ = parts[1] if len(parts) == 2 else None
    if id_ is not None and not _ID_MATCH(id_):
        raise InvalidContent("request url has a malformed id", location=_at(index, ".request.url"))
    if not query:
        return parts[0], id_, None
    if id_ is not None:
        raise InvalidContent("request url has both an id and a query", location=_at(index, ".request.url"))
    return parts[0], id_, _plain_pair(query) or _parsed(query, index, ".request.url")


_ID_MATCH = ID_RE.fullmatch  # bound once: looking the method up per entry is a fifth of its cost

_TYPES_SEEN: set[str] = set()
"""Resource type names TYPE_RE has accepted: a set lookup instead of a regex match (2.7 k instructions)
for each entry. Bounded: a name past the first 256 distinct ones is matched every time."""


def _is_type(name: str) -> bool:
    """TYPE_RE.fullmatch(name), remembered for the names it accepts."""
    if name in _TYPES_SEEN:
        return True
    if TYPE_RE.fullmatch(name) is None:
        return False
    if len(_TYPES_SEEN) < 256:
        _TYPES_SEEN.add(name)
    return True


def _plain_pair(query: str) -> Criteria | None:
    """The one plain `name=value` pair every mapped entry has, split as parse_qsl would, or None for anything else."""
    query = query.lstrip("?")
    name, eq, value = query.partition("=")
    if eq and "&" not in query and "%" not in query and "+" not in query and "=" not in value:
        return ((name, value),)
    return None


def parse_criteria(query: str, where: str) -> Criteria:
    """Split a conditional request's query (`identifier=sys|val&_id=x`) into pairs."""
    return _plain_pair(query) or _parsed(query, -1, where)  # the plain pair: what parse_qsl returns, without its cost


_PARSED: dict[str, Criteria] = {}
"""Queries parse_qsl has split, by their text. Why: a ward's, room's or bed's condition (`…|MED%2F101`)
comes back in nearly every ADT message, and parse_qsl, run in Python, costs about 30 k instructions
a query, twice the rest of its entry's parsing. Bounded: emptied when it reaches _PARSED_MOST."""
_PARSED_MOST = 2048


def _parsed(query: str, index: int, member: str) -> Criteria:
    """parse_criteria for a query that is not one plain pair; *index* and *member* place an error (_at), or *member* alone when *index* is -1."""
    pairs = _PARSED.get(query)
    if pairs is not None:
        return pairs
    pairs = tuple(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    if not pairs:
        raise InvalidContent("condition is empty", location=member if index < 0 else _at(index, member))
    if len(_PARSED) >= _PARSED_MOST:
        _PARSED.clear()
    _PARSED[query] = pairs
    return pairs


def _check_resource(resource: Any, method: str, resource_type: str, id_: str | None, index: int) -> FhirJson | None:
    if method == "DELETE":
        return None
    if not isinstance(resource, dict):
        raise InvalidContent("entry has no resource", location=_at(index, ".resource"))
    if resource.get("resourceType") != resource_type:
        raise InvalidContent("resourceType differs from the request url", location=_at(index, ".resource.resourceType"))
    own = resource.get("id")
    if own is not None and (not isinstance(own, str) or not _ID_MATCH(own)):
        raise InvalidContent("resource id is malformed", location=_at(index, ".resource.id"))
    if id_ is not None and own is not None and own != id_:
        raise InvalidContent("resource id differs from the request url", location=_at(index, ".resource.id"))
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


def message_lock_key(key: str) -> int:
    """Return the advisory-lock key for one applied-message key (helsebro_applied).

    Two copies of one message applied at once (a redelivery racing the original on another
    worker) wait for each other on it: the later then finds the key the first committed. The
    identity locks alone miss a Bundle that names no identity (a plain POST).
    """
    return _key(f"helsebro_applied|{key}")


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
_URN_MARK = b'"reference":"urn:'
"""What _URN_REFERENCE starts with. Looked for with bytes.find, not `in`: `in` first tries the
operand as an integer and builds a TypeError to discard (about 4 k instructions a test)."""


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
    if text.find(_URN_MARK) < 0:
        return orjson.loads(text) if copy else value
    marks = text.count(_URN_MARK)
    if not copy and isinstance(value, dict):
        out = _rewrite_members(value, targets, where, marks)
        if out is not None:
            return out
    found = _URN_REFERENCE.findall(text)
    if len(found) != marks:
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


def _rewrite_members(value: dict[str, Any], targets: dict[str, str], where: str, marks: int) -> dict[str, Any] | None:
    """`rewrite` without a copy, for a resource that has *marks* `urn:` references: walk only the members that hold one.

    Why: a mapped resource's references sit in one or two small members (an Encounter's
    `subject` and `serviceProvider`); reading the whole resource back from JSON to
    replace them cost more than the rest of the rewrite. The members without one are
    shared with *value*, which the caller only reads (as with copy=False's plain case);
    once every reference is found, the members left (`id`, `meta`) are not written out to look.
    None when a member is not a JSON value (a tuple, say): the text-level copy decides.
    """
    top = value.get("reference")
    if isinstance(top, str) and top.startswith("urn:"):
        return None  # the resource's own member
    out = dict(value)
    for key, member in value.items():
        if not marks:
            break  # the rest holds none: a key cannot hold the mark (its quotes would be escaped)
        if isinstance(member, (dict, list)):
            found = orjson.dumps(member).count(_URN_MARK)
            if found:
                out[key] = _rewrite_walk(member, targets, where)
                marks -= found
        elif not (member is None or isinstance(member, (str, int, float))):
            return None
    return out


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
