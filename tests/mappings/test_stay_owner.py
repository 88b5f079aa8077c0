"""A stay belongs to its patient, through the engine: refused when a message reuses its number, moved by an A45.

The record refuses an update that would give a stored resource another patient
(adapters/fhir/_transaction.py); here the whole path shows it: dead letter at
apply with the reason, an ACK AE to the sender, and the first patient's stay
untouched. After an A40 merge the survivor's messages take the old record's stay.
An A45 moves a stay, with what was recorded in it, from the MRG patient to the
PID patient, and only a stay that is the MRG patient's. Synthetic Norwegian people only.
"""

from __future__ import annotations

import pytest

from router.testing import drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
PATIENT_A, PATIENT_B = "15866112379", "02036110182"
OLD_DNR = "55866110270"  # PATIENT_A's person, first registered under a D-nummer

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|{ts}||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PV1 = "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500"


PATIENT_C = "01015000232"
DIAGNOSIS = "DG1|1||I21.0^Akutt hjerteinfarkt^ICD10|||F"


def _adt(event: str, ctrl: str, pid: str, *extra: str, structure: str = "ADT_A01") -> bytes:
    segments = (MSH.format(ts="20250110083000", type=f"ADT^{event}^{structure}", ctrl=ctrl), f"EVN|{event}|20250110083000", pid, PV1, *extra)
    return ("\r".join(segments) + "\r").encode()


def _a45(ctrl: str, to: str, prior: str, visit: str = "V25-0001") -> bytes:
    segments = (
        MSH.format(ts="20250112090000", type="ADT^A45^ADT_A45", ctrl=ctrl), "EVN|A45|20250112090000", _pid(to),
        f"MRG|{prior}^^^NOR^FNR||||{visit}^^^STOLAV^VN", f"PV1|1|I|||||||||||||||||{visit}^^^STOLAV^VN",
    )
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


def _stays(settings, rtype: str = "Encounter") -> list[tuple[str, str]]:
    """(subject's national id, status) of every stay with visit number V25-0001; with *rtype*, (id, code) of every resource of that type."""
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        out = []
        for found in record.search(rtype, {"identifier": "V25-0001"} if rtype == "Encounter" else {}):
            [patient] = record.search("Patient", {"_id": found["subject"]["reference"].split("/")[1]})
            status = found["status"] if rtype == "Encounter" else found["code"]["coding"][0]["code"]
            out.append((patient["identifier"][0]["value"], status))
        return out
    finally:
        record.close()


def _dead_letters(settings) -> list[str]:
    return [h["x-helsebro-reason"] for h, _ in drain_queue(settings, settings.engine.broker.names.dead_letter)]


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


def test_a45_moves_the_stay_and_what_was_recorded_in_it(engine):
    """A's stay (with its diagnosis) registered in error moves to B; B's next message about it is B's own."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A), DIAGNOSIS))
    _send(settings, handle, _a45("OWN-45", PATIENT_B, PATIENT_A))
    assert _dead_letters(settings) == []
    assert _stays(settings) == [(PATIENT_B, "in-progress")]
    assert _stays(settings, "Condition") == [(PATIENT_B, "I21.0")]
    _send(settings, handle, _adt("A03", "OWN-2", _pid(PATIENT_B), structure="ADT_A03"))
    assert _dead_letters(settings) == [] and _stays(settings) == [(PATIENT_B, "finished")]


def test_a45_for_a_stay_that_is_not_the_mrg_patients_is_refused(engine):
    """MRG names C, but the stay is A's: nothing moves (and no patient C is left behind); a stay the record lacks is refused too."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A), DIAGNOSIS))
    _send(settings, handle, _a45("OWN-45", PATIENT_B, PATIENT_C), _a45("OWN-46", PATIENT_B, PATIENT_A, visit="V25-9999"))
    assert _dead_letters(settings) == [
        "the Encounter this message changes belongs to another patient",
        "the Encounter this message changes is not in the record",
    ]
    assert _stays(settings) == [(PATIENT_A, "in-progress")] and _stays(settings, "Condition") == [(PATIENT_A, "I21.0")]
    replies = {h["x-helsebro-control-id"]: h["x-helsebro-ack-code"] for h, _ in drain_queue(settings, settings.engine.broker.names.replies)}
    assert replies == {"OWN-1": "AA", "OWN-45": "AE", "OWN-46": "AE"}


def test_a45_without_the_prior_patient_is_refused_at_mrg_1():
    """An A45 whose MRG-1 is empty cannot say whose stay it moves: refused naming MRG-1, not applied unchecked."""
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    message = _a45("OWN-47", PATIENT_B, PATIENT_A).replace(f"MRG|{PATIENT_A}^^^NOR^FNR|".encode(), b"MRG||")
    [item] = Converter(load_settings(environ={})).convert(message)
    assert item.bundle is None
    assert (item.error.reason, item.error.location) == ("the Encounter this message moves needs the patient it moves from, which MRG-1 does not give", "MRG-1")


