"""Appointment changes (SIU^S13-S17, S26), document notifications (MDM^T01, T05, T06, T09, T10) and referrals (REF^I12, I14).

Each later event must land on the resource its first message made (the same
Appointment, the same ServiceRequest), with the status the event means; an
addendum or replacement is a document of its own that points at its parent.
The corpus's samples go through `helsebro convert`; synthetic Norwegian
messages (Tenor-style fødselsnummer) through the Converter. Every Bundle is
validated with fhir.resources.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
ICD10 = "urn:oid:2.16.578.1.12.4.1.1.7110"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
REFERRAL = {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}
PATIENT = "31929945681"

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|STOLAV|{ts}||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = f"PID|1||{PATIENT}^^^NOR^FNR||HANSEN^KARI||19921231|F"


def _message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode("utf-8")


def _one(converter, data: bytes) -> dict:
    """Convert one message; it must give a Bundle valid FHIR R4."""
    [result] = converter.convert(data)
    assert result.ok, result.outcome()
    Bundle.model_validate(result.bundle)
    return result.bundle


def _entry(bundle: dict, kind: str) -> dict:
    [entry] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    return entry


# --- SIU: one booking, its later events ---------------------------------------------------------


def _siu(event: str, *, ctrl: str, event_reason: str = "", filler_status: str = "Booked", start: str = "20250120093000") -> bytes:
    return _message(
        MSH.format(ts="20250105080000", type=f"SIU^{event}^SIU_S12", ctrl=ctrl),
        f"SCH|TIME-4001^DIPS|B-77881^DIPS-TIMEBOK||||{event_reason}|KONTROLL^Kontroll^L|POLIKLINISK^Poliklinisk time^L|30|min|||||||||||||||{filler_status}",
        f"TQ1|1||||||{start}|",
        PID,
        "RGS|1|A",
        f"AIS|1|A|KARDIO-KTR^Kardiologisk kontroll^L|{start}|||30|min",
    )


class TestAppointmentEvents:
    def test_every_event_updates_the_appointment_the_booking_made(self, converter):
        """S12, S13, S14, S15, S16, S17 and S26 of one booking (SCH-1) write one Appointment under one identity."""
        written = set()
        for i, event in enumerate(["S12", "S13", "S14", "S15", "S16", "S17", "S26"]):
            entry = _entry(_one(converter, _siu(event, ctrl=f"SIU-{i}")), "Appointment")
            written.add((entry["fullUrl"], entry["request"]["method"], entry["request"]["url"]))
        [(_, method, url)] = written
        assert (method, url) == ("PUT", "Appointment?identifier=urn:helsebro:local:DIPS:id|TIME-4001")

    @pytest.mark.parametrize(("event", "status"), [("S15", "cancelled"), ("S16", "cancelled"), ("S17", "entered-in-error"), ("S26", "noshow")])
    def test_the_event_sets_the_status_whatever_sch_25_says(self, converter, event, status):
        """A cancel, discontinue, delete or no-show sets its FHIR status though SCH-25 still says Booked."""
        appointment = _entry(_one(converter, _siu(event, ctrl="SIU-1")), "Appointment")["resource"]
        assert appointment["status"] == status

    @pytest.mark.parametrize("event", ["S13", "S14"])
    def test_a_reschedule_or_modify_keeps_sch_25s_status(self, converter, event):
        """A reschedule or modify takes SCH-25 (Pending → pending), and its new time."""
        appointment = _entry(_one(converter, _siu(event, ctrl="SIU-1", filler_status="Pending", start="20250127130000")), "Appointment")["resource"]
        assert (appointment["status"], appointment["start"]) == ("pending", "2025-01-27T13:00:00+01:00")

    def test_a_cancel_gives_sch_6_as_its_reason(self, converter):
        """SCH-6 of a cancel is the cancelationReason; the appointment's own reason (SCH-7) stays reasonCode."""
        appointment = _entry(_one(converter, _siu("S15", ctrl="SIU-1", event_reason="PASAVB^Pasienten avbestilte^L")), "Appointment")["resource"]
        assert appointment["cancelationReason"]["coding"][0]["code"] == "PASAVB"
        assert appointment["reasonCode"][0]["coding"][0]["code"] == "KONTROLL"

    def test_every_resource_groups_service_is_a_service_type(self, converter):
        """A booking of two services (two RGS groups, each its AIS) names both, not only the first."""
        data = _message(
            MSH.format(ts="20250105080000", type="SIU^S12^SIU_S12", ctrl="SIU-1"),
            "SCH|TIME-4002^DIPS|B-77882^DIPS-TIMEBOK||||||||||||||||||||||||Booked",
            "TQ1|1||||||20250120093000|",
            PID,
            "RGS|1|A",
            "AIS|1|A|BLODPR^Blodprøve^L|20250120093000",
            "RGS|2|A",
            "AIS|1|A|RTG-THORAX^Røntgen thorax^L|20250120100000",
        )
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        assert [s["coding"][0]["code"] for s in appointment["serviceType"]] == ["BLODPR", "RTG-THORAX"]

    @pytest.mark.parametrize("unit", ["min", "MIN", "Min", "minutes", "MINUTES", "Minutes", "m"])
    def test_a_duration_in_minutes_is_read_however_the_unit_is_written(self, converter, unit):
        """SCH-10 `Min` (the corpus's spelling) left minutesDuration out: the unit list knew min, MIN, m, minutes only."""
        data = _siu("S12", ctrl="SIU-1").replace(b"|30|min|", f"|30|{unit}|".encode())
        assert _entry(_one(converter, data), "Appointment")["resource"]["minutesDuration"] == 30

    def test_a_duration_in_hours_is_not_taken_as_minutes(self, converter):
        data = _siu("S12", ctrl="SIU-1").replace(b"|30|min|", b"|1|h|")
        assert "minutesDuration" not in _entry(_one(converter, data), "Appointment")["resource"]

    def test_a_booking_has_no_cancelation_reason(self, converter):
        """SCH-6 of a booking or reschedule is not taken as a cancelationReason."""
        for event in ("S12", "S13"):
            appointment = _entry(_one(converter, _siu(event, ctrl="SIU-1", event_reason="NY^Ny time^L")), "Appointment")["resource"]
            assert "cancelationReason" not in appointment



