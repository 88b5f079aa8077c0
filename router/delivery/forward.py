"""Hand a settled message to its broker-fed destinations: legacy queues in their own format, and the work queues of queued destinations.

Publishing here is pipelined: the caller (router/pipeline/settle.py) waits for
every confirm once per batch and acks the source only after that, so a
destination holds the message durably before the source forgets it. Each
forward carries a deterministic `message_id` (sender, control id,
destination, a hash of the message's bytes), so a receiver can drop the
copy an at-least-once redelivery may bring. Applying a queued destination's work is router/delivery/worker.py's.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import TYPE_CHECKING, Any

import orjson

from router.delivery.render import Renderer, renderer_for
from router.errors import MessageError
from router.logging import get_logger
from router.routing.model import FhirDestination, QueueDestination
from router.routing.partition import partition_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.amqp.outbound import Publisher
    from router.contracts import Converted
    from router.routing.match import Decision
    from router.settings import Settings

__all__ = ["Forwarder", "content_digest", "forward_id", "forward_id_of"]


def forward_id(conv: Converted, destination: str) -> str:
    """Return the message id every copy of *conv* sent to *destination* carries.

    It follows the message's bytes as well as its sender and control id: a redelivery or a
    `dlq replay` (the same bytes) keeps its id, so a receiver drops the repeat, while a
    sender reusing a control id (MSH-10) for a different message gets a new one, which a
    receiver that drops repeats by message id takes (with the control id alone, it dropped it).
    """
    if conv.control_id:
        return forward_id_of(conv.sender or "", conv.control_id, destination, content=content_digest(conv.raw))
    basis = f"{conv.sender or ''}||{destination}".encode() + b"|" + hashlib.blake2b(conv.raw, digest_size=16).digest()
    return hashlib.blake2b(basis, digest_size=16).hexdigest()


def content_digest(raw: bytes) -> str:
    """The hash of a message's bytes that forward ids and the record's journal key (router.pipeline.settle.applied_key) carry."""
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def forward_id_of(sender: str, control_id: str, destination: str, *, content: str = "") -> str:
    """The id forward_id gives a message with a control id, from what the journal keeps of it (`helsebro find`).

    *content*: its content_digest (the journal key's hash). Without it, the id forwards had before
    session 25 (sender, control id and destination only), which messages forwarded then still carry.
    """
    basis = f"{sender}|{control_id}|{destination}" + (f"|{content}" if content else "")
    return hashlib.blake2b(basis.encode(), digest_size=16).hexdigest()


class Forwarder:
    """Publishes one message to every non-record destination its routes chose."""

    def __init__(self, settings: Settings, *, logger: Any = None, renderers: Mapping[str, Renderer] | None = None) -> None:
        """Build a renderer per queue destination, but for those *renderers* holds already.

        Raises:
            MappingError, ConfigError: an outbound mapping does not load.
        """
        self._routes = settings.routes
        self._log = logger or get_logger("forward")
        self._prefix = settings.engine.broker.names.destination_prefix
        self._partitions = settings.engine.broker.partitions if settings.broker_url else 1
        given = renderers or {}
        self._renderers: dict[str, Renderer] = {
            name: given[name] if name in given else renderer_for(dest, settings)
            for name, dest in settings.routes.destinations.items() if isinstance(dest, QueueDestination)
        }

    def rerouted(self, settings: Settings) -> Forwarder:
        """A forwarder for *settings*' routes that keeps this one's renderer for every destination whose options are unchanged.

        Why: a routes reload (router/engine.py) renders with the outbound mappings the running set
        loaded; building every renderer again read them from disk, where an edit the mapping reload
        has not taken yet (or refused) may wait. Only a destination whose options changed gets a
        new renderer, and one that does not load refuses the routes.

        Raises:
            MappingError, ConfigError: a changed destination's outbound mapping does not load.
        """
        new = settings.routes.destinations
        keep = {n: r for n, r in self._renderers.items() if self._routes.destinations.get(n) == new.get(n)}
        return Forwarder(settings, logger=self._log, renderers=keep)

    def forward(self, publisher: Publisher, conv: Converted, decision: Decision,
                unrendered: list[tuple[str, MessageError]] | None = None, *, delivery: Mapping[str, Any] | None = None,
                msg_ids: list[str] | None = None) -> int:
        """Publish *conv* to each queue and queued destination in *decision*; return how many were published (pipelined).

        A destination *conv* cannot be rendered for is dead-lettered (stage render) and, given *unrendered*, added to it with why.
        *delivery*: the headers of the delivery *conv* came in; a replay's history (`helsebro dlq replay`) goes on
        that dead letter, as on the engine's own (router.pipeline.settle.replay_history).
        *msg_ids*, given, gets the MsgId of each KITH message published (its receiver answers it with an AppRec).
        """
        sent = 0
        overrides = dict(decision.on_failure)
        for name in decision.destinations:
            dest = self._routes.destinations[name]
            headers = _headers(conv, name, decision)
            if isinstance(dest, QueueDestination):
                try:
                    body = self._render(name, conv)
                except MessageError as exc:  # this destination only: the others go on
                    self._dead_letter(publisher, conv, name, exc, delivery)
                    if unrendered is not None:
                        unrendered.append((name, exc))
                    continue
                publisher.publish_to("", dest.queue, body, headers={**headers, "x-helsebro-format": dest.format}, message_id=forward_id(conv, name))
                sent += 1
                msg_id = getattr(self._renderers[name], "msg_id", None)  # a KITH renderer's: an AppRec will answer it
                if msg_ids is not None and msg_id is not None:
                    msg_ids.append(msg_id(conv))
            elif isinstance(dest, FhirDestination):
                k = partition_of(conv.raw, self._partitions)
                headers.update({"x-helsebro-attempt": 1, "x-helsebro-on-failure": overrides.get(name, dest.on_failure)})
                publisher.publish_to(f"{self._prefix}.{name}", f"p{k}", orjson.dumps(conv.bundle), headers=headers, message_id=forward_id(conv, name))
                sent += 1
        return sent


    def _render(self, name: str, conv: Converted) -> bytes:
        """Render *conv* for destination *name*; a renderer that breaks is this destination's failure alone.

        Why a catch-all here (STYLE §4 keeps the one catch-all in the consumer loop): raised on, one
        destination's renderer bug sent the whole message to the engine's catch-all, so the later
        destinations of the message never got it (STYLE §4: one destination's failure must not take
        the others down). It becomes an internal failure, dead-lettered at stage render for *name*.

        Raises:
            MessageError: *conv* cannot be rendered for *name* (InternalFailure when the renderer broke).
        """
        try:
            return self._renderers[name].render(conv)
        except MessageError:
            raise
        except Exception as exc:  # this destination's catch-all: see the docstring
            from router.pipeline.settle import InternalFailure  # settle imports this module

            frames = "".join(traceback.format_tb(exc.__traceback__))  # no exception text: it may quote the message
            self._log.error("render_failed", destination=name, error=type(exc).__name__, control_id=conv.control_id, traceback=frames)
            raise InternalFailure(f"internal error: {type(exc).__name__}") from exc

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
