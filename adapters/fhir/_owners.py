"""A resource stays with its patient: the record's patient checks, and the one move (ADT^A45).

Why a room of its own: the record finds what an update writes over by identifier
alone (a visit, order or prescription number), so a sender's number reused for
another patient, or a new resource naming another patient's order, would move or
mix two patients' records without a word. These checks refuse such a message
whole, with a plain reason; a merge (`replaced-by`) makes two records one
patient, an A45 moves a stay with what was recorded in it, and a cancelled
document may be sent again for the right patient (what a document's change no longer
says is retired by retired_version, and _withdrawn tells it). `_transaction._Writer` mixes
them in; they read through its lookups and write through its `_put`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from adapters.fhir._bundle import Criteria, Entry
from adapters.fhir._lookups import Lookups
from adapters.fhir._named import Named, named_records
from adapters.fhir._patch import add_tags, replaced_by
from adapters.fhir._search import references, search_sql
from router.contracts import AppliedEntry, FhirJson
from router.errors import InvalidContent

if TYPE_CHECKING:
    from adapters.fhir._transaction import Db

DOCUMENT_SYSTEM = "urn:helsebro:document"
"""The tag system of Helsebro's document identity (router/mapping/engine.py writes it)."""

_CURRENT_BODY = (
    "SELECT h.body, r.deleted FROM fhir_resource r JOIN fhir_history h ON h.rid = r.rid AND h.version = r.version"
    " WHERE r.type = ? AND r.id = ?"
)


