"""The patient's own observations of v2.7 and later (PATIENT_OBSERVATION): placed, mapped, never refused.

v2.7 put an OBX right after PID, before the stay and the orders, for what is observed about the
patient rather than for an order. The v2.5.1 structures have no place for it, and a lab message
carrying one was refused. Helsebro merges that one group into the structures it reads
(adapters/hl7v2/groups.py) and maps it as the v2-to-FHIR IG does: an Observation about the patient,
in no report. An OBX where no version has a place for it is still refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.groups import Group, build
from router.cli import main

FNR = "15866112379"  # synthetic (Tenor, month + 80)
MSH = "MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||{type}|C1|P|2.8"
PID = f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^KARI||19610615|F"
WEIGHT = "OBX|1|NM|29463-7^Body weight^LN||72|kg|||||F"  # no OBX-14: it must not take the order's time
WEIGHT_NOTE = "NTE|1||Weighed on arrival"
PV1 = "PV1|1|I|MED^301^2^STOLAV" + "|" * 16 + "V1^^^STOLAV^VN"
ORDER = ["ORC|RE|ORD-1", "OBR|1|ORD-1|LAB-1^LIS|24331-1^Lipid panel^LN|||20250115090000", "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F"]


def _oru(*after_pid: str) -> str:
    return "\r".join([MSH.format(type="ORU^R01^ORU_R01"), PID, *after_pid]) + "\r"


def _convert(capsys, tmp_path: Path, text: str) -> tuple[int, list[dict]]:
    f = tmp_path / "m.hl7"
    f.write_bytes(text.encode("utf-8"))
    code = main(["convert", str(f)])
    out, _ = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()]


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _full_url(bundle: dict, kind: str) -> str:
    [url] = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    return url


def _observation(bundle: dict, code: str) -> dict:
    [obs] = [o for o in _resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == code]
    return obs


def _url_of(bundle: dict, resource: dict) -> str:
    [url] = [e["fullUrl"] for e in bundle["entry"] if e["resource"] is resource]
    return url


def _names(group: Group) -> list:
    """The tree as nested lists: a group is [its name, its items...], a segment its name."""
    return [group.name, *(_names(i) if isinstance(i, Group) else i.name for i in group.items)]


class TestPlacing:
    def test_an_obx_right_after_pid_is_the_patients_observation_with_its_notes(self):
        """ORU^R01: the OBX and its NTE between PID and the stay land in PATIENT_OBSERVATION; the order keeps its own result."""
        root = build(tokenize(_oru(WEIGHT, WEIGHT_NOTE, PV1, *ORDER)), "ORU_R01")
        assert root.misplaced == []
        assert _names(root) == ["ORU_R01", "MSH", ["PATIENT_RESULT",
            ["PATIENT", "PID", ["PATIENT_OBSERVATION", "OBX", "NTE"], ["VISIT", "PV1"]],
            ["ORDER_OBSERVATION", "ORC", "OBR", ["OBSERVATION", "OBX"]]]]

    @pytest.mark.parametrize("structure, patient, body", [
        ("OUL_R22", "PATIENT", ["SPM|1|S1", "OBR|1|ORD-1|LAB-1|CHOL", "OBX|1|NM|CHOL||5.2"]),
        ("OUL_R23", "PIDPD1NTE_SUPPGRP", ["SPM|1|S1", "SAC|||C1", "OBR|1|ORD-1|LAB-1|CHOL", "OBX|1|NM|CHOL||5.2"]),
        ("OUL_R24", "PIDPD1NTE_SUPPGRP", ["OBR|1|ORD-1|LAB-1|CHOL", "OBX|1|NM|CHOL||5.2"]),
    ])
    def test_each_oul_structure_places_it_in_its_patient_group(self, structure, patient, body):
        """OUL^R22–R24 (the patient group under its v2.5.1 name): the OBX after PID is the patient's, not misplaced."""
        text = "\r".join([MSH.format(type=f"OUL^{structure[4:]}^{structure}"), PID, WEIGHT, WEIGHT_NOTE, PV1, *body])
        root = build(tokenize(text), structure)
        assert root.misplaced == []
        [group] = root.groups(patient)
        assert _names(group) == [patient, "PID", ["PATIENT_OBSERVATION", "OBX", "NTE"]]

    def test_an_obx_after_the_stay_is_still_out_of_place(self):
        """v2.7 puts the patient's observations before PV1, not after: an OBX there has no place in any version."""
        root = build(tokenize(_oru(PV1, WEIGHT, *ORDER)), "ORU_R01")
        assert [s.name for s in root.misplaced] == ["OBX"]


