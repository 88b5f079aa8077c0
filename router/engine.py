"""Run the engine: consume the inbound queue, convert, settle, and survive the broker going away.

The worker loop owns the connection's life (connect, declare, consume,
reconnect with capped backoff) and is the one place that catches `Exception`:
a delivery that breaks the code is dead-lettered as `internal`, its traceback
logged without the body or the exception's text, and the loop goes on.
Converting is router/pipeline/convert.py's; applying, dead-lettering,
replying and acking are router/pipeline/settle.py's.

The loop reaches the broker adapter and the record directly for now;
they move behind router/registry.py kind names when that lands.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from adapters.amqp.connection import broker_errors, declare_topology, open_connection, queue_depth
from adapters.amqp.inbound import Delivery, Inbound
from adapters.amqp.outbound import Publisher
from router.errors import BrokerUnavailable, TransientError
from router.logging import get_logger
from router.pipeline.settle import Settle, Settled, dead_letter_headers
from router.reload import MappingReloader

if TYPE_CHECKING:
    from kombu import Connection

    from router.contracts import Converted, Record
    from router.settings import Settings

__all__ = ["Engine", "EngineStats"]

_POLL_SECONDS = 0.2
_FIRST_RECONNECT_SECONDS = 0.5


@dataclass(slots=True)
class EngineStats:
    """Counters since start; written by the engine's thread only, safe to read from others."""

    deliveries: int = 0
    messages: int = 0
    applied: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    reconnects: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    def count(self, settled: Settled) -> None:
        """Add one settled message."""
        self.messages += 1
        if settled.outcome == "applied":
            self.applied += 1
        elif settled.outcome == "unchanged":
            self.unchanged += 1
        elif settled.outcome == "duplicate":
            self.duplicates += 1
        else:
            self.dead_lettered += 1


