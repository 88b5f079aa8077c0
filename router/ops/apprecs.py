"""Count, per KITH destination, the messages Helsebro sent whose AppRec is overdue: `status` and the metrics share this count.

FACTS §10: a sender follows up a message its receiver has not answered with an
AppRec after 96 hours. The list is `helsebro find --awaiting-apprec`'s own
(router.ops.trail.find_messages), so `find`, `status` and the metric
`helsebro_apprecs_overdue` never disagree about which messages are overdue.

A message applied but dead-lettered at render was never sent; only its dead
letter says so. Without a broker *connection* (the metrics: reading a
dead-letter queue takes every message in it and gives it back, raising each
one's delivery count, which is no thing to do every minute) or when the
engine's dead-letter queue is not read, such a message may be counted:
`dead_letters_read` and `complete` say so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.errors import HelsebroError

if TYPE_CHECKING:
    from kombu import Connection

    from router.settings import Settings

__all__ = ["APPREC_OVERDUE_S", "OverdueCount", "overdue_apprecs"]

APPREC_OVERDUE_S = 96 * 3600.0
"""FACTS §10: a sender follows up a message still unanswered after 96 hours (status's and run's default --apprec-overdue)."""


@dataclass(frozen=True, slots=True)
class OverdueCount:
    """One KITH destination's overdue messages; *overdue* None when the record cannot be read."""

    destination: str
    overdue: int | None
    complete: bool  # False: the journal read stopped at its limit, or the dead letters were not read
    dead_letters_read: bool


def overdue_apprecs(settings: Settings, overdue_after: float, *, connection: Connection | None = None,
                    scan_limit: int = 10_000, readable: bool = True) -> list[OverdueCount]:
    """Per KITH destination Helsebro renders for, the messages sent there at least *overdue_after* seconds ago still without an AppRec.

    *connection* lets the engine's dead-letter queue be read (up to *scan_limit* messages), so that a
    message dead-lettered at render is not counted; *readable* False (the caller found the record
    away) skips the record, and every count is None. Empty when no destination is fed KITH.
    """
    from router.ops.trail import find_messages

    kith = settings.routes.rendered_kith()
    if not kith:
        return []
    counts: dict[str, int | None] = dict.fromkeys(kith)
    cut: set[str] = set()
    letters_read = connection is not None
    if readable:
        try:
            # find's own list, so the two never disagree; no limit on what it returns, only on what it reads
            trail = find_messages(settings, awaiting_apprec=overdue_after, connection=connection, scan_limit=scan_limit, limit=sys.maxsize)
        except HelsebroError:
            letters_read = True  # the record is away: the counts stay null, and say nothing of dead letters
        else:
            counts = dict.fromkeys(kith, 0)
            for entry in trail.journal:
                for handover in trail.handovers_of(entry):
                    if handover.awaits_receipt and handover.receipt is None and handover.name in counts:
                        counts[handover.name] = (counts[handover.name] or 0) + 1
            cut = {name for name, _read in trail.scans_cut}
            own = settings.engine.broker.names.dead_letter
            letters_read = letters_read and not any(queue == own for queue, _why in trail.queues_skipped)
    else:
        letters_read = True  # nothing was counted: nothing to be unsure of
    return [OverdueCount(name, counts[name], name not in cut and letters_read, letters_read) for name in kith]
