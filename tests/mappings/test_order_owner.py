"""A dispense or administration names its patient's own order, through the engine: refused when the order is another's.

An RDS^O13 or RAS^O17 without an ENCODING group names its order by number only
(a logical reference, `authorizingPrescription.identifier`, `request.identifier`);
an e-resept M10 names its prescription by ReseptId. When the record holds that
order for another patient, the whole message is dead-lettered at apply with the
reason, answered ACK AE or AppRec X99, and nothing of it is written
(adapters/fhir/_transaction.py check_named). The same patient, a patient merged
into this one, and an order the record does not hold are accepted.
Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

from pathlib import Path

from router.testing import drain_queue, publish, wait_until

PATIENT_A, PATIENT_B = "15866112379", "01015000232"
OLD_DNR = "55866110270"  # PATIENT_A's person, first registered under a D-nummer

MSH = "MSH|^~\\&|{app}|STOLAV^974749025^ENH|DIPS|STOLAV|20250312143000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
ORC_NW = "ORC|NW|LM-5001^DIPS||GRP-12^DIPS|||||20250312081000"
ENCODED = (
    "RXE||N02BE01^Paracetamol^ATC|1|2|g^gram^UCUM|53^Tablett^7448|^Ta med et glass vann|||40|tablett|0",
    "TQ1|1||BID^to ganger daglig^HL70335||||20250312090000|20250319090000|R",
    "RXR|53^Oral bruk^7477",
)
RXD = "RXD|1|N02BE01^Paracetamol 500 mg tablett^ATC|20250312142500|40|tablett|53^Tablett^7448|RX-778812"
RXA = "RXA|0|1|20250312090500||N02BE01^Paracetamol 500 mg tablett^ATC|1|g^gram^UCUM|||||||||||||CP|A"

KITH = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages"
M1 = (KITH / "ERM1.cases" / "resept_pakning.xml").read_bytes()
"""Our M1: ReseptId 5b1f0c1e-…-0a1b2c3d4e01, for PATIENT_A."""
M10 = (KITH / "ERM10.cases" / "utlevering.xml").read_bytes()
"""Our M10: the dispensing of that prescription, for PATIENT_A, MsgId 6c2a1d2f-…-1b2c3d4e5f02."""


def _pid(number: str, kind: str = "FNR") -> str:
    return f"PID|1||{number}^^^NOR^{kind}||NORDMANN^OLA||19610615|M"


def _message(type_: str, pid: str, *segments: str, ctrl: str, app: str = "DIPS") -> bytes:
    return ("\r".join([MSH.format(app=app, type=type_, ctrl=ctrl), pid, *segments]) + "\r").encode()


def _rde(patient: str = PATIENT_A, kind: str = "FNR") -> bytes:
    return _message("RDE^O11^RDE_O11", _pid(patient, kind), ORC_NW, *ENCODED, ctrl="ORD-1")


def _rds(patient: str, ctrl: str, order: str = "LM-5001") -> bytes:
    """A refill dispense without an ENCODING group: it names its order by ORC-2 alone."""
    return _message("RDS^O13^RDS_O13", _pid(patient), f"ORC|RE|{order}^DIPS|AP-90001^APOTEK", RXD, ctrl=ctrl, app="APOTEK")


def _ras(patient: str, ctrl: str) -> bytes:
    """An administration without an ENCODING group: it names its order by ORC-2 alone."""
    return _message("RAS^O17^RAS_O17", _pid(patient), "ORC|RE|LM-5001^DIPS|AP-90001^APOTEK", RXA, ctrl=ctrl)


def _m10(patient: str, msg_id: str) -> bytes:
    out = M10.replace(f"<Id>{PATIENT_A}</Id>".encode(), f"<Id>{patient}</Id>".encode())
    return out.replace(b"<MsgId>6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f02</MsgId>", f"<MsgId>{msg_id}</MsgId>".encode())


def _a40() -> bytes:
    return _message("ADT^A40^ADT_A39", "EVN|A40|20250312100000", _pid(PATIENT_A), f"MRG|{OLD_DNR}^^^NOR^DNR", ctrl="MERGE-1")


def _send(settings, handle, *messages: bytes) -> None:
    before = handle.stats.messages
    publish(settings, list(messages))
    wait_until(lambda: handle.stats.messages >= before + len(messages), 30, what="settled")


def _refusals(settings) -> list[tuple[str, str, str | None]]:
    """(stage, reason, control id) of each dead letter."""
    return [
        (h["x-helsebro-stage"], h["x-helsebro-reason"], h.get("x-helsebro-control-id"))
        for h, _ in drain_queue(settings, settings.engine.broker.names.dead_letter)
    ]


def _acks(settings) -> dict[str, str]:
    return {h["x-helsebro-control-id"]: h["x-helsebro-ack-code"] for h, _ in drain_queue(settings, settings.engine.broker.names.replies)}


def _stored(settings, rtype: str) -> list[dict]:
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        return record.search(rtype, {})
    finally:
        record.close()


def _fnrs(settings) -> list[str]:
    return sorted(p["identifier"][0]["value"] for p in _stored(settings, "Patient"))


class TestHl7OrderByNumber:
    """RDS^O13 and RAS^O17 without ENCODING name the order by its placer number; the record holds it for patient A."""

    def test_a_dispense_of_patient_b_naming_as_order_is_refused(self, engine):
        """RDE for A, then an RDS for B with A's order number: dead-lettered at apply saying whose the order is, AE to the
        sender, nothing of B written (no dispense, no Patient B)."""
        settings, handle = engine
        _send(settings, handle, _rde())
        _send(settings, handle, _rds(PATIENT_B, "DISP-B"))
        assert _refusals(settings) == [("apply", "the MedicationRequest this MedicationDispense names belongs to another patient", "DISP-B")]
        assert _acks(settings) == {"ORD-1": "AA", "DISP-B": "AE"}
        assert _stored(settings, "MedicationDispense") == [] and _fnrs(settings) == [PATIENT_A]

    def test_an_administration_of_patient_b_naming_as_order_is_refused(self, engine):
        """The same for a RAS^O17: no MedicationAdministration of B's is given for A's order."""
        settings, handle = engine
        _send(settings, handle, _rde())
        _send(settings, handle, _ras(PATIENT_B, "GIVEN-B"))
        assert _refusals(settings) == [("apply", "the MedicationRequest this MedicationAdministration names belongs to another patient", "GIVEN-B")]
        assert _acks(settings) == {"ORD-1": "AA", "GIVEN-B": "AE"}
        assert _stored(settings, "MedicationAdministration") == [] and _fnrs(settings) == [PATIENT_A]

    def test_the_patients_own_order_its_merged_records_order_and_an_unknown_order_are_accepted(self, engine):
        """A's dispense and administration of A's order; after an A40, A's dispense of the order stored under A's old
        D-nummer; and B's dispense of an order number the record does not hold: all applied, named by number."""
        settings, handle = engine
        _send(settings, handle, _rde(OLD_DNR, "DNR"), _a40())
        _send(settings, handle, _rds(PATIENT_A, "DISP-A"), _ras(PATIENT_A, "GIVEN-A"), _rds(PATIENT_B, "DISP-B", order="LM-7777"))
        assert _refusals(settings) == []
        assert set(_acks(settings).values()) == {"AA"}
        named = sorted(d["authorizingPrescription"][0]["identifier"]["value"] for d in _stored(settings, "MedicationDispense"))
        assert named == ["LM-5001", "LM-7777"]
        [given] = _stored(settings, "MedicationAdministration")
        assert given["request"]["identifier"]["value"] == "LM-5001"


