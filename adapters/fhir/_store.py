"""The record's behaviour over any SQL backend: apply, read, history, search.

Backends (_sqlite.py, _postgres.py) supply a connection, a transaction with identity
locks, and error translation; everything FHIR-shaped lives here and in _transaction.py.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.fhir._bundle import ID_RE, TYPE_RE, Entry, lock_keys, message_lock_key, parse_bundle
from adapters.fhir._lookups import Lookups
from adapters.fhir._search import Term, search_sql, terms_sql
from adapters.fhir._transaction import Db, apply_entries
from router.contracts import APPLIED_OUTCOMES, SETTLED_OUTCOMES, ApplyResult, FhirJson, JournalFacts
from router.errors import InvalidContent, MessageError, RecordUnavailable, UnstorableContent

SCHEMA_VERSION = 4
"""The layout the code below reads and writes; `prepare_schema` brings an older record up to it.

1 (no helsebro_schema table): fhir_resource held the current body beside fhir_history's copy,
  and every table and index was keyed by (type, id) text.
2: fhir_resource is narrow (no body) and keyed by an integer `rid`; history, tokens and references
  name their resource by it.
3: helsebro_journal, what each applied message wrote (created empty: messages applied before have no row);
  helsebro_applied and helsebro_seen indexed by age, for their purges.
4: helsebro_journal also keeps the messages that were not applied (duplicates, filtered, forwarded
  elsewhere only, dead-lettered): columns `outcome` and `note` (rows of version 3 are `applied`),
  and `destinations`, where its routes sent it besides the record.