class PatientChecks:
    """The patient checks and the move, mixed into the transaction's writer."""

    _db: Db
    _lookups: Lookups
    _owners: dict[tuple[str, str], set[str]]  # (type, id) -> its Patient references, as read; dropped when written
    _written: list[tuple[Entry, FhirJson]]  # the versions this Bundle wrote by its entries, for check_named

    def _find(self, resource_type: str, criteria: Criteria) -> list[str]:
        raise NotImplementedError  # the writer's: what a condition finds, in this transaction

    def _put(self, resource_type: str, id_: str, resource: FhirJson, *, writer: Entry | None = None) -> AppliedEntry:
        raise NotImplementedError  # the writer's: the next version of a resource

    def check_named(self) -> None:
        """Refuse the Bundle when a version it wrote names a record of another patient as its order, stay, report … (_named.py).

        Why (patient safety): a new resource names its order or prescription by number,
        or by an id, and the record would otherwise hold patient B's dispense of
        patient A's prescription without a word. Named records the record does not hold
        are accepted: the order may come later, or live in another system. Nor is a
        resource that names no Patient checked, or one naming a record that names none.
        The two patients are one when either was merged into the other (`replaced-by`).

        Cheap when nothing is named: references to people, places and organisations
        are not looked up; a named record is looked up in what this transaction wrote
        (Lookups.held_refs), in what this Bundle already read, and only then in the
        index (fhir_ref), never by reading a stored body.

        Raises:
            InvalidContent: "the MedicationRequest this MedicationDispense names belongs to another patient".
        """
        for entry, resource in self._written:
            patients = patients_of(resource) if "subject" in resource or "patient" in resource else None
            if not patients:
                continue
            for named in named_records(resource):
                for id_ in self._named_ids(named):
                    owners = self._owners_of(named.resource_type, id_)
                    if owners and not owners & patients and not self._one_person(owners, patients):
                        raise InvalidContent(
                            f"the {named.resource_type} this {entry.resource_type} names belongs to another patient",
                            location=f"{entry.location}.resource.{named.element}",
                        )

    def _named_ids(self, named: Named) -> list[str]:
        """The ids of the stored (or just written) resources *named* names: its id, or what its search finds."""
        if named.id is not None:
            return [named.id]
        return self._find(named.resource_type, named.criteria or ())

    def _owners_of(self, resource_type: str, id_: str) -> set[str]:
        """The Patient references (Patient/id) of the resource as the transaction has it; empty when it names none or is not there."""
        key = (resource_type, id_)
        known = self._owners.get(key)
        if known is not None:
            return known
        held = self._lookups.held_refs(resource_type, id_)
        if held is not None:
            owners = patient_refs(held)
        elif key in self._lookups.current and self._lookups.current[key] is None:
            owners = set()  # prefetched: the record does not hold it
        else:
            owners = {row[0] for row in self._db.query(_OWNERS, key) if isinstance(row[0], str) and row[0].startswith("Patient/")}
        self._owners[key] = owners
        return owners

    def _one_person(self, owners: set[str], patients: set[str]) -> bool:
        """Whether the two sets name one person: the same Patient, one merged into the other, or both into a third.

        Either way round, unlike _refuse_other_patient: naming a record changes nothing of it, while
        an update takes it over, and may only carry it forward to the survivor of a merge.
        """
        def people(refs: set[str]) -> set[str]:
            return refs.union(*(self._merge_chain(p) for p in refs))
        return not people(owners).isdisjoint(people(patients))

    def _check_same_patient(self, entry: Entry, id_: str, resource: FhirJson) -> None:
        """Refuse a create-only entry whose identity finds another patient's resource.

        Why (patient safety): a create-only entry (POST ifNoneExist) that finds its
        identity writes nothing, and the Bundle's references to it then name the
        stored resource. A dispense for patient B whose order number is patient A's
        order would point at A's prescription without a word.

        Raises:
            InvalidContent: the stored resource's subject (or patient) is another patient's.
        """
        new = patients_of(resource)
        if new:
            self._refuse_other_patient(entry, id_, new, "names")

    def _refuse_other_patient(self, entry: Entry, id_: str, new: set[str], verb: str, *, replaces: FhirJson | None = None) -> None:
        """Raise unless the stored resource *id_* is this patient's (one of *new*), has none, or is gone.

        An empty *new* (an update naming no Patient) passes only a stored resource that names none.

        The stored resource's patient is this one's when it is the same Patient, or one
        merged into it: an A40 leaves the old Patient `replaced-by` the survivor, and its
        stays, results and prescriptions where they were.

        With *replaces* (the whole new version, not a patch of the stored one), a stored
        resource of a document that a cancel retired (entered-in-error, with the document's
        tag) may take the patient *new* names when the new version is of the same document.
        Why: that is how a sender corrects a document sent under the wrong patient: it
        cancels it (the record retires what it made) and sends it again for the right
        patient in the same dialog. Only a document's own resources: an order or result
        entered in error for another reason may still be named by the first patient's live
        records, which would then point at another patient's. The retracted version stays in
        the resource's history; a live resource of another patient is still refused.
        """
        stored = self._body(entry.resource_type, id_)
        old = patients_of(stored) if stored is not None else set()
        self._owners[(entry.resource_type, id_)] = old  # read anyway: check_named need not ask again (a write drops it)
        if not old or old & new or any(self._merged_into(p, new) for p in old):  # forward only: never back to a merged-away record
            return
        if replaces is not None and new and stored is not None and _withdrawn(stored) and (doc := _document(stored)) and doc == _document(replaces):
            return
        if not new:
            raise InvalidContent(f"the {entry.resource_type} this message {verb} belongs to a patient, and this message names none", location=entry.location)
        raise InvalidContent(
            f"the {entry.resource_type} this message {verb} belongs to another patient"
            + ("; it goes to another patient only when the two are merged, or by a move that names whose it was" if verb == "updates" else ""),
            location=entry.location,
        )

    def _move_recorded_in(self, stay: str, before: set[str], after: set[str], meta: Any, depth: int = 3) -> None:
        """Give what was recorded in *stay* (its results, diagnoses, procedures, orders; a stay within it) the patient it moved to.

        Why: moved alone, the stay would go to its right patient and leave its
        results with the wrong one, where the next corrected result for the right
        patient is refused as another patient's. Only resources of the patient the
        stay moved from (or of a record it was merged into since) are moved, and the
        specimens they name (a corrected result restates its specimen); each gets a
        new version, tagged with the moving mapping (*meta*), so its history says what moved it.
        """
        [patient] = sorted(after)[:1]
        # The stay's patient and whom that record was merged into (an A40 since): results recorded in
        # the stay under either are the old patient's, and must not stay behind with them.
        olds = set(before)
        for p in before:
            olds.update(self._merge_chain(p))
        olds -= after
        specimens: set[str] = set()  # the specimens of what moved: a Specimen names no stay, but a corrected result restates it
        for rtype, path in _RECORDED_IN.items():
            for old in sorted(olds):
                sql, args = search_sql(rtype, [("patient", old)], select="r.id, h.body")
                self._lookups.flush(self._db)
                for id_, raw in self._db.query(sql, args):
                    body = orjson.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
                    if not _names(body, path, stay):
                        continue
                    moved = _moved(body, olds, patient)
                    self._put(rtype, id_, add_tags(moved, meta))
                    specimen = moved.get("specimen")
                    specimens.update(
                        ref["reference"].partition("/")[2] for ref in (specimen if isinstance(specimen, list) else [])
                        if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and ref["reference"].startswith("Specimen/")
                    )
                    if rtype == "Encounter" and depth:
                        self._move_recorded_in(f"Encounter/{id_}", olds, after, meta, depth - 1)
        for id_ in sorted(specimens):
            body = self._body("Specimen", id_)
            if body is not None and (moved := _moved(body, olds, patient)) != body:
                self._put("Specimen", id_, add_tags(moved, meta))

    def _merge_chain(self, patient: str, hops: int = 4) -> list[str]:
        """The Patients *patient* (Patient/id) was merged into, following at most *hops* `replaced-by` links, in order."""
        out: list[str] = []
        if not patient.startswith("Patient/"):
            return out
        for _ in range(hops):
            body = self._body("Patient", patient.partition("/")[2])
            nxt = replaced_by(body) if body is not None else None
            if nxt is None or nxt in out:
                break
            out.append(nxt)
            patient = nxt
        return out

    def _merged_into(self, patient: str, survivors: set[str], hops: int = 4) -> bool:
        """Whether *patient* (Patient/id) was merged, through at most *hops* `replaced-by` links, into one of *survivors*."""
        return any(p in survivors for p in self._merge_chain(patient, hops))

    def _body(self, resource_type: str, id_: str) -> FhirJson | None:
        self._lookups.flush(self._db)
        rows = self._db.query(_CURRENT_BODY, (resource_type, id_))
        if not rows or rows[0][1]:
            return None
        body = rows[0][0]
        return orjson.loads(body) if isinstance(body, (str, bytes)) else dict(body)


