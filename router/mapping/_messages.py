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
`write: reidentify` replaces, as update does, the resource its `use: old` identifiers
name (an A47 changes the identifiers of the record the old ones found), else its own.
`write: patch` with `patch: {elements, absent: refuse|skip}` changes only those
elements of the resource the record holds under its identity (a FHIR PATCH: an
M5 withdraws what an M1 stored; the engine builds it, router/mapping/_patch.py).

`embedded:` (whole messages carried base64-encoded inside this one) is compiled
in _embedded.py; the checks of the resource entries against each other, once all
are compiled, are in _message_checks.py.

`document: {identity: [paths], replaces: condition}` makes the message a document:
every resource it writes with `update` is tagged with the document identity, and a
message for which `replaces` holds (a change or a cancel) retires what earlier
messages of that document made and this one does not restate.

A nested resource sees its enclosing instance by name (`ref: report` is *its*
report), and an enclosing resource lists its own children with `refs:`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.mapping._embedded import NOT_OVERRIDDEN, compile_embedded
from router.mapping._message_checks import check_uses, walk_uses
from router.mapping._patch import Patch, patch_value_key
from router.mapping._steps import entered
from router.mapping._yaml import YList, YMap

if TYPE_CHECKING:
    from router.mapping.compiler import Compiler, MessageMapping, ResourceUse

_ENTRY_KEYS = {"name", "use", "when", "from", "each", "with", "resources", "write", "patch", "note"}


def compile_message(c: Compiler, path: Path) -> MessageMapping:
    """Compile one file under messages/."""
    from router.mapping.compiler import MessageMapping, _check_keys, _err, _need

    doc = c._doc(path)
    _check_keys(doc, {"message", "description", "events", "match", "document", "out_of_place", "requires", "once", "embedded", "resources"}, "a message mapping")
    structure = str(_need(doc, "message", "a message mapping"))
    if path.stem != structure:
        raise _err(f"message {structure!r} must live in a file named {structure}.yaml", doc.pos("message"))
    names: set[str] = set()
    c._structure = structure  # its own paths are checked against its structure (Compiler._reach)
    try:
        uses = _uses(c, doc, "resources", names, top=True)
        document = _document(c, doc) if "document" in doc else None
    finally:
        c._structure = None
    embedded = compile_embedded(c, doc) if "embedded" in doc else None
    if embedded is not None and embedded.same:
        names.add(embedded.same)  # the embedded messages' resource: this mapping's resources may bind it
    check_uses(uses, names)
    raw_events = doc.get("events") or []
    if not isinstance(raw_events, list):  # a string here was read as its characters: every message refused as an event not covered
        raise _err("events must list trigger events ([A01, A04, ...])", doc.pos("events"))
    match = doc.get("match") or []
    if not isinstance(match, list):
        raise _err("match must be a list of payload namespaces (or root element names)", doc.pos("match"))
    mm = MessageMapping(structure, tuple(str(e) for e in raw_events), uses, c._show(path), "", tuple(str(m) for m in match))
    mm.embedded = embedded
    if "out_of_place" in doc:
        mm.out_of_place = _out_of_place(doc)
    if "requires" in doc:
        mm.requires = _requires(doc)
    if "once" in doc:
        mm.once = _once(doc)
    if document is not None:
        mm.document = document
        mm.owned_types = tuple(sorted({u.template.fhir_type for u in walk_uses(uses) if u.template is not None and u.write == "update"}))
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


def _requires(doc: YMap) -> tuple[str, ...]:
    """`requires: [PID]`: segments a message must carry, or it is refused naming the first one missing.

    Why: every rule about an absent segment simply writes nothing, so an ADT with no PID
    converted to a Bundle of its sending facility alone and was acknowledged as applied.
    The structure requires PID; the sender hears that it is missing instead.
    """
    return _segment_names(doc, "requires", "PID, PV1, ...")


def _once(doc: YMap) -> tuple[str, ...]:
    """`once: [MRG]`: segments the mapping applies only once, so a message carrying a second is refused naming it.

    Why: an ADT^A45 may repeat MERGE_INFO, but its move (a PATCH whose owner is the
    top-level MRG patient) is made once; a second MRG was listed as unmapped and its
    stay silently not moved, while the message was acknowledged. The sender hears
    "MRG[2]" instead, and can send each move as its own message.
    """
    return _segment_names(doc, "once", "MRG, PV1, ...")


