"""Publish to the broker with publisher confirms: inbound messages, dead letters and replies.

A publish returns only when the broker holds the message durably (RabbitMQ's
confirm; the embedded transport's fsync). Deciding what to publish belongs to
router/engine.py, not here.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Mapping

from kombu import Connection, Exchange, Producer, Queue

from adapters.amqp.connection import Topology, broker_errors, topology
from router.errors import BrokerUnavailable

if TYPE_CHECKING:
    from router.settings import Settings

__all__ = ["Publisher"]

_CONFIRM_TIMEOUT_SECONDS = 30
_CONTENT_TYPE = "application/octet-stream"  # kombu then passes the bytes through untouched


class Publisher:
    """Owns one channel for publishing; every publish is persistent, mandatory and confirmed."""

    def __init__(self, connection: Connection, settings: Settings, *, app_id: str = "helsebro") -> None:
        self._connection = connection  # no I/O here: the first publish opens the channel
        self._topology: Topology = topology(settings)
        self._app_id = app_id
        self._producer: Producer | None = None
        self._returned: list[str] = []
        self._declared: set[str] = set()
        self._queue_args = dict(self._topology.replies.queue_arguments or {})

    def publish_inbound(self, body: bytes, *, headers: Mapping[str, Any] | None = None, message_id: str | None = None) -> str:
        """Publish *body* to the inbound exchange with the inbound routing key; return its message id."""
        return self._publish(body, exchange=self._topology.exchange, routing_key=str(self._topology.inbound.routing_key), headers=headers, message_id=message_id)

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
                channel = self._ensure_producer().channel
                Queue(queue, durable=True, auto_delete=False, queue_arguments=dict(self._queue_args)).bind(channel).declare()
            except broker_errors(self._connection) as exc:
                self._producer = None
                raise BrokerUnavailable(f"cannot declare {queue}: {type(exc).__name__}") from exc
            self._declared.add(queue)
        return self._publish(body, exchange="", routing_key=queue, headers=headers)

    def close(self) -> None:
        """Release the channel (the connection stays the caller's)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.channel.close()
            except broker_errors(self._connection):
                pass  # the connection is gone already; nothing to release

    def _publish(self, body: bytes, *, exchange: Exchange | str, routing_key: str, headers: Mapping[str, Any] | None, message_id: str | None = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        self._returned.clear()
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
            )
        except broker_errors(self._connection) as exc:
            self._producer = None  # its channel is unusable now
            raise BrokerUnavailable(f"publish failed: {type(exc).__name__}") from exc
        if self._returned:
            # The confirm came after a basic.return: RabbitMQ routed it nowhere.
            raise BrokerUnavailable(f"publish returned unroutable: {self._returned[0]}")
        return message_id

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            channel = self._connection.channel()
            # Only AMQP channels return messages; the embedded one refuses unroutable ones outright.
            on_return = self._on_return if hasattr(channel, "events") else None
            self._producer = Producer(channel, on_return=on_return)
        return self._producer

    def _on_return(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"{type(exc).__name__} (exchange {exchange!r}, routing key {routing_key!r})")
