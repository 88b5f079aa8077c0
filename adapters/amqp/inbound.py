"""Consume one or more queues on one channel and hand out deliveries, one at a time or in batches.

Deciding when to ack belongs to router/engine.py and router/delivery/; this
module only gives them the handle to do so. kombu's callback merely queues
the message here: with pyamqp, waiting for a publisher confirm reads the
socket and may run the consumer callback in the middle of another delivery's
work, so the work is never done inside the callback.

Batches: `take(n)` returns the deliveries already received, in delivery-tag
order, and `ack_all` acks them with one `basic.ack(multiple=True)` on
RabbitMQ. That is only right because a batch is always a prefix of what this
channel holds unacked: everything received earlier was in this batch or an
earlier one, and anything that arrives meanwhile gets a higher tag. The
embedded transport acks one by one (its channel keeps a file per delivery).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer, Queue

from adapters.amqp.connection import broker_errors, drain_events, topology
from router.errors import BrokerUnavailable

if TYPE_CHECKING:
    from kombu.message import Message

    from router.settings import Settings

__all__ = ["Delivery", "Inbound", "ack_all"]

_NEARLY_NOW = 0.0005  # seconds


@dataclass(slots=True)
class Delivery:
    """One message taken from a queue, not yet acknowledged."""

    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    redelivered: bool
    _message: Message = field(repr=False)
    _connection: Connection = field(repr=False)
    queue: str = ""

    def ack(self) -> None:
        """Acknowledge: the broker forgets the message.

        Raises:
            BrokerUnavailable: the channel is gone; the broker delivers the message again.
        """
        try:
            self._message.ack()
        except broker_errors(self._connection) as exc:
            raise BrokerUnavailable(f"ack failed: {type(exc).__name__}") from exc


def ack_all(deliveries: Sequence[Delivery], *, embedded: bool) -> None:
    """Acknowledge a batch taken with `Inbound.take`: one multiple ack on RabbitMQ, one by one on the embedded transport.

    Raises:
        BrokerUnavailable: the channel is gone; the broker delivers them again.
    """
    if not deliveries:
        return
    if embedded:
        for d in deliveries:
            d.ack()
        return
    last = deliveries[-1]
    try:
        last._message.ack(multiple=True)
    except broker_errors(last._connection) as exc:
        raise BrokerUnavailable(f"ack failed: {type(exc).__name__}") from exc


class Inbound:
    """Owns one consuming channel, a consumer per queue and the prefetch window."""

    def __init__(self, connection: Connection, settings: Settings, *, queues: Sequence[Queue] | None = None, prefetch: int | None = None) -> None:
        """Consume *queues* (default: the inbound queue) on one channel, *prefetch* unacked at most (default: broker.prefetch)."""
        self._connection = connection  # no I/O here: start() opens the channel
        self._queues = tuple(queues) if queues is not None else (topology(settings).inbound,)
        self._prefetch = prefetch or settings.engine.broker.prefetch
        self._consumers: list[Consumer] = []
        self._channel: Any = None
        self._ready: collections.deque[tuple[str, Message]] = collections.deque()

    def start(self, queues: Sequence[Queue] | None = None) -> None:
        """Open the channel (once), set the prefetch window and consume *queues* (default: all given at construction).

        Call again with more queues to add them on the same channel (a standby subscription).

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """
        try:
            if self._channel is None:
                self._ready.clear()  # deliveries of an earlier channel come again on this one
                self._channel = self._connection.channel()
            for q in self._queues if queues is None else queues:
                consumer = Consumer(self._channel, queues=[q], on_message=self._receiver(str(q.name)), no_ack=False)
                if not self._consumers:
                    consumer.qos(prefetch_count=self._prefetch)
                consumer.consume()
                self._consumers.append(consumer)
        except broker_errors(self._connection) as exc:
            raise BrokerUnavailable(f"cannot start consuming: {type(exc).__name__}") from exc

    def next(self, timeout: float) -> Delivery | None:
        """Return the next delivery, waiting up to *timeout* seconds; None when none came.

        Raises:
            BrokerUnavailable: the connection was lost; unacked deliveries come again.
        """
        got = self.take(1, timeout)
        return got[0] if got else None

    def take(self, most: int, timeout: float) -> list[Delivery]:
        """Return up to *most* deliveries already received, waiting up to *timeout* seconds for the first.

        Raises:
            BrokerUnavailable: the connection was lost; unacked deliveries come again.
        """
        if not self._ready:
            self.poll(timeout)
        out: list[Delivery] = []
        while self._ready and len(out) < most:
            queue, message = self._ready.popleft()
            body = message.body if isinstance(message.body, bytes) else bytes(message.body, "utf-8")
            props = message.properties or {}
            out.append(Delivery(
                body=body,
                headers=dict(message.headers or {}),
                message_id=props.get("message_id"),
                redelivered=bool(message.delivery_info.get("redelivered")),
                _message=message,
                _connection=self._connection,
                queue=queue,
            ))
        return out

    def poll(self, timeout: float, *, more: int = 0) -> None:
        """Read from the connection for up to *timeout* seconds (every channel's consumers receive).

        After the first event, keep reading what is already there, until *more*
        deliveries are buffered: a batch then starts with what has arrived, not
        with one delivery.

        Raises:
            BrokerUnavailable: the connection was lost.
        """
        try:
            ready = self._ready
            drain_events(self._connection, timeout, more=lambda: len(ready) < more, then=_NEARLY_NOW)  # not 0: py-amqp spins on EAGAIN
        except TimeoutError:
            pass
        except broker_errors(self._connection) as exc:
            self._ready.clear()
            raise BrokerUnavailable(f"lost the broker while waiting: {type(exc).__name__}") from exc

    @property
    def buffered(self) -> int:
        """Deliveries received but not yet handed out."""
        return len(self._ready)

    def stop(self) -> None:
        """Cancel the consumers and close the channel; unacked deliveries go back to their queues."""
        consumers, self._consumers = self._consumers, []
        channel, self._channel = self._channel, None
        self._ready.clear()
        if channel is None:
            return
        try:
            for consumer in consumers:
                consumer.cancel()
            channel.close()
        except broker_errors(self._connection):
            pass  # the connection is gone: the broker requeues the deliveries itself

    def _receiver(self, queue: str) -> Any:
        def on_message(message: Message) -> None:  # raw: kombu decodes nothing
            self._ready.append((queue, message))

        return on_message