def _timed(*, sch_duration: str = "|", tq1: str | None = None, sch_11: str = "", ais: str = "AIS|1|A|KARDIO-KTR^Kardiologisk kontroll^L|20250120093000") -> bytes:
    """A booking whose time comes from TQ1 (when given), else SCH-11 (TQ.4/TQ.5), else the first AIS-4."""
    return _message(
        MSH.format(ts="20250105080000", type="SIU^S12^SIU_S12", ctrl="SIU-1"),
        f"SCH|TIME-4001^DIPS|B-77881^DIPS-TIMEBOK|||||KONTROLL^Kontroll^L|POLIKLINISK^Poliklinisk time^L|{sch_duration}|{sch_11}|||||||||||||Booked",
        *([tq1] if tq1 is not None else []),
        PID,
        "RGS|1|A",
        ais,
    )


class TestAppointmentTime:
    """FHIR app-2: an Appointment has both start and end, or neither."""

    def test_a_start_from_tq1_with_a_duration_in_sch_9_ends_that_much_later(self, converter):
        """TQ1-7 without TQ1-8 ends at TQ1-7 plus SCH-9 in SCH-10's unit."""
        appointment = _entry(_one(converter, _timed(sch_duration="45|min", tq1="TQ1|1||||||20250120093000")), "Appointment")["resource"]
        assert (appointment["start"], appointment["end"]) == ("2025-01-20T09:30:00+01:00", "2025-01-20T10:15:00+01:00")

    def test_tq1_8_is_the_end_when_sent(self, converter):
        """An end sent in TQ1-8 is taken as sent, not start plus SCH-9."""
        data = _timed(sch_duration="45|min", tq1="TQ1|1||||||20250120093000|20250120110000")
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        assert appointment["end"] == "2025-01-20T11:00:00+01:00"

    def test_a_start_from_sch_11_ends_after_sch_9(self, converter):
        """SCH-11.4 (an older sender's TQ) without SCH-11.5 ends at its start plus SCH-9 hours."""
        appointment = _entry(_one(converter, _timed(sch_duration="2|h", sch_11="^^^20250120093000")), "Appointment")["resource"]
        assert (appointment["start"], appointment["end"]) == ("2025-01-20T09:30:00+01:00", "2025-01-20T11:30:00+01:00")

    def test_a_start_from_ais_4_ends_after_ais_7(self, converter):
        """The first AIS's start (AIS-4) with its duration AIS-7 in AIS-8's unit gives start and end, as the IG's AIS map."""
        data = _timed(ais="AIS|1|A|KARDIO-KTR^Kardiologisk kontroll^L|20250120093000|||50|min^Minutes^ISO")
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        assert (appointment["start"], appointment["end"]) == ("2025-01-20T09:30:00+01:00", "2025-01-20T10:20:00+01:00")

    def test_an_end_is_elapsed_time_across_a_clock_change(self, converter):
        """Two hours from 01:30 on the night summer time starts end at 04:30 on the clock (+02:00), two hours later."""
        appointment = _entry(_one(converter, _timed(sch_duration="120|min", tq1="TQ1|1||||||20250330013000")), "Appointment")["resource"]
        assert (appointment["start"], appointment["end"]) == ("2025-03-30T01:30:00+01:00", "2025-03-30T04:30:00+02:00")

    @pytest.mark.parametrize("data", [
        _timed(tq1="TQ1|1||||||20250120093000"),
        _timed(sch_11="^^^20250120093000"),
        _timed(),
        _timed(sch_duration="1|mo", tq1="TQ1|1||||||20250120093000"),
    ], ids=["tq1", "sch-11", "ais-4", "unknown-unit"])
    def test_a_start_with_no_end_or_duration_is_no_start_but_the_patients_time(self, converter, data):
        """With no end and no duration known, the Appointment has neither start nor end (app-2), and the booked time is
        the patient participant's period.start, where a start alone is valid."""
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        assert ("start" in appointment, "end" in appointment) == (False, False)
        [patient] = [p for p in appointment["participant"] if "reference" in p.get("actor", {})]
        assert patient["period"] == {"start": "2025-01-20T09:30:00+01:00"}

    def test_a_booking_with_start_and_end_gives_the_patient_no_period(self, converter):
        """The patient's period is only the fallback: a booking with an end keeps its time on the Appointment alone."""
        appointment = _entry(_one(converter, _siu("S12", ctrl="SIU-1")), "Appointment")["resource"]
        [patient] = [p for p in appointment["participant"] if "reference" in p.get("actor", {})]
        assert "period" not in patient and appointment["end"] == "2025-01-20T10:00:00+01:00"


