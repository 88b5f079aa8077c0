"""Ack after effect (DESIGN §Invariants 1), proved by holding the effect back: nothing is acked until it is durable.

test_crash_recovery kills the engine at a moment it cannot choose, which almost always falls between two batches:
an ack moved before the record's commit still passed it. Here the test holds the effect back for as long as it
likes, through the public interfaces only: it holds the record's write lock (SQLite `BEGIN EXCLUSIVE` on the record
file; PostgreSQL `LOCK TABLE ... IN EXCLUSIVE MODE` in the test's own schema), or it is the external FHIR destination
and answers 503. Once the engine is seen waiting on that effect (the settle's `record_unavailable` line; a lock wait in
pg_locks; the destination's first request), the engine is killed with SIGKILL and the broker must hand every message
back: none was acked, and no ACK went to the sender. With the lock released (the destination up), a restart applies
each exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from router.settings import Settings
from router.testing import (
    adt_message,
    delete_queues,
    drain_queue,
    drop_schema,
    isolated_settings,
    publish,
    queue_depth,
    run_engine_in_thread,
    settings_env,
    wait_until,
)
from schemas.identity import FNR_SYSTEM, first_valid_fnr

pytestmark = pytest.mark.integration

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
HELSEBRO = str(Path(sys.executable).parent / "helsebro")
HELD = 5  # messages published while the effect is held back: fewer than a batch, so one batch holds them all


def _people(first: int, count: int) -> list[tuple[str, str, str]]:
    return [(first_valid_fnr(1 + i % 28, 1 + i % 12, 71, 100 + i % 400, synthetic=True), f"AAE{i:04d}", f"VAAE{i:04d}") for i in range(first, first + count)]


def _messages(people: list[tuple[str, str, str]], prefix: str) -> list[bytes]:
    return [adt_message("A01", control_id=f"{prefix}-{i}", fnr=fnr, local_id=local, visit=visit) for i, (fnr, local, visit) in enumerate(people)]


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line the kill cut short
    return out


def _run(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([HELSEBRO, "run", *args], env=env, stdout=subprocess.DEVNULL, stderr=err)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _warm_up(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """Start the engine and see it settle one message: its record is open, so the lock the test takes next is met by
    the apply, not by the engine's start."""
    publish(settings, _messages(_people(900, 1), "WARM"))
    proc = _run(settings, log)
    try:
        wait_until(lambda: len(_events(log, "delivery_settled")) == 1 or proc.poll() is not None, 120, what="the warm-up message settled")
    except BaseException:
        _kill(proc)
        raise
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


