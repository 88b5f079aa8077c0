"""The record in PostgreSQL: the shared store that several workers write at once.

Each apply runs in one READ COMMITTED transaction that first takes a transaction-scoped
advisory lock per identity (type + identifier value, type + id), in sorted order. A
second worker creating the same identity waits, then sees the first one's commit.
Versions are written optimistically, without row locks (a no-op apply then writes
nothing and commits without a WAL flush): two writers of one resource both aim at the
same next version, and the history table's primary key fails the later one: a
RecordConflict, and the apply runs again at once, reading what the first committed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from adapters.fhir._lookups import DELETE_REFS, DELETE_TOKENS, INSERT_HISTORY, INSERT_REF, INSERT_RESOURCE, INSERT_TOKEN, UPDATE_RESOURCE
from adapters.fhir._store import (
    JOURNAL,
    MARK_APPLIED,
    MARKS,
    SCHEMA_VERSION,
    NoRecord,
    NotARecord,
    RecordConflict,
    SqlRecord,
    prepare_schema,
    schema_version,
)
from adapters.fhir._transaction import Db
from router.contracts import FhirJson
from router.errors import RecordUnavailable, UnstorableContent

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Serialises schema creation: concurrent CREATE TABLE IF NOT EXISTS can still collide
# on the catalogue's unique index in PostgreSQL.
_DDL_LOCK = 0x4845_4C53_4252_4F01  # "HELSBRO" + 1

_NEW_RIDS = "SELECT nextval('fhir_rid_seq') FROM generate_series(1, %s)"
# The sequence starts past any key a migration copied (prepare_schema runs this after the tables exist).
_RID_SEQUENCE = (
    "CREATE SEQUENCE IF NOT EXISTS fhir_rid_seq",
    "SELECT setval('fhir_rid_seq', (SELECT coalesce(max(rid), 0) + 1 FROM fhir_resource), false)"
    " WHERE (SELECT last_value FROM fhir_rid_seq) <= (SELECT coalesce(max(rid), 0) FROM fhir_resource)",
)

# A renamed table keeps its primary key's index name; the migration frees it for the new table's.
_V1_RENAMED = tuple(f"ALTER INDEX IF EXISTS {t}_pkey RENAME TO {t}_v1_pkey" for t in ("fhir_resource", "fhir_history", "helsebro_applied"))

# The batch's writes, each kind as one statement over arrays (one per column), in binary: psycopg's
# executemany sends and dumps every row on its own (about 40 k client instructions a row), and a
# query with hundreds of placeholders is parsed again each time it is sent (psycopg caches only
# short ones). Same rows, same constraints: a conflict fails the statement, and so the transaction,
# as it failed the row. The rows of one kind in a flush never name a resource twice (Lookups keeps
# one per resource), which UPDATE … FROM needs.
_BULK = {
    INSERT_HISTORY: "INSERT INTO fhir_history (rid, version, deleted, last_updated, body) SELECT r, v, d, t, b::json"
                    " FROM unnest(%b::bigint[], %b::int[], %b::int[], %b::text[], %b::text[]) AS u(r, v, d, t, b)",
    INSERT_RESOURCE: "INSERT INTO fhir_resource (rid, type, id, version, deleted, digest, index_hash)"
                     " SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::int[], %b::int[], %b::text[], %b::bigint[])",
    UPDATE_RESOURCE: "UPDATE fhir_resource r SET version = u.v, deleted = u.d, digest = u.g, index_hash = u.h"
                     " FROM unnest(%b::int[], %b::int[], %b::text[], %b::bigint[], %b::bigint[]) AS u(v, d, g, h, rid) WHERE r.rid = u.rid",
    INSERT_TOKEN: "INSERT INTO fhir_token (type, value, system, rid) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[])",
    INSERT_REF: "INSERT INTO fhir_ref (type, target, param, rid) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[])",
    DELETE_TOKENS: "DELETE FROM fhir_token WHERE rid = ANY(%b::bigint[])",
    DELETE_REFS: "DELETE FROM fhir_ref WHERE rid = ANY(%b::bigint[])",
    MARK_APPLIED: "INSERT INTO helsebro_applied (key, applied_at) SELECT * FROM unnest(%b::text[], %b::float8[]) ON CONFLICT (key) DO NOTHING",
    JOURNAL: "INSERT INTO helsebro_journal (key, applied_at, control_id, sender, message_type, patient_key, destinations, resources, outcome)"
             " SELECT * FROM unnest(%b::text[], %b::float8[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
             " ON CONFLICT (key) DO NOTHING",
}

# The keys in binary (%b): psycopg's text form of an array runs a regex over each element.
_LOCK_SQL = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%b::bigint[]) WITH ORDINALITY AS t(k, n)"


# Refusals of a value (SQLSTATE class 22, and 54: an index entry over its size), as opposed to an
# outage, a lock timeout or two writers racing (retried). The message is never quoted: its values
# may be in the database's words.
_REFUSED_VALUES = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)

# Two writers racing for the same rows: a version or a new resource's key both took (the unique
# indexes are the lost-update guard), a deadlock the server broke, a serialization failure (SQLSTATE
# class 40). Run again at once (RecordConflict), not waited out as an outage.
_CONFLICTS = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
              psycopg.errors.TransactionRollback)


def _refusal(exc: psycopg.Error) -> str:
    """Plain words for a refused value, without the database's message (which may quote the value)."""
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return "a value is too long to index"
    if isinstance(exc, psycopg.errors.CharacterNotInRepertoire):
        return "a character the database's text cannot hold"
    return f"PostgreSQL data error {exc.sqlstate or ''}".strip()


