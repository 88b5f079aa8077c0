"""Compile one rule into a `Produce` closure: the heart of the mapping language.

Split from compiler.py to keep both readable. A rule has one target and one
source: `from` (first value), `each` (every repetition or segment), `value`
(a constant), `ref` (another resource), or nested `rules` (an object built in
the same scope). `fn`, `table` and `use` transform what the source yields.
`each:` and `same:`, the rules that iterate and the references that pair with
what they iterate, are compiled in _each_rules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from router.errors import InvalidContent, MessageError
from router.mapping import _steps, fhir_model
from router.mapping._checks import check_args, check_table
from router.mapping._each_rules import compile_each, compile_same_ref
from router.mapping._steps import Convert
from router.mapping._yaml import YList, YMap
from router.mapping.library import LIBRARY, call
from router.mapping.runtime import Produce, Put, Ref, RefList, RunContext, Step, Target, has_empty
from router.mapping.tables import Table, _plain

if TYPE_CHECKING:
    from router.mapping.compiler import Compiler, Rule

_SOURCES = ("from", "each", "value", "ref", "refs")


def compile_rule(c: Compiler, node: YMap, fhir_type: str) -> Rule:
    """Compile *node*, a rule inside an object of *fhir_type*."""
    from router.mapping.compiler import _RULE_KEYS, Rule, _check_keys, _err

    _check_keys(node, _RULE_KEYS, "a rule")
    target, els = c.target(node, fhir_type)
    leaf = els[-1]
    if "same" in node and "ref" not in node:
        raise _err("same: goes with ref: (the instance of that resource made from the same segment)", node.pos("same"))
    sources = [k for k in _SOURCES if k in node]
    if len(sources) > 1:
        raise _err(f"a rule takes one source, not {' and '.join(sources)}", node.pos(sources[1]))
    if not sources and "rules" not in node and not ("fn" in node and "args" in node):
        raise _err("a rule needs a source: from, each, value, ref, rules, or fn with args", node.pos())
    if "args" in node:
        check_args(node, sources)
    when = c._when(node)
    where = f"{node.pos()[0]}:{node.pos()[1]}"
    kind = sources[0] if sources else ("rules" if "rules" in node else "fn")
    put = _untidy(c, node, kind, target.setter(refs=kind in ("ref", "refs")))
    produce, step = _produce(c, node, kind, leaf, put, target_text=str(node["target"]), target=target)
    source = _source_text(node, kind)
    source_path = _explain_path(c, node, kind)
    return Rule(target, when, produce, where, source, _steps.finish(step, produce, put, when), source_path)


def _source_text(node: YMap, kind: str) -> str:
    """The rule's source as --explain names it, in the author's words: `patient`, `[bed, room, ward]`, `PID-7`, `rules`."""
    if kind == "rules":
        return "rules"
    raw = node.get(kind, node.get("args", ""))
    if kind == "ref" and isinstance(raw, YList):  # YAML's flow list, as written; a Python list would print quoted names
        return "[" + ", ".join(str(name) for name in raw) + "]"
    return str(raw)


def _explain_path(c: Compiler, node: YMap, kind: str) -> Any:
    """The path whose positions --explain names: every repetition/segment/group for `each:`, else the first."""
    if kind not in ("from", "each"):
        return None
    path = c._path(node[kind], node.pos(kind))
    if kind == "each":
        if hasattr(path, "starred"):
            return path.starred()
        if path.is_segment and path.seg_rep is None:
            return c._path(f"{path.segment}[*]", node.pos(kind))
        if path.field_no is not None and path.rep is None:
            return c._path(str(node["each"]).replace(f"-{path.field_no}", f"-{path.field_no}[*]", 1), node.pos(kind))
    return path


def _untidy(c: Compiler, node: YMap, kind: str, put: Put) -> Put:
    """Mark the resource for `prune` when this rule may place an empty element.

    Strings, Refs and objects built by blocks never are one (a block's own rules
    mark it); constants and table entries are checked here, function results
    per value.
    """
    table = c.tables.get(str(node["table"])) if "table" in node else None
    if kind == "value" and has_empty(_plain(node["value"])):
        return _steps.untidy(put, always=True)
    if table is not None and (has_empty(table.default) or any(has_empty(v) for v in table.entries.values())):
        return _steps.untidy(put, always=True)
    if "fn" in node or (table is not None and table.fallback is not None):
        return _steps.untidy(put, always=False)
    return put


def _produce(c: Compiler, node: YMap, kind: str, leaf: fhir_model.Element, put: Put, *, target_text: str, target: Target) -> tuple[Produce, Step | None]:
    """Return the rule's `produce` and, for the common shapes, a fused step (see _steps.py)."""
    from router.mapping.compiler import _err

    if kind == "value":
        const = _plain(node["value"])
        _check_value_type(node, leaf, const)
        return (lambda scope, ctx: [const]), _steps.constant(const, put)
    if kind == "ref":
        if leaf.type_name != "Reference":
            raise _err(f"ref: needs a Reference target, but {target_text} is {leaf.type_name or 'a primitive'}", node.pos("ref"))
        raw = node["ref"]
        params = c._params
        for name in raw if isinstance(raw, YList) else [raw]:
            if str(name) not in params:
                raise _err(f"ref: {str(name)!r} is not a declared parameter of this template (params: {', '.join(params) or 'none'})", node.pos("ref"))
        if "same" in node:
            if isinstance(raw, YList) or "rules" in node:
                raise _err("same: goes with ref: naming one parameter, without rules:", node.pos("same"))
            return compile_same_ref(c, node, str(raw)), None
        if isinstance(raw, YList) or "rules" in node:
            return _first_made(c, node, put, target)
        name = str(raw)
        def ref(scope: Any, ctx: RunContext) -> list[Any]:
            bound = ctx.bindings.get(name, name)
            return [Ref(ctx.env.get(bound, bound))] if bound else []

        return ref, _steps.ref(name, put)
    if kind == "refs":
        if leaf.type_name != "Reference" or not leaf.is_list:
            raise _err(f"refs: needs a repeating Reference target, but {target_text} is not one", node.pos("refs"))
        name = str(node["refs"])
        if name not in c._params:
            raise _err(f"refs: {name!r} is not a declared parameter of this template (params: {', '.join(c._params) or 'none'})", node.pos("refs"))
        return (lambda scope, ctx: [RefList(ctx.current, ctx.bindings.get(name, name))]), None
    transform, convert = _transform(c, node, leaf, target_text)
    if kind == "rules":
        sub_type = leaf.type_name
        if sub_type is None:
            raise _err(f"{target_text} is a primitive: nested rules need a complex element", node.pos("rules"))
        block = c.block(node["rules"], sub_type, node.pos("rules"))
        if "each" not in node:
            return (lambda scope, ctx: [o] if (o := block.build(scope, ctx)) else []), _steps.nested(block.build, put)
    if kind == "fn":
        return _fn_args(c, node, put, leaf)
    path = c._path(node[kind], node.pos(kind))
    if "use" in node or (kind == "each" and "rules" in node):
        path = _steps.entered(path)  # what the datatype or the nested rules read inside it is what is read
    if kind == "each":
        return compile_each(c, node, path, leaf, transform, convert, put)
    if path.is_segment:
        raise _err(f"from: {node['from']!r} names a whole segment; use each: to iterate it, or name a field", node.pos("from"))
    if not path.is_leaf and "use" not in node:
        path = c._path(f"{node['from']}.1" if "-" in str(node["from"]) or "." not in str(node["from"]) else str(node["from"]), node.pos("from"))

    def produce(scope: Any, ctx: RunContext) -> list[Any]:
        items = path.resolve(scope)
        if not items:
            return []
        out = transform(scope, ctx, items[0])
        return [] if out is None else [out]

    return produce, _steps.first(path, convert(path) if convert else None, put)


