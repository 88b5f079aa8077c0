"""FHIRPath Patch (a Parameters resource) on one stored resource: the part of it the record supports.

Supported: `replace` and `delete` of a top-level element (path `Type.element`),
and `add` of a top-level element the resource lacks (path `Type`, with `name`).
That is what a message that changes some elements of a resource without
restating it needs (an M5 withdraws a prescription: status and statusReason).
Anything else (deeper paths, insert, move, a list item) is refused when the
Bundle is read, before the database is touched. The record knows no FHIR
definitions, so it cannot tell a repeating element from one that does not:
`add` sets the value as given, and the producer must not add a repeating one.
The Parameters' own meta.tag (its mapping, for provenance) is added to the
patched resource's tags. A conditional PATCH that also names a `subject=` or
`patient=` (or `subject:Patient=`, `subject.identifier=system|value` …) changes
the resource its identifier finds only when that resource is the named
patient's (check_owner).
Error reasons never quote a value: they may be patient data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from adapters.fhir._bundle import Criteria, OwnerParam, identifiers, owner_param
from adapters.fhir._search import references
from router.contracts import FhirJson
from router.errors import InvalidContent

_ELEMENT = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
"""A top-level element's JSON name."""

_FIXED = frozenset({"resourceType", "id", "meta", "identifier"})
"""What a patch may not change: the record keys resources by their type, id and identifiers, and owns meta's version."""

_KINDS = frozenset({"replace", "delete", "add"})


