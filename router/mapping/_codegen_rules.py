"""Write a block's rules out: each step by its plan, the blocks it builds from written out in line, and its loops.

The top of router/mapping/_codegen.py's `_Gen`: `body` and `rule` over the
conditions of _codegen_conditions.py and the reads and puts of _codegen_values.py.
A rule `from:` or `each:` a field, a constant, `fn:` with `args:`, a reference,
a nested `rules:` or datatype conversion (a child `_Gen`), and the loops of
`each:` over segments, segment groups and repetitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.hl7v2.paths import ALL, GroupPath, SourcePath
from router.mapping._codegen_conditions import _ConditionGen
from router.mapping.runtime import Ref


def _known(convert: Any) -> str | None:
    """The type a rule's value has after *convert*: "str" (none), "dict" (a datatype's object) or None (unknown)."""
    if convert is None:
        return "str"
    plan = getattr(convert, "plan", None)
    if plan is not None and plan[0] == "conv" and plan[1] is None and plan[2] is None:
        return "str"  # only fitted to its type (a `code`): still the text read, or None
    return "dict" if plan is not None and plan[0] == "datatype" else None


_MAX_DEPTH = 4
"""Datatype and nested blocks are written out inside their parent up to this depth; deeper ones are called."""


class _Gen(_ConditionGen):
    """One block's generation: its rules written out in order, each by its plan; a step without one is called as it is."""

    def body(self, steps: tuple[Callable[..., bool], ...]) -> tuple[list[str], int]:
        """Lines running *steps* in order (not indented), and how many were written out."""
        out: list[str] = []
        inlined = 0
        for i, step in enumerate(steps):
            lines = self.rule(i, step)
            if lines is None:
                name = self.n(f"S{i}")
                inner = getattr(step, "inner", None)
                when = getattr(step, "when", None)
                if inner is not None and getattr(when, "shape", None) is not None and getattr(when, "text", None) is not None:
                    # A rule not written out, whose condition is: the test here, the rule called only when it holds.
                    self.names[name] = inner
                    out += [*self._guard(i, when), f"    {name}({self.scope}, ctx, {self.obj})"]
                else:
                    self.names[name] = step
                    out.append(f"{name}({self.scope}, ctx, {self.obj})")
            else:
                inlined += 1
                out.extend(lines)
        return out, inlined

    def rule(self, i: int, step: Any) -> list[str] | None:
        plan = getattr(step, "plan", None)
        if plan is None:
            return None
        kind = plan[0]
        when = getattr(step, "when", None)
        ind = ""
        out: list[str] = []
        if when is not None:
            out += self._guard(i, when)
            ind = "    "
        inner: list[str] | None
        if kind == "const":
            _, value, put = plan
            name = self.n(f"K{i}")
            self.names[name] = value
            known: dict[type, str] = {str: "str", dict: "dict"}
            inner = self._put(i, put, name, known=known.get(type(value)))
        elif kind == "nested":
            _, build, put = plan
            inner = self._nested(i, build, put)
        elif kind == "first":
            _, path, convert, put = plan
            inner = self._first(i, path, convert, put)
        elif kind == "each":
            _, path, convert, put = plan
            inner = self._each(i, path, convert, put)
        elif kind == "fn":
            inner = self._fn(i, *plan[1:])
        elif kind == "each_segment":
            inner = self._each_segment(i, *plan[1:])
        elif kind == "each_group":
            inner = self._each_group(i, *plan[1:])
        elif kind == "each_repetition":
            inner = self._each_repetition(i, *plan[1:])
        elif kind == "ref":
            _, name, put = plan
            self.names["Ref"] = Ref
            v = self.n("v")
            # "" binds nothing (`with: {x: null}`, or a resource this message never makes): no Ref to drop later
            inner = [f"_b = ctx.bindings.get({name!r}, {name!r})", "if _b:", *("    " + x for x in [f"{v} = Ref(ctx.env.get(_b, _b))", *self._put(i, put, v, track=True)])]
        else:
            return None
        if inner is None:
            return None
        return out + [ind + line for line in inner]

    def _child_steps(self, build: Any) -> tuple[Any, ...] | None:
        """The steps of the block behind *build*, when it can be written out here."""
        block = getattr(build, "__self__", None)
        steps = getattr(block, "steps", None)
        if self.depth + 1 > _MAX_DEPTH or not steps or getattr(block, "fast", None) is None:
            return None
        return steps  # type: ignore[no-any-return]

    def _builder(self, i: int, build: Any) -> str:
        """The name of a function (scope, ctx, obj) building a nested block: its generated one when it has one."""
        block = getattr(build, "__self__", None)
        fast = getattr(block, "fast", None)
        name = self.n(f"B{i}")
        self.names[name] = fast if fast is not None else build
        return name

    def _nested(self, i: int, build: Any, put: Any) -> list[str]:
        """`rules:` without `each:`: an object built in this same scope, written out here when it can be."""
        steps = self._child_steps(build)
        o = self.n("o")
        if steps is None:
            return [f"{o} = {self._builder(i, build)}({self.scope}, ctx, {{}})", f"if {o}:", *("    " + x for x in self._put(i, put, o))]
        child = _Gen(self, scope=self.scope, same_value=True)
        body, _ = child.body(steps)
        return [*child.child_start(), *body, f"if {child.obj}:", *("    " + x for x in self._put(i, put, child.obj, known="dict"))]

    def _each_segment(self, i: int, path: Any, build: Any, put: Any, held: bool) -> list[str]:
        """`each: NTE` with nested `rules:`: one object per segment, built in a scope where that segment is current.

        *held*: each object's reads are its own until references are resolved (_each_rules._held_segments).
        """
        pname = self.n(f"SEGP{i}")
        self.names[pname] = path
        o, sg = self.n("o"), self.n("sg")
        child = f"{self.scope}.child(segments={{{sg}.name: {sg}}})"
        if not held:
            return [
                f"for {sg} in {pname}._segments({self.scope}):",  # what path.resolve gives, without an Item per segment
                f"    {o} = {self._builder(i, build)}({child}, ctx, {{}})",
                f"    if {o}:",
                *("        " + x for x in self._put(i, put, o, known="dict")),
            ]
        hs, hr = self.n("hs"), self.n("hr")
        return [
            f"for {sg} in {pname}._segments({self.scope}):",
            f"    {hs} = {child}",
            f"    {hr} = {hs}.reads = set()",
            f"    {o} = {self._builder(i, build)}({hs}, ctx, {{}})",
            f"    if {o}:",
            f"        ctx.held_reads.append(({o}, {hr}, {self.scope}.reads))",
            *("        " + x for x in self._put(i, put, o, known="dict")),
        ]

    def _each_repetition(self, i: int, path: Any, field: tuple[str, int], build: Any, put: Any) -> list[str]:
        """`each: PV1-7[*]` whose element's `same: PV1-7` names the resource of its own repetition: as _each_rules._held_repetitions."""
        pname, fname = self.n(f"REPP{i}"), self.n(f"FLD{i}")
        self.names[pname], self.names[fname] = path, field
        s = self.scope
        outer, fr, keyed, before = self.n("ro"), self.n("fr"), self.n("kd"), self.n("bf")
        k, raw, key, hs, hr, o = self.n("k"), self.n("rv"), self.n("ky"), self.n("hs"), self.n("hr"), self.n("o")
        return [
            f"{outer} = {s}.reads",
            f"{s}.reads = {fr} = set()",  # the field counts as read only for an element kept
            f"{keyed} = {pname}.keyed({s})",
            f"{s}.reads = {outer}",
            f"if {keyed}:",
            f"    {before} = ctx.same_at.get({fname})",
            f"    for {k}, ({raw}, {key}) in enumerate({keyed}):",
            f"        {hs} = {s}.at({raw}, {pname}, {k})",
            f"        {hr} = {hs}.reads = set({fr})",
            f"        ctx.same_at[{fname}] = {key}",
            f"        {o} = {self._builder(i, build)}({hs}, ctx, {{}})",
            f"        if {o}:",
            f"            ctx.held_reads.append(({o}, {hr}, {outer}))",
            *("            " + x for x in self._put(i, put, o, known="dict")),
            f"    if {before} is None:",
            f"        del ctx.same_at[{fname}]",
            "    else:",
            f"        ctx.same_at[{fname}] = {before}",
        ]

    def _each_group(self, i: int, path: Any, build: Any, put: Any) -> list[str] | None:
        """`each: OBSERVATION` with nested `rules:`: one object per segment group, built in that group's scope."""
        if type(path) is not GroupPath:
            return None  # an XML path's groups: its step, as it is
        pname = self.n(f"GRPP{i}")
        self.names[pname] = path
        o, gr = self.n("o"), self.n("gr")
        return [
            f"for {gr} in {pname}.groups({self.scope}):",  # what path.resolve gives, without an Item per group
            f"    {o} = {self._builder(i, build)}({self.scope}.child(group={gr}), ctx, {{}})",
            f"    if {o}:",
            *("        " + x for x in self._put(i, put, o, known="dict")),
        ]

    def _fn(self, i: int, fn: Any, paths: list[Any], put: Any, check: Any) -> list[str] | None:
        exprs = [self._value_expr(p) for p in paths]
        if any(e == "SEGMENT" for e in exprs):
            return None
        exprs = [e if e is not None else self._reader(i, p, j) for j, (e, p) in enumerate(zip(exprs, paths))]
        where = self.n(f"WHERE{i}")
        self.names[where] = tuple((p, 0) for p in paths)
        v = self.n("v")
        fitted = self._fit(i, check, v, f"{where}[0][0]", "0", typed=False) if check is not None else []  # refused at the first argument, as _steps.fn_args
        return [*self._call(i, fn, f"[{', '.join(exprs)}]", where, v, len(exprs)), *fitted, f"if {v} is not None:", *("    " + x for x in self._put(i, put, v))]  # type: ignore[arg-type]

    def _convert(self, i: int, convert: Any, var: str, index: str) -> list[str]:
        """Lines converting *var* in place, ending inside `if <var> is not None:`."""
        if convert is None:
            return []
        plan = getattr(convert, "plan", None)
        if plan is not None and plan[0] == "datatype":  # build the datatype's object from the value
            _, build, path = plan
            pname = self.n(f"PATH{i}")
            self.names[pname] = path
            steps = self._child_steps(build)
            if steps is None:
                builder = self._builder(i, build)
                return [f"{var} = {builder}({self.scope}.at({var}, {pname}, {index}), ctx, {{}}) or None", f"if {var} is not None:"]
            tag = self.root._tags + 1  # the child's tag, known before it is made
            sc = f"SC_{tag}_"
            child = _Gen(self, scope=f"({sc} or ({sc} := {self.scope}.at({var}, {pname}, {index})))", value=var)
            body, _ = child.body(steps)
            start = child.child_start()
            if child.lazy_scope and sc not in "\n".join(body):
                start.remove(f"{sc} = None")
            return [*start, *body, f"{var} = {child.obj} or None", f"if {var} is not None:"]
        if plan is not None and plan[0] == "conv":  # fn: then table:, then the type's fit, written out (as _steps.converter)
            _, fn, table, codeable, path, check = plan
            pname = self.n(f"PATH{i}")
            self.names[pname] = path
            lines: list[str] = []
            fallback = table.fallback if table is not None else None
            raw = self.n("_r")
            if fallback is not None:
                lines.append(f"{raw} = {var}")  # `unmapped: {fn: …}` gets the value as read: `fn:` and the lookup replace it
            if fn is not None:
                lines += self._call(i, fn, f"[{var}]", f"(({pname}, {index}),)", var, 1)
            if table is not None:
                tname = self.n(f"TB{i}")
                self.names[tname] = table
                guard = [f"if {var} is not None:"] if fn is not None else []
                ind = "    " if guard else ""
                lines += guard + [
                    f"{ind}try:",
                    f"{ind}    {var} = {tname}.lookup({var}, None)",
                    f"{ind}except MessageError:",
                    f"{ind}    {var} = {tname}.lookup({var}, location({pname}, {self.scope}, {index}))",
                ]
                if fallback is not None:  # only its result needs the fit: the table's own values are checked at load
                    fitted = self._fit(i, check, var, pname, index, typed=False) if check is not None else []
                    call = self._call(i, fallback, f"[{raw}]", f"(({pname}, {index}),)", var, 1, key="FB")
                    lines += [f"{ind}if {var} is None:", *(f"{ind}    {x}" for x in [*call, *fitted])]
                    check = None
                if codeable:
                    lines += [f"{ind}if isinstance({var}, dict):", f"{ind}    {var} = {{'coding': [{var}]}}"]
            if check is not None:
                lines += self._fit(i, check, var, pname, index, typed=fn is None and table is None)
            return [*lines, f"if {var} is not None:"]
        name = self.n(f"C{i}")
        self.names[name] = convert
        return [f"{var} = {name}({self.scope}, ctx, {var}, {index})", f"if {var} is not None:"]

    def _first(self, i: int, path: Any, convert: Any, put: Any) -> list[str] | None:
        if type(path) is not SourcePath or (path.decode_whole and path.segment is None):
            return self._first_read(i, path, convert, put)
        self.message()
        v = self.n("v")
        if path.segment is None and path.comp and convert is None:
            self.value()
            part = self._value_expr(path)
            if part is not None and part.isidentifier():  # a part read where the block starts: placed as it is
                return [f"if {part} is not None:", *("    " + x for x in self._put(i, put, part, known="str"))]
        tail = [*self._convert(i, convert, v, "0")]
        placed = self._put(i, put, v, known=_known(convert))
        if tail:
            tail += ["    " + x for x in placed]
        else:
            tail = placed
        if path.segment is None:  # relative to a datatype's value
            self.value()
            V = self.vnames[0]
            if not path.comp:
                lines = [f"{v} = {V} if {V} and {V} != NULL else None"]  # a whole value stays escaped
            else:
                lines = [f"{v} = {self._value_expr(path)}"]
            return [*lines, f"if {v} is not None:", *("    " + x for x in tail)]
        if path.field_no is None or path.rep == ALL:
            return self._first_read(i, path, convert, put)
        seg = self._segment_var(path)
        if seg is None:
            return self._first_read(i, path, convert, put)
        f, r = path.field_no, (0 if path.rep is None else path.rep - 1)
        raw = self.n("raw")
        lines = self._open_field(seg, f, raw)
        if r == 0:
            lines.append(f"    {raw} = {raw}.split(REP, 1)[0]")
        else:
            lines += [f"    _r = {raw}.split(REP)", f"    {raw} = _r[{r}] if {r} < len(_r) else ''"]
        lines.append(f"    if {raw}:")
        lines += ["        " + x for x in self._leaf(raw, path.comp, path.sub, v, decode=path.decode_whole)]
        lines += [f"        if {v} is not None:", *("            " + x for x in tail)]
        return lines

    def _first_read(self, i: int, path: Any, convert: Any, put: Any) -> list[str]:
        """`from:` over a path this module does not write out (XPath, group paths): its reader, called once."""
        v = self.n("v")
        tail = [*self._convert(i, convert, v, "0")]
        placed = self._put(i, put, v)
        body = (tail + ["    " + x for x in placed]) if tail else placed
        return [f"{v} = {self._reader(i, path)}", f"if {v} is not None:", *("    " + x for x in body)]

    def _each_read(self, i: int, path: Any, convert: Any, put: Any) -> list[str]:
        """`each:` over a path this module does not write out: its values, as _steps.each reads them."""
        name = self.n(f"VALS{i}")
        self.names[name] = getattr(path, "values", None) or (lambda scope: [item.raw for item in path.resolve(scope)])
        v, k = self.n("v"), self.n("k")
        tail = [*self._convert(i, convert, v, k)]
        placed = self._put(i, put, v)
        body = (tail + ["    " + x for x in placed]) if tail else placed
        return [f"for {k}, {v} in enumerate({name}({self.scope})):", *("    " + x for x in body)]

    def _each(self, i: int, path: Any, convert: Any, put: Any) -> list[str] | None:
        if type(path) is not SourcePath or path.segment is None or path.field_no is None or path.rep != ALL:
            return self._each_read(i, path, convert, put)
        seg = self._segment_var(path)
        if seg is None:
            return self._each_read(i, path, convert, put)
        self.message()
        f = path.field_no
        self.names[self.n(f"PATH{i}")] = path
        v, k, rv, raw = self.n("v"), self.n("k"), self.n("rv"), self.n("raw")
        tail = [*self._convert(i, convert, v, k)]
        placed = [*self._put(i, put, v, known=_known(convert))]
        body = (tail + ["    " + x for x in placed]) if tail else placed
        lines = [
            *self._open_field(seg, f, raw),
            f"    {k} = 0",
            f"    for {rv} in {raw}.split(REP):",
            f"        if not {rv}:",
            "            continue",
        ]
        lines += ["        " + x for x in self._leaf(rv, path.comp, path.sub, v, decode=path.decode_whole)]
        lines += [f"        if {v} is None:", "            continue"]
        lines += ["        " + x for x in body]
        lines.append(f"        {k} += 1")
        return lines
