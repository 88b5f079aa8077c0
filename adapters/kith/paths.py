"""XPath sources for the mapping language, with namespace prefixes that follow the message's version.

Authors write `mh:MsgInfo/mh:Patient/mh:Ident` and `po:Diagnose/po:Kode/@V`.
A prefix may name several namespace URIs (PLO 1.5 and 1.6 differ only by the
date in the URI); for each document the prefix takes the URI that document
uses, so one mapping serves every version. XPath is compiled once per prefix
binding and cached; the everyday paths (`@V`, `po:Kode/@V`, `../po:X`,
`*[local-name()="Id"]`, `//po:X[po:Y]`, `self::*[not(@a)]`, `po:X[@V = "1"]`,
`(//po:X/@V)[last()]`) skip the XPath engine for a plan of steps over a
per-message index of each element's children, and the string functions
mappings use (`local-name()`, `normalize-space(.)`, `concat(po:X/@DN, ":")`)
for a plan over those; the answers are the same.

An element read as a value is its text, as a `NodeText`: a str that still
knows its element, so `use:` and `each:` can map inside it. Attributes and
text() results are plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lxml import etree

from router.errors import DecodeError

_tostring = etree.tostring


class NodeText(str):
    """An element's text that remembers the element (for nested rules)."""

    __slots__ = ("node",)
    node: Any


def _text(node: Any) -> NodeText:
    """The element's whole text, stripped: a leaf's own text, else every text node below it.

    `tostring(method="text")` joins the same text nodes as `"".join(itertext())`
    (comments and PIs add none) in C, about ten times faster.
    """
    if len(node):  # children (comments and PIs count): join every text below
        out = NodeText(_tostring(node, method="text", encoding="unicode", with_tail=False).strip())
    else:
        text = node.text
        out = NodeText(text.strip() if text else "")
    out.node = node
    return out


def _value(node: Any) -> NodeText | None:
    """The element's text as a value: None when it holds no text, no children and no attributes."""
    value = _text(node)
    return value if value or len(node) or node.attrib else None


_UNREAD = object()  # XmlScope.texts: not read yet in this message
_new_scope = object.__new__


class XmlScope:
    """Where XPaths evaluate: the context node, the document's prefix binding, and what was read."""

    __slots__ = ("root", "node", "bindings", "reads", "_loc", "memo", "results", "texts")

    def __init__(
        self, root: Any, node: Any, bindings: tuple[tuple[str, str], ...], reads: set[Any], loc: str = "",
        results: dict[Any, Any] | None = None, texts: dict[Any, Any] | None = None,
    ) -> None:
        self.root = root
        self.node = node
        self.bindings = bindings  # prefix → namespace URI chosen for this document
        self.reads = reads  # elements whose value was read (held, so their identity stays stable)
        self._loc = loc
        self.memo: dict[object, bool] | None = None  # condition answers in this scope (conditions.py)
        # For this message: XPath answers per (path text, context node), since templates ask
        # the same questions from the same element many times (Forsendelsesstatus in every
        # template); and, under the element itself, the children index of each element a
        # plan stepped down from (_Children).
        self.results: dict[Any, Any] = {} if results is None else results
        # For this message: each element's value as read (_value), made once: a PLO message
        # reads ~280 element values of ~120 elements.
        self.texts: dict[Any, NodeText | None] = {} if texts is None else texts

    # The mapping runtime's scope protocol (shared with HL7 v2) -----------------
    group = None
    segments: dict[str, Any] = {}

    @property
    def value(self) -> Any:
        """The context node (what a nested block maps)."""
        return self.node

    @property
    def value_loc(self) -> str:
        """The context node's position, as an XPath of local names."""
        return self._loc or where(self.node)

    def child(self, *, segments: Any = None, value: Any = None, value_loc: str = "", group: Any = None) -> XmlScope:
        """Return a scope on *group* (an element) or on the element behind *value*."""
        node = group if group is not None else getattr(value, "node", None)
        if node is None:
            return self
        return self._on(node, value_loc)

    def at(self, value: Any, path: Any, index: int) -> XmlScope:
        """Return a scope on the element behind *value*."""
        node = getattr(value, "node", None)
        return self if node is None else self._on(node, "")

    def _on(self, node: Any, loc: str) -> XmlScope:
        """This scope moved to *node*, sharing what the message shares.

        Made without calling the class: the mapping asks for ~80 scopes a PLO
        message, and the call through type and __init__ costs more than the copy.
        """
        scope: XmlScope = _new_scope(XmlScope)
        scope.root = self.root
        scope.node = node
        scope.bindings = self.bindings
        scope.reads = self.reads
        scope._loc = loc
        scope.memo = None
        scope.results = self.results
        scope.texts = self.texts
        return scope


