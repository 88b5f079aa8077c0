"""Open the broker connection and declare Helsebro's topology on it.

Two transports, one code path. With `HELSEBRO_BROKER_URL` set, kombu talks to
RabbitMQ over pyamqp with publisher confirms on every channel
(`confirm_publish=True`) and the queues are quorum queues (or classic, per
`broker.queue_type`). Left unset, kombu runs the *embedded* transport: a
folder-backed queue under `<data_dir>/broker/`, so `helsebro send` in one
process and `helsebro run` in another share it. Consuming, publishing,
acking and dead-lettering go through the same kombu calls on both.

The embedded transport's guarantees are _folder.py's docstring.
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue
from kombu.exceptions import ChannelError, OperationalError

from adapters.amqp._folder import DurableFolderTransport
from router.errors import BrokerUnavailable, ConfigError

if TYPE_CHECKING:
    from router.settings import Settings

__all__ = [
    "DestinationQueues",
    "QueueName",
    "Topology",
    "all_queue_names",
    "broker_errors",
    "declare_topology",
    "delete_topology",
    "depth_if_declared",
    "drain_events",
    "is_embedded",
    "leftover_partitions",
    "open_connection",
    "partition_count",
    "partition_routing_key",
    "queue_depth",
    "read_ahead",
    "topology",
    "wait_alive",
]

_HEARTBEAT_SECONDS = 30
_EMBEDDED_POLL_SECONDS = 0.05


def wait_alive(stop: threading.Event, seconds: float, heartbeat: Callable[[], None]) -> bool:
    """Wait *seconds* (or until *stop* is set), sending heartbeats each second so the broker keeps the
    connection through a long outage elsewhere; return True when stopping."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, 1.0)):
            return True
        heartbeat()
    return stop.is_set()


def is_embedded(settings: Settings) -> bool:
    """Return True when no broker URL is set and the embedded transport is used."""
    return not settings.broker_url