class TestEreseptDispensing:
    """An M10 Utleveringsrapport names its prescription by ReseptId; the record holds it (the M1) for patient A."""

    def test_an_m10_of_patient_b_for_as_prescription_is_refused(self, engine):
        """M1 for A, then an M10 for B with A's ReseptId: dead-lettered at apply, AppRec X99, nothing of B written."""
        from lxml import etree

        settings, handle = engine
        _send(settings, handle, M1)
        drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233")
        _send(settings, handle, _m10(PATIENT_B, "6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f0b"))
        [(stage, reason, _)] = _refusals(settings)
        assert (stage, reason) == ("apply", "the MedicationRequest this message names belongs to another patient")
        [(_, body)] = drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.445566")
        found = {etree.QName(e).localname: e.get("V") for e in etree.fromstring(body).iter() if isinstance(e.tag, str)}
        assert (found.get("Status"), found.get("Error")) == ("2", "X99")
        assert _stored(settings, "MedicationDispense") == [] and _fnrs(settings) == [PATIENT_A]

    def test_an_m10_of_the_prescriptions_patient_or_of_one_the_record_lacks_is_accepted(self, engine):
        """A's M10 of A's prescription is applied and names it; an M10 for B arriving before any M1 is applied too."""
        settings, handle = engine
        _send(settings, handle, M1, _m10(PATIENT_A, "6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f02"))
        [prescription] = _stored(settings, "MedicationRequest")
        [dispense] = _stored(settings, "MedicationDispense")
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{prescription['id']}"}]
        other = _m10(PATIENT_B, "6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f0c").replace(
            b"5b1f0c1e-2d3a-4c4b-9e5f-0a1b2c3d4e01", b"5b1f0c1e-2d3a-4c4b-9e5f-0a1b2c3d4e0c",
        )
        _send(settings, handle, other)
        assert _refusals(settings) == []
        assert len(_stored(settings, "MedicationDispense")) == 2 and _fnrs(settings) == sorted([PATIENT_A, PATIENT_B])