"""

# One schema for both backends; each fills {body} (TEXT, or JSON on PostgreSQL), {rid} (SQLite's
# INTEGER PRIMARY KEY is the table's own row key) and {without_rowid} (SQLite only).
#
# fhir_resource: one narrow row per resource (deleted ones too, flagged): its integer key `rid`,
#   current version, `digest` (a hash of the content without versionId/lastUpdated, so a no-op
#   write is detected without reading the body) and `index_hash` (of the identifiers and references
#   indexed for it, so an update that keeps them leaves fhir_token and fhir_ref alone).
# fhir_history: every version, with its body; the current body is the row (rid, version).
#   The body is stored once; new resources take rising `rid`s, so their history, and the `rid`
#   indexes below, grow at one end instead of at random places in a tree keyed by a UUID.
# fhir_token, fhir_ref: the current version's identifiers and subject/patient references (and
#   indexed tags), keyed for search by value; `rid` indexes them for rewriting on change.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS helsebro_schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fhir_resource (rid {rid} PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL,"
    " version INTEGER NOT NULL, deleted INTEGER NOT NULL, digest TEXT NOT NULL, index_hash BIGINT, UNIQUE (type, id))",
    "CREATE TABLE IF NOT EXISTS fhir_history (rid {rid} NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,"
    " last_updated TEXT NOT NULL, body {body} NOT NULL, PRIMARY KEY (rid, version))",
    "CREATE TABLE IF NOT EXISTS fhir_token (type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL, rid {rid} NOT NULL,"
    " PRIMARY KEY (type, value, system, rid)){without_rowid}",
    "CREATE INDEX IF NOT EXISTS fhir_token_rid ON fhir_token (rid)",
    "CREATE TABLE IF NOT EXISTS fhir_ref (type TEXT NOT NULL, target TEXT NOT NULL, param TEXT NOT NULL, rid {rid} NOT NULL,"
    " PRIMARY KEY (type, target, param, rid)){without_rowid}",
    "CREATE INDEX IF NOT EXISTS fhir_ref_rid ON fhir_ref (rid)",
    # Message ids already settled (sender + MSH-10), for duplicate detection; see SqlRecord.seen.
    "CREATE TABLE IF NOT EXISTS helsebro_seen (key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS helsebro_seen_at ON helsebro_seen (seen_at)",  # the window's purge (remember), as below
    # Messages whose Bundle this record applied, written in the same transaction as
    # the Bundle: a redelivery after a crash (or an ack lost with the broker) between
    # commit and ack finds its key and is not applied a second time; see apply_batch.
    "CREATE TABLE IF NOT EXISTS helsebro_applied (key TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL){without_rowid}",
    # The purge (_purge_applied) deletes by age inside an apply transaction: without these it read
    # the whole table, 14 days of messages, while holding the writers' lock.
    "CREATE INDEX IF NOT EXISTS helsebro_applied_at ON helsebro_applied (applied_at)",
    # What became of each message, for operators finding it by its control id or its patient
    # (`helsebro find`): an applied one is written with its helsebro_applied row (outcome `applied` or
    # `unchanged`, `resources` what it wrote: JSON, [[type, id, version, outcome], ...]); one that was
    # not applied (`duplicate`, `filtered`, `forwarded`, `dead_lettered`) by `journal_settled`, with a
    # plain-words `note` and no resources. `applied_at` is when it settled. Kept as long as the applied
    # keys. The patient is a key (router.pipeline.convert.patient_key_for: a hash), never a number or a
    # name; '' stands for a value the message did not give. `destinations`: the destinations other than
    # the record its routes chose, comma-separated ('' for none, and for a message dead-lettered before it
    # was forwarded); find shows them with their kind. An external server's delivery ledger is not looked up.
    "CREATE TABLE IF NOT EXISTS helsebro_journal (key TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL,"
    " control_id TEXT NOT NULL, sender TEXT NOT NULL, message_type TEXT NOT NULL, patient_key TEXT NOT NULL, resources TEXT NOT NULL,"
    " destinations TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT 'applied', note TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS helsebro_journal_control ON helsebro_journal (control_id)",
    "CREATE INDEX IF NOT EXISTS helsebro_journal_patient ON helsebro_journal (patient_key)",
    "CREATE INDEX IF NOT EXISTS helsebro_journal_at ON helsebro_journal (applied_at)",
)

# Version 1 → 2, in the transaction that prepares the schema. The old tables are renamed, the new
# ones created (SCHEMA), the rows copied with their integer keys, the old tables dropped.
_V1_TABLES = ("fhir_resource", "fhir_history", "fhir_token", "fhir_ref", "helsebro_applied")
_V1_INDEXES = ("fhir_token_value", "fhir_token_owner", "fhir_ref_target", "fhir_ref_owner")
_V1_ORPHANS = (
    "SELECT count(*) FROM fhir_history_v1 h WHERE NOT EXISTS (SELECT 1 FROM fhir_resource_v1 r WHERE r.type = h.type AND r.id = h.id)"
)
_V1_COPY = (
    "INSERT INTO fhir_resource (rid, type, id, version, deleted, digest, index_hash)"
    " SELECT ROW_NUMBER() OVER (ORDER BY type, id), type, id, version, deleted, digest, NULL FROM fhir_resource_v1",
    "INSERT INTO fhir_history (rid, version, deleted, last_updated, body) SELECT r.rid, h.version, h.deleted, h.last_updated, h.body"
    " FROM fhir_history_v1 h JOIN fhir_resource r ON r.type = h.type AND r.id = h.id",
    # A current version missing from history (never written so by Helsebro) keeps its body there.
    "INSERT INTO fhir_history (rid, version, deleted, last_updated, body) SELECT r.rid, o.version, o.deleted, o.last_updated, o.body"
    " FROM fhir_resource_v1 o JOIN fhir_resource r ON r.type = o.type AND r.id = o.id"
    " WHERE NOT EXISTS (SELECT 1 FROM fhir_history h WHERE h.rid = r.rid AND h.version = r.version)",
    "INSERT INTO fhir_token (type, value, system, rid) SELECT DISTINCT t.type, t.value, t.system, r.rid"
    " FROM fhir_token_v1 t JOIN fhir_resource r ON r.type = t.type AND r.id = t.id",
    "INSERT INTO fhir_ref (type, target, param, rid) SELECT DISTINCT f.type, f.target, f.param, r.rid"
    " FROM fhir_ref_v1 f JOIN fhir_resource r ON r.type = f.type AND r.id = f.id",
    "INSERT INTO helsebro_applied (key, applied_at) SELECT key, applied_at FROM helsebro_applied_v1",
)


# Version 3 → 4: the journal's rows so far are applied messages.
_V3_JOURNAL = (
    "ALTER TABLE helsebro_journal ADD COLUMN outcome TEXT NOT NULL DEFAULT 'applied'",
    "ALTER TABLE helsebro_journal ADD COLUMN note TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE helsebro_journal ADD COLUMN destinations TEXT NOT NULL DEFAULT ''",
)


MARKS = frozenset({"helsebro_schema", "fhir_resource"})
"""Tables only a Helsebro record holds (fhir_resource alone: schema version 1, before helsebro_schema):
a file with neither is someone else's database, or empty."""


class RecordConflict(RecordUnavailable):
    """Another writer won a race for the same rows (a version or a new resource both aimed at, a deadlock).

    Not an outage: the apply runs again at once (CONFLICT_ATTEMPTS times), reading what the other
    committed. Only when it keeps losing does it reach the caller, as the RecordUnavailable it is.
    """


CONFLICT_ATTEMPTS = 5
"""Runs of one apply that lost a race before its RecordConflict reaches the caller."""


def _after_conflict(attempt: int) -> None:
    """Wait a moment, longer each time and at random, so writers that collided do not collide again in step."""
    time.sleep(random.uniform(0, 0.005 * 2 ** attempt))  # jitter, not a secret


class NoRecord(RecordUnavailable):
    """A read-only verb found no record: nothing has been applied there yet (or the path or schema is mistyped)."""


class NotARecord(RecordUnavailable):
    """A read-only verb found a database that holds no Helsebro record (another application's, or empty)."""


