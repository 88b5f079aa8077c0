"""Generate one plain Python function per Block from its compiled steps: the fast path for HL7 v2.

Why: a Block's build calls each rule's step, and each step calls a guard, a
reader, a path, the tokenizer's leaf and a put: five to eight Python calls per
rule, some 150 rules per ADT message. The generated function does the same
work with the reads written out in line: the segments a block reads are found
once at its top, a datatype's value is split once, a field is read with index
arithmetic. Conditions, conversions (fn, table, datatype) and complex puts are
still the compiled closures, called by name.

What it generates from: the steps in _steps.py carry a `plan` attribute (what
they are: first, each, constant, nested) and guarded steps a `when`. A step
without a plan, or a path shape this module does not write out (group paths,
XPath, `[*]` segment repeats, MSH-1/2), is called as it is. So the generated
function is the closures' own semantics, unrolled; a test runs every fixture
and the corpus both ways and compares the Bundles.

Generated source is built only from compile-time constants (segment names,
numbers, repr() of strings) and names bound in the function's globals: never
from message content.
"""

from __future__ import annotations

from typing import Any, Callable

from adapters.hl7v2._tokenizer import EXPLICIT_NULL, unescape
from adapters.hl7v2.groups import nearest
from adapters.hl7v2.paths import ALL, SourcePath
from router.mapping._steps import call_at
from router.mapping.runtime import Ref, Target

ENABLED = True
"""Tests switch this off (before mappings load) to compare against the closures alone."""

Build = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]


def _seg(scope: Any, name: str, k: int, current: bool) -> Any:
    """The segment a path `NAME-…` (current=True) or `NAME[k+1]-…` reads in *scope*, or None."""
    if current:
        seg = scope.segments.get(name)
        if seg is not None:
            return seg
    group = scope.group
    segs = nearest(group, name) if group is not None else None
    if segs is None:
        segs = scope.message.all(name)
    return segs[k] if k < len(segs) else None


_UNREAD = object()
"""What a generated function's value locals hold before their field is read."""


def _field_value(seg: Any, f: int, r: int, comp: int, sub: int, msg: Any, reads: set[tuple[int, int]]) -> str | None:
    """The one value a path `SEG-f[r+1].comp.sub` gives in a condition (as SourcePath.values would), or None."""
    if seg is None:
        return None
    reads.add((seg.index, f))
    reps = msg.repetitions(seg, f)
    if r >= len(reps) or not (raw := reps[r]):
        return None
    if comp:
        return msg.leaf(raw, comp, sub)  # type: ignore[no-any-return]
    return raw if raw != EXPLICIT_NULL else None


def generate(steps: tuple[Callable[..., bool], ...]) -> Build | None:
    """Return a function doing what running *steps* in order does, or None when no step can be written out."""
    if not ENABLED or not steps:
        return None
    g = _Gen()
    body: list[str] = []
    inlined = 0
    for i, step in enumerate(steps):
        lines = g.rule(i, step)
        if lines is None:
            body.append(f"    S{i}(scope, ctx, obj)")
            g.names[f"S{i}"] = step
        else:
            inlined += 1
            body.extend(lines)
    if not inlined:
        return None
    head = ["def build(scope, ctx, obj):", *g.prologue()]
    source = "\n".join([*head, *body, "    return obj"])
    namespace: dict[str, Any] = {"_seg": _seg, "_field_value": _field_value, "_U": _UNREAD, "unescape": unescape, "NULL": EXPLICIT_NULL, **g.names}
    exec(compile(source, "<helsebro mapping block>", "exec"), namespace)  # noqa: S102 - source from compile-time constants only (see module doc)
    build: Build = namespace["build"]
    build.source = source  # type: ignore[attr-defined]  # for reading and debugging
    return build


def generate_values(paths: tuple[Any, ...]) -> Callable[[Any], list[str]] | None:
    """Return a function giving the first value of each of *paths* that has one (an identity's fallback), or None."""
    if not ENABLED or not paths:
        return None
    g = _Gen()
    exprs = [g._value_expr(p) for p in paths]
    if any(e is None or e == "SEGMENT" for e in exprs):
        return None
    lines = ["def values(scope):", *g.prologue(), "    out = []"]
    for e in exprs:
        lines += [f"    _t = {e}", "    if _t is not None:", "        out.append(_t)"]
    lines.append("    return out")
    namespace: dict[str, Any] = {"_seg": _seg, "_field_value": _field_value, "_U": _UNREAD, "NULL": EXPLICIT_NULL, **g.names}
    exec(compile("\n".join(lines), "<helsebro identity values>", "exec"), namespace)  # noqa: S102 - compile-time constants only
    return namespace["values"]  # type: ignore[no-any-return]


