"""Tests for adapters/hl7v2/_er7.py: escaping and HL7 timestamps for outbound messages."""

from __future__ import annotations

import pytest

from adapters.hl7v2._er7 import escape, fhir_to_hl7_date, fhir_to_hl7_ts, hl7_ts_to_ts


class TestEr7:
    def test_escape(self):
        """Each delimiter becomes its escape; escape characters are escaped first, never twice."""
        assert escape("plain") == "plain"
        assert escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"
        assert escape("x\ry") == "x\\X0D\\y"

    def test_control_characters_travel_as_hex_escapes(self):
        """0x0B and 0x1C (MLLP's frame bytes), and the other control characters but tab, are hex escapes: raw, a value
        holding one cut a framed message short at the receiver (noted by review H92). A tab stays a tab."""
        assert escape("a\x0bb\x1cc\nd") == "a\\X0B\\b\\X1C\\c\\X0A\\d"
        assert escape("\x00\x1f\x7f") == "\\X00\\\\X1F\\\\X7F\\"
        assert escape("col1\tcol2") == "col1\tcol2"

    @pytest.mark.parametrize(
        ("value", "with_offset", "expected"),
        [
            ("2025-01-10T08:25:00+01:00", True, "20250110082500+0100"),
            ("2025-07-10T08:25:00+02:00", True, "20250710082500+0200"),
            ("2025-07-10T06:25:00Z", True, "20250710082500+0200"),
            ("2025-07-10T06:25:00Z", False, "20250710082500"),
            ("2025-01-10T08:25:00+00:00", False, "20250110092500"),
            ("2025-01-10T08:25:00.123456+01:00", True, "20250110082500.1234+0100"),
            ("2025-01-10", True, "20250110"),
            ("not a date", True, ""),
        ],
    )
    def test_fhir_datetime_to_ts(self, value, with_offset, expected):
        """FHIR dateTimes keep their offset where offsets are written, and become Oslo wall time where not."""
        assert fhir_to_hl7_ts(value, with_offset=with_offset) == expected

    def test_fhir_date(self):
        """A date, or a dateTime's date part, becomes YYYYMMDD."""
        assert fhir_to_hl7_date("1961-06-15") == "19610615"
        assert fhir_to_hl7_date("1961-06") == "196106"
        assert fhir_to_hl7_date("x") == ""

    @pytest.mark.parametrize(
        ("value", "with_offset", "expected"),
        [
            ("20250110083000", True, "20250110083000+0100"),
            ("20250710083000", True, "20250710083000+0200"),
            ("20250110083000", False, "20250110083000"),
            ("20250110073000+0000", False, "20250110083000"),
            ("20250110083000+0100", True, "20250110083000+0100"),
            ("", True, ""),
        ],
    )
    def test_received_ts(self, value, with_offset, expected):
        """A received MSH-7 without offset is Oslo time: it gains the offset, or stays as is for v2.3."""
        assert hl7_ts_to_ts(value, with_offset=with_offset) == expected

    @pytest.mark.parametrize("with_offset", [True, False])
    @pytest.mark.parametrize(
        ("convert", "value"),
        [
            (hl7_ts_to_ts, "20250230083000"),
            (hl7_ts_to_ts, "20251310083000+0100"),
            (hl7_ts_to_ts, "20250110253000"),
            (fhir_to_hl7_ts, "2025-02-30T08:30:00Z"),
            (fhir_to_hl7_ts, "2025-02-30T08:30:00+01:00"),
            (fhir_to_hl7_ts, "2025-01-10T25:30:00"),
        ],
    )
    def test_a_time_the_calendar_lacks_is_not_a_ts(self, convert, value, with_offset):
        """February 30th or hour 25 has digits a TS has but names no instant: '' like any non-TS, never a ValueError."""
        assert convert(value, with_offset=with_offset) == ""
