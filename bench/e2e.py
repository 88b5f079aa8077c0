"""Benchmark the whole path: RabbitMQ → engine workers (intake, convert, record, ACK) → ack, against a bare broker loop.

Three runs, in one process tree, on one RabbitMQ:

1. ceiling: `--workers` processes that consume a backlog, publish each message
   to another queue and ack, with no work between (the same batching,
   pipelined confirms and multiple acks the engine uses): what the broker and
   the client library allow on this machine;
2. throughput: a backlog of `--n` ADT^A01 through `helsebro run --workers N`
   (real processes: partition queues → convert → record → ACK → ack),
   timed from the first ACK on the replies queue to the n-th. The backlog is
   published as `helsebro send` publishes, straight to each patient's
   partition; `--via-intake` publishes with the plain routing key instead, as a
   foreign sender does, so the intake's second hop is in the figure too;
3. latency: messages published at `--rate` msg/s for `--seconds` by a separate
   process, each timed from publish to its ACK arriving on the replies queue.

    python bench/e2e.py [--n 6000] [--workers 2] [--partitions 4] [--rate 200] [--seconds 10] [--record sqlite|postgresql] [--via-intake] [--rounds K]

Needs RabbitMQ on 127.0.0.1:5672 (and PostgreSQL for --record postgresql).
No assertions: figures are printed, never tested.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kombu import Queue

from adapters.amqp.connection import declare_topology, open_connection, queue_depth
from adapters.amqp.inbound import Inbound, ack_all
from adapters.amqp.outbound import Publisher
from router.logging import configure_logging
from router.settings import Settings
from router.testing import adt_message, delete_queues, drop_schema, isolated_settings, settings_env, wait_until
from schemas.identity import first_valid_fnr

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
PG = "postgresql://postgres@127.0.0.1:5432/test"


def _message(i: int, control: str) -> bytes:
    fnr = first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 50 + (i // 336) % 40, 100 + (i * 7) % 300, synthetic=True)
    return adt_message("A01", control_id=control, fnr=fnr, local_id=f"L{i}", visit=f"V{i}")


def _publish_all(settings: Settings, bodies: list[bytes], *, queue: str | None = None) -> None:
    conn = open_connection(settings)
    declare_topology(conn, settings)
    pub = Publisher(conn, settings, app_id="bench", pipelined=True)
    for start in range(0, len(bodies), 500):
        for body in bodies[start:start + 500]:
            if queue is None:
                pub.publish_inbound(body)
            else:
                pub.publish_to("", queue, body)
        pub.flush()
    pub.close()
    conn.release()


def _depth(settings: Settings, name: str) -> int:
    conn = open_connection(settings)
    try:
        return queue_depth(conn, name)
    finally:
        conn.release()


def _timed_fill(settings: Settings, name: str, n: int, timeout: float = 600) -> float:
    """Return seconds from the first message appearing in *name* to the n-th."""
    conn = open_connection(settings)
    try:
        wait_until(lambda: queue_depth(conn, name) > 0, timeout, interval=0.005, what=f"first message in {name}")
        t0, first = time.perf_counter(), queue_depth(conn, name)
        wait_until(lambda: queue_depth(conn, name) >= n, timeout, interval=0.01, what=f"{n} messages in {name}")
        return (time.perf_counter() - t0) * n / max(n - first, 1)
    finally:
        conn.release()


def _bare_loop(config_dir: str, data_dir: str, source: str, target: str, batch: int) -> None:
    from router.settings import load_settings

    settings = load_settings(environ={}, config_dir=config_dir, data_dir=data_dir, broker_url=BROKER)
    conn = open_connection(settings)
    inbound = Inbound(conn, settings, queues=[Queue(source, no_declare=True)], prefetch=batch)
    inbound.start()
    pub = Publisher(conn, settings, app_id="bench-ceiling", pipelined=True)
    while True:
        got = inbound.take(batch, 0.5)
        for d in got:
            pub.publish_to("", target, d.body)
        pub.flush()
        ack_all(got, embedded=False)


def _ceiling(settings: Settings, n: int, workers: int, tag: str) -> float:
    source, target = f"bench.ceiling.in.{tag}", f"bench.ceiling.out.{tag}"
    conn = open_connection(settings)
    for name in (source, target):
        Queue(name, durable=True, queue_arguments={"x-queue-type": "quorum"}).bind(conn.default_channel).declare()
    conn.release()
    _publish_all(settings, [_message(i, f"C{i:07d}") for i in range(n)], queue=source)
    ctx = multiprocessing.get_context("spawn")
    batch = settings.engine.broker.batch_max
    procs = [ctx.Process(target=_bare_loop, args=(str(settings.config_dir), str(settings.data_dir), source, target, batch), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        seconds = _timed_fill(settings, target, n)
    finally:
        for p in procs:
            p.kill()
        conn = open_connection(settings)
        for name in (source, target):
            Queue(name, no_declare=True).bind(conn.default_channel).delete()
        conn.release()
    return n / seconds


def _start_workers(settings: Settings, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    env["HELSEBRO_MAPPINGS_DIR"] = os.environ.get("HELSEBRO_MAPPINGS_DIR", str(settings.mappings_dir))
    helsebro = str(Path(sys.executable).parent / "helsebro")
    return subprocess.Popen([helsebro, "run", "--workers", str(workers), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def _throughput(settings: Settings, n: int, workers: int, tmp: Path, *, first: int = 0) -> float:
    """Time a backlog of *n* new admissions (patients *first* … *first* + n − 1) through the engine."""
    replies = settings.engine.broker.names.replies
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
        Queue(replies, no_declare=True).bind(conn.default_channel).purge()  # an earlier round's ACKs
    finally:
        conn.release()
    _publish_all(settings, [_message(i, f"B{i:07d}") for i in range(first, first + n)])
    proc = _start_workers(settings, workers, tmp / "throughput.log")
    try:
        seconds = _timed_fill(settings, replies, n)
    finally:
        _stop(proc)
    return n / seconds


def _paced_publisher(config_dir: str, data_dir: str, rate: float, seconds: float) -> None:
    from router.settings import load_settings

    settings = load_settings(environ={}, config_dir=config_dir, data_dir=data_dir, broker_url=BROKER)
    conn = open_connection(settings)
    pub = Publisher(conn, settings, app_id="bench")
    interval, start, i = 1.0 / rate, time.perf_counter(), 0
    while (now := time.perf_counter()) - start < seconds:
        target = start + i * interval
        if now < target:
            time.sleep(target - now)
        pub.publish_inbound(_message(100_000 + i, f"T{time.time_ns()}"))
        i += 1
    pub.close()
    conn.release()


def _latency(settings: Settings, workers: int, rate: float, seconds: float, tmp: Path) -> list[float]:
    conn = open_connection(settings)
    conn.default_channel.queue_purge(settings.engine.broker.names.replies)
    replies = Inbound(conn, settings, queues=[Queue(settings.engine.broker.names.replies, no_declare=True)], prefetch=500)
    replies.start()
    proc = _start_workers(settings, workers, tmp / "latency.log")
    lat: list[float] = []
    try:
        time.sleep(8.0)  # the workers compile their mappings and subscribe
        pub = multiprocessing.get_context("spawn").Process(target=_paced_publisher, args=(str(settings.config_dir), str(settings.data_dir), rate, seconds))
        pub.start()
        deadline = time.monotonic() + seconds + 30
        expected = int(rate * seconds * 0.98)
        while len(lat) < expected and time.monotonic() < deadline:
            got = replies.take(500, 0.2)
            now = time.time_ns()
            lat += [(now - int(d.headers["x-helsebro-control-id"][1:])) / 1e6 for d in got if str(d.headers.get("x-helsebro-control-id", "")).startswith("T")]
            ack_all(got, embedded=False)
        pub.join()
    finally:
        _stop(proc)
        replies.stop()
        conn.release()
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000, help="backlog size for the ceiling and throughput runs")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (helsebro run --workers)")
    parser.add_argument("--partitions", type=int, default=4, help="broker.partitions")
    parser.add_argument("--batch-max", type=int, default=100, help="broker.batch_max")
    parser.add_argument("--rate", type=float, default=200.0, help="arrival rate for the latency run, msg/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--record", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--via-intake", action="store_true", help="publish with the plain routing key (a foreign sender): every message passes the intake")
    parser.add_argument("--rounds", type=int, default=1, help="ceiling and throughput runs, alternated, each ratio taken within its round "
                        "(the machine's speed drifts between runs); new patients each round, distinct while rounds × n ≤ 13,000")
    args = parser.parse_args()
    configure_logging(level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        tag = uuid.uuid4().hex[:8]
        record = None if args.record == "sqlite" else f"{PG}?schema=bench_{tag}"
        broker = {"partitions": args.partitions, "batch_max": args.batch_max, "prefetch": 2 * args.batch_max, "publish_to_partition": not args.via_intake}
        settings = isolated_settings(Path(tmp), broker_url=BROKER, record_url=record, tag=tag, broker=broker)
        try:
            way = "via the intake" if args.via_intake else "straight to the partitions"
            shares = []
            for r in range(args.rounds):
                ceiling = _ceiling(settings, args.n, args.workers, f"{tag}r{r}")
                print(f"ceiling, bare broker loop, {args.workers} processes (consume → publish → ack, batched, no work): {ceiling:,.0f} msg/s", flush=True)
                rate = _throughput(settings, args.n, args.workers, Path(tmp), first=r * args.n)
                print(f"end to end, {args.workers} workers, {args.partitions} partitions ({way}), {args.record}, backlog of {args.n} ADT^A01: {rate:,.0f} msg/s = {rate / ceiling:.0%} of the ceiling", flush=True)
                shares.append(rate / ceiling)
            if args.rounds > 1:
                print(f"share of the ceiling over {args.rounds} rounds: median {statistics.median(shares):.0%} (each: {', '.join(f'{x:.0%}' for x in shares)})", flush=True)
            lat = _latency(settings, args.workers, args.rate, args.seconds, Path(tmp))
            q = statistics.quantiles(lat, n=100, method="inclusive")  # exclusive extrapolates past the max
            print(f"latency at {args.rate:.0f} msg/s for {args.seconds:.0f} s ({len(lat)} messages, publish → ACK received): p50 {q[49]:.1f} ms  p99 {q[98]:.1f} ms  max {max(lat):.1f} ms", flush=True)
        finally:
            delete_queues(settings)
            if record is not None:
                drop_schema(PG, f"bench_{tag}")


if __name__ == "__main__":
    main()