def open_connection(settings: Settings) -> Connection:
    """Return an unconnected kombu Connection for *settings* (no I/O yet, beyond the embedded transport's folders).

    Raises:
        ConfigError: the embedded transport's folders cannot be made under the data directory.
    """
    if settings.broker_url:
        return Connection(
            settings.broker_url,
            transport="pyamqp",
            heartbeat=_HEARTBEAT_SECONDS,
            connect_timeout=5,
            # Fail fast: the engine's loop does the backing off, with its own cap.
            transport_options={"confirm_publish": True, "max_retries": 1, "interval_start": 0.2, "interval_step": 0.2},
        )
    root = Path(settings.data_dir) / "broker"
    folders = {"data_folder_in": root / "queue", "data_folder_out": root / "queue", "control_folder": root / "control"}
    try:
        for folder in (*folders.values(), root / "unacked"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, or no permission: the setting is wrong, and retrying will not help
        raise ConfigError(f"HELSEBRO_DATA_DIR {settings.data_dir}: cannot hold the embedded broker: {exc.strerror or exc}") from exc
    options: dict[str, Any] = {k: str(v) for k, v in folders.items()}
    options.update(unacked_folder=str(root / "unacked"), damaged_folder=str(root / _DAMAGED), rejected_folder=str(root / "rejected"), polling_interval=_EMBEDDED_POLL_SECONDS)
    return Connection("filesystem://", transport=DurableFolderTransport, transport_options=options)


_DAMAGED = "damaged"


def damaged_messages(settings: Settings) -> int | None:
    """Count the embedded broker's message files set aside as unreadable; None on RabbitMQ, which has no such files."""
    if settings.broker_url:
        return None
    folder = Path(settings.data_dir) / "broker" / _DAMAGED
    return sum(1 for p in folder.iterdir() if p.name.endswith(".msg")) if folder.is_dir() else 0


_READ_AHEAD_BYTES = 8192


def drain_events(connection: Connection, timeout: float, *, more: Callable[[], bool] | None = None, then: float | None = None) -> None:
    """Read and dispatch one whole AMQP method (a delivery is three frames), waiting up to *timeout* seconds
    for each read; then, while *more*() says so, further methods, waiting up to *then* seconds each.

    What kombu's `drain_events(timeout=…)` does, without its cost per frame:
    py-amqp sets the socket's timeout before reading each frame and puts it
    back after (two syscalls, and a generator context manager, per frame:
    six syscalls per delivery). Here the timeout is set once per call on a
    plain TCP connection; every read still waits at most that long, so the
    semantics are kombu's. On the embedded transport and over TLS it is
    kombu's call.

    Raises:
        socket.timeout: nothing (more) arrived in time; what was read stays dispatched or buffered.
        The connection's own errors, as kombu's drain_events raises them.
    """
    amqp_conn: Any = getattr(connection, "_connection", None)  # kombu's py-amqp Connection, when connected
    transport = getattr(amqp_conn, "transport", None)
    sock = getattr(transport, "sock", None)
    if sock is None or isinstance(sock, ssl.SSLSocket) or not hasattr(amqp_conn, "blocking_read"):
        connection.drain_events(timeout=timeout)
        while more is not None and more():
            connection.drain_events(timeout=then if then is not None else timeout)
        return
    read = amqp_conn.blocking_read
    prev = sock.gettimeout()
    try:
        if prev != timeout:
            sock.settimeout(timeout)
        while not read(None):  # None: py-amqp leaves the socket's timeout as set here
            pass
        if more is not None and more():
            if then is not None and then != timeout:
                sock.settimeout(then)
            while more():
                while not read(None):
                    pass
    except BlockingIOError as exc:  # as py-amqp's having_timeout translates it
        raise TimeoutError() from exc
    finally:
        if sock.gettimeout() != prev:
            sock.settimeout(prev)


def read_ahead(connection: Connection) -> None:
    """Let a connected pyamqp connection read up to 8 KiB per recv instead of exactly one frame part.

    py-amqp reads each frame in three exact-size recv calls (header, payload,
    end octet); a batch of 100 deliveries and their confirms then costs about
    1,000 syscalls. Its own buffer keeps what is read ahead (and what a timeout
    leaves half-read), so asking for more is safe; 8 KiB keeps its
    slice-per-read copying small. A no-op on the embedded transport.
    """
    transport = getattr(getattr(connection, "connection", None), "transport", None)
    sock = getattr(transport, "sock", None)
    if transport is None or sock is None or getattr(transport, "_quick_recv", None) != sock.recv:
        return  # not plain TCP (TLS reads through its own buffer), or already set
    recv = sock.recv
    transport._quick_recv = lambda n: recv(max(n, _READ_AHEAD_BYTES))


def broker_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """Return the exception types that mean "the broker is gone or refused": translate them to BrokerUnavailable."""
    return (*connection.connection_errors, *connection.channel_errors, OSError, ChannelError, OperationalError)


@dataclass(frozen=True, slots=True)
class DestinationQueues:
    """A queued destination's queues: work partitions, the retry ladder (TTL queues), its dead-letter queue."""

    name: str
    exchange: Exchange
    work: tuple[Queue, ...]
    retry_exchanges: tuple[Exchange, ...]
    retry: tuple[Queue, ...]
    dead_letter: Queue


@dataclass(frozen=True, slots=True)
class Topology:
    """The exchanges and queues Helsebro uses, as kombu entities."""

    exchange: Exchange
    inbound: Queue
    dead_letter: Queue
    replies: Queue
    partitions: tuple[Queue, ...] = ()
    destinations: tuple[DestinationQueues, ...] = ()
    legacy: tuple[Queue, ...] = ()
    without_dead_letter: tuple[str, ...] = ()
    """Queues found declared (by an older version) without the dead-letter arguments they are declared with now: used as
    they are, so a message over the broker's delivery limit is dropped there (declare_topology)."""
    without_delivery_limit: tuple[str, ...] = ()
    """Dead-letter queues found declared (by an older version) without their own delivery limit: used as they are, so on
    RabbitMQ 4.x a letter browsed 20 times (`dlq list`, `status`) is dropped there (_browsable)."""

    @property
    def queues(self) -> tuple[Queue, ...]:
        """Every queue, inbound first."""
        per_destination = tuple(q for d in self.destinations for q in (*d.work, *d.retry, d.dead_letter))
        return (self.inbound, self.dead_letter, self.replies, *self.partitions, *per_destination, *self.legacy)

    @property
    def exchanges(self) -> tuple[Exchange, ...]:
        """Every exchange, the inbound one first."""
        return (self.exchange, *(x for d in self.destinations for x in (d.exchange, *d.retry_exchanges)))


@dataclass(frozen=True, slots=True)
class QueueName:
    """One queue an operator may watch: its role, its name, and the destination it belongs to (or "")."""

    role: str
    name: str
    destination: str = ""


def all_queue_names(settings: Settings) -> tuple[QueueName, ...]:
    """Return every queue the engine declares, in display order; names derive from engine.yaml and routes.yaml only.

    Roles: `inbound`, `dead_letter`, `replies`, `partition` (inbound split by patient),
    and per queued destination `work`, `retry` and `destination_dead_letter`;
    `legacy` for a legacy system's queue. AppRec queues (one per HER-id) appear
    on first use and are not listed.
    """
    topo = topology(settings)
    out = [QueueName("inbound", topo.inbound.name), QueueName("dead_letter", topo.dead_letter.name), QueueName("replies", topo.replies.name)]
    out += [QueueName("partition", q.name) for q in topo.partitions]
    for d in topo.destinations:
        out += [QueueName("work", q.name, d.name) for q in d.work]
        out += [QueueName("retry", q.name, d.name) for q in d.retry]
        out.append(QueueName("destination_dead_letter", d.dead_letter.name, d.name))
    out += [QueueName("legacy", q.name, n) for n, q in zip(_legacy_names(settings), topo.legacy)]
    return tuple(out)


def partition_count(settings: Settings) -> int:
    """Partitions in use: `broker.partitions` on RabbitMQ, always 1 on the embedded transport."""
    return settings.engine.broker.partitions if settings.broker_url else 1


_MOST_PARTITIONS = 64  # broker.partitions' upper bound (router/settings.py): no queue beyond p63 was ever declared


def leftover_partitions(connection: Connection, settings: Settings) -> list[tuple[str, int]]:
    """Return (name, depth) of every partition queue that exists beyond the partitions in use, inbound and per destination.

    Such a queue is left over from a larger `broker.partitions` (or made by a publisher
    configured with one): no worker consumes it, and what waits in it is stranded. Every
    index up to the setting's bound is asked, not only the next one: lowering the count by
    more than one leaves several, and an operator may have deleted some and not others.
    With one partition the inbound queue is consumed itself, so its p0 is left over too;
    a destination's p0 is always in use. Empty on the embedded transport (one partition, always).

    Raises:
        BrokerUnavailable: the broker went away while asking (a missing queue is not an error).
    """
    if is_embedded(settings):
        return []
    n = partition_count(settings)
    names = settings.engine.broker.names
    candidates = [f"{names.inbound}.p{k}" for k in range(n if n > 1 else 0, _MOST_PARTITIONS)]
    for d in settings.routes.queued():
        candidates += [f"{names.destination_prefix}.{d}.p{k}" for k in range(n, _MOST_PARTITIONS)]
    found = []
    for name in candidates:
        depth = depth_if_declared(connection, name)
        if depth is not None:
            found.append((name, depth))
    return found


def depth_if_declared(connection: Connection, name: str) -> int | None:
    """Ready messages in queue *name*, or None when there is no such queue.

    Raises:
        BrokerUnavailable: the connection itself is gone.
    """
    try:
        return queue_depth(connection, name)
    except BrokerUnavailable:
        if not connection.connected:
            raise
        return None  # the broker closed the channel: no such queue


def partition_routing_key(routing_key: str, k: int) -> str:
    """Return the routing key that reaches partition queue *k* straight from the inbound exchange: `<routing_key>.p<k>`."""
    return f"{routing_key}.p{k}"


def topology(settings: Settings) -> Topology:
    """Build the kombu entities for `broker.names` and the destinations of routes.yaml (no I/O)."""
    names = settings.engine.broker.names
    args: dict[str, Any] = {}
    if settings.broker_url and settings.engine.broker.queue_type == "quorum":
        args = {"x-queue-type": "quorum"}  # quorum queues must be durable and not auto-delete
    # One active consumer per ordered queue: several workers then keep arrival order.
    # The embedded transport honours the argument too (adapters/amqp/_folder.py).
    ordered = {**args, "x-single-active-consumer": True}
    exchange = Exchange(names.exchange, type="direct", durable=True, delivery_mode=2)

    def queue(name: str, arguments: dict[str, Any] | None = None, **bind: Any) -> Queue:
        return Queue(name, durable=True, auto_delete=False, queue_arguments=dict(args if arguments is None else arguments), **bind)

    n = partition_count(settings)
    inbound_work = {**ordered, **_over_the_limit(args, names.dead_letter)}
    # Each partition is bound to the inbound exchange under its own key, so Helsebro's own publishers
    # (Publisher.publish_inbound) can skip the intake; see router/routing/partition.py for the order.
    partitions = tuple(queue(f"{names.inbound}.p{k}", inbound_work, exchange=exchange, routing_key=partition_routing_key(names.routing_key, k)) for k in range(n)) if n > 1 else ()
    destinations = tuple(_destination(settings, d, n, queue, ordered, args) for d in settings.routes.queued())
    legacy = tuple(queue(q) for q in _legacy_queues(settings))
    return Topology(
        exchange=exchange,
        inbound=queue(names.inbound, inbound_work, exchange=exchange, routing_key=names.routing_key),
        dead_letter=queue(names.dead_letter, _browsable(args)),
        replies=queue(names.replies),
        partitions=partitions,
        destinations=destinations,
        legacy=legacy,
    )


_DEAD_LETTER_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key")


def _over_the_limit(args: dict[str, Any], dead_letter: str) -> dict[str, Any]:
    """A consumed quorum queue's arguments that send a message over the broker's delivery limit to *dead_letter*.

    RabbitMQ 4.x gives every quorum queue a delivery limit (20; a policy can set
    another on 3.x) and drops a message past it unless the queue dead-letters:
    a delivery whose worker died holding it twenty times (or was stopped at the
    wrong moment) vanished without a trace. Dead-lettered by the broker, it lands
    in the dead-letter queue with the broker's reason (`x-first-death-reason:
    delivery_limit`, and `x-death`). Classic queues have no delivery limit.
    """
    if args.get("x-queue-type") != "quorum":
        return {}
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter}