def _segment_names(doc: YMap, key: str, example: str) -> tuple[str, ...]:
    """The non-empty list of segment names under *key*, or a lint error at its line."""
    from router.mapping.compiler import _err

    names = doc[key]
    if not isinstance(names, YList) or not names or not all(isinstance(n, str) and len(n) == 3 and n.isalnum() and n.isupper() for n in names):
        raise _err(f"{key} must list segment names ({example})", doc.pos(key))
    return tuple(str(n) for n in names)


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


def _uses(c: Compiler, parent: YMap, key: str, names: set[str], *, top: bool = False) -> list[ResourceUse]:
    from router.mapping._forms import _MEMO_KEYS
    from router.mapping.compiler import ResourceUse, _check_keys, _err, _need

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
        if item.get("with") is not None and not isinstance(item["with"], YMap):
            raise _err("with: must be a mapping of the template's parameters to resource names ({patient: patient})", item.pos("with"))
        bindings = {str(k): "" if v is None else str(v) for k, v in (item.get("with") or {}).items()}
        for param in tpl.params:
            bindings.setdefault(param, param)
        for k in bindings:
            if k not in tpl.params:
                raise _err(f"template {tpl.name} has no parameter {k!r}", item.pos("with"))
        use = ResourceUse(name, tpl, c._when(item), entered(c._path(item["from"], item.pos("from"))) if "from" in item else None, bindings, item.pos())
        use.explicit = frozenset(str(k) for k in (item.get("with") or {}))
        if "each" in item:
            use.each = _each_path(c, item)
            # One per repetition, each built from its value alone (a doctor per PV1-7 repetition): remembered per value, as `from:` is
            if getattr(use.each, "field_no", None) is not None and getattr(use.each, "segment", None) is not None and not tpl.fallback and getattr(tpl.block.fast, "value_only", False):
                use.memo = next(_MEMO_KEYS)
        if "resources" in item:
            use.children = _uses(c, item, "resources", names)
        if "write" in item:
            if item["write"] not in ("update", "create", "by-id", "reidentify", "patch"):
                raise _err("write must be update (replace the resource with this message's view), create (only when it does not exist yet), by-id (write at the id its identity gives, e.g. to retire a merged record), reidentify (update the resource its `use: old` identifiers name, e.g. an identifier change) or patch (change only the elements patch: names)", item.pos("write"))
            use.write = str(item["write"])
        if use.write == "patch" or "patch" in item:
            use.patch = _patch(item, tpl.fhir_type, top=top, patients={u.name for u in out if u.template is not None and u.template.fhir_type == "Patient"})
        out.append(use)
    return out


def _patch(item: YMap, rtype: str, *, top: bool, patients: set[str]) -> Patch:
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
    _check_keys(spec, {"elements", "absent", "owner", "note"}, "patch")
    names = _need(spec, "elements", "patch")
    known = fhir_model.elements(rtype)
    if not isinstance(names, YList) or not names or not all(isinstance(n, str) and n in known and n not in NOT_OVERRIDDEN and not known[n].is_list for n in names):
        raise _err(f"patch.elements must list top-level elements of {rtype} that do not repeat, other than its identifier, id and meta", spec.pos("elements"))
    absent = _need(spec, "absent", "patch")
    if absent not in ("refuse", "skip"):
        raise _err("patch.absent is refuse (the record must hold the resource: the message is refused otherwise) or skip (nothing to change)", spec.pos("absent"))
    owner = spec.get("owner")
    if owner is not None and "subject" not in names and "patient" not in names:
        raise _err("patch.owner goes with a patch of subject (or patient): a move from the owner to the resource's own patient", spec.pos("owner"))
    if owner is not None and owner not in patients:
        # the patient the stored resource is checked to belong to before it moves: a name that makes nothing would leave the move unchecked
        raise _err(f"patch.owner {owner!r} must name a Patient this message makes earlier, at the top level (the patient the resource moves from)", spec.pos("owner"))
    return Patch(rtype, tuple((str(n), patch_value_key(known[str(n)])) for n in names), absent, None if owner is None else str(owner))


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
    """`each:` iterates every group, segment or repetition the path names (read as far as its resources read inside)."""
    path = entered(c._path(item["each"], item.pos("each")))
    if getattr(path, "is_group", False):
        return path.starred()
    if path.is_segment and path.seg_rep is None:
        return c._path(f"{path.segment}[*]", item.pos("each"))
    if path.field_no is not None and path.rep is None and "-" in str(item["each"]):
        return c._path(str(item["each"]).replace(f"-{path.field_no}", f"-{path.field_no}[*]", 1), item.pos("each"))
    return path
