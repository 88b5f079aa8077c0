"""Run a compiled message mapping: resources in order (per group where asked), identities, a Bundle.

Every produced resource is an *instance* with an id: a top-level resource's
is its name, a nested one's is `parent/name#k`. References are recorded
against instances and resolved at the end, so a report can list observations
that are built after it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from router.errors import InvalidContent, RequiredMissing
from router.mapping._patch import patch_entry
from router.mapping.compiler import MessageMapping, ResourceUse
from router.mapping.runtime import MissingIdentity, MissingReference, RunContext, conditional_entry, identifier_query, prune, resolve_refs, resource_id

if TYPE_CHECKING:
    from router.mapping._forms import Template

PROVENANCE_SYSTEM = "urn:helsebro:mapping"
"""meta.tag system naming the mapping (structure@content-hash) that made a resource or Bundle."""

DOCUMENT_SYSTEM = "urn:helsebro:document"
"""meta.tag system that marks the resources a document owns (the record indexes it for `_tag`)."""
_DOCUMENT_SYSTEM_QUOTED = quote(DOCUMENT_SYSTEM, safe=":/.")

FALLBACK_SYSTEM = "urn:helsebro:identity"
"""System of the identifier Helsebro derives when a source carries none (documented in docs/mapping-language.md)."""


def _where(use: ResourceUse, scope: Any) -> str | None:
    """The segment an entry maps (`OBX[2]` of `each: OBX`), or the value it reads, for an error's location."""
    each = use.each
    seg = scope.segments.get(each.segment) if each is not None else None
    if seg is not None:
        return seg.label  # type: ignore[no-any-return]
    return getattr(scope, "value_loc", None) or None


def _identity_field(tpl: Template, scope: Any) -> str:
    """The field *tpl*'s identifiers come from, in this occurrence (`MRG[2]-1`), for an error's location."""
    for rule in tpl.block.rules:
        path = rule.source_path
        if rule.target.names == ("identifier",) and path is not None and getattr(path, "field_no", None):
            seg = (getattr(scope, "segments", None) or {}).get(path.segment)
            return f"{seg.label if seg is not None else path.segment}-{path.field_no}"
    return tpl.fhir_type + ".identifier"


def _group_start(scope: Any) -> str | None:
    """The first segment of the group occurrence *scope* maps (`ORC[2]` of an ORDER), for an error's location; None at the message's root."""
    group = getattr(scope, "group", None)
    if group is None or group.parent is None:
        return None
    while group is not None and group.items:
        first = group.items[0]
        if not hasattr(first, "items"):
            return getattr(first, "label", None)
        group = first
    return None


def _identity(use: ResourceUse, resource: dict[str, Any], scope: Any, ctx: RunContext) -> tuple[str, str] | None:
    """The (system, value) that makes *resource* unique; None for an `unidentified: display` template without one."""
    found = resource.get("identifier", [])
    single = isinstance(found, dict)  # Composition, Bundle…: one Identifier, not a list
    idents = [i for i in ([found] if single else found) if i.get("system") and i.get("value")]
    tpl: Template = use.template  # type: ignore[assignment]  # a resource's use: groups (no template) never get here
    for system in tpl.prefer:
        for ident in idents:
            if ident["system"] == system:
                return _unshared(tpl, resource, system, ident["value"]) if tpl.shared else (system, ident["value"])
    if idents:
        return _unshared(tpl, resource, idents[0]["system"], idents[0]["value"]) if tpl.shared else (idents[0]["system"], idents[0]["value"])
    if tpl.fallback:
        try:
            parts = tpl.fallback_values(scope, ctx)
        except MissingIdentity as exc:
            # Keyed without its patient, every patient's allergy to penicillin would be one resource.
            raise InvalidContent(f"{use.name} ({tpl.fhir_type}) has no identifier of its own, and the one Helsebro derives needs its {exc.param}, which this message does not give", location=_where(use, scope)) from None
        if any(parts):
            value = resource_id(tpl.fhir_type, *parts)  # functions.uuid5_id, faster
            derived = {"system": FALLBACK_SYSTEM, "value": value}
            if single or _single_identifier(tpl.fhir_type):
                resource["identifier"] = derived
            else:
                resource.setdefault("identifier", []).append(derived)
            return FALLBACK_SYSTEM, value
    if tpl.unidentified is not None:
        return None
    raise InvalidContent(f"{use.name} ({tpl.fhir_type}) has no identifier to make it unique", location=_where(use, scope) or _identifier_source(tpl))


