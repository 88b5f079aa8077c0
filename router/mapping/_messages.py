"""Compile a message mapping: the resources it produces, nested per segment group.

    resources:
      - name: patient
        use: PID.Patient
      - name: report
        use: OBR.DiagnosticReport
        each: ORDER_OBSERVATION          # one DiagnosticReport per order group
        resources:                       # produced inside each report's group
          - name: observation
            use: OBX.Observation
            each: OBSERVATION

`write: create` makes a resource only when none with its identity exists: a lab
result must not overwrite the demographics an ADT feed keeps current.
`write: by-id` writes it at the id its identity gives (PUT Type/id), for a merge
that retires the old Patient after moving its identifiers to the survivor.
`write: patch` with `patch: {elements, absent: refuse|skip}` changes only those
elements of the resource the record holds under its identity (a FHIR PATCH: an
M5 withdraws what an M1 stored; the engine builds it, router/mapping/_patch.py).

`embedded: {from: path, message: ERM1, same: patient}` says that the elements
*from* names each carry a whole message, base64-encoded, that its own mapping
(*message*) converts into the same Bundle; *same* names the resource every one
of them, and this mapping, must agree on (one patient per list).
`embedded.override: {type, elements, alone}` lets this message's resource of that
type lay the named elements over a carried message's resource of the same
identity (router/mapping/_join.py); `alone: patch` lays them, as a PATCH, over
the stored resource of an identity no carried message writes.

`document: {identity: [paths], replaces: condition}` makes the message a document:
every resource it writes with `update` is tagged with the document identity, and a
message for which `replaces` holds (a change or a cancel) retires what earlier
messages of that document made and this one does not restate.

A nested resource sees its enclosing instance by name (`ref: report` is *its*
report), and an enclosing resource lists its own children with `refs:`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.mapping._join import Override
from router.mapping._patch import Patch, patch_value_key
from router.mapping._yaml import Pos, YList, YMap

if TYPE_CHECKING:
    from router.mapping.compiler import Compiler, MessageMapping, ResourceUse

_ENTRY_KEYS = {"name", "use", "when", "from", "each", "with", "resources", "write", "patch", "note"}


def compile_message(c: Compiler, path: Path) -> MessageMapping:
    """Compile one file under messages/."""
    from router.mapping.compiler import MessageMapping, _check_keys, _err, _need

    doc = c._doc(path)
    _check_keys(doc, {"message", "description", "events", "match", "document", "out_of_place", "embedded", "resources"}, "a message mapping")
    structure = str(_need(doc, "message", "a message mapping"))
    if path.stem != structure:
        raise _err(f"message {structure!r} must live in a file named {structure}.yaml", doc.pos("message"))
    names: set[str] = set()
    uses = _uses(c, doc, "resources", names, top=True)
    embedded = _embedded(c, doc) if "embedded" in doc else None
    if embedded is not None and embedded.same:
        names.add(embedded.same)  # the embedded messages' resource: this mapping's resources may bind it
    _check_bindings(uses, names, set())
    _check_same_fields(uses, names)
    _check_identity_order(uses, names, set())
    _unbind_absent(uses, names)
    _remember_refs(uses)
    raw_events = doc.get("events") or []
    match = doc.get("match") or []
    if not isinstance(match, list):
        raise _err("match must be a list of payload namespaces (or root element names)", doc.pos("match"))
    mm = MessageMapping(structure, tuple(str(e) for e in raw_events), uses, c._show(path), "", tuple(str(m) for m in match))
    mm.embedded = embedded
    if "out_of_place" in doc:
        mm.out_of_place = _out_of_place(doc)
    if "document" in doc:
        mm.document = _document(c, doc)
        mm.owned_types = tuple(sorted({u.template.fhir_type for u in _walk(uses) if u.template is not None and u.write == "update"}))
    return mm


def _out_of_place(doc: YMap) -> frozenset[str]:
    """`out_of_place: {refuse: [OBX, ...]}`: segments that refuse the message where its structure has no place for them.

    Why: a segment the structure does not allow where it stands is kept there, and the
    groups the mapping iterates never reach it. For a result (an OBX with no OBR before
    it) that is a result silently lost; the sender hears which segment instead.
    """
    from router.mapping.compiler import _check_keys, _err

    block = doc["out_of_place"]
    if not isinstance(block, YMap):
        raise _err("out_of_place must be a mapping: {refuse: [segment names]}", doc.pos("out_of_place"))
    _check_keys(block, {"refuse", "note"}, "out_of_place")
    names = block.get("refuse")
    if not isinstance(names, YList) or not all(isinstance(n, str) and len(n) == 3 and n.isalnum() for n in names):
        raise _err("out_of_place.refuse must list segment names (OBX, OBR, ...)", block.pos("refuse"))
    return frozenset(str(n) for n in names)


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


_NOT_OVERRIDDEN = frozenset({"resourceType", "id", "meta", "identifier"})
"""The identity and provenance of a resource: the carried message's stay, or the two would not be one resource."""


