"""Mapping paths read without the XPath engine: XPath text parsed into plans, plans run over a per-message index.

Most mapping paths (`@V`, `po:Kode/@V`, `../po:X`, `//po:X[po:Y]`, `(//po:X/@V)[last()]`)
and the string functions mappings use (`normalize-space(.)`, `concat(po:X/@DN, ":")`) are
parsed here once, into a `_Plan` or a `Function`. Bound to the namespace URIs a document
uses, a plan becomes `select(node, results)`, which looks elements up in a children index
per element (`children_index`) kept in the message's results. paths.py decides per path
whether a plan or lxml's XPath answers; the answers are the same (tests/adapters/kith/test_paths.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

if TYPE_CHECKING:
    from adapters.kith.paths import XmlScope

_tostring = etree.tostring

_NAME = r"[A-Za-z_][\w.-]*"
# One name test a plan can take: `p:Name`, `*[local-name()="Name"]` or `*`.
_STEP = re.compile(rf"(?P<prefix>{_NAME}):(?P<name>{_NAME})|\*\[local-name\(\)\s*=\s*(?:\"(?P<dq>{_NAME})\"|'(?P<sq>{_NAME})')\]|(?P<any>\*)")
_ATTR = re.compile(r"@([A-Za-z_][\w-]*)")
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")

NameTest = tuple[str | None, str]
"""(prefix, local name) of a step; prefix None is any namespace, and ``(None, "*")`` any element."""

Term = tuple["_Plan", str | None, str]
"""One alternative of a predicate: (X's plan, op, literal). op None: X selects anything; "=" or "!=": some node X selects
has a string value equal (unequal) to the literal, as XPath compares a node set with a string."""

Pred = tuple[bool, tuple[Term, ...]]
"""A predicate, `[X]`, `[X = "a" or Y != 'b']` or `[not(...)]`: (negated, its alternatives joined by `or`)."""

Filter = int | Pred
"""A predicate after a parenthesised path, `(U)[1]`, `(U)[last()]` (_LAST) or `(U)[po:X]`, applied in order over U's answer in document order."""
_LAST = 0

Step = tuple[int, tuple[NameTest, ...], tuple[Pred, ...]]
"""One location step: (axis, name tests, predicates). `a/b` is a child step, `a//b` a descendant one, `self::a` a self one."""

_CHILD, _DESCENDANT, _SELF = range(3)

_REL, _ROOT, _DOC = range(3)
"""Where a plan member starts: the context node, `/` (the document node) or `//` (every element of the document)."""


@dataclass(frozen=True, slots=True)
class _Member:
    """One union member a plan reads: a start, `..` steps up, location steps down, an optional attribute."""

    start: int
    ups: int
    steps: tuple[Step, ...]
    attr: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """A path read without the XPath engine: union members of name steps, and an optional attribute.

    Most mapping paths are `@V`, `.`, `po:Kode/@V`, `*[local-name()="Id"]`,
    `../po:X` or `//po:X/po:Y`: an XPath call costs several µs, a lookup in the
    children index (children_index) a fraction of one, and `//` steps walk the tree in
    lxml's C iterators. A union whose members differ only in their last name
    test (`mh:Id|fk1:Id|*[local-name()="Id"]`) is one member with several
    tests. Any other union, and any step that can reach one element twice or
    out of order (from nested elements, after `//`), is put in document order
    without duplicates: what XPath gives for the same text. A step may be
    `self::` and carry predicates that ask whether a path selects anything
    (`[po:X]`, `[not(../../@a)]`); positions and comparisons are XPath's.
    """

    members: tuple[_Member, ...]
    attr: str | None
    filters: tuple[Filter, ...] = ()  # `(U)[…]`: the members' attribute, if any, is what the filters count

    @property
    def absolute(self) -> bool:
        """Every member starts at the document: one answer per message, whatever the context."""
        return all(m.start != _REL for m in self.members)

    def selector(self, bindings: tuple[tuple[str, str], ...]) -> Any:
        """Return `select(node, results)` for one prefix binding: the elements reached, or None when `..` leaves the root.

        The result may be a children index's own list: callers only iterate it.
        """
        return self.select_for(dict(bindings))

    def select_for(self, uris: dict[str, str]) -> Any:
        """selector() for a binding given as prefix → URI."""
        runs = [_member_selector(m, uris) for m in self.members]
        if self.filters:
            return _filtered(runs[0] if len(runs) == 1 else _union(runs), self.filters, self.members[0].attr, uris)
        if len(runs) == 1:
            return runs[0]
        return _union(runs)


def _union(runs: list[Any]) -> Any:
    """`select(node, results)` for a union: every member's answer, in document order without duplicates."""

    def union(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
        found: list[Any] = []
        for run in runs:
            part = run(node, results)
            if part is None:
                return None
            found.extend(part)
        return _in_order(found, node, results) if len(found) > 1 else found

    return union


def _filtered(select: Any, filters: tuple[Filter, ...], attr: str | None, uris: dict[str, str]) -> Any:
    """`select(node, results)` narrowed by the predicates of `(U)[@V][1]`, in order, over U's answer in document order.

    When U selects an attribute, its answer holds only the elements that carry
    it, as XPath's node set holds only attributes that exist (empty ones too).
    """
    steps = [f if isinstance(f, int) else _tests((f,), uris) for f in filters]

    def narrowed(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
        found = select(node, results)
        if found is None:
            return None
        if attr is not None:
            found = [el for el in found if el.get(attr) is not None]
        for step in steps:
            if isinstance(step, int):
                found = found[-1:] if step == _LAST else found[step - 1:step]
            elif found:
                found = _keep(found, step, results)
                if found is None:
                    return None
        return found  # type: ignore[no-any-return]

    return narrowed


StepFilter = tuple[int, Any]
"""A child step bound to a document: (_EXACT, "{uri}Name"), (_LOCAL, "Name"), (_ANY, None) or (_MIXED, (tags, local names))."""
_EXACT, _LOCAL, _ANY, _MIXED = range(4)


def _filter(tests: tuple[NameTest, ...], uris: dict[str, str]) -> StepFilter:
    exact = frozenset(f"{{{uris[prefix]}}}{name}" for prefix, name in tests if prefix is not None)
    local = frozenset(name for prefix, name in tests if prefix is None)  # local-name() tests: any namespace or none
    if "*" in local:
        return (_ANY, None)
    if len(tests) > 1:
        return (_MIXED, (exact, local))
    return (_EXACT, next(iter(exact))) if exact else (_LOCAL, next(iter(local)))


def _iter_tags(filt: StepFilter) -> tuple[Any, ...]:
    """The same test as arguments of lxml's C iterators (`iter`, `iterdescendants`); `{*}X` is any namespace or none."""
    kind, key = filt
    if kind == _EXACT:
        return (key,)
    if kind == _LOCAL:
        return ("{*}" + key,)
    if kind == _ANY:
        return (etree.Element,)
    exact, local = key
    return (*sorted(exact), *sorted("{*}" + name for name in local))


def _matches(filt: StepFilter, tag: str) -> bool:
    kind, key = filt
    if kind == _EXACT:
        return tag == key  # type: ignore[no-any-return]
    if kind == _LOCAL:
        return tag.rpartition("}")[2] == key  # type: ignore[no-any-return]
    if kind == _ANY:
        return True
    exact, local = key
    return tag in exact or tag.rpartition("}")[2] in local


def _member_selector(member: _Member, uris: dict[str, str]) -> Any:
    """Compile one member for a binding into `select(node, results)`; the everyday shapes get a closure of their own."""
    ups = member.ups
    steps = [(axis, _filter(tests, uris)) for axis, tests, _ in member.steps]
    if member.start == _REL and all(axis == _CHILD and not preds for axis, _, preds in member.steps):
        if not steps:
            if not ups:
                return lambda node, results: (node,)

            def up(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
                for _ in range(ups):
                    node = node.getparent()
                    if node is None:
                        return None  # XPath's `..` of the root is the document node: let XPath answer
                return (node,)

            return up
        if len(steps) <= 2:
            return _near(ups, [filt for _, filt in steps])
        filters = [filt for _, filt in steps]

        def chain(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
            for _ in range(ups):
                node = node.getparent()
                if node is None:
                    return None
            found: Sequence[Any] = (node,)
            for kind, key in filters:
                if len(found) == 1:
                    el = found[0]
                    kids = results.get(el)
                    if kids is None:
                        kids = results[el] = children_index(el)
                    found = kids.get(key, _NONE) if kind == _EXACT else _matching(kids, kind, key)
                elif not found:
                    return found
                else:  # children of elements none of which holds another: in document order
                    found = _children(found, (kind, key), False, node, results)
            return found

        return chain
    start = member.start
    bound = [(axis, filt, _iter_tags(filt) if axis == _DESCENDANT else (), _tests(preds, uris)) for (axis, filt), (_, _, preds) in zip(steps, member.steps)]
    first, first_preds = (bound[0][1], bound[0][3]) if start != _REL else (None, ())
    first_tags = _iter_tags(first) if first is not None else ()
    first_exact = first[1] if first is not None and first[0] == _EXACT else None
    rest = bound[1:] if start != _REL else bound  # the first step of `/x`, `//x` is taken from the document node below

    def select(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
        nested = False  # may `found` hold an element and one below it?
        if start == _REL:
            for _ in range(ups):
                node = node.getparent()
                if node is None:
                    return None
            found: Sequence[Any] | None = (node,)
        else:
            by_tag = results.get(_BY_TAG) if start == _DOC and first_exact is not None else None
            if by_tag is not None:  # `//x`: message_scope's index; iter(tag) would walk the document and parse its tag argument again
                found = by_tag.get(first_exact, _NONE)
                nested = True
            elif start == _DOC:  # `//x`: every element of the document that matches, the root too
                found = list(node.getroottree().getroot().iter(*first_tags))
                nested = True
            else:  # `/x`: the root element, if it matches
                root = node.getroottree().getroot()
                found = (root,) if _matches(first, root.tag) else _NONE  # type: ignore[arg-type]
            if first_preds and found:
                found = _keep(found, first_preds, results)
                if found is None:
                    return None
        for axis, filt, tags, preds in rest:
            if not found:
                return _NONE
            if axis == _DESCENDANT:
                if len(found) == 1:
                    found = list(found[0].iterdescendants(*tags))
                else:
                    found = _in_order([d for el in found for d in el.iterdescendants(*tags)], node, results)
                nested = True
            elif axis == _SELF:
                found = [el for el in found if _matches(filt, el.tag)]
            else:
                found = _children(found, filt, nested, node, results)
            if preds and found:
                found = _keep(found, preds, results)
                if found is None:
                    return None
        return found

    return select


def _near(ups: int, filters: list[StepFilter]) -> Any:
    """`select(node, results)` for `..` steps then one or two child steps (`po:A/po:B/@V`, `../*[local-name()="X"]`): most mapping paths."""
    (kind, key), (then, then_key) = filters[0], (filters[1] if len(filters) > 1 else (None, None))

    def near(node: Any, results: dict[Any, Any]) -> Sequence[Any] | None:
        if ups:
            for _ in range(ups):
                node = node.getparent()
                if node is None:
                    return None  # XPath's `..` of the root is the document node: let XPath answer
        kids = results.get(node)
        if kids is None:
            kids = results[node] = children_index(node)
        found = kids.get(key, _NONE) if kind == _EXACT else _matching(kids, kind, key)
        if then is None:
            return found
        if len(found) != 1:  # children of elements none of which holds another: in document order
            return _children(found, (then, then_key), False, node, results) if found else found
        el = found[0]
        kids = results.get(el)
        if kids is None:
            kids = results[el] = children_index(el)
        return kids.get(then_key, _NONE) if then == _EXACT else _matching(kids, then, then_key)

    return near


def _children(found: Sequence[Any], filt: StepFilter, nested: bool, node: Any, results: dict[Any, Any]) -> Sequence[Any]:
    """The children of *found* one child step selects, in document order (*nested*: *found* may hold an element and one below it)."""
    kind, key = filt
    if len(found) == 1:
        el = found[0]
        kids = results.get(el)
        if kids is None:
            kids = results[el] = children_index(el)
        return kids.get(key, _NONE) if kind == _EXACT else _matching(kids, kind, key)
    out: list[Any] = []
    for el in found:
        kids = results.get(el)
        if kids is None:
            kids = results[el] = children_index(el)
        out.extend(kids.get(key, _NONE) if kind == _EXACT else _matching(kids, kind, key))
    return _in_order(out, node, results) if nested else out


PredTest = tuple[bool, Any]
"""A predicate bound to a document: (negated, `exists(element, results)`)."""


def _tests(preds: tuple[Pred, ...], uris: dict[str, str]) -> tuple[PredTest, ...]:
    return tuple((negated, _either(terms, uris)) for negated, terms in preds)


def _either(terms: tuple[Term, ...], uris: dict[str, str]) -> Any:
    """Return `test(element, results)` for alternatives joined by `or`: True when one holds; None: ask XPath."""
    tests = [_exists(plan, uris) if op is None else _compare(plan, op == "=", literal, uris) for plan, op, literal in terms]
    if len(tests) == 1:
        return tests[0]

    def either(element: Any, results: dict[Any, Any]) -> bool | None:
        for test in tests:
            answer = test(element, results)
            if answer is None or answer:
                return answer  # XPath's `or` stops at the first true one too
        return False

    return either


def _compare(plan: _Plan, equal: bool, literal: str, uris: dict[str, str]) -> Any:
    """Return `test(element, results)` for `X = "a"` (`X != "a"`): some node X selects has a string value equal (unequal) to the literal."""
    select = plan.select_for(uris)
    attr = plan.attr

    def compare(element: Any, results: dict[Any, Any]) -> bool | None:
        found = select(element, results)
        if found is None:
            return None  # `..` left the root element
        for el in found:
            if attr is None:  # an element's string value is all the text below it
                value = _tostring(el, method="text", encoding="unicode", with_tail=False) if len(el) else el.text or ""
            else:
                value = el.get(attr)
                if value is None:
                    continue
            if (value == literal) is equal:
                return True
        return False

    return compare


def _exists(plan: _Plan, uris: dict[str, str]) -> Any:
    """Return `exists(element, results)`: does *plan* select anything from the element (an attribute counts however empty); None: ask XPath."""
    runs = [_member_selector(m, uris) for m in plan.members] if not plan.filters else [plan.select_for(uris)]
    attr = plan.attr

    def exists(element: Any, results: dict[Any, Any]) -> bool | None:
        for run in runs:
            found = run(element, results)
            if found is None:
                return None  # `..` left the root element
            if attr is None:
                if found:
                    return True
            elif any(el.get(attr) is not None for el in found):
                return True
        return False

    return exists


def _keep(found: Sequence[Any], tests: tuple[PredTest, ...], results: dict[Any, Any]) -> list[Any] | None:
    """The elements of *found* every predicate keeps, in order; None when one needs the XPath engine."""
    out = []
    for el in found:
        for negated, exists in tests:
            answer = exists(el, results)
            if answer is None:
                return None
            if answer is negated:
                break
        else:
            out.append(el)
    return out


_NONE: tuple[Any, ...] = ()
_ALL = None  # the children index's key for every element child
_ORDER = object()  # the results key of the document-order index
_SELECTED = object()  # with a path's text, the results key of an absolute plan's answer
_ELEMENTS = object()  # the results key of every node of the document, in order (message_scope)
_BY_TAG = object()  # the results key of the document's nodes by tag, each list in document order (message_scope)


def children_index(element: Any) -> dict[Any, Any]:
    """One element's element children by tag, and all of them under _ALL, in document order.

    Built the first time a plan steps down from the element in a message and
    kept in the scope's results: a PLO message asks ~350 child steps of ~55
    parents, and a dict lookup costs a fraction of `iterchildren(tag)`, which
    parses its tag argument on every call (even `iterchildren(etree.Element)`
    costs more than this loop's test). Local names, for `local-name()` tests,
    are added under ("", name) keys when a step first asks.
    """
    everything: list[Any] = []
    by_tag: dict[Any, Any] = {_ALL: everything}
    for child in element:
        tag = child.tag  # lxml builds this string on every access: once per child
        if tag.__class__ is not str:
            continue  # comments and PIs are no step's answer
        everything.append(child)
        same = by_tag.get(tag)
        if same is None:
            by_tag[tag] = [child]
        else:
            same.append(child)
    return by_tag


def _matching(kids: dict[Any, Any], kind: int, key: Any) -> Sequence[Any]:
    """The children one step filter selects, in document order."""
    if kind == _EXACT:
        return kids.get(key, _NONE)  # type: ignore[no-any-return]
    if kind == _LOCAL:
        if ("", "") not in kids:
            for child in kids[_ALL]:
                kids.setdefault(("", child.tag.rpartition("}")[2]), []).append(child)
            kids[("", "")] = _NONE
        return kids.get(("", key), _NONE)  # type: ignore[no-any-return]
    if kind == _ANY:
        return kids[_ALL]  # type: ignore[no-any-return]
    exact, local = key
    return [c for c in kids[_ALL] if c.tag in exact or c.tag.rpartition("}")[2] in local]


def _in_order(found: list[Any], node: Any, results: dict[Any, Any]) -> list[Any]:
    """*found* in document order without duplicates, as XPath returns a node-set."""
    order = results.get(_ORDER)
    if order is None:
        elements = results.get(_ELEMENTS)
        if elements is None:
            elements = node.getroottree().getroot().iter()
        order = results[_ORDER] = dict(zip(elements, range(1 << 62)))
    return sorted(dict.fromkeys(found), key=order.__getitem__)


def _plan(text: str) -> _Plan | None:
    """Return the plan for *text*, or None when only the XPath engine can read it."""
    if text.startswith("("):
        return _parenthesised(text)
    members = [_member(part.strip()) for part in _split(text, "|")]
    if any(m is None for m in members):
        return None
    if len(members) == 1:
        return _Plan((members[0],), members[0].attr)  # type: ignore[arg-type, union-attr]
    first = members[0]
    assert first is not None  # noqa: S101 - checked above
    if any(m.attr != first.attr for m in members):  # type: ignore[union-attr]
        return None  # attributes of one element follow their own order in XPath: let it answer
    if any(not m.steps for m in members):  # type: ignore[union-attr]
        return None  # `.|x`, `..|x`: rare, and XPath knows their order
    head = first.steps[:-1]
    axis, _, preds = first.steps[-1]
    if all(m.start == first.start and m.ups == first.ups and m.steps[:-1] == head and m.steps[-1][0] == axis and m.steps[-1][2] == preds for m in members):  # type: ignore[union-attr]
        last: list[NameTest] = []
        for m in members:
            last.extend(test for test in m.steps[-1][1] if test not in last)  # type: ignore[union-attr]
        return _Plan((_Member(first.start, first.ups, (*head, (axis, tuple(last), preds)), first.attr),), first.attr)
    return _Plan(tuple(members), first.attr)  # type: ignore[arg-type]


def _parenthesised(text: str) -> _Plan | None:
    """The plan for `(U)`, `(U)[1]`, `(U)[last()]`, `(U)[po:X][1]` or `(U)[1]/@V`: U's answer in document order, narrowed in turn."""
    end = _closing(text, 0)
    inner = _plan(text[1:end].strip()) if end > 0 else None
    if inner is None or inner.filters:
        return None
    filters: list[Filter] = []
    rest = text[end + 1:].strip()
    while rest.startswith("["):
        close = _closing(rest, 0)
        if close < 0:
            return None
        pred = rest[1:close].strip()
        if _POSITION.fullmatch(pred) and int(pred) > 0:
            filters.append(int(pred))
        elif pred == "last()":
            filters.append(_LAST)
        elif inner.attr is None and (test := _predicate(pred)) is not None:
            filters.append(test)
        else:
            return None  # other positions, and tests of attributes: XPath answers
        rest = rest[close + 1:].strip()
    attr = inner.attr
    if rest:
        m = _TRAILING_ATTR.fullmatch(rest)
        if m is None or attr is not None:
            return None
        attr = m[1]
    return _Plan(inner.members, attr, tuple(filters))


_POSITION = re.compile(r"[0-9]+")
_TRAILING_ATTR = re.compile(r"/\s*@([A-Za-z_][\w-]*)")


def _predicate(text: str) -> Pred | None:
    """Parse `X`, `not(X)`, `X = "a"`, `X != 'a'` and `or` of those, X a planned path; None for anything else (XPath answers)."""
    negated = text.startswith("not") and text[3:].lstrip()[:1] == "(" and _closing(text, text.index("(")) == len(text) - 1
    if negated:
        text = text[text.index("(") + 1:-1].strip()
    terms: list[Term] = []
    for part in _split_or(text):
        term = _term(part.strip())
        if term is None:
            return None
        terms.append(term)
    return (negated, tuple(terms))


def _term(text: str) -> Term | None:
    """One alternative: a path (does it select anything), or a path compared with a string literal."""
    at = next((i for i, ch, depth in _scan(text) if ch == "=" and not depth), -1)
    if at < 0:
        plan = _plan(text)
        return (plan, None, "") if plan is not None else None
    equal = text[at - 1:at] != "!"
    left = text[:at] if equal else text[:at - 1]
    right = text[at + 1:].strip()
    if left[-1:] in ("<", ">") or not _LITERAL.fullmatch(right):
        return None  # `<=`, `>=`, numbers, paths on both sides: XPath answers
    plan = _plan(left.strip())
    return (plan, "=" if equal else "!=", right[1:-1]) if plan is not None else None


def _split_or(text: str) -> list[str]:
    """*text* split at each ` or ` outside brackets and string literals."""
    parts = []
    last = 0
    for i, ch, depth in _scan(text):
        if not depth and ch in " \t\r\n" and i >= last and text[i + 1:i + 3] == "or" and text[i + 3:i + 4] in (" ", "\t", "\r", "\n"):
            parts.append(text[last:i])
            last = i + 3
    parts.append(text[last:])
    return parts


def _member(text: str) -> _Member | None:
    """Split one union member into start, `..` count, steps and attribute; None when it is anything else."""
    if text == ".":
        return _Member(_REL, 0, (), None)
    start = _REL
    descend = False
    if text.startswith("//"):
        start, text = _DOC, text[2:]
    elif text.startswith("/"):
        start, text = _ROOT, text[1:]
    elif text.startswith(".//"):
        descend, text = True, text[3:]
    parts = _split(text, "/")
    ups = 0
    if start == _REL and not descend:
        while ups < len(parts) and parts[ups] == "..":
            ups += 1
        parts = parts[ups:]
    attr = None
    if parts and (m := _ATTR.fullmatch(parts[-1])):
        attr = m[1]
        parts = parts[:-1]
    steps: list[Step] = []
    for part in parts:
        if part == "" and not descend and (steps or ups):
            descend = True  # `a//b`, `..//b`
            continue
        step = _step(part, descend)
        if step is None:
            return None  # other predicates, axes, functions, `.` or `..` past the start: the XPath engine
        steps.append(step)
        descend = False
    if descend:
        return None  # `a//@V`, `a//`: a descendant step with no name test
    if start != _REL and (not steps or steps[0][0] == _SELF):
        return None  # `/`, `//@V`: the document node itself; `/self::x`
    if start == _REL and not ups and not steps and attr is None:
        return None
    return _Member(start, ups, tuple(steps), attr)


def _step(text: str, descend: bool) -> Step | None:
    """One step: an optional `self::`, a name test, then predicates that test whether a path selects anything (`[p:X]`, `[not(@a)]`)."""
    axis = _DESCENDANT if descend else _CHILD
    if text.startswith("self::"):
        if descend:
            return None  # `a//self::b` is descendant-or-self: rare, XPath answers
        axis, text = _SELF, text[6:]
    m = _STEP.match(text)
    if m is None:
        return None
    if m["prefix"]:
        test: NameTest = (m["prefix"], m["name"])
    else:
        test = (None, "*" if m["any"] else (m["dq"] or m["sq"]))
    preds: list[Pred] = []
    pos = m.end()
    while pos < len(text):
        end = _closing(text, pos) if text[pos] == "[" else -1
        if end < 0:
            return None
        pred = _predicate(text[pos + 1:end].strip())
        if pred is None:
            return None  # a position, a function, `and`: XPath answers
        preds.append(pred)
        pos = end + 1
    return (axis, (test,), tuple(preds))


_OPEN = {"[": "]", "(": ")"}


def _scan(text: str, pos: int = 0) -> Any:
    """(index, character, bracket depth after it) of each character of *text* from *pos* outside string literals."""
    depth = 0
    quote = ""
    for i in range(pos, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
            continue
        if ch in "\"'":
            quote = ch
            continue
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        yield i, ch, depth


def _closing(text: str, pos: int) -> int:
    """The index of the bracket that closes the one at *pos*; -1 when none does."""
    for i, ch, depth in _scan(text, pos):
        if not depth:
            return i if _OPEN[text[pos]] == ch else -1
    return -1


def _split(text: str, sep: str) -> list[str]:
    """*text* split at each *sep* outside brackets and string literals."""
    parts = []
    last = 0
    for i, ch, depth in _scan(text):
        if ch == sep and not depth:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return parts


Function = tuple[str, tuple[Any, ...]]
"""A string function the XPath engine need not evaluate: (name, arguments); an argument is ("", literal), ("path", _Plan) or a Function."""

_ARITY = {"local-name": (0, 0), "normalize-space": (0, 1), "string": (0, 1), "concat": (2, 99), "substring-after": (2, 2), "substring-before": (2, 2)}
_CALL = re.compile(r"([a-z-]+)\s*\(")
_XML_SPACE = re.compile("[ \t\r\n]+")  # XPath's whitespace: not Python's, which also takes NBSP and the like


def _function(text: str) -> Function | None:
    """Parse `normalize-space(.)`, `local-name()`, `concat(po:X/@DN, ":")`, … over literals and planned paths; None for anything else."""
    m = _CALL.match(text)
    if m is None or m[1] not in _ARITY or _closing(text, m.end() - 1) != len(text) - 1:
        return None
    inner = text[m.end():-1].strip()
    args: list[Any] = []
    for arg in (_split(inner, ",") if inner else []):
        arg = arg.strip()
        if _LITERAL.fullmatch(arg):
            args.append(("", arg[1:-1]))
        elif (call := _function(arg)) is not None:
            args.append(call)
        elif (plan := _plan(arg)) is not None:
            args.append(("path", plan))
        else:
            return None  # numbers, other functions, paths only XPath reads
    low, high = _ARITY[m[1]]
    if not low <= len(args) <= high:
        return None
    if not args and m[1] != "local-name":
        args.append(("path", _plan(".")))  # `normalize-space()` is `normalize-space(.)`
    return (m[1], tuple(args))


def _string_selector(fn: Function, bindings: tuple[tuple[str, str], ...]) -> Any:
    """`select(scope)` for a string function: its answer stripped, as the XPath route gives it; None: ask XPath."""
    run = _string_of(fn, bindings)

    def select(scope: XmlScope) -> str | None:
        text = run(scope.node, scope.results)
        return None if text is None else text.strip()

    return select


def _string_of(arg: Any, bindings: tuple[tuple[str, str], ...]) -> Any:
    """Compile one argument into `string(node, results)`: XPath's string value of it, or None when XPath must answer."""
    kind, rest = arg
    if kind == "":
        return lambda node, results: rest
    if kind == "path":
        select = rest.selector(bindings)
        attr = rest.attr

        def first(node: Any, results: dict[Any, Any]) -> str | None:
            found = select(node, results)
            if found is None:
                return None
            for el in found:  # a node set's string value is its first node's, in document order
                if attr is None:
                    return _tostring(el, method="text", encoding="unicode", with_tail=False) if len(el) else el.text or ""
                value = el.get(attr)
                if value is not None:
                    return value  # type: ignore[no-any-return]
            return ""

        return first
    if kind == "local-name":
        return lambda node, results: node.tag.rpartition("}")[2] if node.tag.__class__ is str else None
    parts = [_string_of(a, bindings) for a in rest]
    apply = _APPLY[kind]

    def call(node: Any, results: dict[Any, Any]) -> str | None:
        strings = []
        for part in parts:
            text = part(node, results)
            if text is None:
                return None
            strings.append(text)
        return apply(*strings)

    return call


def _after(text: str, sep: str) -> str | None:
    at = text.find(sep)
    return None if not sep else text[at + len(sep):] if at >= 0 else ""


def _before(text: str, sep: str) -> str | None:
    at = text.find(sep)
    return None if not sep else text[:at] if at >= 0 else ""


_APPLY: dict[str, Callable[..., str | None]] = {
    "normalize-space": lambda text: _XML_SPACE.sub(" ", text).strip(" \t\r\n"),
    "string": lambda text: text,
    "concat": lambda *texts: "".join(texts),
    "substring-after": _after,  # an empty separator: XPath answers
    "substring-before": _before,
}
