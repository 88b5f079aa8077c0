"""A batch (FHS/BHS, or several messages in one delivery) about several patients goes to each patient's partition."""

from __future__ import annotations

import pytest

from adapters.hl7v2.decode import split_messages
from router.routing.partition import partition_of, partition_pieces
from router.testing import adt_message, delete_queues, isolated_settings, queue_depth
from schemas.identity import first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
PARTITIONS = 4


def _two_patients() -> list[bytes]:
    """Four messages, alternating between two patients whose single messages go to different partitions."""
    fnrs = [first_valid_fnr(1 + i, 3, 81, 300 + i, synthetic=True) for i in range(20)]
    first = fnrs[0]
    one = adt_message("A01", control_id="B-A-0", fnr=first, local_id="LA", visit="VA")
    other = next(f for f in fnrs[1:] if partition_of(adt_message("A01", control_id="x", fnr=f, local_id="LB", visit="VB"), PARTITIONS) != partition_of(one, PARTITIONS))
    return [
        one,
        adt_message("A01", control_id="B-B-0", fnr=other, local_id="LB", visit="VB"),
        adt_message("A08", control_id="B-A-1", fnr=first, local_id="LA", visit="VA", family="Endret"),
        adt_message("A08", control_id="B-B-1", fnr=other, local_id="LB", visit="VB", family="Endret"),
    ]


def _batch(messages: list[bytes], *, says: int | None = None) -> bytes:
    count = len(messages) if says is None else says
    return (b"FHS|^~\\&|PAS|STOLAV|HELSEBRO|HELSEPLATTFORMEN|20240115083000||||F1\r"
            b"BHS|^~\\&|PAS|STOLAV|HELSEBRO|HELSEPLATTFORMEN|20240115083000||||B1\r"
            + b"".join(messages) + b"BTS|%d\rFTS|1\r" % count)


def _expected(messages: list[bytes]) -> dict[int, list[bytes]]:
    """Each message where it goes when sent alone, in batch order, as the batch holds its bytes."""
    out: dict[int, list[bytes]] = {}
    for m in messages:
        out.setdefault(partition_of(m, PARTITIONS), []).append(m)
    return out


def test_a_batch_of_two_patients_is_split_per_message_to_each_patients_partition():
    messages = _two_patients()
    pieces = partition_pieces(_batch(messages), PARTITIONS)
    assert [body for _, body in pieces] == [raw.data for raw in split_messages(_batch(messages))] == messages
    assert pieces == [(partition_of(m, PARTITIONS), m) for m in messages]


def test_several_messages_in_one_delivery_without_a_batch_header_are_split_too():
    messages = _two_patients()
    assert partition_pieces(b"".join(messages), PARTITIONS) == [(partition_of(m, PARTITIONS), m) for m in messages]


def test_a_batch_of_one_patient_stays_whole_in_that_patients_partition():
    """Kept one delivery (its counts checked by the converter as before), but in its patient's partition, not p0."""
    messages = [m for m in _two_patients() if b"B-A-" in m]
    body = _batch(messages)
    assert partition_pieces(body, PARTITIONS) == [(partition_of(messages[0], PARTITIONS), body)]


def test_a_short_batch_stays_whole_so_its_shortfall_is_reported():
    body = _batch(_two_patients(), says=5)
    assert partition_pieces(body, PARTITIONS) == [(partition_of(body, PARTITIONS), body)]


def test_one_partition_never_splits():
    body = _batch(_two_patients())
    assert partition_pieces(body, 1) == [(0, body)]


def _take(conn, settings, queues, count: int) -> list:
    """Consume *queues* until *count* deliveries came (or 10 s passed); left unacked, they go back when it stops."""
    from adapters.amqp.inbound import Inbound

    inbound = Inbound(conn, settings, queues=queues)
    inbound.start()
    got: list = []
    for _ in range(100):
        got += inbound.take(count, 0.1)
        if len(got) >= count:
            break
    inbound.poll(0.3)  # anything beyond *count* shows up too
    got += inbound.take(100, 0)
    return [inbound, got]


def _by_partition(conn, settings, topo, count: int) -> dict[int, list[bytes]]:
    """What each partition queue holds, in queue order."""
    inbound, got = _take(conn, settings, list(topo.partitions), count)
    inbound.stop()
    out: dict[int, list[bytes]] = {}
    for d in got:
        out.setdefault(int(d.queue.rsplit(".p", 1)[1]), []).append(d.body)
    return out


@pytest.mark.integration
def test_the_intake_forwards_a_foreign_batch_per_patient(tmp_path):
    """A foreign sender's batch through the intake: each message lands where that patient's single messages land."""
    from adapters.amqp.connection import declare_topology, open_connection
    from adapters.amqp.outbound import Publisher
    from router.delivery import Intake

    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": PARTITIONS})
    messages = _two_patients()
    conn = open_connection(settings)
    try:
        topo = declare_topology(conn, settings)
        publisher = Publisher(conn, settings, pipelined=True)
        publisher.publish_to(str(topo.exchange.name), str(topo.inbound.routing_key), _batch(messages), message_id="batch-1")
        publisher.flush()
        inbound, deliveries = _take(conn, settings, [topo.inbound], 1)
        assert len(deliveries) == 1
        Intake(settings.engine.broker.names.inbound, PARTITIONS)(publisher, deliveries)
        inbound.stop()
        publisher.close()
        assert queue_depth(settings, str(topo.inbound.name)) == 0  # acked once every piece was confirmed
        assert _by_partition(conn, settings, topo, len(messages)) == _expected(messages)
    finally:
        conn.release()
        delete_queues(settings)


@pytest.mark.integration
def test_helsebro_send_publishes_a_batch_per_patient(tmp_path):
    """Helsebro's own publisher (helsebro send, dlq replay) splits the same way, straight to each partition."""
    from adapters.amqp.connection import declare_topology, open_connection
    from adapters.amqp.outbound import Publisher

    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": PARTITIONS})
    messages = _two_patients()
    conn = open_connection(settings)
    try:
        topo = declare_topology(conn, settings)
        publisher = Publisher(conn, settings, pipelined=True)
        publisher.publish_inbound(_batch(messages))
        publisher.flush()
        publisher.close()
        assert _by_partition(conn, settings, topo, len(messages)) == _expected(messages)
    finally:
        conn.release()
        delete_queues(settings)
