"""Tests for router/mapping/_patch.py: the PATCH entry `write: patch` and `alone: patch` become."""

from __future__ import annotations

from router.mapping._patch import PATCH_ABSENT, Patch, patch_entry

CONDITION = "MedicationRequest?identifier=urn:ietf:rfc:3986|urn%3Auuid%3A0b7e5f10-3c2d-4e1f-9a8b-7c6d5e4f3a21"
PATIENT = "urn:uuid:2251ff9b-a032-5375-acd4-6f23adba7455"
WITHDRAW = Patch("MedicationRequest", (("status", "valueCode"), ("statusReason", "valueCodeableConcept")), "refuse")


def entry(**elements):
    resource = {"resourceType": "MedicationRequest", "id": "x", "medicationCodeableConcept": {"text": "Syntetisk"}, **elements}
    return {"fullUrl": "urn:uuid:x", "resource": resource, "request": {"method": "PUT", "url": CONDITION}}


def operations(patched):
    return [tuple(p.get("valueCode") or p.get("valueString") for p in op["part"][:3]) for op in patched["resource"]["parameter"]]


class TestPatchEntry:
    def test_each_element_is_deleted_then_added(self):
        """An element the resource gives is deleted and added with its value; one it lacks is only deleted."""
        patched = patch_entry(entry(status="stopped"), WITHDRAW)
        assert operations(patched) == [
            ("delete", "MedicationRequest.status"), ("add", "MedicationRequest", "status"), ("delete", "MedicationRequest.statusReason"),
        ]
        assert patched["resource"]["parameter"][1]["part"][3] == {"name": "value", "valueCode": "stopped"}
        assert "fullUrl" not in patched and patched["request"] == {"method": "PATCH", "url": CONDITION}

    def test_the_subject_joins_the_condition(self):
        """A resource that names its subject by reference is patched only as that subject's: `&subject=` in the url."""
        patched = patch_entry(entry(status="stopped", subject={"reference": PATIENT}), WITHDRAW)
        assert patched["request"]["url"] == f"{CONDITION}&subject={PATIENT}"

    def test_a_patient_element_joins_the_condition_as_patient(self):
        """AllergyIntolerance and Immunization call their owner `patient`: patched only as that patient's, too."""
        allergy = {"resourceType": "AllergyIntolerance", "id": "x", "clinicalStatus": {"text": "inactive"}, "patient": {"reference": PATIENT}}
        url = "AllergyIntolerance?identifier=urn:ietf:rfc:3986|a"
        patched = patch_entry(
            {"fullUrl": "urn:uuid:x", "resource": allergy, "request": {"method": "PUT", "url": url}},
            Patch("AllergyIntolerance", (("clinicalStatus", "valueCodeableConcept"),), "refuse"),
        )
        assert patched["request"]["url"] == f"{url}&patient={PATIENT}"

    def test_skip_and_a_create_condition(self):
        """`absent: skip` adds the patch-absent extension; a create's ifNoneExist gives the condition."""
        create = entry(status="stopped")
        create["request"] = {"method": "POST", "url": "MedicationRequest", "ifNoneExist": CONDITION.partition("?")[2]}
        patched = patch_entry(create, Patch(WITHDRAW.type, WITHDRAW.elements, "skip"))
        assert patched["request"] == {"method": "PATCH", "url": CONDITION, "extension": [{"url": PATCH_ABSENT, "valueCode": "skip"}]}

    def test_nothing_to_change_is_no_entry(self):
        """A resource that gives none of the elements makes no PATCH."""
        assert patch_entry(entry(), WITHDRAW) is None