def _unshared(tpl: Template, resource: dict[str, Any], system: str, value: str) -> tuple[str, str]:
    """(*system*, *value*), or for a `shared:` system a derived identity of them, added to *resource*'s identifiers.

    Why: an organisasjonsnummer names a legal entity, and each of its services and departments with
    a HER-id of its own carries it beside that HER-id (FACTS.md §6.3). A condition on the number
    would find those: one, and a GP office named by the number alone became the municipality's home
    care service; two, and the message was refused. Named by the number alone, the resource is the
    entity itself, keyed by an identity derived from the number that only such a resource carries;
    two of them in one message are that one resource (_Run._place).
    """
    found = resource.get("identifier")
    if system not in tpl.shared or type(found) is not list:
        return system, value
    derived = resource_id(tpl.fhir_type, system, value)
    found.append({"system": FALLBACK_SYSTEM, "value": derived})
    return FALLBACK_SYSTEM, derived


def _old_identity(tpl: Template, resource: dict[str, Any], new_system: str) -> tuple[str, str] | None:
    """The (system, value) the `use: old` identifiers give, chosen as _identity chooses; None without them.

    None too when the old one is a local number and the new identity a preferred (national) one:
    the record knows such a patient by the national id, maybe never by that local number, and
    a condition on a number it lacks would make a second Patient.
    """
    found = resource.get("identifier", [])
    olds = [i for i in (found if isinstance(found, list) else [found]) if i.get("use") == "old" and i.get("system") and i.get("value")]
    for system in tpl.prefer:
        for ident in olds:
            if ident["system"] == system:
                return ident["system"], ident["value"]
    return (olds[0]["system"], olds[0]["value"]) if olds and new_system not in tpl.prefer else None


def _identifier_source(tpl: Template) -> str | None:
    """The source the template's first identifier rule reads (`PID-3`): where the sender should have put one."""
    return next((rule.source for rule in tpl.block.rules if rule.target.names[0] == "identifier" and rule.source), None)


def _refuse_self_relation(tpl: Template, resource: dict[str, Any]) -> None:
    """Refuse a document that relates to itself: a TXA-13 (parent) equal to its TXA-12 (this document).

    Why: a replacement naming itself would supersede itself (its `replaced` patch retires the very
    document it writes) and an addendum would append to itself; no record can tell what the sender meant.
    """
    own = [resource.get("masterIdentifier"), *resource.get("identifier", ())]
    for relation in resource["relatesTo"]:
        target = relation.get("target", {}).get("identifier")
        if target is not None and target in own:
            code = relation.get("code", "relates to")
            raise InvalidContent(f"the {tpl.fhir_type} names itself as the document it {code}: its parent must be another document")


def _element_name(element: str | tuple[str, ...]) -> str:
    """`status`, or a choice element's FHIR name from its JSON names (`medication[x]`)."""
    if type(element) is str:
        return element
    common = element[0]
    for name in element[1:]:
        while not name.startswith(common):
            common = common[:-1]
    while common and common[-1].isupper():  # medicationCodeableConcept, medicationReference → medicationC… → medication
        common = common[:-1]
    return f"{common}[x]"


def _display(resource: dict[str, Any]) -> str | None:
    """A resource's name as a reference's display: HumanName text, else given names and family; or a plain name."""
    name = resource.get("name")
    if isinstance(name, str):
        return name or None
    for n in name or ():
        text = n.get("text") or " ".join([*n.get("prefix", ()), *n.get("given", ()), *([n["family"]] if n.get("family") else [])])
        if text:
            return text
    return None


@cache
def _single_identifier(fhir_type: str) -> bool:
    from router.mapping import fhir_model

    el = fhir_model.elements(fhir_type).get("identifier")
    return el is not None and not el.is_list


