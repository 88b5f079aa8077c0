"""Where one engine worker's CPU goes, per message: convert, the record's apply, AMQP, the log line.

One `Engine` runs in this process on a real RabbitMQ (and PostgreSQL with
`--record postgresql`), with one partition, over a backlog of `--n` ADT^A01
published before it starts (so it takes full batches, as under load); each
phase's thread CPU time is summed while it settles them. Start-up is in the
figures, spread over the messages: use a few thousand. The phases are the engine's own calls, timed by wrapping them
(nested ones are inside their callers' figures):

- `Engine._handle`: a whole batch: convert, settle and the log line;
- `Converter.convert`: decode and map;
- `Settle.batch`: what follows conversion, of which `_apply` (the record),
  `_publish` (ACK and destinations), `Publisher.flush` (sending, and reading the
  broker's confirms and the next deliveries), `_remember`, `_find_duplicates`;
- `log.info`: the `delivery_settled` line.

    python bench/worker.py [--n 4000] [--record sqlite|postgresql]

The engine freezes the garbage collector's view of what lives as long as the
process, as `helsebro run` does (before session 16 this bench did not, and its
convert figure included the full collections a worker does not make).

Needs RabbitMQ on 127.0.0.1:5672 (and PostgreSQL for --record postgresql).
Figures are printed, never tested. The wrappers cost about 1 µs a call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.amqp.connection import declare_topology, open_connection
from adapters.amqp.inbound import Inbound
from adapters.amqp.outbound import Publisher
from router import engine as engine_module
from router.logging import configure_logging
from router.pipeline import settle as settle_module
from router.pipeline.convert import Converter
from router.testing import adt_message, delete_queues, drop_schema, isolated_settings, wait_until
from schemas.identity import first_valid_fnr

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
PG = "postgresql://postgres@127.0.0.1:5432/test"

_spent: dict[str, float] = {}


def _timed(owner: Any, name: str, label: str) -> None:
    """Replace *owner*.*name* by a wrapper that adds its thread CPU time to _spent[label]."""
    inner = getattr(owner, name)
    clock = time.thread_time

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            _spent[label] = _spent.get(label, 0.0) + clock() - t

    setattr(owner, name, timed)


class _TimedLog:
    """The engine's logger, with each call's thread CPU time added to _spent."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._log, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                _spent[f"log.{name}"] = _spent.get(f"log.{name}", 0.0) + time.thread_time() - t

        return timed


def _message(i: int) -> bytes:
    fnr = first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 50 + (i // 336) % 40, 100 + (i * 7) % 300, synthetic=True)
    return adt_message("A01", control_id=f"W{i:07d}", fnr=fnr, local_id=f"L{i}", visit=f"V{i}")


def _backlog(settings: Any, bodies: list[bytes]) -> None:
    """Publish *bodies* to the inbound exchange, confirmed 500 at a time (as bench/e2e.py fills its backlog)."""
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
        publisher = Publisher(conn, settings, app_id="bench-worker", pipelined=True)
        for start in range(0, len(bodies), 500):
            for body in bodies[start:start + 500]:
                publisher.publish_inbound(body)
            publisher.flush()
        publisher.close()
    finally:
        conn.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="messages in the backlog")
    parser.add_argument("--record", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    configure_logging(stream=open(os.devnull, "w"))  # noqa: SIM115 - the log line is timed, not read
    for owner, name in ((engine_module.Engine, "_handle"), (Converter, "convert"), (settle_module.Settle, "batch"),
                        (settle_module.Settle, "_apply"), (settle_module.Settle, "_publish"), (settle_module.Settle, "_remember"),
                        (settle_module.Settle, "_find_duplicates"), (Publisher, "flush"), (Inbound, "take"), (Inbound, "poll")):
        _timed(owner, name, f"{owner.__name__}.{name}")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/record.sqlite3" if args.record == "sqlite" else f"{PG}?schema={schema}"
        settings = isolated_settings(Path(tmp), broker_url=BROKER, record_url=url, broker={"partitions": 1})
        _backlog(settings, [_message(i) for i in range(args.n)])  # first, so the worker takes full batches
        worker = engine_module.Engine(settings, freeze_gc=True)  # as `helsebro run` starts its engine: else convert pays full collections
        worker._log = _TimedLog(worker._log)  # a private attribute on purpose: the log line is one of the phases
        thread = threading.Thread(target=worker.run, kwargs={"until_idle": 3.0}, daemon=True)
        _spent.clear()
        t0 = time.perf_counter()
        thread.start()
        try:
            wait_until(lambda: worker.stats.messages >= args.n, 600, what="every message settled")
            wall = time.perf_counter() - t0
        finally:
            worker.stop()
            thread.join(30)
            delete_queues(settings)
            if args.record == "postgresql":
                drop_schema(PG, schema)
    print(f"one worker, a backlog of {args.n} ADT^A01, {args.record}: {args.n / wall:,.0f} msg/s (start-up included)")
    print("thread CPU per message, by phase (nested phases are inside their callers):")
    for label, seconds in sorted(_spent.items(), key=lambda kv: -kv[1]):
        print(f"  {label:28s} {seconds / args.n * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