class TestResourcesTakenOff:
    @pytest.mark.parametrize("segment", [
        "AIP|1|D|9144900^LEGE^LISA^^^^^^HPR^^^^HPR|LEGE^Lege^L",
        "AIL|1|D|POL^12^^STOLAV^^^^^Poliklinikk 12|",
        "AIG|1|D|EKG-2^EKG-apparat 2^L|UTSTYR^Utstyr^L",
    ], ids=["AIP", "AIL", "AIG"])
    def test_a_resource_with_action_code_d_is_no_participant(self, converter, segment):
        """A resource an S14 takes off the booking (segment action code D, table 0206) is left out; one kept (A) stays."""
        kept = segment.replace("|1|D|", "|2|A|").replace("9144900^LEGE^LISA", "9144901^DOKTOR^PER").replace("POL^12", "POL^13").replace("EKG-2^EKG-apparat 2", "EKG-3^EKG-apparat 3")
        data = _siu("S14", ctrl="SIU-1") + f"{segment}\r{kept}\r".encode()
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        displays = [p["actor"].get("display", "") for p in appointment["participant"]]
        assert not any(name in " ".join(displays) for name in ("LISA", "POL 12", "EKG-apparat 2")), displays
        assert any(name in " ".join(displays) for name in ("PER", "POL 13", "EKG-apparat 3")), displays


