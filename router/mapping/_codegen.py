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

This module assembles the source and compiles it; `_Gen`, which writes one
block's lines, is built in layers: _codegen_values.py (a block's locals,
reads, calls, fits and puts), _codegen_conditions.py (guards, conditions and
their marks), _codegen_rules.py (rules by plan, blocks written out in line, loops).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from types import CodeType
from typing import Any

from adapters.hl7v2._tokenizer import EXPLICIT_NULL, unescape
from adapters.hl7v2.groups import near_map
from router.errors import MessageError
from router.mapping._codegen_conditions import _GUARD
from router.mapping._codegen_rules import _Gen
from router.mapping._steps import call_at, fit, location
from router.mapping.conditions import mark_paths, quiet
from router.mapping.library import _Values
from router.mapping.runtime import IdentityOf, identity_of

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


def _compile(source: str, name: str, names: dict[str, Any], filename: str) -> Any:
    namespace: dict[str, Any] = {
        "near_map": near_map, "_U": _UNREAD, "unescape": unescape, "NULL": EXPLICIT_NULL,
        "MessageError": MessageError, "_Values": _Values, "call_at": call_at, "fit": fit, "quiet": quiet, "mark_paths": mark_paths, "location": location, "identity_of": identity_of, **names,
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
