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

Writes are held and sent by `flush` with executemany: five statements for a
batch instead of eight per resource. A read the prefetch did not answer flushes
first, so the database it reads has every earlier write.

Only the criteria Helsebro's mappings write are prefetched: one `identifier`
with a system and a value. Anything else, or anything not prefetched, is read
from the database as before (and remembered).
"""

from __future__ import annotations

from typing import Any, Sequence

from adapters.fhir._bundle import Criteria, Entry, identifiers

_CHUNK = 300  # rows per IN list: well under SQLite's bound-parameter limit

_UPSERT = (
    "INSERT INTO fhir_resource (type, id, version, deleted, last_updated, digest, body) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, "
    "last_updated = excluded.last_updated, digest = excluded.digest, body = excluded.body"
)
_HISTORY = "INSERT INTO fhir_history (type, id, version, deleted, last_updated, body) VALUES (?, ?, ?, ?, ?, ?)"


class Current:
    """The current version of one resource: what a write compares and bumps."""

    __slots__ = ("version", "deleted", "digest")

    def __init__(self, version: int, deleted: bool, digest: str) -> None:
        self.version = version
        self.deleted = deleted
        self.digest = digest


class Lookups:
    """Answers to `which ids match these criteria` and `what is current for this id`, for one transaction,
    and the transaction's writes, held until `flush` sends them as one statement per kind."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, Criteria], list[str]] = {}
        self.current: dict[tuple[str, str], Current | None] = {}
        self._holding: dict[tuple[str, str], set[Criteria]] = {}  # (type, id) -> cached criteria that list it
        self._history: list[tuple[Any, ...]] = []
        self._rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # the last version written per resource
        self._clear: set[tuple[str, str]] = set()  # resources whose index rows in the database are stale
        self._tokens: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._refs: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def write(self, resource_type: str, id_: str, version: int, deleted: bool, now: str, text: str, digest: str, *, existed: bool,
              tokens: set[tuple[str, str]], refs: set[tuple[str, str]]) -> None:
        """Hold one version's statements: its history row, the current row, and its index rows."""
        key = (resource_type, id_)
        flag = 1 if deleted else 0
        self._history.append((resource_type, id_, version, flag, now, text))
        self._rows[key] = (resource_type, id_, version, flag, now, digest, text)
        if existed:
            self._clear.add(key)
        self._tokens[key] = tokens
        self._refs[key] = refs

    def flush(self, db: Any) -> None:
        """Send the held writes: history, current rows, stale index rows out, index rows in; in that order."""
        if not self._rows:
            return
        db.execute_many(_HISTORY, self._history)
        db.execute_many(_UPSERT, list(self._rows.values()))
        if self._clear:
            db.execute_many("DELETE FROM fhir_token WHERE type = ? AND id = ?", list(self._clear))
            db.execute_many("DELETE FROM fhir_ref WHERE type = ? AND id = ?", list(self._clear))
        tokens = [(t, i, system, value) for (t, i), pairs in self._tokens.items() for system, value in pairs]
        if tokens:
            db.execute_many("INSERT INTO fhir_token (type, id, system, value) VALUES (?, ?, ?, ?)", tokens)
        refs = [(t, i, param, target) for (t, i), pairs in self._refs.items() for param, target in pairs]
        if refs:
            db.execute_many("INSERT INTO fhir_ref (type, id, param, target) VALUES (?, ?, ?, ?)", refs)
        # What was sent is in the database now: a later write of one of these clears its rows first.
        self._clear = set()
        self._history, self._rows, self._tokens, self._refs = [], {}, {}, {}

    @classmethod
    def prefetch(cls, db: Any, bundles: Sequence[list[Entry]]) -> Lookups:
        """Fetch, in two queries, the matches and current versions every entry of *bundles* will ask for."""
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
        rows = _in_chunks(
            db, list(tokens), 3,
            "WITH q (type, system, value) AS (VALUES {}) "
            "SELECT t.type, t.system, t.value, r.id FROM q JOIN fhir_token t ON t.type = q.type AND t.value = q.value AND t.system = q.system "
            "JOIN fhir_resource r ON r.type = t.type AND r.id = t.id WHERE r.deleted = 0",
        )
        for rtype, system, value, rid in rows:
            criteria = tokens[(rtype, system, value)]
            out.found[(rtype, criteria)].append(rid)
            ids.add((rtype, rid))
        for (rtype, criteria), found in out.found.items():
            found.sort()  # as search_sql orders: by id
            for rid in found:
                out._holding.setdefault((rtype, rid), set()).add(criteria)
        for key in ids:
            out.current[key] = None
        current_sql = "WITH q (type, id) AS (VALUES {}) SELECT r.type, r.id, r.version, r.deleted, r.digest FROM q JOIN fhir_resource r ON r.type = q.type AND r.id = q.id"
        for rtype, rid, version, deleted, digest in _in_chunks(db, list(ids), 2, current_sql):
            out.current[(rtype, rid)] = Current(int(version), bool(deleted), digest)
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
        self.current[(resource_type, id_)] = Current(version, deleted, digest)
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


def _in_chunks(db: Any, keys: list[tuple[str, ...]], width: int, sql: str) -> list[tuple[Any, ...]]:
    """Run *sql* with its `{}` replaced by one row of placeholders per key, in chunks.

    A joined VALUES list, not `(a, b) IN (…)`: both planners then probe the
    index once per row instead of scanning.
    """
    rows: list[tuple[Any, ...]] = []
    row = "(" + ", ".join("?" for _ in range(width)) + ")"
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        rows.extend(db.query(sql.format(", ".join(row for _ in chunk)), [v for key in chunk for v in key]))
    return rows