class TestParticipantPeriods:
    def test_each_resource_is_booked_for_its_own_duration(self, converter):
        """AIP-6 + AIP-9 (AIP-10's unit), AIL-6 + AIL-9, AIG-8 + AIG-11 are the participant's period (v2-to-FHIR IG): the end was dropped."""
        data = _siu("S12", ctrl="SIU-1", start="20250120090000") + (
            b"AIG|1|A|EKG-2^EKG-apparat 2^L|UTSTYR^Utstyr^L||||20250120090000|||15|min\r"
            b"AIL|1|A|POL^12^^STOLAV^^^^^Poliklinikk 12|||20250120090000|||60|min\r"
            b"AIP|1|A|9144900^LEGE^LISA^^^^^^HPR^^^^HPR|LEGE^Lege^L||20250120093000|||20|MIN\r"
        )
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        periods = {p["actor"].get("display"): p.get("period") for p in appointment["participant"]}
        assert periods["LISA LEGE"] == {"start": "2025-01-20T09:30:00+01:00", "end": "2025-01-20T09:50:00+01:00"}
        assert periods["POL 12 STOLAV"] == {"start": "2025-01-20T09:00:00+01:00", "end": "2025-01-20T10:00:00+01:00"}
        assert periods["EKG-apparat 2"] == {"start": "2025-01-20T09:00:00+01:00", "end": "2025-01-20T09:15:00+01:00"}

    def test_a_start_without_a_duration_has_no_end(self, converter):
        """A participant's start with no duration (or a unit not known) keeps its start alone: no end is made up."""
        data = _siu("S12", ctrl="SIU-1") + b"AIP|1|A|9144900^LEGE^LISA^^^^^^HPR^^^^HPR|LEGE^Lege^L||20250120093000|||20|M\r"
        appointment = _entry(_one(converter, data), "Appointment")["resource"]
        [doctor] = [p for p in appointment["participant"] if p["actor"].get("display") == "LISA LEGE"]
        assert doctor["period"] == {"start": "2025-01-20T09:30:00+01:00"}


# --- MDM: notifications without content, addenda, replacements ---------------------------------------


def _mdm(event: str, structure: str, *, number: str, parent: str = "", obx: tuple[str, ...] = ()) -> bytes:
    return _message(
        MSH.format(ts="20250112150000", type=f"MDM^{event}^{structure}", ctrl=f"MDM-{event}"),
        f"EVN|{event}|20250112150000",
        PID,
        "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN",
        f"TXA|1|EPIKRISE^Epikrise^L|TX|20250112143000||20250112143000||||||{number}^DIPS|{parent}|||epikrise.txt|LA||AV||||||Epikrise",
        *obx,
    )


TEXT = ("OBX|1|TX|EPIKRISE^Epikrise^L||Utskrevet i god form.||||||F",)