class _Run:
    """One message's run: entries in order, and which identity went where."""

    __slots__ = ("by_url", "ctx", "entries", "untidy")

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.entries: list[dict[str, Any]] = []
        self.untidy: list[bool] = []  # per entry: may hold an empty element (see RunContext.untidy)
        self.by_url: dict[str, dict[str, Any]] = {}

    def uses(self, uses: list[ResourceUse], scope: Any, parent: str) -> None:
        ctx = self.ctx
        outer_env = ctx.env
        # The level's names are set up when it first makes something: most nested levels (an
        # OBX's performing laboratory) make nothing for most messages, and the copy cost each one.
        opened = False
        for use in uses:
            if use.when is not None and not use.when(scope):
                continue
            # `each:` over segments (not over fields or groups): which instance each segment made, for `same:` refs
            by_segment = getattr(use.each, "segment", None) if getattr(use.each, "field_no", 0) is None else None
            keyed = self._keyed(use, scope) if use.each is not None else None
            keys = None if keyed is None else [key for _, key in keyed]
            instances = self._instances(use, scope) if keyed is None else [scope.at(raw, use.each, k) for k, (raw, _) in enumerate(keyed)]
            for k, inner in enumerate(instances):
                if not opened:
                    opened = True
                    ctx.env = self._open_level(uses, outer_env, parent)
                inst = f"{parent}/{use.name}#{k}" if parent or use.each is not None else use.name
                if keys is None or k == 0:
                    # One per repetition (each attending doctor): a plain `ref:` names the first, as
                    # `from:` (the first repetition) did; `same:` names the one of its own repetition.
                    ctx.env[use.name] = inst
                if keys is not None:
                    ctx.made_from[(use.name, keys[k])] = inst
                if by_segment is not None and (seg := inner.segments.get(by_segment)) is not None:
                    ctx.made_from[(use.name, seg.index)] = inst
                ctx.children.setdefault((parent, use.name), []).append(inst)
                if use.template is None:  # noqa: SIM114 - a group: its resources, in its scope (below, _one() builds the resource: an action, not a condition to merge)
                    self.uses(use.children, inner, inst)
                elif self._one(use, inner, inst) and use.children:
                    self.uses(use.children, inner, inst)
        ctx.env = outer_env

    @staticmethod
    def _open_level(uses: list[ResourceUse], outer_env: dict[str, Any], parent: str) -> dict[str, Any]:
        """The names a level's resources see: the enclosing level's, and their siblings' (the enclosing level does not see them)."""
        env = dict(outer_env)
        if parent:
            # A reference to a later sibling (A40's survivor links the retired record made after it) is by
            # name; at the top a name is its instance, below it is `parent/name#0`: known before it is made.
            for use in uses:
                if use.each is None:
                    env[use.name] = f"{parent}/{use.name}#0"
        return env

    @staticmethod
    def _keyed(use: ResourceUse, scope: Any) -> list[tuple[str, tuple[int, int, int]]] | None:
        """For `each:` over an HL7 v2 field's repetitions, each value with its (segment index, field, repetition); else None."""
        each = use.each
        if getattr(each, "field_no", None) is None or getattr(each, "segment", None) is None:
            return None
        keyed = getattr(each, "keyed", None)
        return keyed(scope) if keyed is not None else None

    def _instances(self, use: ResourceUse, scope: Any) -> list[Any]:
        if use.each is not None:
            out = []
            for k, item in enumerate(use.each.resolve(scope)):
                group = getattr(item, "group", None)
                if group is not None:
                    out.append(scope.child(group=group))
                elif item.segment is not None:
                    out.append(scope.child(segments={item.segment.name: item.segment}))
                else:
                    out.append(scope.at(item.raw, use.each, k))  # its position worked out only for an error
            return out
        if use.source is not None:
            raw = use.read_source(scope)  # type: ignore[misc]  # set whenever source is
            return [scope.at(raw, use.source, 0)] if raw is not None else []
        return [scope]

    def _one(self, use: ResourceUse, scope: Any, inst: str) -> bool:
        ctx = self.ctx
        ctx.bindings = use.bindings
        ctx.current = inst
        ctx.untidy = False
        key = None
        if use.memo is not None and ctx.trace is None:
            # A resource built from a value alone (a practitioner in PV1-7) is the same
            # for the same value: build it once, then copy it (see _remember).
            key = (use.memo, scope.value, scope.message.delims, ctx.fn_ctx.sender)  # the sender: see FnContext
            known = ctx.fn_ctx.memo.get(key)
            if known is not None:
                try:
                    return self._recall(use, known, inst)
                except InvalidContent as exc:  # remembered or built, a refusal says which segment made the second
                    raise _placed(exc, use, scope) from None
        tpl: Template = use.template  # type: ignore[assignment]  # uses() takes the groups (no template)
        resource: dict[str, Any] = {"resourceType": tpl.fhir_type}
        block = tpl.block
        traced = 0  # --explain: where this resource's lines start in the trace
        if ctx.trace is None and block.fast is not None:
            block.fast(scope, ctx, resource)  # what block.build does without --explain, one call less
        else:
            if ctx.trace is not None:
                traced = len(ctx.trace)
            ctx.trace_prefix = [tpl.fhir_type] if ctx.trace is not None else ctx.trace_prefix
            block.build(scope, ctx, resource)
        if len(resource) == 1:
            if key is not None:
                _remember(ctx.fn_ctx.memo, key, _NOTHING)
            return False
        for element, source in tpl.required:
            if element not in resource and (type(element) is str or not any(n in resource for n in element)):
                # Invalid FHIR never reaches the record: the sender hears which field was empty.
                raise RequiredMissing(f"{tpl.fhir_type}.{_element_name(element)} is required, but {source} gives no value", location=source)
        if "relatesTo" in resource:
            _refuse_self_relation(tpl, resource)
        identity = _identity(use, resource, scope, ctx)
        if identity is None:
            # A doctor or an office named without a number is no record of its own (two
            # "Lisa Lege" need not be one person): references to it carry its name instead.
            shown = _display(resource)
            if shown:
                ctx.displays[inst] = shown
            if ctx.trace is not None:  # --explain tells what is in the output: not this resource's elements
                del ctx.trace[traced:]
                ctx.trace.append((f"{tpl.fhir_type} (not written)", f"{tpl.pos[0]}:{tpl.pos[1]}",
                                  "no identifier: a reference to it carries its name" if shown else "no identifier"))
            return False
        system, value = identity
        write = use.write
        entry = conditional_entry(tpl.fhir_type, resource, system, value, create_only=write == "create", by_id=write == "by-id")
        if write == "reidentify" and (before := _old_identity(tpl, resource, system)) is not None:
            # An identifier change (A47): the record knows the patient by the old identity
            # (MRG-1, now `use: old`); a condition on the new one would make a second Patient
            # beside it and leave the stays with the first.
            entry["request"]["url"] = f"{tpl.fhir_type}?{identifier_query(*before)}"
        if write == "by-id" and entry["fullUrl"] in self.by_url:
            # Its identity is one an earlier resource of this message already has: the
            # merge's survivor (PID-3 and MRG-1 name one patient). Said so, not as a mapping fault.
            field = _identity_field(tpl, scope)
            raise InvalidContent(f"the merge names one {tpl.fhir_type} as both survivor and retired: {field} gives the survivor's identity", location=field)
        if write == "by-id":
            # A retired record (a merge's old Patient) is found by its id from now on: its
            # identifiers moved to the survivor, so a search by them finds the survivor only.
            resource.pop("identifier", None)
        if key is not None:
            try:
                _remember(ctx.fn_ctx.memo, key, (orjson.dumps(entry), ctx.untidy, system))
            except TypeError:  # a value JSON cannot hold exactly (an integer past 64 bits): built each time
                pass
        try:
            return self._place(tpl.fhir_type, entry, inst, system, ctx.untidy, write, shared=bool(tpl.shared) and system == FALLBACK_SYSTEM)
        except InvalidContent as exc:  # two resources under one identity: say which segment made the second
            raise _placed(exc, use, scope) from None

    def _recall(self, use: ResourceUse, known: tuple[bytes | None, bool, str], inst: str) -> bool:
        blob, untidy, system = known
        if blob is None:
            return False
        tpl: Template = use.template  # type: ignore[assignment]  # only _one() remembers, and only resources
        return self._place(tpl.fhir_type, orjson.loads(blob), inst, system, untidy, shared=bool(tpl.shared) and system == FALLBACK_SYSTEM)

    def _place(self, fhir_type: str, entry: dict[str, Any], inst: str, system: str, untidy: bool, write: str = "update", *, shared: bool = False) -> bool:
        base, k = "", 1
        while (earlier := self.by_url.get(entry["fullUrl"])) is not None:
            # The same identity twice with the same content (attending = admitting) is one entry.
            if earlier["resource"] == entry["resource"]:
                self.ctx.full_urls[inst] = entry["fullUrl"]
                return True
            if shared:
                # One legal entity named twice by its number alone (a municipality and its GP office): one
                # resource, as the first names it; a reference to the second carries the second's own name.
                self.ctx.full_urls[inst] = entry["fullUrl"]
                if (shown := _display(entry["resource"])) and shown != _display(earlier["resource"]):
                    self.ctx.displays[inst] = shown
                return True
            if system != FALLBACK_SYSTEM:
                # Two different resources under one business identity would lose data: refused.
                raise InvalidContent(f"two different {fhir_type} resources share the identity {system}|…; the mapping's identity is not specific enough")
            # A derived identity is told apart by occurrence, the k-th hashing the derived value and k:
            # lines repeating one test in one order, which the line number (OBX-1) told apart before,
            # keep their identities when a final report renumbers them.
            resource = entry["resource"]
            derived = resource["identifier"]
            derived = derived if type(derived) is dict else derived[-1]  # what _identity added
            base, k = base or derived["value"], k + 1
            derived["value"] = resource_id(fhir_type, base, str(k))
            entry = conditional_entry(fhir_type, resource, FALLBACK_SYSTEM, derived["value"], create_only=write == "create", by_id=write == "by-id")
        url = entry["fullUrl"]
        self.ctx.full_urls[inst] = url
        self.by_url[url] = entry
        self.entries.append(entry)
        self.untidy.append(untidy)
        return True


