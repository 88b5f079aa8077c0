"""XPath sources for the mapping language, with namespace prefixes that follow the message's version.

Authors write `mh:MsgInfo/mh:Patient/mh:Ident` and `po:Diagnose/po:Kode/@V`.
A prefix may name several namespace URIs (PLO 1.5 and 1.6 differ only by the
date in the URI); for each document the prefix takes the URI that document
uses, so one mapping serves every version. XPath is compiled once per prefix
binding and cached; the everyday paths (`@V`, `po:Kode/@V`, `../po:X`,
`*[local-name()="Id"]`) skip the XPath engine for a plan of child steps over a
per-message index of each element's children, with the same answers.

An element read as a value is its text, as a `NodeText`: a str that still
knows its element, so `use:` and `each:` can map inside it. Attributes and
text() results are plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lxml import etree

from router.errors import DecodeError


class NodeText(str):
    """An element's text that remembers the element (for nested rules)."""

    __slots__ = ("node",)
    node: Any


def _text(node: Any) -> NodeText:
    """The element's whole text, stripped; a leaf's own text needs no itertext walk."""
    if len(node):  # children (comments and PIs count): join every text below
        out = NodeText("".join(node.itertext()).strip())
    else:
        text = node.text
        out = NodeText(text.strip() if text else "")
    out.node = node
    return out


class XmlScope:
    """Where XPaths evaluate: the context node, the document's prefix binding, and what was read."""

    __slots__ = ("root", "node", "bindings", "reads", "_loc", "memo", "results")

    def __init__(self, root: Any, node: Any, bindings: tuple[tuple[str, str], ...], reads: set[Any], loc: str = "", results: dict[Any, Any] | None = None) -> None:
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
        return XmlScope(self.root, node, self.bindings, self.reads, value_loc, self.results)

    def at(self, value: Any, path: Any, index: int) -> XmlScope:
        """Return a scope on the element behind *value*."""
        return self.child(value=value)


class XmlItem:
    """One value an XPath gives: text (a NodeText for elements) and, for elements, the element."""

    __slots__ = ("raw", "group", "segment", "_node")

    def __init__(self, raw: str, node: Any) -> None:
        self.raw = raw
        self._node = node
        self.group = node if isinstance(raw, NodeText) else None  # `each:` maps inside elements
        self.segment = None

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
    parts = []
    while node is not None and isinstance(node.tag, str):
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if isinstance(c.tag, str) and etree.QName(c).localname == name]
            parts.append(f"{name}[{same.index(node) + 1}]" if len(same) > 1 else name)
        else:
            parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


class XPathSyntaxError(ValueError):
    """An XPath does not compile or uses an undeclared prefix."""


_AXIS = re.compile(r"[A-Za-z-]+::")
_PREFIX = re.compile(r"(?<![\w:@-])([A-Za-z_][\w.-]*):(?!:)")
_NAME = r"[A-Za-z_][\w.-]*"
# One child step a plan can take: `p:Name`, `*[local-name()="Name"]` or `*`.
_STEP = re.compile(rf"(?P<prefix>{_NAME}):(?P<name>{_NAME})|\*\[local-name\(\)\s*=\s*(?:\"(?P<dq>{_NAME})\"|'(?P<sq>{_NAME})')\]|(?P<any>\*)")
_ATTR = re.compile(r"@([A-Za-z_][\w-]*)")
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")

NameTest = tuple[str | None, str]
"""(prefix, local name) of a child step; prefix None is any namespace, and ``(None, "*")`` any element."""


class _AttrRef:
    """Where an attribute value came from (for positions only)."""

    __slots__ = ("element", "name")

    def __init__(self, element: Any, name: str) -> None:
        self.element = element
        self.name = name


@dataclass(frozen=True, slots=True)
class _Plan:
    """A path read without the XPath engine: `..` steps up, child steps down, an optional attribute.

    Most mapping paths are `@V`, `.`, `po:Kode/@V`, `*[local-name()="Id"]` or
    `../po:X`: an XPath call costs several µs, a lookup in the children index
    (_Children) a fraction of one. Each child step holds one or more name tests, because a union such as
    `mh:Id|fk1:Id|*[local-name()="Id"]` differs only in its last step. Children
    are visited in order from parents that are themselves in document order and
    never nested, so the result is in document order without duplicates: what
    XPath gives for the same text.
    """

    ups: int
    steps: tuple[tuple[NameTest, ...], ...]
    attr: str | None

    def filters(self, bindings: tuple[tuple[str, str], ...]) -> tuple[StepFilter, ...]:
        """Each child step as a filter for one prefix binding (see StepFilter)."""
        uris = dict(bindings)
        return tuple(_filter(step, uris) for step in self.steps)