class TestDocumentNotifications:
    def test_a_notification_without_content_is_one_attachment_marked_data_absent(self, converter):
        """T01 gives a DocumentReference whose one attachment describes the document (TXA-3, -25, -6) and marks its data absent."""
        entry = _entry(_one(converter, _mdm("T01", "MDM_T01", number="DOK-1")), "DocumentReference")
        [content] = entry["resource"]["content"]
        assert content["attachment"] == {
            "contentType": "text/plain",
            "title": "Epikrise",
            "creation": "2025-01-12T14:30:00+01:00",
            "extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}],
        }

    def test_a_notification_is_written_only_when_the_document_is_absent(self, converter):
        """T01 creates the document only when absent (POST ifNoneExist); T02 with content writes it (PUT), under the same identity."""
        t01 = _entry(_one(converter, _mdm("T01", "MDM_T01", number="DOK-1")), "DocumentReference")
        t02 = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=TEXT)), "DocumentReference")
        assert t01["fullUrl"] == t02["fullUrl"]
        assert t01["request"] == {"method": "POST", "url": "DocumentReference", "ifNoneExist": "identifier=urn:helsebro:local:DIPS:id|DOK-1"}
        assert t02["request"] == {"method": "PUT", "url": "DocumentReference?identifier=urn:helsebro:local:DIPS:id|DOK-1"}

    @pytest.mark.parametrize(
        ("event", "structure", "obx", "code"),
        [("T05", "MDM_T01", (), "appends"), ("T06", "MDM_T02", TEXT, "appends"), ("T09", "MDM_T01", (), "replaces"), ("T10", "MDM_T02", TEXT, "replaces")],
    )
    def test_an_addendum_or_replacement_is_a_new_document_related_to_its_parent(self, converter, event, structure, obx, code):
        """T05/T06 append to, T09/T10 replace, the parent TXA-13, named by its own document number; the new one is TXA-12."""
        doc = _entry(_one(converter, _mdm(event, structure, number="DOK-2", parent="DOK-1^DIPS", obx=obx)), "DocumentReference")["resource"]
        assert doc["masterIdentifier"]["value"] == "DOK-2"
        parent = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=TEXT)), "DocumentReference")["resource"]
        assert doc["relatesTo"] == [{"code": code, "target": {"type": "DocumentReference", "identifier": parent["masterIdentifier"]}}]

    @pytest.mark.parametrize(("completion", "doc_status"), [("LA", "final"), ("IP", "preliminary"), ("CA", "entered-in-error")])
    def test_completion_status_is_the_doc_status(self, converter, completion, doc_status):
        """TXA-17 gives docStatus; CA (canceled) had no entry, so a canceled document carried no docStatus at all."""
        data = _mdm("T02", "MDM_T02", number="DOK-1", obx=TEXT).replace(b"|epikrise.txt|LA|", f"|epikrise.txt|{completion}|".encode())
        assert _entry(_one(converter, data), "DocumentReference")["resource"]["docStatus"] == doc_status

    def test_an_original_document_relates_to_nothing(self, converter):
        """TXA-13 of an original (T01, T02) is not read as a parent."""
        for event, structure, obx in (("T01", "MDM_T01", ()), ("T02", "MDM_T02", TEXT)):
            doc = _entry(_one(converter, _mdm(event, structure, number="DOK-2", parent="DOK-1^DIPS", obx=obx)), "DocumentReference")["resource"]
            assert "relatesTo" not in doc


