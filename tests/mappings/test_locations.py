"""PV1-3 (and PV1-6) as Locations, inbound and outbound, through the public interface.

Inbound, a person location's point of care, room and bed are Location resources, each part of the
one before (v2-to-FHIR IG PL[Location]), and the stay refers to the most granular with its name
kept as the reference's display. Outbound, a legacy HL7 v2 receiver gets them back in PV1-3, and a
transfer's prior location in PV1-6. Synthetic Norwegian people only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.hl7v2.render import Hl7v2Renderer
from router.pipeline.convert import Converter
from router.routing.model import QueueDestination
from router.settings import load_settings
from router.testing import drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

PATIENT_A, PATIENT_B, PATIENT_C = "15866112379", "02036110182", "31929945681"
LOCATION_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
MSH = "MSH|^~\\&|DIPS|{sender}|HELSEBRO|HELSEPLATTFORMEN|20250110083000||ADT^{event}^{structure}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"


def _adt(ctrl: str, fnr: str, location: str, *, sender: str = "STOLAV^974749025^ENH", event: str = "A01", prior: str = "", attending: str = "") -> bytes:
    structure = {"A02": "ADT_A02"}.get(event, "ADT_A01")
    pv1 = ["PV1", "1", "I", location, "", "", prior, attending] + [""] * 11 + [f"V-{ctrl}^^^STOLAV^VN"] + [""] * 24 + ["20250110082500"]
    segments = [
        MSH.format(sender=sender, event=event, structure=structure, ctrl=ctrl),
        f"EVN|{event}|20250110083000",
        f"PID|1||{fnr}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "|".join(pv1),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _kind(location: dict) -> str:
    return location["physicalType"]["coding"][0]["code"]


def _segments(body: bytes) -> dict[str, list[str]]:
    out = {}
    for line in body.decode("utf-8").split("\r")[:-1]:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        out[fields[0]] = fields
    return out


class TestTransferToALegacySystem:
    def test_a_rendered_transfer_says_where_the_patient_went_and_came_from(self, tmp_path):
        """An A02 from MED 301 bed 2 to KIR 410 bed 1 reaches a legacy HL7 v2 queue with the new place in PV1-3 and
        the old one in PV1-6, and the record keeps both Location chains. PV1-3 was left empty."""
        routes = {
            "destinations": {"record": {"kind": "record"}, "legacy": {"kind": "queue", "queue": "legacy.adt", "format": "hl7v2"}},
            "routes": [{"name": "all", "to": ["record", "legacy"]}],
        }
        settings = isolated_settings(tmp_path, routes=routes)
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [_adt("TRF-1", PATIENT_A, "KIR^410^1^STOLAV", event="A02", prior="MED^301^2^STOLAV")])
            wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
        finally:
            handle.stop()
        [(_, body)] = drain_queue(settings, settings.routes.destinations["legacy"].queue)
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []
        seg = _segments(body)
        assert seg["MSH"][9] == "ADT^A02^ADT_A02"
        assert seg["PV1"][3] == "KIR^410^1^STOLAV"
        assert seg["PV1"][6] == "MED^301^2^STOLAV"

        from adapters.fhir.record import open_record

        record = open_record(settings)
        try:
            [encounter] = record.search("Encounter", {})
            by_id = {f"Location/{loc['id']}": loc for loc in record.search("Location", {})}
        finally:
            record.close()
        now, before = encounter["location"]
        assert (now["status"], now["location"]["display"], before["status"], before["location"]["display"]) == ("active", "KIR 410 1", "completed", "MED 301 2")
        chain = [by_id[now["location"]["reference"]]]
        while "partOf" in chain[-1]:
            chain.append(by_id[chain[-1]["partOf"]["reference"]])
        assert [(loc["name"], _kind(loc)) for loc in chain] == [("1", "bd"), ("410", "ro"), ("KIR", "wa")]


def _record_after(tmp_path, messages: list[bytes]):
    from adapters.fhir.record import open_record

    settings = isolated_settings(tmp_path)
    handle = run_engine_in_thread(settings)
    try:
        publish(settings, messages)
        wait_until(lambda: handle.stats.messages >= len(messages), 60, what="settled")
        assert handle.stats.dead_lettered == 0
    finally:
        handle.stop()
    record = open_record(settings)
    try:
        yield record
    finally:
        record.close()


@pytest.fixture
def three_admissions(tmp_path):
    """The record after A at St. Olavs MED 301 bed 2, B at Ahus MED 301 bed 2, and C at St. Olavs MED 302 bed 2."""
    yield from _record_after(tmp_path, [
        _adt("LOC-1", PATIENT_A, "MED^301^2^STOLAV"),
        _adt("LOC-2", PATIENT_B, "MED^301^2^AHUS", sender="AHUS^983971636^ENH"),
        _adt("LOC-3", PATIENT_C, "MED^302^2^STOLAV"),
    ])


def _locations(record) -> tuple[list[dict], dict[str, dict]]:
    found = record.search("Location", {})
    return found, {f"Location/{loc['id']}": loc for loc in found}


class TestLocationIdentity:
    def test_two_hospitals_same_ward_are_two_locations(self, three_admissions):
        """Ward MED of St. Olavs and ward MED of Ahus are two Locations, each in its own facility's location codes."""
        found, _ = _locations(three_admissions)
        wards = sorted((loc["identifier"][0]["system"], loc["identifier"][0]["value"]) for loc in found if _kind(loc) == "wa")
        assert wards == [("urn:helsebro:local:AHUS:location", "MED"), ("urn:helsebro:local:STOLAV:location", "MED")]

    def test_beds_in_different_rooms_are_different_locations(self, three_admissions):
        """Bed 2 of room 301 and bed 2 of room 302 (and Ahus' bed 2 of its room 301) are three beds, each part of its own room."""
        found, by_id = _locations(three_admissions)
        beds = [loc for loc in found if _kind(loc) == "bd"]
        assert len(beds) == 3 and {loc["name"] for loc in beds} == {"2"}
        rooms = sorted((by_id[bed["partOf"]["reference"]]["identifier"][0]["system"].split(":")[3], by_id[bed["partOf"]["reference"]]["name"]) for bed in beds)
        assert rooms == [("AHUS", "301"), ("STOLAV", "301"), ("STOLAV", "302")]
        encounters = three_admissions.search("Encounter", {})
        assert len({e["location"][0]["location"]["reference"] for e in encounters}) == 3