class XmlItem:
    """One value an XPath gives: text (a NodeText for elements) and, for elements, the element.

    Made with raw None for an element that has children: its text, a walk of
    the subtree, is made when first asked; `each:` over elements mostly wants
    only the group.
    """

    __slots__ = ("_raw", "group", "segment", "_node")

    def __init__(self, raw: str | None, node: Any) -> None:
        self._raw = raw
        self._node = node
        self.group = node if raw is None or isinstance(raw, NodeText) else None  # `each:` maps inside elements
        self.segment = None

    @property
    def raw(self) -> str:
        """The value: an attribute's or a string's text, or the element's text as a NodeText."""
        raw = self._raw
        if raw is None:
            raw = self._raw = _text(self._node)
        return raw

    @property
    def location(self) -> str:
        """Where the value sits, as an XPath of local names."""
        return where(self._node) if self._node is not None else ""


def where(node: Any) -> str:
    """Return `/MsgHead/MsgInfo/Patient/Ident[2]/Id` for an element, or `…/@V` for an attribute result."""
    if isinstance(node, _AttrRef):
        return f"{where(node.element)}/@{node.name}"
    if isinstance(node, etree._ElementUnicodeResult):  # an attribute or text() result
        parent = node.getparent()
        base = where(parent) if parent is not None else ""
        return f"{base}/@{node.attrname}" if node.is_attribute else f"{base}/text()"
    if node is None or node.tag.__class__ is not str:
        return "/"
    return _labeller({}, lambda parent: list(parent.iterchildren(etree.Element)))(node)  # type: ignore[no-any-return]


def _labeller(labels: dict[Any, str], children: Any) -> Any:
    """Return `label(element)`: `/MsgHead/MsgInfo/Patient/Ident[2]/Id`, local names indexed where element siblings share one.

    *labels* keeps the labels made so far (an element's is its parent's and
    one step) and may be seeded with a top element's label to stop there;
    `children(parent)` gives a parent's element children in order.
    """
    names_of: dict[Any, list[str]] = {}

    def label(node: Any) -> str:
        known = labels.get(node)
        if known is None:
            parent = node.getparent()
            name = node.tag.rpartition("}")[2]
            if parent is None:
                known = "/" + name
            else:
                siblings = children(parent)
                names = names_of.get(parent)
                if names is None:
                    names = names_of[parent] = [c.tag.rpartition("}")[2] for c in siblings]
                if names.count(name) > 1:
                    known = f"{label(parent)}/{name}[{names[:siblings.index(node)].count(name) + 1}]"
                else:
                    known = f"{label(parent)}/{name}"
            labels[node] = known
        return known

    return label


class XPathSyntaxError(ValueError):
    """An XPath does not compile or uses an undeclared prefix."""


_AXIS = re.compile(r"[A-Za-z-]+::")
_PREFIX = re.compile(r"(?<![\w:@-])([A-Za-z_][\w.-]*):(?!:)")
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


class _AttrRef:
    """Where an attribute value came from (for positions only)."""

    __slots__ = ("element", "name")

    def __init__(self, element: Any, name: str) -> None:
        self.element = element
        self.name = name


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
        return found

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
        return tag == key
    if kind == _LOCAL:
        return tag.rpartition("}")[2] == key
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
    bound = [(axis, filt, _iter_tags(filt) if axis == _DESCENDANT else None, _tests(preds, uris)) for (axis, filt), (_, _, preds) in zip(steps, member.steps)]
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
            found: Sequence[Any] = (node,)
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
                found = _keep(found, first_preds, results)  # type: ignore[assignment]
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
                found = _keep(found, preds, results)  # type: ignore[assignment]
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
            return found  # type: ignore[no-any-return]
        if len(found) != 1:  # children of elements none of which holds another: in document order
            return _children(found, (then, then_key), False, node, results) if found else found
        el = found[0]
        kids = results.get(el)
        if kids is None:
            kids = results[el] = children_index(el)
        return kids.get(then_key, _NONE) if then == _EXACT else _matching(kids, then, then_key)  # type: ignore[no-any-return]

    return near


