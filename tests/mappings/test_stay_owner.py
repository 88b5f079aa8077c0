"""A stay belongs to its patient: an ADT that reuses another patient's visit number is refused, through the engine.

The record refuses an update that would give a stored resource another patient
(adapters/fhir/_transaction.py); here the whole path shows it: dead letter at
apply with the reason, an ACK AE to the sender, and the first patient's stay
untouched. After an A40 merge the survivor's messages take the old record's stay.
Synthetic Norwegian people only.
"""

from __future__ import annotations

import pytest

from router.testing import drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
PATIENT_A, PATIENT_B = "15866112379", "02036110182"
OLD_DNR = "55866110270"  # PATIENT_A's person, first registered under a D-nummer

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|{ts}||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PV1 = "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500"


def _adt(event: str, ctrl: str, pid: str, *, structure: str = "ADT_A01") -> bytes:
    segments = (MSH.format(ts="20250110083000", type=f"ADT^{event}^{structure}", ctrl=ctrl), f"EVN|{event}|20250110083000", pid, PV1)
    return ("\r".join(segments) + "\r").encode()


def _pid(number: str, kind: str = "FNR") -> str:
    return f"PID|1||{number}^^^NOR^{kind}||NORDMANN^OLA||19610615|M"


A40 = (
    "\r".join((
        MSH.format(ts="20250111090000", type="ADT^A40^ADT_A39", ctrl="OWN-A40"),
        "EVN|A40|20250111090000",
        _pid(PATIENT_A),
        f"MRG|{OLD_DNR}^^^NOR^DNR",
    )) + "\r"
).encode()


@pytest.fixture
def engine(tmp_path):
    settings = isolated_settings(tmp_path)
    handle = run_engine_in_thread(settings)
    yield settings, handle
    handle.stop()


def _send(settings, handle, *messages: bytes) -> None:
    before = handle.stats.messages
    publish(settings, list(messages))
    wait_until(lambda: handle.stats.messages >= before + len(messages), 30, what="settled")


def _stays(settings) -> list[tuple[str, str]]:
    """(subject's national id, status) of every stay with visit number V25-0001."""
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        out = []
        for stay in record.search("Encounter", {"identifier": "V25-0001"}):
            [patient] = record.search("Patient", {"_id": stay["subject"]["reference"].split("/")[1]})
            out.append((patient["identifier"][0]["value"], stay["status"]))
        return out
    finally:
        record.close()


def test_a08_reusing_another_patients_visit_number_is_refused(engine):
    """A08 for B with A's visit number: dead-lettered at apply with the reason, AE to the sender; A's stay stays A's."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A)))
    _send(settings, handle, _adt("A03", "OWN-2", _pid(PATIENT_B), structure="ADT_A03"))
    assert handle.stats.dead_lettered == 1
    [(headers, body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert headers["x-helsebro-stage"] == "apply"
    assert headers["x-helsebro-reason"].startswith("the Encounter this message updates belongs to another patient")
    assert headers["x-helsebro-control-id"] == "OWN-2" and PATIENT_B.encode() in body
    replies = {h["x-helsebro-control-id"]: h["x-helsebro-ack-code"] for h, _ in drain_queue(settings, settings.engine.broker.names.replies)}
    assert replies == {"OWN-1": "AA", "OWN-2": "AE"}
    assert _stays(settings) == [(PATIENT_A, "in-progress")]


def test_after_a_merge_the_survivor_takes_the_old_records_stay(engine):
    """The stay registered under the D-nummer is discharged by an A03 for the survivor once the A40 merged them."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(OLD_DNR, "DNR")))
    _send(settings, handle, A40)
    _send(settings, handle, _adt("A03", "OWN-3", _pid(PATIENT_A), structure="ADT_A03"))
    assert handle.stats.dead_lettered == 0
    assert _stays(settings) == [(PATIENT_A, "finished")]
