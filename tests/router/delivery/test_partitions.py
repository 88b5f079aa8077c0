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
