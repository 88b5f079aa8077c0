"""The `when:` language: a small, safe expression language compiled to closures.

    PV1 valued                       PV1-2 = I
    PID-3.5 in [FNR, DNR, NNNOR]     PID-8 not valued
    MSH-9.2 != A11 and (PV1-45 valued or EVN-1 = A03)
    PID-5.1 matches '^[A-ZÆØÅ]'
    `//po:Forsendelsesstatus[@V = "C"]` valued      (backticks: a path with spaces or operators)

There is no way to call Python from here: the grammar has paths, literals and
these operators, nothing else. Paths compile through the source format's path
compiler, so the same language serves HL7 v2 and XPath sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

Predicate = Callable[[Any], bool]
"""A compiled condition: takes a scope, answers yes or no."""


class _Path(Protocol):
    def resolve(self, scope: Any) -> list[Any]: ...


PathCompiler = Callable[[str], _Path]
"""Turns path text into an object with `resolve(scope) -> items` (items have `.raw`)."""


class ConditionSyntaxError(ValueError):
    """The condition does not parse; the message says where."""


_TOKEN = re.compile(r"""\s*(?:(?P<path>`[^`]+`)|(?P<str>'[^']*'|"[^"]*")|(?P<op>!=|=|\(|\)|\[|\]|,)|(?P<word>[^\s()\[\],=!'"](?:[^\s()\[\],=!'"]|\[[^\]\s]*\])*))""")
_KEYWORDS = {"and", "or", "not", "valued", "in", "matches"}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConditionSyntaxError(f"unexpected character at column {pos + 1}: {text[pos]!r}")
        out.append(m.group(m.lastgroup or "word"))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, compile_path: PathCompiler) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.compile_path = compile_path

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None, *, what: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise ConditionSyntaxError(f"condition ends too early: expected {what or repr(expected) if expected else what or 'more'}")
        if expected is not None and tok != expected:
            raise ConditionSyntaxError(f"expected {expected!r} but found {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_()
        if self.peek() is not None:
            raise ConditionSyntaxError(f"unexpected {self.peek()!r} after a complete condition")
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.peek() == "or":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else _shaped(lambda s, ps=tuple(parts): any(p(s) for p in ps), ("or", tuple(parts)))  # type: ignore[misc]  # mypy cannot type a lambda whose defaults bind values

    def and_(self) -> Predicate:
        parts = [self.not_()]
        while self.peek() == "and":
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else _shaped(lambda s, ps=tuple(parts): all(p(s) for p in ps), ("and", tuple(parts)))  # type: ignore[misc]  # mypy cannot type a lambda whose defaults bind values

    def not_(self) -> Predicate:
        if self.peek() == "not":
            self.take()
            inner = self.not_()
            return _shaped(lambda s: not inner(s), ("not", inner))
        return self.atom()

    def atom(self) -> Predicate:
        tok = self.take(what="a path or '('")
        if tok == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if tok in _KEYWORDS or tok[0] in "'\"":
            raise ConditionSyntaxError(f"expected a path but found {tok!r}")
        if tok[0] == "`":  # a path with spaces, brackets or operators of its own (XPath predicates)
            tok = tok[1:-1]
        try:
            path = self.compile_path(tok)
        except ValueError as exc:
            raise ConditionSyntaxError(str(exc)) from exc
        return self.test(path)

    def literal(self) -> str:
        tok = self.take(what="a value")
        if tok in ("(", ")", "[", "]", ","):
            raise ConditionSyntaxError(f"expected a value but found {tok!r}")
        return tok[1:-1] if tok[0] in "'\"" else tok

    def test(self, path: _Path) -> Predicate:
        op = self.take(what="an operator: valued, not valued, =, !=, in, matches")
        values = getattr(path, "values", None) or (lambda s: [it.raw for it in path.resolve(s)])
        if op == "valued":
            return _shaped(lambda s: bool(values(s)), ("test", "valued", path, None))
        if op == "not":
            self.take("valued")
            return _shaped(lambda s: not values(s), ("test", "not valued", path, None))
        if op in ("=", "!="):
            want = self.literal()
            eq: Predicate = lambda s: want in values(s)  # noqa: E731 - tiny closure
            return _shaped(eq if op == "=" else (lambda s: not eq(s)), ("test", op, path, want))
        if op == "in":
            self.take("[")
            options = {self.literal()}
            while self.peek() == ",":
                self.take()
                options.add(self.literal())
            self.take("]")
            return _shaped(lambda s: any(v in options for v in values(s)), ("test", "in", path, frozenset(options)))
        if op == "matches":
            pattern = self.literal()
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ConditionSyntaxError(f"bad regular expression {pattern!r}: {exc}") from exc
            return _shaped(lambda s: any(rx.search(v) for v in values(s)), ("test", "matches", path, rx))
        raise ConditionSyntaxError(f"unknown operator {op!r} (use valued, not valued, =, !=, in, matches)")


def compile_condition(text: str, compile_path: PathCompiler) -> Predicate:
    """Compile a `when:` expression.

    Raises:
        ConditionSyntaxError: the text does not follow the grammar.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConditionSyntaxError("a condition must be a non-empty string")
    pred = _Parser(text, compile_path).parse()
    asked = _memoised(pred)
    asked.shape = pred.shape  # type: ignore[attr-defined]
    asked.text = "\x1f".join(_tokens(text))  # type: ignore[attr-defined]  # the same tokens ask the same question (quoted spaces count)
    return asked


def _shaped(pred: Predicate, shape: tuple[Any, ...]) -> Predicate:
    """Give *pred* its `shape`: what router/mapping/_codegen.py writes out as a Python expression."""
    pred.shape = shape  # type: ignore[attr-defined]
    return pred


def _memoised(pred: Predicate) -> Predicate:
    """Answer each condition once per scope: several rules of one block often ask the same (`OBX-2 = NM`).

    The memo keeps, with a yes, the fields that made it hold, and every ask marks
    them again: a later block asking the same condition on the same scope counts
    them as read without resolving a path (see `held`).
    """
    key = object()
    exact = _exact(pred)

    def ask(scope: Any) -> bool:
        memo = getattr(scope, "memo", None)
        if memo is None:
            try:
                memo = scope.memo = {}
            except AttributeError:  # a scope type without a memo slot: just answer
                return held(pred, scope)
        known = memo.get(key)
        if known is None:
            known = memo[key] = _answer(pred, scope, exact)
        answer, taken = known
        if taken:
            scope.reads.update(taken)
        return answer

    ask.marks_itself = exact  # type: ignore[attr-defined]  # _codegen: asked as it is, its yes marks its fields
    return ask


def held(pred: Predicate, scope: Any) -> bool:
    """Answer *pred*; the fields that made it hold count as read (the unmapped report), no others.

    Why: a field only tested by a condition that failed (PID-30 `N` for `when: PID-30 = Y`)
    reached no output, so `--unmapped` must list it. Where the condition holds, its fields count:
    all of an `and`, the first part that holds of an `or` (ORC-2 is not read for `OBR-2 valued or
    ORC-2 valued` when OBR-2 gives the number), everything under a `not`. The generated code
    marks by the same rule (_codegen._Gen.marks).
    """
    answer, taken = _answer(pred, scope, _exact(pred))
    if taken:
        scope.reads.update(taken)
    return answer


def _answer(pred: Predicate, scope: Any, exact: bool) -> tuple[bool, set[Any] | None]:
    """*pred*'s answer, with the fields that made it hold when it holds (None: it does not, or nothing is counted).

    An *exact* condition (no `or`, no `not`) read, to hold, all it names and nothing else:
    what it read is what made it hold. Any other is marked by its shape (`_mark`), which
    resolves the paths of the parts that count a second time.
    """
    reads = getattr(scope, "reads", None)
    if reads is None:
        return bool(pred(scope)), None
    taken: set[Any] = set()
    scope.reads = taken
    try:
        answer = bool(pred(scope))
        if answer and not exact:
            taken = scope.reads = set()
            _mark(pred, scope)
    finally:
        scope.reads = reads
    if not answer:
        return answer, None
    return answer, {read for read in taken if not _holds_elements(read)}


def _holds_elements(read: Any) -> bool:
    """Whether *read* is an XML element with element children: a condition's test of it maps none of them.

    Why: an element counts as read whole (its children covered) in the unmapped report. A
    rule that reads a whole element maps what it holds; `when: dm:Foresporsel valued` only
    asks whether it is there, and counted whole it hid the nurse the question names, which
    no rule maps. v2 reads are (segment, field) pairs and pass unchanged.
    """
    tag = getattr(read, "tag", None)
    return isinstance(tag, str) and len(read) > 0 and any(isinstance(child.tag, str) for child in read)  # a leaf asks no walk


def _exact(pred: Any) -> bool:
    """Whether *pred* has no `or` and no `not`: to hold, it reads every path it names (see `_answer`)."""
    shape = pred.shape
    if shape[0] == "and":
        return all(_exact(p) for p in shape[1])
    return shape[0] == "test"  # type: ignore[no-any-return]


def _mark(pred: Any, scope: Any) -> None:
    """Mark read what made *pred*, which holds, hold (see `held`)."""
    kind = pred.shape[0]
    if kind == "and":
        for part in pred.shape[1]:
            _mark(part, scope)
    elif kind == "or":
        part = next((p for p in pred.shape[1] if quiet(p, scope)), None)  # asked again: a condition only reads
        if part is not None:
            _mark(part, scope)
    else:
        for path in paths_of(pred):
            path.resolve(scope)  # marks what it reads, as a rule's read does


def mark_paths(paths: tuple[Any, ...], scope: Any) -> None:
    """Resolve *paths* on *scope*, counting as read what they select but an element with element children (see `_holds_elements`).

    What generated guards call to mark the paths of a condition that held (_codegen_conditions.marks),
    so they count what `_answer` counts: asking about an element maps none of what it holds.
    """
    reads = scope.reads
    taken = scope.reads = set()
    try:
        for path in paths:
            path.resolve(scope)
    finally:
        scope.reads = reads
    reads.update(read for read in taken if not _holds_elements(read))


def quiet(read: Callable[[Any], Any], scope: Any) -> Any:
    """What *read* gives on *scope*, the fields it reads not counted as read."""
    reads = getattr(scope, "reads", None)
    if reads is None:
        return read(scope)
    scope.reads = set()
    try:
        return read(scope)
    finally:
        scope.reads = reads


def paths_of(pred: Any) -> tuple[Any, ...]:
    """The paths a compiled condition names, from its shape, each once."""
    shape = pred.shape
    if shape[0] in ("and", "or"):
        return tuple({id(p): p for sub in shape[1] for p in paths_of(sub)}.values())
    if shape[0] == "not":
        return paths_of(shape[1])
    return (shape[2],)
