"""A message no mapping serves, routed only to legacy queues that take the original bytes: forwarded as received, on both transports.

During the migration a legacy system may still read a message type the shared record
does not take (master files, a KITH message Helsebro maps no version of). A route that
sends it only to `passthrough` queues forwards it, answers the sender AA (or an OK
AppRec) and journals it; a route that also needs its Bundle leaves it refused, as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from adapters.fhir.record import open_record
from router.testing import delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[3]
DIALOG = ROOT / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
AR = "{http://www.kith.no/xmlstds/apprec/2012-02-15}"
ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "raw": {"kind": "queue", "queue": "test.raw", "format": "passthrough"},
        "lab": {"kind": "queue", "queue": "test.lab", "format": "fhir-json"},
    },
    "routes": [
        {"name": "masterfiles", "match": {"message_code": ["MFN"]}, "to": ["raw"]},
        {"name": "queries", "match": {"message_code": ["QRY"]}, "to": ["raw", "lab"]},
        {"name": "dialog", "match": {"format": "kith"}, "to": ["raw"]},
        {"name": "admissions", "match": {"message_code": ["ADT"]}, "to": ["record"]},
    ],
    "duplicates": {"window_seconds": 3600},
}


def _hl7(code: str, control_id: str) -> bytes:
    return (f"MSH|^~\\&|PAS|STOLAV|HB|HP|20250115101500||{code}|{control_id}|P|2.5.1\r"
            "MFE|MAD|||9144900^LEGE^LISA\r").encode()


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, tmp_path):
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None, routes=ROUTES)
    yield s
    if s.broker_url:
        delete_queues(s)


def _acks(settings) -> dict[str, str]:
    return {h["x-helsebro-control-id"]: h["x-helsebro-ack-code"] for h, _b in drain_queue(settings, settings.engine.broker.names.replies)}


class TestForwardedAsReceived:
    def test_an_hl7_message_no_mapping_serves_reaches_its_passthrough_queue(self, settings):
        """MFN^M02 has no mapping: routed only to `raw`, its bytes arrive there, AA answers it, the journal says why it
        went nowhere else; its resend within the window is a duplicate, not forwarded twice. QRY is routed to `raw` and to a
        queue that needs its Bundle: refused as before (AR), and `raw` does not get it either. An ORL no route takes: refused."""
        seen = []
        handle = run_engine_in_thread(settings, on_settled=seen.append)
        master = _hl7("MFN^M02^MFN_M02", "M1")
        publish(settings, [master, master, _hl7("QRY^A19^QRY_A19", "Q1"), _hl7("ORL^O22^ORL_O22", "O1")])
        wait_until(lambda: len(seen) == 4, 60, what="four settled")
        handle.stop()
        assert [(s.control_id, s.outcome) for s in seen] == [("M1", "forwarded"), ("M1", "duplicate"), ("Q1", "dead_lettered"), ("O1", "dead_lettered")]
        assert (seen[2].reason, seen[3].reason) == ("no mapping for message type QRY^A19 structure QRY_A19",
                                                    "no mapping for message type ORL^O22 structure ORL_O22")
        [(headers, body)] = drain_queue(settings, settings.routes.destinations["raw"].queue)
        assert body == master and headers["x-helsebro-control-id"] == "M1" and headers["x-helsebro-format"] == "passthrough"
        assert drain_queue(settings, settings.routes.destinations["lab"].queue) == []
        assert _acks(settings) == {"M1": "AA", "Q1": "AR", "O1": "AR"}
        dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert sorted(h["x-helsebro-control-id"] for h, _b in dead) == ["O1", "Q1"]
        record = open_record(settings)
        try:
            [first, resent] = sorted(record.journal(control_id="M1"), key=lambda e: e.applied_at)
            assert (first.outcome, first.note, first.destinations) == (
                "forwarded", "forwarded as received to raw (no mapping serves it: not to the record)", ("raw",))
            assert resent.outcome == "duplicate"
            assert record.counts() == {}  # nothing of it reached the record
        finally:
            record.close()

    def test_a_kith_message_no_mapping_serves_is_forwarded_and_answered_ok(self, settings):
        """A Dialogmelding in a namespace version Helsebro maps nothing of: routed to `raw` for KITH, it arrives there as
        sent and its sender gets an OK AppRec, not a rejection."""
        unmapped = DIALOG.read_bytes().replace(b"http://www.kith.no/xmlstds/dialog/2013-01-23", b"http://www.kith.no/xmlstds/dialog/2099-01-01")
        apprecs = f"{settings.engine.broker.names.apprec_prefix}.112233"  # tagged per test: only this test's answers
        seen = []
        handle = run_engine_in_thread(settings, on_settled=seen.append)
        publish(settings, [unmapped])
        wait_until(lambda: len(seen) == 1, 60, what="settled")
        handle.stop()
        assert seen[0].outcome == "forwarded"
        assert [body for _h, body in drain_queue(settings, settings.routes.destinations["raw"].queue)] == [unmapped]
        [(_h, apprec)] = drain_queue(settings, apprecs)
        root = etree.fromstring(apprec)
        assert root.find(f"{AR}Status").get("V") == "1" and root.find(f"{AR}Error") is None


def test_without_a_passthrough_route_it_is_refused_as_before(tmp_path):
    """The default routes send everything to the record: a message no mapping serves is dead-lettered and answered AR."""
    s = isolated_settings(tmp_path)
    seen = []
    handle = run_engine_in_thread(s, on_settled=seen.append)
    publish(s, [_hl7("MFN^M02^MFN_M02", "M2")])
    wait_until(lambda: len(seen) == 1, 60, what="settled")
    handle.stop()
    assert (seen[0].outcome, seen[0].stage) == ("dead_lettered", "convert")
    assert _acks(s) == {"M2": "AR"}


M96 = ROOT / "mappings" / "kith" / "messages" / "ERM96.cases" / "reseptliste.xml"


def _m96_carrying_an_unmapped_m1() -> bytes:
    """The M9.6 case, its carried M1 moved to a namespace version Helsebro maps nothing of."""
    import base64
    import re

    data = M96.read_bytes()
    found = re.search(rb"(<(?:\w+:)?Base64Container[^>]*>)([^<]+)(</(?:\w+:)?Base64Container>)", data)
    inner = base64.b64decode(b"".join(found.group(2).split()))
    inner = inner.replace(b"http://www.kith.no/xmlstds/eresept/m1/2013-10-08", b"http://www.kith.no/xmlstds/eresept/m1/2099-01-01")
    return data[: found.start(2)] + base64.b64encode(inner) + data[found.end(2):]


class TestWhatIsNotForwarded:
    def test_a_duplicate_forwarded_as_received_names_no_destination(self, settings):
        """The resend is a duplicate: not forwarded again, so its journal row names no destination (as for any duplicate),
        and `find` does not say it was published to raw."""
        seen = []
        handle = run_engine_in_thread(settings, on_settled=seen.append)
        master = _hl7("MFN^M02^MFN_M02", "M9")
        publish(settings, [master, master])
        wait_until(lambda: len(seen) == 2, 60, what="two settled")
        handle.stop()
        assert [s.outcome for s in seen] == ["forwarded", "duplicate"]
        assert len(drain_queue(settings, settings.routes.destinations["raw"].queue)) == 1
        record = open_record(settings)
        try:
            rows = {e.outcome: e.destinations for e in record.journal(control_id="M9")}
        finally:
            record.close()
        assert rows == {"forwarded": ("raw",), "duplicate": ()}

    def test_a_mapped_carrier_whose_embedded_message_no_mapping_serves_is_refused(self, settings):
        """An M9.6 (mapped) carrying an M1 of a version no mapping serves: the carrier is mapped, its content is refused,
        as for any other refusal of an embedded message; it is not `forwarded as received` with an OK AppRec."""
        seen = []
        handle = run_engine_in_thread(settings, on_settled=seen.append)
        publish(settings, [_m96_carrying_an_unmapped_m1()])
        wait_until(lambda: len(seen) == 1, 60, what="settled")
        handle.stop()
        assert seen[0].outcome == "dead_lettered", seen[0]
        assert drain_queue(settings, settings.routes.destinations["raw"].queue) == []
