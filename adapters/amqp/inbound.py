"""Consume the inbound queue and hand out one `Delivery` at a time.

Deciding when to ack belongs to router/engine.py; this module only gives it
the handle to do so. kombu's callback merely queues the message here: with
pyamqp, waiting for a publisher confirm reads the socket and may run the
consumer callback in the middle of another delivery's work, so the work is
never done inside the callback.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer

from adapters.amqp.connection import broker_errors, topology
from router.errors import BrokerUnavailable

if TYPE_CHECKING:
    from kombu.message import Message

    from router.settings import Settings

__all__ = ["Delivery", "Inbound"]


@dataclass(slots=True)
class Delivery:
    """One message taken from the inbound queue, not yet acknowledged."""

    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    redelivered: bool
    _message: Message = field(repr=False)
    _connection: Connection = field(repr=False)

    def ack(self) -> None:
        """Acknowledge: the broker forgets the message.

        Raises:
            BrokerUnavailable: the channel is gone; the broker delivers the message again.
        """
        try:
            self._message.ack()
        except broker_errors(self._connection) as exc:
            raise BrokerUnavailable(f"ack failed: {type(exc).__name__}") from exc


class Inbound:
    """Owns the consuming channel, the consumer and the prefetch window."""

    def __init__(self, connection: Connection, settings: Settings) -> None:
        self._connection = connection  # no I/O here: start() opens the channel
        self._queue = topology(settings).inbound
        self._prefetch = settings.engine.broker.prefetch
        self._consumer: Consumer | None = None
        self._ready: collections.deque[Message] = collections.deque()

    def start(self) -> None:
        """Open a channel, set the prefetch window and start consuming.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """
        self._ready.clear()  # deliveries of an earlier channel come again on this one
        try:
            channel = self._connection.channel()
            consumer = Consumer(channel, queues=[self._queue], on_message=self._on_message, no_ack=False)
            consumer.qos(prefetch_count=self._prefetch)
            consumer.consume()
        except broker_errors(self._connection) as exc:
            raise BrokerUnavailable(f"cannot start consuming: {type(exc).__name__}") from exc
        self._consumer = consumer

    def next(self, timeout: float) -> Delivery | None:
        """Return the next delivery, waiting up to *timeout* seconds; None when none came.

        Raises:
            BrokerUnavailable: the connection was lost; unacked deliveries come again.
        """
        if not self._ready:
            try:
                self._connection.drain_events(timeout=timeout)
            except socket.timeout:
                pass
            except broker_errors(self._connection) as exc:
                self._ready.clear()
                raise BrokerUnavailable(f"lost the broker while waiting: {type(exc).__name__}") from exc
        if not self._ready:
            return None
        message = self._ready.popleft()
        body = message.body if isinstance(message.body, bytes) else bytes(message.body, "utf-8")
        props = message.properties or {}
        return Delivery(
            body=body,
            headers=dict(message.headers or {}),
            message_id=props.get("message_id"),
            redelivered=bool(message.delivery_info.get("redelivered")),
            _message=message,
            _connection=self._connection,
        )

    @property
    def buffered(self) -> int:
        """Deliveries received but not yet handed out."""
        return len(self._ready)

    def stop(self) -> None:
        """Cancel the consumer and close its channel; unacked deliveries go back to the queue."""
        consumer, self._consumer = self._consumer, None
        self._ready.clear()
        if consumer is None:
            return
        try:
            consumer.cancel()
            consumer.channel.close()
        except broker_errors(self._connection):
            pass  # the connection is gone: the broker requeues the deliveries itself

    def _on_message(self, message: Message) -> None:  # raw: kombu decodes nothing
        self._ready.append(message)
