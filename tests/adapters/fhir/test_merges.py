"""Tests for adapters/fhir/_merges.py: a merge (A34, A40) and an identifier change (A47) stay in the record.

The messages are converted by the real mappings and applied to the record on SQLite and
PostgreSQL: after a merge, a search by any identifier the old record had finds the survivor,
also after later messages about the survivor and after a second merge into a third record.
Synthetic Norwegian people only (Tenor-style numbers).
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.hl7v2.ack import ack_code_for
from router.pipeline.convert import Converter
from router.settings import load_settings

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR = "urn:oid:2.16.578.1.12.4.1.4.2"
PERSON_A, PERSON_C = "15866112379", "01015000232"  # fødselsnummer
PERSON_B = "55866110270"  # D-nummer

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250111090000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(load_settings(environ={}))


def _message(type_: str, ctrl: str, *segments: str) -> bytes:
    return ("\r".join([MSH.format(type=type_, ctrl=ctrl), *segments]) + "\r").encode()


def _pid(cx: str, family: str = "NORDMANN") -> str:
    return f"PID|1||{cx}||{family}^OLA||19610615|M"


def a01(cx: str, ctrl: str) -> bytes:
    return _message("ADT^A01^ADT_A01", ctrl, "EVN|A01|20250111090000", _pid(cx), f"PV1|1|I|MED^101^1|||||||||||||||V-{ctrl}")


def a08(cx: str, ctrl: str, family: str = "NORDMANN") -> bytes:
    return _message("ADT^A08^ADT_A01", ctrl, "EVN|A08|20250111100000", _pid(cx, family), "PV1|1|I|MED^101^1")


def a40(cx: str, mrg: str, ctrl: str) -> bytes:
    return _message("ADT^A40^ADT_A39", ctrl, "EVN|A40|20250111090000", _pid(cx), f"MRG|{mrg}")


def a34(cx: str, mrg: str, ctrl: str) -> bytes:
    return _message("ADT^A34^ADT_A30", ctrl, "EVN|A34|20250111090000", _pid(cx), f"MRG|{mrg}")


def a47(cx: str, mrg: str, ctrl: str) -> bytes:
    return _message("ADT^A47^ADT_A30", ctrl, "EVN|A47|20250111090000", _pid(cx), f"MRG|{mrg}")


def send(record: Any, converter: Converter, data: bytes) -> list[str]:
    """Convert and apply one message; return each entry's outcome."""
    [converted] = converter.convert(data)
    assert converted.ok, converted.error
    return [e.outcome for e in record.apply(converted.bundle).entries]


def found(record: Any, system: str, value: str) -> list[dict[str, Any]]:
    patients: list[dict[str, Any]] = record.search("Patient", {"identifier": f"{system}|{value}"})
    return patients


def held(patient: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(i["system"], i["value"], i.get("use")) for i in patient.get("identifier", [])]


def links(patient: dict[str, Any]) -> list[tuple[str, str]]:
    return [(link["type"], link["other"]["reference"]) for link in patient.get("link", [])]


FNR_A, DNR_B, FNR_C = f"{PERSON_A}^^^NOR^FNR", f"{PERSON_B}^^^NOR^DNR", f"{PERSON_C}^^^NOR^FNR"


class TestTheMergeStays:
    """A later message about the survivor restates its PID, which lists only its current identifiers."""

    def test_an_a08_after_an_a40_keeps_the_old_identifier_and_the_link(self, record: Any, converter: Converter) -> None:
        """After B is merged into A, an A08 for A leaves B's D-nummer (use old) and `replaces` on A: a search by it finds A."""
        send(record, converter, a01(DNR_B, "1"))
        send(record, converter, a01(FNR_A, "2"))
        send(record, converter, a40(FNR_A, DNR_B, "3"))
        [survivor] = found(record, FNR, PERSON_A)
        merged = links(survivor)
        send(record, converter, a08(FNR_A, "4", family="HANSEN"))
        [after] = found(record, DNR, PERSON_B)
        assert after["id"] == survivor["id"] and after["name"][0]["family"] == "HANSEN"
        assert (DNR, PERSON_B, "old") in held(after) and links(after) == merged

    def test_an_a34_after_an_a40_keeps_the_old_local_number(self, record: Any, converter: Converter) -> None:
        """A second merge message that lists fewer old identifiers does not drop those the first moved."""
        send(record, converter, a40(FNR_A, f"{DNR_B}~4471999^^^STOLAV^PI", "1"))
        send(record, converter, a34(FNR_A, DNR_B, "2"))
        [survivor] = found(record, FNR, PERSON_A)
        assert [h for h in held(survivor) if h[2] == "old"] == [
            (DNR, PERSON_B, "old"), ("urn:oid:2.16.578.1.12.4.1.7.3.2.1", "4471999", "old"),
        ]

    def test_an_a08_after_an_a47_keeps_the_old_d_nummer(self, record: Any, converter: Converter) -> None:
        """A D-nummer changed to a fødselsnummer (A47) still finds the person after the next A08."""
        send(record, converter, a01(DNR_B, "1"))
        send(record, converter, a47(FNR_A, DNR_B, "2"))
        send(record, converter, a08(FNR_A, "3"))
        [person] = found(record, DNR, PERSON_B)
        assert [p["id"] for p in found(record, FNR, PERSON_A)] == [person["id"]]


