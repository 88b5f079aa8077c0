"""Find what became of a message, by its control id or its patient: the operator's `helsebro find`.

Two places know: the record's journal (SqlRecord.journal: every settled message
with its sender, type and outcome; an applied one with the resources and versions
it wrote, any other (duplicate, filtered, forwarded only to destinations other than
the record, dead-lettered) with a note saying why) and the dead-letter queues (each
refused message still waiting there, with its reason). A message in neither never
settled: it is still queued, or it never arrived.

Everything here is safe to show: control ids, senders, hashed patient keys,
resource ids and reasons; never a body, a national id or a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapters.fhir.record import JournalEntry, open_record
from router.ops.deadletters import DeadLetter, browse
from router.ops.stats import dead_letter_queues

if TYPE_CHECKING:
    from kombu import Connection

    from router.settings import Settings

__all__ = ["Trail", "find_messages"]


@dataclass(slots=True)
class Trail:
    """What was found: the journal's messages (newest first) and dead letters per queue."""

    journal: list[JournalEntry]
    dead_letters: list[tuple[str, DeadLetter]] = field(default_factory=list)  # (queue, letter), in queue order
    listed: bool = False  # a list by outcome, sender or time: the dead-letter queues are not searched
    queues_read: list[str] = field(default_factory=list)
    queues_skipped: list[tuple[str, str]] = field(default_factory=list)  # (queue, why): unreadable, or longer than the scan limit

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
    control_id: str | None = None,
    patient_key: str | None = None,
    sender: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    limit: int = 100,
    connection: Connection | None = None,
    scan_limit: int = 10_000,
) -> Trail:
    """Look messages up in the record's journal and, given a *connection* and a control id or patient key, the dead-letter queues.

    *sender*, *outcome* and *since* (Unix time) narrow the journal only, or list it by
    themselves (a dead letter names no sender; `helsebro dlq list` lists a queue). A
    dead-letter queue holding more than *scan_limit* messages is not read (reading
    one means taking every message and giving it back) and is reported as skipped.

    Raises:
        ValueError: no criterion, or an unknown outcome.
        RecordUnavailable: the record cannot be reached.
    """
    record = open_record(settings)
    try:
        trail = Trail(journal=record.journal(control_id=control_id, patient_key=patient_key, sender=sender, outcome=outcome, since=since, limit=limit))
    finally:
        record.close()
    trail.listed = not (control_id or patient_key)
    if connection is None or trail.listed or outcome not in (None, "dead_lettered"):
        return trail
    from adapters.amqp.connection import queue_depth
    from router.errors import BrokerUnavailable

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
        trail.queues_read.append(queue)
        trail.dead_letters += [(queue, d) for d in letters if _matches(d, control_id, patient_key)]
    return trail


def _matches(letter: DeadLetter, control_id: str | None, patient_key: str | None) -> bool:
    return (not control_id or letter.control_id == control_id) and (not patient_key or letter.patient_key == patient_key)
