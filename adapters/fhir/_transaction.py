"""Apply checked Bundle entries inside one open database transaction.

Three passes, as FHIR R4 §3.1.0.11.2 has a transaction find before it writes: resolve
every entry's identity (conditional matches included), then rewrite `urn:uuid:`
references to the ids found, then write. The writes go in Bundle order, not FHIR's
DELETE, POST, PUT/PATCH order: only two entries on one resource can tell, and there the
later one wins, which a document's replace (DELETE by `_tag`, then its PUTs) relies on.
Committing, rolling back and locking are the store's job.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import orjson

from adapters.fhir._bundle import Criteria, Entry, identifiers, rewrite
from adapters.fhir._lookups import CURRENT_COLUMNS, Current, Lookups, is_identifier_token
from adapters.fhir._merges import MergeTargets, keep_merges
from adapters.fhir._owners import DOCUMENT_SYSTEM, PatientChecks, patient_refs, patients_of, retired_version
from adapters.fhir._patch import apply_patch, check_owner
from adapters.fhir._search import references, search_sql
from router.contracts import AppliedEntry, EntryOutcome, FhirJson
from router.errors import InvalidContent, MultipleMatches

Action = Literal["write", "delete", "noop", "delete-all", "retire-all", "patch"]
"""What an entry will do once its identity is known."""


class Db(Protocol):
    """The calls a transaction needs from a backend, with `?` placeholders."""

    def query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run *sql* and return its rows."""
        ...

    def execute(self, sql: str, args: Sequence[Any]) -> None:
        """Run *sql* for its effect."""
        ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run *sql* once per row, for its effect."""
        ...

    def query_keys(self, keys: Sequence[tuple[str, ...]], width: int, sql: str) -> list[tuple[Any, ...]]:
        """Run *sql*, whose `{}` stands for a row source of *keys* (each *width* text values), and return its rows.

        SQLite fills in VALUES lists, in chunks; PostgreSQL one unnest of arrays.
        """
        ...

    def query_keys_later(self, keys: Sequence[tuple[str, ...]], width: int, sql: str) -> Callable[[], list[tuple[Any, ...]]]:
        """Send query_keys's query now; return a function that gives its rows.

        PostgreSQL queues it in the pipeline, so the reads a batch starts with share one
        round trip; SQLite runs it at once.
        """
        ...

    def new_rids(self, n: int) -> Sequence[int]:
        """Return *n* unused integer keys for new fhir_resource rows."""
        ...


_blake2b = hashlib.blake2b  # bound once, not looked up in the module per write

_CURRENT = "SELECT " + CURRENT_COLUMNS + " FROM fhir_resource r WHERE r.type = ? AND r.id = ?"


def apply_entries(db: Db, entries: list[Entry], now: str, lookups: Lookups | None = None) -> tuple[AppliedEntry, ...]:
    """Resolve, rewrite and write *entries*; return one AppliedEntry per entry, in order.

    *lookups* holds what the transaction already read (prefetched for a batch)
    and the writes it holds back; the caller then flushes it before committing.
    Without it, reads go to the database and the writes are flushed here.

    Raises:
        InvalidContent: a condition matches several resources, or a reference dangles.
    """
    own = lookups is None
    writer = _Writer(db, now, Lookups() if lookups is None else lookups)
    plans = [writer.resolve(e) for e in entries]
    for e, (action, id_) in zip(entries, plans, strict=True):
        if e.if_match is not None:
            writer.check_version(e, action, id_)
    # A conditional DELETE that matches several resources deletes them all, except
    # the ones this Bundle writes: "replace the document's resources with these"
    # (Helsebro's document change and cancel; see router/mapping/engine.py).
    written = {(e.resource_type, id_) for e, (action, id_) in zip(entries, plans) if action in ("write", "patch")}
    targets = {
        e.full_url: f"{e.resource_type}/{id_}"
        for e, (_, id_) in zip(entries, plans, strict=True)
        if e.full_url and e.resource is not None and id_
    }
    # Read only from here on (_content copies the top level; nested values go out as JSON): no copy when nothing is rewritten.
    resources = [rewrite(e.resource, targets, e.location, copy=False) if e.resource is not None else None for e in entries]
    out = []
    for e, (action, id_), res in zip(entries, plans, resources, strict=True):
        if action in ("delete-all", "retire-all"):
            ids = [i for i in id_.split(",") if i and (e.resource_type, i) not in written]
            out.append(writer.delete_all(e, ids, retire=action == "retire-all"))
        else:
            out.append(writer.perform(e, action, id_, res, targets=targets))
    writer.check_named()  # after every write: a record this Bundle names may be written by a later entry
    if own:
        writer.flush()
    return tuple(out)


class _Writer(PatientChecks, MergeTargets):
    """The statements of one transaction, plus what earlier entries already claimed."""

    def __init__(self, db: Db, now: str, lookups: Lookups) -> None:
        self._db = db
        self._now = now
        self._lookups = lookups  # matches and current versions: read once, kept true by _write
        self._claimed: set[tuple[str, str]] = set()
        self._created: dict[tuple[str, Criteria], list[str]] = {}  # conditions this Bundle creates for, before the write
        self._written: list[tuple[Entry, FhirJson]] = []  # the versions this Bundle wrote by its entries, for check_named
        self._owners: dict[tuple[str, str], set[str]] = {}  # (type, id) -> its Patient references, as read; dropped when written
        self._resolved: dict[str, tuple[Entry, str]] = {}  # fullUrl -> (entry, id): a merge's survivor (MergeTargets)

    def flush(self) -> None:
        """Send the writes held so far."""
        self._lookups.flush(self._db)

    def resolve(self, entry: Entry) -> tuple[Action, str]:
        """Decide what *entry* does and to which id."""
        action, id_ = self._resolve(entry)
        if entry.full_url is not None:
            self._resolved[entry.full_url] = (entry, id_)
        return action, id_

    def _resolve(self, entry: Entry) -> tuple[Action, str]:
        if entry.method == "PATCH":
            return self._resolve_patch(entry)
        if entry.id is not None:  # a merge's retired Patient: the old record, wherever it sits (_merges.py)
            id_ = self.retired_id(entry, entry.id) if entry.resource_type == "Patient" else entry.id
            self._claimed.add((entry.resource_type, id_))
            return ("delete" if entry.method == "DELETE" else "write"), id_
        if entry.criteria is None:  # plain POST: the server names it
            return "write", self._new_id(entry)
        matches = self._find(entry.resource_type, entry.criteria)
        if entry.method == "DELETE" and any(k == "_tag" and v.startswith(DOCUMENT_TAG) for k, v in entry.criteria):
            # Helsebro's document change/cancel: what the document no longer says is
            # retired as entered-in-error, not erased (see _owners.retired_version).
            return "retire-all", ",".join(matches)
        if entry.method == "DELETE" and len(matches) > 1:
            return "delete-all", ",".join(matches)
        if len(matches) > 1:
            raise MultipleMatches("condition has multiple matches", location=entry.location)
        if entry.method == "DELETE":
            return ("delete", matches[0]) if matches else ("noop", "")
        if matches:
            return ("noop" if entry.method == "POST" else "write"), matches[0]
        id_ = self._new_id(entry)
        self._created[(entry.resource_type, entry.criteria)] = [id_]  # a second entry of this Bundle with it finds this one
        return "write", id_

    def check_version(self, entry: Entry, action: Action, id_: str) -> None:
        """Refuse *entry* unless the resource it resolved to is stored at the version its ifMatch names.

        Checked after every entry is resolved and before any is written: the version is the
        one the client read, before this transaction (FHIR's 412 Precondition Failed).

        Raises:
            InvalidContent: nothing stored there, several resources matched, or another version is current.
        """
        current = self._current(entry.resource_type, id_) if id_ and action not in ("delete-all", "retire-all") else None
        if current is None or current.deleted or current.version != entry.if_match:
            raise InvalidContent("the stored version is not the one the entry's ifMatch names", location=f"{entry.location}.request.ifMatch")

    def _resolve_patch(self, entry: Entry) -> tuple[Action, str]:
        """A PATCH changes the one resource its id or condition finds.

        None found: as FHIR's 404 for a patch of no resource, the transaction is
        refused (an M5 withdrawing a prescription the record never had), unless the
        entry says to skip it (PATCH_ABSENT: an M9.6 lists prescriptions of others).
        Found, it is checked in perform to be the patient's the entry names (Entry.owner).
        """
        if entry.criteria is not None:
            matches = self._find(entry.resource_type, entry.criteria)
        else:  # Type/id (parse_bundle refuses a PATCH with neither)
            current = self._current(entry.resource_type, entry.id) if entry.id is not None else None
            matches = [entry.id] if entry.id is not None and current is not None and not current.deleted else []
        if len(matches) > 1:
            raise MultipleMatches("condition has multiple matches", location=entry.location)
        if not matches:
            if entry.skip_absent:
                return "noop", ""
            raise InvalidContent(f"the {entry.resource_type} this message changes is not in the record", location=entry.location)
        self._claimed.add((entry.resource_type, matches[0]))
        return "patch", matches[0]

    def perform(self, entry: Entry, action: Action, id_: str, resource: FhirJson | None, *, targets: dict[str, str] | None = None) -> AppliedEntry:
        """Carry out one resolved entry; *targets* (fullUrl → Type/id) resolves a PATCH's owner condition."""
        if action == "patch" and resource is not None:
            stored = self._body(entry.resource_type, id_)
            if stored is None:  # deleted by an earlier entry of this Bundle
                raise InvalidContent(f"the {entry.resource_type} this message changes is not in the record", location=entry.location)
            if entry.owner:  # checked on the stored resource, so also on one an earlier entry of this Bundle wrote
                check_owner(stored, entry.owner, targets or {}, entry.resource_type, entry.location, self._merged_into, self._body)
            patched = apply_patch(stored, resource, entry.resource_type, f"{entry.location}.resource")
            before, after = patients_of(stored), patients_of(patched)
            if before and before != after:  # a move (an A45 gives a stay to another patient), or a patch that drops the patient
                if not entry.owner or not after:
                    self._refuse_other_patient(entry, id_, after, "changes")  # only a PATCH that names whose it was may move it
                self._move_recorded_in(f"{entry.resource_type}/{id_}", before, after, resource.get("meta"))
            return self._wrote(entry, patched, self._put(entry.resource_type, id_, patched))
        if action == "write" and resource is not None:
            return self._wrote(entry, resource, self._put(entry.resource_type, id_, resource, writer=entry))
        if action == "noop" and entry.method == "POST" and resource is not None and id_:
            self._check_same_patient(entry, id_, resource)
        current = self._current(entry.resource_type, id_) if id_ else None
        if action == "noop" or current is None or current.deleted:
            return AppliedEntry(entry.resource_type, id_, current.version if current else 0, "unchanged")
        version = current.version + 1
        stub = {"resourceType": entry.resource_type, "id": id_, "meta": {"versionId": str(version), "lastUpdated": self._now}}
        self._write(entry.resource_type, id_, version, stub, digest="", deleted=True)
        return AppliedEntry(entry.resource_type, id_, version, "deleted")

    def _wrote(self, entry: Entry, resource: FhirJson, applied: AppliedEntry) -> AppliedEntry:
        """Keep a new version written by *entry* for check_named (an unchanged one names nothing anew)."""
        if applied.outcome != "unchanged":
            self._written.append((entry, resource))
        return applied


    def delete_all(self, entry: Entry, ids: list[str], *, retire: bool = False) -> AppliedEntry:
        """Delete (or, for a document, retire) every resource a conditional DELETE found; report the last."""
        last = AppliedEntry(entry.resource_type, "", 0, "unchanged")
        for id_ in ids:
            body = self._body(entry.resource_type, id_) if retire else None
            retired = retired_version(body) if body is not None else None
            if retired is not None:
                last = self._put(entry.resource_type, id_, retired)
            else:
                last = self.perform(entry, "delete", id_, None)
        return last


    def _put(self, resource_type: str, id_: str, resource: FhirJson, *, writer: Entry | None = None) -> AppliedEntry:
        """Write *resource* as the next version of *id_*, or nothing when its content is unchanged.

        With *writer* (an update entry: PUT by condition or by id), a version that would
        give the stored resource another patient is refused (_refuse_other_patient).
        Why (patient safety): an update finds its resource by identifier alone, and a
        sender reusing an order, visit or prescription number for another patient would
        otherwise move that patient's order, stay or prescription without a word. The
        check reads the stored body only when the version's indexed identifiers and
        references differ from the stored ones (`index_hash`): an A08 that changes an
        Encounter's period costs nothing more.
        """
        content = _content(resource, id_)
        try:
            canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            # A mapping's number() gives a whole number of any size (an OBX-5 of 25 digits); JSON as the record
            # stores it holds 64 bits. Raised as it was (a TypeError), it broke the whole batch, every message
            # of which was then dead-lettered as an internal error. The value is not quoted: it is the message's.
            # orjson's own words name the kind (fixed texts, never a value): a number, or nesting past its 254 levels.
            kind = "nesting deeper than 254 levels" if "ecursion" in str(exc) else "a whole number beyond 64 bits" if "64-bit" in str(exc) else "a value JSON cannot hold"
            raise InvalidContent(f"the {resource_type} holds a value the record cannot store ({kind})",
                                 location=writer.location if writer is not None else resource_type) from exc
        digest = _RESTATED.get(canonical) or _blake2b(canonical, digest_size=16).hexdigest()
        current = self._current(resource_type, id_)
        if current is not None and not current.deleted and current.digest == digest:
            _restated(canonical, digest)
            return AppliedEntry(resource_type, id_, current.version, "unchanged")
        if writer is not None and resource_type == "Patient":  # a changed Patient keeps its merges (_merges.py)
            stored = self._body(resource_type, id_) if current is not None and not current.deleted else None
            if (kept := keep_merges(stored, content, self._body)) is not content:
                content, canonical = kept, orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
                digest = _blake2b(canonical, digest_size=16).hexdigest()
                if current is not None and not current.deleted and current.digest == digest:
                    return AppliedEntry(resource_type, id_, current.version, "unchanged")
        version = current.version + 1 if current else 1
        meta = {"versionId": str(version), "lastUpdated": self._now, **content.get("meta", {})}
        # resourceType, id and meta first, then the rest of the content in its order: merged in C, the
        # three set again after (their places stay first), not a generator over the members.
        body = {"resourceType": resource_type, "id": id_, "meta": meta, **content}
        body["resourceType"], body["id"], body["meta"] = resource_type, id_, meta
        tokens = set(identifiers(body))
        refs = set(references(body))
        index_hash = _index_hash(tokens, refs)
        if writer is not None and current is not None and not current.deleted and self._lookups.last_index_hash(resource_type, id_) != index_hash:
            # Checked also when the version names no Patient: else an update that drops the subject
            # (or names it by an absolute URL or identifier only) would leave a resource with none, which
            # the next update may give to anyone.
            self._refuse_other_patient(writer, id_, patient_refs(refs), "updates", replaces=body)
        self._write(resource_type, id_, version, body, digest=digest, deleted=False, index=(tokens, refs, index_hash))
        outcome: EntryOutcome = "updated" if current is not None and not current.deleted else "created"
        return AppliedEntry(resource_type, id_, version, outcome)

    def _write(self, resource_type: str, id_: str, version: int, body: FhirJson, *, digest: str, deleted: bool,
               index: tuple[set[tuple[str, str]], set[tuple[str, str]], int] | None = None) -> None:
        text = orjson.dumps(body).decode()
        self._owners.pop((resource_type, id_), None)  # Lookups.held_refs now says whose it is
        if index is not None:
            tokens, refs, index_hash = index
        else:
            tokens = set() if deleted else set(identifiers(body))
            refs = set() if deleted else set(references(body))
            index_hash = _index_hash(tokens, refs)
        self._lookups.write(resource_type, id_, version, deleted, self._now, text, digest, tokens=tokens, refs=refs, index_hash=index_hash)
        self._lookups.wrote(resource_type, id_, body, version=version, digest=digest, deleted=deleted, tokens=tokens)

    def _find(self, resource_type: str, criteria: Criteria) -> list[str]:
        created = self._created.get((resource_type, criteria))
        if created is not None:
            return created
        # Only `identifier=system|value` answers are kept for the batch: Lookups.wrote keeps
        # those true as resources are written; any other condition asks the database again.
        token = is_identifier_token(criteria)
        known = self._lookups.found.get((resource_type, criteria)) if token else None
        if known is not None:
            return list(known)
        sql, args = search_sql(resource_type, criteria, select="r.id")
        self._lookups.flush(self._db)  # the database must hold every earlier write before it answers
        found = [row[0] for row in self._db.query(sql, args)]
        if token:
            self._lookups.remember_found(resource_type, criteria, found)
        return list(found)

    def _current(self, resource_type: str, id_: str) -> Current | None:
        key = (resource_type, id_)
        if key in self._lookups.current:
            return self._lookups.current[key]
        self._lookups.flush(self._db)
        rows = self._db.query(_CURRENT, key)
        current = Current.from_row(rows[0]) if rows else None
        self._lookups.current[key] = current
        return current

    def _new_id(self, entry: Entry) -> str:
        # Keep the sender's id when it is free (or names a deleted resource), so ids stay
        # deterministic across replays; never take over another live resource's id.
        own = (entry.resource or {}).get("id")
        key = (entry.resource_type, own or "")
        current = self._current(entry.resource_type, own) if own and key not in self._claimed else None
        if not own or key in self._claimed or (current is not None and not current.deleted):
            own = str(uuid.uuid4())
            key = (entry.resource_type, own)
        self._claimed.add(key)
        return own


_RESTATED: dict[bytes, str] = {}
"""Digests of contents lately restated unchanged, by their canonical JSON (the bytes the digest is of).

Why: most entries of an ADT message restate what the record holds (the sending facility;
the ward, room and bed), and blake2b of the content was the dearest single call of such an
entry; finding the bytes in a dict costs a tenth of it. Only contents a write found unchanged
are kept (reference data, mostly), at most _RESTATED_MOST: then it starts over."""
_RESTATED_MOST = 512


def _restated(canonical: bytes, digest: str) -> None:
    """Remember that *canonical* has *digest*: the next write of the same content skips the hash."""
    if canonical not in _RESTATED:
        if len(_RESTATED) >= _RESTATED_MOST:
            _RESTATED.clear()
        _RESTATED[canonical] = digest


def _index_hash(tokens: set[tuple[str, str]], refs: set[tuple[str, str]]) -> int:
    """A stable 64-bit hash of a version's index rows: equal for equal sets, in any process."""
    raw = orjson.dumps([sorted(tokens), sorted(refs)]) if tokens or refs else b"[[],[]]"
    return int.from_bytes(_blake2b(raw, digest_size=8).digest(), "big", signed=True)


DOCUMENT_TAG = DOCUMENT_SYSTEM + "|"
"""`_tag` value prefix of Helsebro's document identity (router/mapping/engine.py writes it)."""

def _content(resource: FhirJson, id_: str) -> FhirJson:
    """Return *resource* with its id set and the store-owned meta fields removed (*resource* itself when it has them so already)."""
    meta = resource.get("meta")
    if resource.get("id") == id_ and (meta is None or (isinstance(meta, dict) and meta and "versionId" not in meta and "lastUpdated" not in meta)):
        return resource  # as a mapping makes it: no copy, for callers that only read it
    content = dict(resource)
    content["id"] = id_
    meta = content.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidContent("meta must be an object", location=f"{content.get('resourceType')}.meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if meta:
            content["meta"] = meta
        else:
            del content["meta"]
    return content


