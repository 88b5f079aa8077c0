"""Settle one delivery: apply each converted message, dead-letter the failures, reply, then ack.

The order is the invariant (DESIGN §Invariants 1, "ack after effect"): the
record has applied a message, or the dead-letter queue holds it (confirmed),
and its ACK is on the replies queue (confirmed), before the delivery is
acked. A crash anywhere in between leaves the delivery unacked, so the broker
delivers it again; applying is idempotent, so the replay changes nothing, but
a dead letter or an ACK may then be published twice (at-least-once).

Which HL7 ACK answers which error is adapters/hl7v2/ack.py's table. A KITH
XML message is answered with one AppRec per recipient (adapters/kith/apprec.py),
on a queue per sender HER-id, after the record commit. A repeated MsgId whose
AppRecs were all sent is neither applied nor answered again (HITS 1168 §5.4):
the guard is only written after the AppRecs are durably published, so a crash
in between answers twice rather than never. The consumer loop, reconnects and
the one catch-all belong to router/engine.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal

import orjson

from adapters.hl7v2.ack import ack_code_for, build_ack
from router.errors import MessageError, RecordUnavailable

if TYPE_CHECKING:
    from adapters.amqp.inbound import Delivery
    from adapters.amqp.outbound import Publisher
    from router.contracts import Converted, FhirJson, Record

__all__ = ["Outcome", "Settle", "Settled", "dead_letter_headers"]

Outcome = Literal["applied", "unchanged", "dead_lettered", "duplicate"]
"""What became of one message."""

Stage = Literal["convert", "apply", "internal"]
"""Where a dead-lettered message failed."""

_FIRST_RETRY_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Settled:
    """One message's outcome, with the ids that are safe to log."""

    control_id: str | None
    message_type: str | None
    sender: str | None
    patient_key: str | None
    outcome: Outcome
    ms: float
    stage: Stage | None = None
    reason: str | None = None


def dead_letter_headers(*, reason: str, stage: Stage, location: str | None, control_id: str | None, outcome: FhirJson) -> dict[str, Any]:
    """Return the headers a dead letter carries: plain-words reason, never a value from the message."""
    return {
        "x-helsebro-reason": reason,
        "x-helsebro-location": location or "",
        "x-helsebro-stage": stage,
        "x-helsebro-control-id": control_id or "",
        "x-helsebro-failed-at": datetime.now(timezone.utc).isoformat(),
        "x-helsebro-outcome": orjson.dumps(outcome).decode("utf-8"),
    }


