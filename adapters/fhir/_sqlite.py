"""The record in one SQLite file: the embedded default, no server needed.

Writers serialise on `BEGIN IMMEDIATE` (the file's write lock), so two processes
cannot both conditionally create one identity; WAL lets readers run beside a writer.
Before it, a writer takes an `flock` on `<file>-writer.lock`: SQLite's own busy
handler polls with sleeps of 1, 2, 5 … 100 ms, so two busy workers would wait
far longer than the other's transaction lasts; the kernel wakes an flock
waiter the moment the lock is released.

Checkpoints are not done by COMMIT (SQLite's automatic checkpoint would copy and
fsync inside it, under that lock): a WalCheckpointer thread does them, and the
writer only steps in when the log passes `wal_limit` (see _checkpoint.py).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from adapters.fhir._checkpoint import WalCheckpointer
from adapters.fhir._store import SCHEMA_VERSION, SqlRecord, prepare_schema, schema_version
from adapters.fhir._transaction import Db
from router.contracts import FhirJson
from router.errors import ConfigError, RecordUnavailable
from router.logging import get_logger

WAL_LIMIT = 64 * 1024 * 1024
"""Bytes of write-ahead log past which a writer checkpoints in line, as SQLite's own automatic checkpoint
would: the bound on the log when the checkpointer is failing or always overtaken."""

_CHUNK = 300  # keys per VALUES list in query_keys


def _read_only(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection that reads the SQLite file at *path* and never writes to it, nor beside it.

    `mode=ro` alone is not that: on a WAL file it makes `-wal` and `-shm` beside the file, and
    leaves them there owned by whoever ran the verb (the engine's user may then not write
    them), or cannot open the file at all in a folder it may not write (SQLITE_READONLY_DIRECTORY).
    So with no `-wal` there (no process has the record open, and every commit is in the file)
    it reads the file as `immutable`: no lock, no files made. The engine could start meanwhile;
    its commits go to a new log, not into the file, until its first checkpoint (at least
    _checkpoint.py's interval later), and a read verb's reads are far shorter (one that was not
    could read wrong or fail, and is run again; the record is never changed). With a `-wal`
    there, a writer may be at work: `mode=ro` reads the log too, through the files it finds;
    so it does with a `-journal` there (a rollback-mode writer's, maybe hot), which `immutable`
    would ignore.
    """
    uri = path.resolve().as_uri() + "?mode=ro"
    if not any(path.with_name(path.name + end).exists() for end in ("-wal", "-journal")):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def tables_in(path: Path) -> set[str] | None:
    """The names of the tables in the SQLite file at *path*, read without writing to it; None when it is no SQLite database.

    Read-only, so looking does not change a file that turns out to be another
    application's: the read-only verbs check this before they open the record.

    Raises:
        RecordUnavailable: the file cannot be opened or read (no permission, locked).
    """
    try:
        conn = _read_only(path)
    except sqlite3.Error as exc:
        raise RecordUnavailable("cannot open the SQLite record") from exc
    try:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB:
            return None
        raise RecordUnavailable("cannot read the SQLite record") from exc
    finally:
        conn.close()


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

    def query_keys(self, keys: Sequence[tuple[str, ...]], width: int, sql: str) -> list[tuple[Any, ...]]:
        # A joined VALUES list, not `(a, b) IN (…)`: the planner then probes the index once per row
        # instead of scanning. In chunks, well under SQLite's bound-parameter limit.
        rows: list[tuple[Any, ...]] = []
        row = "(" + ", ".join("?" for _ in range(width)) + ")"
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            rows.extend(self._conn.execute(sql.format("VALUES " + ", ".join(row for _ in chunk)), [v for key in chunk for v in key]).fetchall())
        return rows

    def query_keys_later(self, keys: Sequence[tuple[str, ...]], width: int, sql: str) -> Callable[[], list[tuple[Any, ...]]]:
        rows = self.query_keys(keys, width, sql)  # in process: nothing to overlap
        return lambda: rows

    def new_rids(self, n: int) -> Sequence[int]:
        # The writer holds the file's write lock: nobody else takes keys meanwhile.
        start = int(self._conn.execute("SELECT coalesce(max(rid), 0) FROM fhir_resource").fetchone()[0]) + 1
        return range(start, start + n)


