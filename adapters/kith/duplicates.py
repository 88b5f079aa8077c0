"""Remember which MsgIds were answered, so a message received again gets no second AppRec.

Owns the duplicate rule of HITS 1168 §5.4 and HITS 1216 §2.2: a business
message with a MsgId seen before is not processed again and gets no AppRec;
but when one message reaches several recipients in our organisation, each
recipient answers once, so the key is (MsgId, recipient). The engine keeps
these rows in its store of settled message ids (SeenStoreDuplicateGuard: the
record's database with PostgreSQL, so several workers share them). Anything
with ``seen_before`` fits the ``DuplicateGuard`` protocol.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

__all__ = ["DuplicateGuard", "SeenStoreDuplicateGuard"]


class DuplicateGuard(Protocol):
    """Says whether a (MsgId, recipient) pair was seen, and remembers it."""

    def seen_before(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Record the pair; return True when it was already recorded within the window."""
        ...


class SeenStoreDuplicateGuard:
    """A DuplicateGuard over the engine's store of settled message ids (`seen`/`remember`).

    With PostgreSQL that store is the record's database, so every worker, on
    every machine, shares one memory of answered MsgIds; with SQLite it is the
    data directory's seen-store, shared by the workers of one machine.
    """

    def __init__(self, store: Any, *, window_days: int = 30) -> None:
        self._store = store  # anything with seen(keys, window_seconds=) and remember(keys, window_seconds=)
        self._window = float(timedelta(days=window_days).total_seconds())

    @staticmethod
    def _key(msg_id: str, recipient: str) -> str:
        return f"kith|{recipient}|{msg_id}"

    def contains(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Tell whether (msg_id, recipient) was recorded within the window, without recording it.

        Raises:
            RecordUnavailable: the store cannot be read.
        """
        key = self._key(msg_id, recipient)
        return key in self._store.seen([key], window_seconds=self._window)

    def seen_before(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Record (msg_id, recipient); True when it was already recorded within the window.

        Raises:
            RecordUnavailable: the store cannot be read or written.
        """
        key = self._key(msg_id, recipient)
        known = key in self._store.seen([key], window_seconds=self._window)
        if not known:
            self._store.remember([key], window_seconds=self._window)
        return known

    def close(self) -> None:
        """Nothing to close: the store belongs to the engine."""