class _SqliteHold:
    """The test's own write lock on the SQLite record file: the engine's BEGIN IMMEDIATE waits, then gives up busy."""

    def __init__(self, settings: Settings) -> None:
        self._conn = sqlite3.connect(settings.data_dir / "record.sqlite3", isolation_level=None, timeout=30)
        self._conn.execute("BEGIN EXCLUSIVE")

    def waited_on(self, log: Path) -> bool:
        return bool(_events(log, "record_unavailable"))  # settle's wait for the record: the batch is in _apply

    def release(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


class _PostgresHold:
    """The test's own lock on the resource table in its own schema: reads go on, the engine's writes wait."""

    def __init__(self, schema: str) -> None:
        import psycopg

        self._schema = schema
        self._conn = psycopg.connect(POSTGRES)
        self._conn.execute(f'LOCK TABLE "{schema}".fhir_resource IN EXCLUSIVE MODE')  # held until release

    def waited_on(self, _log: Path) -> bool:
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = 'fhir_resource' AND NOT l.granted", (self._schema,)).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        self._conn.rollback()
        self._conn.close()


@pytest.fixture(params=["embedded+sqlite", "rabbitmq+sqlite", "rabbitmq+postgres"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Callable[[], _SqliteHold | _PostgresHold]]]:
    schema = f"ackeffect_{uuid.uuid4().hex[:10]}"
    rabbit, pg = request.param.startswith("rabbitmq"), request.param.endswith("postgres")
    # A short SQLite lock wait: the engine gives the held apply up (record_unavailable) after 1 s, not the default 10.
    s = isolated_settings(tmp_path, broker_url=RABBIT if rabbit else None, record_url=f"{POSTGRES}?schema={schema}" if pg else None,
                          record={"sqlite_busy_timeout": 1})
    yield s, (lambda: _PostgresHold(schema)) if pg else (lambda: _SqliteHold(s))
    if rabbit:
        delete_queues(s)
    if pg:
        drop_schema(POSTGRES, schema)


def test_nothing_is_acked_while_the_record_cannot_commit(case: tuple[Settings, Callable[[], _SqliteHold | _PostgresHold]], tmp_path: Path) -> None:
    """While the record cannot commit, no delivery is acked and no ACK is sent; killed there, the broker gives every
    message back, and a restart applies each exactly once."""
    settings, hold_record = case
    inbound, replies = settings.engine.broker.names.inbound, settings.engine.broker.names.replies
    first_log = tmp_path / "first.log"
    proc = _warm_up(settings, first_log)
    hold = hold_record()
    try:
        try:
            people = _people(0, HELD)
            publish(settings, _messages(people, "HELD"))
            wait_until(lambda: hold.waited_on(first_log) or proc.poll() is not None, 60, what="the engine waiting on the record")
            assert proc.poll() is None, first_log.read_text()[-3000:]
        finally:
            _kill(proc)
        # Killed while its apply waited: every held message comes back, and the sender heard nothing of them yet.
        wait_until(lambda: queue_depth(settings, inbound) == HELD, 30, what=f"all {HELD} held messages back in the queue (none acked)")
        assert [h["x-helsebro-ack-code"] for h, _ in drain_queue(settings, replies)] == ["AA"]  # the warm-up's only
        assert [e["control_id"] for e in _events(first_log, "delivery_settled")] == ["WARM-0"]
    finally:
        hold.release()

    second_log = tmp_path / "second.log"
    again = _run(settings, second_log, "--until-idle", "1")
    assert again.wait(120) == 0, second_log.read_text()[-3000:]
    settled = _events(second_log, "delivery_settled")
    assert sorted((e["control_id"], e["outcome"]) for e in settled) == [(f"HELD-{i}", "applied") for i in range(HELD)]
    assert sorted(b"MSA|AA|HELD-" in body for _h, body in drain_queue(settings, replies)) == [True] * HELD
    assert queue_depth(settings, inbound) == 0

    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        for fnr, _local, _visit in people:
            [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
            assert patient["meta"]["versionId"] == "1"
        assert record.counts()["Patient"] == HELD + 1
    finally:
        record.close()


class _Destination(BaseHTTPRequestHandler):
    """The external FHIR server, down: every transaction is answered 503, and counted."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class _Recorder:
    """The destination, up: a FhirClient's place (the engine's destination_clients) that takes every transaction."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    def apply(self, bundle: dict[str, Any]) -> None:
        self.applied.append(bundle)


def _national_ids(bundle: dict[str, Any]) -> list[str]:
    return [i["value"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient" for i in e["resource"].get("identifier", [])
            if i.get("system") == FNR_SYSTEM]


@pytest.mark.parametrize("broker_url", [None, RABBIT], ids=["embedded", "rabbitmq"])
def test_a_destination_delivery_is_not_acked_before_the_server_answers_2xx(broker_url: str | None, tmp_path: Path) -> None:
    """A work message for an external FHIR destination stays unacked while the server answers 503: killed there, the
    broker gives every one back; a restart with the server up sends each exactly once."""
    down = ThreadingHTTPServer(("127.0.0.1", 0), _Destination)
    down.requests = 0  # type: ignore[attr-defined]
    threading.Thread(target=down.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    routes = {
        "destinations": {
            "record": {"kind": "record"},
            "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": f"http://127.0.0.1:{down.server_address[1]}/fhir", "backoff_max_seconds": 1}},
        },
        "routes": [{"name": "all", "to": ["record", "ekstern"]}],
    }
    settings = isolated_settings(tmp_path, broker_url=broker_url, routes=routes)
    work = f"{settings.engine.broker.names.destination_prefix}.ekstern.p0"
    log = tmp_path / "first.log"
    people = _people(100, HELD)
    try:
        publish(settings, _messages(people, "DEST"))
        proc = _run(settings, log)
        try:
            wait_until(lambda: (len(_events(log, "delivery_settled")) == HELD and down.requests >= 2) or proc.poll() is not None, 120,  # type: ignore[attr-defined]
                       what="every message forwarded, and the destination tried twice")
            assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            _kill(proc)
        wait_until(lambda: queue_depth(settings, work) == HELD, 30, what=f"all {HELD} work messages back in their queue (none acked)")

        up = _Recorder()
        handle = run_engine_in_thread(settings, destination_clients={"ekstern": up})
        try:
            wait_until(lambda: len(up.applied) == HELD, 60, what="every held message sent")
        finally:
            handle.stop()
        assert queue_depth(settings, work) == 0
        assert handle.engine.destinations[0].stats.already_sent == 0  # none had reached the server before
        assert sorted(_national_ids(b) for b in up.applied) == sorted([fnr] for fnr, _l, _v in people)
    finally:
        down.shutdown()
        down.server_close()
        if broker_url:
            delete_queues(settings)