def _first_made(c: Compiler, node: YMap, put: Put, target: Target) -> tuple[Produce, Step | None]:
    """`ref:` naming a list (`[bed, room, ward]`), or with `rules:` giving the Reference's other elements (display).

    Why: a stay's place is the most granular Location the message made (v2-to-FHIR IG PL), and a
    reader of the Encounter should still see its name. A lazy reference is resolved after every
    resource is made and can hold neither a choice nor a display; this one is resolved when the rule
    runs, so its resources must come earlier in the message mapping (checked at load, _message_checks.py).
    """
    from router.mapping.compiler import _err

    raw = node["ref"]
    names = tuple(str(n) for n in raw) if isinstance(raw, YList) else (str(raw),)
    if not names or len(set(names)) != len(names):
        raise _err("ref: lists one or more different parameters, the first the message made wins", node.pos("ref"))
    build = None
    if "rules" in node:
        rules = node["rules"]
        for rule in rules if isinstance(rules, YList) else ():
            if isinstance(rule, YMap) and str(rule.get("target", "")).split(".")[0] == "reference":
                raise _err("the reference is the named resource's own; rules: beside ref: give the Reference's other elements (display, type)", rule.pos("target"))
        build = c.block(rules, "Reference", node.pos("rules")).build
    c._earlier.update(names)
    step = _steps.first_made(names, build, put, stand_in=target.setter(refs=False))
    return (lambda scope, ctx: [r] if (r := _steps.reference_to_first(names, build, scope, ctx)) else []), step