def _children(found: Sequence[Any], filt: StepFilter, nested: bool, node: Any, results: dict[Any, Any]) -> Sequence[Any]:
    """The children of *found* one child step selects, in document order (*nested*: *found* may hold an element and one below it)."""
    kind, key = filt
    if len(found) == 1:
        el = found[0]
        kids = results.get(el)
        if kids is None:
            kids = results[el] = children_index(el)
        return kids.get(key, _NONE) if kind == _EXACT else _matching(kids, kind, key)  # type: ignore[no-any-return]
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


class _Bound:
    """A plan bound to one prefix binding: `select(scope)`; the tag when the plan is one child step (`po:Kode/@V`);
    and for a relative plan, the selector of (node, results) `select` calls, which readers call without it."""

    __slots__ = ("bindings", "select", "tag", "run")

    def __init__(self, bindings: Any, select: Any, tag: str | None, run: Any = None) -> None:
        self.bindings = bindings
        self.select = select
        self.tag = tag
        self.run = run


_UNBOUND = _Bound(None, None, None)


def _relative(select: Any) -> Any:
    """`select(scope)` from a selector of (node, results)."""
    return lambda scope: select(scope.node, scope.results)


def _once(key: Any, select: Any) -> Any:
    """`select(scope)` for an absolute plan: answered once per message and kept in the results, as XPath's answer is (_cached)."""

    def select_once(scope: XmlScope) -> Sequence[Any] | None:
        results = scope.results
        found = results.get(key, results)  # the dict itself marks "not asked yet": None is an answer
        if found is results:
            found = results[key] = select(scope.node, results)
        return found  # type: ignore[no-any-return]

    return select_once


