"""Tests for adapters/fhir/_patch.py: a FHIRPath Patch entry in a transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from router.errors import InvalidContent

SYSTEM = "urn:ietf:rfc:3986"
VALUE = "urn:uuid:0b7e5f10-3c2d-4e1f-9a8b-7c6d5e4f3a21"
MR_ID = "4f6a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b"
CONDITION = f"MedicationRequest?identifier={SYSTEM}|{VALUE}"
MEDICATION = {"text": "Syntetisk Cetirizin Tab 10 mg"}
TAG = {"system": "urn:helsebro:mapping", "code": "ERM5@x", "display": "mappings/kith/messages/ERM5.yaml"}


def prescription(status="active"):
    return {
        "resourceType": "MedicationRequest", "id": MR_ID, "identifier": [{"system": SYSTEM, "value": VALUE}],
        "status": status, "intent": "order", "medicationCodeableConcept": MEDICATION,
        "subject": {"display": "Syntetisk Pasient"},
    }


def bundle(*entries):
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def put_prescription():
    return {"fullUrl": f"urn:uuid:{MR_ID}", "resource": prescription(), "request": {"method": "PUT", "url": CONDITION}}


def op(kind, path, *, name=None, value=None):
    parts = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    if name is not None:
        parts.append({"name": "name", "valueString": name})
    if value is not None:
        parts.append({"name": "value", **value})
    return {"name": "operation", "part": parts}


WITHDRAW = [
    op("delete", "MedicationRequest.status"),
    op("add", "MedicationRequest", name="status", value={"valueCode": "stopped"}),
    op("delete", "MedicationRequest.statusReason"),
    op("add", "MedicationRequest", name="statusReason", value={"valueCodeableConcept": {"text": "seponert"}}),
]


def patch(ops=WITHDRAW, *, url=CONDITION, skip=False, meta=None):
    request = {"method": "PATCH", "url": url}
    if skip:
        request["extension"] = [{"url": "urn:helsebro:patch-absent", "valueCode": "skip"}]
    body = {"resourceType": "Parameters", "parameter": ops}
    if meta is not None:
        body["meta"] = meta
    return {"resource": body, "request": request}


class TestPatch:
    def test_changes_only_the_named_elements(self, record):
        """A conditional PATCH sets status and statusReason of the stored resource; everything else stays, as a new version."""
        record.apply(bundle(put_prescription()))
        result = record.apply(bundle(patch()))
        assert [(e.resource_type, e.id, e.version, e.outcome) for e in result.entries] == [("MedicationRequest", MR_ID, 2, "updated")]
        stored = record.read("MedicationRequest", MR_ID)
        assert stored["status"] == "stopped" and stored["statusReason"] == {"text": "seponert"}
        assert stored["medicationCodeableConcept"] == MEDICATION and stored["identifier"] == [{"system": SYSTEM, "value": VALUE}]

    def test_the_same_patch_again_changes_nothing(self, record):
        """Applying a patch whose result is what is stored makes no new version."""
        record.apply(bundle(put_prescription()))
        record.apply(bundle(patch()))
        assert record.apply(bundle(patch())).entries[0].outcome == "unchanged"
        assert record.read("MedicationRequest", MR_ID)["meta"]["versionId"] == "2"

    def test_a_resource_not_in_the_record_refuses_the_transaction(self, record):
        """No resource under the condition: the Bundle is refused, as FHIR's 404 for a patch, and nothing of it is written."""
        other = {"fullUrl": "urn:uuid:11111111-2222-4333-8444-555555555555",
                 "resource": {"resourceType": "Organization", "id": "11111111-2222-4333-8444-555555555555", "name": "x"},
                 "request": {"method": "PUT", "url": "Organization/11111111-2222-4333-8444-555555555555"}}
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(other, patch()))
        assert err.value.reason == "the MedicationRequest this message changes is not in the record"
        assert err.value.location == "Bundle.entry[1]"
        assert record.read("Organization", "11111111-2222-4333-8444-555555555555") is None

    def test_skip_leaves_a_missing_resource_alone(self, record):
        """With the patch-absent extension `skip`, a PATCH of no stored resource does nothing and the rest applies."""
        result = record.apply(bundle(patch(skip=True)))
        assert [e.outcome for e in result.entries] == ["unchanged"]
        assert record.search("MedicationRequest", {}) == []

    def test_patch_after_a_write_in_the_same_batch(self, record):
        """A prescription written earlier in the same batch is the one a later Bundle patches."""
        results = record.apply_batch([bundle(put_prescription()), bundle(patch())], ["m1", "m5"])
        assert [r.entries[0].outcome for r in results] == ["created", "updated"]
        assert record.read("MedicationRequest", MR_ID)["status"] == "stopped"

    def test_provenance_of_the_patch_is_added(self, record):
        """The Parameters' meta.tag (the mapping that asked) joins the patched resource's tags."""
        record.apply(bundle(put_prescription()))
        record.apply(bundle(patch(meta={"tag": [TAG]})))
        assert record.read("MedicationRequest", MR_ID)["meta"]["tag"] == [TAG]

    def test_by_id(self, record):
        """PATCH Type/id patches that resource."""
        record.apply(bundle(put_prescription()))
        record.apply(bundle(patch(url=f"MedicationRequest/{MR_ID}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "stopped"

    @pytest.mark.parametrize(
        ("ops", "says"),
        [
            ([op("move", "MedicationRequest.status")], "replace, delete and add"),
            ([op("delete", "MedicationRequest.dosageInstruction.text")], "top-level element only"),
            ([op("replace", "MedicationRequest.identifier", value={"valueString": "x"})], "id, identifiers or meta"),
            ([op("add", "MedicationRequest", name="note")], "add needs a value"),
            ([op("add", "Patient", name="note", value={"valueString": "x"})], "top-level element only"),
            ([], "at least one operation"),
        ],
        ids=["move", "deep", "identifier", "no-value", "other-type", "empty"],
    )
    def test_unsupported_patches_are_refused_before_the_database(self, record, ops, says):
        """An operation the record does not carry out is refused when the Bundle is read."""
        record.apply(bundle(put_prescription()))
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(patch(ops)))
        assert says in err.value.reason
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    def test_an_operation_that_does_not_fit_the_stored_resource_is_refused(self, record):
        """replace of an element the stored resource lacks, or add of one it has, refuses the transaction."""
        record.apply(bundle(put_prescription()))
        with pytest.raises(InvalidContent, match="does not have"):
            record.apply(bundle(patch([op("replace", "MedicationRequest.statusReason", value={"valueCodeableConcept": {"text": "x"}})])))
        with pytest.raises(InvalidContent, match="already has"):
            record.apply(bundle(patch([op("add", "MedicationRequest", name="status", value={"valueCode": "stopped"})])))
        assert record.read("MedicationRequest", MR_ID)["meta"]["versionId"] == "1"

    def test_the_body_must_be_parameters(self, record):
        """A PATCH whose resource is not a Parameters (a JSON Patch, a resource) is refused."""
        bad = {"resource": prescription(), "request": {"method": "PATCH", "url": CONDITION}}
        with pytest.raises(InvalidContent, match="Parameters"):
            record.apply(bundle(bad))


PATIENT_A = "0a0a0a0a-1111-4222-8333-444444444444"
PATIENT_B = "0b0b0b0b-1111-4222-8333-444444444444"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
PATIENT_A0 = "c3d4e5f6-0000-4000-8000-00000000a0a0"
FNR = {PATIENT_A: "15866112379", PATIENT_B: "01015000232", PATIENT_A0: "55866110270"}


def create_patient(pid):
    """The message's Patient, as a mapping writes it: POST ifNoneExist, under a fullUrl the PATCH's condition names."""
    return {"fullUrl": f"urn:uuid:{pid}",
            "resource": {"resourceType": "Patient", "id": pid, "identifier": [{"system": FNR_SYSTEM, "value": FNR[pid]}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={FNR_SYSTEM}|{FNR[pid]}"}}


def store_patient_a_prescription(record):
    """Patient A and her prescription, whose subject is her Patient."""
    mr = {**prescription(), "subject": {"reference": f"urn:uuid:{PATIENT_A}"}}
    record.apply(bundle(create_patient(PATIENT_A), {"fullUrl": f"urn:uuid:{MR_ID}", "resource": mr, "request": {"method": "PUT", "url": CONDITION}}))
    assert record.read("MedicationRequest", MR_ID)["subject"] == {"reference": f"Patient/{PATIENT_A}"}


class TestPatchOwner:
    def test_the_named_patients_resource_is_patched(self, record):
        """A PATCH whose condition adds `subject=` the message's Patient changes her resource found by its identifier."""
        store_patient_a_prescription(record)
        record.apply(bundle(create_patient(PATIENT_A), patch(url=f"{CONDITION}&subject=urn:uuid:{PATIENT_A}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "stopped"

    @pytest.mark.parametrize("spelling", ["subject", "subject.identifier"])
    def test_a_patient_merged_into_the_named_one_is_hers(self, record, spelling):
        """After an A40 merges A into B (A `replaced-by` B), B's withdrawal stops the prescription stored under A,
        whether it names B by reference or by her FNR."""
        store_patient_a_prescription(record)
        retired = {"resourceType": "Patient", "id": PATIENT_A, "identifier": [{"system": FNR_SYSTEM, "value": FNR[PATIENT_A]}],
                   "active": False, "link": [{"other": {"reference": f"urn:uuid:{PATIENT_B}"}, "type": "replaced-by"}]}
        record.apply(bundle(create_patient(PATIENT_B), {"fullUrl": f"urn:uuid:{PATIENT_A}", "resource": retired,
                                                        "request": {"method": "PUT", "url": f"Patient/{PATIENT_A}"}}))
        record.apply(bundle(create_patient(PATIENT_B), patch(url=f"{CONDITION}&{OWNER_SPELLINGS[spelling](PATIENT_B)}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "stopped"

    @pytest.mark.parametrize("spelling", ["subject", "subject:Patient.identifier"])
    def test_a_missing_resource_is_told_apart_from_another_patients(self, record, spelling):
        """An identifier the record does not hold is still `not in the record` (refused), and skipped with patch-absent skip,
        whatever the spelling of the owner condition."""
        store_patient_a_prescription(record)
        other = CONDITION.replace(VALUE, "urn:uuid:9f9f9f9f-1111-4222-8333-444444444444")
        owner = OWNER_SPELLINGS[spelling](PATIENT_B)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(create_patient(PATIENT_B), patch(url=f"{other}&{owner}")))
        assert err.value.reason == "the MedicationRequest this message changes is not in the record"
        result = record.apply(bundle(create_patient(PATIENT_B), patch(url=f"{other}&{owner}", skip=True)))
        assert [e.outcome for e in result.entries] == ["created", "unchanged"]

    def test_a_subject_naming_no_entry_is_refused(self, record):
        """`subject=urn:uuid:…` that is no fullUrl of the Bundle cannot be checked: refused."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent, match="names no entry of the Bundle"):
            record.apply(bundle(patch(url=f"{CONDITION}&subject=urn:uuid:{PATIENT_A}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    def test_another_patient_in_the_same_batch(self, record):
        """A prescription an earlier Bundle of the batch wrote is checked too: another patient's M5 after it is refused alone."""
        mr = {**prescription(), "subject": {"reference": f"urn:uuid:{PATIENT_A}"}}
        first = bundle(create_patient(PATIENT_A), {"fullUrl": f"urn:uuid:{MR_ID}", "resource": mr, "request": {"method": "PUT", "url": CONDITION}})
        results = record.apply_batch([first, bundle(create_patient(PATIENT_B), patch(url=f"{CONDITION}&subject=urn:uuid:{PATIENT_B}"))], ["m1", "m5"])
        assert [e.outcome for e in results[0].entries] == ["created", "created"]
        assert isinstance(results[1], InvalidContent) and results[1].reason == "the MedicationRequest this message changes belongs to another patient"
        assert record.read("MedicationRequest", MR_ID)["status"] == "active" and record.read("Patient", PATIENT_B) is None


MOVE = [op("delete", "MedicationRequest.subject"), op("add", "MedicationRequest", name="subject", value={"valueReference": {"reference": f"urn:uuid:{PATIENT_B}"}})]


class TestMove:
    """A PATCH that gives a resource another patient: only when its condition names whose it was, and what was recorded in a stay moves with it."""

    def test_a_move_that_names_the_owner_moves_it(self, record):
        """`subject=` A, subject set to B: A's prescription becomes B's, tagged by the moving mapping."""
        store_patient_a_prescription(record)
        record.apply(bundle(create_patient(PATIENT_A), create_patient(PATIENT_B), patch(MOVE, url=f"{CONDITION}&subject=urn:uuid:{PATIENT_A}", meta={"tag": [TAG]})))
        stored = record.read("MedicationRequest", MR_ID)
        assert stored["subject"] == {"reference": f"Patient/{PATIENT_B}"} and stored["meta"]["tag"] == [TAG]

    def test_a_move_that_names_no_owner_is_refused(self, record):
        """A PATCH of the subject with no `subject=` condition would move a resource unchecked: refused whole."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(create_patient(PATIENT_B), patch(MOVE)))
        assert err.value.reason == "the MedicationRequest this message changes belongs to another patient"
        assert record.read("MedicationRequest", MR_ID)["subject"] == {"reference": f"Patient/{PATIENT_A}"}
        assert record.read("Patient", PATIENT_B) is None

    def test_what_was_recorded_in_a_moved_stay_moves_with_it(self, record):
        """The stay's result, its report's document (context.encounter) and a stay within it move; another stay's result of A stays A's."""
        def put(rtype, rid, **elements):
            res = {"resourceType": rtype, "id": rid, "identifier": [{"system": SYSTEM, "value": f"urn:uuid:{rid}"}], **elements}
            return {"fullUrl": f"urn:uuid:{rid}", "resource": res, "request": {"method": "PUT", "url": f"{rtype}?identifier={SYSTEM}|urn:uuid:{rid}"}}

        ids = {name: f"{n:08d}-0000-4000-8000-000000000000" for n, name in enumerate(("stay", "other", "inner", "obs", "other_obs", "doc"), 1)}
        a = {"reference": f"urn:uuid:{PATIENT_A}"}
        record.apply(bundle(
            create_patient(PATIENT_A),
            put("Encounter", ids["stay"], status="finished", subject=a),
            put("Encounter", ids["other"], status="finished", subject=a),
            put("Encounter", ids["inner"], status="finished", subject=a, partOf={"reference": f"urn:uuid:{ids['stay']}"}),
            put("Observation", ids["obs"], status="final", subject=a, encounter={"reference": f"urn:uuid:{ids['inner']}"}),
            put("Observation", ids["other_obs"], status="final", subject=a, encounter={"reference": f"urn:uuid:{ids['other']}"}),
            put("DocumentReference", ids["doc"], status="current", subject=a, context={"encounter": [{"reference": f"urn:uuid:{ids['stay']}"}]}),
        ))
        move = [op("delete", "Encounter.subject"), op("add", "Encounter", name="subject", value={"valueReference": {"reference": f"urn:uuid:{PATIENT_B}"}})]
        stay = f"Encounter?identifier={SYSTEM}|urn:uuid:{ids['stay']}&subject=urn:uuid:{PATIENT_A}"
        record.apply(bundle(create_patient(PATIENT_A), create_patient(PATIENT_B), patch(move, url=stay)))
        whose = {name: record.read(rtype, ids[name])["subject"]["reference"].split("/")[1] for name, rtype in (
            ("stay", "Encounter"), ("inner", "Encounter"), ("obs", "Observation"), ("doc", "DocumentReference"),
            ("other", "Encounter"), ("other_obs", "Observation"))}
        assert whose == {"stay": PATIENT_B, "inner": PATIENT_B, "obs": PATIENT_B, "doc": PATIENT_B, "other": PATIENT_A, "other_obs": PATIENT_A}


OWNER_SPELLINGS = {
    # id → the owner condition naming patient *pid*, in each spelling FHIR gives it
    "subject": lambda pid: f"subject=urn:uuid:{pid}",
    "subject:Patient": lambda pid: f"subject:Patient=urn:uuid:{pid}",
    "subject:Patient-id": lambda pid: f"subject:Patient={pid}",
    "patient:Patient": lambda pid: f"patient:Patient=urn:uuid:{pid}",
    "subject.identifier": lambda pid: f"subject.identifier={FNR_SYSTEM}|{FNR[pid]}",
    "subject:Patient.identifier": lambda pid: f"subject:Patient.identifier={FNR_SYSTEM}|{FNR[pid]}",
    "patient.identifier": lambda pid: f"patient.identifier={FNR_SYSTEM}|{FNR[pid]}",
    "patient:Patient.identifier": lambda pid: f"patient:Patient.identifier={FNR_SYSTEM}|{FNR[pid]}",
    "identifier-any-system": lambda pid: f"subject.identifier={FNR[pid]}",
}


class TestPatchOwnerSpellings:
    """An owner condition written with a type modifier or chained on the owner's identifier is an owner condition:
    the resource is found by its identifier alone and then checked, never searched with it."""

    @pytest.mark.parametrize("spelling", OWNER_SPELLINGS)
    def test_the_named_patients_resource_is_patched(self, record, spelling):
        """Each spelling naming patient A patches her prescription."""
        store_patient_a_prescription(record)
        record.apply(bundle(create_patient(PATIENT_A), patch(url=f"{CONDITION}&{OWNER_SPELLINGS[spelling](PATIENT_A)}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "stopped"

    @pytest.mark.parametrize("skip", [False, True], ids=["refuse", "skip"])
    @pytest.mark.parametrize("spelling", OWNER_SPELLINGS)
    def test_another_patients_resource_refuses_the_transaction(self, record, spelling, skip):
        """Each spelling naming patient B, with A's ReseptId: refused whole, saying whose, even with patch-absent skip
        (not searched with it, which would make A's prescription look absent and, with skip, pass silently)."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(create_patient(PATIENT_B), patch(url=f"{CONDITION}&{OWNER_SPELLINGS[spelling](PATIENT_B)}", skip=skip)))
        assert err.value.reason == "the MedicationRequest this message changes belongs to another patient"
        assert err.value.location == "Bundle.entry[1]"
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"
        assert record.read("Patient", PATIENT_B) is None

    def test_an_identifier_without_a_system_matches_only_one_without(self, record):
        """`|value` names an identifier with no system: A's FNR has one, so it is not hers."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent, match="belongs to another patient"):
            record.apply(bundle(patch(url=f"{CONDITION}&subject.identifier=|{FNR[PATIENT_A]}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    def test_an_identifier_without_a_value_is_refused(self, record):
        """`system|` (any number of the system) would let any patient pass for the owner: refused, naming the url."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(patch(url=f"{CONDITION}&subject.identifier={FNR_SYSTEM}|")))
        assert err.value.reason == "the subject.identifier condition of a PATCH has no value"
        assert err.value.location == "Bundle.entry[0].request.url"
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    def test_an_owner_the_record_lacks_cannot_be_checked_by_identifier(self, record):
        """The stored prescription's subject names a Patient the record does not hold: its identifiers are unknown, so
        an identifier condition cannot be checked and the transaction is refused, saying so."""
        mr = {**prescription(), "subject": {"reference": f"Patient/{PATIENT_A}"}}
        record.apply(bundle({"fullUrl": f"urn:uuid:{MR_ID}", "resource": mr, "request": {"method": "PUT", "url": CONDITION}}))
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(patch(url=f"{CONDITION}&{OWNER_SPELLINGS['subject.identifier'](PATIENT_A)}", skip=True)))
        assert err.value.reason == "the subject.identifier condition of a PATCH cannot be checked: the MedicationRequest's subject is not in the record"
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    def test_a_type_modifier_the_owner_does_not_have(self, record):
        """`subject:Group=` naming the Bundle's Patient: the condition contradicts itself, refused."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent, match="names no Group, as its type modifier says"):
            record.apply(bundle(create_patient(PATIENT_A), patch(url=f"{CONDITION}&subject:Group=urn:uuid:{PATIENT_A}")))
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"

    @pytest.mark.parametrize(
        "owner",
        ["subject:missing=false", "subject:identifier=x|y", "subject.name=Syntetisk", "patient:Group=g1", "subject:=x",
         "subject:Patient.birthdate=1961"],
    )
    def test_an_owner_condition_the_record_cannot_check_is_refused_when_read(self, record, owner):
        """Another modifier or chain on subject/patient: refused before the database is touched, at the request url."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(create_patient(PATIENT_A), patch(url=f"{CONDITION}&{owner}")))
        assert "not with this modifier or chain" in err.value.reason
        assert err.value.location == "Bundle.entry[1].request.url"
        assert record.read("MedicationRequest", MR_ID)["status"] == "active"


def _put(rtype, rid, **elements):
    """A PUT by identifier of *rtype* with id *rid* (its identifier is its urn)."""
    res = {"resourceType": rtype, "id": rid, "identifier": [{"system": SYSTEM, "value": f"urn:uuid:{rid}"}], **elements}
    return {"fullUrl": f"urn:uuid:{rid}", "resource": res, "request": {"method": "PUT", "url": f"{rtype}?identifier={SYSTEM}|urn:uuid:{rid}"}}


STAY = "00000001-0000-4000-8000-000000000001"
RESULT = "00000002-0000-4000-8000-000000000002"
LATER_RESULT = "00000003-0000-4000-8000-000000000003"


def _merge(old, survivor):
    """An A40: *old* retired, `replaced-by` *survivor*."""
    retired = {"resourceType": "Patient", "id": old, "identifier": [{"system": FNR_SYSTEM, "value": FNR[old]}],
               "active": False, "link": [{"other": {"reference": f"urn:uuid:{survivor}"}, "type": "replaced-by"}]}
    return bundle(create_patient(survivor), {"fullUrl": f"urn:uuid:{old}", "resource": retired, "request": {"method": "PUT", "url": f"Patient/{old}"}})


def _move_stay(owner, to):
    move = [op("delete", "Encounter.subject"), op("add", "Encounter", name="subject", value={"valueReference": {"reference": f"urn:uuid:{to}"}})]
    return bundle(create_patient(owner), create_patient(to), patch(move, url=f"Encounter?identifier={SYSTEM}|urn:uuid:{STAY}&subject=urn:uuid:{owner}"))


class TestReviewOwner:
    """Review h64: ways a stored resource still changes patient, or a move leaves what was recorded in the stay behind."""

    def test_an_update_after_a_move_in_the_same_batch_is_checked(self, record):
        """A45 moves A's stay to B; the next message of the same batch, for A with the same visit number, must be refused.

        The update's check is skipped when its index rows equal `Current.index_hash`, but that is the
        database's row, not the version the A45 wrote earlier in the batch (held, not flushed): the
        stay goes back to A without a word, its result staying B's.
        """
        a = {"reference": f"urn:uuid:{PATIENT_A}"}
        record.apply(bundle(create_patient(PATIENT_A), _put("Encounter", STAY, status="in-progress", subject=a),
                            _put("Observation", RESULT, status="final", subject=a, encounter={"reference": f"urn:uuid:{STAY}"})))
        stale = bundle(create_patient(PATIENT_A), _put("Encounter", STAY, status="in-progress", subject=a))
        results = record.apply_batch([_move_stay(PATIENT_A, PATIENT_B), stale])
        assert not isinstance(results[0], InvalidContent)
        assert isinstance(results[1], InvalidContent) and "belongs to another patient" in results[1].reason
        assert record.read("Encounter", STAY)["subject"] == {"reference": f"Patient/{PATIENT_B}"}

    def test_an_update_after_a_move_in_the_same_bundle_is_checked(self, record):
        """The same within one Bundle (the REST path takes any Bundle): a move, then a PUT giving the stay back to A."""
        a = {"reference": f"urn:uuid:{PATIENT_A}"}
        record.apply(bundle(create_patient(PATIENT_A), _put("Encounter", STAY, status="in-progress", subject=a)))
        moved = _move_stay(PATIENT_A, PATIENT_B)
        moved["entry"].append(_put("Encounter", STAY, status="in-progress", subject=a))
        with pytest.raises(InvalidContent, match="belongs to another patient"):
            record.apply(moved)
        assert record.read("Encounter", STAY)["subject"] == {"reference": f"Patient/{PATIENT_A}"}

    def test_an_update_without_a_patient_does_not_open_the_stay_to_another(self, record):
        """One update drops the stay's subject (not checked: no patient), the next gives it to B (not refused: the
        stored version has none). A's stay ends up B's with no merge and no owner-named move."""
        a, b = {"reference": f"urn:uuid:{PATIENT_A}"}, {"reference": f"urn:uuid:{PATIENT_B}"}
        record.apply(bundle(create_patient(PATIENT_A), _put("Encounter", STAY, status="in-progress", subject=a)))
        with pytest.raises(InvalidContent, match="belongs to a patient, and this message names none"):
            record.apply(bundle(create_patient(PATIENT_B), _put("Encounter", STAY, status="in-progress"),
                                _put("Encounter", STAY, status="finished", subject=b)))
        assert record.read("Encounter", STAY)["subject"] == {"reference": f"Patient/{PATIENT_A}"}

    def test_a_moved_stay_takes_the_results_recorded_under_the_merged_away_record(self, record):
        """A's stay was registered under her old record A0 (later merged into A by an A40), and a result came in
        for A since. An A45 naming A moves the stay to B: both results recorded in it must move, not only those
        whose subject is the stay's stored patient."""
        a0, a = {"reference": f"urn:uuid:{PATIENT_A0}"}, {"reference": f"urn:uuid:{PATIENT_A}"}
        in_stay = {"reference": f"Encounter/{STAY}"}
        record.apply(bundle(create_patient(PATIENT_A0), _put("Encounter", STAY, status="in-progress", subject=a0),
                            _put("Observation", RESULT, status="final", subject=a0, encounter={"reference": f"urn:uuid:{STAY}"})))
        record.apply(_merge(PATIENT_A0, PATIENT_A))
        record.apply(bundle(create_patient(PATIENT_A), _put("Observation", LATER_RESULT, status="final", subject=a, encounter=in_stay)))
        record.apply(_move_stay(PATIENT_A, PATIENT_B))
        whose = {rid: record.read(rtype, rid)["subject"]["reference"] for rtype, rid in
                 (("Encounter", STAY), ("Observation", RESULT), ("Observation", LATER_RESULT))}
        assert whose == dict.fromkeys((STAY, RESULT, LATER_RESULT), f"Patient/{PATIENT_B}")

    def test_a_patch_that_drops_the_patient_is_refused(self, record):
        """A PATCH deleting the subject would leave A's prescription with no patient, for the next update to give to anyone."""
        store_patient_a_prescription(record)
        with pytest.raises(InvalidContent) as err:
            record.apply(bundle(patch([op("delete", "MedicationRequest.subject")])))
        assert err.value.reason == "the MedicationRequest this message changes belongs to a patient, and this message names none"
        assert record.read("MedicationRequest", MR_ID)["subject"] == {"reference": f"Patient/{PATIENT_A}"}
