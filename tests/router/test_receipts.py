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


# Found by review H113: an AppRec in a MsgHead, and a refusing AppRec.
CASE = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
CASE_MSG_ID = "3f2b6f0e-8f1c-4c55-9a59-2f3d7d1c0a01"
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"


def _refusing_apprec() -> bytes:
    """An AppRec 1.1 refusing CASE (status 2, E35), as a receiver would send it."""
    from adapters.kith import build_apprecs, read_message
    from adapters.kith.errors import PatientNotFound

    received = read_message(CASE.read_bytes())
    [apprec] = build_apprecs(received.envelope, error=PatientNotFound("no such patient here"))
    return apprec.xml


def _in_msghead(apprec: bytes | None, *, msg_type: str = "APPREC") -> bytes:
    """CASE's MsgHead with MsgInfo/Type *msg_type* and, given *apprec*, that AppRec as the payload in Content."""
    from lxml import etree

    root = etree.fromstring(CASE.read_bytes())
    root.find(f"{MH}MsgInfo/{MH}Type").attrib.update({"V": msg_type, "DN": "Applikasjonskvittering" if msg_type == "APPREC" else "x"})
    if apprec is not None:
        content = root.find(f"{MH}Document/{MH}RefDoc/{MH}Content")
        for child in list(content):
            content.remove(child)
        content.append(etree.fromstring(apprec))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _apprecs_to(settings, her_id: str) -> list[bytes]:
    return [body for _h, body in drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.{her_id}")]


@pytest.mark.parametrize("msg_type", ["APPREC", "DIALOG_HELSEFAGLIG"])
def test_an_apprec_wrapped_in_a_msghead_is_a_receipt_never_answered(tmp_path, msg_type):
    """HITS/KITH: an AppRec is never answered with an AppRec. One that comes inside a MsgHead (MsgInfo/Type APPREC, or an
    AppRec as the payload) was read as a business message no mapping serves and answered with AppRec T10 to the MsgHead's
    sender: two engines would answer each other for ever. It is a receipt, journalled under the MsgId it answers."""
    settings = isolated_settings(tmp_path)
    [settled] = _settle(settings, [_in_msghead(_refusing_apprec(), msg_type=msg_type)])
    assert settled.outcome == "receipt", settled
    assert _apprecs_to(settings, "112233") == []
    record = open_record(settings)
    try:
        [row] = record.journal(outcome="receipt")
    finally:
        record.close()
    assert (row.control_id, row.message_type) == (CASE_MSG_ID, "APPREC^2")


def test_a_msghead_typed_apprec_without_an_apprec_is_dead_lettered_never_answered(tmp_path):
    """MsgInfo/Type APPREC over a business payload: it says it is an AppRec, so it is never answered; it answers nothing
    that can be found, so it is dead-lettered with a reason (not mapped as the business message it carries)."""
    settings = isolated_settings(tmp_path)
    [settled] = _settle(settings, [_in_msghead(None)])
    assert settled.outcome == "dead_lettered", settled
    assert _apprecs_to(settings, "112233") == []
    [(headers, _body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert "AppRec" in headers["x-helsebro-reason"]


def test_a_refusing_apprec_is_an_alarm_in_the_log_and_the_metrics(tmp_path):
    """FACTS §10: act on a negative AppRec. A status 2 (Avvist) receipt is logged at warning level with ids and codes only,
    and counted in `helsebro_apprecs_refused_total`; an accepted one is neither."""
    from router.ops.metrics import exposition

    events: list[tuple[str, str, dict]] = []

    class Recording:
        def __getattr__(self, level):
            return lambda event, **kw: events.append((level, event, kw))

    settings = isolated_settings(tmp_path)
    seen: list = []
    handle = run_engine_in_thread(settings, on_settled=seen.append, logger=Recording())
    try:
        publish(settings, [_refusing_apprec(), APPREC_10.read_bytes()])
        wait_until(lambda: len(seen) == 2, 60, what="settled")
        text = exposition(handle.engine)
    finally:
        handle.stop()
    assert [s.outcome for s in seen] == ["receipt", "receipt"]
    assert "# TYPE helsebro_apprecs_refused_total counter" in text
    assert "\nhelsebro_apprecs_refused_total 1\n" in text
    [(level, _event, fields)] = [e for e in events if e[1] == "apprec_refused"]
    assert level in ("warning", "error")
    assert fields["original_msg_id"] == CASE_MSG_ID and fields["errors"] == ["E35"]
    assert "no such patient here" not in repr(fields) and "15866112379" not in repr(fields)


# Found by review H160: a redelivered AppRec, and an AppRec answering nothing Helsebro sent.
def _accepting_apprec() -> bytes:
    """An AppRec 1.1 accepting CASE (status 1), from the same receiver as _refusing_apprec."""
    from adapters.kith import build_apprecs, read_message

    [apprec] = build_apprecs(read_message(CASE.read_bytes()).envelope, error=None)
    return apprec.xml


class _Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.events.append((level, event, kw))

    def named(self, name: str) -> list[dict[str, object]]:
        return [kw for _level, event, kw in self.events if event == name]


def test_a_redelivered_apprec_changes_nothing(tmp_path):
    """The broker delivers an AppRec again (the same bytes): it was journalled with `DO UPDATE SET applied_at`, so an old
    refusal came back as new. It must change nothing: the newer AppRec for the same MsgId stays the newest (`find`), the
    recent refused figure (`status` apprecs_refused) and the metric do not count it again, and no second apprec_refused."""
    import time

    from router.ops.metrics import exposition

    settings = isolated_settings(tmp_path)
    log = _Events()
    seen: list[object] = []
    refusing, accepting = _refusing_apprec(), _accepting_apprec()
    handle = run_engine_in_thread(settings, on_settled=seen.append, logger=log)
    try:
        publish(settings, [refusing])
        wait_until(lambda: len(seen) == 1, 60, what="the refusal settled")
        after_refusal = time.time()
        publish(settings, [accepting])
        wait_until(lambda: len(seen) == 2, 60, what="the acceptance settled")
        after_acceptance = time.time()
        publish(settings, [refusing])  # the broker's redelivery of the first
        wait_until(lambda: len(seen) == 3, 60, what="the redelivery settled")
        text = exposition(handle.engine)
    finally:
        handle.stop()
    record = open_record(settings)
    try:
        newest = record.receipts([CASE_MSG_ID])[CASE_MSG_ID]
        refused_since_first = record.refused_receipts(since=after_refusal)
        receipts_since = record.journal(outcome="receipt", since=after_acceptance)
    finally:
        record.close()
    assert newest.message_type == "APPREC^1", newest
    assert refused_since_first == 0
    assert receipts_since == []
    assert len(log.named("apprec_refused")) == 1
    assert "\nhelsebro_apprecs_refused_total 1\n" in text
