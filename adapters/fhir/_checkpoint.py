"""Checkpoint the SQLite record's write-ahead log off the writers' path.

Why: with SQLite's automatic checkpoint, the commit that takes the WAL past
1000 pages copies the log back into the database file and fsyncs both, inside
COMMIT, while the committing process still holds the record's writer lock
(_sqlite.py): 7–14 ms per batch on average, which the other worker waits out.
The writer turns that off (`wal_autocheckpoint=0`) and calls `notify` after
each commit that wrote; a thread here, on its own connection, then runs a
PASSIVE checkpoint, at most once per `interval` seconds. PASSIVE never waits
for a reader or a writer, so nobody waits for it; a checkpoint another
process's checkpointer is running already is simply left to that one.

Durability is SQLite's WAL contract either way: a commit is in the log
(synchronous=NORMAL writes it before COMMIT returns, so a killed process loses
nothing); a checkpoint fsyncs the log, copies it into the database file and
fsyncs that. Moving the checkpoint changes only when the log is fsynced, which
bounds what an OS crash (not a process crash) could lose to roughly one
`interval`, where the automatic checkpoint bounded it by 1000 pages however
long those took to fill.

A checkpoint only lets the log start over (and its file be cut back, see
journal_size_limit in _sqlite.py) when the next writer begins with every frame
copied; a writer that is always mid-batch while the checkpoint runs would never
see that, and the log would grow until the writer's in-line limit. So once the
file passes `restart_at` bytes, the checkpointer follows its round with a second
one under the record's writer flock (its own file description, so it excludes
this process's writer too): that one copies only what was committed during the
first, and the next writer starts the log over. Writers wait for that short
round only, once per `restart_at` bytes of log.

A checkpointer that fails logs `record_checkpoint_failed` (the error's class
and SQLite's text, never data) and tries again on the next commit; commits do
not wait for it. The log still cannot grow without bound: the writer
checkpoints in line, as SQLite did, once the file passes its limit
(SqliteRecord).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from router.logging import get_logger


class WalCheckpointer:
    """A thread that runs PASSIVE checkpoints of one SQLite file when told the log grew."""

    def __init__(self, path: Path, *, writer_lock: Path, restart_at: int, interval: float = 0.5, log: Any = None) -> None:
        """Prepare a checkpointer for the database at *path*; its thread starts on the first `notify`.

        Args:
            writer_lock: the file every writer of the record flocks before writing.
            restart_at: bytes of log file past which a round ends with a locked catch-up, so the log starts over.
            interval: least seconds between two checkpoints; commits in between are
                taken by the next one (fewer, larger checkpoints copy a hot page once).
        """
        self._path = path
        self._wal_path = path.with_name(path.name + "-wal")
        self._writer_lock = writer_lock
        self._restart_at = restart_at
        self._interval = interval
        self._log = log if log is not None else get_logger("record")
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failing = False
        self._conn: sqlite3.Connection | None = None

    def notify(self) -> None:
        """Say the log grew; a checkpoint follows soon, on the checkpointer's thread. Never blocks."""
        thread = self._thread
        if thread is None or not thread.is_alive():  # first use, or a fork left the thread behind
            with self._start_lock:
                if self._closing.is_set():
                    return
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
                    self._thread.start()
        self._wake.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """Run one PASSIVE checkpoint on this checkpointer's connection; return SQLite's (busy, log frames, checkpointed frames).

        Raises:
            sqlite3.Error: the checkpoint failed.
        """
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            # The checkpoint's fsyncs follow this connection's setting: NORMAL syncs the
            # log before copying it and the database file after, as the writer's would.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(done)

    def close(self) -> None:
        """Stop the thread after the checkpoint it is running, and close its connection."""
        with self._start_lock:
            self._closing.set()
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._drop_connection()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closing.is_set():
                return
            self._wake.clear()
            try:
                self._round()
            except (sqlite3.Error, OSError) as exc:
                self._drop_connection()  # a fresh one next time
                if not self._failing:
                    self._log.warning("record_checkpoint_failed", path=self._path.name, error=type(exc).__name__, reason=str(exc))
                self._failing = True
            else:
                if self._failing:
                    self._log.info("record_checkpoint_recovered", path=self._path.name)
                self._failing = False
            if self._closing.wait(self._interval):
                return

    def _round(self) -> None:
        """One checkpoint; then, when the log file is long, a catch-up under the writer flock so the log can start over."""
        self.checkpoint()
        try:
            size = os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return
        if size < self._restart_at:
            return
        with open(self._writer_lock, "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            self.checkpoint()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass  # closing a broken connection; nothing was pending on it
