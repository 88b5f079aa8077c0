"""Two workers on four partitions keep each patient's messages in arrival order and share the work."""

from __future__ import annotations

import threading

import pytest

from router.pipeline.convert import Converter
from router.testing import adt_message, delete_queues, isolated_settings, publish, run_engine_in_thread, wait_until
from schemas.identity import first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
PATIENTS, STEPS = 40, 5


def _recorder():
    """A list of settled control ids, in settling order, and the on_settled callback that fills it from any thread."""
    order: list[str] = []
    lock = threading.Lock()

    def settled(s) -> None:
        with lock:
            order.append(s.control_id)

    return order, settled


def _assert_in_order(order: list[str]) -> None:
    for p in range(PATIENTS):
        steps = [int(c.rsplit("-", 1)[1]) for c in order if c.startswith(f"P{p:03d}-")]
        assert steps == list(range(STEPS)), f"patient {p} settled out of order"


@pytest.mark.integration
def test_two_workers_keep_per_patient_order(tmp_path):
    """Every patient's messages are settled in the order they were published, and both workers settle some."""
    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4, "batch_max": 20})
    fnrs = [first_valid_fnr(1 + i % 28, 1 + i % 12, 77, 200 + i, synthetic=True) for i in range(PATIENTS)]
    order, settled = _recorder()
    handles = [run_engine_in_thread(settings, converter=Converter(settings), on_settled=settled, worker_index=i, workers=2, standby_delay=30) for i in range(2)]
    try:
        publish(settings, [
            adt_message("A08" if step else "A01", control_id=f"P{p:03d}-{step}", fnr=fnr, local_id=f"L{p}", visit=f"V{p}", given=f"Step{step}")
            for step in range(STEPS) for p, fnr in enumerate(fnrs)
        ])
        wait_until(lambda: len(order) == PATIENTS * STEPS, 90, what="all settled")
    finally:
        for h in handles:
            h.stop()
        delete_queues(settings)
    _assert_in_order(order)
    assert all(h.stats.messages > 0 for h in handles), "both workers take their own partitions"


@pytest.mark.integration
def test_direct_and_intake_publishers_both_keep_per_patient_order(tmp_path):
    """Helsebro's publisher goes straight to the partition, a foreign one (plain routing key) through the intake:
    each patient keeps to one way and is settled in order, and only the foreign messages pass the intake."""
    from adapters.amqp.connection import declare_topology, open_connection
    from adapters.amqp.outbound import Publisher

    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4, "batch_max": 20})
    fnrs = [first_valid_fnr(1 + i % 28, 1 + i % 12, 78, 200 + i, synthetic=True) for i in range(PATIENTS)]
    order, settled = _recorder()
    handles = [run_engine_in_thread(settings, converter=Converter(settings), on_settled=settled, worker_index=i, workers=2, standby_delay=30) for i in range(2)]
    foreign = 0
    try:
        conn = open_connection(settings)
        try:
            topo = declare_topology(conn, settings)
            ours = Publisher(conn, settings, pipelined=True)
            for step in range(STEPS):
                for p, fnr in enumerate(fnrs):
                    body = adt_message("A08" if step else "A01", control_id=f"P{p:03d}-{step}", fnr=fnr, local_id=f"L{p}", visit=f"V{p}", given=f"Step{step}")
                    if p % 2:
                        ours.publish_to(str(topo.exchange.name), str(topo.inbound.routing_key), body)  # a foreign sender's way
                        foreign += 1
                    else:
                        ours.publish_inbound(body)
                ours.flush()
            ours.close()
        finally:
            conn.release()
        wait_until(lambda: len(order) == PATIENTS * STEPS, 90, what="all settled")
    finally:
        for h in handles:
            h.stop()
        delete_queues(settings)
    _assert_in_order(order)
    assert sum(h.stats.intake_forwarded for h in handles) == foreign


class _Events:
    """A logger that keeps (level, event, fields) of every line, from any thread."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def bind(self, **_kw) -> _Events:
        return self

    def _keep(self, level: str):
        return lambda event, **kw: self.lines.append((level, event, kw))

    def __getattr__(self, level: str):
        return self._keep(level)


@pytest.mark.integration
@pytest.mark.parametrize("partitions", [1, 2])
def test_every_partition_left_over_from_a_larger_count_is_named(tmp_path, partitions):
    """Lowering broker.partitions from 5 leaves inbound and destination partition queues no worker consumes:
    the engine names each of them at start, as an error with its depth and what to do, not only the first."""
    from adapters.amqp.connection import declare_topology, open_connection
    from adapters.amqp.outbound import Publisher

    routes = {
        "destinations": {"record": {"kind": "record"}, "ekstern": {"kind": "fhir", "server": {"base_url": "http://127.0.0.1:9/fhir"}}},
        "routes": [{"name": "all", "to": ["record", "ekstern"]}],
    }
    tag = f"orph{partitions}{threading.get_native_id()}"
    old = isolated_settings(tmp_path / "old", broker_url=RABBIT, broker={"partitions": 5}, tag=tag, routes=routes)
    new = isolated_settings(tmp_path / "new", broker_url=RABBIT, broker={"partitions": partitions}, tag=tag, routes=routes)
    inbound, dest = new.engine.broker.names.inbound, f"{new.engine.broker.names.destination_prefix}.ekstern"
    events = _Events()
    try:
        conn = open_connection(old)
        try:
            declare_topology(conn, old)
            publisher = Publisher(conn, old)
            publisher.publish_to("", f"{inbound}.p3", b"stranded")
            publisher.flush()
            publisher.close()
        finally:
            conn.release()
        handle = run_engine_in_thread(new, converter=Converter(new), logger=events)
        handle.stop()
    finally:
        delete_queues(old)
    named = {kw["queue"]: (level, kw["depth"]) for level, event, kw in events.lines if event == "partition_not_consumed"}
    first = partitions if partitions > 1 else 0  # with one partition the inbound queue itself is consumed: p0 is left over too
    expected = {f"{inbound}.p{k}": ("error", 1 if k == 3 else 0) for k in range(first, 5)}
    expected |= {f"{dest}.p{k}": ("error", 0) for k in range(partitions, 5)}
    assert named == expected
    assert all("5" in kw["fix"] for _, event, kw in events.lines if event == "partition_not_consumed")  # the count that drains them


@pytest.mark.integration
def test_a_partition_an_older_version_declared_is_named_at_start(tmp_path):
    """A partition queue declared without a dead-letter queue drops a message past RabbitMQ 4.x's delivery limit:
    the engine still starts on it, and says which queue, with what to do, as a warning."""
    from adapters.amqp.connection import open_connection, topology

    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2})
    name = str(topology(settings).partitions[1].name)
    events = _Events()
    conn = open_connection(settings)
    try:
        channel = conn.channel()
        channel.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum", "x-single-active-consumer": True})
        channel.close()
        run_engine_in_thread(settings, converter=Converter(settings), logger=events).stop()
    finally:
        conn.release()
        delete_queues(settings)
    [(level, kw)] = [(level, kw) for level, event, kw in events.lines if event == "queue_without_dead_letter"]
    assert level == "warning" and kw["queues"] == [name] and "policy" in kw["fix"]