class SqliteRecord(SqlRecord):
    """The record in a SQLite file, created with its schema on open."""

    # SQLite's file lock covers every identity: the apply skips computing advisory-lock keys.
    uses_lock_keys = False

    def __init__(self, path: Path, *, busy_timeout: float = 10.0, checkpoint_interval: float = 0.5, wal_limit: int = WAL_LIMIT,
                 create: bool = True) -> None:
        """Open (creating if needed) the record at *path*.

        `create=False` (the read-only verbs) opens an existing record read-only: nothing
        is written to the file or made beside it (no lock file, no WAL switch, no schema),
        so a file chmod 444 in a folder the verb may not write is read all the same; its
        writes fail with RecordUnavailable. A record of an older schema is not migrated
        there: that is refused, telling the operator to run the engine, which migrates it.

        Args:
            busy_timeout: seconds a writer waits for another's lock before the
                apply fails with RecordUnavailable.
            checkpoint_interval: least seconds between two background checkpoints.
            wal_limit: bytes of log past which a commit is followed by a checkpoint in line.

        Raises:
            RecordUnavailable: the file cannot be created, opened or migrated; with
                `create=False`, it holds a record of another schema version.
        """
        super().__init__()
        self._writer_lock: Any = None
        self._wal_path = path.with_name(path.name + "-wal")
        self._wal_limit = wal_limit
        self._log = get_logger("record")
        lock_path = path.with_name(path.name + "-writer.lock")
        self._checkpointer = WalCheckpointer(path, writer_lock=lock_path, restart_at=wal_limit // 4, interval=checkpoint_interval, log=self._log)
        self._read_only = not create
        if not create:
            self._open_read_only(path, busy_timeout)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # A file in the way, no permission, a read-only file system or a parent that cannot be
            # made: the setting is wrong, and retrying as if the database were down would only log
            # "unavailable" for ever (FileNotFoundError, from /proc or a vanished mount, was a traceback).
            raise ConfigError(f"the SQLite record's folder {path.parent} cannot be made (HELSEBRO_RECORD_URL, HELSEBRO_DATA_DIR): {exc.strerror or exc}") from exc
        try:
            self._writer_lock = open(lock_path, "ab")  # noqa: SIM115  # held for the record's life
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
            # can lose the last transactions, never corrupt the file. The log is fsynced
            # at each checkpoint, so that window is about one checkpoint_interval.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # No checkpoint inside COMMIT: the checkpointer thread does them (see _after_commit).
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            # When the log starts over, its file is cut back to an eighth of the limit,
            # below where the checkpointer makes it start over (a quarter): so the file's
            # size, which the checkpointer and the writer check, follows the log's length.
            self._conn.execute(f"PRAGMA journal_size_limit={wal_limit // 8}")
            # 32 MiB of page cache (SQLite's default is 2 MiB): a batch's index inserts land on
            # pages all over the indexes, which the default cache re-reads from the OS again and again.
            self._conn.execute("PRAGMA cache_size=-32768")
            with self._transaction([]) as db:
                tables = {str(r[0]) for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'", ())}
                prepare_schema(db, tables, body="TEXT", rid="INTEGER", without_rowid=" WITHOUT ROWID")
        except (sqlite3.Error, RecordUnavailable) as exc:
            self._conn.close()
            self._writer_lock.close()
            raise RecordUnavailable("cannot prepare the SQLite record") from exc

    def _open_read_only(self, path: Path, busy_timeout: float) -> None:
        """Open the record at *path* for reading only, if it is at this Helsebro's schema version."""
        try:
            conn = _read_only(path, timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise RecordUnavailable("cannot open the SQLite record") from exc
        try:
            conn.execute("PRAGMA cache_size=-32768")  # this connection's own page cache, as a writer's
            db = _SqliteDb(conn)
            found = schema_version(db, {str(r[0]) for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'", ())})
        except sqlite3.Error as exc:
            conn.close()
            raise RecordUnavailable("cannot read the SQLite record") from exc
        self._conn = conn
        if found != SCHEMA_VERSION:
            conn.close()
            if found > SCHEMA_VERSION:
                raise RecordUnavailable(f"the record's schema is version {found}; this Helsebro knows up to {SCHEMA_VERSION}")
            raise RecordUnavailable(f"the record at {path} has schema version {found}, older than this Helsebro's {SCHEMA_VERSION}:"
                                    " run the engine (`helsebro run`) once, which migrates it; a read-only verb does not")

    def close(self) -> None:
        """Stop the checkpointer and close the connection (the last one to close checkpoints what is left)."""
        self._checkpointer.close()
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
                # Read-only: a deferred BEGIN, one snapshot for the reads; IMMEDIATE would ask for the write lock.
                self._conn.execute("BEGIN" if self._read_only else "BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise RecordUnavailable("SQLite record is busy") from exc
            try:
                changes = self._conn.total_changes
                yield _SqliteDb(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise RecordUnavailable("SQLite record write failed") from exc
            except BaseException:
                self._rollback()
                raise
            if self._conn.total_changes != changes:
                self._after_commit()
        finally:
            if self._writer_lock is not None:
                fcntl.flock(self._writer_lock.fileno(), fcntl.LOCK_UN)

    def _after_commit(self) -> None:
        """Hand the checkpoint to the checkpointer; past the limit, checkpoint here, still under the writer lock.

        The in-line checkpoint is the fallback (the checkpointer failing, or always
        overtaken), so it may cost the other worker a wait: under the lock, no
        writer comes between it and the next BEGIN, which then starts the log over.
        It is PASSIVE, as SQLite's automatic one was: it never waits for readers.
        A failure of it is logged, not raised: the commit is done.
        """
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            size = 0
        if size <= self._wal_limit:
            self._checkpointer.notify()
            return
        try:
            busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self._log.warning("record_checkpoint_failed", path=self._wal_path.name, error=type(exc).__name__, reason=str(exc), inline=True)
            return
        self._log.info("record_checkpoint_inline", wal_bytes=size, frames=frames, checkpointed=done, busy=busy)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is already gone; nothing was committed

    def _decode(self, body: Any) -> FhirJson:
        decoded: FhirJson = orjson.loads(body)
        return decoded
