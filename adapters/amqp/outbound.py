"""Publish to the broker with publisher confirms: inbound messages, dead letters, replies, forwards.

By default a publish returns only when the broker holds the message durably
(RabbitMQ's confirm; the embedded transport's fsync). A *pipelined* publisher
(`pipelined=True`, RabbitMQ only) sends without waiting and `flush()` waits
once for every confirm since the last flush: a batch of 100 publishes to a
quorum queue then costs one round of replication instead of 100 (a
synchronous confirm there takes about 1.8 ms). A nack, an unroutable return
or a lost connection makes `flush()` raise, and the caller must not ack what
it was publishing for. Deciding what to publish belongs to router/, not here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import amqp
from kombu import Connection, Exchange, Producer, Queue

from adapters.amqp._frames import Properties, publish_frames
from adapters.amqp.connection import Topology, broker_errors, drain_events, topology
from router.errors import BrokerUnavailable
from router.routing.partition import partition_pieces  # pure: the patient key from raw bytes, no I/O

if TYPE_CHECKING:
    from router.settings import Settings

__all__ = ["Publisher"]

_CONFIRM_TIMEOUT_SECONDS = 30
_CONTENT_TYPE = "application/octet-stream"  # kombu then passes the bytes through untouched


class _MessageIds:
    """Unique message ids without a uuid4 (an os.urandom syscall) per publish: 96 random bits per run, then a counter.

    32 hex digits in groups of at most 8, as a uuid writes them
    (`3f2a9c1e-07b4-4d21-9a0c6e5b-00000001`); two publishers share a prefix with
    probability 2**-96, and a publisher draws a new one after 2**32 ids.
    Why the dashes: the log redactor masks any run of exactly eleven digits as a
    possible fødselsnummer (router/logging.py), and run together, the prefix's
    last digits and the counter's often made one, so an operator's log showed
    `…a29e<11-digit id>` that no dead letter could be matched to.
    """

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix, self._count = _prefix(), 0

    def next(self) -> str:
        """Return a fresh id."""
        if self._count >= 0xFFFFFFFF:
            self._prefix, self._count = _prefix(), 0
        self._count += 1
        return f"{self._prefix}{self._count:08x}"


def _prefix() -> str:
    h = uuid.uuid4().hex
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:24]}-"


class Publisher:
    """Owns one channel for publishing; every publish is persistent, mandatory and confirmed."""

    def __init__(self, connection: Connection, settings: Settings, *, app_id: str = "helsebro", pipelined: bool = False) -> None:
        self._connection = connection  # no I/O here: the first publish opens the channel
        self._topology: Topology = topology(settings)
        self._app_id = app_id
        self._producer: Producer | None = None
        self._returned: list[str] = []
        self._declared: set[str] = set()
        self._queue_args = dict(self._topology.replies.queue_arguments or {})  # type: ignore[attr-defined]  # kombu's Queue sets it from its attrs table
        self._pipelined = pipelined and bool(settings.broker_url)
        self._raw: Any = None  # the pipelined py-amqp channel
        self._sent = 0
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._corked: tuple[Any, Any, list[bytes]] | None = None  # (transport, its write, frames held)
        self._props = Properties(content_type=_CONTENT_TYPE, content_encoding="binary", app_id=app_id)
        self._frame_max = 0
        self._ids = _MessageIds()
        self._inbound_key = str(self._topology.inbound.routing_key)
        direct = settings.engine.broker.publish_to_partition
        self._partition_keys = [str(q.routing_key) for q in self._topology.partitions] if direct else []

    def publish_to(self, exchange: str, routing_key: str, body: bytes, *, headers: Mapping[str, Any] | None = None, message_id: str | None = None, expiration_ms: int | None = None) -> str:
        """Publish *body* to *exchange* ("" for a queue by name) with *routing_key*; return its message id."""
        return self._publish(body, exchange=exchange, routing_key=routing_key, headers=headers, message_id=message_id, expiration_ms=expiration_ms)

    def flush(self, timeout: float = _CONFIRM_TIMEOUT_SECONDS) -> None:
        """Wait until the broker confirmed every pipelined publish; a no-op when not pipelined.

        Raises:
            BrokerUnavailable: a publish was nacked or returned unroutable, the wait timed out, or the connection was lost.
        """
        if self._raw is None:
            self._drop_cork()
            return
        deadline = time.monotonic() + timeout
        try:
            self._uncork()
            while self._unconfirmed and not self._returned and not self._nacked:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerUnavailable(f"no publisher confirm within {timeout} s")
                try:
                    drain_events(self._connection, min(left, 1.0))
                except TimeoutError:
                    continue
        except broker_errors(self._connection) as exc:
            self._raw = None
            self._drop_cork()
            raise BrokerUnavailable(f"lost the broker waiting for confirms: {type(exc).__name__}") from exc
        if self._returned or self._nacked:
            what = self._returned[0] if self._returned else f"{self._nacked} nacked"
            self._returned.clear()
            self._nacked = 0
            self._unconfirmed.clear()
            raise BrokerUnavailable(f"publish not accepted: {what}")

    def publish_inbound(self, body: bytes, *, headers: Mapping[str, Any] | None = None, message_id: str | None = None) -> str:
        """Publish *body* to the inbound exchange; return its message id.

        With `broker.partitions` > 1 (and `broker.publish_to_partition`) the routing key
        names the patient's partition (`<routing_key>.p<k>`, k from
        router/routing/partition.py on the raw bytes), so the message skips the
        intake's second hop; otherwise it is the inbound routing key. The order
        argument is partition.py's docstring. A batch about several patients goes
        as the intake sends it, one message to each patient's partition
        (`partition_pieces`); the id returned is then its first message's.
        """
        if not self._partition_keys:
            return self._publish(body, exchange=self._topology.exchange, routing_key=self._inbound_key, headers=headers, message_id=message_id)
        pieces = partition_pieces(body, len(self._partition_keys))
        ids = [
            self._publish(piece, exchange=self._topology.exchange, routing_key=self._partition_keys[k], headers=headers,
                          message_id=message_id if len(pieces) == 1 or not message_id else f"{message_id}.{i + 1}")
            for i, (k, piece) in enumerate(pieces)
        ]
        return ids[0]

    def dead_letter(self, body: bytes, *, headers: Mapping[str, Any]) -> str:
        """Publish *body* to the dead-letter queue with its reason *headers*; return its message id."""
        return self._publish(body, exchange="", routing_key=str(self._topology.dead_letter.name), headers=headers)

    def reply(self, body: bytes, *, headers: Mapping[str, Any]) -> str:
        """Publish an HL7 ACK (or another reply) to the replies queue; return its message id."""
        return self._publish(body, exchange="", routing_key=str(self._topology.replies.name), headers=headers)

    def reply_to(self, queue: str, body: bytes, *, headers: Mapping[str, Any]) -> str:
        """Publish a reply to *queue* (declared durable on first use, e.g. one per HER-id); return its message id."""
        if queue not in self._declared:
            try:
                self._uncork()  # the declare waits for its answer: what is held must go first
                channel = self._ensure_producer().channel
                Queue(queue, durable=True, auto_delete=False, queue_arguments=dict(self._queue_args)).bind(channel).declare()
            except broker_errors(self._connection) as exc:
                self._producer = None
                raise BrokerUnavailable(f"cannot declare {queue}: {type(exc).__name__}") from exc
            self._declared.add(queue)
        return self._publish(body, exchange="", routing_key=queue, headers=headers)

    def close(self) -> None:
        """Release the channels (the connection stays the caller's)."""
        try:
            self._uncork()
        except broker_errors(self._connection):
            pass  # the connection is gone; what was held is lost with it, unconfirmed
        producer, self._producer = self._producer, None
        raw, self._raw = self._raw, None
        for channel in (producer.channel if producer is not None else None, raw):
            if channel is None:
                continue
            try:
                channel.close()
            except broker_errors(self._connection):
                pass  # the connection is gone already; nothing to release

    def _publish(self, body: bytes, *, exchange: Exchange | str, routing_key: str, headers: Mapping[str, Any] | None, message_id: str | None = None, expiration_ms: int | None = None) -> str:
        message_id = message_id or self._ids.next()
        if self._pipelined:
            self._publish_pipelined(body, exchange=exchange if isinstance(exchange, str) else str(exchange.name), routing_key=routing_key, headers=headers, message_id=message_id, expiration_ms=expiration_ms)
            return message_id
        self._returned.clear()
        extra = {"expiration": expiration_ms / 1000} if expiration_ms is not None else {}  # kombu takes seconds
        try:
            producer = self._ensure_producer()
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                headers=dict(headers or {}),
                content_type=_CONTENT_TYPE,
                content_encoding="binary",
                delivery_mode=2,
                mandatory=True,
                message_id=message_id,
                app_id=self._app_id,
                timeout=_CONFIRM_TIMEOUT_SECONDS,
                retry=False,
                **extra,
            )
        except broker_errors(self._connection) as exc:
            self._producer = None  # its channel is unusable now
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from exc
        if self._returned:
            # The confirm came after a basic.return: RabbitMQ routed it nowhere.
            raise BrokerUnavailable(f"publish returned unroutable: {self._returned[0]}")
        return message_id

    def _publish_pipelined(self, body: bytes, *, exchange: str, routing_key: str, headers: Mapping[str, Any] | None, message_id: str, expiration_ms: int | None) -> None:
        """Encode the publish's frames (_frames.py) and hold them for flush(): no socket read or write per message."""
        try:
            channel = self._ensure_raw()
            if channel.connection is None:
                raise amqp.exceptions.RecoverableConnectionError("publish: channel closed")
            self._cork()
            frames = publish_frames(channel.channel_id, self._frame_max, exchange, routing_key, body, self._props.encode(headers, message_id, expiration_ms))
        except broker_errors(self._connection) as exc:
            self._drop_cork()
            self._raw = None
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from exc
        self._corked[2].append(frames)  # type: ignore[index]  # set by _cork just above
        self._sent += 1
        self._unconfirmed.add(self._sent)

    def _cork(self) -> None:
        """Hold the frames of pipelined publishes and send them in one write at flush: one syscall and one
        TCP segment train per batch instead of one per message, for us and for the broker."""
        if self._corked is None:
            transport = self._connection.connection.transport
            held: list[bytes] = []
            self._corked = (transport, transport._write, held)
            transport._write = lambda data: held.append(bytes(data))

    def _drop_cork(self) -> None:
        corked, self._corked = self._corked, None
        if corked is not None:
            corked[0]._write = corked[1]  # the held frames die with the channel: nothing was confirmed

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked is not None:
            transport, write, held = corked
            transport._write = write
            if held:
                transport.write(b"".join(held))

    def _ensure_raw(self) -> Any:
        if self._raw is None:
            channel = self._connection.channel()  # a py-amqp channel: confirm mode, but we do not wait per publish
            channel.confirm_select()
            channel._confirm_selected = True
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            self._raw, self._sent = channel, 0
            self._frame_max = int(self._connection.connection.frame_max)
            self._unconfirmed.clear()
            self._returned.clear()
            self._nacked = 0
        return self._raw

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked += 1
        self._on_ack(tag, multiple)

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            channel = self._connection.channel()
            # Only AMQP channels return messages; the embedded one refuses unroutable ones outright.
            on_return = self._on_return if hasattr(channel, "events") else None
            self._producer = Producer(channel, on_return=on_return)
        return self._producer

    def _on_return(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"{type(exc).__name__} (exchange {exchange!r}, routing key {routing_key!r})")