def _transform(c: Compiler, node: YMap, leaf: fhir_model.Element, target_text: str) -> tuple[Any, Callable[[Any], Convert | None] | None]:
    """Return f(scope, ctx, item) applying use/fn/table to one source item.

    Also returns, for the fused steps, a factory that makes the same conversion
    for a given (final) source path, or None when there is nothing to convert.
    """
    from router.mapping.compiler import _err

    if leaf.type_name is not None and "use" not in node and "rules" not in node and "table" not in node:
        # Type: a text value cannot be a HumanName or a Coding; it needs a datatype mapping.
        raise _err(f"{target_text} is {leaf.type_name}: a value read from the source needs use: (a datatype mapping), a table with {leaf.type_name} values, or nested rules:", node.pos("target"))
    if "use" in node:
        dt = c.datatype(str(node["use"]), node.pos("use"))
        if leaf.type_name != dt.fhir_type:
            raise _err(f"{node['use']} produces {dt.fhir_type}, but {target_text} is {leaf.type_name or 'a primitive'}", node.pos("use"))
        block = dt.block

        def use(scope: Any, ctx: RunContext, item: Any) -> Any:
            obj = block.build(scope.child(value=item.raw, value_loc=item.location), ctx)
            return obj or None

        return use, lambda path: _steps.datatype(block.build, path)
    fn = None
    if "fn" in node:
        fn = LIBRARY.get(str(node["fn"]))
        if fn is None:
            raise _err(f"unknown function {node['fn']!r} (the library has: {', '.join(sorted(LIBRARY))})", node.value_at("fn"))
    table = None
    if "table" in node:
        table = c.tables.get(str(node["table"]))
        if table is None and ("tables", str(node["table"])) not in c.broken:  # a broken one is reported at its own file, once
            raise _err(f"no table {node['table']!r} (looked for tables/{node['table']}.yaml)", node.pos("table"))
        if table is not None:
            check_table(node, table, leaf, target_text)

    check = _code_check(leaf, table)

    def transform(scope: Any, ctx: RunContext, item: Any) -> Any:
        # A position is worked out only for an error (an XML element's walks its siblings):
        # library functions and tables are pure, so a rejection is asked again with it.
        value: Any = item.raw
        if fn is not None:
            try:
                value = call(fn, ctx.fn_ctx, [value], [None])
            except MessageError:
                value = call(fn, ctx.fn_ctx, [value], [item.location])
        if table is not None and value is not None:
            try:
                value = table.lookup(value, None)
            except MessageError:
                value = table.lookup(value, item.location)
            if value is None and table.fallback is not None:  # `unmapped: {fn: …}`: of the value as read, before `fn:`
                try:
                    value = call(table.fallback, ctx.fn_ctx, [item.raw], [None])
                except MessageError:
                    value = call(table.fallback, ctx.fn_ctx, [item.raw], [item.location])
            if isinstance(value, dict) and leaf.type_name == "CodeableConcept":
                value = {"coding": [value]}
        if check is not None and type(value) is str and not check.fits(value):
            value = _fit(check, value, item)
        return value

    if fn is None and table is None and check is None:
        return transform, None
    codeable = leaf.type_name == "CodeableConcept"
    return transform, lambda path: _steps.converter(fn, table, codeable=codeable, path=path, check=check)


