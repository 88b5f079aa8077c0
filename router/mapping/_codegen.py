"""Generate one plain Python function per Block from its compiled steps: the fast path.

Why: a Block's build calls each rule's step, and each step calls a guard, a
reader, a path, the tokenizer's leaf and a put: five to eight Python calls per
rule, some 150 rules per ADT message. The generated function does the same
work with the reads written out in line: the segments a block reads are found
once at its top, a datatype's value is split once, a field is read with index
arithmetic, a condition is a Python expression. Conditions it cannot write
out, complex puts and steps without a plan stay the compiled closures,
called by name.

Blocks a rule builds from (a datatype's `use:`, a nested `rules:`) are
written out inside their parent rather than called, up to a depth of four:
their locals carry a tag of their own, and the scope they would have been
called with is made only when an error needs its position. Conversions
(`fn:`, `table:`) are written out as the library call and the table lookup,
retried with positions only when they reject a value, as `call_at` does.

What it generates from: the steps in _steps.py carry a `plan` attribute (what
they are: first, each, constant, nested, conv, untidy) and guarded steps a `when`. A step
without a plan is called as it is; a path this module does not write out
(XPath for the KITH messages, group paths, `[*]` segment repeats, MSH-1/2) is
read through its own `reader()` or `values()`, as the closures read it. So the generated
function is the closures' own semantics, unrolled; a test runs every fixture
and the corpus both ways and compares the Bundles.

Generated source is built only from compile-time constants (segment names,
numbers, repr() of strings) and names bound in the function's globals: never
from message content.
"""

from __future__ import annotations

import re
from functools import lru_cache
from types import CodeType
from typing import Any, Callable

from adapters.hl7v2._tokenizer import EXPLICIT_NULL, unescape
from adapters.hl7v2.groups import near_map
from adapters.hl7v2.paths import ALL, GroupPath, SourcePath
from router.errors import MessageError
from router.mapping._steps import call_at, fit, location, reader
from router.mapping.conditions import paths_of, quiet
from router.mapping.library import _Values
from router.mapping.runtime import IdentityOf, Ref, Target, identity_of

ENABLED = True
"""Tests switch this off (before mappings load) to compare against the closures alone."""

Build = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]

_UNREAD = object()
"""What a generated function's value locals hold before their field is read."""


def generate(steps: tuple[Callable[..., bool], ...]) -> Build | None:
    """Return a function doing what running *steps* in order does, or None when no step can be written out."""
    if not ENABLED or not steps:
        return None
    g = _Gen()
    body, inlined = g.body(steps)
    if not inlined:
        return None
    head = ["def build(scope, ctx, obj):", *("    " + x for x in g.prologue())]
    source = "\n".join(_memos(_guards([*head, *("    " + x for x in body), "    return obj"], g.guards), g.memos))
    build: Build = _compile(source, "build", g.names, "<helsebro mapping block>")
    build.source = source  # type: ignore[attr-defined]  # for reading and debugging
    build.value_only = _value_only(g)  # type: ignore[attr-defined]  # the engine may remember what it built (engine._one)
    return build


_PURE_GLOBALS = re.compile(r"(?:FN|TB|K|PATH|WHERE|X|CKT|CK)\d")
"""Globals a block may call and stay a function of its value: library functions, tables, constants, positions, patterns, type checks."""


def _value_only(g: _Gen) -> bool:
    """Tell whether the block's output depends on nothing but its value, the delimiters and the function context.

    Such a block (an XCN → Practitioner) reads no segment (so marks no field
    read) and needs no global beyond pure ones: a reference needs `Ref`, a rule
    not written out its step, a path not written out its reader. Built twice
    from the same value, it gives the same resource, so the engine may build it
    once per value (engine._one). Its errors are raised, never remembered.
    """
    return not g.segments and all(_PURE_GLOBALS.match(name) is not None for name in g.names)


