"""Tests for router/mapping/functions.py: the mapping language's function library."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from router.mapping.functions import (
    HELSEBRO_NAMESPACE,
    hl7_date_to_fhir,
    hl7_datetime_to_fhir,
    uuid5_id,
)


class TestHl7DatetimeToFhir:
    @pytest.mark.parametrize(
        ("hl7", "fhir"),
        [
            ("20240115083000", "2024-01-15T08:30:00+01:00"),
            ("20240715083000", "2024-07-15T08:30:00+02:00"),
            ("200708181123", "2007-08-18T11:23:00+02:00"),
            ("2024011508", "2024-01-15T08:00:00+01:00"),
        ],
    )
    def test_oslo_offset_added(self, hl7, fhir):
        """A local time without offset gets Europe/Oslo's offset for that date."""
        assert hl7_datetime_to_fhir(hl7) == fhir

    @pytest.mark.parametrize(
        ("hl7", "fhir"),
        [("1961", "1961"), ("196106", "1961-06"), ("19610615", "1961-06-15")],
    )
    def test_date_precision_stays_a_date(self, hl7, fhir):
        """Year, month and day precision stay FHIR dates without a time or offset."""
        assert hl7_datetime_to_fhir(hl7) == fhir

    def test_spaces_around_the_value_are_padding(self):
        """A sender's padding is not part of the time; spaces inside it still refuse it."""
        assert hl7_datetime_to_fhir(" 20240115083000 ") == "2024-01-15T08:30:00+01:00"
        assert hl7_datetime_to_fhir("   ") is None
        with pytest.raises(ValueError, match="not an HL7 timestamp"):
            hl7_datetime_to_fhir("2024 0115")

    def test_explicit_offset_kept(self):
        """The sender's offset wins over Oslo's, summer or not."""
        assert hl7_datetime_to_fhir("20240715083000-0500") == "2024-07-15T08:30:00-05:00"
        assert hl7_datetime_to_fhir("20240115083000+0000") == "2024-01-15T08:30:00+00:00"

    def test_fractional_seconds_kept(self):
        """Up to four fractional digits are copied as written."""
        assert hl7_datetime_to_fhir("20240115083000.1234") == "2024-01-15T08:30:00.1234+01:00"
        assert hl7_datetime_to_fhir("20240115083000.5+0100") == "2024-01-15T08:30:00.5+01:00"

    def test_offset_on_a_date_is_dropped(self):
        """A FHIR date has no offset, so one on a date-only value is dropped."""
        assert hl7_datetime_to_fhir("20240115+0100") == "2024-01-15"

    def test_spring_forward_gap_uses_winter_offset(self):
        """02:30 on 31 March 2024 never happened in Oslo; fold=0 reads it as +01:00."""
        assert hl7_datetime_to_fhir("20240331023000") == "2024-03-31T02:30:00+01:00"

    def test_around_spring_forward(self):
        """The last minute before the gap is winter time and the first after is summer time."""
        assert hl7_datetime_to_fhir("202403310159") == "2024-03-31T01:59:00+01:00"
        assert hl7_datetime_to_fhir("202403310300") == "2024-03-31T03:00:00+02:00"

    def test_autumn_repeated_hour_uses_summer_offset(self):
        """02:30 on 27 October 2024 happened twice; fold=0 picks the first, +02:00."""
        assert hl7_datetime_to_fhir("20241027023000") == "2024-10-27T02:30:00+02:00"
        assert hl7_datetime_to_fhir("20241027033000") == "2024-10-27T03:30:00+01:00"
        assert hl7_datetime_to_fhir("20241027015959") == "2024-10-27T01:59:59+02:00"

    def test_matches_zoneinfo_hour_by_hour_through_a_year(self):
        """Every whole hour of 2024 gets the offset zoneinfo gives with fold=0."""
        oslo = ZoneInfo("Europe/Oslo")
        start = datetime(2024, 1, 1)
        for hours in range(366 * 24):
            moment = start + timedelta(hours=hours)
            offset = moment.replace(tzinfo=oslo, fold=0).strftime("%z")
            result = hl7_datetime_to_fhir(moment.strftime("%Y%m%d%H%M"))
            assert result is not None and result.endswith(f"{offset[:3]}:{offset[3:]}")

    def test_empty_is_none(self):
        """An empty value means not known and gives None."""
        assert hl7_datetime_to_fhir("") is None

    @pytest.mark.parametrize(
        "garbage",
        [
            "2024011",  # odd length
            "202401150",
            "2024x115",
            "20241301",  # month 13
            "20240001",
            "20240230",  # 30 February
            "20230229",  # not a leap year
            "20230229120000",
            "2024011524",  # hour 24
            "202401150860",
            "20240115083060",  # no leap seconds
            "20240115083000.12345",
            "20240115083000.",
            "202401150830+1500",
            "202401150830+0160",
            "202401150830+01",
            "0000",
            " 2024 0115",  # padding is ignored (test_spaces_around_the_value_are_padding); spaces inside are not
            "２０２４",  # full-width digits
            "20240115083000^S",
        ],
    )
    def test_garbage_raises(self, garbage):
        """Anything not an HL7 timestamp raises ValueError with a fixed message."""
        with pytest.raises(ValueError, match=r"^not an HL7 timestamp$"):
            hl7_datetime_to_fhir(garbage)

    def test_leap_day_accepted(self):
        """29 February exists in 2024 and 2000."""
        assert hl7_datetime_to_fhir("20240229") == "2024-02-29"
        assert hl7_datetime_to_fhir("200002291200") == "2000-02-29T12:00:00+01:00"

    def test_historic_local_mean_time(self):
        """Before 1895 Oslo kept local mean time, +00:43, and that is what tzdata says."""
        assert hl7_datetime_to_fhir("18900101120000") == "1890-01-01T12:00:00+00:43"


