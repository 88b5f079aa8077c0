"""The fault suite's harness: the message mix, the failing FHIR proxy, `helsebro run` workers to kill, and the world they run in.

test_faults.py holds the run and its checks; it imports these names from here.
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
from router.testing import adt_message, delete_queues, drop_schema, isolated_settings, settings_env
from schemas.identity import FNR_SYSTEM, first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PATIENTS, PER_PATIENT = 250, 9  # 2,250 messages before copies
WORKERS = 2
LEGACY = {"kommune": "passthrough", "lab": "fhir-json", "pas": "hl7v2", "plo": "kith"}  # destination -> format
EXTERNAL = {"ekstern": "strict", "parkert": "park"}  # destination -> on_failure
FLAKY_EVERY = 25  # every 25th patient's messages are refused twice each by the park server: they climb the retry ladder

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
    raw: dict[str, bytes] = field(default_factory=dict)  # control id -> the bytes sent


def people(patients: int) -> list[str]:
    """The synthetic national ids of the run's patients, in order."""
    return [first_valid_fnr(1 + i % 28, 1 + (i // 28) % 12, 60 + (i // 336) % 30, 100 + i % 800, synthetic=True) for i in range(patients)]


def message_mix(patients: int, per_patient: int, *, bad_every: int, duplicate_every: int, seed: int = 7) -> Mix:
    """Patients interleaved round-robin; each message renames its patient to `Seq<n>`; some bad (check digit), some sent twice in a row."""
    rng = random.Random(seed)
    mix = Mix()
    n, everyone = 0, people(patients)
    for seq in range(per_patient):
        for p, fnr in enumerate(everyone):
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
            mix.raw[control] = body
            mix.last_seq[fnr] = seq
            mix.per_patient[fnr] = mix.per_patient.get(fnr, 0) + 1
            if n % duplicate_every == 0 or rng.random() < 0.005:
                mix.bodies.append(body)  # the sender resent it: same MSH-10, same bytes
                mix.copies += 1
    return mix


class FailingProxy:
    """An HTTP proxy in front of a FHIR server that answers 503 while `failing` is set, and to the first
    `flaky_refusals` sends of each message about a `flaky` patient (a record the server keeps locked for a while).

    It also notes, in order, the patient (fnr, given name) of every transaction
    the server answered 2xx, and when: the sends the server really applied,
    which the server's own history cannot show when a send repeats the current
    content.
    """

    def __init__(self, target_port: int, *, flaky: frozenset[str] = frozenset(), flaky_refusals: int = 0) -> None:
        self.failing = threading.Event()
        self.refused = 0
        self.applied: list[tuple[str, str, float]] = []  # (fnr, given name, time.monotonic())
        self._flaky, self._flaky_refusals = flaky, flaky_refusals
        self._refusals: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: with Nagle, each answer waits out a delayed ACK (40 ms)

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                patient = patient_of(orjson.loads(body)) if self.command == "POST" else None
                if proxy._refuse(patient):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                if patient is not None and 200 <= answer.status < 300:
                    with proxy._lock:  # applied now, whether or not the worker lives to read the answer
                        proxy.applied.append((*patient, time.monotonic()))
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

    def _refuse(self, patient: tuple[str, str] | None) -> bool:
        with self._lock:
            if self.failing.is_set():
                self.refused += 1
                return True
            if patient is not None and patient[0] in self._flaky and self._refusals[patient] < self._flaky_refusals:
                self._refusals[patient] += 1
                self.refused += 1
                return True
            return False

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
        self.kills: list[float] = []  # time.monotonic() of each kill -9

    def start(self, i: int) -> None:
        self.starts += 1
        with (self.logs / f"worker{i}-{self.starts}.log").open("wb") as log:  # the child keeps its own descriptor
            self.procs[i] = subprocess.Popen([HELSEBRO, "run", "--worker-index", str(i), "--workers", str(self.count)], env=self.env, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self, i: int) -> None:
        self.kills.append(time.monotonic())
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
        for line in self.events("delivery_settled"):
            counts[line["outcome"]] = counts.get(line["outcome"], 0) + 1
        return counts

    def events(self, name: str, destination: str | None = None) -> list[dict]:
        """Every log line of event *name* (of *destination*, when given) that every worker run wrote."""
        found = []
        for log in self.logs.glob("worker*.log"):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if f'"{name}"' in line:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # the line a kill -9 cut short
                    if event.get("event") == name and destination in (None, event.get("destination")):
                        found.append(event)
        return found


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@dataclass
class World:
    """The settings and, per external FHIR destination, its server's record file and the proxy in front."""

    settings: object
    proxies: dict[str, FailingProxy]
    servers: dict[str, Path]


def _fhir(port: int, *, max_attempts: int = 2, **options: object) -> dict:
    server = {"base_url": f"http://127.0.0.1:{port}/fhir", "max_attempts": max_attempts, "backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5, "timeout_seconds": 10}
    return {"kind": "fhir", "server": server, **options}


@pytest.fixture
def world(tmp_path):
    """Settings with seven destinations, two external FHIR servers behind failing proxies, and cleanup that restarts the broker."""
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    from adapters.fhir.record import SqliteRecord

    paths = {name: tmp_path / f"{name}.sqlite3" for name in EXTERNAL}
    servers = {name: make_server(lambda path=path: SqliteRecord(path), port=0) for name, path in paths.items()}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    flaky = frozenset(people(PATIENTS)[::FLAKY_EVERY])
    with FailingProxy(servers["ekstern"].server_address[1]) as strict, FailingProxy(servers["parkert"].server_address[1], flaky=flaky, flaky_refusals=2) as park:
        routes = {
            "destinations": {
                "record": {"kind": "record"},
                "kommune": {"kind": "queue", "queue": "faults.kommune", "format": "passthrough"},
                "lab": {"kind": "queue", "queue": "faults.lab", "format": "fhir-json"},
                "pas": {"kind": "queue", "queue": "faults.pas", "format": "hl7v2"},
                "plo": {"kind": "queue", "queue": "faults.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
                "ekstern": _fhir(strict.port, on_failure="strict"),
                # One try per call and short rungs, so a parked message comes back, and is parked again, within the outage;
                # enough attempts that none gives up.
                "parkert": _fhir(park.port, on_failure="park", retry={"delays_seconds": [0.5, 1.0, 2.0], "jitter": 0.2, "max_attempts": 50}, max_attempts=1),
            },
            "routes": [
                {"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"]}, "to": ["record", *LEGACY, *EXTERNAL]},
            ],
        }
        settings = isolated_settings(tmp_path, broker_url=RABBIT, record_url=f"{POSTGRES}?schema={schema}", routes=routes, broker={"partitions": 4, "prefetch": 100, "batch_max": 100})
        try:
            yield World(settings, {"ekstern": strict, "parkert": park}, paths)
        finally:
            try:
                rabbitmqctl("start_app")  # whatever happened, leave the broker up
            finally:
                for server in servers.values():
                    server.shutdown()
                    server.server_close()
                delete_queues(settings)
                drop_schema(POSTGRES, schema)


def patient_of(bundle) -> tuple[str, str]:
    """The (fnr, given name) of the one Patient in *bundle*: which message it is."""
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return next(i["value"] for i in patient["identifier"] if i["system"] == FNR_SYSTEM), patient["name"][0]["given"][0]
