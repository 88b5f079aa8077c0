"""Patient, health personnel and organisation identifiers from KITH XML, through `helsebro convert`.

The KITH twin of test_patient_identity.py (HL7 v2): a national id, HPR-nummer, HER-id or
organisasjonsnummer written with spaces is the same number, the same resource, as the one written
without; a person number typed FNR that is a D-nummer or FH-nummer is typed (Volven 8116) as what
it is, as its system says; an HPR-nummer or HER-id that is not digits is refused, never stored
under its national system; a patient's local number beside the national one is kept, and the
national one names the patient. National examples (../shared/norsk/eksempel), edited here;
synthetic numbers only (Skatteetaten Tenor, month + 80).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from schemas.identity import DNR_SYSTEM, ENH_SYSTEM, FHN_SYSTEM, FNR_SYSTEM, HER_SYSTEM, HPR_SYSTEM
from tests.mappings.test_patient_identity import DNR, FHN, FNR, HNR, ORGNR, V8116

DIALOG = "Dialogmelding/Dialogmelding-v1-1/Helsefaglig dialog.xml"  # MsgHead Patient Ident FNR 13116900216
HENVISNING = "Henvisning/Henvisning_v1-1/henvisning_v1.1_n.xml"  # Message Patient OffId 13116900216
EXAMPLE_FNR = "13116900216"
FNR_IDENT = f'<Ident>\n\t\t\t\t<Id>{EXAMPLE_FNR}</Id>\n\t\t\t\t<TypeId V="FNR" DN="Fødselsnummer" S="2.16.578.1.12.4.1.1.8116"/>\n\t\t\t</Ident>'


def ident(number: str, kind: str, volven: str = "8116") -> str:
    return f'<Ident><Id>{number}</Id><TypeId V="{kind}" DN="{kind}" S="2.16.578.1.12.4.1.1.{volven}"/></Ident>'


def example(shared_dir: Path, name: str, *edits: tuple[str, str]) -> str:
    text = (shared_dir / "norsk" / "eksempel" / name).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def convert(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, shared_dir: Path, tmp_path: Path, text: str) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
    f = tmp_path / "m.xml"
    f.write_text(text, encoding="utf-8")
    code = main(["convert", str(f)])
    [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, doc


def entries(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in doc["entry"] if e["resource"]["resourceType"] == kind]


def types(identifier: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in identifier.get("type", {}).get("coding", [])]


Run = Callable[..., tuple[int, dict[str, Any]]]
"""run(example, *(old, new)): convert the national example with those edits → (exit code, the one document)."""


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, shared_dir: Path, tmp_path: Path) -> Run:
    def go(name: str, *edits: tuple[str, str]) -> tuple[int, dict[str, Any]]:
        return convert(capsys, monkeypatch, shared_dir, tmp_path, example(shared_dir, name, *edits))

    return go


pytestmark = pytest.mark.corpus


class TestOneNumberOneIdentity:
    @pytest.mark.parametrize("written", ["158661 12379", "1586 6112 379", f" {FNR} "])
    def test_a_msghead_national_id_with_spaces_is_the_same_patient(self, run: Run, written: str) -> None:
        """MsgHead Patient `<Id>158661 12379</Id>` is the fødselsnummer 15866112379: one Patient."""
        _, plain = run(DIALOG, (f"<Id>{EXAMPLE_FNR}</Id>", f"<Id>{FNR}</Id>"))
        _, spaced = run(DIALOG, (f"<Id>{EXAMPLE_FNR}</Id>", f"<Id>{written}</Id>"))
        [p], [s] = entries(plain, "Patient"), entries(spaced, "Patient")
        assert s["resource"]["identifier"][0]["value"] == FNR
        assert s["request"] == p["request"]

    def test_a_message_offid_with_spaces_is_the_same_patient(self, run: Run) -> None:
        """Henvisning 1.x Patient/OffId `131169 00216` is 13116900216, as the example writes it."""
        _, plain = run(HENVISNING)
        _, spaced = run(HENVISNING, (f"<OffId>{EXAMPLE_FNR}</OffId>", "<OffId>131169 00216</OffId>"))
        [p], [s] = entries(plain, "Patient"), entries(spaced, "Patient")
        assert s["resource"]["identifier"][0]["value"] == EXAMPLE_FNR
        assert s["request"] == p["request"]

    def test_her_id_hpr_and_orgnr_with_spaces_are_their_digits(self, run: Run) -> None:
        """A HER-id `56 704`, an HPR-nummer `914 4900` and an organisasjonsnummer `974 749 025`: digits."""
        code, doc = run(
            HENVISNING,
            ("<Id>56704</Id>", "<Id>56 704</Id>"),
            ("<Id>9144900</Id>", "<Id>914 4900</Id>"),
            ('<Id>59</Id>\n\t\t\t\t\t<TypeId V="HER" DN="HER-id"/>', '<Id>974 749 025</Id>\n\t\t\t\t\t<TypeId V="ENH" DN="Organisasjonsnummer"/>'),
        )
        assert code == 0
        organisations = {(i["system"], i["value"]) for e in entries(doc, "Organization") for i in e["resource"]["identifier"]}
        practitioners = {(i["system"], i["value"]) for e in entries(doc, "Practitioner") for i in e["resource"]["identifier"]}
        assert {(HER_SYSTEM, "56704"), (ENH_SYSTEM, ORGNR)} <= organisations
        assert (HPR_SYSTEM, "9144900") in practitioners
        assert not any(" " in value for _, value in organisations | practitioners)

    def test_a_local_number_keeps_its_spaces(self, run: Run) -> None:
        """Only a number under a national system is written without spaces (a control): an HNR as sent."""
        code, doc = run(DIALOG, (FNR_IDENT, FNR_IDENT + ident("AB 4471", "HNR")))
        assert code == 0
        [patient] = entries(doc, "Patient")
        assert "AB 4471" in [i["value"] for i in patient["resource"]["identifier"]]


class TestTheTypeFollowsTheNumber:
    @pytest.mark.parametrize(
        ("number", "typed", "system", "kind"),
        [
            (DNR, "FNR", DNR_SYSTEM, "DNR"),  # a D-nummer sent as FNR
            (FHN, "FNR", FHN_SYSTEM, "FHN"),  # an FH-nummer sent as FNR
            (FNR, "DNR", FNR_SYSTEM, "FNR"),  # a fødselsnummer sent as D-nummer
            (FNR, "FNR", FNR_SYSTEM, "FNR"),  # as sent (a control)
        ],
    )
    def test_a_msghead_person_number_is_typed_as_what_it_is(self, run: Run, number: str, typed: str, system: str, kind: str) -> None:
        """MsgHead Patient/Ident: the Volven 8116 type is the kind its system says, not TypeId's."""
        code, doc = run(DIALOG, (FNR_IDENT, ident(number, typed)))
        assert code == 0
        [identifier] = entries(doc, "Patient")[0]["resource"]["identifier"]
        assert (identifier["system"], types(identifier)) == (system, [(V8116, kind)])

    def test_a_message_offid_is_typed_as_what_it_is(self, run: Run) -> None:
        """Henvisning 1.x OffId, TypeOffId FNR, that is a D-nummer: system and type DNR."""
        code, doc = run(HENVISNING, (f"<OffId>{EXAMPLE_FNR}</OffId>", f"<OffId>{DNR}</OffId>"))
        assert code == 0
        [identifier] = entries(doc, "Patient")[0]["resource"]["identifier"]
        assert (identifier["system"], types(identifier)) == (DNR_SYSTEM, [(V8116, "DNR")])


