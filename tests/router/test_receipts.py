"""Which incoming AppRecs are settled as a `receipt`, and what else becomes of them (found by review H85)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.fhir.record import open_record
from router.testing import drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

SHARED = Path(__file__).resolve().parents[3] / "shared"
APPREC_10 = SHARED / "norsk" / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml"  # AppRec 1.0, status 3
pytestmark = pytest.mark.skipif(not APPREC_10.is_file(), reason=f"the national AppRec example is not at {APPREC_10} (../shared is absent)")
ROUTES = {
    "destinations": {"record": {"kind": "record"}, "raw": {"kind": "queue", "queue": "test.raw", "format": "passthrough"}},
    "routes": [{"name": "kith", "match": {"format": "kith"}, "to": ["raw"]}, {"name": "adt", "match": {"message_code": ["ADT"]}, "to": ["record"]}],
}


def _settle(settings, messages: list[bytes]) -> list:
    seen: list = []
    handle = run_engine_in_thread(settings, on_settled=seen.append)
    publish(settings, messages)
    wait_until(lambda: len(seen) == len(messages), 60, what="settled")
    handle.stop()
    return seen


def test_an_apprec_that_names_no_original_is_dead_lettered_not_swallowed(tmp_path):
    """OriginalMsgId is required: without it the AppRec answers nothing find can show. With XSD validation on it is
    dead-lettered (T02); with it off it was settled as a `receipt` journalled under control id '' (found by no search,
    in no dead-letter queue). It must be dead-lettered either way, and never answered."""
    settings = isolated_settings(tmp_path)
    orphan = re.sub(rb"<OriginalMsgId>.*</OriginalMsgId>", b"", APPREC_10.read_bytes(), flags=re.S)
    [settled] = _settle(settings, [orphan])
    assert settled.outcome == "dead_lettered", settled
    [(headers, _body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert "OriginalMsgId" in headers["x-helsebro-reason"]
    record = open_record(settings)
    try:
        assert record.journal(outcome="receipt") == []
    finally:
        record.close()


def test_a_route_that_forwards_kith_as_received_still_gets_its_apprecs(tmp_path):
    """The passthrough rule: an unmapped message whose routes name only passthrough queues is forwarded as received. An
    AppRec routed so still reaches `raw` (a legacy system that reads the answers to what it sent), and is journalled as a
    receipt all the same, naming where it went."""
    settings = isolated_settings(tmp_path, routes=ROUTES)
    apprec = APPREC_10.read_bytes()
    [settled] = _settle(settings, [apprec])
    assert settled.outcome == "receipt", settled
    assert [body for _h, body in drain_queue(settings, settings.routes.destinations["raw"].queue)] == [apprec]
    record = open_record(settings)
    try:
        [row] = record.journal(outcome="receipt")
    finally:
        record.close()
    assert row.destinations == ("raw",) and row.note.endswith("; forwarded as received to raw")


def test_an_apprec_10_with_status_3_is_a_receipt_journalled_once(tmp_path):
    """The national example (AppRec 1.0 namespace, status 3, 8223 codes) with no route: a receipt, accepted; sent twice
    (a redelivery), one journal row. (Passes before and after: what was checked and is fine.)"""
    settings = isolated_settings(tmp_path)
    apprec = APPREC_10.read_bytes()
    assert [s.outcome for s in _settle(settings, [apprec, apprec])] == ["receipt", "receipt"]
    record = open_record(settings)
    try:
        [row] = record.journal(outcome="receipt")
    finally:
        record.close()
    assert (row.control_id, row.message_type) == ("1b08b3f5-76c1-4560-ae4e-90e04cb0bc70", "APPREC^3")
    assert 'OT=' not in row.note and "(3)" in row.note