class TestHl7DateToFhir:
    def test_date(self):
        """A DT value becomes a FHIR date."""
        assert hl7_date_to_fhir("19610615") == "1961-06-15"
        assert hl7_date_to_fhir("1961") == "1961"

    def test_timestamp_truncated(self):
        """A TS keeps only its date as written, even late in the evening with an offset."""
        assert hl7_date_to_fhir("20240115233000-0500") == "2024-01-15"
        assert hl7_date_to_fhir("196106150830") == "1961-06-15"

    def test_empty_is_none(self):
        """An empty value gives None."""
        assert hl7_date_to_fhir("") is None

    def test_garbage_raises(self):
        """An invalid timestamp raises even though only its date is kept."""
        with pytest.raises(ValueError):
            hl7_date_to_fhir("196106152500")


class TestUuid5Id:
    def test_pinned_value(self):
        """The namespace never changes, so a known input keeps its known id."""
        assert uuid.UUID("d10ee399-0d8d-475b-87fd-f286ebc99291") == HELSEBRO_NAMESPACE
        value = uuid5_id("Patient", "urn:oid:2.16.578.1.12.4.1.4.1", "x")
        assert value == "3457f510-c81e-5016-9f86-20031c3be4bc"

    def test_deterministic_and_distinct(self):
        """Equal parts give equal ids; different parts give different ids."""
        assert uuid5_id("Patient", "a") == uuid5_id("Patient", "a")
        assert uuid5_id("Patient", "a") != uuid5_id("Patient", "b")
        assert uuid5_id("Patient", "a") != uuid5_id("Encounter", "a")

    def test_is_a_version_5_uuid(self):
        """The id is a canonical version-5 UUID string, valid as a FHIR id."""
        value = uuid5_id("Patient", "a")
        assert uuid.UUID(value).version == 5 and str(uuid.UUID(value)) == value

    def test_no_parts_raises(self):
        """At least one part is needed."""
        with pytest.raises(ValueError):
            uuid5_id()
