"""Apply a queued destination's work: consume its partitions, write to the external FHIR server, park or dead-letter failures.

One thread per queued destination per worker process, with its own broker
connection, so a destination that is down for hours holds back nothing but
its own queues. Each work partition has a single active consumer, so order
per patient holds at the destination too.

A message that fails for now (RecordUnavailable: 5xx, 429, a timeout, no
connection) is handled as its route asked (`x-helsebro-on-failure`):
- strict: retried in place with capped backoff; the partition waits, order holds;
- park: published to retry step i (a TTL queue that dead-letters back into the
  same partition after its delay, with jitter), then acked; after
  `retry.max_attempts` it goes to the destination's dead-letter queue. A
  parked message comes back behind later ones: order is given up for it.
A message the server refuses (Refused, InvalidContent: a 4xx) goes to the
dead-letter queue at once, with reason, attempts and last error in its headers.
This consumer loop, like the engine's, catches everything a delivery breaks
and dead-letters it as `internal error: <type>`.

An external server cannot take a delivery mark in its own transaction, so a
ledger in the record's database (`applied`/`mark_applied`, key
`dest|<name>|<message id>|<hash of the content>`) stands in: written once the server has answered, before the ack, and
read before sending, with a second mark without the hash (`delivered_key`) by
which `helsebro find` tells an operator when the message reached the server. A redelivery after a kill or a lost ack (the broker went
away) is then acked without being sent again, so an older Bundle never lands
on top of a newer one. What remains is the moment between the server's answer
and the ledger's commit: a kill -9 exactly there sends the message once more.
The embedded transport has no TTL or dead-lettering, so there park acts as strict.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from adapters.amqp.connection import broker_errors, declare_topology, open_connection, topology, wait_alive
from adapters.amqp.inbound import Delivery, Inbound
from adapters.amqp.outbound import Publisher
from router.errors import MessageError, RecordUnavailable, TransientError
from router.pipeline.settle import dead_letter_headers

if TYPE_CHECKING:
    from router.routing.model import FhirDestination
    from router.settings import Settings

__all__ = ["DestinationStats", "DestinationWorker", "delivered_key", "split_partitions"]

_POLL_SECONDS = 0.2
_PREFETCH = 20


def delivered_key(destination: str, message_id: str) -> str:
    """The ledger's mark that *destination*'s server accepted the message *message_id* (router.delivery.forward.forward_id).

    One per message id, whatever its content: `helsebro find` derives the id from a journal
    row (sender, control id, destination) and reads when the mark was written.
    """
    return f"sent|{destination}|{message_id}"


def split_partitions(partitions: int, worker_index: int | None, workers: int) -> tuple[list[int], list[int]]:
    """Return (own, standby) partitions for one worker: own ones are subscribed first, so they get the active consumer."""
    if worker_index is None or workers <= 1:
        return list(range(partitions)), []
    own = [k for k in range(partitions) if k % workers == worker_index]
    return own, [k for k in range(partitions) if k not in own]


PARTITION_HEADER = "x-helsebro-partition"
"""Header on a destination's dead letter: the work partition (`p<k>`) it was taken from."""

ON_FAILURE_HEADER = "x-helsebro-on-failure"
"""A work message's route-chosen failure mode (strict or park); a dead letter keeps it for `dlq replay`."""

ROUTES_HEADER = "x-helsebro-routes"
"""The routes that sent a work message to this destination; its dead letter keeps them, with its sender and type."""


@dataclass(slots=True)
class DestinationStats:
    """Counters since start, written by the worker's thread only."""

    applied: int = 0
    parked: int = 0
    dead_lettered: int = 0
    failures: int = 0
    already_sent: int = 0  # redeliveries the ledger knew were sent


