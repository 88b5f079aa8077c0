"""The record's document semantics: `_tag` search, and a conditional DELETE that replaces a document's resources."""

from __future__ import annotations

import pytest

from router.errors import InvalidContent

DOC = "urn:helsebro:document|conv-1"


def _condition(code: str, *, tag: bool = True, patient: str = "Patient/p1") -> dict:
    res = {"resourceType": "Condition", "id": f"c-{code}", "identifier": [{"system": "urn:test", "value": code}], "subject": {"reference": patient}, "code": {"text": code}}
    if tag:
        res["meta"] = {"tag": [{"system": "urn:helsebro:document", "code": "conv-1"}]}
    return res


def _bundle(*codes: str, replace: bool = False, patient: str = "Patient/p1") -> dict:
    entries = []
    if replace:
        entries.append({"request": {"method": "DELETE", "url": f"Condition?_tag={DOC}"}})
    entries += [{"fullUrl": f"urn:uuid:{c}", "resource": _condition(c, patient=patient), "request": {"method": "PUT", "url": f"Condition?identifier=urn:test|{c}"}} for c in codes]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class TestDocumentReplace:
    def test_tag_search_finds_the_documents_resources(self, record):
        """`_tag` finds every current resource carrying the document's tag."""
        record.apply(_bundle("a", "b"))
        assert {r["id"] for r in record.search("Condition", {"_tag": DOC})} == {"c-a", "c-b"}

    def test_a_change_retires_what_the_new_version_lacks_and_keeps_the_rest_unchanged(self, record):
        """Replacing (a, b) by (b, c) marks a entered-in-error, leaves b at its version, and creates c."""
        record.apply(_bundle("a", "b"))
        result = record.apply(_bundle("b", "c", replace=True))
        assert [e.outcome for e in result.entries] == ["updated", "unchanged", "created"]
        a = record.read("Condition", "c-a")
        assert a["verificationStatus"]["coding"][0]["code"] == "entered-in-error" and "clinicalStatus" not in a
        assert record.read("Condition", "c-b")["meta"]["versionId"] == "1"

    def test_a_cancel_retires_every_resource_of_the_document(self, record):
        """A replace that restates nothing (a cancel) retires them all; replaying it changes nothing more."""
        record.apply(_bundle("a", "b"))
        record.apply(_bundle(replace=True))
        found = record.search("Condition", {"_tag": DOC})
        assert {r["verificationStatus"]["coding"][0]["code"] for r in found} == {"entered-in-error"}
        result = record.apply(_bundle(replace=True))
        assert {e.outcome for e in result.entries} == {"unchanged"}
        assert len(record.history("Condition", "c-a")) == 2

    def test_a_plain_multiple_match_delete_deletes(self, record):
        """Outside documents, a conditional DELETE with several matches deletes them all."""
        record.apply(_bundle("a", "b"))
        record.apply({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": "Condition?subject=Patient/p1"}}]})
        assert record.search("Condition", {"subject": "Patient/p1"}) == []

    def test_untagged_resources_are_left_alone(self, record):
        """Only resources carrying the document's tag are touched."""
        record.apply({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": _condition("z", tag=False), "request": {"method": "PUT", "url": "Condition/c-z"}}]})
        record.apply(_bundle("a", "b"))
        record.apply(_bundle(replace=True))
        assert record.read("Condition", "c-z") is not None


class TestWrongPatientCorrected:
    """A document sent under the wrong patient is cancelled, then sent again for the right one (the same conversation)."""

    def test_what_the_cancel_retired_goes_to_the_right_patient(self, record):
        """The retired resources take the new patient; each one's history keeps the first patient's versions."""
        record.apply(_bundle("a", "b"))
        record.apply(_bundle(replace=True))
        result = record.apply(_bundle("a", "b", replace=True, patient="Patient/p2"))
        assert [e.outcome for e in result.entries][-2:] == ["updated", "updated"]
        found = record.search("Condition", {"_tag": DOC})
        assert sorted((r["id"], r["subject"]["reference"], "verificationStatus" in r) for r in found) == [("c-a", "Patient/p2", False), ("c-b", "Patient/p2", False)]
        assert [v["subject"]["reference"] for v in record.history("Condition", "c-a")] == ["Patient/p2", "Patient/p1", "Patient/p1"]

    def test_a_live_document_of_another_patient_is_still_refused(self, record):
        """Without the cancel the first patient's resources are live: the second patient's copy is refused."""
        record.apply(_bundle("a", "b"))
        with pytest.raises(InvalidContent, match="belongs to another patient"):
            record.apply(_bundle("a", "b", replace=True, patient="Patient/p2"))
        assert {r["subject"]["reference"] for r in record.search("Condition", {"_tag": DOC})} == {"Patient/p1"}

    def test_only_what_was_retired_moves(self, record):
        """One resource retired and one live (a change dropped it, then it came back): the live one refuses the message."""
        record.apply(_bundle("a", "b"))
        record.apply(_bundle("b", replace=True))  # a retired, b live
        with pytest.raises(InvalidContent, match="belongs to another patient"):
            record.apply(_bundle("a", "b", replace=True, patient="Patient/p2"))
        assert record.read("Condition", "c-a")["subject"]["reference"] == "Patient/p1"
