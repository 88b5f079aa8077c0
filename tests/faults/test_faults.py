"""Fault injection against the real RabbitMQ and PostgreSQL: kill -9 workers, restart the broker, break the FHIR destination.

2,000+ mixed ADT messages (some with a bad check digit, some resent) fan out
to the record, two legacy queues (passthrough, fhir-json) and an external
FHIR server (`adapters.fhir.rest.make_server` behind a proxy that answers 503
for a while), through two `helsebro run` workers on four partitions. Every
message renames its patient to `Seq<n>`, so the record's versions count
applications and their order: each good message is applied exactly once, in
order, when a patient's Patient has one version per good message, in
sequence, ending at the last one. The figures are printed (also with -s off)
and written to figures.json in the test's tmp dir.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from adapters.fhir.rest import make_server
from router.testing import adt_message, delete_queues, drain_queue, drop_schema, isolated_settings, publish, queue_depth, settings_env, wait_until
from schemas.identity import FNR_SYSTEM, first_valid_fnr

pytestmark = pytest.mark.integration

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PATIENTS, PER_PATIENT = 250, 9  # 2,250 messages before copies
WORKERS = 2



HELSEBRO = str(Path(sys.executable).parent / "helsebro")


@dataclass
class Mix:
    """The messages to send, and what each should become."""

    bodies: list[bytes] = field(default_factory=list)
    good: dict[str, tuple[str, int]] = field(default_factory=dict)  # control id -> (fnr, seq)
    bad: set[str] = field(default_factory=set)
    copies: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)  # fnr -> last good seq
    per_patient: dict[str, int] = field(default_factory=dict)  # fnr -> good messages


def message_mix(patients: int, per_patient: int, *, bad_every: int, duplicate_every: int, seed: int = 7) -> Mix:
    """Patients interleaved round-robin; each message renames its patient to `Seq<n>`; some bad (check digit), some sent twice in a row."""
    rng = random.Random(seed)
    mix = Mix()
    people = [first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 60 + (i // 336) % 30, 100 + i % 800, synthetic=True) for i in range(patients)]
    n = 0
    for seq in range(per_patient):
        for p, fnr in enumerate(people):
            n += 1
            control = f"F{p:04d}-{seq:03d}"
            if n % bad_every == 0:
                bad_fnr = fnr[:-1] + str((int(fnr[-1]) + 1) % 10)
                control = f"BAD{p:04d}-{seq:03d}"
                mix.bodies.append(adt_message("A08", control_id=control, fnr=bad_fnr, local_id=f"LB{p}", visit=f"VB{p}", given="Bad"))
                mix.bad.add(control)
                continue
            event = "A01" if seq == 0 else "A08"
            body = adt_message(event, control_id=control, fnr=fnr, local_id=f"L{p:04d}", visit=f"V{p:04d}", given=f"Seq{seq:03d}")
            mix.bodies.append(body)
            mix.good[control] = (fnr, seq)
            mix.last_seq[fnr] = seq
            mix.per_patient[fnr] = mix.per_patient.get(fnr, 0) + 1
            if n % duplicate_every == 0 or rng.random() < 0.005:
                mix.bodies.append(body)  # the sender resent it: same MSH-10, same bytes
                mix.copies += 1
    return mix


class FailingProxy:
    """An HTTP proxy in front of a FHIR server that answers 503 while `failing` is set."""

    def __init__(self, target_port: int) -> None:
        self.failing = threading.Event()
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.failing.is_set():
                    proxy.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Workers:
    """`helsebro run --worker-index i --workers n` processes, each with its log file; kill -9 and restart."""

    def __init__(self, settings, count: int, logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
        self.env.update(settings_env(settings))
        self.count = count
        self.logs = logs
        self.procs: dict[int, subprocess.Popen] = {}
        self.starts = 0

    def start(self, i: int) -> None:
        self.starts += 1
        with (self.logs / f"worker{i}-{self.starts}.log").open("wb") as log:  # the child keeps its own descriptor
            self.procs[i] = subprocess.Popen([HELSEBRO, "run", "--worker-index", str(i), "--workers", str(self.count)], env=self.env, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(30)

    def stop_all(self) -> list[int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return [p.wait(60) for p in self.procs.values()]

    def settled(self) -> int:
        """Settlements logged so far by every worker run (a redelivery after a kill counts again)."""
        return sum(log.read_bytes().count(b'"delivery_settled"') for log in self.logs.glob("worker*.log"))

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for log in self.logs.glob("worker*.log"):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"delivery_settled"' in line:
                    try:
                        outcome = json.loads(line)["outcome"]
                    except ValueError:
                        continue  # the line a kill -9 cut short
                    counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def world(tmp_path):
    """Settings with four destinations, an external FHIR server behind a failing proxy, and cleanup that restarts the broker."""
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    from adapters.fhir.record import SqliteRecord

    ext_path = tmp_path / "external.sqlite3"
    server = make_server(lambda: SqliteRecord(ext_path), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FailingProxy(server.server_address[1]) as proxy:
        routes = {
            "destinations": {
                "record": {"kind": "record"},
                "kommune": {"kind": "queue", "queue": "faults.kommune", "format": "passthrough"},
                "lab": {"kind": "queue", "queue": "faults.lab", "format": "fhir-json"},
                "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": f"http://127.0.0.1:{proxy.port}/fhir", "max_attempts": 2, "backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5, "timeout_seconds": 10}},
            },
            "routes": [
                {"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"]}, "to": ["record", "kommune", "lab", "ekstern"]},
            ],
        }
        settings = isolated_settings(tmp_path, broker_url=RABBIT, record_url=f"{POSTGRES}?schema={schema}", routes=routes, broker={"partitions": 4, "prefetch": 100, "batch_max": 100})
        try:
            yield settings, proxy, ext_path
        finally:
            try:
                rabbitmqctl("start_app")  # whatever happened, leave the broker up
            finally:
                server.shutdown()
                server.server_close()
                delete_queues(settings)
                drop_schema(POSTGRES, schema)


def _drained(settings) -> bool:
    from adapters.amqp.connection import all_queue_names

    watched = [q.name for q in all_queue_names(settings) if q.role in ("inbound", "partition", "work", "retry")]
    return all(queue_depth(settings, name) == 0 for name in watched)


def _complete(record, mix) -> bool:
    """True when every patient's current version carries its last good sequence number (queues show no unacked work)."""
    for fnr, seq in mix.last_seq.items():
        found = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
        if not found or found[0]["name"][0]["given"][0] != f"Seq{seq:03d}":
            return False
    return True