class Settle:
    """Apply, dead-letter and reply for the messages of one delivery, then ack it."""

    name = "settle"

    def __init__(
        self,
        *,
        record: Record,
        publisher: Publisher,
        stop: threading.Event,
        max_backoff: float,
        on_wait: Callable[[], None] | None = None,
        logger: Any,
        apprec_prefix: str = "helsebro.reply.apprec",
        guard: Any = None,
    ) -> None:
        self._apprec_prefix = apprec_prefix
        self._guard = guard  # a KITH DuplicateGuard with `contains` and `seen_before`, or None
        self._record = record
        self._publisher = publisher
        self._stop = stop
        self._max_backoff = max_backoff
        self._on_wait = on_wait or (lambda: None)
        self._log = logger

    def __call__(self, delivery: Delivery, results: list[Converted], started: float) -> list[Settled]:
        """Settle every message of *delivery*, then ack it; return what became of each.

        Raises:
            BrokerUnavailable: a publish or the ack failed; the delivery comes again.
            RecordUnavailable: the engine is stopping during a record outage; the delivery comes again.
        """
        settled = [self._one(conv, started) for conv in results]
        delivery.ack()
        return settled

    def _one(self, conv: Converted, started: float) -> Settled:
        error: MessageError | None = conv.error
        stage: Stage = "convert"
        outcome: Outcome = "dead_lettered"
        if conv.format == "kith" and self._answered_before(conv):
            self._log.info("duplicate_suppressed", msg_id=conv.control_id, sender=conv.sender)
            return Settled(conv.control_id, conv.message_type, conv.sender, conv.patient_key, "duplicate", round((time.monotonic() - started) * 1000, 2), None, "duplicate MsgId: already applied and answered")
        if conv.ok and conv.bundle is not None:
            try:
                outcome = "applied" if self._apply(conv.bundle).changed else "unchanged"
            except MessageError as exc:  # InvalidContent, Refused: this bundle can never apply
                error, stage = exc, "apply"
        if outcome == "dead_lettered":
            error = error or MessageError("message produced no Bundle")
            oo = conv.outcome() if stage == "convert" else _outcome_for(error)
            headers = dead_letter_headers(reason=error.reason, stage=stage, location=error.location, control_id=conv.control_id, outcome=oo)
            self._publisher.dead_letter(conv.raw, headers=headers)
        self._reply(conv, error)
        return Settled(
            control_id=conv.control_id,
            message_type=conv.message_type,
            sender=conv.sender,
            patient_key=conv.patient_key,
            outcome=outcome,
            ms=round((time.monotonic() - started) * 1000, 2),
            stage=stage if error else None,
            reason=error.reason if error else None,
        )

    def _apply(self, bundle: FhirJson) -> Any:
        """Apply *bundle*, waiting out a record outage with capped exponential backoff.

        The delivery stays unacked meanwhile, so order per patient holds and
        nothing is requeued behind later messages.
        """
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                return self._record.apply(bundle)
            except RecordUnavailable as exc:
                self._log.warning("record_unavailable", error=type(exc).__name__, retry_in_s=delay)
                if self._wait(delay):
                    raise  # stopping: leave the delivery unacked for the next run
                delay = min(delay * 2, self._max_backoff)

    def _wait(self, seconds: float) -> bool:
        """Wait *seconds*, keeping the broker connection alive; True when asked to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, 1.0)):
                return True
            self._on_wait()
        return self._stop.is_set()

    def _answered_before(self, conv: Converted) -> bool:
        if self._guard is None or not conv.control_id or conv.envelope is None:
            return False
        recipients = [p.her_id or p.role for p in conv.envelope.recipients]
        return bool(recipients) and all(self._guard.contains(conv.control_id, recipient=r) for r in recipients)

    def _reply_apprec(self, conv: Converted, error: MessageError | None) -> None:
        from adapters.kith import build_apprecs  # the XML edge loads only when XML arrives

        for apprec in build_apprecs(conv.envelope, error=error):
            queue = f"{self._apprec_prefix}.{apprec.recipient_her_id or 'unknown'}"
            self._publisher.reply_to(queue, apprec.xml, headers={
                "x-helsebro-original-msg-id": apprec.original_msg_id or "",
                "x-helsebro-apprec-status": apprec.status,
                "x-helsebro-apprec-version": apprec.version,
                "x-helsebro-role": apprec.role,
                "x-helsebro-error-code": apprec.error_code or "",
            })
        if self._guard is not None and conv.control_id and conv.envelope is not None:
            for party in conv.envelope.recipients:
                self._guard.seen_before(conv.control_id, recipient=party.her_id or party.role)

    def _reply(self, conv: Converted, error: MessageError | None) -> None:
        if conv.format == "kith":
            self._reply_apprec(conv, error)
            return
        header = conv.header
        if error is None:
            code, err_code = "AA", None
        else:
            code, err_code = ack_code_for(error)
        ack = build_ack(
            code=code,  # type: ignore[arg-type]  # "AA" or an AckCode from the table
            control_id=conv.control_id or (header.control_id if header else None),
            sending_application=header.sending_application if header else "",
            sending_facility=header.sending_facility if header else "",
            receiving_application=header.receiving_application if header else "",
            receiving_facility=header.receiving_facility if header else "",
            version=(header.version if header else "") or "2.5",
            message_type=conv.message_type or (header.message_type if header else None),
            text=error.reason if error else None,
            error_location=error.location if error else None,
            error_code=err_code,
        )
        self._publisher.reply(ack, headers={
            "x-helsebro-control-id": conv.control_id or "",
            "x-helsebro-ack-code": code,
            "x-helsebro-sender": conv.sender or "",
        })


def _outcome_for(error: MessageError) -> FhirJson:
    issue: FhirJson = {"severity": "error", "code": error.issue_code, "diagnostics": error.reason}
    if error.location:
        issue["expression"] = [error.location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