class TestANationalRegisterHoldsOnlyItsOwnNumbers:
    @pytest.mark.parametrize(
        "edit",
        [
            ("<Id>56704</Id>", "<Id>56704A</Id>"),  # the writing institution's HER-id
            ("<Id>258521</Id>", "<Id>HER258521</Id>"),  # a department's HER-id
            ("<Id>9144900</Id>", "<Id>9144900X</Id>"),  # an HPR-nummer
        ],
    )
    def test_a_her_id_or_hpr_with_letters_is_refused(self, run: Run, edit: tuple[str, str]) -> None:
        """Stored as sent, `56704A` would be a HER-id no register holds: refused, as a bad national id is."""
        code, doc = run(HENVISNING, edit)
        assert code == 1
        assert doc["resourceType"] == "OperationOutcome"


class TestTwoIdents:
    @pytest.mark.parametrize("order", ["local first", "national first"])
    def test_a_local_hnr_beside_the_fnr_is_kept_and_the_fnr_names_the_patient(self, run: Run, order: str) -> None:
        """MsgHead Patient with an HNR and an FNR: both Identifiers, the Patient found by the FNR."""
        national, local = ident(FNR, "FNR"), ident(HNR, "HNR")
        both = local + national if order == "local first" else national + local
        code, doc = run(DIALOG, (FNR_IDENT, both))
        assert code == 0
        [patient] = entries(doc, "Patient")
        assert patient["request"]["ifNoneExist"] == f"identifier={FNR_SYSTEM}|{FNR}"
        assert {i["value"] for i in patient["resource"]["identifier"]} == {FNR, HNR}
        [hnr] = [i for i in patient["resource"]["identifier"] if i["value"] == HNR]
        assert hnr["system"] not in (FNR_SYSTEM, DNR_SYSTEM, FHN_SYSTEM)
