"""The stay's and patient's fields issue 4 found unread on the corpus, through `helsebro convert`.

PV1-4 (admission type), PV1-5 (preadmit number), PV1-8 and PV1-9 (referring and consulting
doctors), PV1-13 (re-admission), PV1-16 (VIP indicator), PID-4 (alternate patient id) and PID-30
`N` (not deceased), mapped as the v2-to-FHIR IG's PV1[Encounter] and PID[Patient] sheets say, with
the Norwegian identities (HPR numbers, configured hospital systems) and without made-up code
systems. Each is driven through the CLI with `--unmapped`, valued and empty; every Bundle is
validated. Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main
from schemas.identity import first_valid_fnr

HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
STOLAV = "urn:oid:2.16.578.1.12.4.1.7.3.2.1"  # config/engine.yaml: STOLAV's hospital numbers
V2_0007 = "http://terminology.hl7.org/CodeSystem/v2-0007"
V2_0092 = "http://terminology.hl7.org/CodeSystem/v2-0092"
V2_0099 = "http://terminology.hl7.org/CodeSystem/v2-0099"
NEW_FIELDS = ["PV1-4", "PV1-5", "PV1-8", "PV1-9", "PV1-13", "PV1-16", "PID-4", "PID-30"]

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
ATTENDING = "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
FASTLEGE = "9144911^FASTLEGE^FRIDA^^^^^^HPR^^^^HPR"
KONSULENT = "9144922^KONSULENT^KNUT^^^^^^HPR^^^^HPR"


def _segment(name: str, fields: dict[int, str]) -> str:
    parts = [name] + [""] * max(fields)
    for number, value in fields.items():
        parts[number] = value
    return "|".join(parts)


def _pid(**fields: str) -> str:
    base = {1: "1", 3: "15866112379^^^NOR^FNR", 5: "NORDMANN^OLA^K", 7: "19610615", 8: "M"}
    return _segment("PID", base | {int(k[1:]): v for k, v in fields.items()})


def _pv1(**fields: str) -> str:
    base = {1: "1", 2: "I", 3: "MED^301^2^STOLAV", 7: ATTENDING, 19: "V25-0001^^^STOLAV^VN", 44: "20250110082500"}
    return _segment("PV1", base | {int(k[1:]): v for k, v in fields.items()})


def _adt(pid: str, pv1: str) -> bytes:
    return ("\r".join([MSH.format(type="ADT^A01^ADT_A01", ctrl="ISS4-A01"), "EVN|A01|20250110083000", pid, pv1]) + "\r").encode()


def _oru(pv1: str) -> bytes:
    segments = [MSH.format(type="ORU^R01^ORU_R01", ctrl="ISS4-ORU"), _pid(), pv1, "OBR|1|P-1^DIPS|F-1^LAB|HB^Hemoglobin^L|||20250110080000", "OBX|1|NM|HB^Hemoglobin^L||13.5|g/dL|||||F"]
    return ("\r".join(segments) + "\r").encode()


def _convert(tmp_path, capsys, data: bytes) -> tuple[dict, list[str]]:
    """`helsebro convert --unmapped` of one message: its valid Bundle and the fields it lists as unread."""
    path = tmp_path / "m.hl7"
    path.write_bytes(data)
    assert main(["convert", "--unmapped", str(path)]) == 0
    out, err = capsys.readouterr()
    [doc] = [json.loads(line) for line in out.splitlines()]
    assert doc["resourceType"] == "Bundle", doc
    Bundle.model_validate(doc)
    lines = [x for x in err.splitlines() if "unmapped:" in x]
    unread = lines[0].split("unmapped: ", 1)[1].split(", ") if lines else []
    return doc, unread


def _one(doc: dict, kind: str) -> dict:
    [resource] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == kind]
    return resource


def _participants(doc: dict) -> list[tuple[str, str]]:
    """Each participant of the stay as (type code, who): the HPR number of its Practitioner (a reference into the
    Bundle), of its logical reference (`identifier`), or its display."""
    practitioners = {e["fullUrl"]: e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"}
    out = []
    for p in _one(doc, "Encounter").get("participant", []):
        who = p["individual"]
        if "reference" in who:
            [who_is] = [i["value"] for i in practitioners[who["reference"]]["identifier"] if i["system"] == HPR]
        elif "identifier" in who:
            assert who["identifier"]["system"] == HPR, who
            who_is = who["identifier"]["value"]
        else:
            who_is = who["display"]
        out.append((p["type"][0]["coding"][0]["code"], who_is))
    return out


def _practitioner_numbers(doc: dict) -> list[str]:
    return [e["resource"]["identifier"][0]["value"] for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"]


class TestReferringAndConsultingDoctors:
    def test_each_repetition_is_a_participant_by_hpr_number_and_name(self, tmp_path, capsys):
        """PV1-8 (two repetitions, the second without an HPR number) and PV1-9: REF and CON participants, each a
        logical reference of his own repetition (the HPR number under the HPR system, his name), none left unread."""
        doc, unread = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p8=f"{FASTLEGE}~^HENVISER^HANS", p9=KONSULENT)))
        assert _participants(doc) == [("ATND", "9144900"), ("REF", "9144911"), ("REF", "HANS HENVISER"), ("CON", "9144922")]
        [frida] = [p["individual"] for p in _one(doc, "Encounter")["participant"] if p["individual"].get("identifier", {}).get("value") == "9144911"]
        assert frida == {"identifier": {"system": HPR, "value": "9144911"}, "display": "FRIDA FASTLEGE"}
        assert _practitioner_numbers(doc) == ["9144900"]  # the attending doctor's alone: a referrer is named, not written
        assert not {"PV1-8", "PV1-9"} & set(unread), unread

    def test_one_local_number_with_two_names_is_not_refused(self, tmp_path, capsys):
        """A sender's local number naming the referring doctor and, with another name, the admitting one (as eight
        public PPR samples do): the stay converts, the referrer named under that number by his own name."""
        pv1 = _pv1(p7="0100^ANDERSON^CARL", p8="0148^ADDISON^JAMES", p17="0148^ANDERSON^CARL")
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(), pv1))
        [ref] = [p["individual"] for p in _one(doc, "Encounter")["participant"] if p["type"][0]["coding"][0]["code"] == "REF"]
        assert (ref["identifier"]["value"], ref["display"]) == ("0148", "JAMES ADDISON")
        assert ref["identifier"]["system"] != HPR

    @pytest.mark.parametrize("value", ["", '""', "^^^^^^^^"], ids=["absent", "explicit-null", "no-number-no-name"])
    def test_no_doctor_no_participant(self, tmp_path, capsys, value):
        """Empty, `""` or only separators in PV1-8/PV1-9: the attending doctor alone, no REF or CON written with no one."""
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p8=value, p9=value)))
        assert _participants(doc) == [("ATND", "9144900")]

    def test_a_result_message_names_them_on_the_stay(self, tmp_path, capsys):
        """An ORU's stay (context, created only when missing) has its REF and CON doctors too."""
        doc, _ = _convert(tmp_path, capsys, _oru(_pv1(p8=FASTLEGE, p9=KONSULENT)))
        assert _participants(doc) == [("ATND", "9144900"), ("REF", "9144911"), ("CON", "9144922")]