class TestALateMessageUnderTheOldNumber:
    """A legacy system still sends under the merged-away record's number: the record finds the survivor by it."""

    def test_the_survivor_keeps_its_own_number_and_the_old_one_stays_old(self, record: Any, converter: Converter) -> None:
        """An A08 under B's D-nummer after B was merged into A leaves A found by its fødselsnummer, B's number old."""
        send(record, converter, a40(FNR_A, DNR_B, "1"))
        send(record, converter, a08(DNR_B, "2", family="HANSEN"))
        [survivor] = found(record, FNR, PERSON_A)
        assert survivor["name"][0]["family"] == "HANSEN"
        assert (FNR, PERSON_A, None) in held(survivor) and (DNR, PERSON_B, "old") in held(survivor)
        assert [p["id"] for p in found(record, DNR, PERSON_B)] == [survivor["id"]]


class TestAChainOfMerges:
    """B merged into A, then A into C: C is the one record of the person."""

    def test_the_first_records_identifier_finds_the_last_survivor(self, record: Any, converter: Converter) -> None:
        """A search by B's D-nummer finds C, and a later A01 under it creates no new Patient."""
        send(record, converter, a01(DNR_B, "1"))
        send(record, converter, a01(FNR_A, "2"))
        send(record, converter, a40(FNR_A, DNR_B, "3"))
        send(record, converter, a01(FNR_C, "4"))
        send(record, converter, a40(FNR_C, FNR_A, "5"))
        [last] = found(record, FNR, PERSON_C)
        assert [p["id"] for p in found(record, DNR, PERSON_B)] == [last["id"]]
        assert [p["id"] for p in found(record, FNR, PERSON_A)] == [last["id"]]
        before = len(record.search("Patient", {}))
        send(record, converter, a01(DNR_B, "6"))
        assert len(record.search("Patient", {})) == before

    def test_an_identifier_mrg1_does_not_list_moves_too(self, record: Any, converter: Converter) -> None:
        """The old record's local number, not repeated in MRG-1, moves to the survivor rather than vanishing."""
        send(record, converter, a01(f"{DNR_B}~4471999^^^STOLAV^PI", "1"))
        send(record, converter, a40(FNR_A, DNR_B, "2"))
        [survivor] = found(record, FNR, PERSON_A)
        assert [p["id"] for p in found(record, "urn:oid:2.16.578.1.12.4.1.7.3.2.1", "4471999")] == [survivor["id"]]

    def test_the_same_merges_again_change_nothing(self, record: Any, converter: Converter) -> None:
        """Each merge of the chain applied a second time writes no new version."""
        send(record, converter, a01(f"{DNR_B}~4471999^^^STOLAV^PI", "1"))
        send(record, converter, a40(FNR_A, DNR_B, "2"))
        send(record, converter, a40(FNR_C, FNR_A, "3"))
        assert send(record, converter, a40(FNR_C, FNR_A, "3"))[1:] == ["unchanged", "unchanged"]
        assert send(record, converter, a40(FNR_C, FNR_A, "3"))[1:] == ["unchanged", "unchanged"]

    def test_a_merge_applied_twice_is_applied_once(self, record: Any, converter: Converter) -> None:
        """The second application of one A40 finds both Patients as the first left them."""
        send(record, converter, a01(f"{DNR_B}~4471999^^^STOLAV^PI", "1"))
        assert send(record, converter, a40(FNR_A, DNR_B, "2"))[1:] == ["created", "updated"]
        assert send(record, converter, a40(FNR_A, DNR_B, "2"))[1:] == ["unchanged", "unchanged"]


