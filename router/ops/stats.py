"""Read what the broker tells about Helsebro's queues: depth, consumers, and depth change per second.

Also says where things are (broker, record, XML schemas) without a password.

AMQP 0-9-1 without the management plugin shows two numbers per queue, through
a passive `queue.declare`: ready messages and consumers. It shows neither the
unacked messages nor any counter of messages published or delivered, and the
engine runs in another process. So the only rate is the change of depth over
a sampling interval, and its name says so: `depth_change_per_s`, positive when
the queue grows, negative when it drains. It is not a throughput: a queue that
receives and settles 500 messages a second at the same pace shows 0.

The embedded transport answers the same passive declare by counting the
queue's message files in its folder (messages a consumer holds unacked sit in
that consumer's own folder and are not counted, as on RabbitMQ). It has no
notion of consumers, and any queue name "exists" there: `consumers` is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.amqp.connection import broker_errors, is_embedded
from router.errors import BrokerUnavailable

if TYPE_CHECKING:
    from kombu import Connection

    from router.settings import Settings

__all__ = [
    "QueueRole",
    "QueueStats",
    "WatchedQueue",
    "broker_location",
    "is_not_found",
    "queue_stats",
    "record_location",
    "redact_url",
    "watched_queues",
]

QueueRole = Literal["inbound", "dead_letter", "replies", "partition"]
"""What a queue is for: `partition` is one of the inbound stream's patient partitions (broker.partitions > 1)."""

_NOT_FOUND = 404  # AMQP 0-9-1 reply code NOT_FOUND (spec §1.2): a protocol constant, not a library's type


@dataclass(frozen=True, slots=True)
class WatchedQueue:
    """A queue the operator watches, and its role."""

    role: QueueRole
    name: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's numbers; None where the transport cannot tell."""

    role: QueueRole
    name: str
    exists: bool
    depth: int | None
    consumers: int | None
    depth_change_per_s: float | None


def watched_queues(settings: Settings) -> tuple[WatchedQueue, ...]:
    """Return every queue an operator watches, in display order; `status` and `dlq` read this one list.

    With broker.partitions > 1 the inbound queue is only the intake: what waits for a worker
    waits in the partitions, so they are watched too (last, so the first three keep their place).
    """
    from adapters.amqp.connection import topology

    names = settings.engine.broker.names
    return (
        WatchedQueue("inbound", names.inbound),
        WatchedQueue("dead_letter", names.dead_letter),
        WatchedQueue("replies", names.replies),
        *(WatchedQueue("partition", str(q.name)) for q in topology(settings).partitions),
    )


def dead_letter_queues(settings: Settings) -> list[str]:
    """The engine's dead-letter queue and every queued destination's, in that order: what `dlq --queue` and `find` accept."""
    from adapters.amqp.connection import all_queue_names

    own = [q.name for q in watched_queues(settings) if q.role == "dead_letter"]
    return own + [q.name for q in all_queue_names(settings) if q.role == "destination_dead_letter"]


def is_not_found(exc: BaseException) -> bool:
    """Return True when a broker error is AMQP's 404: the queue does not exist."""
    return getattr(exc, "reply_code", None) == _NOT_FOUND


def queue_stats(
    connection: Connection,
    settings: Settings,
    *,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[QueueStats]:
    """Sample every watched queue twice, *interval* seconds apart (once when it is 0).

    Raises:
        BrokerUnavailable: the broker cannot be reached.
    """
    queues = watched_queues(settings)
    embedded = is_embedded(settings)
    first = _sample(connection, queues, embedded=embedded)
    if interval <= 0:
        return [_stats(q, s, None, 0.0) for q, s in zip(queues, first)]
    started = time.monotonic()
    sleep(interval)
    second = _sample(connection, queues, embedded=embedded)
    elapsed = time.monotonic() - started
    return [_stats(q, b, a, elapsed) for q, a, b in zip(queues, first, second)]


_Sample = tuple[int, int | None] | None
"""(depth, consumers) of one queue, or None when it does not exist."""


def _stats(queue: WatchedQueue, now: _Sample, before: _Sample, elapsed: float) -> QueueStats:
    change = None
    if now is not None and before is not None and elapsed > 0:
        change = round((now[0] - before[0]) / elapsed, 2)
    return QueueStats(
        role=queue.role,
        name=queue.name,
        exists=now is not None,
        depth=now[0] if now else None,
        consumers=now[1] if now else None,
        depth_change_per_s=change,
    )


def _sample(connection: Connection, queues: tuple[WatchedQueue, ...], *, embedded: bool) -> list[_Sample]:
    out: list[_Sample] = []
    try:
        channel = connection.channel()
        for queue in queues:
            try:
                ok = channel.queue_declare(queue=queue.name, passive=True)
            except broker_errors(connection) as exc:
                if not is_not_found(exc):
                    raise
                out.append(None)
                channel = connection.channel()  # RabbitMQ closes a channel that asked about a missing queue
                continue
            out.append((int(ok.message_count), None if embedded else int(ok.consumer_count)))
        channel.close()
    except broker_errors(connection) as exc:
        raise BrokerUnavailable(f"cannot read the queues: {type(exc).__name__}") from exc
    return out


def redact_url(url: str) -> str:
    """Return *url* without its password (in the authority or as a `password=` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def broker_location(settings: Settings) -> dict[str, Any]:
    """Return which broker *settings* name: `transport` and `location` (a URL without password, or a folder)."""
    if settings.broker_url:
        return {"transport": "rabbitmq", "location": redact_url(settings.broker_url)}
    return {"transport": "embedded", "location": str((settings.data_dir / "broker").resolve())}


def record_location(settings: Settings) -> dict[str, Any]:
    """Return which record *settings* name: `kind` and `location` (a URL without password, or the SQLite file)."""
    url = settings.record_url
    if url and url.startswith("sqlite:///"):
        return {"kind": "sqlite", "location": url[len("sqlite:///"):]}
    if url:
        kind = "postgresql" if url.startswith(("postgresql://", "postgres://")) else urlsplit(url).scheme
        return {"kind": kind, "location": redact_url(url)}
    return {"kind": "sqlite", "location": str(settings.sqlite_path.resolve())}
