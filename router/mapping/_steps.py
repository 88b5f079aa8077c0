"""Fused closures for the common rule shapes: read, convert and place a value in one call.

Split from _rules.py, which checks a rule and picks its shape; these only run.
A step does what the rule's `produce` followed by `Target.put` does, in the
same order, but makes no Items and formats no positions: a position is worked
out again, by resolving the path once more, only when a function or a table
rejects a value. Source paths may offer `reader()` and `values(scope)` (the
HL7 paths do); any other path is read through `resolve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.errors import InvalidContent, MessageError
from router.mapping.conditions import Predicate
from router.mapping.fhir_model import ValueCheck
from router.mapping.library import Function, call
from router.mapping.runtime import Produce, Put, Ref, RunContext, Step
from router.mapping.tables import Table

Convert = Callable[[Any, RunContext, Any, int], Any]
"""(scope, context, value, index of the value in its path) → converted value, or None to drop it."""

Build = Callable[..., dict[str, Any]]
"""A Block's `build(scope, ctx)`."""


def finish(step: Step | None, produce: Produce, put: Put, when: Predicate | None) -> Step:
    """Return *step*, or one made of *produce* and *put*, guarded by *when*."""
    if step is None:
        step = _generic(produce, put)
    if when is None:
        return step
    inner = step

    def guarded(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        if not when(scope):
            return False
        return inner(scope, ctx, obj)

    guarded.when, guarded.inner = when, inner  # type: ignore[attr-defined]  # _codegen.py writes the guard out in line
    plan = getattr(inner, "plan", None)
    if plan is not None:  # and the rule too
        guarded.plan = plan  # type: ignore[attr-defined]
    return guarded


def untidy(put: Put, *, always: bool) -> Put:
    """Wrap *put* to mark the resource for pruning: always, or when the value is a dict or a list."""
    if always:

        def mark(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
            ctx.untidy = True
            put(obj, value, ctx)

        mark.plan = ("untidy", True, put)  # type: ignore[attr-defined]  # for _codegen.py
        return mark

    def check(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
        if type(value) is dict or type(value) is list:  # a number or a boolean is never empty
            ctx.untidy = True
        put(obj, value, ctx)

    check.plan = ("untidy", False, put)  # type: ignore[attr-defined]
    return check


def _generic(produce: Produce, put: Put) -> Step:
    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        values = produce(scope, ctx)
        for v in values:
            put(obj, v, ctx)
        return bool(values)

    shape = getattr(produce, "plan", None)
    if shape is not None and shape[0] == "segments":  # `each:` over segments with nested rules
        step.plan = ("each_segment", shape[1], shape[2], put, shape[3])  # type: ignore[attr-defined]  # for _codegen.py
    elif shape is not None and shape[0] == "groups":  # `each:` over segment groups with nested rules
        step.plan = ("each_group", shape[1], shape[2], put)  # type: ignore[attr-defined]
    elif shape is not None and shape[0] == "repetitions":  # `each:` over a field's repetitions, paired by `same:`
        step.plan = ("each_repetition", shape[1], shape[2], shape[3], put)  # type: ignore[attr-defined]
    return step


def first(path: Any, convert: Convert | None, put: Put) -> Step:
    """`from:` — place the path's first value, converted."""
    read = reader(path)
    if convert is None:

        def plain(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
            v = read(scope)
            if v is None:
                return False
            put(obj, v, ctx)
            return True

        plain.plan = ("first", path, None, put)  # type: ignore[attr-defined]  # for _codegen.py
        return plain

    def converted(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        v = read(scope)
        if v is None:
            return False
        v = convert(scope, ctx, v, 0)
        if v is None:
            return False
        put(obj, v, ctx)
        return True

    converted.plan = ("first", path, convert, put)  # type: ignore[attr-defined]
    return converted


def each(path: Any, convert: Convert | None, put: Put) -> Step:
    """`each:` — place every value of the path, converted, in order."""
    values = getattr(path, "values", None) or (lambda scope: [item.raw for item in path.resolve(scope)])

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        placed = False
        for i, v in enumerate(values(scope)):
            if convert is not None:
                v = convert(scope, ctx, v, i)
                if v is None:
                    continue
            put(obj, v, ctx)
            placed = True
        return placed

    step.plan = ("each", path, convert, put)  # type: ignore[attr-defined]
    return step


def nested(build: Build, put: Put) -> Step:
    """`rules:` without `each:` — an object built in the same scope."""

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        o = build(scope, ctx)
        if not o:
            return False
        put(obj, o, ctx)
        return True

    step.plan = ("nested", build, put)  # type: ignore[attr-defined]
    return step


def ref(name: str, put: Put) -> Step:
    """`ref:` — a reference to the resource bound to the template parameter *name*."""

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        bound = ctx.bindings.get(name, name)
        if not bound:  # bound to nothing: `with: {x: null}`, or a resource this message never makes
            return False
        put(obj, Ref(ctx.env.get(bound, bound)), ctx)
        return True

    step.plan = ("ref", name, put)  # type: ignore[attr-defined]
    return step


def reference_to_first(names: tuple[str, ...], build: Build | None, scope: Any, ctx: RunContext) -> dict[str, Any] | None:
    """The Reference to the first resource of the parameters *names* this message made so far, with what *build* gives.

    One made without an identifier (`unidentified: display`) is referenced by its name; when none
    was made, or a parameter is bound to nothing, what *build* gives is the reference on its own
    (a display-only one), and nothing when it gives nothing.
    """
    value = build(scope, ctx) if build is not None else {}
    for name in names:
        bound = ctx.bindings.get(name, name)
        if not bound:  # `with: {x: null}`, or a resource this message never makes
            continue
        inst = ctx.env.get(bound, bound)
        url = ctx.full_urls.get(inst)
        shown = ctx.displays.get(inst)
        if url:
            # with a name only when the resource was written as another's (engine._unshared)
            return {"reference": url, "display": shown, **value} if shown else {"reference": url, **value}
        if shown:
            return {"display": shown, **value}
    return value or None


def first_made(names: tuple[str, ...], build: Build | None, put: Put, *, stand_in: Put) -> Step:
    """`ref:` naming a list, or with `rules:` — the Reference to the first of *names* made, resolved when the rule runs.

    The step carries what the compiler asks when it decides whether the engine may build its
    resource once per value (compiler._value_only_but_refs): `extra`, the build of the rules
    beside `ref:`, and `stand_in`, a step that places a constant where this one places the
    reference (the rest of the block is then judged as it is).
    """

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        value = reference_to_first(names, build, scope, ctx)
        if value is None:
            return False
        put(obj, value, ctx)
        return True

    step.extra, step.stand_in = build, constant({}, stand_in)  # type: ignore[attr-defined]  # read by compiler._value_only_but_refs
    return step


def constant(value: Any, put: Put) -> Step:
    """`value:` — the same (shared) constant every time, as `produce` gives it."""

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        put(obj, value, ctx)
        return True

    step.plan = ("const", value, put)  # type: ignore[attr-defined]
    return step


def fn_args(fn: Function, paths: list[Any], put: Put, check: ValueCheck | None = None) -> Step:
    """`fn:` with `args:` — call a function on the first value of each path; *check* fits the result to the target's type."""
    readers = [reader(p) for p in paths]
    where = tuple((p, 0) for p in paths)
    if len(readers) == 3 and check is None:  # every args: rule in the shipped mappings; skip the comprehension
        r0, r1, r2 = readers

        def three(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
            out = call_at(fn, ctx.fn_ctx, [r0(scope), r1(scope), r2(scope)], scope, where)
            if out is None:
                return False
            put(obj, out, ctx)
            return True

        three.plan = ("fn", fn, paths, put, None)  # type: ignore[attr-defined]  # for _codegen.py
        return three

    def step(scope: Any, ctx: RunContext, obj: dict[str, Any]) -> bool:
        out = call_at(fn, ctx.fn_ctx, [r(scope) for r in readers], scope, where)
        if check is not None and type(out) is str and not check.fits(out):
            out = fit(check, out, paths[0], scope, 0)  # a result from several fields is refused at the first
        if out is None:
            return False
        put(obj, out, ctx)
        return True

    step.plan = ("fn", fn, paths, put, check)  # type: ignore[attr-defined]
    return step


def datatype(build: Build, path: Any) -> Convert:
    """Convert a value by building an object from it (`use:`, or `each:` with `rules:`)."""

    def convert(scope: Any, ctx: RunContext, value: Any, index: int) -> Any:
        return build(scope.at(value, path, index), ctx) or None

    if hasattr(path, "segment") and hasattr(path, "comp"):  # an HL7 path: scope.at is its Scope's
        convert.plan = ("datatype", build, path)  # type: ignore[attr-defined]  # for _codegen.py
    return convert


def converter(fn: Function | None, table: Table | None, *, codeable: bool, path: Any, check: ValueCheck | None = None) -> Convert | None:
    """Convert a value with `fn:` then `table:` (and its `unmapped: {fn: …}` of the value as read), then fit it to the target's type (*check*); None when there is nothing to do."""
    if fn is None and table is None and check is None:
        return None
    at_first = ((path, 0),)
    fallback = table.fallback if table is not None else None

    def convert(scope: Any, ctx: RunContext, value: Any, index: int) -> Any:
        raw = value
        if fn is not None:
            value = call_at(fn, ctx.fn_ctx, [value], scope, ((path, index),) if index else at_first)
        if table is not None and value is not None:
            try:
                value = table.lookup(value, None)
            except MessageError:
                value = table.lookup(value, location(path, scope, index))  # raises again, now with the position
            if value is None and fallback is not None:
                value = call_at(fallback, ctx.fn_ctx, [raw], scope, ((path, index),) if index else at_first)
            if codeable and isinstance(value, dict):
                value = {"coding": [value]}
        if check is not None and type(value) is str and not check.fits(value):
            value = fit(check, value, path, scope, index)
        return value

    convert.plan = ("conv", fn, table, codeable, path, check)  # type: ignore[attr-defined]  # for _codegen.py
    return convert


def fit(check: ValueCheck, value: str, path: Any, scope: Any, index: int) -> str | None:
    """*value*, read from the message, made to fit its FHIR type (padding stripped), or the message refused at its position.

    Called only for a value that does not fit as it stands (ValueCheck.fits): a valid one costs that test alone.
    """
    try:
        return check.fix(value)
    except ValueError as exc:
        raise InvalidContent(str(exc), location=location(path, scope, index)) from None


def call_at(fn: Function, fn_ctx: Any, values: list[str | None], scope: Any, where: tuple[tuple[Any, int], ...]) -> Any:
    """Call a library function; if it rejects the values, call it again with their positions.

    Library functions are pure and read positions only to put them in the error
    they raise, so the second call raises the error the first would have, with
    the position filled in.
    """
    try:
        return call(fn, fn_ctx, values, [None] * len(values))
    except MessageError:
        return call(fn, fn_ctx, values, [location(p, scope, i) for p, i in where])


def reader(path: Any) -> Callable[[Any], Any]:
    """Return path.reader(), or a reader built on `resolve`."""
    make = getattr(path, "reader", None)
    if make is not None:
        return make()  # type: ignore[no-any-return]
    return lambda scope: items[0].raw if (items := path.resolve(scope)) else None


def entered(path: Any) -> Any:
    """*path* for a read whose value nested rules map (`use:`, `each:` with `rules:`, a resource's `from:` or `each:`).

    An XML path (`entering()`) then counts an element with element children as
    read only as far as those rules read inside it, so the unmapped report names
    what they leave; an HL7 v2 path is its own (a field is read where it is read).
    """
    enter = getattr(path, "entering", None)
    return path if enter is None else enter()


def location(path: Any, scope: Any, index: int) -> str | None:
    """Return the position of the index-th value of *path* in *scope* (errors only)."""
    items = path.resolve(scope)
    return items[index].location if index < len(items) else None