def generate_values(paths: tuple[Any, ...]) -> Callable[[Any, Any], list[str]] | None:
    """Return a function giving the first value of each of *paths* (an identity's fallback), or None.

    A part that names another resource (`IdentityOf`, `ref(patient)`) is that resource's id. A path
    without a value is an empty part, kept in its place: dropped, a placer number 100 and a filler
    number 100 would be one part list, and two orders one identity.
    """
    if not ENABLED or not paths:
        return None
    g = _Gen()
    exprs = [f"identity_of(ctx, {p.param!r})" if type(p) is IdentityOf else g._value_expr(p) for p in paths]
    if any(e is None or e == "SEGMENT" for e in exprs):
        return None
    lines = ["def values(scope, ctx):", *("    " + x for x in g.prologue()), "    out = []"]
    for e in exprs:
        lines.append(f"    out.append(_t if (_t := {e}) is not None else '')")
    lines.append("    return out")
    # Each path is read once here: its field is read in place, with no memo local (see _memos).
    return _compile("\n".join(_memos(lines, g.memos)), "values", g.names, "<helsebro identity values>")  # type: ignore[no-any-return]


_OPAQUE = re.compile(r"T\d+")
"""The globals `_Gen._opaque` names: a condition it calls as a closure."""


def generate_condition(pred: Any) -> Callable[[Any], bool] | None:
    """Return a function answering *pred* (a compiled `when:`) as one expression, or None when it cannot be written out.

    A resource's `when:` is asked once per scope, so the memo that condition
    closures keep per scope (conditions._memoised) never answers it twice:
    written out, it is one call instead of a memo lookup, a lambda per
    operator and a path resolved into items.
    """
    if not ENABLED or getattr(pred, "shape", None) is None:
        return None
    g = _Gen()
    expr = g._cond(pred)
    if any(_OPAQUE.fullmatch(name) for name in g.names):
        return None  # a part it could not write out: the closure answers it whole
    marks = g.marks(pred)  # its fields count as read only when it holds (conditions.held)
    lines = ["def when(scope):", *("    " + x for x in g.prologue()), f"    if {expr}:", *("        " + x for x in marks), "        return True", "    return False"]
    return _compile("\n".join(_memos(lines, g.memos)), "when", g.names, "<helsebro condition>")  # type: ignore[no-any-return]


_GUARD = "\x00"
"""Marks a guard line until the block is complete: `<indent>\x00<var>\x00<condition>`."""


def _guards(lines: list[str], uses: dict[str, int]) -> list[str]:
    """Write out each guard once the block is complete and it is known how often its condition is asked.

    A condition asked once in its block is tested in place (`if <test>:`);
    one asked again keeps its answer in a local, as the memo would, so it is
    worked out once. Asking twice gives the same answer either way: a test
    only reads the message (its one effect, marking a field read, repeats harmlessly).
    """
    out: list[str] = []
    for line in lines:
        at = line.find(_GUARD)
        if at == -1:
            out.append(line)
            continue
        indent = line[:at]
        var, expr = line[at + 1 :].split(_GUARD, 1)
        if uses[var] == 1:
            out.append(f"{indent}if {expr}:")
        else:
            out += [f"{indent}if {var} is None:", f"{indent}    {var} = bool({expr})", f"{indent}if {var}:"]
    return out


def _memos(lines: list[str], memos: list[str]) -> list[str]:
    """Read a field in place where only one expression of its block reads it: no local, no reset.

    A field several conditions test (OBX-2) keeps its local, read when first asked.
    """
    text = "\n".join(lines)
    for var in memos:
        head = f"({var} if {var} is not _U else ({var} := "
        at = text.find(head)
        if at == -1 or text.find(head, at + 1) != -1:
            continue
        start = at + len(head)
        depth, end = 1, start
        while depth:  # the read holds no string with a parenthesis: match them
            ch = text[end]
            depth += (ch == "(") - (ch == ")")
            end += 1
        text = f"{text[:at]}({text[start:end - 1]}){text[end + 1:]}"
        lines = [line for line in text.split("\n") if line.strip() != f"{var} = _U"]
        text = "\n".join(lines)
    return text.split("\n")


def _leaf_expr(part: str, sub: int) -> str:
    """An expression for Hl7Message.leaf's answer, given an expression *part* for the component's text."""
    if sub:
        part = f"(_u[{sub - 1}] if {sub} <= len(_u := {part}.split(SUB)) else '')"
    return f"(None if not (_t := {part}) or _t == NULL else (unescape(_t, delims) if ESC and ESC in _t else _t))"


