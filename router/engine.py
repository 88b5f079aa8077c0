"""Run the engine: consume, convert and settle in batches, feed the destinations, and survive the broker going away.

The worker loop owns the connection's life (connect, declare, consume,
reconnect with capped backoff) and is the one place that catches `Exception`:
a delivery that breaks the code is dead-lettered as `internal`, its traceback
logged without the body or the exception's text, and the loop goes on.

Per loop turn it takes the deliveries already received (at most
`broker.batch_max`), converts each, and hands the batch to settle, which
applies, forwards, replies and acks it as one. With `broker.partitions` > 1
it also runs the intake (router/delivery/intake.py) when this worker holds
the inbound queue's single active consumer, and consumes the partitions it
owns. Each queued destination (an external FHIR server) gets a
router/delivery/worker.py thread. Converting is router/pipeline/convert.py's;
applying, dead-lettering, replying and acking are router/pipeline/settle.py's.

Mappings and routes are hot-reloaded (router/reload.py): before each batch
the loop looks, at most every `mappings.reload_seconds`, and a swap replaces
the converter, the router or the forwarder settle uses, by reference, so a
batch is routed and forwarded by one set. Which routes.yaml edits only a
restart applies is router/routing/live.py's.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.amqp.connection import broker_errors, declare_topology, leftover_partitions, open_connection, partition_count, queue_depth, read_ahead
from adapters.amqp.inbound import Delivery, Inbound
from adapters.amqp.outbound import Publisher
from router.delivery import DestinationWorker, Forwarder, Intake, split_partitions
from router.errors import BrokerUnavailable, DecodeError, HelsebroError, TransientError
from router.logging import get_logger
from router.pipeline.settle import InternalFailure, Settle, Settled
from router.reload import Reloader
from router.routing.declared import unconfigured_queues
from router.routing.live import RestartNeeded, needs_restart
from router.routing.match import Router
from router.routing.model import RecordDestination

if TYPE_CHECKING:
    from kombu import Connection

    from router.contracts import Converted, Record
    from router.settings import Settings

__all__ = ["SETTLE_LATENCY_BOUNDS", "Engine", "EngineStats", "freeze_long_lived"]

_POLL_SECONDS = 0.2
_FIRST_RECONNECT_SECONDS = 0.5
_COUNTER = {"duplicate": "duplicates", "receipt": "receipts"}  # outcome -> EngineStats field, where the names differ
SETTLE_LATENCY_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of EngineStats' settle-latency buckets; one more bucket counts the rest (+Inf)."""
_GC_YOUNG = 10_000  # allocations between young-generation collections, once frozen (see freeze_long_lived)


def freeze_long_lived(*, again: bool = False) -> None:
    """Move what lives as long as the process (compiled mappings, HL7 structure tables, schemas)
    out of the collector's sight, and collect the young generation less often.

    Why: the collector's full passes rescanned all of that, a latency spike each under load.
    After a hot reload (*again*) the old set is let go first, so it can be collected. The
    engine calls this once its mappings are loaded; the benches call it too, so they measure
    what a worker runs.
    """
    if again:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    # Each batch allocates tens of thousands of containers (Bundles, rows), nearly all freed by
    # reference counting: at the default threshold (700) the young generation was collected a dozen
    # times a batch, 5% of a worker's CPU. Collecting every _GC_YOUNG allocations keeps a pass short
    # (well under a millisecond) while doing a fraction of the work.
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])