def _code_check(leaf: fhir_model.Element, table: Table | None) -> fhir_model.ValueCheck | None:
    """The check a value read from the message gets before it is placed in *leaf* (a `code`), or None.

    Only values from the message: a table's own values are constants, checked at load
    (_checks.check_table), so a table rule is checked only when it keeps the codes it does not list,
    or gives them to a function (`unmapped: {fn: …}`: generated code fits only that function's result).
    """
    if table is not None and (table.unmapped not in ("keep", "fn") or table.codings):
        return None  # a Coding table keeps a code checked by the table itself (Table._kept)
    return fhir_model.value_check(leaf)


def _fit(check: fhir_model.ValueCheck, value: str, item: Any) -> str | None:
    """*value* fitted to its type, or the message refused at the position of *item* (None: no position)."""
    try:
        return check.fix(value)
    except ValueError as exc:
        raise InvalidContent(str(exc), location=item.location if item is not None else None) from None


def _fn_args(c: Compiler, node: YMap, put: Put, leaf: fhir_model.Element) -> tuple[Produce, Step | None]:
    """`fn:` with `args:`: the function of several paths; a result for a `code` is fitted, refused at the first argument."""
    from router.mapping.compiler import _err

    args = node["args"]
    if not isinstance(args, YList):
        raise _err("args must be a list of paths", node.pos("args"))
    fn = LIBRARY[str(node["fn"])]
    if fn.arity >= 0 and len(args) != fn.arity:
        raise _err(f"function {fn.name} takes {fn.arity} arguments, not {len(args)}", node.pos("args"))
    # A function takes whole values as the text the sender meant (escapes undone), not as a datatype's raw value.
    paths = [_as_text(c._path(a, args.pos(i))) for i, a in enumerate(args)]
    # A `[*]` argument gives all its values (e.g. every repetition of OBX-5 to `lines`).
    multi = [getattr(p, "rep", None) == -1 or getattr(p, "seg_rep", None) == -1 or (fn.arity < 0 and getattr(p, "multi_valued", False)) for p in paths]
    if fn.blank_lines:  # a text's empty lines are lines too (HL7 v2: an OBX with no value between two paragraphs)
        paths = [p.with_blanks() if many and hasattr(p, "with_blanks") else p for p, many in zip(paths, multi)]
    check = fhir_model.value_check(leaf)

    def produce(scope: Any, ctx: RunContext) -> list[Any]:
        values: list[str | None] = []
        chosen_items: list[Any] = []
        for p, many in zip(paths, multi):
            items = p.resolve(scope)
            chosen = items if many else items[:1]
            values.extend(it.raw for it in chosen) if chosen else values.append(None)
            chosen_items.extend(chosen) if chosen else chosen_items.append(None)
        try:
            out = call(fn, ctx.fn_ctx, values, [None] * len(values))
        except MessageError:  # positions cost a tree walk each: work them out only for the error
            out = call(fn, ctx.fn_ctx, values, [it.location if it is not None else None for it in chosen_items])
        if check is not None and type(out) is str and not check.fits(out):
            out = _fit(check, out, chosen_items[0])
        return [] if out is None else [out]

    if any(multi):
        if fn.arity >= 0:
            raise _err(f"function {fn.name} takes exactly {fn.arity} values; a [*] argument needs a function like lines or join", node.pos("args"))
        return produce, None
    return produce, _steps.fn_args(fn, paths, put, check)


def _as_text(path: Any) -> Any:
    """*path* reading whole values as final text, where its format tells the two apart (HL7 v2)."""
    decoded = getattr(path, "decoded", None)
    return decoded() if decoded is not None else path


def _check_value_type(node: YMap, leaf: fhir_model.Element, const: Any) -> None:
    from router.mapping.compiler import _err

    if leaf.type_name is None and isinstance(const, (dict, list)):
        raise _err(f"value: gives a structure, but {node['target']} is a primitive", node.pos("value"))
    if leaf.type_name is not None and not isinstance(const, dict):
        raise _err(f"value: gives a {type(const).__name__}, but {node['target']} is {leaf.type_name}", node.pos("value"))
    if leaf.enum and "+" not in leaf.enum and isinstance(const, str) and const not in leaf.enum:
        raise _err(f"{const!r} is not allowed in {node['target']} ({', '.join(leaf.enum)})", node.pos("value"))
    why = fhir_model.invalid_constant(leaf, const)
    if why is not None:  # a constant is checked here once, never per message (see _code_check)
        raise _err(f"value: gives a value {node['target']} cannot hold: {why}", node.pos("value"))