class XmlPath:
    """A compiled XPath source. Paths that select elements iterate like groups under `each:`.

    `values(scope)` and the function `reader()` returns are what the mapping
    engine calls per rule (~600 times per PLO message): each answers in one
    call, without XmlItems, and a path of one child step (`po:Kode/@V`) looks
    its elements up in the children index without a further call.
    """

    __slots__ = ("text", "_prefixes", "_choices", "_by_binding", "_plan", "_fn", "_bound", "_last_xpath", "_absolute", "_literal", "values")

    segment = None
    datatype = None
    seg_rep = None
    field_no = None
    rep = None
    comp = 1
    sub = 0
    is_segment = False
    is_leaf = True
    multi_valued = True  # a variadic function (lines, join) gets every node the XPath selects

    def __init__(self, text: str, prefixes: dict[str, tuple[str, ...]]) -> None:
        self.text = text
        scan = _AXIS.sub(" ", re.sub(r"'[^']*'|\"[^\"]*\"", " ", text))  # literals and axes (`parent::`) hide no prefixes
        used = {p for p in _PREFIX.findall(scan) if p not in ("http", "https", "urn")}
        unknown = sorted(used - set(prefixes))
        if unknown:
            raise XPathSyntaxError(f"{text!r} uses the undeclared namespace prefix {unknown[0]!r} (declare it in namespaces.yaml)")
        self._prefixes = tuple(sorted(used))
        self._choices = prefixes
        # Per document binding: the compiled XPath, or under ("plan", binding) the plan's _Bound.
        self._by_binding: dict[Any, Any] = {}
        self._plan = _plan(text)
        self._fn = _function(text) if self._plan is None else None  # a string function over paths: its answer, or None
        self._bound: _Bound = _UNBOUND  # the plan for the last binding seen
        self._last_xpath: tuple[Any, Any] | None = None  # (binding, compiled XPath) of the last lookup
        # Absolute paths and plain literals (`""`) give one answer per message, whatever the context.
        # Every union member must start at the document: `//po:X | po:Y` depends on the context node.
        self._absolute = all(part.lstrip(" (").startswith("/") for part in text.split("|")) or _LITERAL.fullmatch(text) is not None
        self._literal = text[1:-1].strip() if _LITERAL.fullmatch(text) else None  # a string XPath would give as is
        for binding in _all_bindings(self._prefixes, prefixes):
            _compiled(text, binding)  # fail at load time, not per message
        self.values = self._make_values()

    @property
    def is_group(self) -> bool:
        """Element paths iterate as groups under `each:`; attribute and text paths do not."""
        return not re.search(r"(@[\w:-]+|text\(\)|string\(.*\))\s*$", self.text)

    def starred(self) -> XmlPath:
        """XPath already selects every match: `each:` needs no change."""
        return self

    def resolve(self, scope: XmlScope) -> list[XmlItem]:
        """Evaluate against the context node; empty values are left out."""
        if self._plan is not None:
            found = self._select(scope)
            if found is not None:
                return self._items(scope, found)
        elif self._fn is not None:
            text = self._select(scope)
            if text is not None:
                return [XmlItem(text, None)] if text else []
        return self._cached(scope)

    def _selector(self) -> Any:
        """Return `select(scope)`: the elements the path selects there, from the children index where one tag does; None: ask XPath."""
        bind = self._bind

        def select(scope: XmlScope) -> Sequence[Any] | None:
            bound = self._bound
            if bound.bindings is not scope.bindings:
                bound = bind(scope.bindings)
            tag = bound.tag
            if tag is None:
                run = bound.run
                return run(scope.node, scope.results) if run is not None else bound.select(scope)  # type: ignore[no-any-return]
            node = scope.node
            results = scope.results
            kids = results.get(node)
            if kids is None:
                kids = results[node] = children_index(node)
            return kids.get(tag, _NONE)  # type: ignore[no-any-return]

        return select

    def _make_values(self) -> Any:
        """Return `values(scope)`: the raw values in order (no XmlItem per value: conditions ask this often)."""
        literal = self._literal
        if literal is not None:
            answer = [literal] if literal else []
            return lambda scope: list(answer)
        plan = self._plan
        cached = self._cached
        if plan is None:
            if self._fn is None:
                return lambda scope: [item.raw for item in cached(scope)]
            string = self._select

            def string_values(scope: XmlScope) -> list[str]:
                text = string(scope)
                if text is None:
                    return [item.raw for item in cached(scope)]
                return [text] if text else []

            return string_values
        select = self._selector()
        attr = plan.attr

        if attr is None:

            def values(scope: XmlScope) -> list[str]:
                found = select(scope)
                if found is None:
                    return [item.raw for item in cached(scope)]
                reads = scope.reads
                texts = scope.texts
                out: list[str] = []
                for el in found:
                    reads.add(el)
                    value = texts.get(el, _UNREAD)
                    if value is _UNREAD:
                        value = texts[el] = _value(el)
                    if value is not None:
                        out.append(value)
                return out

            return values

        def attr_values(scope: XmlScope) -> list[str]:
            found = select(scope)
            if found is None:
                return [item.raw for item in cached(scope)]
            reads = scope.reads
            out: list[str] = []
            for el in found:
                text = el.get(attr)
                if text and (text := text.strip()):
                    reads.add(el)
                    out.append(text)
            return out

        return attr_values

    def reader(self) -> Any:
        """Return a function reading the first value, with the same reads recorded as `resolve`.

        Mapping rules read ~300 single values per PLO message: each reader does
        its work in one call, without building XmlItems.
        """
        literal = self._literal
        if literal is not None:
            answer = literal or None
            return lambda scope: answer
        plan = self._plan
        if plan is None:
            if self._fn is None:
                return self._read_xpath
            string = self._select
            read_xpath = self._read_xpath

            def read_string(scope: XmlScope) -> str | None:
                text = string(scope)
                return read_xpath(scope) if text is None else text or None

            return read_string
        member = plan.members[0]
        if len(plan.members) == 1 and member.start == _REL and not member.ups and not member.steps and not plan.filters:
            return _self_reader if plan.attr is None else _attr_reader(plan.attr)
        attr = plan.attr
        read_xpath = self._read_xpath

        select = self._selector()

        if attr is None:

            def read(scope: XmlScope) -> str | None:
                found = select(scope)
                if found is None:
                    return read_xpath(scope)
                reads = scope.reads
                texts = scope.texts
                first = None
                for el in found:
                    reads.add(el)  # every element the path selects counts as read, as in resolve
                    if first is None:
                        first = texts.get(el, _UNREAD)
                        if first is _UNREAD:
                            first = texts[el] = _value(el)
                return first

            return read

        def read_attr(scope: XmlScope) -> str | None:
            found = select(scope)
            if found is None:
                return read_xpath(scope)
            reads = scope.reads
            first = None
            for el in found:
                text = el.get(attr)
                if text and (text := text.strip()):
                    reads.add(el)
                    if first is None:
                        first = text
            return first

        return read_attr

    def _read_xpath(self, scope: XmlScope) -> str | None:
        items = self._cached(scope)
        return items[0].raw if items else None

    def _select(self, scope: XmlScope) -> Sequence[Any] | None:
        """The elements the plan reaches from the context node; None when `..` leaves the root element.

        The result may be a children index's own list: callers only iterate it.
        """
        bound = self._bound
        if bound.bindings is not scope.bindings:
            bound = self._bind(scope.bindings)
        return bound.select(scope)  # type: ignore[no-any-return]

    def _bind(self, bindings: tuple[tuple[str, str], ...]) -> _Bound:
        """The plan for *bindings*, remembered as the last binding seen (`_bound`).

        Readers test `_bound.bindings` by identity before calling this: a
        binding is a tuple of ~40 pairs whose hash Python does not cache, so a
        dict lookup on every read would cost more than the read. bind() returns
        one shared tuple per distinct binding, so the identity test nearly
        always answers. One attribute holds the binding and what it gives, so a
        thread never pairs one binding with another's selector.
        """
        bound = self._by_binding.get(("plan", bindings))
        if bound is None and self._fn is not None:
            bound = self._by_binding[("plan", bindings)] = _Bound(bindings, _string_selector(self._fn, bindings), None)
        if bound is None:
            plan = self._plan
            assert plan is not None  # noqa: S101 - only plans and string functions are bound
            select = plan.selector(bindings)
            tag = None
            member = plan.members[0]
            if len(plan.members) == 1 and not plan.filters and member.start == _REL and not member.ups and len(member.steps) == 1 and member.steps[0][0] == _CHILD and not member.steps[0][2]:
                kind, key = _filter(member.steps[0][1], dict(bindings))
                tag = key if kind == _EXACT else None
            run = None if self._absolute else select
            select = _once((self.text, _SELECTED), select) if self._absolute else _relative(select)
            bound = self._by_binding[("plan", bindings)] = _Bound(bindings, select, tag, run)
        self._bound = bound
        return bound  # type: ignore[no-any-return]

    def _items(self, scope: XmlScope, found: Sequence[Any]) -> list[XmlItem]:
        """XmlItems for the plan's elements (their text) or their attribute, as the XPath route makes them."""
        attr = self._plan.attr  # type: ignore[union-attr]  # only called with a plan
        reads = scope.reads
        out = []
        if attr is None:
            for el in found:
                reads.add(el)
                if len(el):  # children (comments count): kept whatever its text, which is made when asked
                    out.append(XmlItem(None, el))
                    continue
                value = _text(el)
                if value or el.attrib:  # a coded element (CV) is all attributes
                    out.append(XmlItem(value, el))
            return out
        for el in found:
            text = el.get(attr)
            if text and (text := text.strip()):
                reads.add(el)
                out.append(XmlItem(text, _AttrRef(el, attr)))
        return out

    def _cached(self, scope: XmlScope) -> list[XmlItem]:
        """The XPath engine's answer, kept per (text, context node) for the rest of the message.

        Keyed by the text, not this object: templates compile the same path
        once each (`//po:InformasjonOmForsendelsen/…` in every PLO template).
        """
        key = (self.text, None if self._absolute else scope.node)  # absolute paths give one answer per message
        cached = scope.results.get(key)
        if cached is None:
            cached = scope.results[key] = self._evaluate(scope)
        return cached

    def _evaluate(self, scope: XmlScope) -> list[XmlItem]:
        last = self._last_xpath
        if last is not None and last[0] is scope.bindings:
            xpath = last[1]
        else:
            xpath = self._by_binding.get(scope.bindings)
            if xpath is None:
                binding = tuple((p, u) for p, u in scope.bindings if p in self._prefixes)
                xpath = self._by_binding[scope.bindings] = _compiled(self.text, binding)
            self._last_xpath = (scope.bindings, xpath)  # see _bind: identity first
        try:
            result = xpath(scope.node)
        except etree.XPathEvalError as exc:
            raise DecodeError(f"XPath {self.text!r} failed on this message", location=scope.value_loc) from exc
        if not isinstance(result, list):
            text = str(result).strip() if not isinstance(result, bool) else ("true" if result else "false")
            return [XmlItem(text, None)] if text else []
        out = []
        for node in result:
            if isinstance(node, etree._Element):
                scope.reads.add(node)
                if len(node):
                    out.append(XmlItem(None, node))
                    continue
                value = _text(node)
                if value or len(node) or node.attrib:  # a coded element (CV) is all attributes
                    out.append(XmlItem(value, node))
            else:
                text = str(node).strip()
                if text:
                    parent = node.getparent() if hasattr(node, "getparent") else None
                    if parent is not None:
                        scope.reads.add(parent)
                    out.append(XmlItem(text, node))
        return out


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
                    return value
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
        return apply(*strings)  # type: ignore[no-any-return]

    return call