def _placed(exc: InvalidContent, use: ResourceUse, scope: Any) -> InvalidContent:
    """*exc* with the position of the segment that made the second resource, when it has none of its own."""
    if exc.location is None and (where := _where(use, scope) or _group_start(scope)):
        return InvalidContent(exc.reason, location=where)
    return exc


_NOTHING = (None, False, "")
"""What a remembered use that built an empty resource gives: no entry."""

_MEMO_MAX = 4096
"""Values remembered per converter before the memo starts over: practitioners and senders repeat, this bounds the rest."""


def _remember(memo: dict[Any, Any], key: Any, known: tuple[bytes | None, bool, str]) -> None:
    """Keep what a use built from a value, as JSON bytes.

    Bytes, so no message can change what the next one is given: each recall
    parses a fresh entry, which later steps (provenance, prune, the record) may change freely.
    """
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = known


def _own(mm: MessageMapping, scope: Any, run: _Run) -> None:
    """Tag the document's own resources and replace what earlier messages of it made.

    One conditional DELETE per owned type, by tag, goes first: the record deletes
    the document's resources this Bundle does not write again (a change drops
    what the new version lacks; a cancel that restates nothing drops them all).
    """
    paths, replaces = mm.document
    doc_id = next((items[0].raw for p in paths if (items := p.resolve(scope))), None)
    if not doc_id:
        raise InvalidContent("the message has no document identity", location=getattr(paths[0], "text", None))
    code = f"{mm.structure}/{doc_id}"
    owned = set(mm.owned_types)
    for entry in run.entries:
        resource = entry["resource"]
        if resource["resourceType"] in owned and entry["request"]["method"] == "PUT":
            resource.setdefault("meta", {}).setdefault("tag", []).append({"system": DOCUMENT_SYSTEM, "code": code})
    if replaces is None or not replaces(scope):
        return  # a new document: nothing earlier to replace
    tag = f"{_DOCUMENT_SYSTEM_QUOTED}|{quote(code, safe='')}"
    deletes = [{"request": {"method": "DELETE", "url": f"{t}?_tag={tag}"}} for t in mm.owned_types]
    run.entries[:0] = deletes
    run.untidy[:0] = [False] * len(deletes)


