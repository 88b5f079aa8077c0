"""Tests for adapters/kith/dispatch.py: every national example, and each refusal in order."""

from __future__ import annotations

import re
import select
import socket

import pytest

from adapters.kith.apprec import apprec_error_for
from adapters.kith.dispatch import read_envelope, read_message, salvage
from adapters.kith.safe_xml import parse_xml
from router.errors import UnknownMessage

from .conftest import FAMILIES, NORSK, PLO_16, examples

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_BARE = "a bare e-resept payload without MsgHead: no header to read or answer"

#: National examples that the edge refuses, with the code and the reason. Every
#: other example under the seven families parses, dispatches and validates.
KNOWN_REFUSED = {
    "eresept/Diverse eksempler/ER-M14-2008-12-12-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M241-2009-02-20-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M242-2008-10-03-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M3-2010-05-01-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M41-2006-10-06-example.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M42-2006-10-06-example.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M5-2013-04-16-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M7-2008-05-01-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M91-2013-10-08-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M91-2013-10-08-eksempel2.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M92-2013-10-08-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M93-2008-04-29-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/ER-M94-2010-07-01-eksempel1.xml": ("T10", _BARE),
    "eresept/Diverse eksempler/M96-b64.xml": (
        "T10", "the catalog maps eresept/m96/2009-03-18 to ER-M96-2009-03-18.xsd, which the archive lacks",
    ),
}


def _rel(path) -> str:
    return path.relative_to(NORSK / "eksempel").as_posix()