class TestDocumentContent:
    @pytest.mark.parametrize("encoding", ["Base64", "BASE64", "base64"])
    def test_base64_data_is_kept_as_sent_whatever_the_case_of_its_encoding(self, converter, encoding):
        """ED.4 BASE64 or base64 (table 0299) is Base64: the PDF was encoded again, the base64 of its base64, unreadable."""
        pdf = "JVBERi0xLjQKJcOkw7zDtsOfCg=="
        obx = (f"OBX|1|ED|PDF^Epikrise PDF^L||DIPS^AP^PDF^{encoding}^{pdf}||||||F",)
        [content] = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=obx)), "DocumentReference")["resource"]["content"]
        assert content["attachment"]["contentType"] == "application/pdf"
        assert content["attachment"]["data"] == pdf

    def test_text_in_an_ed_is_encoded(self, converter):
        """ED data sent as text (ED.4 A, table 0299) becomes base64 of its UTF-8, as Attachment.data requires."""
        obx = ("OBX|1|ED|NOTAT^Notat^L||DIPS^TEXT^PLAIN^A^Utskrevet i god form.||||||F",)
        [content] = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=obx)), "DocumentReference")["resource"]["content"]
        assert base64.b64decode(content["attachment"]["data"]).decode("utf-8") == "Utskrevet i god form."

    @pytest.mark.parametrize("encoding", ["Hex", "HEX", "hex"])
    def test_hex_data_is_decoded_to_its_bytes(self, converter, encoding):
        """ED.4 Hex (table 0299) is the document's bytes as hex digits: encoded as if text, the attachment's bytes were the digits."""
        obx = (f"OBX|1|ED|PDF^Epikrise PDF^L||DIPS^AP^PDF^{encoding}^255044462d312E34 0A||||||F",)
        [content] = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=obx)), "DocumentReference")["resource"]["content"]
        assert content["attachment"]["contentType"] == "application/pdf"
        assert content["attachment"]["data"] == "JVBERi0xLjQK"
        assert base64.b64decode(content["attachment"]["data"]) == b"%PDF-1.4\n"

    @pytest.mark.parametrize("data", ["255044462D312E340", "255044462G312E340A"], ids=["odd-length", "not-hex"])
    def test_data_declared_hex_that_is_not_hex_is_refused_naming_obx_5(self, converter, data):
        """Hex data with an odd count of digits or a non-hex character is refused (an OperationOutcome), never a corrupt document."""
        obx = (f"OBX|1|ED|PDF^Epikrise PDF^L||DIPS^AP^PDF^Hex^{data}||||||F",)
        [result] = converter.convert(_mdm("T02", "MDM_T02", number="DOK-1", obx=obx))
        assert not result.ok
        outcome = result.outcome()
        assert outcome["resourceType"] == "OperationOutcome"
        [issue] = outcome["issue"]
        assert issue["expression"] == ["OBX-5[1].5"], issue
        assert issue["diagnostics"].startswith("ED data declared Hex is not valid hexadecimal"), issue


class TestDocumentFileName:
    """TXA-16, the unique document file name, is an identifier (v2-to-FHIR IG TXA[DocumentReference]: identifier[1], ST[Identifier])."""

    @pytest.mark.parametrize(("event", "structure"), [("T02", "MDM_T02"), ("T01", "MDM_T01")])
    def test_file_name_is_an_identifier_with_its_full_path(self, converter, event, structure):
        obx = TEXT if event == "T02" else ()
        data = _mdm(event, structure, number="DOK-1", obx=obx).replace(b"|epikrise.txt|", b"|/arkiv/dips/2025/epikrise-1.txt|")
        resource = _entry(_one(converter, data), "DocumentReference")["resource"]
        assert {"value": "/arkiv/dips/2025/epikrise-1.txt"} in resource["identifier"]
        assert resource["masterIdentifier"] == {"system": "urn:helsebro:local:DIPS:id", "value": "DOK-1"}

    def test_file_name_leaves_the_documents_identity_to_txa_12(self, converter):
        """Without a system the file name never keys the document: its id and conditional URL stay TXA-12's."""
        with_name = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=TEXT)), "DocumentReference")
        without = _entry(_one(converter, _mdm("T02", "MDM_T02", number="DOK-1", obx=TEXT).replace(b"|epikrise.txt|", b"||")), "DocumentReference")
        assert with_name["resource"]["id"] == without["resource"]["id"]
        assert with_name["request"] == without["request"]
        assert with_name["request"]["url"].endswith("identifier=urn:helsebro:local:DIPS:id|DOK-1")
        assert with_name["resource"]["identifier"][0] == {"system": "urn:helsebro:local:DIPS:id", "value": "DOK-1"}
        assert without["resource"]["identifier"] == [{"system": "urn:helsebro:local:DIPS:id", "value": "DOK-1"}]


# --- REF: a referral and its cancel ----------------------------------------------------------------