@lru_cache(maxsize=256)
def _pg(statement: str) -> str:
    """Turn the shared SQL's `?` placeholders into psycopg's `%s`."""
    return statement.replace("?", "%s")


def split_schema(url: str) -> tuple[str, str | None]:
    """Remove Helsebro's own `schema=NAME` query parameter from *url*; libpq rejects it.

    Raises:
        RecordUnavailable: the schema name is not a plain lower-case identifier.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not _SCHEMA_RE.fullmatch(schema):
        raise RecordUnavailable("record_url schema must be a lower-case identifier")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class _PgDb:
    """A transaction's view of the connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def query(self, statement: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(_pg(statement), args).fetchall()

    def execute(self, statement: str, args: Sequence[Any]) -> None:
        self._conn.execute(_pg(statement), args)

    def execute_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        bulk = _BULK.get(statement)
        if bulk is None:
            with self._conn.cursor() as cur:
                cur.executemany(_pg(statement), rows)
        elif rows:
            self._conn.execute(bulk, [list(column) for column in zip(*rows)])

    def query_keys(self, keys: Sequence[tuple[str, ...]], width: int, statement: str) -> list[tuple[Any, ...]]:
        return self.query_keys_later(keys, width, statement)()

    def query_keys_later(self, keys: Sequence[tuple[str, ...]], width: int, statement: str) -> Callable[[], list[tuple[Any, ...]]]:
        if not keys:
            return list
        source = "SELECT * FROM unnest(" + ", ".join("%b::text[]" for _ in range(width)) + ")"
        # In pipeline mode execute only queues the query; fetchall sends what is queued and reads up to its answer.
        return self._conn.execute(_pg(statement.format(source)), [list(column) for column in zip(*keys)]).fetchall

    def new_rids(self, n: int) -> Sequence[int]:
        # From a sequence: writers of different resources run at once, and a key is never taken twice.
        return [int(r[0]) for r in self._conn.execute(_NEW_RIDS, (n,)).fetchall()]