_DELIVERY_LIMIT = "x-delivery-limit"
_BROWSE_LIMIT = 2**31 - 1  # the largest AMQP signed int: one browse a second for 68 years


def _browsable(args: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter queue's arguments: a quorum one gets a delivery limit no browsing reaches.

    AMQP cannot read a queue without taking its messages, so each `dlq list`, `dlq
    show`, `find` and `status` pass takes every letter and gives it back
    (router/ops/deadletters.py), and a quorum queue counts each return as a delivery.
    RabbitMQ 4.0-4.2 gives quorum queues a delivery limit of 20 by default, and a
    dead-letter queue has nowhere to dead-letter to: its 21st browse dropped the letter.
    `-1` (no limit on 4.x) drops it on its first return on 3.x (3.10, checked); a
    finite limit this large holds on both. A policy's `delivery-limit` still wins when
    lower (RabbitMQ takes the smaller). Classic queues count no deliveries.
    """
    if args.get("x-queue-type") != "quorum":
        return dict(args)
    return {**args, _DELIVERY_LIMIT: _BROWSE_LIMIT}


def _destination(settings: Settings, name: str, n: int, queue: Any, ordered: dict[str, Any], args: dict[str, Any]) -> DestinationQueues:
    from router.routing.model import FhirDestination  # settings carry the routes; only their shape is read here

    base = f"{settings.engine.broker.names.destination_prefix}.{name}"
    dest = settings.routes.destinations[name]
    delays = dest.retry.delays_seconds if isinstance(dest, FhirDestination) else (1.0,)
    jitter = dest.retry.jitter if isinstance(dest, FhirDestination) else 0.0
    exchange = Exchange(base, type="direct", durable=True, delivery_mode=2)
    work = tuple(queue(f"{base}.p{k}", {**ordered, **_over_the_limit(args, f"{base}.dlq")}, exchange=exchange, routing_key=f"p{k}") for k in range(n))
    retry_exchanges = tuple(Exchange(f"{base}.retry.{i}", type="fanout", durable=True, delivery_mode=2) for i in range(len(delays)))
    retry = []
    for i, delay in enumerate(delays):
        # Expired messages dead-letter to the destination's exchange under the routing key
        # they were parked with (p<k>), so they come back to their own partition.
        ttl = {"x-message-ttl": int(delay * (1 + jitter) * 1000) + 1, "x-dead-letter-exchange": base}
        if args.get("x-queue-type") == "quorum":
            ttl.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        retry.append(queue(f"{base}.retry.{i}", {**args, **ttl}, exchange=retry_exchanges[i], routing_key=""))
    return DestinationQueues(name, exchange, work, retry_exchanges, tuple(retry), queue(f"{base}.dlq", _browsable(args)))


def _legacy_names(settings: Settings) -> list[str]:
    return [n for n, d in settings.routes.destinations.items() if d.kind == "queue"]


def _legacy_queues(settings: Settings) -> list[str]:
    return [str(d.queue) for d in settings.routes.destinations.values() if d.kind == "queue"]


def declare_topology(connection: Connection, settings: Settings) -> Topology:
    """Declare the exchanges, the queues and their bindings; idempotent.

    Raises:
        BrokerUnavailable: the broker cannot be reached or refused a declaration.
    """
    topo = topology(settings)
    older: dict[str, Queue] = {}
    try:
        # A channel of its own: a refused declaration closes its channel, and the connection's
        # default channel is the one kombu's producers use.
        channel = connection.channel()
        for x in topo.exchanges:
            x.bind(channel).declare()
        for q in topo.queues:
            try:
                q.bind(channel).declare()
            except PreconditionFailed:
                # RabbitMQ refuses a change to an existing queue's arguments (406): a queue an older
                # version declared before it dead-lettered over the delivery limit (or, a dead-letter
                # queue, before it had its own limit). Refusing it would stop every worker at upgrade;
                # use it as it is, and say so (the engine logs it).
                as_before = _as_declared_before(q)
                if as_before is None:
                    raise
                channel = connection.channel()  # the 406 closed the other
                as_before.bind(channel).declare()
                older[str(q.name)] = as_before
        channel.close()  # the ones a 406 closed are closed already
    except broker_errors(connection) as exc:
        raise BrokerUnavailable(f"cannot declare the topology: {type(exc).__name__}") from exc
    return _as_found(topo, older) if older else topo


_ADDED_LATER = (*_DEAD_LETTER_ARGS, _DELIVERY_LIMIT)
"""Arguments a queue got after its first release: one declared before lacks them, and RabbitMQ refuses the change (406)."""


def _as_found(topo: Topology, older: dict[str, Queue]) -> Topology:
    """*topo* with the queues in *older* as they were found, so consumers declare them as they are (kombu declares on consume)."""

    def found(q: Queue) -> Queue:
        return older.get(str(q.name), q)

    destinations = tuple(dataclasses.replace(d, work=tuple(map(found, d.work)), dead_letter=found(d.dead_letter)) for d in topo.destinations)
    dead_letters = {str(q.name) for q in (topo.dead_letter, *(d.dead_letter for d in topo.destinations))}
    return dataclasses.replace(topo, inbound=found(topo.inbound), dead_letter=found(topo.dead_letter), partitions=tuple(map(found, topo.partitions)),
                               destinations=destinations, without_dead_letter=tuple(n for n in older if n not in dead_letters),
                               without_delivery_limit=tuple(n for n in older if n in dead_letters))


def _as_declared_before(q: Queue) -> Queue | None:
    """*q* without the arguments later versions added, or None when it has none (its 406 has another cause)."""
    args = dict(getattr(q, "queue_arguments", None) or {})  # kombu sets it in __init__; its stubs do not say so
    if not any(k in args for k in _ADDED_LATER):
        return None
    kept = {k: v for k, v in args.items() if k not in _ADDED_LATER}
    return Queue(q.name, exchange=q.exchange, routing_key=q.routing_key, durable=True, auto_delete=False, queue_arguments=kept)


def delete_topology(connection: Connection, settings: Settings) -> None:
    """Delete the queues and the exchanges (tests and demos clean up with this)."""
    topo = topology(settings)
    channel = connection.default_channel
    for q in topo.queues:
        try:
            q.bind(channel).delete()
        except broker_errors(connection):
            channel = connection.channel()  # a failed delete closes the channel on RabbitMQ
    for x in topo.exchanges:
        try:
            x.bind(channel).delete()
        except broker_errors(connection):
            channel = connection.channel()


def queue_depth(connection: Connection, name: str) -> int:
    """Return how many messages wait in queue *name* (ready ones; unacked are not counted).

    Raises:
        BrokerUnavailable: the broker cannot be reached, or the queue does not exist.
    """
    try:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=name, passive=True).message_count)
        finally:
            channel.close()
    except broker_errors(connection) as exc:
        raise BrokerUnavailable(f"cannot read the depth of a queue: {type(exc).__name__}") from exc
