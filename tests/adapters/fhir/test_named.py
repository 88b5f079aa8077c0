"""Tests for adapters/fhir/_named.py through the record: a resource may not name another patient's order, stay or report.

Every reference spelling a transaction may use (literal, versioned, conditional,
logical; one element down; an entry of the same Bundle; a Bundle earlier in the
batch) is refused when it names a stored resource of another patient, on SQLite
and PostgreSQL; what is not another patient's is accepted.
"""

from __future__ import annotations

import pytest

from router.errors import InvalidContent

ORDERS = "urn:helsebro:local:DIPS:id"
REFUSED = "the MedicationRequest this MedicationDispense names belongs to another patient"


def bundle(*entries):
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def put(resource, url=None):
    return {"resource": resource, "request": {"method": "PUT", "url": url or f"{resource['resourceType']}/{resource['id']}"}}


def patient(id_, replaced_by=None):
    out = {"resourceType": "Patient", "id": id_}
    if replaced_by:
        out["link"] = [{"type": "replaced-by", "other": {"reference": f"Patient/{replaced_by}"}}]
    return out


def order(id_="mr-a", number="LM-1", subject="pa"):
    out = {"resourceType": "MedicationRequest", "id": id_, "identifier": [{"system": ORDERS, "value": number}],
           "status": "active", "intent": "order", "medicationCodeableConcept": {"text": "Paracetamol"}}
    out["subject"] = {"reference": f"Patient/{subject}"} if subject else {"display": "unknown"}
    return out


def dispense(names, subject="pb", id_="md-1", element="authorizingPrescription"):
    out = {"resourceType": "MedicationDispense", "id": id_, "status": "completed", "medicationCodeableConcept": {"text": "Paracetamol"},
           element: [names] if element == "authorizingPrescription" else names}
    if subject:
        out["subject"] = {"reference": f"Patient/{subject}"}
    return out


LITERAL = {"reference": "MedicationRequest/mr-a"}
SPELLINGS = {
    "literal": LITERAL,
    "versioned": {"reference": "MedicationRequest/mr-a/_history/1"},
    "conditional": {"reference": f"MedicationRequest?identifier={ORDERS}|LM-1"},
    "logical": {"type": "MedicationRequest", "identifier": {"system": ORDERS, "value": "LM-1"}},
}


@pytest.fixture
def stored(record):
    """Patients A (pa), B (pb), A's old record (pold, merged into A) and A's order mr-a (LM-1)."""
    record.apply(bundle(put(patient("pa")), put(patient("pb")), put(patient("pold", replaced_by="pa")), put(order())))
    return record


class TestRefused:
    @pytest.mark.parametrize("spelling", sorted(SPELLINGS))
    def test_a_dispense_of_b_naming_as_order_is_refused_in_every_spelling(self, stored, spelling):
        """B's dispense whose authorizingPrescription names A's order, by id, version, search or identifier: refused, nothing written."""
        with pytest.raises(InvalidContent) as err:
            stored.apply(bundle(put(dispense(SPELLINGS[spelling]))))
        assert (err.value.reason, err.value.location) == (REFUSED, "Bundle.entry[0].resource.authorizingPrescription")
        assert stored.search("MedicationDispense", {}) == []

    def test_a_reference_one_element_down_is_refused(self, stored):
        """B's note whose context.encounter is A's stay names A's stay: refused."""
        stored.apply(bundle(put({"resourceType": "Encounter", "id": "stay-a", "status": "in-progress", "class": {"code": "IMP"},
                                 "subject": {"reference": "Patient/pa"}})))
        note = {"resourceType": "DocumentReference", "id": "doc-b", "status": "current", "subject": {"reference": "Patient/pb"},
                "content": [{"attachment": {"title": "notat"}}], "context": {"encounter": [{"reference": "Encounter/stay-a"}]}}
        with pytest.raises(InvalidContent) as err:
            stored.apply(bundle(put(note)))
        assert (err.value.reason, err.value.location) == (
            "the Encounter this DocumentReference names belongs to another patient", "Bundle.entry[0].resource.context.encounter",
        )

    def test_an_order_a_later_entry_of_the_bundle_writes_for_a_is_refused(self, record):
        """Checked after the Bundle's writes: B's dispense first, naming by urn:uuid an order of A's written by a later entry."""
        named = {"reference": "urn:uuid:0d9a4c1e-0000-4000-8000-000000000001"}
        later = {**put(order(id_="mr-new")), "fullUrl": named["reference"]}
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(put(patient("pa")), put(patient("pb")), put(dispense(named)), later))
        assert err.value.reason == REFUSED
        assert record.search("MedicationRequest", {}) == []

    @pytest.mark.parametrize("spelling", ["literal", "logical"])
    def test_an_order_an_earlier_bundle_of_the_batch_wrote_for_a_is_refused(self, record, spelling):
        """In one batch: A's order, then B's dispense naming it by id or number (the order not yet sent to the database):
        the second Bundle is refused alone, the first applied."""
        first = bundle(put(patient("pa")), put(patient("pb")), put(order()))
        results = record.apply_batch([first, bundle(put(dispense(SPELLINGS[spelling])))])
        assert isinstance(results[1], InvalidContent) and results[1].reason == REFUSED
        assert [r["id"] for r in record.search("MedicationRequest", {})] == ["mr-a"]
        assert record.search("MedicationDispense", {}) == []


