"""Organisations in KITH messages under one organisasjonsnummer, through `helsebro convert` and the record.

An organisasjonsnummer names a legal entity (Enhetsregisteret), a HER-id one communication party
in it (Adresseregisteret; FACTS.md §6.3): a municipality's home care service and its GP office
(fastlegekontor) share the municipality's number. Two parties a message names by that number
alone are that one Organization; a party with a HER-id is its own, by the HER-id, with the number
beside it; and a party named by the number alone is never taken for one of those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.fhir.record import open_record
from router.cli import main
from router.testing import isolated_settings
from schemas.identity import ENH_SYSTEM, HER_SYSTEM

CASE = Path(__file__).resolve().parents[2] / "mappings/kith/messages/PLO_HelseopplysningerTilLege.cases/helseopplysninger_til_lege_ny.xml"
ORGNR = "974749025"  # synthetic-safe: the organisasjonsnummer the HL7 v2 tests use
SENDER_HER, OFFICE_HER = "112233", "445566"  # the case's sender (Synthetic kommune) and receiver


def _ident(number: str, kind: str) -> str:
    return f'<Ident><Id>{number}</Id><TypeId V="{kind}" DN="{kind}" S="2.16.578.1.12.4.1.1.9051"/></Ident>'


def _message(sender: str, receiver: str) -> str:
    """The case with the sender's and the receiver's (the GP office's) Idents replaced by *sender* and *receiver*."""
    text = CASE.read_text(encoding="utf-8")
    for her, new in ((SENDER_HER, sender), (OFFICE_HER, receiver)):
        old = f'<Ident>\n\t\t\t\t\t<Id>{her}</Id>\n\t\t\t\t\t<TypeId V="HER" DN="HER-id" S="2.16.578.1.12.4.1.1.9051"/>\n\t\t\t\t</Ident>'
        assert old in text
        text = text.replace(old, new, 1)
    return text


def _convert(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, name: str) -> tuple[int, dict[str, Any]]:
    f = tmp_path / f"{name}.xml"
    f.write_text(text, encoding="utf-8")
    code = main(["convert", str(f)])
    [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, doc


def _of(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in doc["entry"] if e["resource"]["resourceType"] == kind]


def _numbers(org: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["system"], i["value"]) for i in org["identifier"] if i["system"] in (HER_SYSTEM, ENH_SYSTEM)}


ORGNR_ONLY = _ident(ORGNR, "ENH")
SENDER = _ident(SENDER_HER, "HER") + _ident(ORGNR, "ENH")
OFFICE = _ident(OFFICE_HER, "HER") + _ident(ORGNR, "ENH")


class TestOneOrganisationNumber:
    def test_two_parties_named_by_the_number_alone_are_one_organization(self, capsys, tmp_path):
        """Sender and GP office both sent as ENH 974749025 only: converted, one Organization both refer to, the
        office's own name kept on the reference to it; the record holds one Organization."""
        code, doc = _convert(capsys, tmp_path, _message(ORGNR_ONLY, ORGNR_ONLY), "a")
        assert code == 0, doc
        [org] = _of(doc, "Organization")
        assert _numbers(org["resource"]) == {(ENH_SYSTEM, ORGNR)} and org["resource"]["name"] == "Synthetic kommune"
        [comm] = [e["resource"] for e in _of(doc, "Communication") if "recipient" in e["resource"]]
        assert comm["sender"] == {"reference": org["fullUrl"]}
        assert comm["recipient"] == [{"reference": org["fullUrl"], "display": "Synthetic sykehus HF"}]
        record = open_record(isolated_settings(tmp_path / "record"))
        try:
            record.apply(doc)
            [stored] = record.search("Organization", {})
            assert _numbers(stored) == {(ENH_SYSTEM, ORGNR)}
        finally:
            record.close()

    def test_a_party_named_by_the_number_alone_is_never_a_her_party_of_that_number(self, capsys, tmp_path):
        """The record holds the sender and another party under their HER-ids, each with the number beside it. A GP
        office sent by the number alone is then its own Organization, not the sender's (a merge) and not refused
        for matching two; the next such message finds that same one."""
        _, both_her = _convert(capsys, tmp_path, _message(SENDER, OFFICE), "c")
        _, office_by_number = _convert(capsys, tmp_path, _message(SENDER, ORGNR_ONLY), "b")
        assert len(_of(both_her, "Organization")) == 2
        record = open_record(isolated_settings(tmp_path / "record"))
        try:
            record.apply(both_her)
            her_parties = {o["id"] for o in record.search("Organization", {})}
            for _ in range(2):
                record.apply(office_by_number)
                [comm] = [c for c in record.search("Communication", {}) if "recipient" in c]
                [recipient] = comm["recipient"]
                kind, office_id = recipient["reference"].split("/")
                office = record.read(kind, office_id)
                assert office_id not in her_parties and _numbers(office) == {(ENH_SYSTEM, ORGNR)}, office
                assert comm["sender"]["reference"] != recipient["reference"]
            assert len(record.search("Organization", {})) == 3
        finally:
            record.close()

    def test_two_parties_with_their_own_her_ids_are_two_organizations(self, capsys, tmp_path):
        """Sender and office with different HER-ids under one number: two Organizations, each by its HER-id, each
        with the number as a second identifier."""
        code, doc = _convert(capsys, tmp_path, _message(SENDER, OFFICE), "c")
        assert code == 0
        orgs = [e["resource"] for e in _of(doc, "Organization")]
        assert sorted(map(_numbers, orgs), key=sorted) == sorted(
            [{(HER_SYSTEM, SENDER_HER), (ENH_SYSTEM, ORGNR)}, {(HER_SYSTEM, OFFICE_HER), (ENH_SYSTEM, ORGNR)}], key=sorted)
        assert {e["request"]["ifNoneExist"] for e in _of(doc, "Organization")} == {
            f"identifier={HER_SYSTEM}|{SENDER_HER}", f"identifier={HER_SYSTEM}|{OFFICE_HER}"}
