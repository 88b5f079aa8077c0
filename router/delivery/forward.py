"""Hand a settled message to its broker-fed destinations: legacy queues in their own format, and the work queues of queued destinations.

Publishing here is pipelined: the caller (router/pipeline/settle.py) waits for
every confirm once per batch and acks the source only after that, so a
destination holds the message durably before the source forgets it. Each
forward carries a deterministic `message_id` (sender, control id,
destination), so a receiver can drop the copy an at-least-once redelivery
may bring. Applying a queued destination's work is router/delivery/worker.py's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from router.delivery.render import Renderer, renderer_for
from router.errors import MessageError
from router.routing.model import FhirDestination, QueueDestination
from router.routing.partition import partition_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.amqp.outbound import Publisher
    from router.contracts import Converted
    from router.routing.match import Decision
    from router.settings import Settings

__all__ = ["Forwarder", "forward_id", "forward_id_of"]


def forward_id(conv: Converted, destination: str) -> str:
    """Return the message id every copy of *conv* sent to *destination* carries."""
    if conv.control_id:
        return forward_id_of(conv.sender or "", conv.control_id, destination)
    basis = f"{conv.sender or ''}||{destination}".encode() + b"|" + hashlib.blake2b(conv.raw, digest_size=16).digest()
    return hashlib.blake2b(basis, digest_size=16).hexdigest()


def forward_id_of(sender: str, control_id: str, destination: str) -> str:
    """The id forward_id gives a message with a control id, from what the journal keeps of it (`helsebro find`)."""
    return hashlib.blake2b(f"{sender}|{control_id}|{destination}".encode(), digest_size=16).hexdigest()


class Forwarder:
    """Publishes one message to every non-record destination its routes chose."""

    def __init__(self, settings: Settings) -> None:
        """Build a renderer per queue destination.

        Raises:
            MappingError, ConfigError: an outbound mapping does not load.
        """
        self._routes = settings.routes
        self._prefix = settings.engine.broker.names.destination_prefix
        self._partitions = settings.engine.broker.partitions if settings.broker_url else 1
        self._renderers: dict[str, Renderer] = {
            name: renderer_for(dest, settings) for name, dest in settings.routes.destinations.items() if isinstance(dest, QueueDestination)
        }

    def forward(self, publisher: Publisher, conv: Converted, decision: Decision,
                unrendered: list[tuple[str, MessageError]] | None = None, *, delivery: Mapping[str, Any] | None = None) -> int:
        """Publish *conv* to each queue and queued destination in *decision*; return how many were published (pipelined).

        A destination *conv* cannot be rendered for is dead-lettered (stage render) and, given *unrendered*, added to it with why.
        *delivery*: the headers of the delivery *conv* came in; a replay's history (`helsebro dlq replay`) goes on
        that dead letter, as on the engine's own (router.pipeline.settle.replay_history).
        """
        sent = 0
        overrides = dict(decision.on_failure)
        for name in decision.destinations:
            dest = self._routes.destinations[name]
            headers = _headers(conv, name, decision)
            if isinstance(dest, QueueDestination):
                try:
                    body = self._renderers[name].render(conv)
                except MessageError as exc:  # this destination only: the others go on
                    self._dead_letter(publisher, conv, name, exc, delivery)
                    if unrendered is not None:
                        unrendered.append((name, exc))
                    continue
                publisher.publish_to("", dest.queue, body, headers={**headers, "x-helsebro-format": dest.format}, message_id=forward_id(conv, name))
                sent += 1
            elif isinstance(dest, FhirDestination):
                k = partition_of(conv.raw, self._partitions)
                headers.update({"x-helsebro-attempt": 1, "x-helsebro-on-failure": overrides.get(name, dest.on_failure)})
                publisher.publish_to(f"{self._prefix}.{name}", f"p{k}", orjson.dumps(conv.bundle), headers=headers, message_id=forward_id(conv, name))
                sent += 1
        return sent


    def _dead_letter(self, publisher: Publisher, conv: Converted, destination: str, error: MessageError,
                     delivery: Mapping[str, Any] | None) -> None:
        """Dead-letter *conv* for *destination* alone, with what the engine's own letters carry: its sender (`helsebro
        find` tells it from another sender's message with its control id), its type, and a replay's history."""
        from router.pipeline.settle import dead_letter_headers  # settle imports this module

        issue: dict[str, Any] = {"severity": "error", "code": error.issue_code, "diagnostics": error.reason}
        if error.location:
            issue["expression"] = [error.location]
        outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
        headers = dead_letter_headers(reason=error.reason, stage="render", location=error.location, control_id=conv.control_id, outcome=outcome, destination=destination, attempts=1, last_error=type(error).__name__,
                                      patient_key=conv.patient_key, sender=conv.sender, message_type=conv.message_type, delivery=delivery)
        publisher.dead_letter(conv.raw, headers=headers)


def _headers(conv: Converted, destination: str, decision: Decision) -> dict[str, Any]:
    return {
        "x-helsebro-control-id": conv.control_id or "",
        "x-helsebro-sender": conv.sender or "",
        "x-helsebro-message-type": conv.message_type or "",
        "x-helsebro-patient": conv.patient_key or "",  # a hash of the identity (patient_key_for), never the identifier
        "x-helsebro-destination": destination,
        "x-helsebro-routes": ",".join(decision.routes),
    }