@dataclass(slots=True)
class EngineStats:
    """Counters since start; written by the engine's thread only, safe to read from others."""

    deliveries: int = 0
    messages: int = 0
    applied: int = 0
    unchanged: int = 0
    forwarded: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    receipts: int = 0
    receipts_refused: int = 0  # receipts whose AppRec refuses what Helsebro sent (Settled.refused)
    receipts_unmatched: int = 0  # receipts whose AppRec answers nothing Helsebro sent (Settled.unmatched)
    reconnects: int = 0
    batches: int = 0
    intake_forwarded: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(SETTLE_LATENCY_BOUNDS) + 1))  # per bucket, not cumulative
    latency_sum: float = 0.0  # seconds, over every message counted

    def count(self, settled: Settled) -> None:
        """Add one settled message, and its batch's time to settle to the histogram (router/ops/metrics.py)."""
        self.messages += 1
        name = _COUNTER.get(settled.outcome, settled.outcome)
        setattr(self, name, getattr(self, name) + 1)
        if settled.refused:
            self.receipts_refused += 1
        if settled.unmatched:
            self.receipts_unmatched += 1
        seconds = settled.ms / 1000
        self.latency_buckets[bisect_left(SETTLE_LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    def settled_count(self, outcome: str) -> int:
        """How many messages settled with *outcome* (one of router.contracts.SETTLED_OUTCOMES)."""
        return int(getattr(self, _COUNTER.get(outcome, outcome)))

    def idle_seconds(self) -> float:
        return time.monotonic() - self.idle_since


class Engine:
    """The worker: consumes batches, settles each before taking the next, and runs the destination workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        converter: Any = None,
        record: Record | None = None,
        logger: Any = None,
        on_settled: Callable[[Settled], None] | None = None,
        worker_index: int | None = None,
        workers: int = 1,
        destination_clients: dict[str, Any] | None = None,
        standby_delay: float = 3.0,
        freeze_gc: bool = False,
    ) -> None:
        """Prepare an engine; run() connects.

        *freeze_gc* is for a process that runs one engine (`helsebro run`): once the
        mappings are compiled, the garbage collector stops rescanning them (see freeze_long_lived).
        """
        self._freeze_gc = freeze_gc
        self._settings = settings  # no I/O here: run() connects
        self._converter = converter
        self._record = record
        self._log = logger or get_logger("engine")
        self._on_settled = on_settled or (lambda _s: None)
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self._inbound: Inbound | None = None  # the work queues: the inbound queue itself, or this worker's partitions
        self._intake: Inbound | None = None
        self._publisher: Publisher | None = None
        self._worker = (worker_index, workers)
        self._standby_delay = standby_delay
        self._standby: list[tuple[Inbound, list[Any]]] = []
        self._standby_at = 0.0
        self.stats = EngineStats()
        self.started = threading.Event()
        self.mappings: Any = None  # the mappings' Reloader once run() starts
        self.routes: Any = None  # the routes' Reloader once run() starts
        self._router: Router | None = None  # the routes in use: replaced whole by a routes reload
        self._forwarder: Forwarder | None = None  # the queue destinations' renderers in use: replaced by either reload
        self._dup_guard: Any = None
        self._seen: Any = None
        self.destinations = [
            DestinationWorker(settings, name, logger=self._log, client=(destination_clients or {}).get(name), worker_index=worker_index, workers=workers, standby_delay=standby_delay)
            for name in settings.routes.queued()
        ]

    def stop(self) -> None:
        """Ask the loop to stop after the batch in flight; safe from a signal handler or another thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def run(self, *, until_idle: float | None = None) -> None:
        """Consume until stop() is called, or until the inbound queues were empty for *until_idle* seconds.

        Raises:
            ConfigError: the mappings, settings or routes are wrong (at start only).
        """
        converter = self._converter_source()
        self._routes_source(converter)
        for worker in self.destinations:
            worker.prepare()  # every client before any thread: a ConfigError refuses the start, no worker left running
        delay = _FIRST_RECONNECT_SECONDS
        max_delay = self._settings.engine.broker.reconnect_max_seconds
        from adapters.kith.xsd import validation_status  # says whether KITH XML is XSD-validated

        self._log.info(
            "engine_started",
            embedded_broker=not self._settings.broker_url,
            inbound=self._settings.engine.broker.names.inbound,
            partitions=partition_count(self._settings),
            destinations=sorted(self._settings.routes.destinations),
            until_idle=until_idle,
            xml_validation=validation_status(self._settings.xsd_dir),
        )
        self._warn_placeholder_identity()
        self._freeze()
        for worker in self.destinations:
            worker.start()
        try:
            away = False  # in an outage: its first failed try counted it, the rest are the same outage
            while not self._stop.is_set():
                try:
                    self._connect()
                    delay, away = _FIRST_RECONNECT_SECONDS, False
                    if self._consume(converter, until_idle):
                        break
                except TransientError as exc:
                    if self._stop.is_set():
                        break  # a record outage while stopping: the batch stays unacked
                    if not away:
                        self.stats.reconnects += 1  # helsebro_reconnects_total counts outages, not tries (runbook alert)
                        away = True
                    self._log.warning("broker_or_record_unavailable", error=type(exc).__name__, reason=str(exc), retry_in_s=delay)
                    self._disconnect()
                    if self._stop.wait(delay):
                        break
                    delay = min(delay * 2, max_delay)
        finally:
            for worker in self.destinations:
                worker.stop()
            self._disconnect()
            if self._record is not None:
                self._record.close()
            if self._dup_guard is not None:
                self._dup_guard.close()
            if self._seen is not None and self._seen is not self._record:
                self._seen.close()
            self._log.info("engine_stopped", deliveries=self.stats.deliveries, messages=self.stats.messages)

    def _warn_placeholder_identity(self) -> None:
        """Say so at start when KITH messages would go out under the shipped placeholder HER-id."""
        from router.settings import PLACEHOLDER_HER_ID

        kith = sorted(n for n, d in self._settings.routes.destinations.items() if getattr(d, "format", None) == "kith")
        if kith and self._settings.engine.own.her_id == PLACEHOLDER_HER_ID:
            self._log.warning("own_her_id_placeholder", destinations=kith, her_id=PLACEHOLDER_HER_ID, fix="set own.her_id in config/engine.yaml")

    def _freeze(self, *, again: bool = False) -> None:
        if self._freeze_gc:
            freeze_long_lived(again=again)

    def _converter_source(self) -> Any:
        if self._converter is not None:
            converter: Any = _Fixed(self._converter)
        else:
            converter = Reloader(
                self._settings.mappings_dir,
                lambda: _load(self._settings),  # the routes in use when it builds: their destinations' renderers
                interval=self._settings.engine.mappings.reload_seconds,
                logger=self._log,
                on_swap=self._mappings_swapped,
            )
        self.mappings = converter
        return converter

    def _mappings_swapped(self) -> None:
        self._freeze(again=True)
        self._forwarder = self.mappings.live.forwarder  # built with the routes in use and the new outbound mappings

    def _routes_source(self, converter: Any) -> None:
        """Compile the routes (a ConfigError refuses the start) and watch routes.yaml for edits.

        Raises:
            ConfigError: a `when:` does not compile; an outbound mapping does not load.
        """
        self._router = _router_for(self._settings)
        self._forwarder = _forwarder_of(converter.current(), self._settings)
        self.routes = Reloader(
            self._settings.config_dir / "routes.yaml",
            self._reroute,
            interval=self._settings.engine.mappings.reload_seconds,
            logger=self._log,
            initial=_Routing(self._settings, self._router, self._forwarder),
            on_swap=self._rerouted,
            what="routes",
        )
        if self._settings.engine.mappings.reload_seconds > 0 and self._routes_on_disk() != self._settings.routes:
            # routes.yaml changed after the settings were read (the mappings compile between): the watch's first
            # look took the edit for what runs, and it waited unapplied, unreported, for the file's next change
            self.routes.unseen()

    def _routes_on_disk(self) -> Any:
        """routes.yaml as it reads now, read after the watch's first look; None when it does not read (the watch reports why)."""
        from router.settings import read_routes  # settings imports the routing model, as this module does

        try:
            return read_routes(self._settings.config_dir, self._settings.mappings_dir, self._settings.engine)
        except (HelsebroError, OSError):
            return None

    def _reroute(self) -> _Routing:
        """Load routes.yaml as a start does, refuse what only a restart applies, and build its router and renderers.

        Raises:
            MappingError: routes.yaml fails a check (file:line:col).
            RestartNeeded: it changes what the worker fixed at start (router/routing/live.py).
            ConfigError, OSError: a changed destination's outbound mapping does not load; the file cannot be read.
        """
        from router.settings import read_routes  # settings imports the routing model, as this module does

        running = self._settings
        config = read_routes(running.config_dir, running.mappings_dir, running.engine)
        changes = needs_restart(running.routes, config)
        if changes:
            raise RestartNeeded("; ".join(changes) + ": restart the workers to apply", filename=str(running.config_dir / "routes.yaml"))
        settings = running.model_copy(update={"routes": config})
        forwarder = self._forwarder.rerouted(settings) if self._forwarder is not None else Forwarder(settings)
        return _Routing(settings, _router_for(settings), forwarder)

    def _rerouted(self) -> None:
        live = self.routes.live  # a _Routing
        self._settings, self._router, self._forwarder = live.settings, live.router, live.forwarder
        self._freeze(again=True)  # as after a mappings swap: the new router and renderers are long-lived too

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
        read_ahead(conn)
        topo = declare_topology(conn, self._settings)
        if topo.without_dead_letter:  # declared by an older version: past RabbitMQ 4.x's delivery limit (20) a message vanishes
            self._log.warning("queue_without_dead_letter", queues=list(topo.without_dead_letter),
                              fix="lift the delivery limit with a policy (docs/operations.md), or delete each queue while it is empty and no one publishes, so it is declared again")
        if topo.without_delivery_limit:  # declared by an older version: RabbitMQ 4.x drops a letter browsed 20 times there
            self._log.warning("dead_letter_queue_without_delivery_limit", queues=list(topo.without_delivery_limit),
                              fix="lift the delivery limit with a policy (docs/operations.md) before browsing, or move its letters out "
                                  "(dlq replay, purge) and delete it while no one publishes, so it is declared again")
        self._warn_unconsumed_partition(conn, len(topo.partitions))
        self._warn_unconfigured_destinations(conn)
        self._publisher = Publisher(conn, self._settings, app_id="helsebro-run", pipelined=True)
        own, others = split_partitions(len(topo.partitions), *self._worker)
        prefetch = max(self._settings.engine.broker.prefetch, self._settings.engine.broker.batch_max)
        self._standby, self._standby_at = [], time.monotonic() + self._standby_delay
        if topo.partitions:
            self._intake = Inbound(conn, self._settings, queues=[topo.inbound], prefetch=prefetch)
            self._inbound = Inbound(conn, self._settings, queues=[topo.partitions[k] for k in own], prefetch=prefetch)
            if self._worker[0] in (None, 0):
                self._intake.start()
            else:  # one intake is active at a time; worker 0 takes it first
                self._standby.append((self._intake, [topo.inbound]))
            self._standby.append((self._inbound, [topo.partitions[k] for k in others]))
        else:
            self._inbound = Inbound(conn, self._settings, queues=[topo.inbound], prefetch=prefetch)
        if own or not topo.partitions:
            self._inbound.start()
        self.started.set()

    def _warn_unconsumed_partition(self, conn: Connection, partitions: int) -> None:
        """Say so, as an error, for every partition queue that exists beyond the ones this engine consumes.

        Publishers route straight to a partition (router/routing/partition.py); one
        configured with more partitions than the engine declares (and binds) queues
        that no worker consumes, and its messages would wait there unseen. Queues left
        over from a larger `partitions` (inbound and each queued destination's) are named
        the same way, each of them: drain them with the count that made them, then delete them.
        """
        leftover = leftover_partitions(conn, self._settings)
        if not leftover:
            return
        most = max(int(name.rsplit(".p", 1)[1]) for name, _ in leftover) + 1
        fix = (f"give every publisher the engine's broker.partitions; to drain, run with broker.partitions: {most} "
               f"(every worker and publisher) until these queues are empty, then set {partitions or 1} again and delete them")
        for name, depth in leftover:
            self._log.error("partition_not_consumed", queue=name, depth=depth, partitions=partitions or 1, fix=fix)

    def _warn_unconfigured_destinations(self, conn: Connection) -> None:
        """Name, as a warning with its depth, each queue of a destination taken out of routes.yaml (router/routing/declared.py)."""
        found, error = unconfigured_queues(conn, self._settings)
        if error:
            self._log.warning("destinations_record_unusable", error=error)
        for q in found:
            self._log.warning("destination_not_configured", destination=q.destination, queue=q.queue, depth=q.depth,
                              fix="drain it (put the destination back in routes.yaml until it is empty, or move its messages), then delete it")

    def _disconnect(self) -> None:
        inbound, intake, publisher, conn = self._inbound, self._intake, self._publisher, self._conn
        self._inbound = self._intake = self._publisher = self._conn = None
        for consumer in (inbound, intake):
            if consumer is not None:
                consumer.stop()  # unacked deliveries go back to their queues
        if publisher is not None:
            publisher.close()
        if conn is not None:
            try:
                conn.release()
            except broker_errors(conn):
                pass  # closing a dead connection: it is gone either way

    def _consume(self, converter: Any, until_idle: float | None) -> bool:
        """Take batches until stopped (False) or idle long enough (True)."""
        if self._inbound is None or self._publisher is None or self._record is None or self._conn is None or self._router is None or self._forwarder is None:
            raise BrokerUnavailable("not connected")
        conn, work, intake, publisher, routes = self._conn, self._inbound, self._intake, self._publisher, self.routes
        settle = self._settle(conn, publisher, self._router, self._forwarder)
        forward = Intake(self._settings.engine.broker.names.inbound, partition_count(self._settings)) if intake is not None else None
        most = self._settings.engine.broker.batch_max
        while not self._stop.is_set():
            self._subscribe_standby()
            if intake is not None and forward is not None and intake.buffered:
                batch = intake.take(most, 0)
                forward(publisher, batch)
                self.stats.intake_forwarded += len(batch)
                self.stats.idle_since = time.monotonic()
                continue
            if work.buffered:
                loaded = converter.current()
                routes.current()  # a swap replaces self._router and self._forwarder
                settle.use_router(self._router)  # a reload's routes and outbound mappings, from this batch on
                settle.use_forwarder(self._forwarder)
                self._handle(work.take(most, 0), loaded, settle)
                self.stats.idle_since = time.monotonic()
                continue
            work.poll(_POLL_SECONDS, more=most)
            if work.buffered or (intake is not None and intake.buffered):
                continue
            conn.heartbeat_check()
            converter.current()  # an idle engine picks up mapping and routes edits too
            routes.current()
            if until_idle is not None and self._idle_for(until_idle, conn):
                self._log.info("engine_idle", idle_s=until_idle)
                return True
        return False

    def _settle(self, conn: Connection, publisher: Publisher, router: Router, forwarder: Forwarder) -> Settle:
        routes = self._settings.routes
        return Settle(
            record=self._record,  # type: ignore[arg-type]  # checked by the caller
            publisher=publisher,
            stop=self._stop,
            max_backoff=self._settings.engine.broker.reconnect_max_seconds,
            on_wait=conn.heartbeat_check,
            on_outage=self._record_outage,
            logger=self._log,
            apprec_prefix=self._settings.engine.broker.names.apprec_prefix,
            guard=self._guard(),
            router=router,
            forwarder=forwarder,
            record_destinations=frozenset(n for n, d in routes.destinations.items() if isinstance(d, RecordDestination)),
            duplicate_window=float(routes.duplicates.window_seconds),
            embedded=not self._settings.broker_url,
            seen=self._seen_store(),
            original_acks=self._settings.engine.hl7v2.original_acks,
        )

    def _record_outage(self) -> None:
        """Count a record outage that settle waits out in place as a reconnect, as the metric's HELP text says."""
        self.stats.reconnects += 1

    def _seen_store(self) -> Any:
        """Where settled message ids are remembered: PostgreSQL keeps them in the record; SQLite in a file of its own,
        so remembering does not queue for the record's single write lock."""
        if self._seen is None:
            if self._settings.record_url and not self._settings.record_url.startswith("sqlite"):
                self._seen = self._record
            else:
                from adapters.fhir.record import SqliteRecord

                self._seen = SqliteRecord(self._settings.data_dir / "seen.sqlite3", busy_timeout=self._settings.sqlite_busy_timeout)
        return self._seen

    def _subscribe_standby(self) -> None:
        if self._standby and time.monotonic() >= self._standby_at:
            for consumer, queues in self._standby:
                if queues:
                    consumer.start(queues)  # behind the owners: active only when an owner goes away
            self._standby = []

    def _handle(self, deliveries: list[Delivery], converter: Any, settle: Settle) -> None:
        """Convert and settle a batch; dead-letter as `internal` whatever breaks the code.

        Deliveries and batches are counted once settled: a batch an outage interrupts comes
        again, and counted on arrival it was counted twice (helsebro_deliveries_total).
        """
        started = time.monotonic()
        items = [(d, self._convert(d, converter)) for d in deliveries]
        try:
            outcomes = settle.batch(items, started)
        except TransientError:
            raise  # a broker or record outage: the loop reconnects, the batch comes again
        except Exception:  # noqa: BLE001  # the one catch-all (STYLE §4): find the delivery that breaks, one at a time
            outcomes = [self._one_by_one(d, results, settle, started) for d, results in items]
        self.stats.deliveries += len(deliveries)
        self.stats.batches += 1
        for d, settled in zip(deliveries, outcomes, strict=True):
            for one in settled:
                self.stats.count(one)
                self._log.info(
                    "delivery_settled", control_id=one.control_id, message_type=one.message_type, sender=one.sender,
                    patient_key=one.patient_key, outcome=one.outcome, stage=one.stage, reason=one.reason,
                    message_id=d.message_id, ms=one.ms,
                    # Nothing silent (DESIGN §4): name what no rule read, so data loss shows.
                    unmapped=len(one.unmapped), unmapped_fields=list(one.unmapped[:20]),
                )
                self._on_settled(one)

    def _convert(self, delivery: Delivery, converter: Any) -> list[Converted]:
        try:
            results: list[Converted] = converter.convert(delivery.body)
        except Exception as exc:  # noqa: BLE001  # part of the one catch-all: never crash on input
            return [self._internal(delivery, exc)]
        if not results:  # no bytes, or blank lines only: settled as a dead letter like any bad input, never acked unseen (DESIGN §4)
            from router.contracts import Converted

            return [Converted(index=0, raw=delivery.body, error=DecodeError("no message found: the delivery is empty or blank", location="MSH"))]
        return results

    def _one_by_one(self, delivery: Delivery, results: list[Converted], settle: Settle, started: float) -> list[Settled]:
        try:
            return settle.batch([(delivery, results)], started)[0]
        except TransientError:
            raise
        except Exception as exc:  # noqa: BLE001  # the one catch-all, for the delivery that breaks settling
            return settle.batch([(delivery, [self._internal(delivery, exc, results)])], started)[0]

    def _internal(self, delivery: Delivery, exc: Exception, converted: list[Converted] | None = None) -> Converted:
        """The delivery as one internal failure; *converted*: what converting it found, when settling broke after.

        Their sender (and type), when they all share one, goes on the dead letter: an operator tells whose it is
        without its body. Nothing else is taken from them: nothing else is known to be sound.
        """
        from router.contracts import Converted

        frames = "".join(traceback.format_tb(exc.__traceback__))  # no exception text: it may quote the message
        self._log.error("delivery_failed", error=type(exc).__name__, message_id=delivery.message_id, traceback=frames)
        senders = {c.sender for c in converted or ()}
        types = {c.message_type for c in converted or ()}
        return Converted(index=0, raw=delivery.body, error=InternalFailure(f"internal error: {type(exc).__name__}"),
                         sender=senders.pop() if len(senders) == 1 else None, message_type=types.pop() if len(types) == 1 else None)

    def _guard(self) -> Any:
        """The KITH duplicate guard (MsgIds already applied and answered), opened once."""
        if self._dup_guard is None:
            from adapters.kith.duplicates import SeenStoreDuplicateGuard

            days = self._settings.routes.duplicates.kith_window_days
            self._dup_guard = SeenStoreDuplicateGuard(self._seen_store(), window_days=days)  # shared by every worker on PostgreSQL
        return self._dup_guard

    def _idle_for(self, seconds: float, conn: Connection) -> bool:
        if time.monotonic() - self.stats.idle_since < seconds:
            return False
        if (self._inbound and self._inbound.buffered) or (self._intake and self._intake.buffered):
            return False
        from adapters.amqp.connection import topology

        topo = topology(self._settings)
        queues = [topo.inbound, *topo.partitions, *(q for d in topo.destinations for q in d.work)]
        return all(queue_depth(conn, str(q.name)) == 0 for q in queues)


class _Fixed:
    """A converter given by the caller (tests, the demo): never reloaded."""

    def __init__(self, converter: Any) -> None:
        self._converter = converter

    def current(self) -> Any:
        return self._converter


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One whole set compiled from the mapping folder, which a hot reload swaps at once.

    Why the forwarder too: mappings/outbound/ is in the folder the reloader watches; built
    at each connect instead, an outbound edit was logged as reloaded but not used until a
    reconnect, and a broken one ended the worker there rather than being refused.
    """

    converter: Any  # router.pipeline.convert.Converter: inbound mappings, HL7 v2 and KITH
    forwarder: Forwarder  # the outbound mappings of the queue destinations

    def convert(self, data: bytes) -> list[Converted]:
        return self.converter.convert(data)  # type: ignore[no-any-return]  # Converter.convert is typed

    def versions(self) -> dict[str, str]:
        """Per format, the hash its Bundles carry in meta.tag (`structure@hash`): which mapping version runs."""
        kith = getattr(self.converter, "_kith", None)
        sets = {"hl7v2": self.converter.mappings, "kith": getattr(kith, "mappings", None)}
        return {name: next(iter(s.messages.values())).sha for name, s in sets.items() if s is not None and s.messages}


@dataclass(frozen=True, slots=True)
class _Routing:
    """The routes a routes reload swaps at once: the settings that carry them, the router, and the renderers for their destinations."""

    settings: Settings
    router: Router
    forwarder: Forwarder


def _router_for(settings: Settings) -> Router:
    """Compile *settings*' routes (raises ConfigError for a `when:` that does not compile)."""
    hl7 = settings.engine.hl7v2
    return Router(settings.routes, mappings_dir=settings.mappings_dir, hl7_charset=hl7.default_charset, sender_charsets={k: v.charset for k, v in hl7.senders.items() if v.charset})


def _load(settings: Settings) -> _Loaded:
    """Compile every mapping the engine runs, or raise MappingError/ConfigError (the reload refuses it)."""
    from router.pipeline.convert import Converter  # the heavy part: mappings compile here

    converter = Converter(settings)
    converter.load_xml()  # now, so a broken KITH mapping is refused here rather than failing every XML message
    return _Loaded(converter, Forwarder(settings))


def _forwarder_of(converter: Any, settings: Settings) -> Forwarder:
    """The forwarder compiled with *converter*'s set, or a new one beside a caller's fixed converter."""
    return converter.forwarder if isinstance(converter, _Loaded) else Forwarder(settings)


def _open_record(settings: Settings) -> Record:
    from adapters.fhir.record import open_record  # raises RecordUnavailable when the database is down

    return open_record(settings)
