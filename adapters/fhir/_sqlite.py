"""The record in one SQLite file: the embedded default, no server needed.

Writers serialise on `BEGIN IMMEDIATE` (the file's write lock), so two processes
cannot both conditionally create one identity; WAL lets readers run beside a writer.
Before it, a writer takes an `flock` on `<file>-writer.lock`: SQLite's own busy
handler polls with sleeps of 1, 2, 5 … 100 ms, so two busy workers would wait
far longer than the other's transaction lasts; the kernel wakes an flock
waiter the moment the lock is released.
"""

from __future__ import annotations

import fcntl
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import orjson

from adapters.fhir._store import SCHEMA, SqlRecord
from adapters.fhir._transaction import Db
from router.contracts import FhirJson
from router.errors import RecordUnavailable


class _SqliteDb:
    """A transaction's view of the connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, args).fetchall()

    def execute(self, sql: str, args: Sequence[Any]) -> None:
        self._conn.execute(sql, args)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


class SqliteRecord(SqlRecord):
    """The record in a SQLite file, created with its schema on open."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        """Open (creating if needed) the record at *path*.

        Args:
            busy_timeout: seconds a writer waits for another's lock before the
                apply fails with RecordUnavailable.

        Raises:
            RecordUnavailable: the file cannot be created, opened or migrated.
        """
        super().__init__()
        self._writer_lock: Any = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer_lock = open(path.with_name(path.name + "-writer.lock"), "ab")  # noqa: SIM115  # held for the record's life
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread is
            # off because the record's own lock serialises use across threads.
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            if self._writer_lock is not None:
                self._writer_lock.close()
            raise RecordUnavailable("cannot open the SQLite record") from exc
        try:
            # Switching to WAL takes the file's lock without waiting on the busy
            # handler, so it runs under the writer flock like every write.
            fcntl.flock(self._writer_lock.fileno(), fcntl.LOCK_EX)
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
            finally:
                fcntl.flock(self._writer_lock.fileno(), fcntl.LOCK_UN)
            # NORMAL in WAL mode: a commit survives a process crash; only an OS crash
            # can lose the last transactions, never corrupt the file.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._transaction([]):
                for statement in SCHEMA:
                    self._conn.execute(statement.format(body="TEXT"))
        except (sqlite3.Error, RecordUnavailable) as exc:
            self._conn.close()
            self._writer_lock.close()
            raise RecordUnavailable("cannot prepare the SQLite record") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
            if self._writer_lock is not None:
                self._writer_lock.close()

    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise RecordUnavailable("SQLite record read failed") from exc

    @contextmanager
    def _transaction(self, keys: list[int]) -> Iterator[Db]:
        # The file lock taken by BEGIN IMMEDIATE covers every identity, so *keys* are unused.
        if self._writer_lock is not None:
            fcntl.flock(self._writer_lock.fileno(), fcntl.LOCK_EX)
        try:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise RecordUnavailable("SQLite record is busy") from exc
            try:
                yield _SqliteDb(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise RecordUnavailable("SQLite record write failed") from exc
            except BaseException:
                self._rollback()
                raise
        finally:
            if self._writer_lock is not None:
                fcntl.flock(self._writer_lock.fileno(), fcntl.LOCK_UN)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is already gone; nothing was committed

    def _decode(self, body: Any) -> FhirJson:
        decoded: FhirJson = orjson.loads(body)
        return decoded
