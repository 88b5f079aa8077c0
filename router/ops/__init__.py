"""Operator tools behind `helsebro status` and `helsebro dlq`: queue numbers, dead letters, the audit log.

Parsing arguments, asking for confirmation and printing belong to router/cli/.
"""

from __future__ import annotations

from router.ops.audit import AuditLog, operator_identity
from router.ops.deadletters import ActionResult, Browse, DeadLetter, LetterFilter, ReasonCount, browse, find, purge, replay, summarise
from router.ops.stats import (
    QueueRole,
    QueueStats,
    WatchedQueue,
    broker_location,
    dead_letter_queues,
    is_not_found,
    queue_stats,
    record_location,
    redact_url,
    watched_queues,
)

__all__ = [
    "ActionResult",
    "AuditLog",
    "Browse",
    "DeadLetter",
    "LetterFilter",
    "QueueRole",
    "QueueStats",
    "ReasonCount",
    "WatchedQueue",
    "broker_location",
    "browse",
    "dead_letter_queues",
    "find",
    "is_not_found",
    "operator_identity",
    "purge",
    "queue_stats",
    "record_location",
    "redact_url",
    "replay",
    "summarise",
    "watched_queues",
]
