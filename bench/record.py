"""Benchmark the record's apply: ADT Bundles in batches, as the engine worker applies them.

The Bundles are made by the real converter from synthetic ADT^A01 messages
(router.testing.adt_message), one distinct patient and stay per message, plus a
share of updates (`--updates`, default 0.2): a later ADT^A08 for a patient of an
earlier batch, with a discharge time, so its Patient is unchanged and its
Encounter gets a new version. Conversion is done before the clock starts; each
batch is one `apply_batch(bundles, keys, facts)` call, with the message keys and
journal facts the engine passes (router.pipeline.settle.applied_key, journal_facts);
`--no-journal` leaves the facts out, to see what the journal costs.

    python bench/record.py [--n 6000] [--batch 100] [--updates 0.2] [--procs 1] [--record sqlite|postgresql] [--dir PATH] [--wal]

`--procs P` runs P processes applying disjoint shares to the same record at once,
as `helsebro run --workers P` does (for SQLite: one file, one writer at a time).
SQLite goes to a fresh file in a temporary folder (under `--dir` when given: put
it on the disk you care about, fsync costs differ); PostgreSQL to a fresh schema
in database `test`, dropped afterwards.

Printed per run: msgs/s (wall), per-batch p50/p99 latency (wall, ms), CPU ms per
message (time.process_time of the applying process, background threads
included: the SQLite engine runs in it; PostgreSQL's server CPU is not in it),
and the applying thread's own (time.thread_time). No assertions: figures are printed,
never tested. The machine is shared: compare CPU figures, or runs made in the
same minutes.

`--wal` also prints the write-ahead log written per message, over the second half
of the run (the first half fills the record): for SQLite the growth of the -wal file,
with checkpoints turned off for the run (so the log only grows; the CPU figures then
leave out checkpointing); for PostgreSQL the server's WAL position moved, which counts
whatever else the server did meanwhile (use a quiet server). Use it with `--procs 1`:
the log is shared, so each process would count the others' writes too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.contracts import JournalFacts
from router.pipeline.convert import Converter
from router.pipeline.settle import applied_key, journal_facts
from router.settings import Settings, load_settings
from router.testing import adt_message, drop_schema
from schemas.identity import first_valid_fnr

PG = "postgresql://postgres@127.0.0.1:5432/test"


def _fnr(i: int) -> str:
    return first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 50 + (i // 336) % 40, 100 + (i * 7) % 300, synthetic=True)


def _messages(n: int, updates: float, batch: int, offset: int) -> list[bytes]:
    """*n* messages: new patients, and every 1/updates-th one an A08 for a patient of an earlier batch."""
    out: list[bytes] = []
    every = round(1 / updates) if updates > 0 else 0
    created: list[int] = []
    for j in range(n):
        i = offset + j
        if every and j % every == every - 1 and len(created) > batch:
            old = created[(j * 7919) % (len(created) - batch)]  # from an earlier batch
            out.append(adt_message("A08", control_id=f"U{i:08d}", fnr=_fnr(old), local_id=f"L{old}", visit=f"V{old}",
                                   discharged="20240118120000", sent="20240118120000"))
        else:
            out.append(adt_message("A01", control_id=f"B{i:08d}", fnr=_fnr(i), local_id=f"L{i}", visit=f"V{i}"))
            created.append(i)
    return out


def _prepared(n: int, updates: float, batch: int, offset: int) -> tuple[list[Any], list[str], list[JournalFacts]]:
    converter = Converter(load_settings(environ={}))
    bundles, keys, facts = [], [], []
    for raw in _messages(n, updates, batch, offset):
        conv = converter.convert(raw)[0]
        if not conv.ok:
            # the OperationOutcome's words, never the Converted itself: its repr holds the message, patient and all
            [issue] = conv.outcome()["issue"]
            where = f" at {issue['expression'][0]}" if issue.get("expression") else ""
            raise SystemExit(f"bench message did not convert: {issue['diagnostics']}{where}")
        bundles.append(conv.bundle)
        keys.append(applied_key(conv))
        facts.append(journal_facts(conv))
    return bundles, keys, facts


def _wal_meter(record: Any, url: str) -> Any:
    """A function returning the log's length now (bytes), for `--wal`; turns the SQLite record's checkpoints off."""
    if url.startswith("sqlite:///"):
        record._checkpointer.notify = lambda: None  # the log only grows: its file's size is what was written
        record._wal_limit = 1 << 62
        wal = Path(url[len("sqlite:///"):] + "-wal")
        return lambda: wal.stat().st_size if wal.exists() else 0
    return lambda: int(record._select("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')", ())[0][0])


def _run(url: str, n: int, batch: int, updates: float, offset: int, wal: bool, journal: bool, out: Any) -> None:
    """Apply *n* messages in batches to the record at *url*; put (wall s, process cpu s, applying thread's cpu s,
    batch latencies, log bytes per message over the second half or None) on *out*."""
    from adapters.fhir.record import open_record

    bundles, keys, facts = _prepared(n, updates, batch, offset)
    record = open_record(Settings(record_url=url))
    meter = _wal_meter(record, url) if wal else None
    half = (n // 2) // batch * batch
    lat: list[float] = []
    logged = None
    try:
        wall0, cpu0, own0 = time.perf_counter(), time.process_time(), time.thread_time()
        for start in range(0, n, batch):
            if meter is not None and start == half:
                logged = meter()
            t = time.perf_counter()
            results = record.apply_batch(bundles[start:start + batch], keys[start:start + batch], facts[start:start + batch] if journal else None)
            lat.append(time.perf_counter() - t)
            if any(isinstance(r, Exception) for r in results):
                raise SystemExit("a bench Bundle was refused")
        wall, cpu, own = time.perf_counter() - wall0, time.process_time() - cpu0, time.thread_time() - own0
        per_message = (meter() - logged) / (n - half) if meter is not None and logged is not None else None
    finally:
        record.close()
    out.put((wall, cpu, own, lat, per_message))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000, help="messages per process")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--updates", type=float, default=0.2, help="share of messages that update an earlier patient")
    parser.add_argument("--procs", type=int, default=1, help="processes applying at once to one record")
    parser.add_argument("--record", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the SQLite file's temporary folder")
    parser.add_argument("--wal", action="store_true", help="print log bytes per message (SQLite: with checkpoints off)")
    parser.add_argument("--no-journal", action="store_true", help="apply without journal facts (what helsebro_journal costs)")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        url = f"sqlite:///{tmp}/record.sqlite3" if args.record == "sqlite" else f"{PG}?schema={schema}"
        if args.record == "sqlite":
            from adapters.fhir.record import open_record

            open_record(Settings(record_url=url)).close()  # schema first, so the processes do not race to create it
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_run, args=(url, args.n, args.batch, args.updates, p * 10_000_000, args.wal, not args.no_journal, queue)) for p in range(args.procs)]
        try:
            for p in procs:
                p.start()
            got = [queue.get() for _ in procs]
            for p in procs:
                p.join()
        finally:
            if args.record == "postgresql":
                drop_schema(PG, schema)
    total = args.n * args.procs
    wall = max(g[0] for g in got)
    cpu = sum(g[1] for g in got)
    own = sum(g[2] for g in got)
    lat = sorted(x for g in got for x in g[3])
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"record={args.record} n={total} batch={args.batch} updates={args.updates} procs={args.procs}")
    print(f"  msgs/s        {total / wall:10.0f}")
    print(f"  batch p50 ms  {statistics.median(lat) * 1e3:10.2f}")
    print(f"  batch p99 ms  {p99 * 1e3:10.2f}")
    print(f"  cpu ms/msg    {cpu / total * 1e3:10.3f}  (process: with any background thread)")
    print(f"  apply cpu     {own / total * 1e3:10.3f}  (ms/msg, the applying thread alone)")
    print(f"  wall ms/msg   {wall / total * 1e3 * args.procs:10.3f}  (per process)")
    if args.wal:
        logs = [g[4] for g in got if g[4] is not None]
        print(f"  wal B/msg     {sum(logs) / len(logs):10.0f}  (second half of the run; SQLite: checkpoints off)")


if __name__ == "__main__":
    main()