class DestinationWorker:
    """The consumer of one queued destination's work partitions."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        logger: Any,
        client: Any = None,
        ledger: Any = None,
        worker_index: int | None = None,
        workers: int = 1,
        standby_delay: float = 3.0,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings  # no I/O here: run() connects
        self.name = name
        self._dest: FhirDestination = settings.routes.destinations[name]  # type: ignore[assignment]  # queued() lists fhir ones only
        self._client = client
        self._owns_client = False  # built by prepare(): run() closes it, with its connection pool
        self._ledger = ledger  # anything with `applied` and `mark_applied`; run() opens the record's when None
        self._log = logger.bind(destination=name) if hasattr(logger, "bind") else logger
        self._split = split_partitions(len(next(d for d in topology(settings).destinations if d.name == name).work), worker_index, workers)
        self._standby_delay = standby_delay
        self._rng = rng or random.Random()
        self._embedded = not settings.broker_url
        self._stop = threading.Event()
        self._heartbeat: Callable[[], None] = lambda: None
        self.stats = DestinationStats()
        self.thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Build the destination's FhirClient, if none was given, in the calling thread.

        Its ConfigError (a secret's environment variable unset, an unusable token or CA
        file) must refuse the engine's start: raised inside run(), it killed this thread
        alone, and the engine ran on while the destination's queue only grew.

        Raises:
            ConfigError: the destination's server block cannot make a client.
        """
        if self._client is None:
            from adapters.fhir.client import FhirClient

            self._client = FhirClient(self._dest.server, log=self._log, sleep=self._between_attempts)
            self._owns_client = True

    def start(self) -> None:
        """Run in a daemon thread (prepare() first, if the caller did not).

        Raises:
            ConfigError: see prepare().
        """
        self.prepare()
        self.thread = threading.Thread(target=self.run, name=f"helsebro-dest-{self.name}", daemon=True)
        self.thread.start()

    def stop(self, grace: float = 30.0) -> None:
        """Finish the message in hand, then stop; wait up to *grace* seconds."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(grace)

    def run(self) -> None:
        """Consume until stopped, reconnecting with capped backoff."""
        self.prepare()
        owned = self._ledger is None
        if owned:
            from adapters.fhir.record import open_record

            self._ledger = self._open_ledger(open_record)
        try:
            self._run()
        finally:
            if owned and self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            self._close_client()

    def _close_client(self) -> None:
        """Close the client prepare() built, so a stopped worker leaves no connection to the server open."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client, self._owns_client = None, False

    def _between_attempts(self, seconds: float) -> None:
        """The FHIR client's wait between attempts (a Retry-After up to backoff_max_seconds, several per call).

        With time.sleep the client held this thread for minutes: no heartbeats, so the broker
        dropped the connection and handed the partition, message in hand, to a standby worker
        while this one was still sending it; and a stop waited the whole ladder out.

        Raises:
            RecordUnavailable: stopping; the call is abandoned and the message comes again.
        """
        if self._wait(seconds):
            raise RecordUnavailable("stopping between attempts")

    def _open_ledger(self, opener: Callable[[Any], Any]) -> Any:
        delay = 0.5
        while True:
            try:
                return opener(self._settings)
            except RecordUnavailable as exc:
                self._log.warning("ledger_unavailable", error=type(exc).__name__, retry_in_s=delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self._settings.engine.broker.reconnect_max_seconds)

    def _run(self) -> None:
        if self._ledger is None:
            return  # stopped before the ledger opened
        delay, max_delay = 0.5, self._settings.engine.broker.reconnect_max_seconds
        while not self._stop.is_set():
            conn = open_connection(self._settings)
            failures: tuple[type[BaseException], ...] = (TransientError, *broker_errors(conn))
            inbound = publisher = None
            try:
                conn.ensure_connection(max_retries=1)
                self._heartbeat = conn.heartbeat_check
                topo = declare_topology(conn, self._settings)
                queues = next(d for d in topo.destinations if d.name == self.name)
                publisher = Publisher(conn, self._settings, app_id=f"helsebro-dest-{self.name}")
                inbound = Inbound(conn, self._settings, queues=[queues.work[k] for k in self._split[0]], prefetch=_PREFETCH)
                inbound.start()
                delay = 0.5
                self._consume(inbound, publisher, [queues.work[k] for k in self._split[1]])
            except failures as exc:
                self._log.warning("destination_reconnecting", error=type(exc).__name__, retry_in_s=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, max_delay)
            finally:
                if inbound is not None:
                    inbound.stop()
                if publisher is not None:
                    publisher.close()
                try:
                    conn.release()
                except broker_errors(conn):
                    pass  # a dead connection is gone either way

    def _consume(self, inbound: Inbound, publisher: Publisher, standby: list[Any]) -> None:
        standby_at = time.monotonic() + self._standby_delay
        while not self._stop.is_set():
            if standby and time.monotonic() >= standby_at:
                inbound.start(standby)  # behind the workers that own them: active only when those die
                standby = []
            for delivery in inbound.take(_PREFETCH, _POLL_SECONDS):
                if self._stop.is_set():
                    return  # the rest of what was taken stays unacked and comes again: a stop ends after the message in hand
                try:
                    if not self._one(delivery, publisher):
                        return  # stopping with this delivery unacked: it comes again
                except TransientError:
                    raise  # the broker went away: reconnect; the delivery comes again
                except Exception as exc:  # noqa: BLE001  # this consumer loop's catch-all (STYLE §4): never die on one message
                    frames = "".join(traceback.format_tb(exc.__traceback__))  # no exception text: it may quote the message
                    self._log.error("delivery_failed", error=type(exc).__name__, message_id=delivery.message_id, traceback=frames)
                    self._dead_letter(delivery, publisher, reason=f"internal error: {type(exc).__name__}", location=None, attempts=0, last_error=type(exc).__name__)

    def _one(self, d: Delivery, publisher: Publisher) -> bool:
        """Deliver one message; False when stopping left it unacked."""
        mode = str(d.headers.get(ON_FAILURE_HEADER) or self._dest.on_failure)
        attempt = int(d.headers.get("x-helsebro-attempt") or 1)
        wait = 0.5
        # The content's hash too: a sender reusing a control id for new content makes a new message.
        key = f"dest|{self.name}|{d.message_id}|{hashlib.blake2b(d.body, digest_size=12).hexdigest()}" if d.message_id else None
        marks = [key, delivered_key(self.name, d.message_id)] if key is not None and d.message_id else []
        if key is not None:
            sent = self._with_ledger(lambda: key in self._ledger.applied([key]))
            if sent is None:
                return False
            if sent:
                self.stats.already_sent += 1
                self._log.info("delivery_already_sent", control_id=d.headers.get("x-helsebro-control-id"))
                d.ack()
                return True
        while True:
            try:
                self._client.apply(orjson.loads(d.body))
                if marks and self._with_ledger(lambda: self._ledger.mark_applied(marks) or True) is None:
                    return False  # stopping: it comes again, and is sent again (the same, latest Bundle)
                self.stats.applied += 1
                d.ack()
                return True
            except MessageError as exc:
                self._dead_letter(d, publisher, reason=exc.reason, location=exc.location, attempts=attempt, last_error=type(exc).__name__, detail=getattr(exc, "detail", None))
                return True
            except RecordUnavailable as exc:
                if self._stop.is_set():
                    return False  # stopping: unacked, it comes again; neither parked nor counted as an attempt
                self.stats.failures += 1
                if mode == "park" and not self._embedded:
                    self._park(d, publisher, attempt, type(exc).__name__)
                    return True
                self._log.warning("destination_unavailable", error=type(exc).__name__, attempt=attempt, retry_in_s=wait)
                if self._wait(wait):
                    return False
                attempt += 1
                wait = min(wait * 2, self._settings.engine.broker.reconnect_max_seconds)

    def _with_ledger(self, call: Callable[[], Any]) -> Any:
        """Run *call* against the ledger, waiting out its outage in place (never parking); None when stopping."""
        wait = 0.5
        while True:
            try:
                return call()
            except RecordUnavailable as exc:
                self._log.warning("ledger_unavailable", error=type(exc).__name__, retry_in_s=wait)
                if self._wait(wait):
                    return None
                wait = min(wait * 2, self._settings.engine.broker.reconnect_max_seconds)

    def _park(self, d: Delivery, publisher: Publisher, attempt: int, error: str) -> None:
        retry = self._dest.retry
        if attempt >= retry.max_attempts:
            self._dead_letter(d, publisher, reason=f"gave up after {attempt} attempts", location=None, attempts=attempt, last_error=error)
            return
        step = min(attempt - 1, len(retry.delays_seconds) - 1)
        delay_ms = int(retry.delays_seconds[step] * (1 + retry.jitter * self._rng.random()) * 1000)
        headers = {**d.headers, "x-helsebro-attempt": attempt + 1, "x-helsebro-last-error": error}
        base = f"{self._settings.engine.broker.names.destination_prefix}.{self.name}"
        publisher.publish_to(f"{base}.retry.{step}", d.queue.rsplit(".", 1)[-1], d.body, headers=headers, message_id=d.message_id, expiration_ms=delay_ms)
        d.ack()
        self.stats.parked += 1
        self._log.info("delivery_parked", control_id=d.headers.get("x-helsebro-control-id"), attempt=attempt, retry_in_ms=delay_ms)

    def _dead_letter(self, d: Delivery, publisher: Publisher, *, reason: str, location: str | None, attempts: int, last_error: str, detail: str | None = None) -> None:
        issue: dict[str, Any] = {"severity": "error", "code": "processing", "diagnostics": reason}
        if detail:
            issue["details"] = {"text": detail}  # the destination's own words: kept with the letter, never logged
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        control_id = _text(d.headers, "x-helsebro-control-id")
        headers = dead_letter_headers(reason=reason, stage="deliver", location=location, control_id=control_id, outcome=outcome, destination=self.name, attempts=attempts, last_error=last_error,
                                      patient_key=_text(d.headers, "x-helsebro-patient"), sender=_text(d.headers, "x-helsebro-sender"),
                                      message_type=_text(d.headers, "x-helsebro-message-type"), delivery=d.headers)
        headers[PARTITION_HEADER] = d.queue.rsplit(".", 1)[-1]  # `dlq replay` puts it back on its patient's partition
        for kept in (ON_FAILURE_HEADER, ROUTES_HEADER):  # the route's choice, which `dlq replay` must keep; the routes that sent it
            if d.headers.get(kept):
                headers[kept] = _text(d.headers, kept)
        base = f"{self._settings.engine.broker.names.destination_prefix}.{self.name}"
        publisher.publish_to("", f"{base}.dlq", d.body, headers=headers, message_id=d.message_id)
        d.ack()
        self.stats.dead_lettered += 1
        self._log.warning("delivery_dead_lettered", control_id=control_id, reason=reason, attempts=attempts)

    def _wait(self, seconds: float) -> bool:
        return wait_alive(self._stop, seconds, self._heartbeat)


def _text(headers: dict[str, Any], name: str) -> str:
    """A work message's header as text ("" when absent): what a dead letter of it keeps."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value is not None else ""