def _known(convert: Any) -> str | None:
    """The type a rule's value has after *convert*: "str" (none), "dict" (a datatype's object) or None (unknown)."""
    if convert is None:
        return "str"
    plan = getattr(convert, "plan", None)
    if plan is not None and plan[0] == "conv" and plan[1] is None and plan[2] is None:
        return "str"  # only fitted to its type (a `code`): still the text read, or None
    return "dict" if plan is not None and plan[0] == "datatype" else None


def _compile(source: str, name: str, names: dict[str, Any], filename: str) -> Any:
    namespace: dict[str, Any] = {
        "near_map": near_map, "_U": _UNREAD, "unescape": unescape, "NULL": EXPLICIT_NULL,
        "MessageError": MessageError, "_Values": _Values, "call_at": call_at, "fit": fit, "quiet": quiet, "location": location, "identity_of": identity_of, **names,
    }
    exec(_code(source, filename), namespace)  # noqa: S102 - source from compile-time constants only (see module doc)
    return namespace[name]


@lru_cache(maxsize=2048)
def _code(source: str, filename: str) -> CodeType:
    """Compile *source* once: two thirds of a mapping set's blocks are the same text (a datatype written out in many templates).

    Why: compiling the generated source was the largest cost of loading the
    mappings, and every CLI start and worker loads them. The code object holds
    no names (they are bound by each `exec`), so blocks of the same text share it.
    """
    return compile(source, filename, "exec")


_MAX_DEPTH = 4
"""Datatype and nested blocks are written out inside their parent up to this depth; deeper ones are called."""