def schema_version(db: Db, tables: set[str]) -> int:
    """The record's layout version in a database whose tables are *tables*: 0 when it holds no record."""
    if "helsebro_schema" in tables:
        rows = db.query("SELECT max(version) FROM helsebro_schema", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else SCHEMA_VERSION
    return 1 if "fhir_resource" in tables else 0


def prepare_schema(db: Db, tables: set[str], *, body: str, rid: str, without_rowid: str, after: Sequence[str] = (),
                   renamed: Sequence[str] = ()) -> int:
    """Create the record's tables, or bring those of an older version up to SCHEMA_VERSION; return the version found.

    Runs inside the transaction (and lock) the backend prepares the schema in, so two
    processes opening one record do not both migrate it. *tables* are the names that
    exist; *after* are backend statements run once the tables exist (each time); *renamed*,
    run after a migration renamed the old tables, frees names the new tables' constraints take.

    Raises:
        RecordUnavailable: the record was written by a newer Helsebro, or cannot be migrated.
    """
    found = schema_version(db, tables)
    if found > SCHEMA_VERSION:
        raise RecordUnavailable(f"the record's schema is version {found}; this Helsebro knows up to {SCHEMA_VERSION}")
    if found == 1:
        for index in _V1_INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {index}", ())
        for table in _V1_TABLES:
            if table in tables:
                db.execute(f"ALTER TABLE {table} RENAME TO {table}_v1", ())
        if "helsebro_applied" not in tables:
            db.execute("CREATE TABLE helsebro_applied_v1 (key TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)", ())
        for statement in renamed:
            db.execute(statement, ())
    for statement in SCHEMA:
        db.execute(statement.format(body=body, rid=rid, without_rowid=without_rowid), ())
    if found == 1:
        orphans = db.query(_V1_ORPHANS, ())
        if orphans and int(orphans[0][0]):
            raise RecordUnavailable("cannot migrate the record: history rows without a current resource row")
        for statement in _V1_COPY:
            db.execute(statement, ())
        for table in _V1_TABLES:
            db.execute(f"DROP TABLE {table}_v1", ())
    if found == 3:  # the journal table exists without the columns version 4 added
        for statement in _V3_JOURNAL:
            db.execute(statement, ())
    for statement in after:
        db.execute(statement, ())
    if found < SCHEMA_VERSION:
        db.execute("DELETE FROM helsebro_schema", ())
        db.execute("INSERT INTO helsebro_schema (version) VALUES (?)", (SCHEMA_VERSION,))
    return found


MARK_APPLIED = "INSERT INTO helsebro_applied (key, applied_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
JOURNAL = (
    "INSERT INTO helsebro_journal (key, applied_at, control_id, sender, message_type, patient_key, destinations, resources, outcome)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
)
# A message settled again under the same key (a redelivery after a crash, a resent duplicate) is one row, at its latest time.
_JOURNAL_SETTLED = (
    "INSERT INTO helsebro_journal (key, applied_at, control_id, sender, message_type, patient_key, destinations, resources, outcome, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, '[]', ?, ?) ON CONFLICT (key) DO UPDATE SET applied_at = excluded.applied_at, note = excluded.note,"
    " destinations = excluded.destinations"
)
# An AppRec received again (the broker's redelivery: the same bytes, the same key) is the receipt already journalled: its
# time stays when it first came, so it neither counts again among recent refusals nor outranks a newer AppRec.
_JOURNAL_RECEIPT = (
    "INSERT INTO helsebro_journal (key, applied_at, control_id, sender, message_type, patient_key, destinations, resources, outcome, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, '[]', ?, ?) ON CONFLICT (key) DO NOTHING"
)
_JOURNALLED_AMONG = "WITH q (key) AS ({}) SELECT j.key FROM q JOIN helsebro_journal j ON j.key = q.key"
_JOURNAL_COLUMNS = "key, applied_at, control_id, sender, message_type, patient_key, resources, outcome, note, destinations"
JOURNAL_OUTCOMES = frozenset(SETTLED_OUTCOMES)
_APPLIED_AMONG = "WITH q (key) AS ({}) SELECT h.key FROM q JOIN helsebro_applied h ON h.key = q.key"
_MARKED_AMONG = "WITH q (key) AS ({}) SELECT h.key, h.applied_at FROM q JOIN helsebro_applied h ON h.key = q.key"
_RECEIPT_CHUNK = 500  # MsgIds per receipts query: well under SQLite's bound-parameter limit
APPLIED_RETENTION_SECONDS = 14 * 24 * 3600.0
"""How long an applied message's key is kept: far longer than any redelivery takes to come back."""
_PURGE_APPLIED_EVERY = 1000  # apply_batch calls with keys between purges
_REMEMBER = "INSERT INTO helsebro_seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at"
_FORGET_EVERY = 1000  # remember() calls between purges of expired keys
# One kind of key (see _kind) past its own window: HL7 v2 ids (7 days) and KITH MsgIds (30) share the table.
# substr, not a range on the key: PostgreSQL compares text by its collation, which may skip punctuation.
_FORGET = "DELETE FROM helsebro_seen WHERE seen_at < ? AND substr(key, 1, CAST(? AS INTEGER)) = ?"


def _storable(write: Callable[[Sequence[Any]], None], rows: Sequence[Any]) -> int:
    """Write *rows* in one go; when the database refuses a value (UnstorableContent, which does not say whose),
    each alone, leaving out those it refuses. Return how many were left out. For trails (the journal, the
    duplicate window) that must never stop the engine over one message's value."""
    if not rows:
        return 0
    try:
        write(rows)
        return 0
    except UnstorableContent:
        pass
    left_out = 0
    for row in rows:
        try:
            write([row])
        except UnstorableContent:
            left_out += 1
    return left_out


def _kind(key: str) -> str:
    """The kind of a remembered key, which has a window of its own: its text up to the first `|` (`hl7|`, `kith|`).

    A key without one is of the kind '', whose purge takes every key: no caller writes such keys.
    """
    cut = key.find("|")
    return key[:cut + 1] if cut >= 0 else ""


def _due(count: int, every: int) -> bool:
    """Whether the *count*-th call purges: the first one of a process, then every *every*-th, so a worker
    restarted before its *every*-th call (a quiet interface, a nightly restart) still purges."""
    return (count - 1) % every == 0


def _entries(rows: Sequence[tuple[Any, ...]]) -> list[JournalEntry]:
    """helsebro_journal rows (_JOURNAL_COLUMNS) as JournalEntry values."""
    return [
        JournalEntry(str(key), float(at), str(cid), str(snd), str(mtype), str(pkey),
                     tuple((str(t), str(i), int(v), str(o)) for t, i, v, o in orjson.loads(res)), str(outcome), str(note),
                     tuple(d for d in str(dests).split(",") if d))
        for key, at, cid, snd, mtype, pkey, res, outcome, note, dests in rows
    ]


def _text(value: str) -> str:
    """*value* as every backend's text takes it: PostgreSQL refuses NUL, which a refused message's ids may hold."""
    return value.replace("\x00", "\ufffd")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One settled message as helsebro_journal holds it (SqlRecord.journal)."""

    key: str  # format|sender|control id|hash of the bytes (router.pipeline.settle.applied_key), then |outcome when not applied
    applied_at: float  # Unix time it settled (the commit, for an applied one)
    control_id: str
    sender: str
    message_type: str
    patient_key: str
    resources: tuple[tuple[str, str, int, str], ...]  # (type, id, version, outcome) per entry written; () when not applied
    outcome: str = "applied"  # applied, unchanged, duplicate, filtered, forwarded or dead_lettered (router.pipeline.settle.Outcome)
    note: str = ""  # why it was not applied, in plain words (no value from the message)
    destinations: tuple[str, ...] = ()  # the destinations other than the record its routes chose

    @property
    def was_applied(self) -> bool:
        return self.outcome in APPLIED_OUTCOMES


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of a resource as the history table holds it.

    A deletion is a version too: `deleted` is True and `resource` is a stub with
    only resourceType, id and meta.
    """

    version: int
    last_updated: str
    deleted: bool
    resource: FhirJson


def _written(result: ApplyResult) -> str:
    """What a Bundle wrote, as the journal keeps it: [[type, id, version, outcome], ...]."""
    return orjson.dumps([(e.resource_type, e.id, e.version, e.outcome) for e in result.entries]).decode()


class SqlRecord(ABC):
    """The shared record over SQL; implements router.contracts.Record.

    Every public method holds one lock, so a record may be shared between threads,
    which then take turns. For parallel work, open one record per thread or process.
    """

    uses_lock_keys = True
    """Whether `_transaction` needs the identity-lock keys; a backend whose one write lock covers
    every identity (SQLite) says False and the apply skips computing them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._remembered = 0
        self._batches_with_keys = 0
        self._windows: dict[str, float] = {}  # per kind of remembered key (_kind), the window its caller last gave

    def apply(self, bundle: FhirJson) -> ApplyResult:
        """Apply a transaction Bundle all-or-nothing.

        Raises:
            InvalidContent: the Bundle cannot be applied (bad request, unknown reference).
            RecordUnavailable: the database is unreachable or busy; retry later.
        """
        entries = parse_bundle(bundle)
        keys = lock_keys(entries) if self.uses_lock_keys else []
        attempt = 1
        while True:  # not `for … in range` with the `return` inside `with`: Cython 3 freed the loop's iterator there, and the retry after a conflict crashed (SIGSEGV)
            try:
                return self._apply_once(entries, keys)
            except RecordConflict:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                _after_conflict(attempt)
                attempt += 1

    def _apply_once(self, entries: list[Entry], keys: list[int]) -> ApplyResult:
        """One run of apply: its transaction commits whole, or raises (a RecordConflict when another writer won)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock, self._transaction(keys) as db:
            lookups = Lookups.prefetch(db, [entries])
            result = ApplyResult(apply_entries(db, entries, now, lookups))
            lookups.flush(db)
        return result

    def apply_batch(
        self, bundles: Sequence[FhirJson], keys: Sequence[str | None] | None = None, facts: Sequence[JournalFacts | None] | None = None,
    ) -> list[ApplyResult | MessageError]:
        """Apply several transaction Bundles in order, in one database transaction, each all-or-nothing.

        One commit for the whole batch is what makes batching pay: per-message
        commits cost more than the writes. A Bundle that cannot apply comes back
        as its MessageError and leaves no trace: the transaction is rolled back
        and run again without it (cheaper than a savepoint per Bundle while
        refusals are rare). A value the database refuses to store
        (UnstorableContent: it does not say whose) makes the batch's Bundles
        apply one at a time, so only the Bundle holding it is refused.

        *keys*, one per Bundle (None for none), name the messages the Bundles
        came from. A key is written in the same transaction as its Bundle, and a
        Bundle whose key is already there is not applied again: it comes back as
        an ApplyResult with no entries (nothing changed). That is what makes a
        redelivery harmless even when newer messages for the same patient were
        applied since: re-applying an older Bundle would roll the record back.

        *facts*, one per Bundle (None for none), say what a keyed message was: they are
        journalled with what it wrote, in the same transaction (see `journal`).

        Raises:
            RecordUnavailable: the database is unreachable or busy; nothing of the batch was applied (in the
                one-at-a-time fallback, those before the outage were: a retry finds their keys).
        """
        if keys is not None and len(keys) != len(bundles):
            raise ValueError("apply_batch: one key per Bundle")
        if facts is not None and len(facts) != len(bundles):
            raise ValueError("apply_batch: one journal entry per Bundle")
        out: list[ApplyResult | MessageError | None] = [None] * len(bundles)
        parsed: dict[int, list[Any]] = {}
        for i, bundle in enumerate(bundles):
            try:
                parsed[i] = parse_bundle(bundle)
            except MessageError as exc:
                out[i] = exc
        conflicts = 0
        while parsed:
            locks = sorted({k for entries in parsed.values() for k in lock_keys(entries)}
                           | {message_lock_key(known) for i in parsed if keys is not None and (known := keys[i])}) if self.uses_lock_keys else []
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            done: dict[int, ApplyResult] = {}
            current = -1
            try:
                with self._lock, self._transaction(locks) as db:
                    # Sent together: which messages were applied before, and what every Bundle reads (also
                    # one applied before: a redelivery is rare, and a read too many changes nothing).
                    applied_rows = db.query_keys_later([(known,) for i in parsed if (known := keys[i])], 1, _APPLIED_AMONG) if keys is not None else list
                    lookups = Lookups.prefetch(db, list(parsed.values()))
                    applied = {str(r[0]) for r in applied_rows()}
                    stamp = time.time()
                    marks: list[tuple[str, float]] = []
                    journal: list[tuple[str, float, str, str, str, str, str, str, str]] = []
                    for i, entries in parsed.items():
                        current = i
                        key = keys[i] if keys is not None else None
                        if key is not None and key in applied:
                            done[i] = ApplyResult(())
                            continue
                        done[i] = result = ApplyResult(apply_entries(db, entries, now, lookups))
                        if key is not None:
                            marks.append((key, stamp))
                            applied.add(key)  # a second copy in this batch is the same message
                            if facts is not None and (fact := facts[i]) is not None:
                                # A microsecond apart, so the batch's messages keep their order newest-first.
                                outcome = "applied" if result.changed else "unchanged"
                                journal.append((key, stamp + len(journal) * 1e-6, *fact, _written(result), outcome))
                    lookups.flush(db)  # the batch's writes, one statement per kind
                    if keys is not None:
                        if marks:
                            db.execute_many(MARK_APPLIED, marks)  # in the same transaction as the writes
                        if journal:
                            db.execute_many(JOURNAL, journal)
                        self._purge_applied(db, stamp)
                if keys is not None:
                    with self._lock:
                        self._batches_with_keys += 1  # committed: the purge above, when due, is done
            except RecordConflict:  # another worker won a race for the same rows: run the batch again, reading what it wrote
                conflicts += 1
                if conflicts == CONFLICT_ATTEMPTS:
                    raise
                _after_conflict(conflicts)
                continue
            except UnstorableContent as exc:  # nothing of the batch was written, and which Bundle is not known
                if len(parsed) == 1:
                    [only] = parsed
                    out[only] = exc
                    break
                for i in parsed:  # one at a time, in order: the one that cannot be stored is refused alone
                    [out[i]] = self.apply_batch([bundles[i]], None if keys is None else [keys[i]], None if facts is None else [facts[i]])
                break
            except MessageError as exc:
                out[current] = exc
                del parsed[current]
                continue
            for i, result in done.items():
                out[i] = result
            break
        return [r for r in out if r is not None]

    def _purge_applied(self, db: Db, now: float) -> None:
        # Counted by the caller once the transaction commits (after the `with`): a purge rolled back with its
        # transaction (an outage; on PostgreSQL, a lost update found only at commit) stays due for the next one.
        if _due(self._batches_with_keys + 1, _PURGE_APPLIED_EVERY):
            db.execute("DELETE FROM helsebro_applied WHERE applied_at < ?", (now - APPLIED_RETENTION_SECONDS,))
            db.execute("DELETE FROM helsebro_journal WHERE applied_at < ?", (now - APPLIED_RETENTION_SECONDS,))

    def journal_settled(self, entries: Sequence[tuple[str, JournalFacts, str, str]]) -> int:
        """Journal messages that settled without being applied: (key, facts, outcome, note) each; return how many were left out.

        The engine writes these once the batch's publishes are confirmed and before
        it acks, so a crash in between writes a row again rather than never; a row
        with the same key is updated to the later time, except a receipt's: an AppRec
        received again keeps its first row as it was (its time included). A row whose values the
        database refuses to store (UnstorableContent) is left out, not raised: the
        journal is a trail, and the message's dead letter or log line still holds it.

        Raises:
            ValueError: an outcome that is not one of JOURNAL_OUTCOMES, or `applied`/`unchanged` (apply_batch writes those).
            RecordUnavailable: the database is unreachable or busy.
        """
        for _key, _facts, outcome, _note in entries:
            if outcome not in JOURNAL_OUTCOMES or outcome in APPLIED_OUTCOMES:
                raise ValueError(f"journal_settled: {outcome!r} is not an outcome of a message that was not applied")
        stamp = time.time()
        rows = [(_text(key), stamp + n * 1e-6, *map(_text, facts), outcome, _text(note)) for n, (key, facts, outcome, note) in enumerate(entries)]
        return _storable(lambda chunk: self._write_settled(chunk, stamp), rows)

    def _write_settled(self, rows: Sequence[Any], stamp: float) -> None:
        # The purge comes along: an engine that only forwards (no record destination, no FHIR
        # server's ledger) never applies a keyed batch, and its journal grew past the retention for ever.
        # In key order, as every writer writes them: two workers settling the same messages in another order
        # each held a row the other waited for, and the server broke the deadlock by failing one of them.
        receipts = sorted((row for row in rows if row[7] == "receipt"), key=lambda row: row[0])
        others = sorted((row for row in rows if row[7] != "receipt"), key=lambda row: row[0])
        with self._lock, self._transaction([]) as db:
            if others:
                db.execute_many(_JOURNAL_SETTLED, others)
            if receipts:
                db.execute_many(_JOURNAL_RECEIPT, receipts)
            self._purge_applied(db, stamp)
        with self._lock:
            self._batches_with_keys += 1

    def journalled(self, keys: Sequence[str]) -> set[str]:
        """Return those of *keys* the journal holds (journal_settled's keys): a receipt already journalled is one received again.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        if not keys:
            return set()
        with self._lock, self._transaction([]) as db:
            return {str(r[0]) for r in db.query_keys([(key,) for key in dict.fromkeys(keys)], 1, _JOURNALLED_AMONG)}

    def settled_counts(self, *, since: float) -> dict[str, int]:
        """How many messages settled at or after *since* (Unix time), per journal outcome; every outcome is a key.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        counts: dict[str, int] = dict.fromkeys(SETTLED_OUTCOMES, 0)
        for outcome, count in self._select("SELECT outcome, count(*) FROM helsebro_journal WHERE applied_at >= ? GROUP BY outcome", (since,)):
            if str(outcome) in counts:
                counts[str(outcome)] = int(count)
        return counts

    def refused_receipts(self, *, since: float) -> int:
        """How many AppRecs refusing a message Helsebro sent were journalled at or after *since* (Unix time).

        A receipt's journal type is ``APPREC^<8258 status>``; anything but 1 (OK) and 3 (OK, error in a
        part) refuses, as `helsebro find` reads it (router.ops.trail.Handover.receipt_accepted).

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        rows = self._select("SELECT count(*) FROM helsebro_journal WHERE applied_at >= ? AND outcome = 'receipt' "
                            "AND message_type NOT IN ('APPREC^1', 'APPREC^3')", (since,))
        return int(next(iter(rows))[0])

    def journal(self, *, control_id: str | None = None, patient_key: str | None = None, sender: str | None = None,
                outcome: str | None = None, since: float | None = None, limit: int = 100, until: float | None = None,
                destination: str | None = None) -> list[JournalEntry]:
        """The settled messages with this control id and/or patient key (and sender), newest first, at most *limit*.

        Kept as long as the applied keys (APPLIED_RETENTION_SECONDS). Applied messages
        come with what they wrote; the others (duplicates, filtered, forwarded only to
        other destinations, dead-lettered) with their outcome and note. *outcome* (one of
        JOURNAL_OUTCOMES), *sender* and *since* (Unix time) narrow the search, or make it
        alone: the newest rows are read first (the time index), so a rare outcome over
        14 days reads many rows before *limit* are found. *until* (Unix time, exclusive) and
        *destination* (one of the destinations besides the record it was routed to) narrow too.

        Raises:
            ValueError: no criterion was given (the journal is not listed whole), or an unknown outcome.
            RecordUnavailable: the database is unreachable.
        """
        if not (control_id or patient_key or sender or outcome or since is not None or until is not None or destination):
            raise ValueError("journal: give a control id, a patient key, a sender, an outcome or a time")
        if outcome is not None and outcome not in JOURNAL_OUTCOMES:
            raise ValueError(f"journal: {outcome!r} is not one of {', '.join(SETTLED_OUTCOMES)}")
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("control_id", control_id), ("patient_key", patient_key), ("sender", sender), ("outcome", outcome)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("applied_at >= ?")
            args.append(since)
        if until is not None:
            where.append("applied_at < ?")
            args.append(until)
        if destination:
            where.append("(',' || destinations || ',') LIKE ?")  # names are lower case, digits and dashes: no wildcard in them
            args.append(f"%,{destination},%")
        rows = self._select(f"SELECT {_JOURNAL_COLUMNS} FROM helsebro_journal WHERE {' AND '.join(where)}"
                            " ORDER BY applied_at DESC, key LIMIT ?", (*args, limit))
        return _entries(rows)

    def receipts(self, msg_ids: Sequence[str], *, from_senders: Mapping[str, str] | None = None) -> dict[str, JournalEntry]:
        """The newest receipt (an AppRec journalled under the MsgId it answers) for each of *msg_ids* that has one.

        *from_senders* maps a MsgId to the HER-id it was sent to: only that party's AppRec answers it (HIS 80415:2012
        §3.5: the AppRec's sender is the message's receiver), not another's naming the same OriginalMsgId.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        out: dict[str, JournalEntry] = {}
        wanted = list(dict.fromkeys(msg_ids))
        for start in range(0, len(wanted), _RECEIPT_CHUNK):
            chunk = wanted[start:start + _RECEIPT_CHUNK]
            rows = self._select(f"SELECT {_JOURNAL_COLUMNS} FROM helsebro_journal WHERE outcome = 'receipt' AND control_id IN"
                                f" ({', '.join('?' for _ in chunk)}) ORDER BY applied_at DESC, key", chunk)
            for entry in _entries(rows):
                expected = from_senders.get(entry.control_id) if from_senders else None
                if expected is None or entry.sender == expected:
                    out.setdefault(entry.control_id, entry)  # newest first
        return out

    def applied(self, keys: Sequence[str]) -> set[str]:
        """Return those of *keys* marked applied (by apply_batch or mark_applied) within the retention.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        if not keys:
            return set()
        with self._lock, self._transaction([]) as db:
            return {str(r[0]) for r in db.query_keys([(key,) for key in keys], 1, _APPLIED_AMONG)}

    def marked_at(self, keys: Sequence[str]) -> dict[str, float]:
        """Return when each of *keys* that is marked was marked (Unix time): `helsebro find` reads a destination's deliveries so.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        if not keys:
            return {}
        with self._lock, self._transaction([]) as db:
            return {str(k): float(at) for k, at in db.query_keys([(key,) for key in dict.fromkeys(keys)], 1, _MARKED_AMONG)}

    def mark_applied(self, keys: Sequence[str]) -> None:
        """Mark *keys* applied elsewhere (an external server's delivery ledger).

        Raises:
            RecordUnavailable: the database is unreachable or busy.
        """
        if not keys:
            return
        with self._lock, self._transaction([]) as db:
            stamp = time.time()
            db.execute_many(MARK_APPLIED, [(key, stamp) for key in sorted(set(keys))])  # in key order, as above
            self._purge_applied(db, stamp)
        with self._lock:
            self._batches_with_keys += 1

    def count_applied(self, prefix: str, *, since: float) -> int:
        """How many applied-message keys starting with *prefix* were marked at or after *since* (a destination's deliveries).

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._select("SELECT count(*) FROM helsebro_applied WHERE key LIKE ? ESCAPE '\\' AND applied_at >= ?", (pattern, since))
        return int(rows[0][0]) if rows else 0

    def seen(self, keys: Sequence[str], *, window_seconds: float) -> set[str]:
        """Return those of *keys* remembered less than *window_seconds* ago.

        Raises:
            RecordUnavailable: the database is unreachable.
        """
        if not keys:
            return set()
        since = time.time() - window_seconds
        marks = ", ".join("?" for _ in keys)
        rows = self._select(f"SELECT key FROM helsebro_seen WHERE key IN ({marks}) AND seen_at >= ?", (*keys, since))
        return {str(r[0]) for r in rows}

    def remember(self, keys: Sequence[str], *, window_seconds: float) -> None:
        """Remember *keys* as settled now; now and then forget those older than *window_seconds*.

        A key the database refuses to store (UnstorableContent: a KITH recipient's HER-id has
        no length limit) is left out, not raised: the others are remembered, and the caller (Settle,
        after the batch's publishes, outside any per-message handling) never sees a MessageError.

        Raises:
            RecordUnavailable: the database is unreachable or busy.
        """
        # Once each, in key order (as in _write_settled): the same ids in another order from another worker deadlocked.
        _storable(lambda chunk: self._remember(chunk, window_seconds), sorted(set(keys)))

    def _remember(self, keys: Sequence[str], window_seconds: float) -> None:
        # Each kind of key is forgotten past its own window only: one purge with the caller's window
        # (HL7 v2's 7 days) deleted the KITH MsgIds of 7 to 30 days, whose resent copies were answered
        # and applied again. A kind no call of this process named yet is left for a later purge.
        now = time.time()
        with self._lock, self._transaction([]) as db:
            db.execute_many(_REMEMBER, [(key, now) for key in keys])
            self._windows.update((_kind(key), window_seconds) for key in keys)
            if _due(self._remembered + 1, _FORGET_EVERY):
                for kind, window in sorted(self._windows.items()):
                    db.execute(_FORGET, (now - window, len(kind), kind))
        with self._lock:
            self._remembered += 1  # counted once committed: a refused write's purge stays due for the next call

    def read(self, resource_type: str, id: str) -> FhirJson | None:
        """Return the current version, or None when absent or deleted."""
        if not (TYPE_RE.fullmatch(resource_type) and ID_RE.fullmatch(id)):
            return None
        rows = self._select(
            "SELECT h.body FROM fhir_resource r JOIN fhir_history h ON h.rid = r.rid AND h.version = r.version"
            " WHERE r.type = ? AND r.id = ? AND r.deleted = 0",
            (resource_type, id),
        )
        return self._decode(rows[0][0]) if rows else None

    def versions(self, resource_type: str, id: str) -> list[StoredVersion]:
        """Return every version with its deletion flag, newest first."""
        rows = self._select(
            "SELECT h.version, h.last_updated, h.deleted, h.body FROM fhir_resource r JOIN fhir_history h ON h.rid = r.rid"
            " WHERE r.type = ? AND r.id = ? ORDER BY h.version DESC",
            (resource_type, id),
        )
        return [StoredVersion(int(v), str(t), bool(d), self._decode(b)) for v, t, d, b in rows]

    def history(self, resource_type: str, id: str) -> list[FhirJson]:
        """Return every version, newest first; a deletion appears as a stub."""
        return [v.resource for v in self.versions(resource_type, id)]

    def vread(self, resource_type: str, id: str, version: int) -> FhirJson | None:
        """Return one version, or None when it does not exist or is a deletion."""
        rows = self._select(
            "SELECT h.body FROM fhir_resource r JOIN fhir_history h ON h.rid = r.rid"
            " WHERE r.type = ? AND r.id = ? AND h.version = ? AND h.deleted = 0",
            (resource_type, id, version),
        )
        return self._decode(rows[0][0]) if rows else None

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[FhirJson]:
        """Search by `identifier`, `patient`, `subject` or `_id`; parameters are ANDed.

        Raises:
            InvalidContent: an unknown parameter, or an empty or malformed value.
        """
        if not TYPE_RE.fullmatch(resource_type):
            raise InvalidContent("unknown resource type", location="type")
        sql, args = search_sql(resource_type, params.items(), select="h.body")
        return [self._decode(row[0]) for row in self._select(sql, args)]

    def search_page(
        self, resource_type: str, params: Sequence[tuple[str, Sequence[Term]]], *, after: str | None, limit: int,
    ) -> tuple[int, list[FhirJson]]:
        """Return how many current resources match *params* and the first *limit* of them after id *after*.

        A REST search's page: only the page's bodies are read, however many match.

        Raises:
            InvalidContent: an unknown parameter, or an empty or malformed term.
        """
        if not TYPE_RE.fullmatch(resource_type):
            raise InvalidContent("unknown resource type", location="type")
        sql, args = terms_sql(resource_type, params, select="COUNT(*)")
        total = int(self._select(sql, args)[0][0])
        if limit == 0 or total == 0:
            return total, []
        sql, args = terms_sql(resource_type, params, select="h.body", after=after, limit=limit)
        return total, [self._decode(row[0]) for row in self._select(sql, args)]

    def counts(self) -> dict[str, int]:
        """Return how many current (not deleted) resources the record holds, per type."""
        rows = self._select("SELECT type, COUNT(*) FROM fhir_resource WHERE deleted = 0 GROUP BY type ORDER BY type", ())
        return {str(t): int(n) for t, n in rows}

    def _select(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._query(sql, args)

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the record cannot be used afterwards."""

    @abstractmethod
    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read outside any transaction, translating database errors."""

    @abstractmethod
    def _transaction(self, keys: list[int]) -> AbstractContextManager[Db]:
        """Open a write transaction holding the identity locks *keys*; commit on exit."""

    @abstractmethod
    def _decode(self, body: Any) -> FhirJson:
        """Turn a stored body column into a resource."""

    def __enter__(self) -> SqlRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
