"""Find what became of a message, by its control id or its patient: the operator's `helsebro find`.

Two places know: the record's journal (SqlRecord.journal: every settled message
with its sender, type and outcome; an applied one with the resources and versions
it wrote, any other (duplicate, filtered, forwarded only to destinations other than
the record, dead-lettered) with a note saying why) and the dead-letter queues (each
refused message still waiting there, with its reason). A message in neither never
settled: it is still queued, or it never arrived.

For each destination besides the record a message was routed to, a third place
says how far it got: a legacy queue had it confirmed by the broker before the
message settled (unless a render dead letter for that destination is found); an
external FHIR server's delivery ledger marks when the server accepted it
(router.delivery.worker.delivered_key), else its dead letter is found in the
destination's dead-letter queue, else it is still pending (in the work queue, or
parked for a retry).

Everything here is safe to show: control ids, senders, hashed patient keys,
resource ids and reasons; never a body, a national id or a name.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from adapters.fhir.record import JournalEntry, open_record
from router.ops.deadletters import DeadLetter, browse
from router.ops.stats import dead_letter_queues

if TYPE_CHECKING:
    from kombu import Connection

    from adapters.fhir.record import SqlRecord
    from router.settings import Settings

__all__ = ["Handover", "HandoverState", "Trail", "find_messages", "merged_patient_keys", "merged_patient_keys_of_key"]

_AWAITING_SCAN = 20_000  # journal rows read per KITH destination for --awaiting-apprec
_MERGED_JOURNAL_ROWS = 200  # a key's newest journal rows read for the Patients they wrote (find --patient-key)
_MERGED_MOST = 50  # Patients followed along merge links from one number: a chain longer than any real person's


HandoverState = Literal["published", "delivered", "dead_lettered", "pending", "unknown"]
"""How far a message got at one destination besides the record (see the module's docstring)."""


@dataclass(frozen=True, slots=True)
class Handover:
    """One destination a journalled message was routed to besides the record, and how far it got there."""

    name: str
    kind: str  # queue, fhir, or unknown (no longer in routes.yaml)
    state: HandoverState
    at: float | None = None  # Unix time the server accepted it (delivered)
    receipt: JournalEntry | None = None  # a KITH receiver's newest AppRec for what Helsebro sent it (outcome `receipt`)
    awaits_receipt: bool = False  # Helsebro rendered and published a KITH message for it: its receiver answers with an AppRec

    @property
    def receipt_accepted(self) -> bool | None:
        """True for an AppRec OK (status 1 or 3), False for one that refused it, None when none came."""
        if self.receipt is None:
            return None
        return self.receipt.message_type.partition("^")[2] in ("1", "3")


@dataclass(slots=True)
class Trail:
    """What was found: the journal's messages (newest first) and dead letters per queue."""

    journal: list[JournalEntry]
    dead_letters: list[tuple[str, DeadLetter]] = field(default_factory=list)  # (queue, letter), in queue order
    listed: bool = False  # a list by outcome, sender or time: the dead-letter queues are not searched
    queues_read: list[str] = field(default_factory=list)
    queues_skipped: list[tuple[str, str]] = field(default_factory=list)  # (queue, why): unreadable, or longer than the scan limit
    handovers: dict[str, list[Handover]] = field(default_factory=dict)  # journal key → its destinations besides the record
    scans_cut: list[tuple[str, int]] = field(default_factory=list)  # --awaiting-apprec: (KITH destination, rows read) where the read stopped at its limit
    more: bool = False  # more messages matched than the limit: only the newest `limit` are in journal

    def handovers_of(self, entry: JournalEntry) -> list[Handover]:
        """The destinations besides the record *entry* was routed to, each with how far it got."""
        return self.handovers.get(entry.key, [])

    @property
    def applied(self) -> list[JournalEntry]:
        """The messages the record applied (whether or not they changed anything)."""
        return [e for e in self.journal if e.was_applied]

    @property
    def not_applied(self) -> list[JournalEntry]:
        """Duplicates, filtered, forwarded-only and dead-lettered messages, with their notes."""
        return [e for e in self.journal if not e.was_applied]

    @property
    def found(self) -> int:
        return len(self.journal) + len(self.dead_letters)


def find_messages(
    settings: Settings,
    *,
    awaiting_apprec: float | None = None,
    control_id: str | None = None,
    patient_key: str | None = None,
    sender: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    limit: int = 100,
    connection: Connection | None = None,
    scan_limit: int = 10_000,
    also_patient_keys: Sequence[str] = (),
) -> Trail:
    """Look messages up in the record's journal and, given a *connection* and a control id or patient key, the dead-letter queues.

    *awaiting_apprec* (seconds) lists instead the messages Helsebro rendered KITH for at
    least that long ago whose receiver has sent no AppRec yet (FACTS §10: follow up after
    96 hours), newest first, from the journal's newest 20,000 such rows per KITH destination
    (one dead-lettered at render there is left out: a forwarded one's note says so, an
    applied one's dead letter does, read given a *connection*).
    *sender*, *outcome* and *since* (Unix time) narrow the journal only, or list it by
    themselves (`helsebro dlq list` lists a queue); a dead letter that names no sender (refused before its
    sender was known: no MSH, no envelope) is kept under any *sender*. At most
    *limit* messages are kept, the newest; the trail's `more` says that more matched. A
    dead-letter queue holding more than *scan_limit* messages is not read (reading
    one means taking every message and giving it back) and is reported as skipped.
    *also_patient_keys*: the same person's other keys (merged_patient_keys), searched beside *patient_key*.

    Raises:
        ValueError: no criterion, or an unknown outcome.
        RecordUnavailable: the record cannot be reached.
    """
    kinds = {name: str(getattr(d, "kind", "unknown")) for name, d in settings.routes.destinations.items()}
    record = open_record(settings, create=False)
    try:
        if awaiting_apprec is not None:
            journal, receipts, cut = _awaiting(record, settings, time.time() - awaiting_apprec, _AWAITING_SCAN)
            trail = Trail(journal=journal, scans_cut=cut)
        else:
            # One more than asked: a patient's busy fortnight must say it was cut, not read as all there is.
            search = functools.partial(record.journal, control_id=control_id, sender=sender, outcome=outcome, since=since, limit=limit + 1)
            rows = search(patient_key=patient_key)
            if patient_key and also_patient_keys:  # one person under several numbers (merged_patient_keys)
                rows = _newest([rows, *(search(patient_key=k) for k in also_patient_keys)])[:limit + 1]
            trail = Trail(journal=rows[:limit], more=len(rows) > limit)
            receipts = _receipts(record, trail.journal, settings)
        marks = _delivery_marks(trail.journal, kinds)
        delivered = record.marked_at(list(marks.values())) if marks else {}
    finally:
        record.close()
    trail.listed = not (control_id or patient_key)
    searched = connection is not None and not trail.listed and outcome in (None, "dead_lettered")
    # Another outcome lists no dead letter, but a destination's state still depends on them: a refused delivery is not pending.
    needed = connection is not None and (not trail.listed or awaiting_apprec is not None) and _states_need_letters(trail.journal, kinds, marks, delivered)
    letters: list[tuple[str, DeadLetter]] = []
    if searched or needed:
        assert connection is not None  # noqa: S101 - checked just above
        letters = _read_dead_letters(trail, settings, connection, control_id, [patient_key, *also_patient_keys] if patient_key else [],
                                     sender, scan_limit, listed=searched)
    trail.handovers = _handovers(trail, letters, kinds, marks, delivered, receipts, settings.engine.broker.names.destination_prefix)
    if awaiting_apprec is not None:  # only what was published there (not dead-lettered at render) and is still unanswered
        waiting = [e for e in trail.journal if any(h.awaits_receipt and h.receipt is None for h in trail.handovers_of(e))]
        trail.journal, trail.more = waiting[:limit], len(waiting) > limit
        kept = {e.key for e in trail.journal}
        trail.handovers = {key: found for key, found in trail.handovers.items() if key in kept}
    return trail


def _awaiting(record: SqlRecord, settings: Settings, until: float,
              scan_limit: int) -> tuple[list[JournalEntry], dict[tuple[str, str], JournalEntry | None], list[tuple[str, int]]]:
    """The journalled messages settled before *until* routed to a KITH destination whose AppRec has not come, newest first
    (find_messages keeps those that were published there, then the limit), with their receipts as _receipts gives them,
    and the destinations whose read stopped at *scan_limit* rows (older messages there were not looked at)."""
    sent: dict[str, JournalEntry] = {}
    cut: list[tuple[str, int]] = []
    for name in settings.routes.rendered_kith():
        rows = record.journal(destination=name, until=until, limit=scan_limit + 1)  # one more: was there more?
        if len(rows) > scan_limit:
            rows = rows[:scan_limit]
            cut.append((name, scan_limit))
        sent.update((e.key, e) for e in rows)
    entries = sorted(sent.values(), key=lambda e: (-e.applied_at, e.key))
    answered = _receipts(record, entries, settings)
    waiting = {key for (key, _name), receipt in answered.items() if receipt is None}
    return [e for e in entries if e.key in waiting and e.outcome != "receipt"], answered, cut


def _receipts(record: SqlRecord, journal: list[JournalEntry], settings: Settings) -> dict[tuple[str, str], JournalEntry | None]:
    """(journal key, destination) → the newest AppRec journalled for what Helsebro rendered for that KITH destination (None: none yet).

    An AppRec counts only when its sender is the destination's receiver_her_id (when it names one): another party's
    AppRec naming the same OriginalMsgId (misrouted, or forged) answers nothing Helsebro sent it."""
    from adapters.kith.render import outbound_msg_id
    from router.routing.model import QueueDestination

    names = settings.routes.rendered_kith()
    kith = {n: d for n, d in settings.routes.destinations.items() if n in names and isinstance(d, QueueDestination)}
    # (journal key, destination) → the MsgIds Helsebro gave what it rendered: the one with the source's content
    # digest, then the one without, which what was rendered before session 25 carries (render.outbound_msg_id)
    sent: dict[tuple[str, str], tuple[str, ...]] = {}
    receivers: dict[str, str] = {}  # that MsgId → the HER-id it went to: only that party's AppRec answers it
    for e in journal:
        for name in e.destinations if e.control_id else ():
            dest = kith.get(name)
            if dest is not None and dest.mapping:
                parts = (e.sender, e.control_id, dest.mapping, dest.receiver_her_id or name)
                content = _content_of(e.key)
                ids = sent[(e.key, name)] = (outbound_msg_id(*parts, content=content), outbound_msg_id(*parts)) if content else (outbound_msg_id(*parts),)
                if dest.receiver_her_id:
                    receivers.update(dict.fromkeys(ids, dest.receiver_her_id))
    found = record.receipts([i for ids in sent.values() for i in ids], from_senders=receivers) if sent else {}
    return {where: next((r for i in ids if (r := found.get(i)) is not None), None) for where, ids in sent.items()}


def _states_need_letters(journal: list[JournalEntry], kinds: dict[str, str], marks: dict[tuple[str, str], str], delivered: dict[str, float]) -> bool:
    """True when a destination's state in *journal* depends on the dead letters: a legacy queue, or a server that has not accepted it."""
    return any(kinds.get(d) == "queue" or (kinds.get(d) == "fhir" and marks.get((e.key, d)) not in delivered)
               for e in journal for d in e.destinations)


def _delivery_marks(journal: list[JournalEntry], kinds: dict[str, str]) -> dict[tuple[str, str], str]:
    """(journal key, destination) → the ledger mark of its delivery, for each external FHIR destination of a message with a control id."""
    from router.delivery.forward import forward_id_of
    from router.delivery.worker import delivered_key

    return {
        (e.key, d): delivered_key(d, forward_id_of(e.sender, e.control_id, d, content=_content_of(e.key)))
        for e in journal if e.control_id
        for d in e.destinations if kinds.get(d) == "fhir"
    }


def _handovers(trail: Trail, letters: list[tuple[str, DeadLetter]], kinds: dict[str, str], marks: dict[tuple[str, str], str],
               delivered: dict[str, float], receipts: dict[tuple[str, str], JournalEntry | None], prefix: str) -> dict[str, list[Handover]]:
    from router.delivery.forward import forward_id_of

    out: dict[str, list[Handover]] = {}
    for e in trail.journal:
        found: list[Handover] = []
        for name in e.destinations:
            kind = kinds.get(name, "unknown")
            if kind == "queue":
                rendered = not (_render_failed_in_note(e.note, name) or any(
                    d.stage == "render" and d.control_id == e.control_id and d.headers.get("x-helsebro-destination") == name
                    and d.headers.get("x-helsebro-sender", e.sender) == e.sender  # a control id is unique per sender only
                    for _q, d in letters))
                state: HandoverState = "published" if rendered else "dead_lettered"
                if (e.key, name) in receipts:  # KITH Helsebro rendered: an AppRec is due once it was sent
                    found.append(Handover(name, kind, state, receipt=receipts[(e.key, name)], awaits_receipt=rendered))
                else:
                    found.append(Handover(name, kind, state))
            elif kind == "fhir" and (mark := marks.get((e.key, name))) is not None:
                if mark in delivered:
                    found.append(Handover(name, kind, "delivered", delivered[mark]))
                    continue
                letter_id = forward_id_of(e.sender, e.control_id, name, content=_content_of(e.key))
                waiting = any(q == f"{prefix}.{name}.dlq" and d.id == letter_id for q, d in letters)
                found.append(Handover(name, kind, "dead_lettered" if waiting else "pending"))
            else:
                found.append(Handover(name, kind, "unknown"))
        if found:
            out[e.key] = found
    return out


_KEY_CONTENT = re.compile(r"\|([0-9a-f]{24})(?:\|[a-z_]+)?$")


def _content_of(key: str) -> str:
    """The hash of the message's bytes in a journal key (router.pipeline.settle.applied_key, then `|outcome` when not
    applied), which its forward ids carry (router.delivery.forward.content_digest); "" when the key has none."""
    m = _KEY_CONTENT.search(key)
    return m.group(1) if m else ""


def _render_failed_in_note(note: str | None, name: str) -> bool:
    """True when a journal note (router.pipeline.settle.Settle._note) says the message was dead-lettered at render for *name*."""
    return bool(note) and re.search(rf"dead-lettered \(render\) for {re.escape(name)}(?: at |: )", note or "") is not None


def _read_dead_letters(trail: Trail, settings: Settings, connection: Connection, control_id: str | None, patient_keys: Sequence[str],
                       sender: str | None, scan_limit: int, *, listed: bool = True) -> list[tuple[str, DeadLetter]]:
    """The dead letters with *control_id* or one of *patient_keys* (and not another *sender*'s); *listed*: also shown as the trail's
    dead letters, with the queues read."""
    from adapters.amqp.connection import queue_depth
    from router.errors import BrokerUnavailable

    found: list[tuple[str, DeadLetter]] = []
    for queue in dead_letter_queues(settings):
        try:
            depth = queue_depth(connection, queue)
            if depth > scan_limit:
                trail.queues_skipped.append((queue, f"{depth} messages wait, more than the scan limit {scan_limit}"))
                continue
            letters = browse(connection, queue).letters
        except BrokerUnavailable as exc:
            trail.queues_skipped.append((queue, str(exc)))
            continue
        if listed:
            trail.queues_read.append(queue)
        found += [(queue, d) for d in letters if _matches(d, control_id, patient_keys, sender)]
    if listed:
        trail.dead_letters += found
    return found


def _matches(letter: DeadLetter, control_id: str | None, patient_keys: Sequence[str], sender: str | None) -> bool:
    """Whether *letter* is one searched for. A dead letter names its sender when it was known (x-helsebro-sender): under
    --sender, another sender's letter with the same control id is not this one's. One that names none may be."""
    named = letter.headers.get("x-helsebro-sender")
    return ((not control_id or letter.control_id == control_id) and (not patient_keys or letter.patient_key in patient_keys)
            and (not sender or not named or named == sender))


def _newest(found: Iterable[list[JournalEntry]]) -> list[JournalEntry]:
    """The journal rows of several searches as one, each row once, newest first (as SqlRecord.journal orders one search)."""
    rows = {e.key: e for batch in found for e in batch}
    return sorted(rows.values(), key=lambda e: (-e.applied_at, e.key))


def merged_patient_keys(settings: Settings, system: str, value: str) -> list[str]:
    """The person's other keys: those of the Patient *system*|*value* finds and of the records merges joined to it (A34, A40).

    A message is journalled under the key of the number it named: after B was merged into A, B's
    earlier messages sit under B's key and A's (the merge's too) under A's. Searched by one number
    alone, `find` showed half of the person's trail, and said nothing of the other half. The
    record knows the rest: the survivor keeps the merged numbers (`use: old`) and both Patients
    link each other (`replaces`, `replaced-by`), so every identifier of every Patient reached from
    the number along those links keys this person's messages too (and an A47's old number, kept
    `use: old` on the one Patient). Only keys leave here; the identifiers are read and dropped.
    Empty when the record holds no Patient with the number.

    Raises:
        RecordUnavailable: the record cannot be reached.
    """
    from router.pipeline.convert import patient_key_for

    record = open_record(settings, create=False)
    try:
        patients = _reached(record, {str(p.get("id")): p for p in record.search("Patient", {"identifier": f"{system}|{value}"})})
    finally:
        record.close()
    return _keys_of(patients, patient_key_for(system, value, settings.phi_key_bytes), settings)


def merged_patient_keys_of_key(settings: Settings, patient_key: str) -> list[str]:
    """The person's other keys, from one of their keys (`find --patient-key`), as merged_patient_keys finds them from a number.

    A key is a hash: the record cannot be searched by it. The journal can: the messages settled under
    the key name the Patients they wrote, and those whose identifiers hash (or once hashed) to the key
are the person's;
    from them the merge links and the other identifiers are followed as from a number. Before,
    `--patient-key` searched its one key, so by a merged-away number's key the trail read as
    ending at the merge. Empty when no message under the key wrote a Patient the record still holds.

    Raises:
        RecordUnavailable: the record cannot be reached.
    """
    record = open_record(settings, create=False)
    try:
        written = dict.fromkeys(rid for entry in record.journal(patient_key=patient_key, limit=_MERGED_JOURNAL_ROWS)
                                for type_, rid, _, _ in entry.resources if type_ == "Patient")
        # A Patient is the person's when one of its versions held an identifier of this key: a merged-away
        # record's current version holds none (the survivor took them), and a message with several
        # patients (a group of PATIENT_RESULTs) wrote others' Patients under its first patient's key.
        own = {pid: p for pid in written if (p := record.read("Patient", pid)) is not None and any(
            not v.deleted and patient_key in _keys_of({pid: v.resource}, "", settings) for v in record.versions("Patient", pid))}
        patients = _reached(record, own)
    finally:
        record.close()
    return _keys_of(patients, patient_key, settings)


def _reached(record: SqlRecord, patients: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """*patients* and every Patient reached from them along merge links (at most _MERGED_MOST)."""
    todo = [other for p in patients.values() for other in _linked(p)]
    while todo and len(patients) < _MERGED_MOST:
        pid = todo.pop()
        if pid in patients:
            continue
        found = record.read("Patient", pid)
        if found is not None:
            patients[pid] = found
            todo += _linked(found)
    return patients


def _keys_of(patients: dict[str, dict[str, Any]], own: str, settings: Settings) -> list[str]:
    """The keys of every identifier of *patients* but *own*; only keys leave, the identifiers are dropped."""
    from router.pipeline.convert import patient_key_for

    keys = (patient_key_for(i["system"], i["value"], settings.phi_key_bytes) for p in patients.values() for i in p.get("identifier", ())
            if isinstance(i, dict) and i.get("system") and i.get("value"))
    return [k for k in dict.fromkeys(keys) if k != own]


def _linked(patient: dict[str, Any]) -> list[str]:
    """The ids of the Patients *patient* replaces or is replaced by (its merge links)."""
    refs = (link.get("other", {}).get("reference", "") for link in patient.get("link", ()) if isinstance(link, dict)
            and link.get("type") in ("replaces", "replaced-by"))
    return [ref.partition("/")[2] for ref in refs if ref.startswith("Patient/")]