class _Gen:
    """One block's generation: its locals carry a tag, so blocks written out inside it keep theirs apart.

    The root (tag "") is the generated function itself. A block written out in
    line (a datatype's `use:`, a nested `rules:`) is a child `_Gen` with a tag
    of its own: its locals, cached values and conditions are reset where its
    code starts, as a call would. Its scope, needed only to name a position in
    an error or to call a step that is not written out, is made on first use
    (`scope.at(value, path, index)`, as the closures make it up front).
    """

    def __init__(self, parent: _Gen | None = None, *, scope: str = "scope", value: str | None = None, same_value: bool = False) -> None:
        self.root: _Gen = parent.root if parent is not None else self
        self.depth = 0 if parent is None else parent.depth + 1
        self.tag = "" if parent is None else self.root._next_tag()
        self._tags = 0
        self.names: dict[str, Any] = {} if parent is None else self.root.names
        self.segments: dict[tuple[str, int, bool], str] = {} if parent is None else self.root.segments
        self.uses_message = False  # root only
        self.uses_value = False
        self.conditions: dict[str, str] = {}  # condition text -> local holding its answer in this block
        self.marked: set[str] = set()  # condition locals whose fields are marked read where they first hold
        self.negated = 0  # how many `not`s the condition being written is under
        self.self_marking: set[int] = set() if parent is None else self.root.self_marking  # ids of conditions called as they are: their yes marks their fields (conditions._memoised)
        self.guards: dict[str, int] = {} if parent is None else self.root.guards  # condition local -> how many rules it guards
        self.memos: list[str] = [] if parent is None else self.root.memos  # locals holding a field read when first asked (_memos)
        self.values: dict[tuple[Any, ...], str] = {}  # (segment var, field, rep, comp, sub) -> local holding the value, read when first asked
        self.relative: dict[tuple[Any, ...], str] = {}  # (V, None, 0, comp, sub) -> local holding a part of the value, read where the block starts
        self.scope = scope  # an expression for this block's scope
        self.value_src = value  # the expression holding a datatype child's value (None: scope.value, the root's)
        self.obj = "obj" if parent is None else self.n("o")
        self.lazy_scope = parent is not None and scope != parent.scope  # SC<tag> is made on first use
        self.vnames = parent.vnames if same_value and parent is not None else (self.n("V"), self.n("VP"), self.n("NVP"))
        self.same_value = same_value
        self.parent = parent

    def _next_tag(self) -> str:
        self._tags += 1
        return f"_{self._tags}_"

    def n(self, base: str) -> str:
        """This block's name for local or global *base*."""
        return f"{base}{self.tag}"

    def message(self) -> None:
        self.root.uses_message = True

    def value(self) -> None:
        self.message()
        self.uses_value = True
        if self.same_value and self.parent is not None:
            self.parent.value()

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

    def prologue(self) -> list[str]:
        """The root function's first lines: what the body reads, found once."""
        head: list[str] = []
        if self.uses_message:
            head += ["msg = scope.message", "reads = scope.reads", "delims = msg.delims", "REP = delims.repetition", "COMP = delims.component", "SUB = delims.subcomponent", "ESC = delims.escape"]
        if self.uses_value:
            head += ["V = scope.value", "VP = V.split(COMP) if V else ()", "NVP = len(VP)"]
        if self.segments:
            # The current segment, else the group's (near_map), else the message's: what a path's _segments finds.
            head += ["_SG = scope.segments", "_GR = scope.group", "_NR = (_GR._near or near_map(_GR)) if _GR is not None else None", "_BY = scope.message.by_name"]
        for (name, k, current), var in self.segments.items():
            look = [
                f"_s = _NR.get({name!r}) if _NR is not None else None",
                "if _s is None:",
                f"    _s = _BY.get({name!r}, ())",
                f"{var} = _s[{k}] if {k} < len(_s) else None",
            ]
            if current:
                head += [f"{var} = _SG.get({name!r})", f"if {var} is None:", *("    " + x for x in look)]
            else:
                head += look
            head += [f"F{var} = {var}.fields if {var} is not None else ()", f"NF{var} = len(F{var})"]
        return head + self._resets()

    def _resets(self) -> list[str]:
        guards = self.root.guards
        out = [f"{var} = None" for var in self.conditions.values() if guards[var] > 1] + [f"{var} = _U" for var in self.values.values()]
        _, vp, nvp = self.vnames
        for (_, _, _, comp, sub), var in self.relative.items():
            out.append(f"{var} = {_leaf_expr(f'({vp}[{comp - 1}] if {comp} <= {nvp} else {chr(39) * 2})', sub)}")
        return out

    def child_start(self) -> list[str]:
        """A child's first lines, where its code starts: its value split, its caches reset, its object."""
        head: list[str] = []
        if self.uses_value and not self.same_value:
            v, vp, nvp = self.vnames
            head += [f"{v} = {self.value_src}", f"{vp} = {v}.split(COMP) if {v} else ()", f"{nvp} = len({vp})"]
        if self.lazy_scope:
            head.append(f"{self.n('SC')} = None")
        return head + self._resets() + [f"{self.obj} = {{}}"]

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
        if kind == "const":
            _, value, put = plan
            name = self.n(f"K{i}")
            self.names[name] = value
            inner = self._put(i, put, name, known={str: "str", dict: "dict"}.get(type(value)))
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

    def _guard(self, i: int, when: Any) -> list[str]:
        """Lines opening `if <condition>:`, the answer kept for the rest of this block (as the memo would)."""
        text = getattr(when, "text", None)
        expr = self._cond(when) if getattr(when, "shape", None) is not None else None
        if expr is None or text is None:
            name = self.n(f"W{i}")
            self.names[name] = when
            return [f"if {name}({self.scope}):"]
        var = self.conditions.get(text)
        if var is None:
            var = self.conditions[text] = self.n(f"c{len(self.conditions)}")
        guards = self.root.guards
        guards[var] = guards.get(var, 0) + 1
        marks = [] if var in self.marked else self.marks(when)  # the first test of it in this block runs before the others
        self.marked.add(var)
        return [f"{_GUARD}{var}{_GUARD}{expr}", *("    " + x for x in marks)]  # written out by _guards once the block is complete

    def marks(self, pred: Any) -> list[str]:
        """Lines marking read what made *pred*, which holds, hold: as conditions.held does.

        All of an `and`, the first part that holds of an `or` (asked again: its reads are this
        block's cached locals), everything under a `not`. A field in a segment is marked in line
        when valued, as a rule's read marks it; any other path (XPath, `[*]`) is resolved by its
        own code, which marks what it reads.
        """
        kind = pred.shape[0]
        if kind == "and":
            return [line for part in pred.shape[1] for line in self.marks(part)]
        if kind == "or":
            lines: list[str] = []
            for k, part in enumerate(pred.shape[1]):
                lines += [f"{'el' if k else ''}if {self._cond(part)}:", *("    " + x for x in self.marks(part) or ["pass"])]
            return lines
        if id(pred) in self.self_marking:
            return []  # asked as it is, it marked what made it hold
        lines = []
        others = []
        for path in paths_of(pred):
            if type(path) is SourcePath and path.segment is None:
                continue  # a datatype's value: its parts are no field of their own
            seg = self._segment_var(path) if type(path) is SourcePath and path.rep != ALL and not path.decode_whole else None
            if seg is None:
                others.append(path)
            elif path.field_no is not None:
                f = path.field_no
                lines.append(f"if {f} < NF{seg} and F{seg}[{f}]: reads.add(({seg}.index, {f}))")
        if others:
            name = self.n(f"MK{len(self.names)}")
            self.names[name] = tuple(others)
            lines.append(f"for _mp in {name}: _mp.resolve({self.scope})")
        return lines

    def _opaque(self, pred: Any) -> str:
        """A part of a condition called as its closure, what it reads not counted (the guard marks it where the condition holds).

        A whole memoised condition with no `or` and no `not` is called as it is, outside a `not`:
        its yes marks the fields that made it hold, kept from when it was first answered on this
        scope, where the guard would resolve its paths again (an XPath each, in KITH mappings).
        """
        name = self.n(f"T{len(self.names)}")
        self.names[name] = pred
        if getattr(pred, "marks_itself", False) and not self.negated:
            self.self_marking.add(id(pred))
            return f"{name}({self.scope})"
        return f"quiet({name}, {self.scope})"

    def _cond(self, pred: Any) -> str:
        shape = pred.shape
        kind = shape[0]
        if kind in ("and", "or"):
            return "(" + f" {kind} ".join(self._cond(p) for p in shape[1]) + ")"
        if kind == "not":
            self.negated += 1
            try:
                return f"(not {self._cond(shape[1])})"
            finally:
                self.negated -= 1
        _, op, path, arg = shape
        value = self._value_expr(path, mark=False)  # the guard marks it where the condition holds
        if value is None:
            return self._cond_values(pred, op, path, arg)
        if value == "SEGMENT":  # `PV1 valued`: is there such a segment here
            seg = self._segment_var(path)
            if op == "valued":
                return f"({seg} is not None)"
            if op == "not valued":
                return f"({seg} is None)"
            return self._opaque(pred)
        return self._test(op, arg, value, many=False)

    def _cond_values(self, pred: Any, op: str, path: Any, arg: Any) -> str:
        """A test on every value of a path not written out (XPath, `[*]`), as conditions.py's test does, its values read once per block."""
        values = getattr(path, "values", None)
        if values is None or type(path) is not SourcePath:
            # XPath conditions stay the memoised predicate: its answer is kept per scope, across
            # every block that asks it (Forsendelsesstatus in each template), which beats reading here.
            return self._opaque(pred)
        key = ("values", id(path))
        var = self.values.get(key)
        if var is None:
            var = self.values[key] = self.n(f"fv{len(self.values)}")
            self.root.memos.append(var)
            self.names[self.n(f"VL{var}")] = values
        vals = f"({var} if {var} is not _U else ({var} := quiet({self.n(f'VL{var}')}, {self.scope})))"
        return self._test(op, arg, vals, many=True)

    def _test(self, op: str, arg: Any, value: str, *, many: bool) -> str:
        """The expression for `<value> <op> <arg>`: *value* gives one value or None, or (*many*) a list of values."""
        if op == "valued":
            return f"bool({value})" if many else f"({value} is not None)"
        if op == "not valued":
            return f"(not {value})" if many else f"({value} is None)"
        if op in ("=", "!="):
            if many:
                return f"({arg!r} {'in' if op == '=' else 'not in'} {value})"
            return f"({value} {'==' if op == '=' else '!='} {arg!r})"
        name = self.n(f"X{len(self.names)}")
        self.names[name] = arg
        if op == "in":
            return f"(not {name}.isdisjoint({value}))" if many else f"({value} in {name})"
        if many:  # matches (values are never None)
            return f"((_vl := {value}) is not None and any({name}.search(_v) for _v in _vl))"
        return f"((_t := {value}) is not None and {name}.search(_t) is not None)"  # matches

    def _value_expr(self, path: Any, *, mark: bool = True) -> str | None:
        """An expression for the one value *path* gives (str or None), or SEGMENT, or None when it cannot be written out.

        *mark*: the field is marked read when valued; a condition's is not (see `marks`).
        """
        if type(path) is not SourcePath or path.decode_whole:
            return None  # whole values read as text: the closures undo their escapes
        self.message()
        if path.segment is None:
            self.value()
            v = self.vnames[0]
            if not path.comp:
                return f"({v} if {v} and {v} != NULL else None)"
            key = (v, None, 0, path.comp, path.sub)
            var = self.relative.get(key)
            if var is None:
                var = self.relative[key] = self.n(f"rv{len(self.relative)}")
            return var  # computed where the block starts (see child_start): reading a value's parts reads no field
        if path.rep == ALL:
            return None
        seg = self._segment_var(path)
        if seg is None:
            return None
        if path.field_no is None:
            return "SEGMENT"
        r = 0 if path.rep is None else path.rep - 1
        key = (seg, path.field_no, r, path.comp, path.sub, mark)
        var = self.values.get(key)
        if var is None:
            var = self.values[key] = self.n(f"fv{len(self.values)}")
            self.root.memos.append(var)
        # Read once per block, when first asked: several conditions of a block test one field (OBX-2).
        # What _field_value does, as one expression: the field, marked read when valued, then the leaf.
        f = path.field_no
        rep = "_w.split(REP, 1)[0]" if r == 0 else f"(_r[{r}] if {r} < len(_r := _w.split(REP)) else '')"
        if path.comp:
            leaf = _leaf_expr(f"(_p[{path.comp - 1}] if {path.comp} <= len(_p := {rep}.split(COMP)) else '')", path.sub)
        else:
            leaf = f"(None if not (_t := {rep}) or _t == NULL else _t)"
        read = f"(None if not (_w := (F{seg}[{f}] if {f} < NF{seg} else '')) else {f'(reads.add(({seg}.index, {f})) or {leaf})' if mark else leaf})"
        return f"({var} if {var} is not _U else ({var} := {read}))"

    def _call(self, i: int, fn: Any, args: str, where: str, out: str, arity: int, *, key: str = "FN") -> list[str]:
        """Lines calling library function *fn* on the list *args* into *out*; on a rejection, again with positions (as call_at)."""
        name = self.n(f"{key}{i}")
        self.names[name] = fn
        a = self.n("_a")
        return [
            f"{a} = {args}",
            "try:",
            f"    {out} = {name}.call(ctx.fn_ctx, _Values({a}, [{', '.join(['None'] * arity)}]))",
            "except MessageError:",
            f"    {out} = call_at({name}, ctx.fn_ctx, {a}, {self.scope}, {where})",
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

    def _fit(self, i: int, check: Any, var: str, path: str, index: str, *, typed: bool) -> list[str]:
        """Lines fitting *var* to its FHIR type as _steps.converter does: one match, `fit` only when it fails.

        *typed*: *var* is known to be text; else it may be None or a non-text result.
        """
        name = self.n(f"CK{i}")
        self.names[name] = check.pattern
        test = f"{name}.fullmatch({var}) is None"
        if check.printable_fits:  # as ValueCheck.fits: most codes are told by the quick test alone
            test = f"not ({var}.isprintable() and ' ' not in {var}) and {test}"
        if not typed:
            test = f"type({var}) is str and {test}"
        self.names[self.n(f"CKT{i}")] = check
        return [f"if {test}:", f"    {var} = fit({self.n(f'CKT{i}')}, {var}, {path}, {self.scope}, {index})"]

    def _put(self, i: int, put: Any, var: str, *, track: bool = False, known: str | None = None) -> list[str]:
        """Lines placing *var* as Target.put would; *track* records where a Ref went (ref rules).

        *known* is the value's type when the rule's shape fixes it ("str": a
        value read as it is; "dict": a datatype's object): then no list check.
        """
        shape = getattr(put, "plan", None)
        target = getattr(put, "__self__", None)
        obj = self.obj
        if track and isinstance(target, Target) and getattr(put, "__func__", None) is Target.put:
            shape = ("target", target.names, target.lists)
        elif track:
            shape = None
        if shape is not None and shape[0] == "untidy":  # _steps.untidy: mark the resource for pruning, then place
            _, always, inner = shape
            inner_lines = self._put(i, inner, var, known=known)
            if inner_lines and inner_lines[0].startswith(self.n(f"P{i}") + "("):
                shape = None  # the inner put is opaque: call the wrapper as it is
            elif always:
                return ["ctx.untidy = True", *inner_lines]
            elif known == "str":
                return inner_lines
            elif known == "dict":
                return ["ctx.untidy = True", *inner_lines]
            else:
                return [f"if type({var}) is dict or type({var}) is list:", "    ctx.untidy = True", *inner_lines]
        if shape is not None and shape[0] == "set":
            return [f"{obj}[{shape[1]!r}] = {var}"]
        if shape is None or shape[0] != "target":
            name = self.n(f"P{i}")
            self.names[name] = put
            return [f"{name}({obj}, {var}, ctx)"]
        names, lists = shape[1], shape[2]
        lines = [f"_n = {obj}"]
        for name, is_list in zip(names[:-1], lists[:-1]):
            if is_list:
                lines += [f"_l = _n.get({name!r})", "if _l is None:", f"    _l = _n[{name!r}] = [{{}}]", "elif not _l:", "    _l.append({})", "_n = _l[-1]"]
            else:  # an empty dict already there is kept: setdefault returns it
                lines += [f"_n = _n.get({name!r}) or _n.setdefault({name!r}, {{}})"]
        last = names[-1]
        if lists[-1]:
            lines += [f"_l = _n.get({last!r}) or _n.setdefault({last!r}, [])"]
            if track:  # a Ref value is never a list
                lines += [f"ctx.ref_sites.append((_l, len(_l), {var}, ctx.current))", f"_l.append({var})"]
            elif known is not None:
                lines += [f"_l.append({var})"]
            else:
                lines += [f"if type({var}) is list:", f"    _l.extend({var})", "else:", f"    _l.append({var})"]
        else:
            if track:
                lines.append(f"ctx.ref_sites.append((_n, {last!r}, {var}, ctx.current))")
            lines.append(f"_n[{last!r}] = {var}")
        if len(lines) == 3 and lines[1].startswith("_l = _n.get(") and lines[2] == f"_l.append({var})":  # one list at the top: one line
            lines = [lines[1].replace("_l = _n.", f"({obj}.").replace(" or _n.", f" or {obj}.") + f").append({var})"]
        return lines

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

    def _leaf(self, src: str, comp: int, sub: int, v: str, *, decode: bool = False) -> list[str]:
        """A line turning repetition text *src* into *v* (str or None), as Hl7Message.leaf does.

        With *decode*, a whole repetition is read as final text, escapes undone (SourcePath.decoded).
        """
        if not comp and decode:
            return [f"{v} = None if {src} == NULL else (unescape({src}, delims) if ESC and ESC in {src} else {src})"]
        if not comp:  # a whole repetition stays escaped: its components are split later
            return [f"{v} = {src} if {src} != NULL else None"]
        part = f"(_p[{comp - 1}] if {comp} <= len(_p := {src}.split(COMP)) else '')"
        return [f"{v} = {_leaf_expr(part, sub)}"]

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
            V, VP, NVP = self.vnames
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

    def _reader(self, i: int, path: Any, j: int = 0) -> str:
        """An expression reading *path*'s first value (str or None) through its own reader, as _steps.first does."""
        name = self.n(f"R{i}_{j}")
        self.names[name] = reader(path)
        return f"{name}({self.scope})"

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

    def _open_field(self, seg: str, f: int, raw: str) -> list[str]:
        """Lines reading field *f* of the segment in local *seg* into *raw*, ending inside `if raw:`.

        The field is marked read only when it holds something: the reads feed
        the unmapped report, which lists valued fields only.
        """
        return [
            f"{raw} = F{seg}[{f}] if {f} < NF{seg} else ''",
            f"if {raw}:",
            f"    reads.add(({seg}.index, {f}))",
        ]

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
