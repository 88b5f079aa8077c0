"""A NUL character in an HL7 v2 message is refused at decode, never written: PostgreSQL's text refuses NUL, and a
write it refuses reads as an outage, so a NUL in MSH-10 or an identifier used to stop its partition for good."""

from __future__ import annotations

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
    schema = f"nul_{uuid.uuid4().hex[:10]}"
    s = isolated_settings(tmp_path, broker_url=RABBIT, record_url=f"{POSTGRES}?schema={schema}")
    yield s
    delete_queues(s)
    drop_schema(POSTGRES, schema)


def test_a_nul_is_dead_lettered_with_its_position_and_the_stream_goes_on(settings):
    """A NUL in MSH-10, and one in PID-3, are dead-lettered naming the field; the admission after them is applied,
    and an escaped NUL (\\X00\\) in a name arrives as U+FFFD."""
    from adapters.fhir.record import open_record
    from router.testing import drain_queue

    good = adt_message("A01", control_id="G1", fnr="15866112379", local_id="L1", visit="V1", family="Nord\\X00\\mann")
    in_control_id = adt_message("A01", control_id="N\x00X", fnr="15866112379", local_id="L2", visit="V2")
    in_identifier = adt_message("A01", control_id="N2", fnr="15866112379", local_id="L\x003", visit="V3")
    publish(settings, [in_control_id, in_identifier, good])
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    try:
        wait_until(lambda: handle.stats.messages == 3, 60, what="three messages settled")
    finally:
        handle.stop()
    assert (handle.stats.applied, handle.stats.dead_lettered) == (1, 2)
    letters = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert sorted(h["x-helsebro-location"] for h, _body in letters) == ["MSH-10", "PID-3"]
    assert all("NUL character" in h["x-helsebro-reason"] for h, _body in letters)
    with open_record(settings) as record:
        [patient] = record.search("Patient", {"identifier": "15866112379"})
        assert patient["name"][0]["family"] == "Nord\ufffdmann"
