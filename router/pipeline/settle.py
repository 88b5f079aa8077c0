"""Settle a batch of deliveries: drop duplicates, route, apply, forward, dead-letter, reply, then ack.

The order is the invariant (DESIGN §Invariants 1, "ack after effect"): for a
whole batch, the record has committed (one transaction), every forward and
dead letter and ACK/AppRec is confirmed by the broker (pipelined publishes,
one wait), and only then are the deliveries acked (one multiple ack). A crash
anywhere in between leaves the batch unacked, so the broker delivers it
again; the record keeps each applied message's key in the transaction that
applied it (`applied_key`), so the redelivery is not applied a second time
(re-applying an older Bundle would undo a newer one), but a forward,
a dead letter or an ACK may then be published twice (at-least-once, same
content, same message id for forwards).

Duplicates (HL7 v2): a message whose (sender, MSH-10) was settled within
`duplicates.window_seconds` is neither applied nor forwarded again; it is
answered again as the first copy was (AA, or CA/AA as MSH-15/16 ask with
`hl7v2.acknowledgments: msh`), since a sender resends when an ACK went missing. The key is
remembered only after the batch's publishes are confirmed, so a crash in
between forwards twice rather than never. A dead letter an operator replays
(`helsebro dlq replay`, header `x-helsebro-replay-of`) is applied whatever the
window says: the replay is a deliberate request (the record still refuses a
message it has applied before); one refused again keeps that header and the
earlier reasons on its new dead letter (replay_history). KITH XML keeps its own rule: a
repeated MsgId whose AppRecs were all sent is neither applied nor answered
(HITS 1168 §5.4). Messages in one delivery share its ack. The consumer loop,
reconnects and the one catch-all belong to router/engine.py.

Nothing settles silently: an applied message is journalled with what it wrote
(in its apply transaction), and every other one (duplicate, filtered,
forwarded only to other destinations, dead-lettered, and an incoming AppRec as a
`receipt` under the MsgId it answers) with its outcome and a
plain-words note, once the publishes are confirmed and before the ack, so an
operator finds any message with `helsebro find`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from adapters.amqp.connection import wait_alive
from adapters.amqp.inbound import ack_all
from router.contracts import APPLIED_OUTCOMES, SETTLED_OUTCOMES, JournalFacts, SettledOutcome
from router.errors import MessageError, NoMapping, RecordUnavailable
from router.pipeline._reply import reply

if TYPE_CHECKING:
    from adapters.amqp.inbound import Delivery
    from adapters.amqp.outbound import Publisher
    from adapters.kith.apprec import Receipt
    from router.contracts import Converted, FhirJson, Record
    from router.delivery.forward import Forwarder
    from router.routing.match import Decision, Router

__all__ = ["UNMATCHED_PREFIX", "InternalFailure", "Outcome", "Settle", "Settled", "applied_key", "dead_letter_headers", "replay_history",
           "sent_key"]

Outcome = SettledOutcome
"""What became of one message: `forwarded` went only to destinations other than the record; `filtered` matched no route."""

Stage = Literal["convert", "apply", "internal", "deliver", "render"]
"""Where a dead-lettered message failed."""

_FIRST_RETRY_SECONDS = 0.5
_SENT_KEPT_DAYS = 14  # adapters.fhir.record's APPLIED_RETENTION_SECONDS: how long a sent MsgId's ledger key is kept
_NOT_APPLIED = frozenset(SETTLED_OUTCOMES) - APPLIED_OUTCOMES  # journalled by Settle, with a note
_REPLAY_HEADER = "x-helsebro-replay-of"  # set by router/ops/deadletters.py on a replayed dead letter
_PREVIOUS_REASON_HEADER = "x-helsebro-previous-reason"  # set there too: the replayed letter's reasons, newest first


class InternalFailure(MessageError):
    """The code broke on this delivery (the engine's catch-all made it a value): dead-letter as `internal`, no reply."""

    issue_code = "exception"


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
    unmapped: tuple[str, ...] = ()  # source positions no rule read (field and element names, no values)
    refused: bool = False  # a receipt whose AppRec refuses what Helsebro sent (8258 status 2 Avvist, or none known): an alarm
    unmatched: bool = False  # a receipt whose AppRec names a MsgId Helsebro sent nothing under (the log's apprec_unmatched)


def dead_letter_headers(
    *, reason: str, stage: Stage, location: str | None, control_id: str | None, outcome: FhirJson,
    destination: str = "", attempts: int = 0, last_error: str = "", patient_key: str | None = None,
    sender: str | None = None, message_type: str | None = None, delivery: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the headers a dead letter carries: plain-words reason, never a value from the message.

    `x-helsebro-patient` is the patient's key (a hash: router.pipeline.convert.patient_key_for),
    empty when the message was refused before its patient was known. `x-helsebro-sender`
    (MSH-3@MSH-4, or the KITH sender's HER-id) and `x-helsebro-message-type` are written when
    known: an operator tells whose a letter is, and `find --sender` finds it, without its body.
    *delivery*: the headers of the delivery that failed; a replay's (`helsebro dlq replay`)
    `x-helsebro-replay-of` and `x-helsebro-previous-reason` are kept, so a letter refused
    again names the letter it replaced and why that one was refused (replay_history).
    """
    headers: dict[str, Any] = {
        "x-helsebro-reason": reason,
        "x-helsebro-location": location or "",
        "x-helsebro-stage": stage,
        "x-helsebro-control-id": control_id or "",
        "x-helsebro-failed-at": datetime.now(UTC).isoformat(),
        "x-helsebro-outcome": orjson.dumps(outcome).decode("utf-8"),
        "x-helsebro-patient": patient_key or "",
    }
    if sender:
        headers["x-helsebro-sender"] = sender
    if message_type:
        headers["x-helsebro-message-type"] = message_type
    if destination:
        headers.update({"x-helsebro-destination": destination, "x-helsebro-attempts": attempts, "x-helsebro-last-error": last_error})
    if delivery:
        headers.update(replay_history(delivery))
    return headers


def replay_history(delivery: Mapping[str, Any]) -> dict[str, str]:
    """The replay headers of *delivery* a dead letter of it keeps: which letter it replayed, and that letter's reasons.

    Set by router/ops/deadletters.py on each replayed message; empty for a message that was never a dead letter.
    """
    kept: dict[str, str] = {}
    for name in (_REPLAY_HEADER, _PREVIOUS_REASON_HEADER):
        value = delivery.get(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value not in (None, ""):
            kept[name] = str(value)
    return kept


class _Msg:
    """One message of the batch while it settles."""

    __slots__ = ("answered", "as_received", "conv", "decision", "delivery", "dup_key", "error", "outcome", "receipt", "receipt_again", "replayed",
                 "sent_msg_ids", "stage", "unmatched", "unrendered")

    def __init__(self, conv: Converted, *, delivery: Mapping[str, Any] | None = None) -> None:
        self.conv = conv
        self.delivery: Mapping[str, Any] = delivery or {}  # the delivery's headers: a replay's history goes on its dead letter
        self.replayed = _REPLAY_HEADER in self.delivery
        self.decision: Decision | None = None
        self.error: MessageError | None = conv.error
        self.stage: Stage = "internal" if isinstance(conv.error, InternalFailure) else "convert"
        self.outcome: Outcome | None = None
        self.dup_key: str | None = None
        self.unrendered: list[tuple[str, MessageError]] = []  # (destination, why): dead-lettered at stage render by the Forwarder
        self.as_received = False  # no mapping serves it, and its routes forward it as received (passthrough only)
        self.receipt: Receipt | None = None  # an AppRec answering a message Helsebro sent
        self.receipt_again = False  # that AppRec was journalled before (a redelivery): it changes nothing, and alarms no more
        self.unmatched = False  # that AppRec names a MsgId Helsebro sent no KITH message under (within the ledger's retention)
        self.sent_msg_ids: list[str] = []  # the MsgIds of the KITH messages rendered from this one and published
        self.answered = False  # a replayed KITH message whose MsgId every recipient answered before: no second AppRec


UNMATCHED_PREFIX = "apprec-unmatched|"
"""The record's ledger keys (helsebro_applied) of the AppRecs that answer nothing Helsebro sent: `status` counts them by time."""


def sent_key(msg_id: str) -> str:
    """The record's ledger key (helsebro_applied) of a KITH message Helsebro published under *msg_id*: an AppRec naming it answers it."""
    return f"kith-sent|{msg_id}"


def applied_key(conv: Converted) -> str:
    """Return the key the record keeps, with the Bundle, for the message *conv* came from.

    Sender, control id and a hash of the bytes: a redelivered copy has the same
    key, while a sender that reuses a control id for new content does not.
    """
    digest = hashlib.blake2b(conv.raw, digest_size=12).hexdigest()
    return f"{conv.format}|{conv.sender or ''}|{conv.control_id or ''}|{digest}"


def journal_facts(conv: Converted, destinations: Sequence[str] = ()) -> JournalFacts:
    """What the record journals of *conv* (`helsebro find`); *destinations*: those besides the record its routes chose."""
    return JournalFacts(conv.control_id or "", conv.sender or "", conv.message_type or "", conv.patient_key or "", ",".join(destinations))


class Settle:
    """Settle batches of deliveries; holds the record, the publisher, the routes and the duplicate window."""

    name = "settle"

    def __init__(
        self,
        *,
        record: Record,
        publisher: Publisher,
        stop: threading.Event,
        max_backoff: float,
        on_wait: Callable[[], None] | None = None,
        on_outage: Callable[[], None] | None = None,
        logger: Any,
        apprec_prefix: str = "helsebro.reply.apprec",
        guard: Any = None,
        router: Router | None = None,
        forwarder: Forwarder | None = None,
        record_destinations: frozenset[str] = frozenset({"record"}),
        seen: Any = None,
        duplicate_window: float = 0.0,
        embedded: bool = True,
        original_acks: Callable[[Any], bool] | None = None,
    ) -> None:
        self._apprec_prefix = apprec_prefix
        self._original_acks = original_acks  # HL7: a sender answered with one application ACK whatever its MSH-15/16 say
        self._guard = guard  # a KITH DuplicateGuard with `contains` and `seen_before`, or None
        self._record = record
        self._publisher = publisher
        self._stop = stop
        self._max_backoff = max_backoff
        self._on_wait = on_wait or (lambda: None)
        self._on_outage = on_outage or (lambda: None)  # once per record outage waited out here: the engine counts it a reconnect
        self._log = logger
        self._router = router
        self._forwarder = forwarder
        self._record_dests = record_destinations
        self._seen: Any = seen if seen is not None else record  # anything with `seen` and `remember`: the record by default
        self._window = duplicate_window if hasattr(self._seen, "seen") else 0.0
        self._embedded = embedded

    def use_forwarder(self, forwarder: Forwarder) -> None:
        """Forward with *forwarder* from the next batch on: the outbound mappings of a hot reload."""
        self._forwarder = forwarder

    def use_router(self, router: Router) -> None:
        """Route with *router* from the next batch on: the routes of a hot reload (each batch is routed by one)."""
        self._router = router

    def __call__(self, delivery: Delivery, results: list[Converted], started: float) -> list[Settled]:
        """Settle the messages of one delivery, then ack it; return what became of each."""
        return self.batch([(delivery, results)], started)[0]

    def batch(self, items: Sequence[tuple[Delivery, list[Converted]]], started: float) -> list[list[Settled]]:
        """Settle every message of every delivery in *items*, then ack them all; return the outcomes per delivery.

        Raises:
            BrokerUnavailable: a publish, its confirm or the ack failed; the batch comes again.
            RecordUnavailable: the engine is stopping during a record outage; the batch comes again.
        """
        msgs = [[_Msg(c, delivery=d.headers) for c in results] for d, results in items]
        flat = [m for group in msgs for m in group]
        self._take_receipts(flat)
        self._route_unmapped(flat)
        self._find_duplicates(flat)
        for m in flat:
            if m.outcome is None and m.error is None and m.conv.bundle is not None:
                m.decision = self._router.decide(m.conv) if self._router is not None else None
        self._apply(flat)
        for m in flat:
            self._publish(m)
        self._publisher.flush()
        self._mark_sent(flat)
        # Journal before remembering: were the journal to fail (a stop during a record outage), the redelivered
        # batch must not find its own messages remembered and journal them as duplicates of themselves.
        self._alarm_refusals(flat)  # before the journal: a crash in between warns twice rather than never
        self._journal_others(flat)
        self._remember(flat)
        ack_all([d for d, _r in items], embedded=self._embedded)
        ms = round((time.monotonic() - started) * 1000, 2)
        return [[self._settled(m, ms) for m in group] for group in msgs]

    def _take_receipts(self, flat: list[_Msg]) -> None:
        """An AppRec that comes in answers a message Helsebro sent: settled as a `receipt`, journalled under the MsgId it
        answers (so `helsebro find` shows it beside that message), never answered or dead-lettered. One that
        names no OriginalMsgId/Id answers nothing find could show: dead-lettered (never answered), as XSD validation would.
        One that routes naming only passthrough queues take (a legacy system reading the answers) is also forwarded as
        received: journalled as a receipt all the same."""
        for m in flat:
            env = m.conv.envelope
            if m.conv.format == "kith" and isinstance(m.error, NoMapping) and env is not None and env.kind == "AppRec":
                from adapters.kith.apprec import read_receipt, receipt_error  # the XML edge loads only when XML arrives

                receipt = read_receipt(env)
                refusal = receipt_error(receipt)
                if refusal is not None:
                    m.error = refusal
                    continue
                m.receipt, m.error, m.outcome = receipt, None, "receipt"
        self._find_receipts_again(flat)

    def _find_receipts_again(self, flat: list[_Msg]) -> None:
        """Mark each receipt the journal already holds (the same AppRec delivered again by the broker), and a second copy in
        this batch: it changes nothing, neither the journal's row and time (SqlRecord.journal_settled), nor the refusal
        count, nor the apprec_refused alarm. Before, its row's time moved to now, and an old refusal read as a new one."""
        receipts = {f"{applied_key(m.conv)}|receipt": m for m in flat if m.outcome == "receipt"}
        journalled = getattr(self._record, "journalled", None)
        if not receipts or journalled is None:
            return
        known: set[str] = set(self._with_record(lambda: journalled(list(receipts))))
        applied = getattr(self._record, "applied", None)
        originals = [sent_key(m.receipt.original_msg_id) for m in receipts.values() if m.receipt is not None]
        sent: set[str] = set(self._with_record(lambda: applied(originals))) if applied is not None else set(originals)
        for m in flat:
            if m.outcome == "receipt" and m.receipt is not None:
                key = f"{applied_key(m.conv)}|receipt"
                m.receipt_again = key in known
                m.unmatched = sent_key(m.receipt.original_msg_id) not in sent
                known.add(key)

    def _mark_sent(self, flat: list[_Msg]) -> None:
        """Keep the MsgId of each KITH message this batch published (confirmed: flush came first) in the record's ledger,
        as `kith-sent|<MsgId>`: an AppRec naming an OriginalMsgId not there answers nothing Helsebro sent (_find_receipts_again).

        Each such AppRec is kept there too, as UNMATCHED_PREFIX + its applied_key, so `status` counts them by time
        (apprecs_unmatched); a redelivered copy has the same key, which is kept once."""
        mark = getattr(self._record, "mark_applied", None)
        keys = [sent_key(msg_id) for m in flat for msg_id in m.sent_msg_ids]
        keys += [UNMATCHED_PREFIX + applied_key(m.conv) for m in flat if m.outcome == "receipt" and m.unmatched and not m.receipt_again]
        if keys and mark is not None:
            self._with_record(lambda: mark(keys))

    def _route_unmapped(self, flat: list[_Msg]) -> None:
        """A message no mapping serves is forwarded as received when its routes send it only to passthrough queues
        (a legacy system that still reads a message type the record does not take); otherwise it stays refused.
        A receipt (_take_receipts, run first) is forwarded so too, and stays a receipt."""
        if self._router is None or self._forwarder is None:
            return
        for m in flat:
            if (isinstance(m.error, NoMapping) or m.receipt is not None) and m.conv.header is not None:
                decision = self._router.decide_unmapped(m.conv)
                if decision is not None:
                    m.decision, m.error, m.as_received = decision, None, True

    def _find_duplicates(self, flat: list[_Msg]) -> None:
        keys: list[str] = []
        claimed: set[tuple[str, str]] = set()  # KITH (MsgId, recipient) pairs an earlier message of this batch answers
        for m in flat:
            conv = m.conv
            if m.outcome is not None:
                continue  # a receipt: never answered, so never a duplicate of an answered message
            if conv.format == "kith":
                if m.replayed:  # `dlq replay` is a deliberate request: settled again, but never answered twice (HITS 1168 §5.4)
                    m.answered = self._answered_before(conv)
                    continue
                if self._answered_before(conv) or self._claimed_in_batch(conv, claimed):
                    m.outcome, m.error = "duplicate", None
                continue
            if self._window > 0 and (conv.ok or m.as_received) and conv.control_id:
                m.dup_key = f"hl7|{conv.sender or ''}|{conv.control_id}"
                if not m.replayed:
                    keys.append(m.dup_key)
        if not keys:
            return
        known = self._with_record(lambda: self._seen.seen(keys, window_seconds=self._window))
        for m in flat:
            if m.dup_key is None or m.replayed:
                continue
            if m.dup_key in known:
                m.outcome = "duplicate"
            known.add(m.dup_key)  # a second copy in this batch is a duplicate of the first

    def _apply(self, flat: list[_Msg]) -> None:
        todo = [m for m in flat if m.outcome is None and m.error is None and m.conv.bundle is not None and self._to_record(m)]
        if not todo:
            return
        bundles = [m.conv.bundle for m in todo]
        keys = [applied_key(m.conv) for m in todo]
        facts = [journal_facts(m.conv, self._elsewhere(m)) for m in todo]
        results = self._with_record(lambda: self._apply_all(bundles, keys, facts))
        for m, result in zip(todo, results, strict=True):
            if isinstance(result, MessageError):  # InvalidContent, Refused: this bundle can never apply
                m.error, m.stage = result, "apply"
            else:
                m.outcome = "applied" if result.changed else "unchanged"

    def _apply_all(self, bundles: list[Any], keys: list[str], facts: list[JournalFacts]) -> list[Any]:
        apply_batch = getattr(self._record, "apply_batch", None)
        if apply_batch is not None:
            return list(apply_batch(bundles, keys, facts))
        out: list[Any] = []
        for bundle in bundles:
            try:
                out.append(self._record.apply(bundle))
            except MessageError as exc:
                out.append(exc)
        return out

    def _elsewhere(self, m: _Msg) -> list[str]:
        """The destinations besides the record that *m*'s routes chose (none for a message not routed, nor for one
        dead-lettered before it was forwarded: refused by the record, it went nowhere else)."""
        if m.decision is None or m.error is not None or m.outcome == "duplicate":  # a duplicate forwarded as received went nowhere again
            return []
        return [d for d in m.decision.destinations if d not in self._record_dests]

    def _to_record(self, m: _Msg) -> bool:
        return m.decision is None or any(d in self._record_dests for d in m.decision.destinations)

    def _publish(self, m: _Msg) -> None:
        conv = m.conv
        if m.outcome == "duplicate":
            self._log.info("duplicate_suppressed", control_id=conv.control_id, sender=conv.sender)
            if conv.format != "kith":
                reply(self._publisher, conv, None, apprec_prefix=self._apprec_prefix, original_acks=self._original_acks)
            return
        if m.outcome == "receipt":
            if m.decision is not None and self._forwarder is not None:  # also to the legacy queues its routes name
                self._forwarder.forward(self._publisher, conv, m.decision, unrendered=m.unrendered, delivery=m.delivery)
            return  # an AppRec is never answered
        if m.error is None and m.conv.bundle is None and not m.as_received:
            m.error = MessageError("message produced no Bundle")
        if m.error is not None:
            oo = conv.outcome() if m.stage == "convert" else _outcome_for(m.error)
            headers = dead_letter_headers(reason=m.error.reason, stage=m.stage, location=m.error.location, control_id=conv.control_id, outcome=oo,
                                          patient_key=conv.patient_key, sender=conv.sender, message_type=conv.message_type, delivery=m.delivery)
            self._publisher.dead_letter(conv.raw, headers=headers)
            m.outcome = "dead_lettered"
            if m.stage == "internal":
                return  # no reply: nothing is known about the message
        elif m.decision is not None and m.decision.filtered:
            m.outcome = "filtered"
        elif m.decision is not None and self._forwarder is not None:
            sent = self._forwarder.forward(self._publisher, conv, m.decision, unrendered=m.unrendered, delivery=m.delivery, msg_ids=m.sent_msg_ids)
            if m.outcome is None and (sent or m.unrendered):
                m.outcome = "forwarded" if sent else "dead_lettered"  # every destination it went to dead-lettered it at render
        if m.answered:
            return
        reply(self._publisher, conv, m.error, apprec_prefix=self._apprec_prefix, original_acks=self._original_acks)

    def _remember(self, flat: list[_Msg]) -> None:
        keys = [m.dup_key for m in flat if m.dup_key and m.outcome in ("applied", "unchanged", "forwarded", "filtered")]
        if keys:
            self._with_record(lambda: self._seen.remember(keys, window_seconds=self._window))
        if self._guard is None:
            return
        for m in flat:  # after the AppRecs are confirmed: a crash before answers twice rather than never
            env = m.conv.envelope
            if m.conv.format == "kith" and m.outcome not in ("duplicate", "receipt") and m.conv.control_id and env is not None:
                for recipient in _recipient_keys(m.conv):
                    self._guard.seen_before(m.conv.control_id, recipient=recipient)

    def _alarm_refusals(self, flat: list[_Msg]) -> None:
        """Log each AppRec that refuses a message Helsebro sent at warning level (FACTS §10: alarm on a negative AppRec).

        Ids and codes only: the Volven 8221 codes, never a display or the OT text a receiver may have written patient data in.
        `helsebro find ORIGINAL_MSG_ID` shows the receipt beside the message it answers.
        """
        for m in flat:
            if m.receipt is not None and m.outcome == "receipt" and m.unmatched and not m.receipt_again:
                self._log.warning("apprec_unmatched", original_msg_id=m.receipt.original_msg_id, apprec_id=m.conv.control_id,
                                  sender=m.conv.sender, status=m.receipt.status)
            if m.receipt is not None and m.outcome == "receipt" and not m.receipt.accepted and not m.receipt_again:
                self._log.warning("apprec_refused", original_msg_id=m.receipt.original_msg_id, apprec_id=m.conv.control_id,
                                  sender=m.conv.sender, status=m.receipt.status, errors=[code for code, _display in m.receipt.errors])

    def _journal_others(self, flat: list[_Msg]) -> None:
        """Journal the messages that settled without being applied (SqlRecord.journal_settled); a message with no id to find it by is left out."""
        journal_settled = getattr(self._record, "journal_settled", None)
        if journal_settled is None:
            return
        rows = [
            (f"{applied_key(m.conv)}|{m.outcome}", self._facts(m), m.outcome, self._note(m))
            for m in flat
            if m.outcome in _NOT_APPLIED and (m.conv.control_id or m.conv.patient_key or m.receipt is not None)
        ]
        if rows and (left_out := self._with_record(lambda: journal_settled(rows))):
            self._log.warning("journal_rows_left_out", count=left_out, why="the record's database refused a value of theirs")

    def _facts(self, m: _Msg) -> JournalFacts:
        """What the journal keeps of *m*; a receipt is kept under the MsgId it answers, which find looks it up by, with
        its status as the type's second part (`APPREC^1` OK, `APPREC^2` Avvist)."""
        if m.receipt is not None:
            forwarded = ",".join(m.decision.destinations) if m.decision is not None else ""
            return JournalFacts(m.receipt.original_msg_id, m.conv.sender or "", f"APPREC^{m.receipt.status}", "", forwarded)
        return journal_facts(m.conv, self._elsewhere(m))

    def _note(self, m: _Msg) -> str:
        """Why *m* was not applied, in plain words starting with what became of it: never a value from the message."""
        if m.receipt is not None:
            note = f"receipt: {m.receipt.summary()} (AppRec {m.conv.control_id or 'without an Id'})"
            if m.unmatched:
                note += f"; answers nothing Helsebro sent (no KITH message it published in the last {_SENT_KEPT_DAYS} days has that MsgId)"
            return f"{note}; forwarded as received to {', '.join(m.decision.destinations)}" if m.decision is not None else note
        if m.outcome == "duplicate":
            if m.conv.format == "kith":
                return "duplicate: this MsgId was answered before to every recipient (not applied, not answered again)"
            return f"duplicate: its sender's control id was settled within the last {self._window:g} s (not applied; answered AA again)"
        if m.outcome == "filtered":
            return "filtered: no route matched (not applied, not forwarded)"
        unrendered = "; ".join(
            f"dead-lettered (render) for {name}{f' at {exc.location}' if exc.location else ''}: {exc.reason}" for name, exc in m.unrendered)
        if m.outcome == "forwarded" and m.decision is not None:
            failed = {name for name, _exc in m.unrendered}
            to = ", ".join(d for d in m.decision.destinations if d not in failed)
            forwarded = f"forwarded as received to {to} (no mapping serves it: not to the record)" if m.as_received else f"forwarded to {to} (not to the record)"
            return f"{forwarded}; {unrendered}" if unrendered else forwarded
        if m.outcome == "dead_lettered" and m.error is not None:
            where = f" at {m.error.location}" if m.error.location else ""
            return f"dead-lettered ({m.stage}){where}: {m.error.reason}"
        return unrendered if m.outcome == "dead_lettered" else ""

    def _settled(self, m: _Msg, ms: float) -> Settled:
        conv, error = m.conv, (m.error if m.outcome == "dead_lettered" else None)
        reason = error.reason if error else None
        if m.outcome == "duplicate":
            reason = "duplicate: already settled"
        elif m.outcome == "filtered" and m.decision is not None:
            reason = "no route matched"
        elif m.receipt is not None:
            reason = m.receipt.summary()
        refused = m.outcome == "receipt" and m.receipt is not None and not m.receipt.accepted and not m.receipt_again
        unmatched = m.outcome == "receipt" and m.unmatched and not m.receipt_again
        return Settled(conv.control_id, conv.message_type, conv.sender, conv.patient_key, m.outcome or "dead_lettered", ms, m.stage if error else None, reason,
                       tuple(conv.unmapped), refused, unmatched)

    def _with_record(self, call: Callable[[], Any]) -> Any:
        """Run *call* against the record, waiting out an outage with capped exponential backoff.

        The deliveries stay unacked meanwhile, so order per patient holds and
        nothing is requeued behind later messages. Each outage is reported once to
        *on_outage*: waited out here, it never reaches the engine's reconnect loop, and
        `helsebro_reconnects_total` (the runbook's "the record keeps going away") stayed 0.
        """
        delay, counted = _FIRST_RETRY_SECONDS, False
        while True:
            try:
                return call()
            except RecordUnavailable as exc:
                if not counted:
                    self._on_outage()
                    counted = True
                self._log.warning("record_unavailable", error=type(exc).__name__, retry_in_s=delay)
                if self._wait(delay):
                    raise  # stopping: leave the deliveries unacked for the next run
                delay = min(delay * 2, self._max_backoff)

    def _wait(self, seconds: float) -> bool:
        return wait_alive(self._stop, seconds, self._on_wait)

    def _answered_before(self, conv: Converted) -> bool:
        if self._guard is None or not conv.control_id or conv.envelope is None:
            return False
        recipients = _recipient_keys(conv)
        return bool(recipients) and all(self._guard.contains(conv.control_id, recipient=r) for r in recipients)

    def _claimed_in_batch(self, conv: Converted, claimed: set[tuple[str, str]]) -> bool:
        """Tell whether an earlier message of this batch answers every recipient of *conv*'s MsgId; claim them if not.

        The guard learns a MsgId only after the batch's AppRecs are confirmed (_remember), so two copies
        that arrive together would both pass it and both be answered; HITS 1168 §5.4 wants one AppRec
        per recipient. Claims what _remember will record, so a copy in the next batch is judged alike.
        """
        if self._guard is None or not conv.control_id or conv.envelope is None:
            return False
        pairs = {(conv.control_id, r) for r in _recipient_keys(conv)}
        if pairs and pairs <= claimed:
            return True
        claimed.update(pairs)
        return False


def _recipient_keys(conv: Converted) -> list[str]:
    """The duplicate guard's recipient for each recipient of a KITH message: its HER-id, else its role (PRIM, COP)."""
    return [p.her_id or p.role for p in conv.envelope.recipients] if conv.envelope is not None else []


def _outcome_for(error: MessageError) -> FhirJson:
    severity = "fatal" if isinstance(error, InternalFailure) else "error"
    issue: FhirJson = {"severity": severity, "code": error.issue_code, "diagnostics": error.reason}
    detail = getattr(error, "detail", None)
    if detail:
        issue["details"] = {"text": detail}  # a record server's own words (Refused.detail): with the letter, not in logs
    if error.location:
        issue["expression"] = [error.location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
