"""A patient's and an organisation's identifiers from HL7 v2 (CX, XON), through `helsebro convert`.

An Identifier never contradicts itself: its type (Volven 8116) follows what the number is, as its
system does, whatever CX-5 claims; a national id or organisasjonsnummer written with spaces is
the same number, the same Patient or Organization, as the one written without; and a repetition
with no number adds no Identifier, nor stops another repetition from naming the patient.
Synthetic numbers only (Skatteetaten Tenor, month + 80).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from schemas.identity import DNR_SYSTEM, ENH_SYSTEM, FHN_SYSTEM, FNR_SYSTEM

FNR = "15866112379"  # Tenor, month + 80
DNR = "55866110270"  # D-nummer (day + 40), Tenor
FHN = "81234567802"  # felles hjelpenummer
HNR = "01415010016"  # H-nummer (month + 40)
ORGNR = "974749025"
STOLAV = "urn:oid:2.16.578.1.12.4.1.7.3.2.1"  # config/engine.yaml, identifiers.authorities
V8116 = "urn:oid:2.16.578.1.12.4.1.1.8116"


def adt(pid3: str, *, event: str = "A01", mrg: str | None = None, pd1: str | None = None) -> str:
    pv1 = ["PV1", "1", "I", "MED^301^2^STOLAV", "", "", "", "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"] + [""] * 11 + ["V1^^^STOLAV^VN"]
    segments = [
        f"MSH|^~\\&|DIPS|STOLAV^{ORGNR}^ENH|HB|HP|20250115083000||ADT^{event}^ADT_A01|C-1|P|2.5.1|||||NOR|UNICODE UTF-8",
        f"EVN|{event}|20250115083000",
        f"PID|1||{pid3}||NORDMANN^OLA||19610615|M",
    ]
    if pd1:
        segments.append(pd1)
    if mrg:
        segments.append(mrg)
    else:
        segments.append("|".join(pv1))
    return "\r".join(segments) + "\r"


def convert(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> tuple[int, dict[str, Any]]:
    f = tmp_path / "m.hl7"
    f.write_bytes(text.encode("utf-8"))
    code = main(["convert", str(f)])
    out = capsys.readouterr().out
    [doc] = [json.loads(line) for line in out.splitlines()]
    return code, doc


def entries(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in doc["entry"] if e["resource"]["resourceType"] == kind]


def types(identifier: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in identifier.get("type", {}).get("coding", [])]


class TestTheTypeFollowsTheNumber:
    @pytest.mark.parametrize(
        ("pid3", "system", "kind"),
        [
            (f"{DNR}^^^NOR^FNR", DNR_SYSTEM, "DNR"),  # a D-nummer sent as FNR (review H128)
            (f"{FHN}^^^NOR^FNR", FHN_SYSTEM, "FHN"),  # an FH-nummer sent as FNR
            (f"{FNR}^^^NOR^DNR", FNR_SYSTEM, "FNR"),  # a fødselsnummer sent as D-nummer
            (f"{DNR}^^^NOR^fnr", DNR_SYSTEM, "DNR"),  # the type code in lower case
            (f"{HNR}^^^STOLAV^FNR", STOLAV, "HNR"),  # an H-nummer sent as FNR stays the hospital's
        ],
    )
    def test_a_mislabelled_person_number_is_typed_as_what_it_is(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, pid3: str, system: str, kind: str) -> None:
        """The Volven 8116 type is the kind the number is, the kind its system says, not CX-5's."""
        code, doc = convert(capsys, tmp_path, adt(pid3))
        assert code == 0
        [identifier] = entries(doc, "Patient")[0]["resource"]["identifier"]
        assert identifier["system"] == system
        assert types(identifier) == [(V8116, kind)]

    def test_a_generic_national_type_is_kept(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """NNNOR (v2 table 0203) is true of every national id: it is kept as sent (a control)."""
        _, doc = convert(capsys, tmp_path, adt(f"{DNR}^^^NOR^NNNOR"))
        [identifier] = entries(doc, "Patient")[0]["resource"]["identifier"]
        assert types(identifier) == [("http://terminology.hl7.org/CodeSystem/v2-0203", "NNNOR")]

    def test_the_old_identifier_of_a_merge_is_typed_as_what_it_is(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """MRG-1's D-nummer sent as FNR is, on the survivor, a D-nummer as its system says."""
        text = adt(f"{FNR}^^^NOR^FNR", event="A34", mrg=f"MRG|{DNR}^^^NOR^FNR")
        text = text.replace("ADT^A34^ADT_A01", "ADT^A34^ADT_A30")
        _, doc = convert(capsys, tmp_path, text)
        survivor = next(e["resource"] for e in entries(doc, "Patient") if e["resource"]["identifier"][0]["value"] == FNR)
        [old] = [i for i in survivor["identifier"] if i.get("use") == "old"]
        assert (old["system"], types(old)) == (DNR_SYSTEM, [(V8116, "DNR")])


class TestOneNumberOneIdentity:
    @pytest.mark.parametrize("written", ["158661 12379", "1586 6112 379", f" {FNR} "])
    def test_a_national_id_with_spaces_is_the_same_patient(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, written: str) -> None:
        """`158661 12379` is the fødselsnummer 15866112379: the same Identifier value and the same conditional update."""
        _, plain = convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        _, spaced = convert(capsys, tmp_path, adt(f"{written}^^^NOR^FNR"))
        [p], [s] = entries(plain, "Patient"), entries(spaced, "Patient")
        assert s["resource"]["identifier"][0]["value"] == FNR
        assert s["request"]["url"] == p["request"]["url"]

    def test_a_local_number_keeps_its_spaces(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """Only a number that goes under a national system is written without spaces (a control)."""
        _, doc = convert(capsys, tmp_path, adt("AB 4471^^^STOLAV^PI"))
        assert entries(doc, "Patient")[0]["resource"]["identifier"][0]["value"] == "AB 4471"

    def test_an_organisasjonsnummer_with_spaces_is_the_same_organisation(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """The GP office's `974 749 025` (XON-10, type ENH) is the organisasjonsnummer 974749025, once."""
        pd1 = "PD1|||LEGESENTERET^^^^^BRREG^ENH^^^{}"
        _, plain = convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR", pd1=pd1.format("981234561")))
        _, spaced = convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR", pd1=pd1.format("981 234 561")))
        office = [e for e in entries(spaced, "Organization") if e["resource"].get("name") == "LEGESENTERET"]
        [o] = office
        assert o["resource"]["identifier"] == [{"system": ENH_SYSTEM, "value": "981234561"}]
        assert o["request"]["url"] in {e["request"]["url"] for e in entries(plain, "Organization")}


class TestAnEmptyRepetition:
    def test_an_empty_fnr_beside_a_d_nummer_names_the_patient_by_the_d_nummer(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """`^^^NOR^FNR~<DNR>^^^NOR^DNR`: the message is converted, and the number-less FNR adds no Identifier."""
        code, doc = convert(capsys, tmp_path, adt(f"^^^NOR^FNR~{DNR}^^^NOR^DNR"))
        assert code == 0
        [patient] = entries(doc, "Patient")
        assert patient["request"]["url"] == f"Patient?identifier={DNR_SYSTEM}|{DNR}"
        assert [i.get("value") for i in patient["resource"]["identifier"]] == [DNR]

    def test_an_empty_fnr_alone_is_refused_naming_pid3(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """With no number in any repetition there is no patient to name: refused at PID-3 (a control)."""
        code, doc = convert(capsys, tmp_path, adt("^^^NOR^FNR"))
        assert code == 1
        assert doc["issue"][0]["expression"] == ["PID-3"]


class TestTheAlternateIdIsNeverANationalOne:
    """PID-4 (alternate patient id) is mapped after PID-3, but never as a national id: as a Patient identifier
    under a national system it would outrank a local PID-3 as the identity and update another person's Patient."""

    LOCAL = "4471^^^STOLAV^PI"

    def _patient(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, pid4: str) -> tuple[int, dict[str, Any]]:
        text = adt(self.LOCAL).replace(f"|{self.LOCAL}|", f"|{self.LOCAL}|{pid4}")
        code, doc = convert(capsys, tmp_path, text)
        return code, (entries(doc, "Patient")[0] if code == 0 else doc)

    @pytest.mark.parametrize(
        "pid4",
        [
            f"88123^^^STOLAV^PI~{FNR}^^^NOR^FNR",  # a national id in the second repetition
            "158661 12379^^^NOR^FNR",  # one written with spaces
            "1586 6112 379",  # with spaces and no type
        ],
    )
    def test_a_national_id_in_any_repetition_does_not_name_the_patient(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, pid4: str) -> None:
        """The Patient stays the one PID-3 names, and carries no national id from PID-4."""
        code, patient = self._patient(capsys, tmp_path, pid4)
        assert code == 0
        assert patient["request"]["url"] == f"Patient?identifier={STOLAV}|4471"
        assert FNR_SYSTEM not in [i["system"] for i in patient["resource"]["identifier"]]

    @pytest.mark.parametrize("pid4", ["158661-12379^^^NOR^FNR", "4471^^^NOR^FNR"])
    def test_a_failing_national_id_in_pid4_refuses_nothing(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, pid4: str) -> None:
        """A number PID-4 calls national that is none is not stored, and the message is converted."""
        code, patient = self._patient(capsys, tmp_path, pid4)
        assert code == 0
        assert [i["value"] for i in patient["resource"]["identifier"]] == ["4471"]

    def test_a_local_id_after_a_national_one_is_kept(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """`<FNR>^^^NOR^FNR~88123^^^STOLAV^PI`: the national one is left out, the local one kept."""
        code, patient = self._patient(capsys, tmp_path, f"{FNR}^^^NOR^FNR~88123^^^STOLAV^PI")
        assert code == 0
        assert [(i["system"], i["value"]) for i in patient["resource"]["identifier"]] == [(STOLAV, "4471"), (STOLAV, "88123")]