def _oru(ctrl: str, pid: str, status: str) -> bytes:
    """A lab result in stay V25-0001: order REK-77, specimen PRV-77, one haemoglobin (F final, C corrected)."""
    segments = (
        MSH.format(ts="20250110100000", type="ORU^R01^ORU_R01", ctrl=ctrl), pid, PV1,
        "ORC|RE|REK-77^DIPS|LAB-77^LABSYS||CM", f"OBR|1|REK-77^DIPS|LAB-77^LABSYS|NPU02319^Hemoglobin^NLK|||20250110090000||||||||||||||||||{status}",
        f"OBX|1|NM|NPU02319^Hemoglobin^NLK||{'13.1' if status == 'C' else '12.1'}|g/dL|||||{status}", "SPM|1|PRV-77&LABSYS||BLD^Blod^HL70487",
    )
    return ("\r".join(segments) + "\r").encode()


def test_a_corrected_result_after_a45_is_the_new_patients(engine):
    """A's stay with a lab result moves to B by an A45; the lab's correction of that result, now for B, must apply.

    The A45 moves what names the stay (encounter, context, partOf): the result and its report, not the
    specimen (Specimen has no encounter), which stays A's; the correction's Specimen update is then refused
    as another patient's, the very failure the move is there to prevent."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A)), _oru("LAB-1", _pid(PATIENT_A), "F"))
    _send(settings, handle, _a45("OWN-45", PATIENT_B, PATIENT_A))
    assert _dead_letters(settings) == []
    _send(settings, handle, _oru("LAB-2", _pid(PATIENT_B), "C"))
    assert _dead_letters(settings) == []
    assert _stays(settings, "Observation") == [(PATIENT_B, "NPU02319")]


PROCEDURE = "PR1|1||0DTJ0ZZ^Appendektomi^ICD10PCS||20250110120000"
HEIGHT = "OBX|1|NM|8302-2^Body height^LN||180|cm|||||F|||20250110083000"


def test_what_a45_moved_is_found_again_by_the_new_patients_next_message(engine):
    """After the move, B's A08 restating the stay's diagnosis and procedure updates the moved ones, not new ones beside them.

    Their identities (no id of their own) are the stay's visit number, the code and the time: a
    patient-derived identity would still be A's after the move, and B's next message would make a
    second diagnosis for B beside the moved one.

    An ADT's OBX (a height) is the patient's, not the stay's (v2-to-FHIR IG: the message cannot say it
    was made during the stay), so the A45 does not move it: A keeps the height A's A01 carried, and B's
    A08 makes B's own, neither refused nor taken from A."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A), DIAGNOSIS, PROCEDURE, HEIGHT))
    _send(settings, handle, _a45("OWN-45", PATIENT_B, PATIENT_A))
    _send(settings, handle, _adt("A08", "OWN-8", _pid(PATIENT_B), DIAGNOSIS, PROCEDURE, HEIGHT))
    assert _dead_letters(settings) == []
    assert _stays(settings, "Condition") == [(PATIENT_B, "I21.0")]
    assert _stays(settings, "Procedure") == [(PATIENT_B, "0DTJ0ZZ")]
    assert sorted(_stays(settings, "Observation")) == sorted([(PATIENT_A, "8302-2"), (PATIENT_B, "8302-2")])


def test_two_patients_stays_with_one_visit_number_of_two_authorities_keep_their_own_diagnoses(engine):
    """Review: the visit number stands for the patient only with its assigning authority (PV1-19.4), as the stay's own identifier.

    A's stay V25-0001 of STOLAV and B's stay V25-0001 of AHUS are two Encounters (their identifiers' systems
    differ); a DG1 identity of PV1-19.1 alone made them one Condition, and B's admission was refused as A's."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(PATIENT_A), DIAGNOSIS))
    other = ("\r".join((
        MSH.format(ts="20250110083000", type="ADT^A01^ADT_A01", ctrl="OWN-2"), "EVN|A01|20250110083000", _pid(PATIENT_B),
        PV1.replace("V25-0001^^^STOLAV^VN", "V25-0001^^^AHUS^VN"), DIAGNOSIS)) + "\r").encode()
    _send(settings, handle, other)
    assert _dead_letters(settings) == []
    assert sorted(_stays(settings, "Condition")) == sorted([(PATIENT_A, "I21.0"), (PATIENT_B, "I21.0")])


def _patients(settings) -> list[tuple[list[str], bool]]:
    """(identifier values, active) of every Patient in the record."""
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        return sorted(([i["value"] for i in p.get("identifier", [])], p.get("active", True)) for p in record.search("Patient", {}))
    finally:
        record.close()


def test_a47_changing_the_national_id_keeps_one_patient_with_its_stay(engine):
    """A person admitted under a D-nummer gets a fødselsnummer; the A47 (PID: the FNR, MRG-1: the D-nummer)
    changes the identifiers of that one record: no second, active Patient beside the old one, and the
    stay goes on under the FNR (the next A03 for the FNR discharges it)."""
    settings, handle = engine
    _send(settings, handle, _adt("A01", "OWN-1", _pid(OLD_DNR, "DNR")))
    a47 = "\r".join((
        MSH.format(ts="20250111090000", type="ADT^A47^ADT_A30", ctrl="OWN-A47"), "EVN|A47|20250111090000",
        _pid(PATIENT_A), f"MRG|{OLD_DNR}^^^NOR^DNR",
    )) + "\r"
    _send(settings, handle, a47.encode())
    _send(settings, handle, _adt("A03", "OWN-3", _pid(PATIENT_A), structure="ADT_A03"))
    assert _dead_letters(settings) == []
    assert [active for _, active in _patients(settings)].count(True) == 1
    assert _stays(settings) == [(PATIENT_A, "finished")]
