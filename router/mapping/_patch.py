"""Build the FHIR PATCH entry that changes some elements of a stored resource without restating it.

Owns `write: patch` once compiled (Patch) and the entry it becomes: a FHIRPath
Patch (a Parameters resource) under a conditional PATCH request. The mapping
engine builds it for a `write: patch` resource (router/mapping/engine.py), and
_join.py for `embedded.override.alone: patch`; the record carries it out
(adapters/fhir/_patch.py, _transaction.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

__all__ = ["PATCH_ABSENT", "Patch", "patch_entry", "patch_value_key"]

PATCH_ABSENT = "urn:helsebro:patch-absent"
"""URL of the extension on a PATCH entry's request whose valueCode `skip` says: no such resource in the record, nothing to do.

Without it a conditional PATCH that matches nothing refuses the transaction, as
FHIR's 404 for a conditional patch with no match does (adapters/fhir/_transaction.py).
"""


@dataclass(frozen=True, slots=True)
class Patch:
    """`write: patch` with its `patch:` block (compiled in _messages.py): which elements reach the stored resource."""

    type: str
    """The FHIR resource type (MedicationRequest)."""
    elements: tuple[tuple[str, str], ...]
    """(top-level element, its FHIRPath Patch value key): ("status", "valueCode"), ("statusReason", "valueCodeableConcept")."""
    absent: Literal["refuse", "skip"]
    """What the record does when no resource has the identity: refuse the message, or leave it (nothing to change)."""
    owner: str | None = None
    """The top-level resource of the message (a Patient) the stored resource must belong to, when that is not
    the resource's own subject: an A45 moves a stay from the MRG patient (owner) to the PID patient (subject)."""


def patch_value_key(element: Any) -> str:
    """The `value[x]` name of a FHIRPath Patch operation's value for *element* (a fhir_model.Element)."""
    kind = element.primitive or element.type_name or "String"
    return "value" + kind[0].upper() + kind[1:]


def patch_entry(entry: dict[str, Any], patch: Patch, owner: str | None = None) -> dict[str, Any] | None:
    """A FHIR PATCH entry (FHIRPath Patch, a Parameters resource) that sets *patch*'s elements of the stored resource of *entry*'s identity.

    *entry* is the conditional entry the mapping made of the whole resource. Each
    element the resource has is deleted, then added with this value: one pair
    that works whether or not the stored resource has it (FHIRPath Patch's
    replace needs it present, add needs it absent). An element the resource
    lacks is deleted: a withdrawal without a reason must not keep an earlier
    message's reason beside its new status. The url is the entry's identity
    condition; there is no fullUrl, so nothing else in the Bundle can point at a
    resource that may not exist (a List item by ReseptId stays logical).

    Returns None when the resource gives none of the elements: nothing to lay
    over the stored resource.

    *owner* is the Bundle reference (fullUrl) of the patient the stored resource
    must belong to, when the patch names one (Patch.owner); else it is the
    resource's own subject.
    """
    resource = entry["resource"]
    rtype = patch.type
    ops: list[dict[str, Any]] = []
    for name, key in patch.elements:
        ops.append(_operation("delete", f"{rtype}.{name}"))
        if name in resource:
            ops.append(_operation("add", rtype, name=name, value=(key, resource[name])))
    if len(ops) == len(patch.elements):
        return None  # deletes only: it gives none of the elements
    request = entry["request"]
    url = request["url"] if "?" in request["url"] else f"{rtype}?{request['ifNoneExist']}"
    patch_request: dict[str, Any] = {"method": "PATCH", "url": url + _subject_condition(resource, owner)}
    if patch.absent == "skip":
        patch_request["extension"] = [{"url": PATCH_ABSENT, "valueCode": "skip"}]
    body: dict[str, Any] = {"resourceType": "Parameters", "parameter": ops}
    if "meta" in resource:
        body["meta"] = resource["meta"]  # provenance: the mapping that asked for the change
    return {"resource": body, "request": patch_request}


def _subject_condition(resource: dict[str, Any], owner: str | None = None) -> str:
    """`&subject=<reference>` when *resource* names its subject by reference (`&patient=` for the
    types that call it patient: AllergyIntolerance, Immunization), else nothing; with *owner*,
    that reference instead of the resource's own (the patient a move takes the resource from).

    Why (patient safety): an M5 names a patient and a ReseptId; found by the
    ReseptId alone, a ReseptId of another patient's prescription would stop that
    prescription. With the subject in the condition the record patches only a
    resource whose subject is the message's patient, and refuses the
    transaction otherwise, even where an absent resource is skipped (an M9.6
    names that prescription as this patient's). The reference is usually the
    Bundle's own Patient (`urn:uuid:`), which the record resolves as any other.
    """
    for element in ("subject", "patient"):
        named = resource.get(element)
        ref = named.get("reference") if isinstance(named, dict) else None
        if isinstance(ref, str) and ref:
            return f"&{element}=" + quote(owner or ref, safe=":/")
    return ""


def _operation(kind: str, path: str, *, name: str | None = None, value: tuple[str, Any] | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    if name is not None:
        parts.append({"name": "name", "valueString": name})
    if value is not None:
        parts.append({"name": "value", value[0]: value[1]})
    return {"name": "operation", "part": parts}
