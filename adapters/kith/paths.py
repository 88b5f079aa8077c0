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
for a plan over those; the answers are the same. The plans are parsed and run
in _plans.py; this module chooses, per path and binding, which answers.

An element read as a value is its text, as a `NodeText`: a str that still
knows its element, so `use:` and `each:` can map inside it. Attributes and
text() results are plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from lxml import etree

from adapters.kith._plans import _ALL, _BY_TAG, _CALL, _CHILD, _ELEMENTS, _EXACT, _LITERAL, _NONE, _REL, _SELECTED, _closing, _filter, _function, _plan, _scan, _split, _string_selector, children_index
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


_UNREAD: Any = object()  # XmlScope.texts: not read yet in this message (Any: `texts.get(el, _UNREAD)` keeps the value type)
_new_scope = object.__new__


class XmlScope:
    """Where XPaths evaluate: the context node, the document's prefix binding, and what was read."""

    __slots__ = ("_loc", "bindings", "labels", "memo", "node", "reads", "results", "root", "texts")

    def __init__(
        self, root: Any, node: Any, bindings: tuple[tuple[str, str], ...], reads: set[Any], loc: str = "",
        results: dict[Any, Any] | None = None, texts: dict[Any, Any] | None = None, labels: _Labels | None = None,
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
        # For this message: the positions of the elements asked where they sit (value_loc, XmlItem.location).
        self.labels = _Labels() if labels is None else labels

    # The mapping runtime's scope protocol (shared with HL7 v2) -----------------
    group = None
    segments: dict[str, Any] = {}  # noqa: RUF012 - never written: an XML scope has no HL7 v2 segments

    @property
    def value(self) -> Any:
        """The context node (what a nested block maps)."""
        return self.node

    @property
    def value_loc(self) -> str:
        """The context node's position, as an XPath of local names."""
        return self._loc or where(self.node, self.labels)

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
        scope.labels = self.labels
        return scope


class XmlItem:
    """One value an XPath gives: text (a NodeText for elements) and, for elements, the element.

    Made with raw None for an element that has children: its text, a walk of
    the subtree, is made when first asked; `each:` over elements mostly wants
    only the group.
    """

    __slots__ = ("_labels", "_node", "_raw", "group", "segment")

    def __init__(self, raw: str | None, node: Any, labels: _Labels | None = None) -> None:
        self._raw = raw
        self._node = node
        self._labels = labels  # the message's (its scope's), for location
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
        return where(self._node, self._labels) if self._node is not None else ""


def where(node: Any, labels: _Labels | None = None) -> str:
    """Return `/MsgHead/MsgInfo/Patient/Ident[2]/Id` for an element, or `…/@V` for an attribute result.

    *labels* is the message's (its scope's or item's), so the positions of
    elements asked before, and of their parents, are not made again; without
    it the position is made from scratch.
    """
    if isinstance(node, _AttrRef):
        return f"{where(node.element, labels)}/@{node.name}"
    if isinstance(node, etree._ElementUnicodeResult):  # an attribute or text() result
        parent = node.getparent()
        base = where(parent, labels) if parent is not None else ""
        return f"{base}/@{node.attrname}" if node.is_attribute else f"{base}/text()"
    if node is None or node.tag.__class__ is not str:
        return "/"
    return (_Labels() if labels is None else labels).of(node)


class _Labels:
    """Element positions (`/MsgHead/MsgInfo/Patient/Ident[2]/Id`) for one message, each made once.

    Why: the mapping asks where the values it passes on sit (a datatype's
    `use:` gets its item's position), and a position is its parent's plus one
    step; made afresh, each walked to the root and listed the siblings at
    every level again. Only the message's scopes and items hold this, nothing
    module-wide: it is keyed by element proxies, which lxml recycles (and ids
    are reused) once a document is gone, so it must die with its message. It
    holds no scope or results either: the results keep items, items keep
    this, and a cycle would leave every message to the garbage collector.
    """

    __slots__ = ("_children", "_known", "_steps")

    def __init__(self, known: dict[Any, str] | None = None, children: dict[Any, list[Any]] | None = None) -> None:
        # Each element's position; seeded with a top element's, a walk stops there (unmapped).
        self._known: dict[Any, str] = {} if known is None else known
        # A parent's element children where the caller listed them already, else listed here.
        self._children: dict[Any, list[Any]] = {} if children is None else children
        # Per parent: each element child's step (`Ident[2]`, `Id`), made for all its children at once.
        self._steps: dict[Any, dict[Any, str]] = {}

    def of(self, node: Any) -> str:
        """Return the position of *node*, an element (not a comment or PI)."""
        known = self._known.get(node)
        if known is None:
            parent = node.getparent()
            if parent is None:
                known = "/" + node.tag.rpartition("}")[2]
            else:
                steps = self._steps.get(parent)
                if steps is None:
                    children = self._children.get(parent)
                    if children is None:
                        children = list(parent.iterchildren(_ELEMENT))
                    steps = self._steps[parent] = _steps(children)
                known = f"{self.of(parent)}/{steps[node]}"
            self._known[node] = known
        return known


def _steps(children: list[Any]) -> dict[Any, str]:
    """Each element's step under its parent: its local name, indexed (`Ident[2]`) only where element siblings share one."""
    names = [child.tag.rpartition("}")[2] for child in children]
    if len(set(names)) == len(names):
        return dict(zip(children, names))
    total: dict[str, int] = {}
    for name in names:
        total[name] = total.get(name, 0) + 1
    seen: dict[str, int] = {}
    out: dict[Any, str] = {}
    for child, name in zip(children, names):
        if total[name] > 1:
            nth = seen[name] = seen.get(name, 0) + 1
            out[child] = f"{name}[{nth}]"
        else:
            out[child] = name
    return out


class XPathSyntaxError(ValueError):
    """An XPath does not compile or uses an undeclared prefix."""


_AXIS = re.compile(r"[A-Za-z-]+::")
_PREFIX = re.compile(r"(?<![\w:@-])([A-Za-z_][\w.-]*):(?!:)")
class _AttrRef:
    """Where an attribute value came from (for positions only)."""

    __slots__ = ("element", "name")

    def __init__(self, element: Any, name: str) -> None:
        self.element = element
        self.name = name


class _Bound:
    """A plan bound to one prefix binding: `select(scope)`; the tag when the plan is one child step (`po:Kode/@V`);
    and for a relative plan, the selector of (node, results) `select` calls, which readers call without it."""

    __slots__ = ("bindings", "run", "select", "tag")

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

    __slots__ = ("_absolute", "_bound", "_by_binding", "_choices", "_fn", "_last_xpath", "_literal", "_parts", "_plan", "_prefixes", "text", "values")

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
        # A function of paths (`substring(po:X/@V, 1, 10)`, `concat(…)`) answers a string, not nodes:
        # the paths its arguments read, resolved when it is read so the unmapped report counts them.
        self._parts: tuple[XmlPath, ...] = tuple(_argument_paths(text, prefixes)) if self._plan is None else ()
        self.values = self._make_values()

    @property
    def is_group(self) -> bool:
        """Element paths iterate as groups under `each:`; attribute and text paths do not."""
        return not re.search(r"(@[\w:-]+|text\(\)|string\(.*\))\s*$", self.text)

    def starred(self) -> XmlPath:
        """XPath already selects every match: `each:` needs no change."""
        return self

    def entering(self) -> XmlPath:
        """This path for a read whose elements nested rules map (a datatype's `use:`, `each:` with `rules:`, a resource's `from:` or `each:`).

        Why: an element read counts as read whole, its children covered, in the
        unmapped report. Taken as the context of other rules, an element with
        element children is mapped only as far as those rules read it: its
        structured dosing or route, which no rule reads, must still be reported.
        """
        return _EnteringPath(self.text, self._choices)

    def resolve(self, scope: XmlScope) -> list[XmlItem]:
        """Evaluate against the context node; empty values are left out."""
        if self._plan is not None:
            found = self._select(scope)
            if found is not None:
                return self._items(scope, found)
        elif self._fn is not None:
            text = self._select(scope)
            if text is not None:
                self._mark_parts(scope)
                return [XmlItem(text, None)] if text else []
        return self._cached(scope)

    def _mark_parts(self, scope: XmlScope) -> None:
        """Count as read what a function's argument paths select (see `_parts`)."""
        reads = scope.reads
        for part in self._parts:
            for item in part.resolve(scope):
                node = item._node
                if isinstance(node, _AttrRef):
                    reads.add(node.element)
                elif isinstance(node, etree._Element):
                    reads.add(node)
                elif node is not None and (parent := node.getparent()) is not None:  # an attribute or text() result
                    reads.add(parent)

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

            mark = self._mark_parts

            def string_values(scope: XmlScope) -> list[str]:
                text = string(scope)
                if text is None:
                    return [item.raw for item in cached(scope)]
                mark(scope)
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
            mark = self._mark_parts

            def read_string(scope: XmlScope) -> str | None:
                text = string(scope)
                if text is None:
                    return read_xpath(scope)
                mark(scope)
                return text or None

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

    def _select(self, scope: XmlScope) -> Any:
        """The elements the plan reaches from the context node; None when `..` leaves the root element.
        For a string function (`_fn`): its text, or None to ask XPath.

        The result may be a children index's own list: callers only iterate it.
        """
        bound = self._bound
        if bound.bindings is not scope.bindings:
            bound = self._bind(scope.bindings)
        return bound.select(scope)

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
        return bound

    def _items(self, scope: XmlScope, found: Sequence[Any]) -> list[XmlItem]:
        """XmlItems for the plan's elements (their text) or their attribute, as the XPath route makes them."""
        attr = self._plan.attr  # type: ignore[union-attr]  # only called with a plan
        reads = scope.reads
        labels = scope.labels
        out = []
        if attr is None:
            for el in found:
                reads.add(el)
                if len(el):  # children (comments count): kept whatever its text, which is made when asked
                    out.append(XmlItem(None, el, labels))
                    continue
                value = _text(el)
                if value or el.attrib:  # a coded element (CV) is all attributes
                    out.append(XmlItem(value, el, labels))
            return out
        for el in found:
            text = el.get(attr)
            if text and (text := text.strip()):
                reads.add(el)
                out.append(XmlItem(text, _AttrRef(el, attr), labels))
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
        if self._parts:
            self._mark_parts(scope)
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
        labels = scope.labels
        out = []
        for node in result:
            if isinstance(node, etree._Element):
                scope.reads.add(node)
                if len(node):
                    out.append(XmlItem(None, node, labels))
                    continue
                value = _text(node)
                if value or len(node) or node.attrib:  # a coded element (CV) is all attributes
                    out.append(XmlItem(value, node, labels))
            else:
                text = str(node).strip()
                if text:
                    parent = node.getparent() if hasattr(node, "getparent") else None
                    if parent is not None:
                        scope.reads.add(parent)
                    out.append(XmlItem(text, node, labels))
        return out


class _EnteringPath(XmlPath):
    """An XmlPath whose reads record, of the elements it selects, only those without element children (see XmlPath.entering).

    A plan's reads (nearly all) check each element they select as they record it;
    the rest (XPath, `.`) run with a set of their own and keep its leaves.
    """

    __slots__ = ()

    def entering(self) -> XmlPath:
        return self

    def _element_plan(self) -> bool:
        """Whether this path's reads are the plan's own closures over elements (not `.`, not an attribute)."""
        plan = self._plan
        if plan is None or plan.attr is not None:
            return False
        member = plan.members[0]
        return not (len(plan.members) == 1 and member.start == _REL and not member.ups and not member.steps and not plan.filters)

    def reader(self) -> Any:
        if not self._element_plan():
            return _entered(super().reader())
        select = self._selector()
        read_xpath = self._read_xpath

        def read(scope: XmlScope) -> str | None:
            found = select(scope)
            if found is None:
                return read_xpath(scope)
            reads = scope.reads
            texts = scope.texts
            first = None
            for el in found:
                if not len(el) or next(el.iterchildren(_ELEMENT), None) is None:
                    reads.add(el)
                if first is None:
                    first = texts.get(el, _UNREAD)
                    if first is _UNREAD:
                        first = texts[el] = _value(el)
            return first

        return read

    def _make_values(self) -> Any:
        if not self._element_plan():
            return _entered(super()._make_values())
        select = self._selector()
        cached = self._cached

        def values(scope: XmlScope) -> list[str]:
            found = select(scope)
            if found is None:
                return [item.raw for item in cached(scope)]
            reads = scope.reads
            texts = scope.texts
            out: list[str] = []
            for el in found:
                if not len(el) or next(el.iterchildren(_ELEMENT), None) is None:
                    reads.add(el)
                value = texts.get(el, _UNREAD)
                if value is _UNREAD:
                    value = texts[el] = _value(el)
                if value is not None:
                    out.append(value)
            return out

        return values

    def _items(self, scope: XmlScope, found: Sequence[Any]) -> list[XmlItem]:
        """XmlPath._items for elements, recording only the leaves."""
        if self._plan.attr is not None:  # type: ignore[union-attr]  # only called with a plan
            return super()._items(scope, found)
        reads = scope.reads
        labels = scope.labels
        out = []
        for el in found:
            if len(el):
                if next(el.iterchildren(_ELEMENT), None) is None:
                    reads.add(el)
                out.append(XmlItem(None, el, labels))
                continue
            reads.add(el)
            value = _text(el)
            if value or el.attrib:
                out.append(XmlItem(value, el, labels))
        return out

    def _cached(self, scope: XmlScope) -> list[XmlItem]:
        """XmlPath's XPath answer, its reads kept to the leaves, cached under a key of its own: a plain read of the same text records its own."""
        key = (_ENTERED, self.text, None if self._absolute else scope.node)
        cached: list[XmlItem] | None = scope.results.get(key)
        if cached is None:
            cached = scope.results[key] = _entered(self._evaluate)(scope)
        if self._parts:
            self._mark_parts(scope)
        return cached


_ELEMENT = etree.Element  # iterchildren(_ELEMENT): element children only, not comments or PIs
_ENTERED = object()  # XmlScope.results: the key part that keeps an entering read's XPath answers apart


def _entered(read: Any) -> Any:
    """*read* (scope → answer), recording of what it reads only the elements without element children."""

    def read_entering(scope: XmlScope) -> Any:
        reads = scope.reads
        taken = scope.reads = set()
        try:
            return read(scope)
        finally:
            scope.reads = reads
            for el in taken:
                if not len(el) or next(el.iterchildren(_ELEMENT), None) is None:  # a leaf (its comments aside)
                    reads.add(el)

    return read_entering


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
            return text  # type: ignore[no-any-return]
        return None

    return read


def _argument_paths(text: str, prefixes: dict[str, tuple[str, ...]]) -> list[XmlPath]:
    """The paths an expression that is no path reads (`substring(po:X/@V, 1, 10)`: `po:X/@V`; `9 * (po:A = "true")`: `po:A`); none for a path."""
    terms = _terms(text)
    out: list[XmlPath] = []
    if terms == [text.strip()]:
        return out  # a path of its own (`(po:X | po:Y)[1]`): the XPath engine's answer marks what it selects
    for term in terms:
        try:
            out.append(XmlPath(term, prefixes))
        except XPathSyntaxError:
            continue
    return out


def _terms(expr: str) -> list[str]:
    """The location paths of *expr*: function arguments opened, operators split, literals and numbers left out."""
    expr = expr.strip()
    if not expr or _LITERAL.fullmatch(expr) or _NUMBER.fullmatch(expr):
        return []
    call = _CALL.match(expr)
    if call is not None and _closing(expr, call.end() - 1) == len(expr) - 1:
        if call[1] == "count":
            return []  # how many there are maps none of what they hold
        inner = expr[call.end():-1]
        return [term for arg in (_split(inner, ",") if inner.strip() else []) for term in _terms(arg)]
    if expr[0] == "(" and _closing(expr, 0) == len(expr) - 1:
        return _terms(expr[1:-1])
    masked = ["\0"] * len(expr)  # what lies inside brackets or literals is no operator of this expression
    for i, ch, depth in _scan(expr):
        if not depth and ch not in "])":
            masked[i] = ch
    cuts = [m.span() for m in _OPERATOR.finditer("".join(masked))]
    if not cuts:
        return [expr]
    out: list[str] = []
    last = 0
    for begin, finish in cuts:
        out += _terms(expr[last:begin])
        last = finish
    return out + _terms(expr[last:])


_NUMBER = re.compile(r"\s*-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")  # `.` is the context node, no number
_OPERATOR = re.compile(r"\s(?:or|and|div|mod)\s|!=|<=|>=|=|<|>|\s[*+-]\s|\|")


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
        return known[1]
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
    value (a whole element read as text covers its children). An element other
    rules map inside (a datatype's `use:`, `each:` with `rules:`, a resource's
    `from:`) or a condition only tests covers none of its element children.
    One walk that skips what was read; only the leaves it names get a label,
    and a mapped message names few. *results* (the scope's) lends the children
    index the mapping built, so most elements are not asked for children again.
    """
    out: list[str] = []
    results = {} if results is None else results
    walked: dict[Any, list[Any]] = {}  # the element children of each element the walk went into
    label = _Labels({root: "/" + root.tag.rpartition("}")[2]}, walked).of
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
