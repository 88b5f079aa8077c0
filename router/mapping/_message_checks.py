"""Check a message mapping's resource entries against each other, once all of them are compiled.

What one entry may say depends on the others: a `with:` binding, a `same: PV1-7` or `same: DG1`, an
identity's `ref(x)` or a `ref:` list must name a resource the message makes, and makes
in time. These refuse, with file:line:col. The last two steps settle what the checks
found: a parameter that names no resource of the message is bound to nothing, and a
resource built from its value alone is remembered per value (ResourceUse.memo).

Split from _messages.py, which compiles each entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.mapping.compiler import ResourceUse


def check_uses(uses: list[ResourceUse], names: set[str]) -> None:
    """Check *uses*, the compiled top-level entries, against *names*, every resource this message (or what it embeds) makes.

    Raises:
        MappingError: a binding, a `same:` field or an identity names a resource the message lacks or makes too late.
    """
    _check_bindings(uses, names, set())
    _check_same_fields(uses, names)
    _check_identity_order(uses, names, set())
    _unbind_absent(uses, names)
    _remember_refs(uses)


def walk_uses(uses: list[ResourceUse]) -> list[ResourceUse]:
    """Every entry of *uses*, each followed by its nested entries, in the order the mapping lists them."""
    out: list[ResourceUse] = []
    for u in uses:
        out.append(u)
        out.extend(walk_uses(u.children))
    return out


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
    """Refuse a `same: PV1-7` (`same: DG1`) whose resource this message does not make with `each:` over PV1-7's repetitions (DG1's segments).

    Why: `same:` finds the instance made from its own repetition or segment (engine._Run.uses records
    them by segment index, and field and repetition). A resource made with `from:`, once, over
    another field or segment, or once per segment group around it records none, and every element
    that `same:` keeps (a participant, a diagnosis entry) was left out without a word.

    A message that makes no resource for a `same: DG1` is left alone: its elements are left out
    on purpose (an A02 makes no Condition, so its stay lists no diagnoses; docs/mapping-language.md).
    One that makes none for a `same: PV1-7` is refused, as it was: `with: {attending: null}` says that on purpose.
    """
    from router.mapping.compiler import _err

    made = {u.name: u for u in walk_uses(uses)}
    enclosing = _enclosing(uses, None)
    for use in made.values():
        tpl = use.template
        if tpl is None:
            continue  # a group: no template, no same:
        for param, (segment, field_no), at in tpl.same_fields:
            bound = use.bindings.get(param, param)
            if not bound:
                continue  # `with: {param: null}`: left out on purpose
            what, per = (segment, "segment") if field_no is None else (f"{segment}-{field_no}", "repetition")
            each_of = what if field_no is None else f"{what}[*]"
            pairs = f"{use.name} ({tpl.name}) pairs with the {bound!r} made from each {what} {per} (same: {what} at {at[0]}:{at[1]})"
            other = made.get(bound)
            if other is None:
                if bound in names or field_no is None:
                    continue  # the embedded messages' resource (embedded.same), or no DG1 resource at all (see above)
                raise _err(f"{pairs}, but this message makes no {bound!r}: make it with each: {each_of}, or bind {param!r} with with: {{{param}: null}}", use.pos)
            if other.template is not None and _recorded_per(other.each, segment, field_no):
                continue
            raise _err(f"{pairs}, but {bound!r} is made {_how(other, enclosing)}; make it with each: {each_of}, one per {per}", other.pos)


def _recorded_per(each: Any, segment: str, field_no: int | None) -> bool:
    """Tell whether the engine records which of *segment*'s segments (*field_no* None) or of the field's repetitions made each instance of an `each:` over *each*.

    Why: what `same:` finds is only what engine._Run.uses records: for an `each:` over a segment
    path (DG1, DG1[*]) the segment of each instance; for one over a field's repetitions that can
    tell each value's repetition (`keyed`) the repetition. An `each:` over a segment group records neither.
    """
    if getattr(each, "segment", None) != segment:
        return False
    if field_no is None:
        return getattr(each, "field_no", 0) is None
    return getattr(each, "field_no", None) == field_no and hasattr(each, "keyed")


def _enclosing(uses: list[ResourceUse], parent: ResourceUse | None) -> dict[str, ResourceUse]:
    """Each nested entry's name, with the entry (a group's `each:`, usually) it is made inside."""
    out: dict[str, ResourceUse] = {}
    for use in uses:
        if parent is not None:
            out[use.name] = parent
        out.update(_enclosing(use.children, use))
    return out


def _how(use: ResourceUse, enclosing: dict[str, ResourceUse]) -> str:
    """How *use* is made, as its entry says: `each: AL1`, `from: DG1`, once per an enclosing group, or once."""
    if use.each is not None:
        return f"each: {_text(use.each)}"
    if use.source is not None:
        return f"from: {_text(use.source)}"
    outer = enclosing.get(use.name)
    if outer is not None:
        return f"once per each: {_text(outer.each)}" if outer.each is not None else f"once per {outer.name}"
    return "once, with neither from: nor each:"


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
    from router.mapping._forms import _MEMO_KEYS

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