def _convert(tmp_path, message: bytes) -> dict:
    src = tmp_path / "in.hl7"
    src.write_bytes(message)
    done = subprocess.run([str(Path(sys.executable).parent / "helsebro"), "convert", str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


class TestFacility:
    def test_a_place_sent_without_its_facility_is_its_senders(self, tmp_path):
        """St. Olavs' transfer from MED 301 bed 3 (no PL.4) to MED 301 bed 2 (PL.4 STOLAV) names one ward and one room:
        a PL without a facility is its sender's, under the same identity and assigner."""
        bundle = _convert(tmp_path, _adt("FAC-1", PATIENT_A, "MED^301^2^STOLAV", event="A02", prior="MED^301^3"))
        locations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Location"]
        assert sorted(loc["identifier"][0]["value"] for loc in locations) == ["MED", "MED/301", "MED/301/2", "MED/301/3"]
        assert {(loc["identifier"][0]["system"], loc["identifier"][0]["assigner"]["display"]) for loc in locations} == {("urn:helsebro:local:STOLAV:location", "STOLAV")}


class TestPointOfCareOnly:
    def test_a_point_of_care_alone_is_one_location(self, tmp_path):
        """PV1-3 `POLI^^^AALESUND` (an outpatient clinic, no room or bed) is one Location, the clinic, which the stay
        refers to by reference and name."""
        bundle = _convert(tmp_path, _adt("POC-1", PATIENT_A, "POLI^^^AALESUND"))
        [entry] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Location"]
        clinic = entry["resource"]
        assert (clinic["name"], _kind(clinic), clinic["mode"]) == ("POLI", "wa", "instance")
        assert clinic["identifier"] == [{"system": "urn:helsebro:local:AALESUND:location", "value": "POLI", "assigner": {"display": "AALESUND"}}]
        assert "partOf" not in clinic
        [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
        assert encounter["location"] == [{"location": {"reference": entry["fullUrl"], "display": "POLI"}, "status": "active"}]


@pytest.fixture(scope="module")
def converter():
    return Converter(load_settings(environ={}))


def _render(converter, message: bytes) -> dict[str, list[str]]:
    settings = load_settings(environ={})
    [converted] = converter.convert(message)
    assert converted.ok, converted.error
    renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="legacy.adt", format="hl7v2"), settings, name="legacy")
    return _segments(renderer.render(converted))


class TestDisplayOnlyDoctor:
    @pytest.mark.parametrize(("sent", "rendered"), [("^LEGE^LISA", "^LEGE^LISA"), ("^NORDMANN^KARI^ANNE", "^NORDMANN^KARI ANNE")])
    def test_a_doctor_without_hpr_number_still_renders_in_pv1_7(self, converter, sent, rendered):
        """An attending doctor sent without a number is a reference with a name only; PV1-7 gets that name back,
        family name (its last word) and given names apart. PV1-7 was left empty."""
        seg = _render(converter, _adt("DOC-1", PATIENT_A, "MED^301^2^STOLAV", attending=sent))
        assert seg["PV1"][7] == rendered

    def test_a_doctor_with_hpr_number_renders_as_before(self, converter):
        """A doctor with an HPR number is still written from the Practitioner, number and authority included."""
        seg = _render(converter, _adt("DOC-2", PATIENT_A, "MED^301^2^STOLAV", attending="9144900^LEGE^LISA^^^^^^HPR^^^^HPR"))
        assert seg["PV1"][7] == "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
        assert seg["PV1"][3] == "MED^301^2^STOLAV"
