"""Remember which MsgIds were answered, so a message received again gets no second AppRec.

Owns the duplicate rule of HITS 1168 §5.4 and HITS 1216 §2.2: a business
message with a MsgId seen before is not processed again and gets no AppRec;
but when one message reaches several recipients in our organisation, each
recipient answers once, so the key is (MsgId, recipient). The engine keeps
these rows in its store of settled message ids (SeenStoreDuplicateGuard: the
record's database with PostgreSQL, so several workers share them); the SQLite
guard serves one process with no engine (tools, tests). Anything with
``seen_before`` fits the ``DuplicateGuard`` protocol.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from adapters.kith.apprec import AppRecMessage
from router.errors import RecordUnavailable

__all__ = ["DuplicateGuard", "DuplicateGuardConfig", "SeenStoreDuplicateGuard", "SqliteDuplicateGuard", "unanswered"]


class DuplicateGuard(Protocol):
    """Says whether a (MsgId, recipient) pair was seen, and remembers it."""

    def seen_before(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Record the pair; return True when it was already recorded within the window."""
        ...


class DuplicateGuardConfig(BaseModel):
    """The `kith.duplicates` block: how long a MsgId is remembered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(
        default=30, ge=1, le=3650,
        description="Days a MsgId is remembered. A copy arriving later is treated as new and answered "
        "again; a longer window costs one small row per message for longer. Senders treat a missing "
        "AppRec as an error after 4 days (HIS 80415:2012 §3.2), so resends come well inside 30 days.",
    )
    file_name: str = Field(
        default="kith-msgids.sqlite3",
        description="SQLite file under HELSEBRO_DATA_DIR that holds the remembered MsgIds.",
        examples=["kith-msgids.sqlite3"],
    )


class SqliteDuplicateGuard:
    """A DuplicateGuard in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: Path, *, window_days: int = 30) -> None:
        self._path = path  # no I/O here: the file is opened on first use
        self._window = timedelta(days=window_days)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path, config: DuplicateGuardConfig | None = None) -> SqliteDuplicateGuard:
        """Build the guard for HELSEBRO_DATA_DIR."""
        cfg = config or DuplicateGuardConfig()
        return cls(data_dir / cfg.file_name, window_days=cfg.window_days)

    def seen_before(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Record (msg_id, recipient); True when it was recorded less than the window ago.

        Raises:
            RecordUnavailable: the SQLite file cannot be opened or written.
        """
        moment = (now or datetime.now(UTC)).timestamp()
        cutoff = moment - self._window.total_seconds()
        try:
            with self._lock:
                conn = self._connect()
                with conn:  # one transaction: forget the expired, then claim the pair
                    conn.execute("DELETE FROM seen WHERE seen_at < ?", (cutoff,))
                    inserted = conn.execute(
                        "INSERT OR IGNORE INTO seen (msg_id, recipient, seen_at) VALUES (?, ?, ?)",
                        (msg_id, recipient, moment),
                    ).rowcount
        except (sqlite3.Error, OSError) as exc:
            raise RecordUnavailable(f"duplicate guard {self._path.name}: {exc}") from exc
        return inserted == 0

    def contains(self, msg_id: str, *, recipient: str = "", now: datetime | None = None) -> bool:
        """Tell whether (msg_id, recipient) was recorded within the window, without recording it.

        The engine peeks before applying and records only after the AppRec is
        durably published, so a crash in between answers again rather than never.

        Raises:
            RecordUnavailable: the SQLite file cannot be read.
        """
        cutoff = (now or datetime.now(UTC)).timestamp() - self._window.total_seconds()
        try:
            with self._lock:
                row = self._connect().execute("SELECT 1 FROM seen WHERE msg_id = ? AND recipient = ? AND seen_at >= ?", (msg_id, recipient, cutoff)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise RecordUnavailable(f"duplicate guard {self._path.name}: {exc}") from exc
        return row is not None

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seen (msg_id TEXT NOT NULL, recipient TEXT NOT NULL, "
                "seen_at REAL NOT NULL, PRIMARY KEY (msg_id, recipient))"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at)")
            self._conn = conn
        return self._conn


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


def unanswered(guard: DuplicateGuard, apprecs: list[AppRecMessage], *, now: datetime | None = None) -> list[AppRecMessage]:
    """Keep the AppRecs whose (original MsgId, answering recipient) the guard has not seen.

    An AppRec without an original MsgId (nothing could be read) is always kept:
    there is nothing to recognise it by.
    """
    keep = []
    for index, apprec in enumerate(apprecs):
        recipient = apprec.sender_her_id or f"{apprec.role}:{index}"  # no HER-id: the position tells them apart
        if not apprec.original_msg_id or not guard.seen_before(apprec.original_msg_id, recipient=recipient, now=now):
            keep.append(apprec)
    return keep