class TestStayFields:
    @pytest.mark.parametrize(
        ("pv1_4", "coding"),
        [
            ("E", {"system": V2_0007, "code": "E", "display": "Emergency"}),  # a bare table 0007 code: the IG's map
            ("E^Emergency^HL70007", {"system": V2_0007, "code": "E", "display": "Emergency"}),
            ("EL^Elektiv", {"code": "EL", "display": "Elektiv"}),  # the sender's own code: no system is made up
        ],
        ids=["bare-0007", "named-0007", "local"],
    )
    def test_admission_type_is_the_stay_type(self, tmp_path, capsys, pv1_4, coding):
        """PV1-4 → Encounter.type: HL7 table 0007 when the code is one of it, else the code as sent, without a system."""
        doc, unread = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p4=pv1_4)))
        assert _one(doc, "Encounter")["type"] == [{"coding": [coding]}]
        assert "PV1-4" not in unread, unread

    def test_preadmit_readmission_and_vip(self, tmp_path, capsys):
        """PV1-5 → hospitalization.preAdmissionIdentifier under STOLAV's configured system; PV1-13 R → reAdmission
        (table 0092); PV1-16 → specialCourtesy, the site's own code without a system."""
        doc, unread = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p5="P25-0042^^^STOLAV^VN", p13="R", p16="S^Skjermet")))
        stay = _one(doc, "Encounter")["hospitalization"]
        assert (stay["preAdmissionIdentifier"]["system"], stay["preAdmissionIdentifier"]["value"]) == (STOLAV, "P25-0042")
        assert stay["reAdmission"] == {"coding": [{"system": V2_0092, "code": "R", "display": "Re-admission"}]}
        assert stay["specialCourtesy"] == [{"coding": [{"code": "S", "display": "Skjermet"}]}]
        assert not {"PV1-5", "PV1-13", "PV1-16"} & set(unread), unread

    def test_a_vip_code_of_hl7_table_0099_keeps_that_system(self, tmp_path, capsys):
        """PV1-16 naming HL70099: HL7's v2 table, as any CWE.3 HL7nnnn."""
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p16="VIP^very important person^HL70099")))
        [courtesy] = _one(doc, "Encounter")["hospitalization"]["specialCourtesy"]
        assert courtesy["coding"][0]["system"] == V2_0099

    @pytest.mark.parametrize("value", ["", '""'], ids=["absent", "explicit-null"])
    def test_empty_fields_write_nothing(self, tmp_path, capsys, value):
        """PV1-4, PV1-5, PV1-13 and PV1-16 empty or `""`: no type and no hospitalization element, and none listed."""
        doc, unread = _convert(tmp_path, capsys, _adt(_pid(), _pv1(p4=value, p5=value, p13=value, p16=value)))
        stay = _one(doc, "Encounter")
        assert "type" not in stay
        assert "hospitalization" not in stay
        assert not set(NEW_FIELDS) & set(unread), unread