class PostgresRecord(SqlRecord):
    """The record in a PostgreSQL database, optionally in its own schema."""

    def __init__(self, url: str, *, connect_timeout: int = 10, create: bool = True) -> None:
        """Connect to *url* and create the schema when missing.

        A `schema=NAME` query parameter puts the tables in that schema (created if
        needed); without it they go where the server's search_path says.

        `create=False` (the read-only verbs) creates nothing: no schema, no table, and a
        record already at this Helsebro's version is not prepared at all (so a role that
        may only read it can open it); an older one is migrated, as the engine would.

        Raises:
            RecordUnavailable: the database cannot be reached or prepared.
            NoRecord: with `create=False`, the schema is not there or holds no tables.
            NotARecord: with `create=False`, the schema holds tables, none of them the record's.
        """
        super().__init__()
        self._conninfo, self._schema = split_schema(url)
        self._connect_timeout = connect_timeout
        self._create = create
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            raise RecordUnavailable("cannot connect to the PostgreSQL record") from exc
        try:
            set_json_loads(orjson.loads, conn)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                if self._schema:
                    if self._create:
                        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)))
                    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
                tables = {str(r[0]) for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").fetchall()}
                if self._create or self._must_prepare(conn, tables):
                    prepare_schema(_PgDb(conn), tables, body="JSON", rid="BIGINT", without_rowid="", after=_RID_SEQUENCE,
                                   renamed=_V1_RENAMED)
        except psycopg.Error as exc:
            conn.close()
            raise RecordUnavailable("cannot prepare the PostgreSQL record") from exc
        except RecordUnavailable:
            conn.close()  # a schema this Helsebro cannot use, or (read-only) no record there
            raise
        return conn

    def _must_prepare(self, conn: psycopg.Connection[Any], tables: set[str]) -> bool:
        """For a read-only open: whether the record there needs migrating first (False: read it as it is).

        Raises:
            NoRecord: the schema is not there, or holds no tables.
            NotARecord: the schema holds tables, none of them the record's.
        """
        row = None if self._schema else conn.execute("SELECT current_schema()").fetchone()
        where = self._schema or (str(row[0]) if row and row[0] else "(none: the search_path names no schema that exists)")
        if not tables:
            raise NoRecord(f"no record yet in schema {where}: nothing has been applied there (check HELSEBRO_RECORD_URL)")
        if not tables & MARKS:
            raise NotARecord(f"schema {where} of the PostgreSQL database is not a Helsebro record: it holds none of the record's tables"
                             " (check HELSEBRO_RECORD_URL)")
        return schema_version(_PgDb(conn), tables) != SCHEMA_VERSION

    def _connection(self) -> psycopg.Connection[Any]:
        # A dropped connection (server restart, failover) is replaced on next use, so a
        # worker recovers by retrying instead of restarting.
        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _query(self, statement: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(_pg(statement), args).fetchall()
        except psycopg.Error as exc:
            raise RecordUnavailable("PostgreSQL record read failed") from exc

    @contextmanager
    def _transaction(self, keys: list[int]) -> Iterator[Db]:
        conn = self._connection()
        try:
            # Pipeline mode: writes go out without waiting for their answers, and a read
            # sends whatever is queued in the same round trip. A Bundle is dozens of
            # statements; on a socket each wait costs more than the statement.
            with conn.transaction(), conn.pipeline():
                if keys:
                    conn.execute(_LOCK_SQL, (keys,))
                yield _PgDb(conn)
        except _REFUSED_VALUES as exc:  # the content, not the database: the same write fails every time
            raise UnstorableContent(f"the record cannot store a value of this message ({_refusal(exc)})") from exc
        except _CONFLICTS as exc:
            raise RecordConflict("another writer changed the same resources at once") from exc
        except psycopg.Error as exc:
            raise RecordUnavailable("PostgreSQL record write failed") from exc

    def _decode(self, body: Any) -> FhirJson:
        # The JSON column arrives already parsed by orjson (set_json_loads above).
        decoded: FhirJson = body if isinstance(body, dict) else orjson.loads(body)
        return decoded