StepFilter = tuple[int, Any]
"""A child step bound to a document: (_EXACT, "{uri}Name"), (_LOCAL, "Name"), (_ANY, None) or (_MIXED, (tags, local names))."""
_EXACT, _LOCAL, _ANY, _MIXED = range(4)


def _filter(step: tuple[NameTest, ...], uris: dict[str, str]) -> StepFilter:
    exact = frozenset(f"{{{uris[prefix]}}}{name}" for prefix, name in step if prefix is not None)
    local = frozenset(name for prefix, name in step if prefix is None)  # local-name() tests: any namespace or none
    if "*" in local:
        return (_ANY, None)
    if len(step) > 1:
        return (_MIXED, (exact, local))
    return (_EXACT, next(iter(exact))) if exact else (_LOCAL, next(iter(local)))


def _plan(text: str) -> _Plan | None:
    """Return the plan for *text*, or None when only the XPath engine can read it."""
    members = [_member(part.strip()) for part in text.split("|")]
    if any(m is None for m in members):
        return None
    ups, steps, attr = members[0]  # type: ignore[misc]  # checked above
    if len(members) == 1:
        return _Plan(ups, steps, attr)
    if not steps:
        return None
    last: list[NameTest] = []
    for m_ups, m_steps, m_attr in members:  # type: ignore[misc]
        if m_ups != ups or m_attr != attr or len(m_steps) != len(steps) or m_steps[:-1] != steps[:-1]:
            return None  # members that differ before their last step may interleave: XPath orders them
        last.extend(test for test in m_steps[-1] if test not in last)
    return _Plan(ups, (*steps[:-1], tuple(last)), attr)


def _member(text: str) -> tuple[int, tuple[tuple[NameTest, ...], ...], str | None] | None:
    """Split one union member into (`..` count, child steps, attribute); None when it is anything else."""
    if text == ".":
        return 0, (), None
    parts = text.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    parts = parts[ups:]
    attr = None
    if parts and (m := _ATTR.fullmatch(parts[-1])):
        attr = m[1]
        parts = parts[:-1]
    steps: list[tuple[NameTest, ...]] = []
    for part in parts:
        m = _STEP.fullmatch(part)
        if m is None:
            return None  # absolute, `//`, predicates, axes, functions: the XPath engine
        if m["prefix"]:
            steps.append(((m["prefix"], m["name"]),))
        else:
            steps.append(((None, "*" if m["any"] else (m["dq"] or m["sq"])),))
    if not ups and not steps and attr is None:
        return None
    return ups, tuple(steps), attr


