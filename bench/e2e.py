"""Benchmark the whole path: RabbitMQ → engine (convert) → record → ACK → ack.

Prints throughput on a backlog, and latency percentiles when messages arrive
at a steady rate (default 200 msg/s), publish to settle. The engine runs in
this process on one thread, like one `helsebro run` worker; the publisher of
the paced run is a separate process so it does not share the GIL.

    python bench/e2e.py [--n 3000] [--rate 200] [--seconds 10] [--record sqlite|postgresql]

Needs RabbitMQ on 127.0.0.1:5672 (and PostgreSQL for --record postgresql).
No assertions: figures are printed, never tested.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from router.logging import configure_logging
from router.testing import adt_message, delete_queues, isolated_settings, publish, run_engine_in_thread, wait_until
from schemas.identity import first_valid_fnr

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
PG = "postgresql://postgres@127.0.0.1:5432/test"


def _messages(n: int, stamp: bool) -> list[bytes]:
    out = []
    for i in range(n):
        fnr = first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 50 + (i // 336) % 40, 100 + (i * 7) % 300, synthetic=True)
        control = f"T{time.time_ns()}" if stamp else f"B{i:07d}"
        out.append(adt_message("A01", control_id=control, fnr=fnr, local_id=f"L{i}", visit=f"V{i}"))
    return out


def _paced_publisher(settings_dir: str, tag: str, rate: float, seconds: float, broker: str, record: str | None) -> None:
    settings = isolated_settings(Path(settings_dir), broker_url=broker, record_url=record, tag=tag)
    from adapters.amqp.connection import declare_topology, open_connection
    from adapters.amqp.outbound import Publisher

    conn = open_connection(settings)
    declare_topology(conn, settings)
    pub = Publisher(conn, settings, app_id="bench")
    interval = 1.0 / rate
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        target = start + i * interval
        if now < target:
            time.sleep(target - now)
        fnr = first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 50 + (i // 336) % 40, 100 + (i * 7) % 300, synthetic=True)
        pub.publish_inbound(adt_message("A01", control_id=f"T{time.time_ns()}", fnr=fnr, local_id=f"P{i}", visit=f"PV{i}"))
        i += 1
    pub.close()
    conn.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="backlog size for the throughput run")
    parser.add_argument("--rate", type=float, default=200.0, help="arrival rate for the latency run, msg/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--record", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    configure_logging(level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        tag = uuid.uuid4().hex[:8]
        record = None if args.record == "sqlite" else f"{PG}?schema=bench_{tag}"
        settings = isolated_settings(Path(tmp), broker_url=BROKER, record_url=record, tag=tag)
        try:
            _throughput(settings, args.n)
            _latency(settings, Path(tmp), tag, args, record)
        finally:
            delete_queues(settings)


def _throughput(settings, n: int) -> None:
    publish(settings, _messages(n, stamp=False))
    times: list[float] = []
    handle = run_engine_in_thread(settings, on_settled=lambda s: times.append(time.perf_counter()))
    try:
        wait_until(lambda: len(times) >= n, timeout=600, what="backlog settled")
    finally:
        handle.stop()
    span = times[-1] - times[0]
    print(f"end to end, 1 worker, backlog of {n} ADT^A01 (RabbitMQ quorum queue → convert → record → ACK → ack): {(n - 1) / span:,.0f} msg/s")


def _latency(settings, tmp: Path, tag: str, args: argparse.Namespace, record: str | None) -> None:
    lat: list[float] = []

    def settled(s) -> None:
        if s.control_id and s.control_id.startswith("T"):
            lat.append(time.time_ns() / 1e6 - int(s.control_id[1:]) / 1e6)

    handle = run_engine_in_thread(settings, on_settled=settled)
    try:
        proc = multiprocessing.get_context("spawn").Process(target=_paced_publisher, args=(str(tmp / "pub"), tag, args.rate, args.seconds, BROKER, record))
        proc.start()
        proc.join()
        expected = int(args.rate * args.seconds * 0.95)
        wait_until(lambda: len(lat) >= expected, timeout=120, what="paced messages settled")
        time.sleep(1.0)  # let the tail settle; only for reporting
    finally:
        handle.stop()
    q = statistics.quantiles(lat, n=100)
    print(f"latency at {args.rate:.0f} msg/s for {args.seconds:.0f} s ({len(lat)} messages, publish → settled): p50 {q[49]:.1f} ms  p99 {q[98]:.1f} ms  max {max(lat):.1f} ms")


if __name__ == "__main__":
    main()
