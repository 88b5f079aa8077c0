"""Tests for router/mapping/fhir_model.py: a value read from a message is made to fit its FHIR type, or refused at its position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main

ROOT = Path(__file__).resolve().parents[3]
DIALOG = ROOT / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
FNR = "15866112379"  # synthetic (Tenor, month + 80)
V2_0078 = "http://terminology.hl7.org/CodeSystem/v2-0078"


def _oru(obx: str) -> str:
    """A lab result message whose one OBX is *obx* (from OBX-2 on)."""
    return "\r".join([
        "MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C-1|P|2.5.1",
        f"PID|1||{FNR}^^^NOR^FNR",
        "OBR|1||LAB-1^LIS|PANEL^Panel|||20250115080000",
        f"OBX|1|{obx}",
    ]) + "\r"


def _convert(capsys, tmp_path: Path, text: str, *, name: str = "m.hl7") -> tuple[int, dict]:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    code = main(["convert", str(path)])
    [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, doc


def _observation(doc: dict) -> dict:
    [obs] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
    return obs


class TestCodeValues:
    def test_a_padded_code_is_stripped_and_the_bundle_is_valid(self, capsys, tmp_path):
        """OBX-3.1 ` NPU02319 `, OBX-3.4 `L1<tab>` (CWE → Coding.code) and an unlisted flag `ZZ ` kept by table 0078 give their codes unpadded."""
        code, doc = _convert(capsys, tmp_path, _oru("NM| NPU02319 ^Hb^^L1\t^Alt||130|g/L||ZZ |||F"))
        assert code == 0, doc
        Bundle.model_validate(doc)
        obs = _observation(doc)
        assert obs["code"]["coding"] == [{"code": "NPU02319", "display": "Hb"}, {"code": "L1", "display": "Alt"}]
        assert obs["interpretation"] == [{"coding": [{"system": V2_0078, "code": "ZZ"}]}]

    def test_a_padded_code_finds_its_table_entry(self, capsys, tmp_path):
        """A flag `H ` is translated as `H` is (table 0078's entry), not kept as an unlisted code."""
        _, padded = _convert(capsys, tmp_path, _oru("NM|NPU02319^Hb||190|g/L||H |||F"), name="padded.hl7")
        _, bare = _convert(capsys, tmp_path, _oru("NM|NPU02319^Hb||190|g/L||H|||F"), name="bare.hl7")
        Bundle.model_validate(padded)
        assert _observation(padded)["interpretation"] == _observation(bare)["interpretation"]
        assert _observation(bare)["interpretation"] != [{"coding": [{"system": V2_0078, "code": "H"}]}]  # the table translates H

    @pytest.mark.parametrize(
        ("obx", "position"),
        [
            ("NM|NPU\t02319^Hb||130|g/L|||||F", "OBX-3[1].1"),  # a tab inside the code
            ("NM|NPU  02319^Hb||130|g/L|||||F", "OBX-3[1].1"),  # two spaces inside
            ("NM|NPU02319^Hb||130|g/L||Z\tZ|||F", "OBX-8[1]"),  # a flag table 0078 keeps
            ("ED|DOC^Document||^TEXT^X  Y^Base64^aGVp||||||F", "OBX-5[1].2"),  # a function's result (fn: mime, args: [OBX-5.2, OBX-5.3]): its first argument
        ],
    )
    def test_whitespace_inside_a_code_refuses_the_message_naming_the_field(self, capsys, tmp_path, obx, position):
        """A code with a tab or a double space inside gives an OperationOutcome at its field, the value not repeated in it."""
        code, doc = _convert(capsys, tmp_path, _oru(obx))
        assert code == 1 and doc["resourceType"] == "OperationOutcome", doc
        issue = doc["issue"][0]
        assert issue["expression"] == [position]
        assert "not a valid FHIR code" in issue["diagnostics"] and "02319" not in issue["diagnostics"] and "X  Y" not in issue["diagnostics"]

    def test_an_xml_code_is_stripped_or_refused_at_its_xpath(self, capsys, tmp_path):
        """A KITH dialogue's topic code sent as ` 6 ` is `6`; sent as `6  7` it refuses the message at the attribute's XPath."""
        original = DIALOG.read_text(encoding="utf-8")
        assert 'TemaKodet V="6"' in original
        code, doc = _convert(capsys, tmp_path, original.replace('TemaKodet V="6"', 'TemaKodet V=" 6 "'), name="d.xml")
        assert code == 0, doc
        Bundle.model_validate(doc)
        [topic] = [e["resource"]["topic"] for e in doc["entry"] if e["resource"]["resourceType"] == "Communication"]
        assert [c["code"] for c in topic["coding"]] == ["6"]
        code, doc = _convert(capsys, tmp_path, original.replace('TemaKodet V="6"', 'TemaKodet V="6  7"'), name="d.xml")
        assert code == 1 and doc["issue"][0]["expression"] == ["/MsgHead/Document/RefDoc/Content/Dialogmelding/Notat/TemaKodet/@V"], doc