def _ref(event: str, *, structure: str = "REF_I12", status: str = "P^Pending^HL70283") -> bytes:
    return _message(
        "MSH|^~\\&|INFODOC|LEGESENTERET^987654325^ENH|DIPS|STOLAV|20250201091500||" + f"REF^{event}{'^' + structure if structure else ''}|REF-{event}|P|2.5.1",
        f"RF1|{status}|S^STAT^HL70280|Med^Medical^HL70281||O^Outpatient^HL70284|HEN-5001^INFODOC|20250201|20250801|20250201",
        "PRD|RP^Referring Provider^HL70286|FASTLEGE^FRIDA|||||9144901^HPR",
        "PRD|RT^Referred to Provider^HL70286|KARDIOLOG^KARL|||||9144902^HPR|||ST. OLAVS HOSPITAL^^^^^^ENH^^^974749025",
        PID,
        "DG1|1||I20.9^Angina pectoris^ICD10|||W",
    )


class TestReferral:
    def test_a_referral_is_a_service_request_of_the_patient(self, converter):
        """I12 gives an active referral ServiceRequest: RF1-6 its identifier, RF1-2 its priority, DG1 its reason, the patient its subject."""
        bundle = _one(converter, _ref("I12"))
        request = _entry(bundle, "ServiceRequest")["resource"]
        assert (request["status"], request["intent"], request["priority"]) == ("active", "order", "stat")
        assert request["identifier"][0]["value"] == "HEN-5001"
        assert REFERRAL in request["category"][0]["coding"]
        assert {"code": "I20.9", "display": "Angina pectoris", "system": ICD10} in [c for r in request["reasonCode"] for c in r["coding"]]
        patient = _entry(bundle, "Patient")
        assert request["subject"] == {"reference": patient["fullUrl"]}
        assert [(i["system"], i["value"]) for i in patient["resource"]["identifier"]] == [(FNR, PATIENT)]

    def test_the_providers_are_requester_and_performers(self, converter):
        """The referring provider (PRD RP) is the requester, the referred-to one (RT) and its organisation the performers, by HPR-nummer and organisasjonsnummer."""
        request = _entry(_one(converter, _ref("I12")), "ServiceRequest")["resource"]
        assert request["requester"] == {"identifier": {"system": HPR, "value": "9144901"}, "display": "FRIDA FASTLEGE"}
        assert request["performer"] == [
            {"identifier": {"system": HPR, "value": "9144902"}, "display": "KARL KARDIOLOG"},
            {"type": "Organization", "identifier": {"system": ORGNR, "value": "974749025"}, "display": "ST. OLAVS HOSPITAL"},
        ]

    def test_a_cancel_revokes_the_same_referral(self, converter):
        """I14 writes the ServiceRequest I12 made, revoked, though RF1-1 still says pending; MSH-9.3 may be empty."""
        made = _entry(_one(converter, _ref("I12")), "ServiceRequest")
        cancelled = _entry(_one(converter, _ref("I14", structure="")), "ServiceRequest")
        assert (cancelled["fullUrl"], cancelled["request"]) == (made["fullUrl"], made["request"])
        assert cancelled["resource"]["status"] == "revoked"

    def test_a_rejected_referral_is_revoked(self, converter):
        """RF1-1 R (rejected) makes the referral revoked (table 0283)."""
        request = _entry(_one(converter, _ref("I12", status="R^Rejected^HL70283")), "ServiceRequest")["resource"]
        assert request["status"] == "revoked"


# --- The public corpus through `helsebro convert` ------------------------------------------------------

APPOINTMENT_STATUS = {"SIU_S13": "booked", "SIU_S14": "booked", "SIU_S15": "cancelled", "SIU_S16": "cancelled", "SIU_S17": "entered-in-error", "SIU_S26": "noshow"}
DOCUMENT_RELATION = {"MDM_T01": None, "MDM_T05": "appends", "MDM_T06": "appends", "MDM_T09": "replaces", "MDM_T10": "replaces"}
REFERRAL_STATUS = {"REF_I12": "active", "REF_I14": "revoked"}


