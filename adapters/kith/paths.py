"""XPath sources for the mapping language, with namespace prefixes that follow the message's version.

Authors write `mh:MsgInfo/mh:Patient/mh:Ident` and `po:Diagnose/po:Kode/@V`.
A prefix may name several namespace URIs (PLO 1.5 and 1.6 differ only by the
date in the URI); for each document the prefix takes the URI that document
uses, so one mapping serves every version. XPath is compiled once per prefix
binding and cached.

An element read as a value is its text, as a `NodeText`: a str that still
knows its element, so `use:` and `each:` can map inside it. Attributes and
text() results are plain strings.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from lxml import etree

from router.errors import DecodeError


class NodeText(str):
    """An element's text that remembers the element (for nested rules)."""

    __slots__ = ("node",)
    node: Any


def _text(node: Any) -> NodeText:
    out = NodeText("".join(node.itertext()).strip())
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
        # XPath results per (path, context node) for this message: templates ask the same
        # questions from the same element many times (Forsendelsesstatus in every template).
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
_SIMPLE = re.compile(r"^(?:\.|(?P<steps>[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*(?:/[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*)*))?(?:(?:^|/)@(?P<attr>[A-Za-z_][\w-]*))?$")


class _AttrRef:
    """Where an attribute value came from (for positions only)."""

    __slots__ = ("element", "name")

    def __init__(self, element: Any, name: str) -> None:
        self.element = element
        self.name = name
_PREFIX = re.compile(r"(?<![\w:@-])([A-Za-z_][\w.-]*):(?!:)")


class XmlPath:
    """A compiled XPath source. Paths that select elements iterate like groups under `each:`."""

    __slots__ = ("text", "_prefixes", "_choices", "_by_binding", "_simple", "_absolute")

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
        self._by_binding: dict[tuple[tuple[str, str], ...], Any] = {}
        # Most paths are `@V`, `.`, or child steps like `po:Kode/@V`: those skip the XPath
        # engine (5 µs a call) for ElementPath and attribute lookups (under 1 µs).
        m = _SIMPLE.match(text)
        self._simple: tuple[tuple[tuple[str, str], ...], str | None] | None = None
        if m:
            steps = tuple(tuple(step.split(":", 1)) for step in (m["steps"] or "").split("/") if step)
            self._simple = (steps, m["attr"])  # type: ignore[assignment]  # pairs of (prefix, name)
        self._absolute = text.lstrip("(").startswith("/")
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
        if self._simple is not None:
            return self._walk(scope)
        key = (self, None if self._absolute else scope.node)  # absolute paths give one answer per message
        cached = scope.results.get(key)
        if cached is not None:
            return cached
        out = self._evaluate(scope)
        scope.results[key] = out
        return out

    def _walk(self, scope: XmlScope) -> list[XmlItem]:
        steps, attr = self._simple  # type: ignore[misc]  # set when this is called
        node = scope.node
        if steps:
            where = self._by_binding.get(scope.bindings)
            if where is None:
                uris = dict(scope.bindings)
                where = self._by_binding[scope.bindings] = "/".join(f"{{{uris[p]}}}{name}" for p, name in steps)
            found = node.findall(where)
        else:
            found = [node]
        out = []
        for el in found:
            if attr is None:
                scope.reads.add(el)
                value = _text(el)
                if value or len(el) or el.attrib:
                    out.append(XmlItem(value, el))
                continue
            text = (el.get(attr) or "").strip()
            if text:
                scope.reads.add(el)
                out.append(XmlItem(text, _AttrRef(el, attr)))
        return out

    def _evaluate(self, scope: XmlScope) -> list[XmlItem]:
        xpath = self._by_binding.get(scope.bindings)
        if xpath is None:
            binding = tuple((p, u) for p, u in scope.bindings if p in self._prefixes)
            xpath = self._by_binding[scope.bindings] = _compiled(self.text, binding)
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

    def values(self, scope: XmlScope) -> list[str]:
        """Return the raw values in order."""
        return [item.raw for item in self.resolve(scope)]

    def reader(self) -> Any:
        """Return a function reading the first value."""

        def read(scope: XmlScope) -> str | None:
            items = self.resolve(scope)
            return items[0].raw if items else None

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
    """Choose, for each prefix, the first of its URIs the document uses."""
    used = {etree.QName(el).namespace for el in root.iter() if isinstance(el.tag, str)}
    return tuple((p, next((u for u in uris if u in used), uris[0])) for p, uris in sorted(prefixes.items()))


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
    stack: list[tuple[Any, str]] = [(root, "/" + etree.QName(root).localname)]
    while stack:
        el, label = stack.pop()
        if el in reads:
            continue  # read whole: its children are covered
        children = [c for c in el if isinstance(c.tag, str)]
        if not children:
            if ((el.text or "").strip() or el.get("V") is not None) and etree.QName(el).localname not in _ENVELOPE_ONLY:
                out.append(label)
            continue
        names = [etree.QName(c).localname for c in children]
        seen: dict[str, int] = {}
        labelled = []
        for c, name in zip(children, names):
            seen[name] = seen.get(name, 0) + 1
            labelled.append((c, f"{label}/{name}[{seen[name]}]" if names.count(name) > 1 else f"{label}/{name}"))
        stack.extend(reversed(labelled))
    return out


# Header elements the engine itself reads (ids, dates, types, AppRec addressing).
_ENVELOPE_ONLY = frozenset({"MIGversion", "MsgId", "GenDate", "Type", "IssueDate", "MsgType", "RefToParent", "RefToConversation", "ProcessingStatus", "Ack"})