class TestMapping:
    def test_the_patients_observation_is_about_the_patient_in_no_report(self, capsys, tmp_path):
        """v2.8 ORU^R01: the weight is an Observation with subject the Patient, its NTE a note, listed by no report;
        the order's result stays under its DiagnosticReport."""
        code, [bundle] = _convert(capsys, tmp_path, _oru(WEIGHT, WEIGHT_NOTE, PV1, *ORDER))
        assert code == 0
        Bundle.model_validate(bundle)
        weight, cholesterol = _observation(bundle, "29463-7"), _observation(bundle, "2093-3")
        assert weight["subject"] == {"reference": _full_url(bundle, "Patient")}
        assert weight["note"] == [{"text": "Weighed on arrival"}]
        assert weight["valueQuantity"]["value"] == 72
        [report] = _resources(bundle, "DiagnosticReport")
        assert report["result"] == [{"reference": _url_of(bundle, cholesterol)}]

    def test_it_reads_neither_the_stay_nor_the_order(self, capsys, tmp_path):
        """As an ADT's observation: not tied to the stay, and without OBX-14 it takes no time from the order's OBR-7."""
        code, [bundle] = _convert(capsys, tmp_path, _oru(WEIGHT, PV1, *ORDER))
        assert code == 0
        Bundle.model_validate(bundle)
        assert _resources(bundle, "Encounter") != []
        weight = _observation(bundle, "29463-7")
        assert "encounter" not in weight and "effectiveDateTime" not in weight
        assert "encounter" in _observation(bundle, "2093-3")

    def test_oul_r22_maps_it_too(self, capsys, tmp_path):
        """OUL^R22: the patient's observation beside the specimen's report, about the patient."""
        text = "\r".join([MSH.format(type="OUL^R22^OUL_R22"), PID, WEIGHT, WEIGHT_NOTE, PV1,
                          "SPM|1|S1&LIS||BLD^Blood^L", *ORDER[1:]]) + "\r"
        code, [bundle] = _convert(capsys, tmp_path, text)
        assert code == 0
        Bundle.model_validate(bundle)
        weight = _observation(bundle, "29463-7")
        assert weight["subject"] == {"reference": _full_url(bundle, "Patient")}
        assert weight["note"] == [{"text": "Weighed on arrival"}]
        assert all({"reference": _url_of(bundle, weight)} not in r.get("result", []) for r in _resources(bundle, "DiagnosticReport"))


class TestStillRefused:
    @pytest.mark.parametrize("segments", [
        [PV1, WEIGHT, *ORDER],  # after the stay, before any order
        [*ORDER, "CTI|STUDY-1", WEIGHT],  # after the last result group's CTI, where no OBSERVATION can start
    ])
    def test_an_obx_no_version_has_a_place_for_is_refused(self, capsys, tmp_path, segments):
        """Only the v2.7 place is new: an OBX elsewhere with no order before it is still refused at that OBX."""
        code, [outcome] = _convert(capsys, tmp_path, _oru(*segments))
        assert code == 1 and outcome["resourceType"] == "OperationOutcome"
        assert "no place for it" in outcome["issue"][0]["diagnostics"]