def _corpus_files(shared: Path, types: set[str]) -> list[tuple[str, Path]]:
    """(type, file) of the corpus index's messages of *types*, each file once."""
    root = shared / "corpus" / "hl7v2"
    rows = [r.split("\t") for r in (root / "CORPUS_INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return sorted({(r[2], root / r[0].split("#")[0]) for r in rows if r[2] in types})


@pytest.fixture(scope="module")
def corpus(shared_dir, tmp_path_factory):
    """Every corpus message of these types (and the S12 bookings they change), converted by one `helsebro convert --out` run: (type, Bundle)."""
    files = _corpus_files(shared_dir, {"SIU_S12", *APPOINTMENT_STATUS, *DOCUMENT_RELATION, *REFERRAL_STATUS})
    out = tmp_path_factory.mktemp("converted")
    code = main(["convert", "--out", str(out), *[str(p) for _, p in files]])
    docs = [json.loads(line) for _, p in files for line in (out / f"{p.name}.ndjson").read_text(encoding="utf-8").splitlines()]
    assert (code, len(docs)) == (0, len(files)), [d.get("issue") for d in docs if d["resourceType"] != "Bundle"]
    for doc in docs:
        Bundle.model_validate(doc)
    return [(kind, doc) for (kind, _), doc in zip(files, docs)]


@pytest.mark.corpus
class TestCorpus:
    def test_every_appointment_event_updates_the_bookings_appointment(self, corpus):
        """The corpus's S13-S17 and S26 write the Appointment its S12 samples made (SCH-1 12345), with the event's status."""
        booked = {_entry(doc, "Appointment")["request"]["url"] for kind, doc in corpus if kind == "SIU_S12" and "12345" in json.dumps(doc)}
        seen = set()
        for kind, doc in corpus:
            if kind in APPOINTMENT_STATUS:
                entry = _entry(doc, "Appointment")
                assert entry["request"]["url"] in booked, kind
                assert entry["resource"]["status"] == APPOINTMENT_STATUS[kind], kind
                seen.add(kind)
        assert seen == set(APPOINTMENT_STATUS)

    def test_every_document_notification_is_its_txa_12_document(self, corpus):
        """The corpus's T01/T05/T06/T09/T10 each give the DocumentReference of TXA-12, related to TXA-13 as the event says."""
        seen = set()
        for kind, doc in corpus:
            if kind in DOCUMENT_RELATION:
                document = _entry(doc, "DocumentReference")["resource"]
                assert document["masterIdentifier"]["value"] == "1.2.840.317.5947431.51.20080131160038", kind
                relation = [(r["code"], r["target"]["identifier"]["value"]) for r in document.get("relatesTo", [])]
                expected = DOCUMENT_RELATION[kind]
                assert relation == ([(expected, "1.2.840.317.5947431.51.20080131155715")] if expected else []), kind
                assert document["content"], kind
                seen.add(kind)
        assert seen == set(DOCUMENT_RELATION)

    def test_a_booked_resources_duration_ends_its_period(self, corpus):
        """The corpus's S12 colonoscopy books doctor, room and colonoscope from 09:30 for 50 min (AIP-9, AIL-9, AIG-11): each period ends 10:20."""
        periods = [
            p["period"]
            for kind, doc in corpus
            if kind == "SIU_S12"
            for p in _entry(doc, "Appointment")["resource"]["participant"]
            if p.get("period", {}).get("start") == "2021-09-24T09:30:00+02:15"
        ]
        assert len(periods) >= 3 and all(p.get("end") == "2021-09-24T10:20:00+02:15" for p in periods), periods

    def test_every_referral_is_one_service_request(self, corpus):
        """The corpus's I12 and I14 write one referral ServiceRequest (RF1-6 226839) for the patient: active, then revoked."""
        urls = set()
        for kind, doc in corpus:
            if kind in REFERRAL_STATUS:
                entry = _entry(doc, "ServiceRequest")
                assert entry["resource"]["status"] == REFERRAL_STATUS[kind], kind
                assert REFERRAL in entry["resource"]["category"][0]["coding"]
                assert entry["resource"]["subject"] == {"reference": _entry(doc, "Patient")["fullUrl"]}
                urls.add(entry["request"]["url"])
        assert len(urls) == 1 and "226839" in urls.pop()