class XmlPath:
    """A compiled XPath source. Paths that select elements iterate like groups under `each:`."""

    __slots__ = ("text", "_prefixes", "_choices", "_by_binding", "_plan", "_last", "_last_xpath", "_absolute")

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
        # Per document binding: the compiled XPath, or under ("plan", binding) the plan's filters.
        self._by_binding: dict[Any, Any] = {}
        self._plan = _plan(text)
        self._last: tuple[Any, Any] | None = None  # (binding, filters) of the last lookup
        self._last_xpath: tuple[Any, Any] | None = None  # (binding, compiled XPath) of the last lookup
        # Absolute paths and plain literals (`""`) give one answer per message, whatever the context.
        self._absolute = text.lstrip("(").startswith("/") or _LITERAL.fullmatch(text) is not None
        for binding in _all_bindings(self._prefixes, prefixes):
            _compiled(text, binding)  # fail at load time, not per message

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
        return self._cached(scope)

    def values(self, scope: XmlScope) -> list[str]:
        """Return the raw values in order (no XmlItem per value: conditions ask this often)."""
        if self._plan is not None:
            found = self._select(scope)
            if found is not None:
                return _values(scope.reads, found, self._plan.attr)
        return [item.raw for item in self._cached(scope)]

    def reader(self) -> Any:
        """Return a function reading the first value, with the same reads recorded as `resolve`.

        Mapping rules read ~300 single values per PLO message: each reader does
        its work in one call, without building XmlItems.
        """
        plan = self._plan
        if plan is None:
            return self._read_xpath
        if not plan.ups and not plan.steps:
            return _self_reader if plan.attr is None else _attr_reader(plan.attr)
        attr = plan.attr

        def read(scope: XmlScope) -> str | None:
            found = self._select(scope)
            if found is None:
                return self._read_xpath(scope)
            reads = scope.reads
            first = None
            if attr is None:
                for el in found:
                    reads.add(el)  # every element the path selects counts as read, as in resolve
                    if first is None:
                        value = _text(el)
                        if value or len(el) or el.attrib:
                            first = value
                return first
            for el in found:
                text = el.get(attr)
                if text and (text := text.strip()):
                    reads.add(el)
                    if first is None:
                        first = text
            return first

        return read

    def _read_xpath(self, scope: XmlScope) -> str | None:
        items = self._cached(scope)
        return items[0].raw if items else None

    def _select(self, scope: XmlScope) -> Sequence[Any] | None:
        """The elements the plan reaches from the context node; None when `..` leaves the root element.

        The result may be a children index's own list: callers only iterate it.
        """
        plan = self._plan
        node = scope.node
        for _ in range(plan.ups):  # type: ignore[union-attr]  # only called with a plan
            node = node.getparent()
            if node is None:
                return None  # XPath's `..` of the root is the document node: let XPath answer
        last = self._last
        filters = last[1] if last is not None and last[0] is scope.bindings else self._filters(scope.bindings)
        if not filters:
            return (node,)
        results = scope.results
        found: Sequence[Any] = (node,)
        for kind, key in filters:
            if len(found) == 1:
                el = found[0]
                kids = results.get(el)
                if kids is None:
                    kids = results[el] = _Children(el)
                found = kids.by_tag.get(key, _NONE) if kind == _EXACT else kids.matching(kind, key)
            else:
                found = [child for el in found for child in _children(results, el).matching(kind, key)]
        return found

    def _filters(self, bindings: tuple[tuple[str, str], ...]) -> tuple[StepFilter, ...]:
        """The plan's filters for *bindings*, remembered as the last binding seen (`_last`).

        _select tests `_last` by identity before calling this: a binding is a
        tuple of ~40 pairs whose hash Python does not cache, so a dict lookup
        on every read would cost more than the read. bind() returns one shared
        tuple per distinct binding, so the identity test nearly always answers.
        One attribute holds both halves, so a thread never pairs one binding
        with another's filters.
        """
        filters = self._by_binding.get(("plan", bindings))
        if filters is None:
            filters = self._by_binding[("plan", bindings)] = self._plan.filters(bindings)  # type: ignore[union-attr]
        self._last = (bindings, filters)
        return filters  # type: ignore[no-any-return]

    def _items(self, scope: XmlScope, found: Sequence[Any]) -> list[XmlItem]:
        """XmlItems for the plan's elements (their text) or their attribute, as the XPath route makes them."""
        attr = self._plan.attr  # type: ignore[union-attr]  # only called with a plan
        reads = scope.reads
        out = []
        if attr is None:
            for el in found:
                reads.add(el)
                value = _text(el)
                if value or len(el) or el.attrib:  # a coded element (CV) is all attributes
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
            self._last_xpath = (scope.bindings, xpath)  # see _filters: identity first
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


_NONE: tuple[Any, ...] = ()


class _Children:
    """One element's element children, grouped by tag (and by local name when a step asks).

    Built the first time a plan steps down from the element in a message and
    kept in the scope's results: a PLO message asks ~350 child steps of ~55
    parents, and a dict lookup costs a fraction of `iterchildren(tag)`, which
    parses its tag argument on every call.
    """

    __slots__ = ("all", "by_tag", "_by_local")

    def __init__(self, element: Any) -> None:
        everything: list[Any] = []
        by_tag: dict[str, list[Any]] = {}
        for child in element:
            tag = child.tag  # lxml builds this string on every access: once per child
            if isinstance(tag, str):  # comments and PIs are no step's answer
                everything.append(child)
                same = by_tag.get(tag)
                if same is None:
                    by_tag[tag] = [child]
                else:
                    same.append(child)
        self.all = everything
        self.by_tag = by_tag
        self._by_local: dict[str, list[Any]] | None = None

    def matching(self, kind: int, key: Any) -> Sequence[Any]:
        """The children one step filter selects, in document order."""
        if kind == _EXACT:
            return self.by_tag.get(key, _NONE)
        if kind == _LOCAL:
            return self._local().get(key, _NONE)
        if kind == _ANY:
            return self.all
        exact, local = key
        return [c for c in self.all if c.tag in exact or c.tag.rpartition("}")[2] in local]

    def _local(self) -> dict[str, list[Any]]:
        if self._by_local is None:
            by_local: dict[str, list[Any]] = {}
            for child in self.all:
                by_local.setdefault(child.tag.rpartition("}")[2], []).append(child)
            self._by_local = by_local
        return self._by_local


