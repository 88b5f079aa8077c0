"""Tests for adapters/hl7v2/render.py at the edges: the hour the clocks go back, times outside the calendar,
hand-made malformed Bundles, and what ContactPoint and Address types are written as (review H133)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime

import pytest

from router.contracts import Converted
from router.errors import MessageError

from .test_render import _fields, _renderer, _resources, _with_bundle, _with_patient


def _with_stay_start(conv: Converted, start: str) -> Converted:
    bundle = copy.deepcopy(conv.bundle)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"]["period"] = {"start": start}
    return _with_bundle(conv, bundle)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


class TestTheHourTheClocksGoBack:
    @pytest.mark.parametrize(("start", "pv1_44"), [
        ("2024-10-27T02:30:00+01:00", "20241027023000+0100"),  # the second 02:30 (winter time)
        ("2024-10-27T02:30:00+02:00", "20241027023000+0200"),  # the first (summer time)
        ("2024-10-27T01:30:00Z", "20241027023000+0100"),
        ("2024-10-27T03:30:00+01:00", "20241027033000"),  # after the hour: one instant, no offset
        ("2024-03-31T01:30:00+01:00", "20240331013000"),  # the spring hour is skipped, not doubled
    ])
    def test_v23_writes_the_offset_in_that_hour_only(self, settings, converter, admit, start, pv1_44):
        """For v2.3 an Oslo wall time of 02:00-03:00 on the last Sunday of October names two instants: the offset goes with it.

        Why: without it the inbound side (and a receiver) read 02:30+01:00 as 02:30+02:00, an hour early.
        """
        out = _renderer(settings, version="2.3").render(_with_stay_start(admit, start))
        assert _fields(out)["PV1"][44] == pv1_44
        [back] = converter.convert(out)
        assert back.ok, back.error
        assert _instant(_resources(back.bundle)["Encounter"]["period"]["start"]) == _instant(start.replace("Z", "+00:00"))

    def test_v23_msh7_with_an_offset_in_that_hour_keeps_it(self, settings, admit):
        """A source MSH-7 of 02:30+0100 that night is written with its offset for v2.3, EVN-2 too; outside the hour, as wall time."""
        late = dataclasses.replace(admit, header=dataclasses.replace(admit.header, sent="20241027023000+0100"))
        seg = _fields(_renderer(settings, version="2.3").render(late))
        assert (seg["MSH"][7], seg["EVN"][2]) == ("20241027023000+0100", "20241027023000+0100")
        plain = dataclasses.replace(admit, header=dataclasses.replace(admit.header, sent="20241027043000+0100"))
        assert _fields(_renderer(settings, version="2.3").render(plain))["MSH"][7] == "20241027043000"


class TestTimesOutsideTheCalendar:
    @pytest.mark.parametrize(("version", "start", "pv1_44"), [
        ("2.3", "9999-12-31T23:30:00-02:00", "99991231233000-0200"),  # in Oslo it is year 10000
        ("2.3", "0001-01-01T00:10:00+01:00", "00010101001000+0100"),  # in Oslo it is year 0
        ("2.5.1", "9999-12-31T23:30:00Z", "99991231233000+0000"),
        ("2.5.1", "0999-05-01T10:00:00+01:00", "09990501100000+0100"),  # four digits, never 999
        ("2.3", "0999-05-01T09:00:00Z", "09990501094300"),  # Oslo's local mean time then, +00:43
    ])
    def test_a_time_oslo_has_no_wall_time_for_keeps_its_offset(self, settings, admit, version, start, pv1_44):
        """A time whose Oslo time falls outside years 1-9999 is written with the offset it came with, never an OverflowError.

        Why: an OverflowError is no MessageError: it failed the whole delivery instead of this destination.
        """
        assert _fields(_renderer(settings, version=version).render(_with_stay_start(admit, start)))["PV1"][44] == pv1_44

    def test_a_source_time_at_the_end_of_the_calendar_renders(self, settings, admit):
        """A source MSH-7 of 9999-12-31 23:30-0200 renders for v2.3 (with its offset) and for 2.5.1 (as sent)."""
        end = dataclasses.replace(admit, header=dataclasses.replace(admit.header, sent="99991231233000-0200"))
        assert _fields(_renderer(settings, version="2.3").render(end))["MSH"][7] == "99991231233000-0200"
        assert _fields(_renderer(settings).render(end))["MSH"][7] == "99991231233000-0200"


class TestMalformedBundle:
    @pytest.mark.parametrize("mangle", [
        lambda b: b.update(entry="not a list"),
        lambda b: b["entry"].append(["a", "list"]),
        lambda b: b["entry"].append({"fullUrl": ["a", "list"], "resource": {"resourceType": "Basic"}}),
        lambda b: b["entry"].append({"resource": {"resourceType": ["Patient"]}}),
        lambda b: b["entry"].append({"resource": {"resourceType": "Basic", "id": {"a": 1}}}),
    ], ids=["entry-not-a-list", "entry-a-list", "fullurl-a-list", "type-a-list", "id-a-dict"])
    def test_a_malformed_bundle_is_refused_with_a_reason(self, settings, admit, mangle):
        """A hand-made Bundle of the wrong shape is a MessageError (dead-lettered, stage render), not a TypeError or AttributeError."""
        bundle = copy.deepcopy(admit.bundle)
        mangle(bundle)
        with pytest.raises(MessageError, match="Bundle"):
            _renderer(settings).render(_with_bundle(admit, bundle))

    def test_an_entry_without_a_resource_is_passed_over(self, settings, admit):
        """An entry with no resource (a DELETE) names nothing to write: the rest still renders."""
        bundle = copy.deepcopy(admit.bundle)
        bundle["entry"].append({"request": {"method": "DELETE", "url": "Basic/1"}})
        assert _fields(_renderer(settings).render(_with_bundle(admit, bundle)))["PID"][5] == "NORDMANN^OLA^K"

    @pytest.mark.parametrize("reference", [["a", "list"], {"a": 1}, 7])
    def test_a_reference_that_is_no_text_leads_nowhere(self, settings, admit, reference):
        """A Reference.reference that is a list, object or number resolves to nothing (PV1-3, PV1-7), instead of a TypeError."""
        bundle = copy.deepcopy(admit.bundle)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Encounter":
                resource["location"][0]["location"]["reference"] = reference
                resource["participant"][0]["individual"]["reference"] = reference
            if resource["resourceType"] == "Location" and "partOf" in resource:
                resource["partOf"]["reference"] = reference
        seg = _fields(_renderer(settings).render(_with_bundle(admit, bundle)))
        assert seg["PV1"][2] == "I"

    def test_an_object_where_text_belongs_writes_nothing(self, settings, admit):
        """A family name that is an object writes no Python repr into PID-5; the given name is still written."""
        seg = _fields(_renderer(settings).render(_with_patient(admit, name=[{"family": {"x": 1}, "given": ["OLA"]}])))
        assert seg["PID"][5] == "^OLA"


MOBILE = {"system": "phone", "value": "90000000", "use": "mobile"}


class TestTelecomAndAddressTypes:

    @pytest.mark.parametrize(("version", "xtn"), [
        ("2.5.1", "90000000^PRS^CP^^^^^^^^^90000000"),
        ("2.7", "^PRS^CP^^^^^^^^^90000000"),
        ("2.3", "90000000^ORN^CP"),  # no PRS before v2.5: another residence number, not a second primary one
    ])
    def test_a_mobile_phone_is_a_cellular_phone(self, settings, admit, version, xtn):
        """A ContactPoint phone with use mobile is XTN.3 CP (cellular or mobile phone), not PH, in every version."""
        conv = _with_patient(admit, telecom=[{"system": "phone", "value": "22334455", "use": "home"}, MOBILE])
        pid13 = _fields(_renderer(settings, version=version).render(conv))["PID"][13].split("~")
        assert pid13[1] == xtn
        assert pid13[0].split("^")[1:3] == ["PRN", "PH"]

    def test_a_mobile_comes_back_a_mobile(self, settings, converter, admit):
        """PRS^CP reads back as a mobile phone: the inbound side makes XTN.2 PRS `mobile`, XTN.3 CP `phone`."""
        [back] = converter.convert(_renderer(settings).render(_with_patient(admit, telecom=[MOBILE])))
        assert back.ok, back.error
        assert _resources(back.bundle)["Patient"]["telecom"] == [MOBILE]

    def test_a_mobile_fax_or_email_keeps_its_own_equipment(self, settings, admit):
        """Only a phone becomes CP for use mobile: an e-mail address stays Internet, a fax FX."""
        conv = _with_patient(admit, telecom=[{"system": "email", "value": "ola@example.no", "use": "mobile"},
                                             {"system": "fax", "value": "22334400", "use": "mobile"}])
        pid13 = _fields(_renderer(settings).render(conv))["PID"][13].split("~")
        assert [r.split("^")[2] for r in pid13] == ["Internet", "FX"]

    @pytest.mark.parametrize(("address", "xad7"), [
        ({"use": "home", "type": "postal"}, "M"),
        ({"type": "postal"}, "M"),
        ({"use": "home", "type": "both"}, "H"),
        ({"use": "work", "type": "postal"}, "O"),
        ({"use": "old", "type": "postal"}, "BA"),
    ])
    def test_a_postal_address_is_a_mailing_address(self, settings, admit, address, xad7):
        """Address.type postal is XAD.7 M (mailing), the v2-to-FHIR IG's reverse; a work or old address keeps its use's code."""
        conv = _with_patient(admit, address=[{"line": ["Postboks 1"], "city": "TRONDHEIM", **address}])
        assert _fields(_renderer(settings).render(conv))["PID"][11].split("^")[6] == xad7


class TestDates:
    @pytest.mark.parametrize(("onset", "al1_6"), [
        ("2024-10-27T23:30:00Z", "20241028"),  # 00:30 on the 28th in Oslo
        ("2024-06-30T22:15:00-02:00", "20240701"),
        ("2024-10-27T10:00:00+01:00", "20241027"),
        ("2024-10-27", "20241027"),
    ])
    def test_a_date_from_a_datetime_is_the_oslo_day(self, settings, admit, onset, al1_6):
        """AL1-6 (DT) of an onset written in UTC or another offset is the day in Oslo, as the KITH outbound writes it, not the day at UTC.

        Why: an allergy noted 00:30 Norwegian time on the 28th was sent as identified on the 27th.
        """
        bundle = copy.deepcopy(admit.bundle)
        bundle["entry"].append({"fullUrl": "urn:uuid:11111111-1111-5111-8111-111111111111", "resource": {
            "resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}, "onsetDateTime": onset}})
        seg = _fields(_renderer(settings, version="2.5.1").render(_with_bundle(admit, bundle)))
        assert seg["AL1"][6] == al1_6


class TestAllergyCodes:
    @staticmethod
    def _al1(settings, admit, **allergy) -> list[str]:
        bundle = copy.deepcopy(admit.bundle)
        bundle["entry"].append({"fullUrl": "urn:uuid:11111111-1111-5111-8111-111111111111", "resource": {
            "resourceType": "AllergyIntolerance", "code": {"text": "Katt"}, **allergy}})
        return _fields(_renderer(settings, version="2.5.1").render(_with_bundle(admit, bundle)))["AL1"]

    def test_an_animal_allergy_keeps_its_allergen_type(self, settings, admit):
        """A biologic allergy (what the inbound AL1/IAM make of AA, animal allergy) goes out as AL1-2 AA, not with none."""
        assert self._al1(settings, admit, category=["biologic"])[2] == "AA"

    @pytest.mark.parametrize(("allergy", "al1_4"), [
        ({"criticality": "high", "reaction": [{"manifestation": [{"text": "Utslett"}], "severity": "moderate"}]}, "MO"),
        ({"reaction": [{"manifestation": [{"text": "Utslett"}], "severity": "mild"}]}, "MI"),
        ({"criticality": "high"}, "SV"),
        ({"criticality": "low"}, "MI"),
    ])
    def test_al1_4_is_the_reactions_severity_else_the_criticality(self, settings, admit, allergy, al1_4):
        """AL1-4 gives back the severity the inbound AL1-4 became (reaction.severity), else criticality (high SV, low MI).

        Why: MO is no criticality (the IG maps it to none), so it survives only as the reaction's severity.
        """
        assert self._al1(settings, admit, **allergy)[4] == al1_4


class TestAValueThatReadsAsHl7Null:
    def test_two_double_quotes_are_not_written_as_the_null(self, settings, converter, admit):
        """A value that is exactly `""` is written `\\X22\\\\X22\\`: raw, a receiver reads it as HL7's explicit null
        (delete what you hold), and the inbound side drops it (review H176)."""
        out = _renderer(settings).render(_with_patient(admit, name=[{"family": '""', "given": ["H"]}]))
        assert _fields(out)["PID"][5] == "\\X22\\\\X22\\^H"
        [back] = converter.convert(out)
        assert back.ok, back.error
        assert _resources(back.bundle)["Patient"]["name"][0]["family"] == '""'