class Engine:
    """The worker: one consumer on the inbound queue, settling each delivery before taking the next."""

    def __init__(
        self,
        settings: Settings,
        *,
        converter: Any = None,
        record: Record | None = None,
        logger: Any = None,
        on_settled: Callable[[Settled], None] | None = None,
    ) -> None:
        self._settings = settings  # no I/O here: run() connects
        self._converter = converter
        self._record = record
        self._log = logger or get_logger("engine")
        self._on_settled = on_settled or (lambda _s: None)
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self._inbound: Inbound | None = None
        self._publisher: Publisher | None = None
        self.stats = EngineStats()
        self.started = threading.Event()
        self.mappings: Any = None  # the MappingReloader once run() starts
        self._dup_guard: Any = None

    def stop(self) -> None:
        """Ask the loop to stop after the delivery in flight; safe from a signal handler or another thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def run(self, *, until_idle: float | None = None) -> None:
        """Consume until stop() is called, or until the inbound queue was empty for *until_idle* seconds.

        Raises:
            ConfigError: the mappings or settings are wrong (at start only).
        """
        if self._converter is not None:
            converter: Any = _Fixed(self._converter)
        else:
            converter = MappingReloader(
                self._settings.mappings_dir,
                lambda: _load_converter(self._settings),
                interval=self._settings.engine.mappings.reload_seconds,
                logger=self._log,
            )
        self.mappings = converter
        delay = _FIRST_RECONNECT_SECONDS
        max_delay = self._settings.engine.broker.reconnect_max_seconds
        from adapters.kith.xsd import validation_status  # says whether KITH XML is XSD-validated

        self._log.info(
            "engine_started",
            embedded_broker=not self._settings.broker_url,
            inbound=self._settings.engine.broker.names.inbound,
            until_idle=until_idle,
            xml_validation=validation_status(self._settings.xsd_dir),
        )
        try:
            while not self._stop.is_set():
                try:
                    self._connect()
                    delay = _FIRST_RECONNECT_SECONDS
                    if self._consume(converter, until_idle):
                        break
                except TransientError as exc:
                    if self._stop.is_set():
                        break  # a record outage while stopping: the delivery stays unacked
                    self.stats.reconnects += 1
                    self._log.warning("broker_or_record_unavailable", error=type(exc).__name__, reason=str(exc), retry_in_s=delay)
                    self._disconnect()
                    if self._stop.wait(delay):
                        break
                    delay = min(delay * 2, max_delay)
        finally:
            self._disconnect()
            if self._record is not None:
                self._record.close()
            if self._dup_guard is not None:
                self._dup_guard.close()
            self._log.info("engine_stopped", deliveries=self.stats.deliveries, messages=self.stats.messages)

    def _connect(self) -> None:
        self._disconnect()
        if self._record is None:
            self._record = _open_record(self._settings)
        conn = open_connection(self._settings)
        self._conn = conn
        try:
            conn.ensure_connection(max_retries=1)
        except broker_errors(conn) as exc:
            raise BrokerUnavailable(f"cannot connect: {type(exc).__name__}") from exc
        declare_topology(conn, self._settings)
        self._publisher = Publisher(conn, self._settings, app_id="helsebro-run")
        self._inbound = Inbound(conn, self._settings)
        self._inbound.start()
        self.started.set()

    def _disconnect(self) -> None:
        inbound, publisher, conn = self._inbound, self._publisher, self._conn
        self._inbound = self._publisher = self._conn = None
        if inbound is not None:
            inbound.stop()  # unacked deliveries go back to the queue
        if publisher is not None:
            publisher.close()
        if conn is not None:
            try:
                conn.release()
            except broker_errors(conn):
                pass  # closing a dead connection: it is gone either way

    def _consume(self, converter: Any, until_idle: float | None) -> bool:
        """Take deliveries until stopped (False) or idle long enough (True)."""
        if self._inbound is None or self._publisher is None or self._record is None or self._conn is None:
            raise BrokerUnavailable("not connected")
        conn, inbound = self._conn, self._inbound
        settle = Settle(
            record=self._record,
            publisher=self._publisher,
            stop=self._stop,
            max_backoff=self._settings.engine.broker.reconnect_max_seconds,
            on_wait=conn.heartbeat_check,
            logger=self._log,
            apprec_prefix=self._settings.engine.broker.names.apprec_prefix,
            guard=self._guard(),
        )
        while not self._stop.is_set():
            delivery = inbound.next(timeout=_POLL_SECONDS)
            if delivery is None:
                conn.heartbeat_check()
                converter.current()  # an idle engine picks up mapping edits too
                if until_idle is not None and self._idle_for(until_idle, conn):
                    self._log.info("engine_idle", idle_s=until_idle)
                    return True
                continue
            self._handle(delivery, converter.current(), settle)
            self.stats.idle_since = time.monotonic()
        return False

    def _handle(self, delivery: Delivery, converter: Any, settle: Settle) -> None:
        """Settle one delivery; dead-letter it as `internal` if the code breaks on it."""
        started = time.monotonic()
        self.stats.deliveries += 1
        try:
            results: list[Converted] = converter.convert(delivery.body)
            settled = settle(delivery, results, started)
        except TransientError:
            raise  # a broker or record outage: the loop reconnects, the delivery comes again
        except Exception as exc:  # noqa: BLE001  # the one catch-all (STYLE §4): never crash on input
            frames = "".join(traceback.format_tb(exc.__traceback__))  # no exception text: it may quote the message
            self._log.error("delivery_failed", error=type(exc).__name__, message_id=delivery.message_id, traceback=frames)
            settled = [self._dead_letter_internal(delivery, exc, started)]
        for one in settled:
            self.stats.count(one)
            self._log.info(
                "delivery_settled",
                control_id=one.control_id,
                message_type=one.message_type,
                sender=one.sender,
                patient_key=one.patient_key,
                outcome=one.outcome,
                stage=one.stage,
                reason=one.reason,
                message_id=delivery.message_id,
                ms=one.ms,
            )
            self._on_settled(one)

    def _dead_letter_internal(self, delivery: Delivery, exc: Exception, started: float) -> Settled:
        if self._publisher is None:
            raise BrokerUnavailable("not connected")
        reason = f"internal error: {type(exc).__name__}"
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception", "diagnostics": reason}]}
        headers = dead_letter_headers(reason=reason, stage="internal", location=None, control_id=None, outcome=outcome)
        self._publisher.dead_letter(delivery.body, headers=headers)
        delivery.ack()
        return Settled(None, None, None, None, "dead_lettered", round((time.monotonic() - started) * 1000, 2), "internal", reason)

    def _guard(self) -> Any:
        """The KITH duplicate guard (MsgIds already applied and answered), opened once."""
        if self._dup_guard is None:
            from adapters.kith.duplicates import SqliteDuplicateGuard

            self._dup_guard = SqliteDuplicateGuard.in_data_dir(self._settings.data_dir)
        return self._dup_guard

    def _idle_for(self, seconds: float, conn: Connection) -> bool:
        if time.monotonic() - self.stats.idle_since < seconds or (self._inbound and self._inbound.buffered):
            return False
        return queue_depth(conn, self._settings.engine.broker.names.inbound) == 0


class _Fixed:
    """A converter given by the caller (tests, the demo): never reloaded."""

    def __init__(self, converter: Any) -> None:
        self._converter = converter

    def current(self) -> Any:
        return self._converter


def _load_converter(settings: Settings) -> Any:
    from router.pipeline.convert import Converter  # the heavy part: mappings compile here

    return Converter(settings)


def _open_record(settings: Settings) -> Record:
    from adapters.fhir.record import open_record  # raises RecordUnavailable when the database is down

    return open_record(settings)  # type: ignore[no-any-return]  # implements Record
