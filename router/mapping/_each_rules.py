"""Compile `each:` rules and the `same:` references that pair with what they iterate.

    - target: diagnosis                # an Encounter's diagnosis list
      each: DG1                        # one entry per DG1 segment
      rules:
        - target: condition
          ref: diagnosis
          same: DG1                    # the Condition made from this entry's own DG1

`each:` gives one value, or one object built by nested `rules:`, per repetition, segment
or segment group its path names. An element whose `same:` reference finds no resource is
dropped whole, so what it alone read is held apart and reported unmapped (engine.run_mapping).

Split from _rules.py, which compiles a rule and hands these its `each:` and `same:`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from router.mapping import _steps, fhir_model
from router.mapping._yaml import YList, YMap
from router.mapping.runtime import Produce, Put, RunContext, SameRef, Step

if TYPE_CHECKING:
    from router.mapping.compiler import Compiler


_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_FIELD_NAME = re.compile(r"([A-Z][A-Z0-9]{2})-([1-9][0-9]*)")


def compile_same_ref(c: Compiler, node: YMap, name: str) -> Produce:
    """`ref: diagnosis` with `same: DG1`: the *name* instance made from the DG1 that is current here.

    Why: inside `each: DG1` (an Encounter's diagnosis list) every entry must name the Condition
    made from its own segment; a plain `ref:` names the last one made, `refs:` all of them.
    `same: PV1-7` does the same for a field's repetitions: inside `each: PV1-7[*]` (the stay's
    participants) the Practitioner made from this repetition (a message's `each: PV1-7[*]`).
    """
    from router.mapping.compiler import _err

    text = str(node["same"])
    field = _FIELD_NAME.fullmatch(text)
    if field is not None:
        at = (field[1], int(field[2]))
        if at not in c._iterating:
            around = ", ".join(f"{s}-{f}" for s, f in c._iterating) or "none"
            raise _err(f"same: {text} pairs with the repetition of {text} an enclosing each: iterates, but no enclosing each: iterates {text} (fields iterated here: {around}); put this rule under `each: {text}[*]`", node.pos("same"))
        c._same_fields.append((name, at, node.pos("same")))  # the message must make *name* with each: over this field

        def same_repetition(scope: Any, ctx: RunContext) -> list[Any]:
            key = ctx.same_at.get(at)
            if key is None:
                return []
            return [SameRef(ctx.bindings.get(name, name) or "", key)]

        return same_repetition
    if not _SEGMENT_NAME.fullmatch(text):
        raise _err(f"same: names a segment (DG1) or a field an enclosing each: iterates (PV1-7), not {text!r}", node.pos("same"))
    segment = text
    c._same_fields.append((name, (segment, None), node.pos("same")))  # the message must make *name* with each: over this segment

    def same_ref(scope: Any, ctx: RunContext) -> list[Any]:
        seg = scope.segments.get(segment)
        if seg is None:
            return []  # no such segment current here: nothing to point at
        # Unbound (no resource of this message is made from these segments), it names nothing and
        # so takes its element away when references are resolved, as a Condition not made would.
        return [SameRef(ctx.bindings.get(name, name) or "", seg.index)]

    return same_ref


def compile_each(c: Compiler, node: YMap, path: Any, leaf: fhir_model.Element, transform: Any, convert: Any, put: Put) -> tuple[Produce, Step | None]:
    """Return an `each:` rule's `produce` over *path*, and a fused step where its shape has one (see _steps.py).

    *transform* and *convert* are what _rules._transform made of the rule's use/fn/table.
    """
    from router.mapping._rules import _as_text  # _rules imports this module: resolved at call time
    from router.mapping.compiler import _err

    if not leaf.is_list:
        # Cardinality: `each:` gives every repetition; a 0..1 element can hold one of them,
        # and silently keeping the last would drop the rest.
        raise _err(f"each: gives one value per repetition, but {node['target']} holds only one (0..1): use from: (the first) or a repeating target", node.pos("each"))
    if getattr(path, "is_group", False) and ("rules" in node or not path.is_leaf):
        path = path.starred()
        if "rules" not in node:
            raise _err("each: over segment groups needs nested rules:", node.pos("each"))
        gblock = c.block(node["rules"], leaf.type_name or "", node.pos("rules"))

        def group_produce(scope: Any, ctx: RunContext) -> list[Any]:
            out = []
            for item in path.resolve(scope):
                obj = gblock.build(scope.child(group=item.group), ctx)
                if obj:
                    out.append(obj)
            return out

        group_produce.plan = ("groups", path, gblock.build)  # type: ignore[attr-defined]  # _codegen.py writes the loop out
        return group_produce, None
    if path.is_segment:
        if path.seg_rep is None:
            path = c._path(f"{path.segment}[*]", node.pos("each"))
        if "rules" not in node:
            raise _err("each: over segments needs nested rules:", node.pos("each"))
        block = c.block(node["rules"], leaf.type_name or "", node.pos("rules"))
        if _kept_by_same(node["rules"]):
            return _held_segments(path, block.build)

        def seg_produce(scope: Any, ctx: RunContext) -> list[Any]:
            out = []
            for item in path.resolve(scope):
                obj = block.build(scope.child(segments={item.segment.name: item.segment}), ctx)
                if obj:
                    out.append(obj)
            return out

        seg_produce.plan = ("segments", path, block.build, False)  # type: ignore[attr-defined]  # _codegen.py writes the loop out
        return seg_produce, None
    if path.rep is None and path.field_no is not None:
        text = str(node["each"])
        star = text.replace(f"-{path.field_no}", f"-{path.field_no}[*]", 1)
        path = c._path(star, node.pos("each"))
    if "rules" in node:
        # an HL7 v2 field's repetitions (a path that can tell each value's repetition): what a `same: PV1-7` inside may pair with
        field = (path.segment, path.field_no) if hasattr(path, "keyed") and path.segment is not None and path.field_no is not None else None
        saved = c._iterating
        if field is not None:
            c._iterating = (*saved, field)
        try:
            block = c.block(node["rules"], leaf.type_name or "", node.pos("rules"))
        finally:
            c._iterating = saved
        if field is not None and _kept_by_same(node["rules"]):
            return _held_repetitions(path, field, block.build)

        def rules_produce(scope: Any, ctx: RunContext) -> list[Any]:
            out = []
            for k, item in enumerate(path.resolve(scope)):
                obj = block.build(scope.at(item.raw, path, k), ctx)
                if obj:
                    out.append(obj)
            return out

        return rules_produce, _steps.each(path, _steps.datatype(block.build, path), put)

    if "use" not in node:
        path = _as_text(path)  # each value is final (plain, fn or table): its escapes are undone

    def produce(scope: Any, ctx: RunContext) -> list[Any]:
        out = []
        for item in path.resolve(scope):
            v = transform(scope, ctx, item)
            if v is not None:
                out.append(v)
        return out

    return produce, _steps.each(path, convert(path) if convert else None, put)


def _kept_by_same(rules: Any) -> bool:
    """Tell whether an element these rules build is kept only if its `same:` reference names a resource (a diagnosis entry)."""
    return isinstance(rules, YList) and any(isinstance(rule, YMap) and "same" in rule for rule in rules)


def _held_segments(path: Any, build: Any) -> tuple[Produce, Step | None]:
    """`each:` over segments whose element stands or falls with its `same:` reference: its reads are held until then.

    Why: an Encounter's diagnosis entry reads DG1-6 and DG1-15, and is dropped whole when no
    Condition was made from its DG1 (an A02 makes none). A field read only for an element that
    is dropped reached no output, so the unmapped report must list it. Each element is built
    with reads of its own; the engine counts them once references are resolved, for the
    elements still there (engine.run_mapping).
    """

    def held_produce(scope: Any, ctx: RunContext) -> list[Any]:
        out = []
        for item in path.resolve(scope):
            inner = scope.child(segments={item.segment.name: item.segment})
            own = inner.reads = set()
            obj = build(inner, ctx)
            if obj:
                ctx.held_reads.append((obj, own, scope.reads))
                out.append(obj)
        return out

    held_produce.plan = ("segments", path, build, True)  # type: ignore[attr-defined]  # _codegen.py writes the loop out
    return held_produce, None


def _held_repetitions(path: Any, field: tuple[str, int], build: Any) -> tuple[Produce, Step | None]:
    """`each: PV1-7[*]` whose element stands or falls with its `same: PV1-7` reference: per repetition, reads held.

    Why: each attending doctor is a participant of the stay by the Practitioner made from his own
    repetition, however many the sender gives (the message makes one per repetition, recorded by
    segment, field and repetition: engine._Run.uses). The element's `same:` reference finds its
    repetition in `ctx.same_at`. As with segments (_held_segments), an element dropped for want of
    its resource reached no output, so what only it read is reported unmapped.
    """

    def held_produce(scope: Any, ctx: RunContext) -> list[Any]:
        outer = scope.reads
        field_reads: set[Any] = set()
        scope.reads = field_reads  # the field itself counts as read only for an element kept
        try:
            keyed = path.keyed(scope)
        finally:
            scope.reads = outer
        if not keyed:
            return []
        same_at = ctx.same_at
        before = same_at.get(field)
        out = []
        for k, (raw, key) in enumerate(keyed):
            inner = scope.at(raw, path, k)
            own = inner.reads = set(field_reads)
            same_at[field] = key
            obj = build(inner, ctx)
            if obj:
                ctx.held_reads.append((obj, own, outer))
                out.append(obj)
        if before is None:
            del same_at[field]
        else:
            same_at[field] = before
        return out

    held_produce.plan = ("repetitions", path, field, build)  # type: ignore[attr-defined]  # _codegen.py writes the loop out
    return held_produce, None
