"""Values PostgreSQL will not store never stop the stream. Its refusal of a write used to read as an outage, retried
for ever, so one message stopped its partition for good: a NUL character (now refused at decode, naming its field),
or a value too long to index (now refused at apply, for that message alone)."""

from __future__ import annotations

import random
import string
import uuid

import pytest

from router.testing import adt_message, delete_queues, drop_schema, isolated_settings, publish, run_engine_in_thread, wait_until

pytestmark = pytest.mark.integration

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


class QuietLogger:
    def __getattr__(self, _name):
        return lambda *_a, **_k: self


@pytest.fixture
def settings(tmp_path):
    schema = f"unstorable_{uuid.uuid4().hex[:10]}"
    s = isolated_settings(tmp_path, broker_url=RABBIT, record_url=f"{POSTGRES}?schema={schema}")
    yield s
    delete_queues(s)
    drop_schema(POSTGRES, schema)


def _settle(settings, messages: list[bytes], *, applied: int, dead_lettered: int) -> list:
    """Publish *messages*, run the engine until it settled them all, check the counts; return the dead letters."""
    from router.testing import drain_queue

    publish(settings, messages)
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    try:
        wait_until(lambda: handle.stats.messages == len(messages), 60, what=f"{len(messages)} messages settled")
    finally:
        handle.stop()
    assert (handle.stats.applied, handle.stats.dead_lettered) == (applied, dead_lettered)
    return drain_queue(settings, settings.engine.broker.names.dead_letter)


def test_a_nul_is_dead_lettered_with_its_position_and_the_stream_goes_on(settings):
    """A NUL in MSH-10, and one in PID-3, are dead-lettered naming the field; the admission after them is applied,
    and an escaped NUL (\\X00\\) in a name arrives as U+FFFD."""
    from adapters.fhir.record import open_record

    good = adt_message("A01", control_id="G1", fnr="15866112379", local_id="L1", visit="V1", family="Nord\\X00\\mann")
    in_control_id = adt_message("A01", control_id="N\x00X", fnr="15866112379", local_id="L2", visit="V2")
    in_identifier = adt_message("A01", control_id="N2", fnr="15866112379", local_id="L\x003", visit="V3")
    letters = _settle(settings, [in_control_id, in_identifier, good], applied=1, dead_lettered=2)
    assert sorted(h["x-helsebro-location"] for h, _body in letters) == ["MSH-10", "PID-3"]
    assert all("NUL character" in h["x-helsebro-reason"] for h, _body in letters)
    with open_record(settings) as record:
        [patient] = record.search("Patient", {"identifier": "15866112379"})
        assert patient["name"][0]["family"] == "Nord\ufffdmann"


def test_a_value_too_long_to_index_refuses_its_message_alone(settings):
    """Three admissions in one batch, the second with a 30,000-character local patient number (incompressible, so over
    PostgreSQL's index entry size): it is dead-lettered at apply, saying why without the value; the other two apply."""
    from adapters.fhir.record import open_record

    rng = random.Random(7)
    long_local = "".join(rng.choice(string.ascii_letters) for _ in range(30_000))
    [(headers, _body)] = _settle(settings, [
        adt_message("A01", control_id="U1", fnr="15866112379", local_id="L1", visit="V1"),
        adt_message("A01", control_id="U2", fnr="02036110182", local_id=long_local, visit="V2"),
        adt_message("A01", control_id="U3", fnr="01015000232", local_id="L3", visit="V3"),
    ], applied=2, dead_lettered=1)
    assert (headers["x-helsebro-control-id"], headers["x-helsebro-stage"]) == ("U2", "apply")
    assert headers["x-helsebro-reason"] == "the record cannot store a value of this message (a value is too long to index)"
    with open_record(settings) as record:
        assert {p["identifier"][0]["value"] for p in record.search("Patient", {})} == {"15866112379", "01015000232"}
        assert [e.control_id for e in record.journal(control_id="U2")] == ["U2"]  # its journal row holds no long value


def test_a_kith_recipient_too_long_to_store_is_dead_lettered_once(settings):
    """A KITH receiver HER-id has no length limit: one too long to index is refused at apply (its Organization's
    identifier), and then the duplicate guard remembers (MsgId, recipient) after the publishes. That key is left out
    of its memory, never raised: raised, the UnstorableContent (a MessageError) escaped Settle into the engine's
    catch-all, which settled the batch again and again, dead-lettering the message three times, the last as internal."""
    from pathlib import Path

    from router.testing import drain_queue

    plo = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "PLO_Innleggelsesrapport.cases" / "innleggelsesrapport_ny.xml"
    rng = random.Random(9)
    long_her_id = "".join(rng.choice(string.digits) for _ in range(30_000))
    publish(settings, [plo.read_bytes().replace(b"<Id>445566</Id>", f"<Id>{long_her_id}</Id>".encode())])
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    try:
        wait_until(lambda: handle.stats.messages >= 1, 60, what="the message settled")
    finally:
        handle.stop()
    letters = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert [h["x-helsebro-stage"] for h, _body in letters] == ["apply"]
    assert (handle.stats.messages, handle.stats.dead_lettered) == (1, 1)