def _open_field(seg: str, f: int) -> list[str]:
    """Lines reading field *f* of the segment in local *seg* into `raw` (marked read), ending inside `if raw:`."""
    return [
        f"if {seg} is not None:",
        f"    reads.add(({seg}.index, {f}))",
        f"    _f = {seg}.fields",
        f"    raw = _f[{f}] if {f} < len(_f) else ''",
        "    if raw:",
    ]


class _Gen:
    """The state of one generation: names bound in globals, segments and value reads hoisted."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.segments: dict[tuple[str, int, bool], str] = {}
        self.uses_message = False
        self.uses_value = False
        self.conditions: dict[str, str] = {}  # condition text -> local holding its answer in this call
        self.values: dict[tuple[Any, ...], str] = {}  # (segment var, field, rep, comp, sub) -> local holding the value

    def prologue(self) -> list[str]:
        """The function's first lines: what the body reads, found once."""
        head: list[str] = []
        if self.uses_message:
            head += ["    msg = scope.message", "    reads = scope.reads", "    delims = msg.delims", "    REP = delims.repetition", "    COMP = delims.component", "    SUB = delims.subcomponent", "    ESC = delims.escape"]
        if self.uses_value:
            head += ["    V = scope.value", "    VP = V.split(COMP) if V else ()", "    NVP = len(VP)"]
        for (name, k, current), var in self.segments.items():
            head.append(f"    {var} = _seg(scope, {name!r}, {k}, {current})")
        for var in self.conditions.values():
            head.append(f"    {var} = None")
        for var in self.values.values():
            head.append(f"    {var} = _U")
        return head

    def rule(self, i: int, step: Any) -> list[str] | None:
        plan = getattr(step, "plan", None)
        if plan is None:
            return None
        kind = plan[0]
        when = getattr(step, "when", None)
        ind = "    "
        out: list[str] = []
        if when is not None:
            out += self._guard(i, when)
            ind = "        "
        if kind == "const":
            _, value, put = plan
            self.names[f"K{i}"] = value
            inner = self._put(i, put, f"K{i}")
        elif kind == "nested":
            _, build, put = plan
            inner = [f"o = {self._builder(i, build)}(scope, ctx, {{}})", "if o:", *("    " + x for x in self._put(i, put, "o"))]
        elif kind == "first":
            _, path, convert, put = plan
            inner = self._first(i, path, convert, put)
        elif kind == "each":
            _, path, convert, put = plan
            inner = self._each(i, path, convert, put)
        elif kind == "fn":
            inner = self._fn(i, *plan[1:])
        elif kind == "ref":
            _, name, put = plan
            self.names["Ref"] = Ref
            inner = [f"_b = ctx.bindings.get({name!r}, {name!r})", "v = Ref(ctx.env.get(_b, _b))", *self._put(i, put, "v", track=True)]
        else:
            return None
        if inner is None:
            return None
        return out + [ind + line for line in inner]

    def _builder(self, i: int, build: Any) -> str:
        """The name of a function (scope, ctx, obj) building a nested block: its generated one when it has one."""
        block = getattr(build, "__self__", None)
        fast = getattr(block, "fast", None)
        self.names[f"B{i}"] = fast if fast is not None else build
        return f"B{i}"

    def _guard(self, i: int, when: Any) -> list[str]:
        """Lines opening `if <condition>:`, the answer kept for the rest of this call (as the memo would)."""
        text = getattr(when, "text", None)
        expr = self._cond(when) if getattr(when, "shape", None) is not None else None
        if expr is None or text is None:
            self.names[f"W{i}"] = when
            return [f"    if W{i}(scope):"]
        var = self.conditions.get(text)
        if var is None:
            var = self.conditions[text] = f"c{len(self.conditions)}"
        return [f"    if {var} is None:", f"        {var} = bool({expr})", f"    if {var}:"]

    def _cond(self, pred: Any) -> str:
        shape = pred.shape
        kind = shape[0]
        if kind in ("and", "or"):
            return "(" + f" {kind} ".join(self._cond(p) for p in shape[1]) + ")"
        if kind == "not":
            return f"(not {self._cond(shape[1])})"
        _, op, path, arg = shape
        value = self._value_expr(path)
        if value is None:
            name = f"T{len(self.names)}"
            self.names[name] = pred
            return f"{name}(scope)"
        if value == "SEGMENT":  # `PV1 valued`: is there such a segment here
            seg = self._segment_var(path)
            if op == "valued":
                return f"({seg} is not None)"
            if op == "not valued":
                return f"({seg} is None)"
            name = f"T{len(self.names)}"
            self.names[name] = pred
            return f"{name}(scope)"
        if op == "valued":
            return f"({value} is not None)"
        if op == "not valued":
            return f"({value} is None)"
        if op in ("=", "!="):
            return f"({value} {'==' if op == '=' else '!='} {arg!r})"
        name = f"X{len(self.names)}"
        self.names[name] = arg
        if op == "in":
            return f"({value} in {name})"
        return f"((_t := {value}) is not None and {name}.search(_t) is not None)"  # matches

    def _value_expr(self, path: Any) -> str | None:
        """An expression for the one value *path* gives (str or None), or SEGMENT, or None when it cannot be written out."""
        if type(path) is not SourcePath or path.decode_whole:
            return None  # whole values read as text: the closures undo their escapes
        self.uses_message = True
        if path.segment is None:
            self.uses_value = True
            if not path.comp:
                return "(V if V and V != NULL else None)"
            return f"(msg.leaf(V, {path.comp}, {path.sub}) if V else None)"
        if path.rep == ALL:
            return None
        seg = self._segment_var(path)
        if seg is None:
            return None
        if path.field_no is None:
            return "SEGMENT"
        r = 0 if path.rep is None else path.rep - 1
        key = (seg, path.field_no, r, path.comp, path.sub)
        var = self.values.get(key)
        if var is None:
            var = self.values[key] = f"fv{len(self.values)}"
        # Read once per call, when first asked: several conditions of a block test one field (OBX-2).
        return f"({var} if {var} is not _U else ({var} := _field_value({seg}, {path.field_no}, {r}, {path.comp}, {path.sub}, msg, reads)))"

    def _fn(self, i: int, fn: Any, paths: list[Any], put: Any) -> list[str] | None:
        exprs = [self._value_expr(p) for p in paths]
        if any(e is None or e == "SEGMENT" for e in exprs):
            return None
        self.names[f"FN{i}"] = fn
        self.names[f"WHERE{i}"] = tuple((p, 0) for p in paths)
        self.names["call_at"] = call_at
        return [f"v = call_at(FN{i}, ctx.fn_ctx, [{', '.join(exprs)}], scope, WHERE{i})", "if v is not None:", *("    " + x for x in self._put(i, put, "v"))]  # type: ignore[arg-type]

    def _put(self, i: int, put: Any, var: str, *, track: bool = False) -> list[str]:
        """Lines placing *var* as Target.put would; *track* records where a Ref went (ref rules)."""
        shape = getattr(put, "plan", None)
        target = getattr(put, "__self__", None)
        if track and isinstance(target, Target) and getattr(put, "__func__", None) is Target.put:
            shape = ("target", target.names, target.lists)
        elif track:
            shape = None
        if shape is not None and shape[0] == "set":
            return [f"obj[{shape[1]!r}] = {var}"]
        if shape is None or shape[0] != "target":
            self.names[f"P{i}"] = put
            return [f"P{i}(obj, {var}, ctx)"]
        names, lists = shape[1], shape[2]
        lines = ["_n = obj"]
        for name, is_list in zip(names[:-1], lists[:-1]):
            if is_list:
                lines += [f"_l = _n.get({name!r})", "if _l is None:", f"    _l = _n[{name!r}] = [{{}}]", "elif not _l:", "    _l.append({})", "_n = _l[-1]"]
            else:
                lines += [f"_m = _n.get({name!r})", "if _m is None:", f"    _m = _n[{name!r}] = {{}}", "_n = _m"]
        last = names[-1]
        if lists[-1]:
            lines += [f"_l = _n.get({last!r})", "if _l is None:", f"    _l = _n[{last!r}] = []"]
            if track:  # a Ref value is never a list
                lines += [f"ctx.ref_sites.append((_l, len(_l), {var}, ctx.current))", f"_l.append({var})"]
            else:
                lines += [f"if type({var}) is list:", f"    _l.extend({var})", "else:", f"    _l.append({var})"]
        else:
            if track:
                lines.append(f"ctx.ref_sites.append((_n, {last!r}, {var}, ctx.current))")
            lines.append(f"_n[{last!r}] = {var}")
        return lines

    def _convert(self, i: int, convert: Any, var: str, index: str) -> list[str]:
        if convert is None:
            return []
        plan = getattr(convert, "plan", None)
        if plan is not None and plan[0] == "datatype":  # build the datatype's object in a scope at the value
            _, build, path = plan
            self.names[f"PATH{i}"] = path
            builder = self._builder(i, build)
            return [f"{var} = {builder}(scope.at({var}, PATH{i}, {index}), ctx, {{}}) or None", f"if {var} is not None:"]
        self.names[f"C{i}"] = convert
        return [f"{var} = C{i}(scope, ctx, {var}, {index})", f"if {var} is not None:"]

    def _leaf(self, src: str, comp: int, sub: int) -> list[str]:
        """Lines turning repetition text *src* into `v` (str or None), as Hl7Message.leaf does."""
        lines: list[str] = []
        if comp:
            lines += [f"_p = {src}.split(COMP)", f"v = _p[{comp - 1}] if {comp} <= len(_p) else ''"]
            if sub:
                lines += ["_s = v.split(SUB)", f"v = _s[{sub - 1}] if {sub} <= len(_s) else ''"]
        else:  # a whole repetition stays escaped: its components are split later
            return [f"v = {src} if {src} != NULL else None"]
        lines += ["if not v or v == NULL:", "    v = None", "elif ESC and ESC in v:", "    v = unescape(v, delims)"]
        return lines

    def _segment_var(self, path: SourcePath) -> str | None:
        if path.seg_rep == ALL or (path.seg_rep is not None and path.seg_rep < 1):
            return None
        if path.segment == "MSH" and (path.field_no or 0) <= 2:
            return None  # MSH-1 and MSH-2 are the delimiters themselves: never split
        key = (path.segment, 0 if path.seg_rep is None else path.seg_rep - 1, path.seg_rep is None)
        var = self.segments.get(key)
        if var is None:
            var = self.segments[key] = f"G{len(self.segments)}"
        return var

    def _first(self, i: int, path: Any, convert: Any, put: Any) -> list[str] | None:
        if type(path) is not SourcePath or path.decode_whole:
            return None
        self.uses_message = True
        tail = [*self._convert(i, convert, "v", "0")]
        placed = self._put(i, put, "v")
        if tail:
            tail += ["    " + x for x in placed]
        else:
            tail = placed
        if path.segment is None:  # relative to a datatype's value
            self.uses_value = True
            comp, sub = path.comp, path.sub
            if not comp:
                lines = ["v = V if V and V != NULL else None"]  # a whole value stays escaped
            else:
                lines = [f"v = VP[{comp - 1}] if {comp} <= NVP else ''"]
                if sub:
                    lines += ["_s = v.split(SUB)", f"v = _s[{sub - 1}] if {sub} <= len(_s) else ''"]
                lines += ["if not v or v == NULL:", "    v = None", "elif ESC and ESC in v:", "    v = unescape(v, delims)"]
            return [*lines, "if v is not None:", *("    " + x for x in tail)]
        if path.field_no is None or path.rep == ALL:
            return None
        seg = self._segment_var(path)
        if seg is None:
            return None
        f, r = path.field_no, (0 if path.rep is None else path.rep - 1)
        lines = _open_field(seg, f)
        if r == 0:
            lines.append("        raw = raw.split(REP, 1)[0]")
        else:
            lines += ["        _r = raw.split(REP)", f"        raw = _r[{r}] if {r} < len(_r) else ''"]
        lines.append("        if raw:")
        lines += ["            " + x for x in self._leaf("raw", path.comp, path.sub)]
        lines += ["            if v is not None:", *("                " + x for x in tail)]
        return lines

    def _each(self, i: int, path: Any, convert: Any, put: Any) -> list[str] | None:
        if type(path) is not SourcePath or path.segment is None or path.field_no is None or path.rep != ALL or path.decode_whole:
            return None
        seg = self._segment_var(path)
        if seg is None:
            return None
        self.uses_message = True
        f = path.field_no
        self.names[f"PATH{i}"] = path
        tail = [*self._convert(i, convert, "v", "k")]
        placed = [*self._put(i, put, "v")]
        body = (tail + ["    " + x for x in placed]) if tail else placed
        lines = [
            *_open_field(seg, f),
            "        k = 0",
            "        for rv in raw.split(REP):",
            "            if not rv:",
            "                continue",
        ]
        lines += ["            " + x for x in self._leaf("rv", path.comp, path.sub)]
        lines += ["            if v is None:", "                continue"]
        lines += ["            " + x for x in body]
        lines.append("            k += 1")
        return lines