def run_mapping(
    mm: MessageMapping, scope: Any, fn_ctx: Any, *, trace: list[tuple[str, str, str]] | None = None,
    given: dict[str, str] | None = None, made: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build the transaction Bundle for one message.

    *given* names resources made outside this run (name → fullUrl: the patient of
    the messages an M9.6 embeds), which its resources may reference as their own.
    *made*, when passed, is filled with the fullUrl of each top-level resource made.

    Raises:
        MessageError: a value is invalid (e.g. a national id that fails its check digits).
    """
    run = _Run(RunContext(fn_ctx, trace=trace))
    for name, url in (given or {}).items():
        run.ctx.env[name] = f"given:{name}"  # an instance id no use can make (names have no colon)
        run.ctx.full_urls[f"given:{name}"] = url
    run.uses(mm.resources, scope, "")
    if made is not None:
        made.update((u.name, run.ctx.full_urls[u.name]) for u in mm.resources if u.name in run.ctx.full_urls)
    try:
        dropped = resolve_refs(run.ctx)
    except MissingReference as exc:  # where the missing resource would have come from: PID-3 for the patient
        template = next((u.template for u in mm.resources if u.name == exc.name and u.template is not None), None)
        raise InvalidContent(exc.reason, location=_identifier_source(template) if template is not None else None) from None
    for element, own, reads in run.ctx.held_reads:
        if element:  # still there: its `same:` reference named a resource (resolve_refs empties it otherwise)
            reads |= own
    # Provenance: every resource says which mapping (file and content hash) made it,
    # so the record can tell, for each stored version, where it came from.
    code = f"{mm.structure}@{mm.sha}"
    for entry in run.entries:
        entry["resource"]["meta"] = {"tag": [{"system": PROVENANCE_SYSTEM, "code": code, "display": mm.file}]}
    if mm.document:
        _own(mm, scope, run)
    dropped_urls = {run.ctx.full_urls.get(inst) for inst in dropped} if dropped else ()
    for entry, flagged in zip(run.entries, run.untidy):
        if (flagged or entry.get("fullUrl") in dropped_urls) and "resource" in entry:  # the rest cannot hold an empty element
            prune(entry["resource"])
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"tag": [{"system": PROVENANCE_SYSTEM, "code": code, "display": mm.file}]},
        "entry": _patched(mm, run),
    }


def _patched(mm: MessageMapping, run: _Run) -> list[dict[str, Any]]:
    """The run's entries, each `write: patch` resource's turned into its PATCH entry (or left out when it changes nothing).

    Why at the end: the PATCH carries the resource as finished, with its
    references resolved to the Bundle's fullUrls (the subject its condition
    names), its provenance tag and its empty elements pruned. `write: patch` is
    for top-level entries only (_messages.py), so each is one instance, named as its use.
    """
    specs = {run.ctx.full_urls[u.name]: u.patch for u in mm.resources if u.patch is not None and u.name in run.ctx.full_urls}
    if not specs:
        return run.entries
    out = []
    for entry in run.entries:
        spec = specs.get(entry.get("fullUrl", ""))
        if spec is None:
            out.append(entry)
            continue
        owner = None
        if spec.owner is not None:
            owner = run.ctx.full_urls.get(spec.owner)
            if owner is None:  # lint makes it a Patient the message makes; its source may still be empty (an A45 without MRG-1)
                made = next((u for u in mm.resources if u.name == spec.owner), None)
                where = getattr(getattr(made, "source", None), "text", None)
                raise InvalidContent(f"the {spec.type} this message moves needs the patient it moves from, which {where or spec.owner} does not give", location=where)
        if (patched := patch_entry(entry, spec, owner)) is not None:
            out.append(patched)
    return out