class TestPatientFields:
    def test_alternate_id_is_an_identifier_after_the_national_one(self, tmp_path, capsys):
        """PID-4 → Patient.identifier under STOLAV's configured system, after the FNR, which stays the identity."""
        plain, _ = _convert(tmp_path, capsys, _adt(_pid(), _pv1()))
        doc, unread = _convert(tmp_path, capsys, _adt(_pid(p4="88123^^^STOLAV^PI"), _pv1()))
        patient = _one(doc, "Patient")
        assert [(i["system"], i["value"]) for i in patient["identifier"]] == [(FNR, "15866112379"), (STOLAV, "88123")]
        assert patient["id"] == _one(plain, "Patient")["id"]
        assert "PID-4" not in unread, unread

    def test_a_national_id_in_pid4_does_not_change_which_patient_is_updated(self, tmp_path, capsys):
        """PID-3 a hospital number, PID-4 a valid fødselsnummer: the Patient is still the one PID-3 names.

        Before: the FNR, mapped from PID-4 under the national system, outranked the local PID-3 as the
        identity, so the message updated the Patient of that FNR (maybe another person's: a mother's)."""
        local = "88123^^^STOLAV^PI"
        plain, _ = _convert(tmp_path, capsys, _adt(_pid(p3=local), _pv1()))
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(p3=local, p4="15866112379^^^NOR^FNR"), _pv1()))
        patient = _one(doc, "Patient")
        assert patient["id"] == _one(plain, "Patient")["id"]
        assert FNR not in [i["system"] for i in patient["identifier"]]

    def test_another_persons_national_id_in_pid4_is_not_stored_on_this_patient(self, tmp_path, capsys):
        """PID-3 one FNR, PID-4 another valid one: the Patient must not carry the second (a later message for
        that person would find this Patient by it)."""
        other = first_valid_fnr(1, 3, 80, 100, synthetic=True)
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(p4=f"{other}^^^NOR^FNR"), _pv1()))
        patient = _one(doc, "Patient")
        assert [(i["system"], i["value"]) for i in patient["identifier"]] == [(FNR, "15866112379")]

    def test_a_failing_national_id_in_pid4_is_not_stored(self, tmp_path, capsys):
        """A fødselsnummer with bad check digits in PID-4 is never stored under the FNR system, nor refuses the stay."""
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(p4="15866112378^^^NOR^FNR"), _pv1()))
        assert "15866112378" not in json.dumps(doc)

    @pytest.mark.parametrize(
        ("pid29", "pid30", "expected"),
        [
            ("", "N", {"deceasedBoolean": False}),
            ("", "Y", {"deceasedBoolean": True}),
            ("20250109221500", "Y", {"deceasedDateTime": "2025-01-09T22:15:00+01:00"}),
            ("", "", {}),
        ],
        ids=["not-deceased", "deceased", "time-of-death", "absent"],
    )
    def test_death_indicator(self, tmp_path, capsys, pid29, pid30, expected):
        """PID-30 N is deceasedBoolean false (the IG's Yes/NoIndicator), Y true; a time of death (PID-29) outranks it."""
        doc, _ = _convert(tmp_path, capsys, _adt(_pid(p29=pid29, p30=pid30), _pv1()))
        patient = _one(doc, "Patient")
        assert {k: v for k, v in patient.items() if k.startswith("deceased")} == expected
