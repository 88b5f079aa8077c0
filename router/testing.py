"""The test kit for developers and mapping authors: an engine in a thread, queues to look into, waits with deadlines.

Tests and `helsebro demo` use it; nothing in the engine's own path imports it.
Every wait here has a deadline and checks a condition; none sleeps a fixed time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kombu import Queue

from adapters.amqp.connection import declare_topology, delete_topology, open_connection
from adapters.amqp.connection import queue_depth as _depth
from adapters.amqp.outbound import Publisher
from router.engine import Engine, EngineStats
from router.settings import PROJECT_ROOT, Settings, load_settings

__all__ = [
    "EngineHandle",
    "adt_message",
    "apprec_answers",
    "converted",
    "delete_queues",
    "drain_queue",
    "isolated_settings",
    "one_bundle",
    "publish",
    "queue_depth",
    "run_engine_in_thread",
    "settings_env",
    "wait_until",
]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, *, interval: float = 0.05, what: str = "condition") -> T:
    """Return *predicate*'s first truthy value; raise TimeoutError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)


_STRUCTURE = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03"}


def adt_message(
    event: str,
    *,
    control_id: str,
    fnr: str,
    local_id: str,
    visit: str,
    family: str = "Testesen",
    given: str = "Kari",
    admitted: str = "20240115083000",
    discharged: str = "",
    sent: str = "20240115083000",
) -> bytes:
    """Return one synthetic HL7 v2.5.1 ADT message (CR-separated, UTF-8) about an inpatient visit.

    Use synthetic national ids only (schemas.identity.first_valid_fnr(..., synthetic=True)).
    """
    structure = _STRUCTURE.get(event, "ADT_A01")
    pv1 = ["PV1", "1", "I", "MED^101^1^STOLAV"] + [""] * 15 + [f"{visit}^^^STOLAV^VN"] + [""] * 24 + [admitted, discharged]
    segments = [
        f"MSH|^~\\&|PAS|STOLAV|HELSEBRO|HELSEPLATTFORMEN|{sent}||ADT^{event}^{structure}|{control_id}|P|2.5.1|||||NO|UNICODE UTF-8",
        f"EVN|{event}|{sent}",
        f"PID|1||{fnr}^^^NOR^FNR~{local_id}^^^STOLAV^PI||{family}^{given}^^^^^L||19850315|F",
        "|".join(pv1),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def isolated_settings(
    folder: Path,
    *,
    broker_url: str | None = None,
    record_url: str | None = None,
    tag: str | None = None,
    routes: dict[str, Any] | None = None,
    broker: dict[str, Any] | None = None,
    hl7v2: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    workers: dict[str, Any] | None = None,
) -> Settings:
    """Write a config dir under *folder* whose broker names are unique, and return its settings.

    The data dir is `folder / "data"`; queue and exchange names end in *tag*
    (a fresh random one by default), so tests share one RabbitMQ safely.
    *routes* is written as routes.yaml (legacy queue names in it are tagged
    too); *broker* overrides keys of the `broker` block (partitions, batch_max …), *hl7v2* those of
    the `hl7v2` block (acknowledgments, senders …), *record* those of the `record` block
    (sqlite_busy_timeout), *workers* those of the `workers` block (restart_first_seconds).
    """
    tag = tag or uuid.uuid4().hex[:10]
    config_dir = folder / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    base = PROJECT_ROOT / "config" / "engine.yaml"
    raw: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    broker_block = raw.setdefault("broker", {})
    names = broker_block.setdefault("names", {})
    for key, default in (("exchange", "helsebro.in"), ("inbound", "helsebro.in.hl7v2"), ("dead_letter", "helsebro.dlq"), ("replies", "helsebro.reply.hl7v2"), ("destination_prefix", "helsebro.dest"),
                         ("apprec_prefix", "helsebro.reply.apprec")):
        names[key] = f"{names.get(key, default)}.{tag}"
    broker_block["reconnect_max_seconds"] = 2.0
    broker_block.update(broker or {})
    if hl7v2:
        raw.setdefault("hl7v2", {}).update(hl7v2)
    if record:
        raw.setdefault("record", {}).update(record)
    if workers:
        raw.setdefault("workers", {}).update(workers)
    (config_dir / "engine.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    if routes is not None:
        routes = {**routes, "destinations": {n: _tagged(d, tag) for n, d in routes.get("destinations", {}).items()}}
        (config_dir / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False), encoding="utf-8")
    return load_settings(environ={}, config_dir=str(config_dir), data_dir=str(folder / "data"), broker_url=broker_url, record_url=record_url)


def _tagged(destination: dict[str, Any], tag: str) -> dict[str, Any]:
    if destination.get("kind") == "queue":
        return {**destination, "queue": f"{destination['queue']}.{tag}"}
    return destination


def settings_env(settings: Settings) -> dict[str, str]:
    """Return the HELSEBRO_* variables that make a subprocess load *settings*."""
    env = {"HELSEBRO_CONFIG_DIR": str(settings.config_dir), "HELSEBRO_DATA_DIR": str(settings.data_dir)}
    if settings.broker_url:
        env["HELSEBRO_BROKER_URL"] = settings.broker_url
    if settings.record_url:
        env["HELSEBRO_RECORD_URL"] = settings.record_url
    return env


@dataclass
class EngineHandle:
    """An engine running in a background thread."""

    engine: Engine
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def stats(self) -> EngineStats:
        """The engine's counters."""
        return self.engine.stats

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the engine after its delivery in flight and wait for the thread; re-raise what killed it."""
        self.engine.stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"engine did not stop within {timeout} s")
        if self.errors:
            raise self.errors[0]


def run_engine_in_thread(settings: Settings, *, until_idle: float | None = None, start_timeout: float = 60.0, **engine_kwargs: Any) -> EngineHandle:
    """Start an Engine on *settings* in a daemon thread; return once it consumes."""
    engine = Engine(settings, **engine_kwargs)
    handle = EngineHandle(engine=engine, thread=threading.Thread())

    def target() -> None:
        try:
            engine.run(until_idle=until_idle)
        except BaseException as exc:  # noqa: BLE001  # handed to the caller by stop()
            handle.errors.append(exc)
            engine.started.set()

    handle.thread = threading.Thread(target=target, name="helsebro-engine", daemon=True)
    handle.thread.start()
    if not engine.started.wait(start_timeout):
        engine.stop()
        raise TimeoutError(f"engine did not start within {start_timeout} s")
    if handle.errors:
        raise handle.errors[0]
    return handle


def publish(settings: Settings, bodies: Iterable[bytes], *, app_id: str = "helsebro-test") -> list[str]:
    """Declare the topology and publish each body to the inbound exchange, confirmed; return message ids."""
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
        publisher = Publisher(conn, settings, app_id=app_id)
        ids = [publisher.publish_inbound(body) for body in bodies]
        publisher.close()
        return ids
    finally:
        conn.release()


def queue_depth(settings: Settings, name: str) -> int:
    """Return the number of ready messages in queue *name*."""
    conn = open_connection(settings)
    try:
        return _depth(conn, name)
    finally:
        conn.release()


def drain_queue(settings: Settings, name: str) -> list[tuple[dict[str, Any], bytes]]:
    """Take every ready message off queue *name* (acking each); return (headers, body) pairs in order."""
    return [(headers, body) for _, headers, body in drain_with_ids(settings, name)]


def drain_with_ids(settings: Settings, name: str) -> list[tuple[str, dict[str, Any], bytes]]:
    """Take every ready message off queue *name* (acking each); return (message id, headers, body) in order.

    The message id is what a receiver deduplicates by: a forwarded copy's id must be the same on every redelivery.
    """
    conn = open_connection(settings)
    out: list[tuple[str, dict[str, Any], bytes]] = []
    try:
        channel = conn.channel()
        queue = Queue(name, no_declare=True)(channel)
        while (message := queue.get(no_ack=False)) is not None:
            body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8")
            out.append((str(message.properties.get("message_id") or ""), dict(message.headers or {}), body))
            message.ack()
        channel.close()
        return out
    finally:
        conn.release()


def delete_queues(settings: Settings) -> None:
    """Delete the queues and exchange named by *settings* (test teardown)."""
    conn = open_connection(settings)
    try:
        delete_topology(conn, settings)
    finally:
        conn.release()


def drop_schema(url: str, schema: str) -> None:
    """Drop PostgreSQL *schema* at *url* and everything in it: tests and benches clean up the schema they made."""
    import psycopg  # only the PostgreSQL tests and benches get here
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def named_sender(data: bytes, application: bytes = b"CORPUS") -> bytes:
    """*data* with *application* in each MSH-3 that is empty.

    Why: many public samples leave MSH-3 and MSH-4 empty, and Helsebro refuses a local
    number that names no assigning authority in a message that names no sender (whose
    number would it be?). A test of what a sample's other segments become names a sender,
    as every Norwegian system does.
    """
    out = []
    for line in data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        lead = line[:len(line) - len(line.lstrip(b"\xef\xbb\xbf\x0b"))]  # a BOM or an MLLP start byte
        msh = line[len(lead):]
        if msh[:3] == b"MSH" and len(msh) > 8:
            fields = msh.split(msh[3:4])
            if len(fields) > 2 and not fields[2]:
                fields[2] = application
                line = lead + msh[3:4].join(fields)
        out.append(line)
    return b"\r".join(out)


def apprec_answers(sent: bytes) -> tuple[str, str, bytes, bytes]:
    """For a KITH message Helsebro *sent*: its MsgId, a MsgId it never gave, and an OK AppRec answering each.

    Why: what a receiving system sends back is the test's input when the question is how Helsebro takes
    an AppRec, and one for a message it never sent is the case an operator must hear about.
    """
    import re
    import uuid

    from adapters.kith import build_apprecs, read_message

    envelope = read_message(sent).envelope
    assert envelope is not None  # noqa: S101 - a test helper: Helsebro's own message has its envelope
    sent_id, stranger = envelope.msg_id, str(uuid.uuid4())
    never_sent = re.sub(re.escape(sent_id).encode(), stranger.encode(), sent)  # the same message under a MsgId never given
    matched, unmatched = (build_apprecs(read_message(body).envelope, error=None)[0].xml for body in (sent, never_sent))
    return sent_id, stranger, matched, unmatched


def converted(converter: Any, data: bytes) -> list[dict[str, Any]]:
    """Convert *data* with *converter*: each Bundle validated with fhir.resources, each failure as its OperationOutcome.

    Why: a mapping test that asserts on a Bundle must also know it is valid FHIR R4,
    which the engine itself checks only cheaply per message.
    """
    from fhir.resources.R4B.bundle import Bundle

    out = []
    for result in converter.convert(data):
        if result.ok:
            Bundle.model_validate(result.bundle)
            out.append(result.bundle)
        else:
            out.append(result.outcome())
    return out


def one_bundle(converter: Any, data: bytes) -> dict[str, Any]:
    """The one valid Bundle *data* (one message) converts to; fails the test with the OperationOutcome otherwise."""
    [doc] = converted(converter, data)
    assert doc["resourceType"] == "Bundle", doc  # noqa: S101 - a test helper: fails the test
    return doc


def edit_text(path: Path, old: str, new: str) -> int:
    """Replace the first *old* in the file at *path* with *new*; return the line *old*'s text starts on.

    For tests that break a copy of the mappings and expect lint to name the line: leading
    newlines of *old* are not its text, so they do not count.
    """
    text = path.read_text()
    assert old in text, old  # noqa: S101 - a test helper: the test's own text must be there
    line = text[: text.index(old)].count("\n") + 1 + old[: len(old) - len(old.lstrip("\n"))].count("\n")
    path.write_text(text.replace(old, new, 1))
    return line