def _embedded(c: Compiler, doc: YMap) -> Embedded:
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
    if not isinstance(names, YList) or not names or not all(isinstance(n, str) and n in known and n not in _NOT_OVERRIDDEN for n in names):
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


def _document(c: Compiler, doc: YMap) -> tuple[Any, ...]:
    """`document: {identity: [paths]}` — what makes a change or a cancel hit the same document."""
    from router.mapping.compiler import _check_keys, _err

    block = doc["document"]
    if not isinstance(block, YMap):
        raise _err("document must be a mapping with identity: [paths]", doc.pos("document"))
    _check_keys(block, {"identity", "replaces", "note"}, "document")
    paths = block.get("identity")
    if not isinstance(paths, YList) or not paths:
        raise _err("document.identity must list one or more paths (the first that has a value wins)", block.pos("identity"))
    replaces = c._when(_as_when(block)) if "replaces" in block else None
    return (tuple(c._path(p, paths.pos(i)) for i, p in enumerate(paths)), replaces)


def _as_when(block: YMap) -> YMap:
    """Let `document.replaces` reuse the `when:` compiler (same language, same error positions)."""
    node = YMap({"when": block["replaces"]})
    node.start = block.start
    node.key_pos = {"when": block.pos("replaces")}
    return node


def _walk(uses: list[ResourceUse]) -> list[ResourceUse]:
    out: list[ResourceUse] = []
    for u in uses:
        out.append(u)
        out.extend(_walk(u.children))
    return out


def _uses(c: Compiler, parent: YMap, key: str, names: set[str], *, top: bool = False) -> list[ResourceUse]:
    from router.mapping.compiler import _MEMO_KEYS, ResourceUse, _check_keys, _err, _need

    items = _need(parent, key, "a message mapping")
    if not isinstance(items, YList):
        raise _err(f"{key} must be a list", parent.pos(key))
    out: list[ResourceUse] = []
    for i, item in enumerate(items):
        if not isinstance(item, YMap):
            raise _err("each resource must be a mapping with name: and use:", items.pos(i))
        _check_keys(item, _ENTRY_KEYS, "a resource entry")
        name = str(_need(item, "name", "a resource entry"))
        if name in names:
            raise _err(f"resource name {name!r} is used twice", item.pos("name"))
        names.add(name)
        if "from" in item and "each" in item:
            raise _err("a resource takes from: or each:, not both", item.pos("each"))
        if "use" not in item:
            out.append(_group(c, item, name, names))
            continue
        tpl = c.template(str(_need(item, "use", "a resource entry")), item.pos("use"))
        # `with: {encounter: null}` leaves a parameter unbound: its references are left out (an ADT
        # OBX is the patient's, and the v2-to-FHIR IG cannot tell whether it belongs to the stay)
        bindings = {str(k): "" if v is None else str(v) for k, v in (item.get("with") or {}).items()}
        for param in tpl.params:
            bindings.setdefault(param, param)
        for k in bindings:
            if k not in tpl.params:
                raise _err(f"template {tpl.name} has no parameter {k!r}", item.pos("with"))
        use = ResourceUse(name, tpl, c._when(item), c._path(item["from"], item.pos("from")) if "from" in item else None, bindings, item.pos())
        use.explicit = frozenset(str(k) for k in (item.get("with") or {}))
        if "each" in item:
            use.each = _each_path(c, item)
            if getattr(use.each, "field_no", None) is not None and getattr(use.each, "segment", None) is not None:
                # One per repetition, each built from its value alone (a doctor per PV1-7 repetition): remembered per value, as `from:` is
                if not tpl.fallback and getattr(tpl.block.fast, "value_only", False):
                    use.memo = next(_MEMO_KEYS)
        if "resources" in item:
            use.children = _uses(c, item, "resources", names)
        if "write" in item:
            if item["write"] not in ("update", "create", "by-id", "patch"):
                raise _err("write must be update (replace the resource with this message's view), create (only when it does not exist yet), by-id (write at the id its identity gives, e.g. to retire a merged record) or patch (change only the elements patch: names)", item.pos("write"))
            use.write = str(item["write"])
        if use.write == "patch" or "patch" in item:
            use.patch = _patch(item, tpl.fhir_type, top=top)
        out.append(use)
    return out