def _after(text: str, sep: str) -> str | None:
    at = text.find(sep)
    return None if not sep else text[at + len(sep):] if at >= 0 else ""


def _before(text: str, sep: str) -> str | None:
    at = text.find(sep)
    return None if not sep else text[:at] if at >= 0 else ""


_APPLY = {
    "normalize-space": lambda text: _XML_SPACE.sub(" ", text).strip(" \t\r\n"),
    "string": lambda text: text,
    "concat": lambda *texts: "".join(texts),
    "substring-after": _after,  # an empty separator: XPath answers
    "substring-before": _before,
}


def _self_reader(scope: XmlScope) -> str | None:
    """The reader for `.`: the context element's text (NodeText), or None when it holds nothing."""
    node = scope.node
    scope.reads.add(node)
    texts = scope.texts
    value = texts.get(node, _UNREAD)
    if value is _UNREAD:
        value = texts[node] = _value(node)
    return value  # type: ignore[no-any-return]


def _attr_reader(attr: str) -> Any:
    """A reader for `@attr` on the context node: one `get`, no lists."""

    def read(scope: XmlScope) -> str | None:
        node = scope.node
        text = node.get(attr)
        if text and (text := text.strip()):
            scope.reads.add(node)
            return text
        return None

    return read


def _all_bindings(used: tuple[str, ...], prefixes: dict[str, tuple[str, ...]]) -> list[tuple[tuple[str, str], ...]]:
    out: list[tuple[tuple[str, str], ...]] = [()]
    for p in used:
        out = [b + ((p, uri),) for b in out for uri in prefixes[p]]
    return out


