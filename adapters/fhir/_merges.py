"""What a new version of a Patient keeps of its merges (A34, A40) and identifier changes (A47).

Why a room of its own: an update replaces the whole Patient, and a sender's next message
about the survivor (an A08, a second merge) restates its PID, which lists its current
identifiers only. Written as sent, that version would drop the old identifiers the merge
moved to the survivor (`use: old`) and its `replaces` links, and a search by the old
record's number would find no one: the next message under it would make a second Patient
of the person. The record, not the mapping, keeps them, since only the record knows what
the stored version holds. `_transaction._Writer._put` calls keep_merges for each Patient
an entry writes, only when the version differs from the stored one.

It also decides which record a merge retires (MergeTargets, mixed into the writer): the
mapping writes the old Patient at the id its old identity gives (PUT Patient/id, what any
FHIR server can apply), but the old record may sit at another id (an A47 changed its
identity, or it was created over REST with an id of its own). Written as addressed, a new
inactive stub would stand beside the real record, which stayed active with the number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from adapters.fhir._bundle import Criteria, Entry
from router.contracts import FhirJson
from router.errors import MultipleMatches

if TYPE_CHECKING:
    from adapters.fhir._lookups import Current, Lookups
    from adapters.fhir._transaction import Db

_VERSIONS = (
    "SELECT h.body FROM fhir_resource r JOIN fhir_history h ON h.rid = r.rid"
    " WHERE r.type = 'Patient' AND r.id = ? AND h.deleted = 0"
)
"""Every version of one Patient, for what it once held."""


class MergeTargets:
    """Which record a merge's retiring entry writes, mixed into the transaction's writer."""

    _db: Db
    _lookups: Lookups
    _resolved: dict[str, tuple[Entry, str]]  # fullUrl -> (entry, the id it resolved to), in Bundle order

    def _find(self, resource_type: str, criteria: Criteria) -> list[str]:
        raise NotImplementedError  # the writer's: what a condition finds, in this transaction

    def _current(self, resource_type: str, id_: str) -> Current | None:
        raise NotImplementedError  # the writer's: the current version of a resource

    def _body(self, resource_type: str, id_: str) -> FhirJson | None:
        raise NotImplementedError  # PatientChecks': the current body

    def retired_id(self, entry: Entry, id_: str) -> str:
        """Return the id of the Patient *entry* (PUT Patient/*id_*, `replaced-by` an earlier entry's survivor) retires.

        The record the old identifiers (the survivor's `use: old` ones, MRG-1's) find,
        the survivor aside (it holds them once merged); none: *id_* when a record is
        there; else, the merge applied before, the record the survivor already replaces
        that once held one of them; else *id_* (a new inactive record: the old one was
        never in this record). Any other entry: *id_*.

        Raises:
            MultipleMatches: the old identifiers find more than one other Patient.
        """
        links = (entry.resource or {}).get("link") if entry.resource_type == "Patient" and entry.method == "PUT" else None
        to = next((_other(link) for link in links or () if isinstance(link, dict) and link.get("type") == "replaced-by"), None)
        survivor = self._resolved.get(to) if to is not None else None
        if survivor is None or survivor[0].resource is None:
            return id_
        olds = [_key(i) for i in survivor[0].resource.get("identifier") or () if isinstance(i, dict) and i.get("use") == "old"]
        found = {m for system, value in olds if isinstance(system, str) and isinstance(value, str)
                 for m in self._find("Patient", (("identifier", f"{system}|{value}"),)) if m != survivor[1]}
        if len(found) > 1:
            raise MultipleMatches("the identifiers the merge retires (MRG-1) find several Patients", location=entry.location)
        if found:
            return found.pop()
        current = self._current("Patient", id_)
        if current is not None and not current.deleted:
            return id_
        for link in (self._body("Patient", survivor[1]) or {}).get("link") or ():
            other = _other(link) if isinstance(link, dict) and link.get("type") == "replaces" else None
            if other is not None and other.startswith("Patient/") and self._once_held(other[8:], set(olds)):
                return other[8:]
        return id_

    def _once_held(self, id_: str, olds: set[tuple[Any, Any]]) -> bool:
        """Whether some version of Patient *id_* held one of *olds* (system, value)."""
        self._lookups.flush(self._db)
        for (body,) in self._db.query(_VERSIONS, (id_,)):
            version = orjson.loads(body) if isinstance(body, (str, bytes)) else body
            if any(isinstance(i, dict) and _key(i) in olds for i in version.get("identifier") or ()):
                return True
        return False


def keep_merges(stored: FhirJson | None, new: FhirJson, read: Callable[[str, str], FhirJson | None]) -> FhirJson:
    """Return *new* (a Patient version) with what the merges before it made, or *new* itself when it lacks nothing.

    Kept from *stored* (the current version): each `use: old` identifier and each
    `replaces` link *new* lacks. Taken from each Patient *new* says it `replaces`
    (*read*, type and id → its current body, not yet retired when the survivor's entry
    comes first, as the mappings write it): every identifier *new* lacks, as `use: old`.
    That moves the numbers an earlier merge gave the old record (B merged into A, then A
    into C: B's number finds C) and those MRG-1 did not repeat (a local number), which
    the retired record no longer holds. A record *new* retires (it is `replaced-by`
    another) keeps its links but no identifier: they moved to its survivor. Identifiers
    are compared by system and value; what *new* says comes first, so a merge applied
    again writes the same version. A version that restates a number *stored* holds as
    `use: old` as current (a legacy system still sending under the merged-away record's number,
    which found the survivor) keeps it old and keeps *stored*'s other identifiers as they were:
    else the survivor would lose its own number and be found by the old one alone.
    """
    identifiers = [i for i in new.get("identifier") or [] if isinstance(i, dict)]
    olds = {_key(i) for i in (stored or {}).get("identifier") or [] if isinstance(i, dict) and i.get("use") == "old"}
    late = any(_key(i) in olds and i.get("use") != "old" for i in identifiers)
    if late:  # a message under a merged-away record's number: that number stays old, the survivor's own stay
        identifiers = [{**i, "use": "old"} if _key(i) in olds else i for i in identifiers]
    links = [link for link in new.get("link") or [] if isinstance(link, dict)]
    have = {_key(i) for i in identifiers}
    linked = {_other(link) for link in links}
    added_ids: list[dict[str, Any]] = []
    added_links: list[dict[str, Any]] = []
    retired = any(link.get("type") == "replaced-by" for link in links)
    sources: list[tuple[list[Any], bool, bool]] = []  # (identifiers, all of them or only the old ones, mark them old)
    if stored is not None:
        sources.append((stored.get("identifier") or [], late, False))
        added_links = [
            link for link in stored.get("link") or []
            if isinstance(link, dict) and link.get("type") == "replaces" and _other(link) not in linked
        ]
    for link in links:
        other = _other(link)
        if link.get("type") == "replaces" and other is not None and other.startswith("Patient/") and other != f"Patient/{new.get('id')}":
            body = read("Patient", other.partition("/")[2])
            if body is not None:
                sources.append((body.get("identifier") or [], True, True))
    for found, every, mark in sources if not retired else ():
        for ident in found:
            if isinstance(ident, dict) and (every or ident.get("use") == "old") and _key(ident) not in have:
                have.add(_key(ident))
                added_ids.append({**ident, "use": "old"} if mark else ident)
    if not added_ids and not added_links and not late:
        return new
    out = dict(new)
    if added_ids or late:
        out["identifier"] = identifiers + added_ids
    if added_links:
        out["link"] = links + added_links
    return out


def _key(identifier: dict[str, Any]) -> tuple[Any, Any]:
    return identifier.get("system"), identifier.get("value")


def _other(link: dict[str, Any]) -> str | None:
    other = link.get("other")
    ref = other.get("reference") if isinstance(other, dict) else None
    return ref if isinstance(ref, str) else None