def check_patch(body: Any, resource_type: str, where: str) -> None:
    """Check that *body* is a FHIRPath Patch of *resource_type* that apply_patch can carry out.

    Raises:
        InvalidContent: not a Parameters of operations, or one this record does not support.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidContent("a PATCH entry's resource must be a Parameters (FHIRPath Patch)", location=f"{where}.resourceType")
    params = body.get("parameter")
    if not isinstance(params, list) or not params:
        raise InvalidContent("a FHIRPath Patch needs at least one operation", location=f"{where}.parameter")
    for i, param in enumerate(params):
        _operation(param, resource_type, f"{where}.parameter[{i}]")


def _operation(param: Any, resource_type: str, where: str) -> tuple[str, str, Any]:
    """(kind, element, value) of one operation, checked; value is None for delete."""
    if not isinstance(param, dict) or param.get("name") != "operation" or not isinstance(param.get("part"), list):
        raise InvalidContent("each parameter of a FHIRPath Patch is an operation with parts", location=where)
    parts: dict[str, Any] = {}
    for part in param["part"]:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str) or part["name"] in parts:
            raise InvalidContent("an operation's parts are named, each once", location=f"{where}.part")
        values = [k for k in part if k.startswith("value")]
        if len(values) != 1:
            raise InvalidContent("an operation's part has one value", location=f"{where}.part")
        parts[part["name"]] = part[values[0]]
    kind, path = parts.get("type"), parts.get("path")
    if kind not in _KINDS:
        raise InvalidContent("the record supports the FHIRPath Patch operations replace, delete and add", location=f"{where}.part")
    if not isinstance(path, str):
        raise InvalidContent("an operation needs a path", location=f"{where}.part")
    if kind == "add":
        name = parts.get("name")
        if path != resource_type or not isinstance(name, str) or not _ELEMENT.fullmatch(name):
            raise InvalidContent("the record supports add of a top-level element only (path: the resource type, name: the element)", location=f"{where}.part")
        element = name
    else:
        head, _, element = path.partition(".")
        if head != resource_type or not _ELEMENT.fullmatch(element):
            raise InvalidContent(f"the record supports {kind} of a top-level element only (path: Type.element)", location=f"{where}.part")
    if element in _FIXED:
        raise InvalidContent("a patch may not change a resource's id, identifiers or meta", location=f"{where}.part")
    if kind != "delete" and parts.get("value") is None:
        raise InvalidContent(f"{kind} needs a value", location=f"{where}.part")
    return kind, element, parts.get("value")


def apply_patch(stored: FhirJson, patch: FhirJson, resource_type: str, where: str) -> FhirJson:
    """Return *stored* with the operations of *patch* (checked by check_patch) carried out in order.

    Raises:
        InvalidContent: an operation does not fit the stored resource (replace of an
            absent element, add of one that exists, delete of one item of several):
            the transaction cannot say what the result is.
    """
    out = dict(stored)
    for i, param in enumerate(patch["parameter"]):
        kind, element, value = _operation(param, resource_type, f"{where}.parameter[{i}]")
        has = element in out
        if isinstance(out.get(element), list) and len(out[element]) > 1:
            raise InvalidContent(f"{kind} of a repeating element that holds several items is not supported", location=f"{where}.parameter[{i}]")
        if kind == "delete":
            out.pop(element, None)  # "if found": deleting what is not there changes nothing
        elif kind == "replace" and not has:
            raise InvalidContent("replace of an element the stored resource does not have", location=f"{where}.parameter[{i}]")
        elif kind == "add" and has:
            raise InvalidContent("add of an element the stored resource already has", location=f"{where}.parameter[{i}]")
        else:
            out[element] = value
    return add_tags(out, patch.get("meta"))


def check_owner(
    stored: FhirJson, owner: Criteria, targets: dict[str, str], resource_type: str, where: str,
    merged_into: Callable[[str, set[str]], bool] = lambda _old, _new: False,
    read: Callable[[str, str], FhirJson | None] | None = None,
) -> None:
    """Refuse unless *stored* is the resource of whom each of *owner* (a PATCH's `subject=`, `patient=`) names.

    A value that is a `urn:uuid:` is the fullUrl of an entry of the Bundle (the
    message's own Patient) and stands for the id *targets* gives it, as a
    reference in a resource does; a bare id is a Patient's, as in a search (or
    the type modifier's: `subject:Group=`). A `.identifier` chain
    (`subject.identifier=system|value`) names the owner by one of its
    identifiers: the owner *stored* refers to is read (*read*, type and id →
    its current body) and must hold it.

    Why (patient safety): an M5 that names one patient with the ReseptId of
    another's prescription must not stop that prescription. Refused, not
    skipped, even with PATCH_ABSENT: the resource is there, and the message is
    wrong about whose it is.

    *merged_into(old, new)* tells whether the stored resource's Patient `old`
    was merged into `new` (the record follows the `replaced-by` links an A40
    leaves): such a resource is the named patient's, as for a create-only entry.
    For a `.identifier` chain the links are followed by *read*: the identifier
    of the Patient it was merged into names it too.

    Raises:
        InvalidContent: *stored* belongs to another patient, a `urn:uuid:` names no
            entry of the Bundle, or an identifier cannot be checked (no reader, an
            empty token, or the owner *stored* refers to is not in the record).
    """
    refs = references(stored)
    for name, value in owner:
        param = owner_param(name, where)
        if param is None:  # split_owner put only owner parameters here
            continue
        elements = ("subject",) if param.element == "subject" else ("subject", "patient")
        held = [ref for element, ref in refs if element in elements]
        kind = param.kind or "Patient"
        if param.by_identifier:
            found = _holds_identifier(held, param, value, read, resource_type, where)
        else:
            target = targets.get(value) if value.startswith("urn:") else (value if "/" in value else f"{kind}/{value}")
            if not target:
                raise InvalidContent(f"the {param.element} condition of a PATCH names no entry of the Bundle", location=f"{where}.request.url")
            if param.kind is not None and not target.startswith(f"{kind}/"):
                raise InvalidContent(f"the {param.element} condition of a PATCH names no {kind}, as its type modifier says", location=f"{where}.request.url")
            kind = target.partition("/")[0]
            found = any(ref == target or merged_into(ref, {target}) for ref in held)
        if not found:
            whose = "another patient" if kind == "Patient" else f"another {param.element}"
            raise InvalidContent(f"the {resource_type} this message changes belongs to {whose}", location=where)


_MERGE_HOPS = 4
"""How many `replaced-by` links an identifier check follows from the stored owner (as _transaction's merge check)."""


def _holds_identifier(
    held: list[str], param: OwnerParam, token: str, read: Callable[[str, str], FhirJson | None] | None, resource_type: str, where: str,
) -> bool:
    """Whether one of the owners *held* (references), or a Patient it was merged into, has the identifier *token*.

    *token* is FHIR's `system|value` (`|value`: no system; `value`: any system).
    `system|` (any value of the system) is refused: it would let any patient's
    number pass for the owner's.

    Raises:
        InvalidContent: no *read*, an empty value, or an owner *held* names is not in the
            record and none of the others matched: the check cannot be made.
    """
    system, bar, value = token.partition("|")  # as the record's search reads a token (_search._token)
    if not bar:
        system, value = "", system
    if not value or read is None:
        why = "has no value" if not value else "cannot be resolved here"
        raise InvalidContent(f"the {param.element}.identifier condition of a PATCH {why}", location=f"{where}.request.url")
    unread = False
    for ref in held:
        kind, _, id_ = ref.partition("/")
        if param.kind is not None and kind != param.kind:
            continue
        for _ in range(_MERGE_HOPS + 1):
            body = read(kind, id_) if id_ else None
            if body is None:
                unread = True
                break
            if any(v == value and (not bar or s == system) for s, v in identifiers(body)):
                return True
            nxt = replaced_by(body)
            if nxt is None:
                break
            kind, _, id_ = nxt.partition("/")
    if unread:
        raise InvalidContent(
            f"the {param.element}.identifier condition of a PATCH cannot be checked: the {resource_type}'s {param.element} is not in the record",
            location=where,
        )
    return False


def replaced_by(body: FhirJson) -> str | None:
    """The reference of *body*'s `replaced-by` link (a Patient an A40 merged away), or None."""
    for link in body.get("link") or []:
        other = link.get("other") if isinstance(link, dict) and link.get("type") == "replaced-by" else None
        if isinstance(other, dict) and isinstance(other.get("reference"), str):
            return other["reference"]  # type: ignore[no-any-return]
    return None


def add_tags(resource: FhirJson, meta: Any) -> FhirJson:
    """*resource* with the Parameters' meta.tag codings it lacks added to its own.

    Why: every stored version says which mapping made it (meta.tag
    urn:helsebro:mapping); a version a patch made was made by the patch's
    mapping too, which tags the Parameters it sends.
    """
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list) or not tags:
        return resource
    own = found if isinstance(found := resource.get("meta"), dict) else {}
    kept = list(own.get("tag") or [])
    added = [t for t in tags if isinstance(t, dict) and t not in kept]
    if added:
        resource["meta"] = {**own, "tag": kept + added}
    return resource
