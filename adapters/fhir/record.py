"""Open the shared record: a FHIR R4 store in SQLite or PostgreSQL.

The store applies transaction Bundles atomically, skips writes that change nothing,
keeps every version, and indexes identifiers and patient references for search.
Serving it over HTTP belongs to rest.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from adapters.fhir._postgres import PostgresRecord
from adapters.fhir._sqlite import SqliteRecord, tables_in
from adapters.fhir._store import MARKS, JournalEntry, NoRecord, NotARecord, SqlRecord, StoredVersion
from router.errors import ConfigError

__all__ = ["JournalEntry", "NoRecord", "NotARecord", "PostgresRecord", "RecordSettings", "SqlRecord", "SqliteRecord", "StoredVersion", "open_record"]

_POSTGRES = ("postgresql://", "postgres://")
_SQLITE = "sqlite:///"


class RecordSettings(Protocol):
    """The settings the record reads (router.settings.Settings has them all)."""

    @property
    def record_url(self) -> str | None:
        """postgresql://… or sqlite:///…, or None for SQLite in the data directory."""
        ...

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file used when no record URL is set."""
        ...

    @property
    def sqlite_busy_timeout(self) -> float:
        """Seconds a SQLite writer waits for another's lock before the apply fails with RecordUnavailable."""
        ...


def open_record(settings: RecordSettings, *, create: bool = True) -> SqlRecord:
    """Open the record that *settings* name, creating its schema when missing.

    `create=False` is for the verbs that only read it (`find`, `status`): a
    SQLite record that is not there is then an error, not a new empty file,
    so a mistyped path does not read as "nothing was applied"; a file with no
    tables at all is NoRecord too (nothing applied yet), and a file holding
    only other tables (another application's database) NotARecord; the file is
    opened read-only, nothing is written to it or beside it, and a record of an
    older schema is refused (the engine migrates it), not migrated. On
    PostgreSQL, a schema that is not there or holds no tables is NoRecord, one
    holding only other tables NotARecord; neither gains a schema or a table.

    The engine (`create=True`) makes the record in a new or empty SQLite file, but
    refuses one that holds another application's tables, or is no SQLite database,
    before writing to it: a ConfigError, so `run` stops (exit 2) rather than retrying.

    `record_url` may be `postgresql://…` (with an optional `?schema=NAME`), or
    `sqlite:///path`; unset, the record is SQLite at `settings.sqlite_path`. A SQLite
    writer waits `settings.sqlite_busy_timeout` seconds for another's lock.

    Raises:
        ConfigError: `record_url` has a scheme the record does not support, or names
            a SQLite file whose folder cannot be made (a file in the way, no permission),
            or, with `create=True`, a file that is not a Helsebro record and not empty.
        RecordUnavailable: the database cannot be reached, created or prepared; or,
            with `create=False`, the SQLite file or PostgreSQL schema holds no record yet
            (NoRecord), or holds another application's tables (NotARecord).
    """
    url = settings.record_url
    if url and url.startswith(_POSTGRES):
        return PostgresRecord(url, create=create)
    if url and not url.startswith(_SQLITE):
        raise ConfigError("record_url must start with postgresql:// or sqlite:///")
    path = Path(url[len(_SQLITE):]) if url else settings.sqlite_path
    if not path.exists():
        if not create:
            raise NoRecord(f"no record at {path}: nothing has been applied there (check HELSEBRO_RECORD_URL and HELSEBRO_DATA_DIR)")
        return SqliteRecord(path, busy_timeout=settings.sqlite_busy_timeout)
    tables = tables_in(path)
    if tables is not None and not tables:
        # An SQLite file with no tables at all is the record not made yet (a first `run` stopped before its
        # schema committed leaves one; the engine makes the record in it), as PostgreSQL's empty schema is.
        if not create:
            raise NoRecord(f"no record yet at {path}: the file holds no tables, nothing has been applied there"
                           " (a first `helsebro run` stopped before it made the record leaves such a file; the next one makes it)")
    elif tables is None or not tables & MARKS:
        what = "no SQLite database" if tables is None else "none of the record's tables"
        why = f"{path} is not a Helsebro record: it holds {what} (check HELSEBRO_RECORD_URL and HELSEBRO_DATA_DIR)"
        if not create:
            raise NotARecord(why)
        raise ConfigError(why)  # another application's file: making the record's tables in it would change it
    return SqliteRecord(path, busy_timeout=settings.sqlite_busy_timeout, create=create)