def _patch(item: YMap, rtype: str, *, top: bool) -> Patch:
    """`write: patch` with `patch: {elements, absent}`: what this message changes in the stored resource, and what if none.

    Why: an M5 knows the ReseptId and why, and must not replace the M1's medication and dosage.
    """
    from router.mapping import fhir_model
    from router.mapping.compiler import _check_keys, _err, _need

    if item.get("write") != "patch":
        raise _err("patch: goes with write: patch", item.pos("patch"))
    if not top or "each" in item:
        raise _err("write: patch is for a top-level resource entry without each: (one resource the message changes)", item.pos("write"))
    if "patch" not in item:
        raise _err("write: patch needs patch: {elements: [top-level elements], absent: refuse|skip}", item.pos("write"))
    spec = item["patch"]
    if not isinstance(spec, YMap):
        raise _err("patch must be a mapping: {elements: [top-level elements], absent: refuse|skip}", item.pos("patch"))
    _check_keys(spec, {"elements", "absent", "note"}, "patch")
    names = _need(spec, "elements", "patch")
    known = fhir_model.elements(rtype)
    if not isinstance(names, YList) or not names or not all(isinstance(n, str) and n in known and n not in _NOT_OVERRIDDEN and not known[n].is_list for n in names):
        raise _err(f"patch.elements must list top-level elements of {rtype} that do not repeat, other than its identifier, id and meta", spec.pos("elements"))
    absent = _need(spec, "absent", "patch")
    if absent not in ("refuse", "skip"):
        raise _err("patch.absent is refuse (the record must hold the resource: the message is refused otherwise) or skip (nothing to change)", spec.pos("absent"))
    return Patch(rtype, tuple((str(n), patch_value_key(known[str(n)])) for n in names), absent)


def _group(c: Compiler, item: YMap, name: str, names: set[str]) -> ResourceUse:
    """An entry without `use:`: `each:` names a segment group, and its `resources:` are made once per group.

    Why: a message may repeat a whole group with its own patient (ORU's PATIENT_RESULT,
    A40's PATIENT). Made at the top, every result would belong to the first patient.
    """
    from router.mapping.compiler import ResourceUse, _err

    if "each" not in item or "resources" not in item:
        raise _err("an entry without use: is a group: it needs each: <a segment group> and resources:", item.pos())
    for key in ("from", "with", "write", "patch"):
        if key in item:
            raise _err(f"a group entry (no use:) makes no resource of its own, so it takes no {key}:", item.pos(key))
    group = ResourceUse(name, None, c._when(item), None, {}, item.pos())
    group.each = _each_path(c, item)
    if not getattr(group.each, "is_group", False):
        raise _err(f"each: {item['each']} is not a segment group; a group entry iterates groups (e.g. PATIENT_RESULT)", item.pos("each"))
    group.children = _uses(c, item, "resources", names)
    return group


def _each_path(c: Compiler, item: YMap) -> Any:
    """`each:` iterates every group, segment or repetition the path names."""
    path = c._path(item["each"], item.pos("each"))
    if getattr(path, "is_group", False):
        return path.starred()
    if path.is_segment and path.seg_rep is None:
        return c._path(f"{path.segment}[*]", item.pos("each"))
    if path.field_no is not None and path.rep is None and "-" in str(item["each"]):
        return c._path(str(item["each"]).replace(f"-{path.field_no}", f"-{path.field_no}[*]", 1), item.pos("each"))
    return path


def _check_bindings(uses: list[ResourceUse], names: set[str], outer: set[str]) -> None:
    from router.mapping.compiler import _err

    # A parameter left to its default may name a resource this message lacks
    # (an ORU has no attending doctor): that reference is simply left out.
    for use in uses:
        for param, bound in use.bindings.items():
            if param in use.explicit and bound and bound not in names:
                raise _err(f"{use.name}: parameter {param!r} is bound to {bound!r}, which this message does not produce", use.pos)
        _check_bindings(use.children, names, outer | {use.name})


