"""Parse untrusted KITH XML bytes without ever reading a file, a URL or a DTD.

Owns the parser settings, the size and depth limits and the DOCTYPE refusal.
Reading the envelope and validating it belong to msghead.py and xsd.py.

The national messages never carry a DOCTYPE (HIS 80601; every Sarepta example
has none), so any DOCTYPE is refused before the parser sees the bytes: that
shuts out XXE (external entities: files, URLs) and entity-expansion bombs
("billion laughs") whatever libxml2 would do with them. The parser settings
(``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False``)
and a check of the parse result are a second and third line. Every refusal is
a ``DecodeError`` (AppRec T01, "ikke XML / ikke well-formed").

The encoding comes from the XML declaration (KITH messages are UTF-8 or
ISO-8859-1); bytes that do not match it are not well-formed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lxml import etree

from router.errors import DecodeError

__all__ = ["DEFAULT_LIMITS", "ForbiddenDoctype", "XmlLimits", "parse_xml"]


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """How big and how deep an inbound message may be."""

    max_bytes: int = 20 * 1024 * 1024
    """Largest message accepted, in bytes; base64 attachments count."""
    max_depth: int = 200
    """Deepest element nesting accepted; the national examples stay below 20."""


DEFAULT_LIMITS = XmlLimits()


class ForbiddenDoctype(DecodeError):
    """The message declares a DOCTYPE; it is refused unread (AppRec T01).

    A subclass of its own because nothing may be salvaged from such bytes:
    the reply goes out without reading a single field of a hostile message.
    """


# One parser per setting: libxml2 keeps per-thread contexts, so sharing is safe.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
    dtd_validation=False, remove_comments=False, collect_ids=False,
)
_RECOVERING_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
    dtd_validation=False, collect_ids=False, recover=True,
)

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def parse_xml(data: bytes, *, limits: XmlLimits = DEFAULT_LIMITS, recover: bool = False) -> etree._ElementTree:
    """Parse *data* into a tree, refusing DOCTYPEs, oversize and over-deep input.

    ``recover=True`` lets libxml2 repair broken markup; it is only for reading
    what can be read from a message that is already being rejected (T01), and
    it still refuses DOCTYPEs, size and depth.

    Raises:
        ForbiddenDoctype: the bytes declare a DOCTYPE.
        DecodeError: too large, too deep, empty or not well-formed XML.
    """
    if len(data) > limits.max_bytes:
        raise DecodeError(f"message is larger than {limits.max_bytes} bytes")
    _refuse_doctype(data)
    try:
        tree = etree.ElementTree(etree.fromstring(data, _RECOVERING_PARSER if recover else _PARSER))
    except etree.XMLSyntaxError as exc:
        # libxml2's text can quote the message; the reply gets only the position.
        line, column = exc.position
        raise DecodeError(f"not well-formed XML ({_type_name(exc)})", location=f"line {line}, column {column}") from exc
    except ValueError as exc:  # e.g. a str with an encoding declaration
        raise DecodeError("not XML bytes") from exc
    if tree.getroot() is None:
        raise DecodeError("no XML element found")
    info = tree.docinfo  # a new DocInfo on each access
    if info.doctype or info.internalDTD is not None:
        raise ForbiddenDoctype("a DOCTYPE is not allowed in a message")
    if _too_deep(tree.getroot(), limits.max_depth):
        raise DecodeError(f"elements nested deeper than {limits.max_depth}")
    return tree


def _type_name(exc: etree.XMLSyntaxError) -> str:
    entry = exc.error_log.last_error if exc.error_log else None
    return entry.type_name if entry is not None else "syntax error"


def _refuse_doctype(data: bytes) -> None:
    """Raise ForbiddenDoctype if the prolog (before the root element) holds a DOCTYPE.

    Reads the prolog exactly: the XML declaration, processing instructions,
    comments and whitespace may come before the root; a DOCTYPE inside a
    comment or after the root start is not a DOCTYPE. An unclosed PI or
    comment ends the prolog (the parser refuses such bytes).
    """
    raw = data
    if b"\x00" in raw[:4]:
        # UTF-16/32: the prolog is ASCII, so dropping the NUL bytes leaves it readable.
        raw = raw.replace(b"\x00", b"")
    for bom in _BOMS:
        if raw.startswith(bom):
            raw = raw[len(bom):]
            break
    prolog = _PROLOG.match(raw)  # never None: the pattern matches the empty string
    end = prolog.end() if prolog is not None else 0
    if raw[end:end + 9].upper() == b"<!DOCTYPE":
        raise ForbiddenDoctype("a DOCTYPE is not allowed in a message")


_PROLOG = re.compile(rb"(?:[ \t\r\n]++|<\?.*?\?>|<!--.*?-->)*+", re.DOTALL)
"""Whitespace, PIs (the XML declaration among them) and comments, as many as come first.

One regex pass in C, where a byte-by-byte Python loop cost more than the rest of the wrapper;
possessive, so it keeps no backtracking state for a prolog of many comments.
"""


def _too_deep(root: etree._Element, max_depth: int) -> bool:
    """True when some element sits deeper than *max_depth* (the root is depth 1).

    One XPath step per level touches each element once, so this is linear in
    the size of the tree; libxml2 itself stops at 256 levels without huge_tree.
    A shallow probe goes first: messages end within ~20 levels, and each of
    the ~180 steps past the last level still costs the XPath engine a step.
    """
    if max_depth > _SHALLOW and not _depth_probe(_SHALLOW)(root):
        return False  # nothing below _SHALLOW levels, so nothing below max_depth
    return bool(_depth_probe(max_depth)(root))


_SHALLOW = 32


@functools.lru_cache(maxsize=8)
def _depth_probe(max_depth: int) -> etree.XPath:
    return etree.XPath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")")