class TestReadMessage:
    @pytest.mark.parametrize("family", FAMILIES)
    def test_national_examples(self, family, schemas):
        """Every national example parses safely, dispatches and validates, except the listed ones."""
        files = examples(family)
        assert files, f"no examples under eksempel/{family}"
        problems = []
        for path in files:
            received = read_message(path.read_bytes(), schemas=schemas)
            expected = KNOWN_REFUSED.get(_rel(path))
            got = apprec_error_for(received.error)[0] if received.error else None
            if got != (expected[0] if expected else None):
                problems.append(f"{_rel(path)}: {got} {received.error and received.error.reason}")
            elif received.ok:
                env = received.envelope
                if not (env.msg_type and UUID.fullmatch(env.msg_id) and env.payload_namespace and env.sender):
                    problems.append(f"{_rel(path)}: incomplete envelope {env}")
        assert problems == []

    @pytest.mark.parametrize("family", FAMILIES)
    def test_national_examples_without_schemas(self, family):
        """With validation off every example with a header reads; bare payloads stay T10."""
        for path in examples(family):
            received = read_message(path.read_bytes())
            bare = KNOWN_REFUSED.get(_rel(path), ("", ""))[1] == _BARE
            assert received.ok != bare, _rel(path)

    def test_iso_8859_1(self, example, schemas):
        """An ISO-8859-1 copy of a UTF-8 example reads and validates the same."""
        text = example(PLO_16).decode("utf-8").replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
        latin = read_message(text.encode("iso-8859-1"), schemas=schemas)
        utf8 = read_message(example(PLO_16), schemas=schemas)
        assert latin.ok and utf8.ok
        assert latin.envelope == utf8.envelope
        assert "Øya" in latin.envelope.payload.xpath("string(.//*[local-name()='OrganisationName'])")

    def test_malformed_salvaged(self, example):
        """Truncated XML is T01, and the header read in recovery mode addresses the reply."""
        data = example(PLO_16)
        received = read_message(data[: data.index(b"<Document>")])
        assert apprec_error_for(received.error)[0] == "T01"
        assert received.envelope is not None
        assert received.envelope.msg_id == "79c55ed0-0692-11e8-b566-0800200c9a66"
        assert received.envelope.sender is not None and received.envelope.sender.her_id == "90998"

    def test_garbage(self):
        """Bytes that are not XML at all are T01 with no envelope."""
        received = read_message(b"\x00\x01 this is not xml")
        assert apprec_error_for(received.error)[0] == "T01"
        assert received.envelope is None

    def test_xxe_not_salvaged(self):
        """A DOCTYPE is T01 and nothing of the message is read, not even in recovery mode."""
        data = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&e;</MsgHead>'
        received = read_message(data)
        assert apprec_error_for(received.error)[0] == "T01"
        assert received.envelope is None

    def test_xxe_http_no_connection(self, schemas):
        """An http entity is T01 and nothing connects to the named port."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        try:
            port = sock.getsockname()[1]
            received = read_message(f'<!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/">]><x>&e;</x>'.encode(), schemas=schemas)
            assert apprec_error_for(received.error)[0] == "T01"
            assert not select.select([sock], [], [], 0)[0]
        finally:
            sock.close()

    def test_schema_invalid(self, example, schemas):
        """A mutated example is T02, with the envelope kept for the reply."""
        data = example(PLO_16).replace(b"<MIGversion>v1.2 2006-05-24</MIGversion>", b"<MIGversion>v9</MIGversion>")
        received = read_message(data, schemas=schemas)
        assert apprec_error_for(received.error)[0] == "T02"
        assert received.error.location == "/MsgHead/MsgInfo/MIGversion"
        assert received.envelope is not None and received.envelope.msg_id

    def test_bad_msg_id(self, example, schemas):
        """A MsgId that is not a UUID is E10, after the message validated."""
        data = example(PLO_16).replace(b"79c55ed0-0692-11e8-b566-0800200c9a66", b"MSG-0001")
        received = read_message(data, schemas=schemas)
        assert apprec_error_for(received.error)[0] == "E10"
        assert received.envelope.msg_id == "MSG-0001"

    def test_unknown_payload_namespace(self, example, schemas):
        """A MsgHead carrying a payload in an unknown namespace is T10."""
        data = example(PLO_16).replace(b"http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01", b"urn:example:nobody")
        received = read_message(data, schemas=schemas)
        assert apprec_error_for(received.error)[0] == "T10"
        assert received.envelope is not None and received.envelope.payload_namespace == "urn:example:nobody"

    def test_a_made_up_namespace_is_quoted_short_and_not_kept(self, example, schemas):
        """Session 22: a namespace a sender makes up is quoted cut short in the reason, and no schema cache keeps it."""
        made_up = b"urn:example:" + b"x" * 100_000
        before = len(schemas._compiled)
        for n in range(3):
            data = example(PLO_16).replace(b"http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01", made_up + str(n).encode())
            received = read_message(data, schemas=schemas)
            assert apprec_error_for(received.error)[0] == "T10"
            assert len(received.error.reason) < 300
        assert len(schemas._compiled) == before

    def test_an_unknown_roots_namespace_is_quoted_short(self):
        received = read_message(b"<Message xmlns='urn:" + b"y" * 100_000 + b"'/>")
        assert apprec_error_for(received.error)[0] == "T10" and len(received.error.reason) < 400

    def test_unknown_root(self):
        """A root that is no KITH message is T10 with no envelope."""
        received = read_message(b"<Bundle xmlns='http://hl7.org/fhir'/>")
        assert apprec_error_for(received.error)[0] == "T10"
        assert received.envelope is None

    def test_apprec_read(self, norsk, schemas):
        """A standalone AppRec dispatches as kind AppRec and validates."""
        received = read_message((norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml").read_bytes(), schemas=schemas)
        assert received.ok and received.envelope.kind == "AppRec"

    def test_dispatch_ignores_file_name(self, example):
        """The same bytes under any name dispatch the same: only the root and namespaces count."""
        root = parse_xml(example(PLO_16)).getroot()
        assert read_envelope(root).kind == "MsgHead"
        with pytest.raises(UnknownMessage):
            read_envelope(parse_xml(b"<Message xmlns='urn:nobody'/>").getroot())

    def test_salvage_gives_up_quietly(self):
        """Salvage returns None when nothing readable is left."""
        assert salvage(b"<<<") is None