def _check_same_fields(uses: list[ResourceUse], names: set[str]) -> None:
    """Refuse a `same: PV1-7` whose resource this message does not make with `each:` over PV1-7's repetitions.

    Why: `same:` finds the instance made from its own repetition (engine._Run.uses records
    them by segment, field and repetition). A resource made with `from:`, or over another field,
    records none, and every element that `same:` keeps (a participant) was left out without a word.
    """
    from router.mapping.compiler import _err

    made = {u.name: u for u in _walk(uses)}
    for use in made.values():
        for param, (segment, field_no), at in use.template.same_fields if use.template is not None else ():
            bound = use.bindings.get(param, param)
            if not bound:
                continue  # `with: {param: null}`: left out on purpose
            field = f"{segment}-{field_no}"
            pairs = f"{use.name} ({use.template.name}) pairs with the {bound!r} made from each {field} repetition (same: {field} at {at[0]}:{at[1]})"
            other = made.get(bound)
            if other is None:
                if bound in names:
                    continue  # the embedded messages' resource (embedded.same): made by their own mapping
                raise _err(f"{pairs}, but this message makes no {bound!r}: make it with each: {field}[*], or bind {param!r} with with: {{{param}: null}}", use.pos)
            each = other.each
            if other.template is not None and getattr(each, "segment", None) == segment and getattr(each, "field_no", None) == field_no and hasattr(each, "keyed"):
                continue
            how = f"each: {_text(each)}" if each is not None else f"from: {_text(other.source)}" if other.source is not None else "once, with neither from: nor each:"
            raise _err(f"{pairs}, but {bound!r} is made {how}; make it with each: {field}[*], one per repetition", other.pos)


def _text(path: Any) -> str:
    return str(getattr(path, "text", path))


def _unbind_absent(uses: list[ResourceUse], names: set[str]) -> None:
    """Bind to nothing ("") each parameter left to its default that names no resource of this message.

    Why: an ORU makes no Immunization, yet every result's `partOf: ref immunization` made a
    reference, dropped it at the end, and so marked the result for pruning (~20 k instructions
    per OBX). Bound to nothing, the rule places nothing.
    """
    for use in uses:
        if use.template is not None:
            for param in use.template.params:
                if param not in use.explicit and use.bindings.get(param, param) not in names:
                    use.bindings[param] = ""
        _unbind_absent(use.children, names)


def _remember_refs(uses: list[ResourceUse]) -> None:
    """Let the engine build once per value a resource whose `ref:` lists name siblings made from that value.

    Why: a bed is part of its room, and the room of its ward, all three read from PV1-3 alone,
    and a feed names the same few places in message after message. The engine keeps what it built
    from a value (engine._one); that is right only when what the resource holds follows from the
    value. A `ref:` list reads which resource was made: so each one it names must be an earlier
    sibling with the same `from:`, no `when:`, that is itself built from the value alone. Then it
    is made, under the same identity, in exactly the messages that make this one.
    """
    from router.mapping.compiler import _MEMO_KEYS

    seen: dict[str, ResourceUse] = {}
    for use in uses:
        tpl = use.template
        if tpl is not None and tpl.value_only_refs and use.memo is None and use.source is not None and not tpl.fallback:
            text = getattr(use.source, "text", None)
            named = [seen.get(use.bindings.get(p, p)) for p in tpl.earlier if use.bindings.get(p, p)]
            if text is not None and all(o is not None and o.memo is not None and o.when is None and getattr(o.source, "text", None) == text for o in named):
                use.memo = next(_MEMO_KEYS)
        seen[use.name] = use
        _remember_refs(use.children)


def _check_identity_order(uses: list[ResourceUse], names: set[str], before: set[str]) -> None:
    """Refuse an identity part `ref(x)`, or a `ref:` list's resource, that the message makes only later: it would be empty, silently."""
    from router.mapping.compiler import _err
    from router.mapping.runtime import IdentityOf

    seen = set(before)  # what a use here can see: earlier siblings and what encloses them (engine._Run.uses)
    for use in uses:
        for part in use.template.fallback if use.template is not None else ():
            if type(part) is IdentityOf:
                bound = use.bindings.get(part.param, part.param)
                if bound in names and bound not in seen:
                    raise _err(f"{use.name}: its identity's {part.text} names {bound!r}, which this message makes later or elsewhere; list {bound!r} before {use.name!r}", use.pos)
        for param in use.template.earlier if use.template is not None else ():
            # A `ref:` list is resolved when its rule runs: a resource made later would never be chosen.
            bound = use.bindings.get(param, param)
            if bound in names and bound not in seen:
                raise _err(f"{use.name}: its `ref:` list (or `ref:` with rules:) reads {param!r} when it runs, but {bound!r} is made later or elsewhere; list {bound!r} before {use.name!r}", use.pos)
        seen.add(use.name)
        _check_identity_order(use.children, names, seen)
