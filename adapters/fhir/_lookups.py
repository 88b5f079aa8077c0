"""What a batch's Bundles need to read, fetched in two queries and kept true while the batch writes;
and what it writes, sent as one statement per kind.

Why: resolving an entry reads the record twice (which resource does
`identifier=system|value` name; what is its current version and digest). On
PostgreSQL every read is a round trip that waits, so a batch of 100 ADT
messages spent 1,400 waits on 700 entries. `Lookups.prefetch` asks both
questions for the whole batch at once; the writer then reads from here, and
tells it every write so the answers stay what the database would say. The
batch holds the identity locks of all its entries (see _store.py), so no other
writer can change these rows meanwhile.

Writes are held and sent by `flush` with executemany: a few statements for a
batch instead of eight per resource. A read the prefetch did not answer flushes
first, so the database it reads has every earlier write. An update whose
identifiers and references are those already indexed leaves its index rows alone
(`index_hash`): an ADT^A08 changes an Encounter's period, not its identifier.

Only the criteria Helsebro's mappings write are prefetched: one `identifier`
with a system and a value. Anything else, or anything not prefetched, is read
from the database as before (and remembered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.fhir._bundle import Criteria, Entry, identifiers

# A new resource's row is inserted, an existing one's updated by its key: never an upsert, so a writer
# that wrongly believed an identity new (no lock held) fails on UNIQUE (type, id) instead of
# overwriting it; a lost update fails on the history's primary key (rid, version), as before.
# Public for the backends: PostgreSQL sends each as one statement over arrays (see _postgres.py).
INSERT_RESOURCE = "INSERT INTO fhir_resource (rid, type, id, version, deleted, digest, index_hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
UPDATE_RESOURCE = "UPDATE fhir_resource SET version = ?, deleted = ?, digest = ?, index_hash = ? WHERE rid = ?"
INSERT_HISTORY = "INSERT INTO fhir_history (rid, version, deleted, last_updated, body) VALUES (?, ?, ?, ?, ?)"
INSERT_TOKEN = "INSERT INTO fhir_token (type, value, system, rid) VALUES (?, ?, ?, ?)"
INSERT_REF = "INSERT INTO fhir_ref (type, target, param, rid) VALUES (?, ?, ?, ?)"
DELETE_TOKENS = "DELETE FROM fhir_token WHERE rid = ?"
DELETE_REFS = "DELETE FROM fhir_ref WHERE rid = ?"
CURRENT_COLUMNS = "r.version, r.deleted, r.digest, r.rid, r.index_hash"


class Current:
    """The current version of one resource: what a write compares and bumps.

    `rid` and `index_hash` describe the database's row: its integer key (None until the
    resource's first row is sent) and the hash of the index rows sent for it (None when unknown).
    """

    __slots__ = ("deleted", "digest", "index_hash", "rid", "version")

    def __init__(self, version: int, deleted: bool, digest: str, rid: int | None = None, index_hash: int | None = None) -> None:
        self.version = version
        self.deleted = deleted
        self.digest = digest
        self.rid = rid
        self.index_hash = index_hash

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Current:
        """Read `CURRENT_COLUMNS`."""
        version, deleted, digest, rid, index_hash = row
        return cls(int(version), bool(deleted), digest, int(rid), None if index_hash is None else int(index_hash))


class Lookups:
    """Answers to `which ids match these criteria` and `what is current for this id`, for one transaction,
    and the transaction's writes, held until `flush` sends them as one statement per kind."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, Criteria], list[str]] = {}
        self.current: dict[tuple[str, str], Current | None] = {}
        self._holding: dict[tuple[str, str], set[Criteria]] = {}  # (type, id) -> cached criteria that list it
        self._history: list[tuple[Any, ...]] = []
        self._rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # the last version written per resource
        self._index: dict[tuple[str, str], tuple[int, set[tuple[str, str]], set[tuple[str, str]]]] = {}  # hash, tokens, refs

    def write(self, resource_type: str, id_: str, version: int, deleted: bool, now: str, text: str, digest: str, *,
              tokens: set[tuple[str, str]], refs: set[tuple[str, str]], index_hash: int) -> None:
        """Hold one version's statements: its history row, the current row, and its index rows.

        *index_hash* identifies *tokens* and *refs*: when the database's rows for the resource
        have the same, they are left as they are.
        """
        key = (resource_type, id_)
        flag = 1 if deleted else 0
        self._history.append((key, version, flag, now, text))
        self._rows[key] = (version, flag, digest, index_hash)
        self._index[key] = (index_hash, tokens, refs)

    def last_index_hash(self, resource_type: str, id_: str) -> int | None:
        """The index hash of the version last written for the resource: a held write's, else the database row's.

        Why: `Current.index_hash` is the database's row until flush; a version written since
        (an earlier entry or Bundle of this transaction) may have other references.
        """
        held = self._index.get((resource_type, id_))
        if held is not None:
            return held[0]
        cur = self.current.get((resource_type, id_))
        return cur.index_hash if cur is not None else None

    def held_refs(self, resource_type: str, id_: str) -> set[tuple[str, str]] | None:
        """The indexed references of the version written and not yet flushed (none for a deletion); None when none is held.

        Why: the database's fhir_ref rows say whose a resource is only once flush has sent them.
        """
        held = self._index.get((resource_type, id_))
        return held[2] if held is not None else None

    def flush(self, db: Any) -> None:
        """Send the held writes: history, current rows, stale index rows out, index rows in; in that order."""
        if not self._rows:
            return
        written = {key: cur for key in self._rows if (cur := self.current.get(key)) is not None}  # `wrote` set each one
        new = [key for key, cur in written.items() if cur.rid is None]
        for key, rid in zip(new, db.new_rids(len(new)) if new else (), strict=True):
            written[key].rid = rid
        db.execute_many(INSERT_HISTORY, [(written[key].rid, version, flag, now, text) for key, version, flag, now, text in self._history])
        fresh = set(new)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        stale: list[tuple[Any, ...]] = []
        tokens: list[tuple[Any, ...]] = []
        refs: list[tuple[Any, ...]] = []
        for key, (version, flag, digest, index_hash) in self._rows.items():
            cur = written[key]
            rid = cur.rid
            if key in fresh:
                inserts.append((rid, key[0], key[1], version, flag, digest, index_hash))
            else:
                updates.append((version, flag, digest, index_hash, rid))
                if cur.index_hash == index_hash:
                    continue  # the same identifiers and references: the index rows stay
                stale.append((rid,))
            _, own_tokens, own_refs = self._index[key]
            tokens.extend((key[0], value, system, rid) for system, value in own_tokens)
            refs.extend((key[0], target, param, rid) for param, target in own_refs)
            cur.index_hash = index_hash
        if inserts:
            db.execute_many(INSERT_RESOURCE, inserts)
        if updates:
            db.execute_many(UPDATE_RESOURCE, updates)
        if stale:
            db.execute_many(DELETE_TOKENS, stale)
            db.execute_many(DELETE_REFS, stale)
        if tokens:
            db.execute_many(INSERT_TOKEN, tokens)
        if refs:
            db.execute_many(INSERT_REF, refs)
        self._history, self._rows, self._index = [], {}, {}

    @classmethod
    def prefetch(cls, db: Any, bundles: Sequence[list[Entry]]) -> Lookups:
        """Fetch, in two queries sent together, the matches and current versions every entry of *bundles* will ask for."""
        out = cls()
        tokens: dict[tuple[str, str, str], Criteria] = {}
        ids: set[tuple[str, str]] = set()
        for entries in bundles:
            for e in entries:
                token = _identifier_token(e.criteria)
                if token is not None:
                    tokens[(e.resource_type, *token)] = e.criteria  # type: ignore[assignment]  # narrowed by _identifier_token
                if e.id is not None:
                    ids.add((e.resource_type, e.id))
                own = (e.resource or {}).get("id")
                if isinstance(own, str) and own:
                    ids.add((e.resource_type, own))
        for key, criteria in tokens.items():
            out.found[(key[0], criteria)] = []
        matches = db.query_keys_later(
            list(tokens), 3,
            "WITH q (type, system, value) AS ({}) "
            "SELECT t.type, t.system, t.value, r.id, " + CURRENT_COLUMNS + " FROM q JOIN fhir_token t ON t.type = q.type AND t.value = q.value "
            "AND t.system = q.system JOIN fhir_resource r ON r.rid = t.rid WHERE r.deleted = 0",
        )
        # Every id the entries name, also those a match may find: the second query need not wait for the first.
        current_sql = "WITH q (type, id) AS ({}) SELECT r.type, r.id, " + CURRENT_COLUMNS + " FROM q JOIN fhir_resource r ON r.type = q.type AND r.id = q.id"
        by_id = db.query_keys_later(list(ids), 2, current_sql)
        for rtype, system, value, found_id, *row in matches():
            criteria = tokens[(rtype, system, value)]
            out.found[(rtype, criteria)].append(found_id)
            out.current[(rtype, found_id)] = Current.from_row(row)
        for (rtype, criteria), found in out.found.items():
            found.sort()  # as search_sql orders: by id
            for rid in found:
                out._holding.setdefault((rtype, rid), set()).add(criteria)
        for rtype, id_, *row in by_id():
            out.current[(rtype, id_)] = Current.from_row(row)
        for typed_id in ids:
            if typed_id not in out.current:
                out.current[typed_id] = None
        return out

    def remember_found(self, resource_type: str, criteria: Criteria, found: list[str]) -> None:
        """Keep an `identifier=system|value` match read from the database for the rest of the transaction
        (`wrote` keeps it true; other conditions are not kept)."""
        self.found[(resource_type, criteria)] = found
        for rid in found:
            self._holding.setdefault((resource_type, rid), set()).add(criteria)

    def wrote(self, resource_type: str, id_: str, body: dict[str, Any], *, version: int, digest: str, deleted: bool,
              tokens: set[tuple[str, str]] | None = None) -> None:
        """Follow a write: its current version, and which cached criteria now list it.

        *tokens* are the body's (system, value) identifiers when the caller has them already.
        """
        key = (resource_type, id_)
        before = self.current.get(key)  # the database's row stays what it was until flush
        self.current[key] = Current(version, deleted, digest, before.rid, before.index_hash) if before else Current(version, deleted, digest)
        for criteria in self._holding.pop((resource_type, id_), ()):
            found = self.found.get((resource_type, criteria))
            if found is not None and id_ in found:
                found.remove(id_)
        if deleted:
            return
        for system, value in set(identifiers(body)) if tokens is None else tokens:
            criteria = (("identifier", f"{system}|{value}"),)
            found = self.found.get((resource_type, criteria))
            if found is not None:
                found.append(id_)
                found.sort()
                self._holding.setdefault((resource_type, id_), set()).add(criteria)


def is_identifier_token(criteria: Criteria | None) -> bool:
    """True for the one kind of condition a batch keeps answers for: `identifier=system|value`."""
    return _identifier_token(criteria) is not None


def _identifier_token(criteria: Criteria | None) -> tuple[str, str] | None:
    if criteria is None or len(criteria) != 1 or criteria[0][0] != "identifier":
        return None
    system, bar, value = criteria[0][1].partition("|")
    if not bar or not system or not value:
        return None
    return system, value
