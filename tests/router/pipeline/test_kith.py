"""Tests for router/pipeline/_kith.py: the MessageHeader of a converted KITH message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DIALOG = ROOT / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"


class TestKithHeader:
    def test_header_carries_type_msgid_and_gendate(self, converter):
        """A KITH message's header has its type as message code, its MsgId as control id and its GenDate as `sent`."""
        [conv] = converter.convert(DIALOG.read_bytes())
        assert conv.ok, conv.error
        h = conv.header
        assert h is not None
        assert (h.message_code, h.control_id, h.sent) == ("DIALOG_HELSEFAGLIG", "3f2b6f0e-8f1c-4c55-9a59-2f3d7d1c0a01", "2025-01-15T09:35:22")
        assert h.message_code == conv.message_type and h.control_id == conv.control_id

    def test_header_names_no_hl7_parties(self, converter):
        """The HL7 party fields stay empty: a KITH party is a HER-id, read from the envelope."""
        [conv] = converter.convert(DIALOG.read_bytes())
        h = conv.header
        assert (h.sending_application, h.sending_facility, h.receiving_application, h.receiving_facility) == ("", "", "", "")

    def test_header_of_a_msghead_without_type_or_payload(self, converter):
        """A MsgHead with no Type and no Document still gets a text message code (empty), as MessageHeader declares, not None."""
        text = DIALOG.read_text(encoding="utf-8")
        text = re.sub(r"<Type\b[^>]*/>", "", text, count=1)
        text = re.sub(r"<Document>.*</Document>", "", text, flags=re.S)
        [conv] = converter.convert(text.encode("utf-8"))
        assert not conv.ok
        assert conv.header is not None
        assert conv.header.message_code == ""


class TestKithEncodings:
    @pytest.mark.parametrize("encoding", ["UTF-16", "UTF-16BE", "UTF-16LE", "UTF-32"])
    def test_a_utf16_or_utf32_message_is_read_as_kith(self, converter, encoding):
        """A KITH message in UTF-16 or UTF-32 (with a BOM, or big-endian without one) is read as XML and mapped,
        not taken for HL7 v2 and answered with an HL7 NAK its sender never reads instead of an AppRec."""
        text = DIALOG.read_text(encoding="utf-8").replace('encoding="UTF-8"', f'encoding="{encoding}"')
        codec = {"UTF-16": "utf-16", "UTF-16BE": "utf-16-be", "UTF-16LE": "utf-16-le", "UTF-32": "utf-32"}[encoding]
        [conv] = converter.convert(text.encode(codec))
        assert conv.format == "kith"
        assert conv.ok, conv.error
        assert conv.control_id == "3f2b6f0e-8f1c-4c55-9a59-2f3d7d1c0a01"

    def test_hl7v2_is_still_hl7v2(self, converter):
        """An HL7 v2 message is not taken for XML."""
        [conv] = converter.convert(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|1|P|2.5\rPID|1||123\r")
        assert conv.format == "hl7v2"
