"""adapters/fhir/_bundle.py `rewrite`: the text-level copy gives what the Python walk gives, on the awkward cases too."""

from __future__ import annotations

import copy

import pytest

from adapters.fhir._bundle import _rewrite_walk, rewrite
from router.errors import InvalidContent

TARGETS = {"urn:uuid:p1": "Patient/abc", "urn:uuid:e1": "Encounter/def"}

CASES = {
    "nested": {"resourceType": "Observation", "subject": {"reference": "urn:uuid:p1"}, "performer": [{"reference": "urn:uuid:e1", "display": "x"}], "extension": [{"valueReference": {"reference": "urn:uuid:p1"}}]},
    "text-that-looks-like-one": {"resourceType": "Patient", "text": {"div": '"reference":"urn:uuid:zz" and \\"reference\\":\\"urn:uuid:zz\\"'}},
    "other-urn-kept": {"resourceType": "Patient", "managingOrganization": {"reference": "urn:oid:1.2.3"}},
    "escaped-in-the-urn": {"resourceType": "Patient", "link": [{"other": {"reference": 'urn:uuid:p1"x'}}]},
    "unicode-and-numbers": {"resourceType": "Patient", "name": [{"family": "Ærø"}], "multipleBirthInteger": 2, "x": 1.5, "y": None, "z": True},
    "big-int": {"resourceType": "Observation", "valueInteger": 2**70, "subject": {"reference": "urn:uuid:p1"}},
    "no-references": {"resourceType": "Patient", "id": "p"},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_the_walk(name):
    """Each case rewrites to what the Python walk makes, as a copy that leaves the input alone."""
    value = CASES[name]
    before = copy.deepcopy(value)
    try:
        expected = _rewrite_walk(value, TARGETS, "here")
    except InvalidContent as exc:
        with pytest.raises(InvalidContent, match=exc.reason):
            rewrite(value, TARGETS, "here")
        return
    got = rewrite(value, TARGETS, "here")
    assert got == expected
    assert value == before
    got["resourceType"] = "Changed"
    assert value["resourceType"] != "Changed"


def test_dangling_uuid_is_refused_with_its_place():
    """A urn:uuid reference to no entry is InvalidContent at the entry's place."""
    with pytest.raises(InvalidContent) as err:
        rewrite({"subject": {"reference": "urn:uuid:nobody"}}, TARGETS, "Bundle.entry[2]")
    assert err.value.location == "Bundle.entry[2]"


def test_rewrites():
    """A known urn:uuid becomes Type/id."""
    assert rewrite(CASES["nested"], TARGETS, "")["performer"][0]["reference"] == "Encounter/def"


def test_no_copy_when_asked_and_nothing_to_rewrite():
    """copy=False (the apply) gives back the resource itself when it has no urn: reference, and a rewritten copy when it has."""
    plain = {"resourceType": "Organization", "name": "x", "partOf": {"reference": "Organization/abc"}}
    assert rewrite(plain, TARGETS, "here", copy=False) is plain
    nested = CASES["nested"]
    before = copy.deepcopy(nested)
    got = rewrite(nested, TARGETS, "here", copy=False)
    assert got == _rewrite_walk(nested, TARGETS, "here")
    assert nested == before