def _children(results: dict[Any, Any], element: Any) -> _Children:
    """The children index of *element* for this message (made on first use)."""
    kids = results.get(element)
    if kids is None:
        kids = results[element] = _Children(element)
    return kids  # type: ignore[no-any-return]


def _self_reader(scope: XmlScope) -> str | None:
    """The reader for `.`: the context element's text (NodeText), or None when it holds nothing."""
    node = scope.node
    scope.reads.add(node)
    value = _text(node)
    return value if value or len(node) or node.attrib else None


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


def _values(reads: set[Any], found: Sequence[Any], attr: str | None) -> list[str]:
    """The raw values `_items` would give for *found*, recording the same reads."""
    out: list[str] = []
    if attr is None:
        for el in found:
            reads.add(el)
            value = _text(el)
            if value or len(el) or el.attrib:
                out.append(value)
        return out
    for el in found:
        text = el.get(attr)
        if text and (text := text.strip()):
            reads.add(el)
            out.append(text)
    return out


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
    binding by identity (see XmlPath._filters).
    """
    tags = {el.tag for el in root.iter(etree.Element)}  # distinct Clark names: few, so splitting out namespaces is cheap
    used = {tag[1:].partition("}")[0] for tag in tags if tag[:1] == "{"}
    binding = tuple((p, next((u for u in uris if u in used), uris[0])) for p, uris in sorted(prefixes.items()))
    if len(_BINDINGS) >= _MAX_BINDINGS:
        return _BINDINGS.get(binding, binding)  # odd namespace mixes: correct, just not shared
    return _BINDINGS.setdefault(binding, binding)


# Every distinct binding seen by this process: a handful, one per mix of standard versions.
_MAX_BINDINGS = 256
_BINDINGS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}


def path_compiler(prefixes: dict[str, tuple[str, ...]]) -> Any:
    """Return `compile_path` for XPath sources with these prefixes."""

    def compile_path(text: str) -> XmlPath:
        return XmlPath(text.strip(), prefixes)

    return compile_path


def unmapped(root: Any, reads: set[Any]) -> list[str]:
    """Name every element with text or a coded value (V) in the payload that no rule read.

    An element counts as read when it, or an element holding it, was read as a
    value (a whole element read as text or mapped by a datatype covers its children).
    One walk, labels built from the parent's, so a large message costs little.
    """
    out: list[str] = []
    stack: list[tuple[Any, str]] = [(root, "/" + root.tag.rpartition("}")[2])]
    while stack:
        el, label = stack.pop()
        if el in reads:
            continue  # read whole: its children are covered
        children = [(c, tag.rpartition("}")[2]) for c in el if isinstance(tag := c.tag, str)]  # (child, local name)
        if not children:
            if ((el.text or "").strip() or el.get("V") is not None) and el.tag.rpartition("}")[2] not in _ENVELOPE_ONLY:
                out.append(label)
            continue
        counts: dict[str, int] = {}
        for _, name in children:
            counts[name] = counts.get(name, 0) + 1
        seen: dict[str, int] = {}
        labelled = []
        for c, name in children:
            if counts[name] > 1:
                seen[name] = seen.get(name, 0) + 1
                labelled.append((c, f"{label}/{name}[{seen[name]}]"))
            else:
                labelled.append((c, f"{label}/{name}"))
        stack.extend(reversed(labelled))
    return out


# Header elements the engine itself reads (ids, dates, types, AppRec addressing).
_ENVELOPE_ONLY = frozenset({"MIGversion", "MsgId", "GenDate", "Type", "IssueDate", "MsgType", "RefToParent", "RefToConversation", "ProcessingStatus", "Ack"})
