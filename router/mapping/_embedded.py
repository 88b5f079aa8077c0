"""Compile `embedded:`, the whole messages one message carries, and check it against the mapping it names.

    embedded:                        # an M9.6 Reseptliste (messages/ERM96.yaml)
      from: 'mh:Document/mh:RefDoc/mh:Content/b64:Base64Container'
      message: ERM1
      same: patient
      override: {type: MedicationRequest, elements: [status, statusReason], alone: patch}

`embedded: {from: path, message: ERM1, same: patient}` says that the elements
*from* names each carry a whole message, base64-encoded, that its own mapping
(*message*) converts into the same Bundle; *same* names the resource every one
of them, and this mapping, must agree on (one patient per list).
`embedded.override: {type, elements, alone}` lets this message's resource of that
type lay the named elements over a carried message's resource of the same
identity (router/mapping/_join.py); `alone: patch` lays them, as a PATCH, over
the stored resource of an identity no carried message writes.

Split from _messages.py, which compiles the rest of a message mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.mapping._join import Override
from router.mapping._yaml import Pos, YList, YMap

if TYPE_CHECKING:
    from router.mapping.compiler import Compiler, MessageMapping


@dataclass(frozen=True, slots=True)
class Embedded:
    """`embedded:` of a message mapping: where whole messages ride inside this one, and what converts them."""

    path: Any
    """The elements whose text is one base64-encoded message each (`b64:Base64Container`, `m912:VarerIBrukB64`)."""
    message: str
    """The message mapping every embedded message must be converted by; any other message is refused."""
    same: str | None
    """The top-level resource (in both mappings) that must be one and the same across all of them, or None."""
    pos: Pos
    """Where `embedded:` stands, for the load-time checks against the other mapping."""
    override: Override | None = None
    """What this message says of a carried resource that the carried message does not, or None."""


NOT_OVERRIDDEN = frozenset({"resourceType", "id", "meta", "identifier"})
"""The identity and provenance of a resource: the carried message's stay, or the two would not be one resource.

Nor may `write: patch` change them (_messages._patch): the PATCH finds the stored resource by them.
"""


def compile_embedded(c: Compiler, doc: YMap) -> Embedded:
    """`embedded: {from, message, same}`: the messages this one carries whole, base64-encoded.

    Why: an M9.6 Reseptliste carries the complete signed M1 prescriptions it lists
    (HIS 3004, FACTS §4), an M9.12 the M25.1 list of medicines in use. XPath cannot
    read inside base64, so the pipeline decodes each and converts it as it would
    the same message sent on its own; declaring it here keeps that visible to authors.
    """
    from router.mapping.compiler import _check_keys, _err, _need

    block = doc["embedded"]
    if not isinstance(block, YMap):
        raise _err("embedded must be a mapping: {from: <path to the base64 elements>, message: <mapping>, same: <resource name>}", doc.pos("embedded"))
    _check_keys(block, {"from", "message", "same", "override", "note"}, "embedded")
    path = c._path(_need(block, "from", "embedded"), block.pos("from"))
    if not getattr(path, "is_group", False):
        raise _err("embedded.from must select elements (their text is the base64), not attributes or text()", block.pos("from"))
    message = _need(block, "message", "embedded")
    if not isinstance(message, str) or not message:
        raise _err("embedded.message must name one message mapping (e.g. ERM1)", block.pos("message"))
    same = block.get("same")
    if same is not None and (not isinstance(same, str) or not same):
        raise _err("embedded.same must name one resource (e.g. patient)", block.pos("same"))
    override = _override(block) if "override" in block else None
    return Embedded(path, message, same, doc.pos("embedded"), override)


def _override(block: YMap) -> Override:
    """`embedded.override: {type, elements, alone}`: what the carrying message knows better than the message it carries.

    Why: an M9.6 lists each prescription with Reseptformidleren's status now (7408:
    T tilbakekalt) and carries the M1 as it was signed, which knows no withdrawal;
    converted alone, the M1 would write a withdrawn prescription as active.
    """
    from router.mapping import fhir_model
    from router.mapping.compiler import _check_keys, _err, _need

    spec = block["override"]
    if not isinstance(spec, YMap):
        raise _err("embedded.override must be a mapping: {type: <FHIR resource>, elements: [names], alone: keep|drop|patch}", block.pos("override"))
    _check_keys(spec, {"type", "elements", "alone", "note"}, "embedded.override")
    rtype = _need(spec, "type", "embedded.override")
    if not isinstance(rtype, str) or not fhir_model.is_resource_type(rtype):
        raise _err("embedded.override.type must name a FHIR resource type (e.g. MedicationRequest)", spec.pos("type"))
    names = _need(spec, "elements", "embedded.override")
    known = fhir_model.elements(rtype)
    if not isinstance(names, YList) or not names or not all(isinstance(n, str) and n in known and n not in NOT_OVERRIDDEN for n in names):
        raise _err(f"embedded.override.elements must list top-level elements of {rtype} other than its identifier, id and meta", spec.pos("elements"))
    alone = spec.get("alone", "keep")
    if alone not in ("keep", "drop", "patch"):
        raise _err("embedded.override.alone is keep (the default: written as it is), drop (written only over a carried resource) or patch (its elements laid over the stored resource, as a PATCH)", spec.pos("alone"))
    if alone == "patch" and any(known[str(n)].is_list for n in names):
        raise _err(f"embedded.override.alone: patch needs elements of {rtype} that do not repeat", spec.pos("elements"))
    return Override(rtype, tuple(str(n) for n in names), alone)


def check_embedded(mm: MessageMapping, messages: dict[str, MessageMapping]) -> MessageMapping:
    """Check `embedded:` against the mapping it names, once every message mapping is compiled.

    One level only: a message that carries messages that carry messages would
    let a few kilobytes ask for unbounded work.

    Raises:
        MappingError: the named mapping is missing, embeds messages itself, or lacks the `same:` resource.
    """
    from router.mapping.compiler import _err

    spec: Embedded = mm.embedded
    inner = messages.get(spec.message)
    if inner is None:
        raise _err(f"embedded.message {spec.message!r}: there is no messages/{spec.message}.yaml to convert the embedded messages", spec.pos)
    if inner.embedded is not None:
        raise _err(f"embedded.message {spec.message!r} embeds messages itself; embedding is one level deep", spec.pos)
    if spec.same and spec.same not in {u.name for u in inner.resources}:
        raise _err(f"embedded.same {spec.same!r}: {spec.message} makes no top-level resource named {spec.same!r}", spec.pos)
    return mm