class TestTheOldRecordAtAnotherId:
    """The record a merge retires is the one its identifier finds, wherever it sits (review H162)."""

    def test_an_a40_after_an_a47_retires_the_record_the_a47_changed(self, record: Any, converter: Converter) -> None:
        """B's record, given A's fødselsnummer by an A47, is retired when A is merged into C: no second A."""
        send(record, converter, a01(DNR_B, "1"))
        send(record, converter, a47(FNR_A, DNR_B, "2"))
        [old] = found(record, FNR, PERSON_A)
        send(record, converter, a01(FNR_C, "3"))
        before = len(record.search("Patient", {}))
        send(record, converter, a40(FNR_C, FNR_A, "4"))
        [last] = found(record, FNR, PERSON_C)
        assert [p["id"] for p in found(record, FNR, PERSON_A)] == [last["id"]]
        assert [p["id"] for p in found(record, DNR, PERSON_B)] == [last["id"]]
        [retired] = record.search("Patient", {"_id": old["id"]})
        assert retired["active"] is False and links(retired) == [("replaced-by", f"Patient/{last['id']}")]
        assert len(record.search("Patient", {})) == before
        send(record, converter, a08(FNR_A, "5"))  # one Patient holds the number: not refused for several matches

    def test_a_record_created_with_its_own_id_is_retired(self, record: Any, converter: Converter) -> None:
        """A Patient made over REST under an id of its own is the one an A40 naming its number retires."""
        own = {"resourceType": "Patient", "id": "lokal-1", "identifier": [{"system": FNR, "value": PERSON_A}]}
        record.apply({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:7f1c0d8e-0000-4000-8000-000000000001", "resource": own,
             "request": {"method": "PUT", "url": "Patient/lokal-1"}}]})
        send(record, converter, a40(FNR_C, FNR_A, "1"))
        [last] = found(record, FNR, PERSON_C)
        assert [p["id"] for p in found(record, FNR, PERSON_A)] == [last["id"]]
        [retired] = record.search("Patient", {"_id": "lokal-1"})
        assert retired["active"] is False and links(last) == [("replaces", "Patient/lokal-1")]

    def test_that_merge_applied_twice_is_applied_once(self, record: Any, converter: Converter) -> None:
        """The second application finds the retired record by the survivor's link: nothing changes, no stub is made."""
        send(record, converter, a01(DNR_B, "1"))
        send(record, converter, a47(FNR_A, DNR_B, "2"))
        assert send(record, converter, a40(FNR_C, FNR_A, "3"))[1:] == ["created", "updated"]
        count = len(record.search("Patient", {}))
        assert send(record, converter, a40(FNR_C, FNR_A, "3"))[1:] == ["unchanged", "unchanged"]
        assert len(record.search("Patient", {})) == count


class TestOnePatientAsBothSides:
    """PID-3 and MRG-1 name the same patient: the merge is refused with what is wrong (review H162)."""

    def test_the_reason_says_survivor_and_retired_are_one(self, converter: Converter) -> None:
        """The OperationOutcome names MRG-1 and says the merge names one patient twice; the ACK is an error."""
        [converted] = converter.convert(a40(FNR_A, FNR_A, "1"))
        assert not converted.ok and converted.error is not None
        assert "both survivor and retired" in converted.error.reason
        assert "not specific enough" not in converted.error.reason
        assert converted.outcome()["issue"][0]["expression"] == ["MRG-1"]
        assert ack_code_for(converted.error)[0] in ("AE", "AR")

    def test_an_a34_is_refused_the_same_way(self, record: Any, converter: Converter) -> None:
        """An A34 naming one patient in PID-3 and MRG-1 writes nothing to the record."""
        send(record, converter, a01(FNR_A, "1"))
        [converted] = converter.convert(a34(FNR_A, FNR_A, "2"))
        assert converted.error is not None and "both survivor and retired" in converted.error.reason
        [patient] = found(record, FNR, PERSON_A)
        assert patient.get("active") is not False