class TestAccepted:
    @pytest.mark.parametrize("spelling", sorted(SPELLINGS))
    def test_the_patients_own_order_is_named_in_every_spelling(self, stored, spelling):
        """A's dispense of A's order is written, the reference as sent."""
        stored.apply(bundle(put(dispense(SPELLINGS[spelling], subject="pa"))))
        [written] = stored.search("MedicationDispense", {})
        assert written["authorizingPrescription"] == [SPELLINGS[spelling]]

    @pytest.mark.parametrize("subject, named", [("pold", LITERAL), ("pa", {"reference": "MedicationRequest/mr-old"})])
    def test_merged_records_are_one_patient_either_way(self, stored, subject, named):
        """A dispense under A's merged-away record naming A's order, and A's dispense naming the old record's order, are written."""
        stored.apply(bundle(put(order(id_="mr-old", number="LM-2", subject="pold"))))
        stored.apply(bundle(put(dispense(named, subject=subject))))
        assert len(stored.search("MedicationDispense", {})) == 1

    @pytest.mark.parametrize("named", [
        {"reference": "MedicationRequest/mr-unknown"},
        {"type": "MedicationRequest", "identifier": {"system": ORDERS, "value": "LM-404"}},
        {"reference": "http://other.example/fhir/MedicationRequest/mr-a"},
        {"reference": "MedicationRequest?identifier=LM-1&status=active"},
    ], ids=["unknown-id", "unknown-number", "another-server", "unsearchable"])
    def test_a_named_order_the_record_does_not_hold_is_accepted(self, stored, named):
        """An order the record does not hold (or cannot find: another server's, a search it does not run) may come later or live elsewhere."""
        stored.apply(bundle(put(dispense(named))))
        assert len(stored.search("MedicationDispense", {})) == 1

    def test_an_order_that_names_no_patient_or_a_dispense_that_names_none_is_accepted(self, stored):
        """Whose is unknown on one side: B's dispense of an order with no patient reference, and a dispense with no subject of A's order."""
        stored.apply(bundle(put(order(id_="mr-anon", number="LM-3", subject=None))))
        stored.apply(bundle(put(dispense({"reference": "MedicationRequest/mr-anon"})), put(dispense(LITERAL, subject=None, id_="md-2"))))
        assert len(stored.search("MedicationDispense", {})) == 2

    def test_an_observations_focus_may_be_another_patients(self, stored):
        """FHIR R4 Observation.focus may name a parent, a fetus or a donor: B's observation focused on A's order is written."""
        seen = {"resourceType": "Observation", "id": "obs-b", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/pb"}, "focus": [LITERAL]}
        stored.apply(bundle(put(seen)))
        assert len(stored.search("Observation", {})) == 1


class TestReview:
    def test_a_retired_order_taken_by_another_patient_leaves_no_live_record_naming_it(self, stored):
        """Review: A's order, retired (entered-in-error), still named by A's live result; B's whole new version of the
        order (the same number) may not move it: A's result would then name B's order, what check_named refuses."""
        retired = {**order(), "resourceType": "ServiceRequest", "id": "sr-a", "status": "entered-in-error"}
        del retired["medicationCodeableConcept"]
        retired["code"] = {"text": "Hb"}
        result = {"resourceType": "Observation", "id": "obs-a", "status": "final", "code": {"text": "Hb"},
                  "subject": {"reference": "Patient/pa"}, "basedOn": [{"reference": "ServiceRequest/sr-a"}]}
        stored.apply(bundle(put(retired), put(result)))
        again = {**retired, "status": "active", "subject": {"reference": "Patient/pb"}}
        with pytest.raises(InvalidContent, match="another patient"):
            stored.apply(bundle(put(again, url=f"ServiceRequest?identifier={ORDERS}|LM-1")))
        assert stored.read("Observation", "obs-a")["basedOn"] == [{"reference": "ServiceRequest/sr-a"}]
        assert stored.read("ServiceRequest", "sr-a")["subject"] == {"reference": "Patient/pa"}

    def test_two_records_merged_into_one_survivor_are_one_patient(self, stored):
        """Review: pold and pold2 were both merged into A; a dispense under pold naming pold2's order is one person's.
        _one_person looks only for one merged into the other, not for a common survivor."""
        stored.apply(bundle(put(patient("pold2", replaced_by="pa")), put(order(id_="mr-old2", number="LM-9", subject="pold2"))))
        stored.apply(bundle(put(dispense({"reference": "MedicationRequest/mr-old2"}, subject="pold"))))
        assert len(stored.search("MedicationDispense", {})) == 1
