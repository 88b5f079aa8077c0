"""Tests for adapters/hl7v2/ack.py: ACK messages and the error-to-ACK table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.hl7v2 import ack
from adapters.hl7v2.ack import ACK_CODE_FOR, ack_code_for, build_ack
from router.errors import DecodeError, InvalidContent, MessageError, Refused, UnknownMessage, UnsupportedProcessingId, UnsupportedVersion

ORIGINAL: dict[str, Any] = {
    "sending_application": "LAB^2.16.578.1.12.4.1.2.12345^ISO",
    "sending_facility": "OUS",
    "receiving_application": "HELSEBRO",
    "receiving_facility": "HB",
}


def _segments(data: bytes) -> dict[str, list[str]]:
    """Split ER7 bytes into {segment id: fields}, with MSH numbered like the standard."""
    text = data.decode("utf-8")
    assert text.endswith("\r") and "\n" not in text
    result = {}
    for line in text.split("\r")[:-1]:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")  # MSH-1 is the field separator itself
        result[fields[0]] = fields
    return result


def _build(**overrides) -> dict[str, list[str]]:
    kwargs: dict[str, Any] = {"code": "AA", "control_id": "MSG00001", "message_type": "ADT^A01^ADT_A01", **ORIGINAL}
    kwargs.update(overrides)
    return _segments(build_ack(**kwargs))


class TestBuildAck:
    def test_accept(self):
        """An AA echoes the control id, names the trigger and has no ERR."""
        seg = _build(ack_control_id="ACK1")
        assert list(seg) == ["MSH", "MSA"]
        assert seg["MSA"][1:] == ["AA", "MSG00001"]
        assert seg["MSH"][9] == "ACK^A01^ACK"
        assert seg["MSH"][10] == "ACK1"
        assert seg["MSH"][11] == "P"
        assert seg["MSH"][12] == "2.5"

    def test_applications_swapped(self):
        """Our MSH-3/4 are the original's receiver and MSH-5/6 its sender, HD components kept."""
        msh = _build()["MSH"]
        assert msh[1:3] == ["|", "^~\\&"]
        assert msh[3:7] == ["HELSEBRO", "HB", "LAB^2.16.578.1.12.4.1.2.12345^ISO", "OUS"]

    def test_error_has_err_segment(self):
        """An AE carries text in MSA-3 and an ERR with location, 0357 code and severity."""
        seg = _build(code="AE", text="check digits do not match", error_location="PID-3[1].1",
                     error_code="102")
        assert seg["MSA"][1:] == ["AE", "MSG00001", "check digits do not match"]
        assert seg["ERR"][1:] == ["", "PID^1^3^1^1", "102^Data type error^HL70357", "E"]

    def test_reject_defaults_to_internal_error(self):
        """An AR without an error code reports 207 and an empty location."""
        seg = _build(code="AR")
        assert seg["MSA"][1] == "AR"
        assert seg["ERR"][2:] == ["", "207^Application internal error^HL70357", "E"]

    @pytest.mark.parametrize(
        ("location", "erl"),
        [
            ("PID-3", "PID^1^3"),
            ("PID-3[2]", "PID^1^3^2"),
            ("PID-3.1", "PID^1^3^1^1"),
            ("PID-5[1].1.2", "PID^1^5^1^1^2"),
            ("OBX[4]-5", "OBX^4^5"),
            ("MRG[2]", "MRG^2"),
            ("PID", "PID^1"),
            ("PID-3[1].1.2.3", ""),
            ("pid-3", ""),
            ("/MsgHead/MsgInfo", ""),
            ("PID-x", ""),
        ],
    )
    def test_error_locations(self, location, erl):
        """Locations become HL7 ERL; anything else leaves ERR-2 empty instead of failing."""
        assert _build(code="AE", error_location=location)["ERR"][2] == erl

    def test_text_is_escaped_and_flattened(self):
        """Delimiters in MSA-3 are escaped and a CR cannot start a new segment."""
        seg = _build(code="AE", text="a|b^c&d~e\\f\rg")
        assert seg["MSA"][3] == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f g"
        assert list(seg) == ["MSH", "MSA", "ERR"]

    def test_text_is_cut_to_80_characters(self):
        """MSA-3 is ST(80) in v2.5, so longer text is cut."""
        assert _build(code="AE", text="x" * 200)["MSA"][3] == "x" * 80

    def test_application_components_escaped(self):
        """A delimiter inside an HD component is escaped without merging components."""
        msh = _build(sending_application="A|B^C")["MSH"]
        assert msh[5] == "A\\F\\B^C"

    def test_unknown_version_falls_back(self):
        """A version hl7apy does not know is answered as 2.5."""
        assert _build(version="9.9")["MSH"][12] == "2.5"
        assert _build(version="2.3.1")["MSH"][12] == "2.3.1"

    def test_old_version_uses_eld_and_two_part_type(self):
        """v2.3 gets MSH-9 without a structure and the error in ERR-1 as an ELD."""
        seg = _build(code="AE", version="2.3", error_location="PID-3", error_code="102")
        assert seg["MSH"][9] == "ACK^A01"
        assert seg["ERR"][1:] == ["PID^1^3^102&Data type error&HL70357"]

    def test_charset_and_processing_id(self) -> None:
        """MSH-18 names the charset the bytes are in (from v2.3 on); MSH-11 is the original's when table 0103 has it."""
        data = build_ack(code="AA", control_id="C1", charset="iso-8859-1", charset_name="8859/1", processing_id="T",
                         **{**ORIGINAL, "sending_facility": "SØR"})
        msh = data.split(b"\r")[0].split(b"|")
        assert msh[5] == "SØR".encode("iso-8859-1") and msh[10] == b"T" and msh[17] == b"8859/1"
        assert _build(processing_id="X")["MSH"][11] == "P"
        assert len(_build(charset_name="8859/1", version="2.2")["MSH"]) == 13  # no MSH-18 before v2.3

    def test_no_message_type(self):
        """Without the original's type, MSH-9 is plain ACK."""
        assert _build(message_type=None)["MSH"][9] == "ACK"

    def test_unknown_control_id(self):
        """When the original's control id is unknown, MSA-2 is empty."""
        assert _build(code="AR", control_id=None)["MSA"][1:3] == ["AR", ""]

    def test_new_control_id(self):
        """Without ack_control_id, MSH-10 is a fresh 20-hex-digit id each time."""
        first, second = _build()["MSH"][10], _build()["MSH"][10]
        assert len(first) == 20 and int(first, 16) >= 0 and first != second

    def test_timestamp(self):
        """MSH-7 is the given moment with its offset."""
        now = datetime(2024, 7, 15, 8, 30, 5, tzinfo=timezone(timedelta(hours=2)))
        assert _build(now=now)["MSH"][7] == "20240715083005+0200"

    @pytest.mark.parametrize(("epoch", "stamp"), [
        (1_751_362_205, "20250701113005+0200"),  # 09:30:05 UTC in summer: Oslo is UTC+2
        (1_735_723_805, "20250101103005+0100"),  # 09:30:05 UTC in winter: Oslo is UTC+1
    ])
    def test_timestamp_without_a_moment_is_oslo_now(self, monkeypatch, epoch, stamp):
        """Without `now`, MSH-7 is the current second in Oslo, with its offset; one second's ACKs share it."""
        clock = [epoch + 0.1]
        monkeypatch.setattr(ack.time, "time", lambda: clock[0])
        assert _build()["MSH"][7] == stamp
        clock[0] = epoch + 0.9  # the same second: the stamp made for it
        assert _build()["MSH"][7] == stamp
        clock[0] = epoch + 1.0  # the next one: a new stamp
        assert _build()["MSH"][7] == stamp[:13] + str(int(stamp[13]) + 1) + stamp[14:]

    def test_plain_and_escaped_text(self):
        """Text without delimiters or control characters is sent as it is; any other is escaped."""
        assert ack._escape("Ola Nordmann 123-æøå") == "Ola Nordmann 123-æøå"
        assert ack._escape("a|b^c&d~e\\f\rg") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f g"

    def test_hl7apy_accepts_it(self):
        """hl7apy's strict parser validates an AE as a v2.5 ACK."""
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        data = build_ack(code="AE", control_id="MSG00001", message_type="ADT^A01",
                         text="a|b", error_location="PID-3[1].1", error_code="102", **ORIGINAL)
        message = parse_message(data.decode().rstrip("\r"), validation_level=VALIDATION_LEVEL.STRICT)
        assert message.validate()
        assert message.msa.msa_2.to_er7() == "MSG00001"
        assert message.err.err_3.to_er7() == "102^Data type error^HL70357"

    def test_known_versions_match_hl7apy(self):
        """The versions we echo are exactly those hl7apy supports."""
        import hl7apy

        assert set(hl7apy.SUPPORTED_LIBRARIES) == ack._KNOWN_VERSIONS


class TestAckCodeFor:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (DecodeError("no MSH"), ("AR", "100")),
            (UnknownMessage("no mapping"), ("AR", "200")),
            (InvalidContent("check digits do not match"), ("AE", "102")),
            (Refused("destination said no"), ("AR", "207")),
            (UnsupportedProcessingId("MSH-11"), ("AR", "202")),
            (UnsupportedVersion("MSH-12"), ("AR", "203")),
            (MessageError("other"), ("AE", "207")),
        ],
    )
    def test_table(self, error, expected):
        """Each error class of router/errors.py has its ACK code and 0357 code."""
        assert ack_code_for(error) == expected

    def test_subclass_answers_like_its_parent(self):
        """An adapter's own subclass of InvalidContent gets InvalidContent's answer."""

        class BadCheckDigit(InvalidContent):
            pass

        assert ack_code_for(BadCheckDigit("x")) == ("AE", "102")

    def test_every_code_is_in_table_0357(self):
        """The table uses only codes that have an ERR-3 text."""
        assert all(code in ack._ERROR_TEXT for _, code in ACK_CODE_FOR.values())