_OWNERS = (
    "SELECT f.target FROM fhir_resource r LEFT JOIN fhir_ref f ON f.rid = r.rid AND f.param IN ('subject', 'patient')"
    " WHERE r.type = ? AND r.id = ? AND r.deleted = 0"
)
"""The stored resource's indexed subject and patient references: no row when the record lacks it, one NULL when it names none."""


def _document(body: FhirJson) -> str | None:
    """The document *body* belongs to (its `urn:helsebro:document` tag's code), or None."""
    meta = body.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, dict) and tag.get("system") == DOCUMENT_SYSTEM and isinstance(tag.get("code"), str):
            return tag["code"]  # type: ignore[no-any-return]
    return None


def _withdrawn(body: FhirJson) -> bool:
    """Whether *body* is marked entered-in-error (by its status, or its verification status), as retired_version marks it."""
    if body.get("status") == "entered-in-error":
        return True
    verification = body.get("verificationStatus")
    codings = verification.get("coding") if isinstance(verification, dict) else None
    return isinstance(codings, list) and any(isinstance(c, dict) and c.get("code") == "entered-in-error" for c in codings)


_VERIFICATION = {
    "Condition": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "AllergyIntolerance": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
}
_STATUS_ENTERED_IN_ERROR = frozenset({
    "Observation", "MedicationStatement", "MedicationRequest", "MedicationDispense", "Communication", "CommunicationRequest",
    "Encounter", "EpisodeOfCare", "Composition", "DocumentReference", "DiagnosticReport", "ServiceRequest", "Immunization",
    "Procedure", "Specimen", "Appointment", "CarePlan", "Goal", "List", "Flag",
})


def retired_version(body: FhirJson) -> FhirJson | None:
    """Return *body* marked entered-in-error, or None when its type has no such status (then it is deleted)."""
    kind = body.get("resourceType")
    out = {k: v for k, v in body.items() if k != "meta"}
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    if kind in _STATUS_ENTERED_IN_ERROR:
        out["status"] = "entered-in-error"
        return out
    if kind in _VERIFICATION:
        out.pop("clinicalStatus", None)  # FHIR: no clinical status on an entered-in-error record
        out["verificationStatus"] = {"coding": [{"system": _VERIFICATION[kind], "code": "entered-in-error"}]}
        return out
    return None


_RECORDED_IN: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((
        "Observation", "DiagnosticReport", "Condition", "Procedure", "ServiceRequest", "MedicationRequest", "Immunization",
        "AllergyIntolerance", "Composition", "Communication", "CommunicationRequest", "CarePlan", "Flag", "List",
        "ClinicalImpression", "QuestionnaireResponse", "RiskAssessment", "NutritionOrder", "DeviceRequest", "Media",
    ), ("encounter",)),
    **dict.fromkeys(("MedicationAdministration", "MedicationDispense", "MedicationStatement"), ("context",)),
    "DocumentReference": ("context", "encounter"),
    "Encounter": ("partOf",),
}
"""FHIR R4: the element path by which a resource of each type names the stay it was recorded in."""


def _names(body: Any, path: tuple[str, ...], target: str) -> bool:
    """Whether *body* references *target* at *path* (each step a dict or a list of them)."""
    if isinstance(body, list):
        return any(_names(item, path, target) for item in body)
    if not path:
        return isinstance(body, dict) and body.get("reference") == target
    return isinstance(body, dict) and _names(body.get(path[0]), path[1:], target)


def patients_of(resource: FhirJson) -> set[str]:
    """The Patient references (Patient/id) of *resource*'s subject and patient elements."""
    return patient_refs(references(resource))


def patient_refs(refs: Iterable[tuple[str, str]]) -> set[str]:
    """The Patient references among indexed (element, reference) pairs: those of subject and patient."""
    return {ref for element, ref in refs if element in ("subject", "patient") and ref.startswith("Patient/")}


def _moved(body: FhirJson, olds: set[str], patient: str) -> FhirJson:
    """*body* with each subject or patient reference to one of *olds* naming *patient* instead."""
    out = dict(body)
    for element in ("subject", "patient"):
        ref = out.get(element)
        if isinstance(ref, dict) and ref.get("reference") in olds:
            out[element] = {**ref, "reference": patient}
    return out