@lru_cache(maxsize=4096)
def _compiled(text: str, binding: tuple[tuple[str, str], ...]) -> etree.XPath:
    try:
        return etree.XPath(text, namespaces=dict(binding), smart_strings=True)
    except etree.XPathSyntaxError as exc:
        raise XPathSyntaxError(f"{text!r} is not valid XPath: {exc}") from None


def bind(root: Any, prefixes: dict[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """Choose, for each prefix, the first of its URIs the document uses.

    Equal bindings come back as one shared tuple, so XmlPath can recognise a
    binding by identity (see XmlPath._bind).
    """
    return _binding({el.tag for el in root.iter(etree.Element)}, prefixes)


def message_scope(root: Any, prefixes: dict[str, tuple[str, ...]]) -> XmlScope:
    """The scope a message's mapping starts in: the root element, its prefix binding, nothing read yet.

    What `XmlScope(root, root, bind(root, prefixes), set())` gives, but the one
    walk that finds the namespaces also keeps every element's Python proxy for
    the rest of the message: lxml makes a proxy each time an element is reached
    while none is alive, and the children index, `//` steps and unmapped()
    reach most elements again. It also indexes the elements by tag, which `//x`
    steps read instead of walking the document.
    """
    elements = list(root.iter())  # comments and PIs too: their proxies are made on every walk as well
    by_tag: dict[Any, list[Any]] = {}  # the walk reads every tag anyway; a `//x` step then needs no walk of its own
    for el in elements:
        tag = el.tag
        same = by_tag.get(tag)
        if same is None:
            by_tag[tag] = [el]
        else:
            same.append(el)
    binding = _binding(by_tag, prefixes)
    if root.getparent() is not None:
        return XmlScope(root, root, binding, set())
    # Both are read for answers about the whole document (`//x`, _in_order): only the whole document's will do.
    return XmlScope(root, root, binding, set(), results={_ELEMENTS: elements, _BY_TAG: by_tag})


def _binding(tags: Iterable[Any], prefixes: dict[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """The shared binding for a document whose element tags are *tags* (distinct Clark names: few)."""
    used: set[str] = set()
    namespace_of = _NAMESPACE_OF
    for tag in tags:
        ns: Any = namespace_of.get(tag, _UNREAD)
        if ns is _UNREAD:
            ns = tag[1:].partition("}")[0] if tag.__class__ is str and tag[:1] == "{" else None
            if len(namespace_of) < _MAX_TAGS:
                namespace_of[tag] = ns
        if ns is not None:
            used.add(ns)
    key = (id(prefixes), frozenset(used))
    known = _BY_USE.get(key)
    if known is not None and known[0] is prefixes:  # the entry holds prefixes, so its id is not reused meanwhile
        return known[1]  # type: ignore[no-any-return]
    binding = tuple((p, next((u for u in uris if u in used), uris[0])) for p, uris in sorted(prefixes.items()))
    if len(_BINDINGS) >= _MAX_BINDINGS:
        return _BINDINGS.get(binding, binding)  # odd namespace mixes: correct, just not shared
    binding = _BINDINGS.setdefault(binding, binding)
    _BY_USE[key] = (prefixes, binding)
    return binding


# Every distinct binding seen by this process: a handful, one per mix of standard versions;
# and the binding for each set of namespaces a document used, per prefix table.
_MAX_BINDINGS = 256
_BINDINGS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_BY_USE: dict[tuple[int, frozenset[str]], tuple[Any, tuple[tuple[str, str], ...]]] = {}
# The namespace URI of each tag seen (None: no namespace), so a message's binding costs a lookup per
# distinct tag rather than a slice and a split; the national schemas name a few thousand at most.
_MAX_TAGS = 8192
_NAMESPACE_OF: dict[Any, str | None] = {}


def path_compiler(prefixes: dict[str, tuple[str, ...]]) -> Any:
    """Return `compile_path` for XPath sources with these prefixes."""

    def compile_path(text: str) -> XmlPath:
        return XmlPath(text.strip(), prefixes)

    return compile_path


def unmapped(root: Any, reads: set[Any], results: dict[Any, Any] | None = None) -> list[str]:
    """Name every element with text or a coded value (V) in the payload that no rule read.

    An element counts as read when it, or an element holding it, was read as a
    value (a whole element read as text or mapped by a datatype covers its children).
    One walk that skips what was read; only the leaves it names get a label,
    and a mapped message names few. *results* (the scope's) lends the children
    index the mapping built, so most elements are not asked for children again.
    """
    out: list[str] = []
    results = {} if results is None else results
    walked: dict[Any, list[Any]] = {}  # the element children of each element the walk went into
    label = _labeller({root: "/" + root.tag.rpartition("}")[2]}, walked.__getitem__)
    stack = [root]
    pop = stack.pop
    extend = stack.extend
    while stack:
        el = pop()
        if el in reads:
            continue  # read whole: its children are covered
        if len(el):  # children, maybe only comments and PIs
            kids = results.get(el)
            if kids is None:
                kids = results[el] = children_index(el)
            children = walked[el] = kids[_ALL]
            if children:
                extend(reversed(children))
                continue
        text = el.text
        if ((text and text.strip()) or el.get("V") is not None) and el.tag.rpartition("}")[2] not in _ENVELOPE_ONLY:
            out.append(label(el))
    return out


# Header elements the engine itself reads (ids, dates, types, AppRec addressing).
_ENVELOPE_ONLY = frozenset({"MIGversion", "MsgId", "GenDate", "Type", "IssueDate", "MsgType", "RefToParent", "RefToConversation", "ProcessingStatus", "Ack"})
