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

    __slots__ = ("root", "node", "bindings", "reads", "_loc", "memo")

    def __init__(self, root: Any, node: Any, bindings: tuple[tuple[str, str], ...], reads: set[Any], loc: str = "") -> None:
        self.root = root
        self.node = node
        self.bindings = bindings  # prefix → namespace URI chosen for this document
        self.reads = reads  # elements whose value was read (held, so their identity stays stable)
        self._loc = loc
        self.memo: dict[object, bool] | None = None  # condition answers in this scope (conditions.py)

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
        return XmlScope(self.root, node, self.bindings, self.reads, value_loc)

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


class XmlPath:
    """A compiled XPath source. Paths that select elements iterate like groups under `each:`."""

    __slots__ = ("text", "_prefixes", "_choices")

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
        binding = tuple((p, u) for p, u in scope.bindings if p in self._prefixes)
        try:
            result = _compiled(self.text, binding)(scope.node)
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
    """
    out: list[str] = []
    covered: set[Any] = set()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        parent = el.getparent()
        if el in reads or (parent is not None and parent in covered):
            covered.add(el)
            continue
        has_value = (el.text or "").strip() and len(el) == 0 or el.get("V") is not None
        if has_value and etree.QName(el).localname not in _ENVELOPE_ONLY:
            out.append(where(el))
    return out


# Header elements the engine itself reads (ids, dates, types, AppRec addressing).
_ENVELOPE_ONLY = frozenset({"MIGversion", "MsgId", "GenDate", "Type", "IssueDate", "MsgType", "RefToParent", "RefToConversation", "ProcessingStatus", "Ack"})