def test_faults_lose_nothing_apply_nothing_twice_keep_order(world, tmp_path, capsys):
    """Through kill -9s, a broker restart and a FHIR outage: every good message applied once and in order everywhere, every bad one dead-lettered."""
    settings, proxy, ext_path = world
    mix = message_mix(PATIENTS, PER_PATIENT, bad_every=50, duplicate_every=40)
    rng = random.Random(11)
    faults: dict[str, int] = defaultdict(int)
    workers = Workers(settings, WORKERS, tmp_path)
    started = time.monotonic()
    publish(settings, [])  # declares the topology
    for i in range(WORKERS):
        workers.start(i)
    third = len(mix.bodies) // 3
    publish(settings, mix.bodies[:third])
    proxy.failing.set()  # the FHIR destination is down while the first third goes through
    outage_until = time.monotonic() + 6.0
    faults["fhir_outage"] += 1
    for progress in (200, 500):  # kill -9 a random worker mid-stream, then restart it
        wait_until(lambda: workers.settled() >= progress + rng.randrange(100), 120, interval=0.1, what="progress before a kill")
        victim = rng.randrange(WORKERS)
        workers.kill(victim)
        faults["kill_9"] += 1
        workers.start(victim)
    publish(settings, mix.bodies[third:2 * third])
    time.sleep(max(0.0, outage_until - time.monotonic()))
    proxy.failing.clear()
    wait_until(lambda: workers.settled() >= 1000, 120, interval=0.1, what="progress before the broker restart")
    rabbitmqctl("stop_app")  # the broker goes away under both workers, mid-stream
    faults["broker_restart"] += 1
    time.sleep(2.0)
    rabbitmqctl("start_app")
    wait_until(lambda: _try(lambda: queue_depth(settings, settings.engine.broker.names.inbound) >= 0), 60, what="broker back")
    publish(settings, mix.bodies[2 * third:])
    wait_until(lambda: workers.settled() >= 1800 + rng.randrange(100), 120, interval=0.1, what="progress before the last kill")
    victim = rng.randrange(WORKERS)
    workers.kill(victim)
    faults["kill_9"] += 1
    workers.start(victim)
    from adapters.fhir.record import SqliteRecord, open_record

    record, external = open_record(settings), SqliteRecord(ext_path)
    try:
        wait_until(lambda: _try(lambda: _drained(settings)) and _complete(record, mix) and _complete(external, mix), 180, interval=1.0, what="every queue drained, both records complete")
        codes = workers.stop_all()
        elapsed = time.monotonic() - started
        applied = _check_record(record, mix)
        external_applied = _check_record(external, mix)
    finally:
        record.close()
        external.close()
    dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
    dead_ids = {h["x-helsebro-control-id"] for h, _ in dead}
    assert dead_ids == mix.bad, "every bad message, and nothing else, is dead-lettered"
    assert all("fødselsnummer" in h["x-helsebro-reason"] and h["x-helsebro-stage"] == "convert" for h, _ in dead)
    assert drain_queue(settings, f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq") == []
    for name, fmt in (("kommune", "passthrough"), ("lab", "fhir-json")):
        _check_legacy(drain_queue(settings, settings.routes.destinations[name].queue), mix, name, fmt)
    outcomes = workers.outcomes()
    figures = {
        "sent": len(mix.bodies), "distinct_good": len(mix.good), "bad": len(mix.bad), "resent_copies": mix.copies,
        "applied_exactly_once": applied, "applied_exactly_once_external_fhir": external_applied,
        "dead_lettered": len(dead_ids), "dead_letter_copies": len(dead) - len(dead_ids),
        "duplicates_suppressed": outcomes.get("duplicate", 0), "settled_outcomes_logged": outcomes,
        "faults_injected": dict(faults), "fhir_503_answers": proxy.refused, "worker_exit_codes": codes,
        "lost": len(mix.good) - applied, "seconds": round(elapsed, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    with capsys.disabled():
        print("\nfault-injection figures:", json.dumps(figures), f"(also in {tmp_path / 'figures.json'})")
    assert figures["lost"] == 0 and external_applied == len(mix.good)
    assert figures["duplicates_suppressed"] > 0


def _try(call):
    try:
        return call()
    except Exception:  # noqa: BLE001  # the broker is restarting: not yet
        return False


def _check_record(record, mix) -> int:
    """Assert each patient's history is one version per good message, in sequence; return the good messages applied."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for fnr, seq in mix.good.values():
        by_patient[fnr].append(seq)
    applied = 0
    for fnr, seqs in by_patient.items():
        [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
        history = [v["name"][0]["given"][0] for v in reversed(record.history("Patient", patient["id"]))]
        assert history == [f"Seq{s:03d}" for s in sorted(seqs)], f"patient {patient['id']}: applied out of order or twice"
        applied += len(history)
    return applied


def _check_legacy(messages, mix, destination: str, fmt: str) -> None:
    """Each good message reached the queue at least once, and every copy of it is the same bytes."""
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for headers, body in messages:
        by_id[headers["x-helsebro-control-id"]].add(body)
    assert set(by_id) == set(mix.good), f"{destination}: missing or extra messages"
    assert all(len(bodies) == 1 for bodies in by_id.values()), f"{destination}: one message arrived with different content"
    if fmt == "fhir-json":
        assert all(orjson.loads(next(iter(b)))["resourceType"] == "Bundle" for b in by_id.values())
