"""Tests for adapters/kith/safe_xml.py: no file, no URL, no DTD, no bomb; limits; encodings."""

from __future__ import annotations

import select
import socket
from pathlib import Path

import pytest
from lxml import etree

from adapters.kith import safe_xml
from adapters.kith.safe_xml import ForbiddenDoctype, XmlLimits, parse_xml
from router.errors import DecodeError

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A local file whose content must never show up in a parse result."""
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-MARKER", encoding="utf-8")
    return path


@pytest.fixture
def listener():
    """A TCP socket on 127.0.0.1 that records whether anything connected to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connected(sock: socket.socket) -> bool:
    """True when a connection is waiting: a parse that fetched would have connected before returning."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _xxe_file(path: Path) -> bytes:
    return f'<!DOCTYPE x [<!ENTITY e SYSTEM "{path.as_uri()}">]><x>&e;</x>'.encode()


def _xxe_http(port: int) -> bytes:
    return f'<!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/x.txt">]><x>&e;</x>'.encode()


class TestParseXml:
    def test_file_entity_refused(self, secret):
        """An external entity naming a local file is refused as a DOCTYPE."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml(_xxe_file(secret))

    def test_etc_passwd_entity_refused(self):
        """The classic file:///etc/passwd entity is refused, and ForbiddenDoctype is a DecodeError (T01)."""
        with pytest.raises(DecodeError):
            parse_xml(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')

    def test_http_entity_refused_without_connecting(self, listener):
        """An external http entity is refused and nothing connects to the named port."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml(_xxe_http(listener.getsockname()[1]))
        assert not _connected(listener)

    def test_entity_bomb_refused(self):
        """A billion-laughs entity bomb is refused before any expansion."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml(BOMB)

    def test_parser_alone_reads_no_file(self, secret):
        """Even without the DOCTYPE scan, the parser settings leave a file entity unread."""
        root = etree.fromstring(_xxe_file(secret), safe_xml._PARSER)
        assert b"TOP-SECRET-MARKER" not in etree.tostring(root)

    def test_parser_alone_opens_no_url(self, listener):
        """Even without the DOCTYPE scan, the parser settings open no network connection."""
        root = etree.fromstring(_xxe_http(listener.getsockname()[1]), safe_xml._PARSER)
        assert root.text is None
        assert not _connected(listener)

    def test_parser_alone_expands_no_bomb(self):
        """Even without the DOCTYPE scan, the bomb stays unexpanded or is refused by libxml2."""
        try:
            root = etree.fromstring(BOMB, safe_xml._PARSER)
        except etree.XMLSyntaxError:
            return
        assert len(etree.tostring(root)) < 1000

    def test_doctype_after_comment_and_declaration(self):
        """A DOCTYPE behind the XML declaration and a comment is still found."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml(b'<?xml version="1.0"?>\n<!-- hi --><!DOCTYPE a><a/>')

    def test_utf16_doctype_refused(self):
        """A DOCTYPE in a UTF-16 document is found despite the NUL bytes."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a><a/>'.encode("utf-16"))

    def test_doctype_text_in_comment_is_no_doctype(self):
        """The word DOCTYPE inside a comment is not a DOCTYPE."""
        assert parse_xml(b"<!-- <!DOCTYPE x> --><a/>").getroot().tag == "a"

    def test_not_well_formed(self):
        """Broken markup is a DecodeError with a line and column but no quoted content."""
        with pytest.raises(DecodeError) as caught:
            parse_xml(b"<a><b>15076500565</a>")
        assert caught.value.location == "line 1, column 22"
        assert "15076500565" not in caught.value.reason

    def test_empty(self):
        """No bytes at all is a DecodeError."""
        with pytest.raises(DecodeError):
            parse_xml(b"")

    def test_size_limit(self):
        """A message over the size limit is refused unparsed."""
        with pytest.raises(DecodeError, match="larger than 10 bytes"):
            parse_xml(b"<a>0123456789</a>", limits=XmlLimits(max_bytes=10))

    def test_depth_limit(self):
        """Nesting deeper than the limit is refused; nesting at the limit is accepted."""
        with pytest.raises(DecodeError, match="deeper than 10"):
            parse_xml(b"<a>" * 11 + b"</a>" * 11, limits=XmlLimits(max_depth=10))
        assert parse_xml(b"<a>" * 10 + b"</a>" * 10, limits=XmlLimits(max_depth=10)) is not None

    def test_default_depth_limit(self):
        """The default limit of 200 levels refuses 201 levels."""
        with pytest.raises(DecodeError):
            parse_xml(b"<a>" * 201 + b"</a>" * 201)

    def test_iso_8859_1(self):
        """An ISO-8859-1 message is decoded by its declaration."""
        data = '<?xml version="1.0" encoding="ISO-8859-1"?><a>Flåklypa Ørsta</a>'.encode("iso-8859-1")
        assert parse_xml(data).getroot().text == "Flåklypa Ørsta"

    def test_wrong_encoding_is_not_well_formed(self):
        """ISO-8859-1 bytes that claim to be UTF-8 are refused, never guessed."""
        with pytest.raises(DecodeError):
            parse_xml('<?xml version="1.0" encoding="UTF-8"?><a>Flåklypa</a>'.encode("iso-8859-1"))

    def test_recover_repairs_truncation(self):
        """Recovery mode reads the start of a truncated document."""
        tree = parse_xml(b"<a><b>x</b><c>", recover=True)
        assert tree.getroot().findtext("b") == "x"

    def test_recover_still_refuses_doctype(self):
        """Recovery mode refuses a DOCTYPE too."""
        with pytest.raises(ForbiddenDoctype):
            parse_xml(BOMB, recover=True)
