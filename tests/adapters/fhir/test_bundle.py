"""adapters/fhir/_bundle.py: `rewrite` gives what the Python walk gives, on the awkward cases too; parsing keeps its errors."""

from __future__ import annotations

import copy
from urllib.parse import parse_qsl

import pytest

from adapters.fhir._bundle import TYPE_RE, _is_type, _rewrite_walk, parse_bundle, parse_criteria, rewrite
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
    "own-member": {"resourceType": "Basic", "reference": "urn:uuid:p1", "subject": {"reference": "urn:uuid:e1"}},
    "dangling-in-a-member": {"resourceType": "Encounter", "subject": {"reference": "urn:uuid:p1"}, "partOf": [{"reference": "urn:uuid:nobody"}]},
}
# Not JSON, so not a walk case (the walk leaves tuples alone): copy=False must still do what the text copy does.
NO_COPY_CASES = {**CASES, "tuple-member": {"resourceType": "Observation", "performer": ({"reference": "urn:uuid:p1"},), "subject": {"reference": "urn:uuid:e1"}}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_the_walk(name):
    """Each case rewrites to what the Python walk makes, as a copy that leaves the input alone."""
    value = CASES[name]
    before = copy.deepcopy(value)
    got = _agree(lambda: _rewrite_walk(value, TARGETS, "here"), lambda: rewrite(value, TARGETS, "here"))
    assert value == before
    if got is not None:
        got["resourceType"] = "Changed"
        assert value["resourceType"] != "Changed"


def _agree(expected, actual):
    """Call both; they must give equal results or raise the same InvalidContent. Returns actual's result (None on error)."""
    try:
        want = expected()
    except InvalidContent as exc:
        with pytest.raises(InvalidContent, match=exc.reason):
            actual()
        return None
    got = actual()
    assert got == want
    return got


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


@pytest.mark.parametrize("name", sorted(NO_COPY_CASES))
def test_no_copy_gives_what_the_text_copy_gives(name):
    """copy=False (members walked one by one) gives what copy=True gives, or the same error, and leaves the input alone."""
    value = NO_COPY_CASES[name]
    before = copy.deepcopy(value)
    _agree(lambda: rewrite(value, TARGETS, "here"), lambda: rewrite(value, TARGETS, "here", copy=False))
    assert value == before


def _entry(url: str, resource: object = None, **request: object) -> dict:
    entry: dict = {"request": {"method": "PUT", "url": url, **request}}
    if resource is not None:
        entry["resource"] = resource
    return entry


class TestParseBundle:
    @pytest.mark.parametrize(
        ("entry", "location"),
        [
            ({"resource": {}}, "Bundle.entry[1]"),
            (_entry("Patient", method="GET"), "Bundle.entry[1].request.method"),
            (_entry(""), "Bundle.entry[1].request.url"),
            (_entry("patient/x", {"resourceType": "patient"}), "Bundle.entry[1].request.url"),
            (_entry("Patient/x y", {"resourceType": "Patient"}), "Bundle.entry[1].request.url"),
            (_entry("Patient/x?identifier=a", {"resourceType": "Patient"}), "Bundle.entry[1].request.url"),
            (_entry("Patient?identifier=a", {"resourceType": "Patient"}, ifNoneExist="identifier=b"), "Bundle.entry[1].request.ifNoneExist"),
            (_entry("Patient?&", {"resourceType": "Patient"}), "Bundle.entry[1].request.url"),
            (_entry("Patient/x"), "Bundle.entry[1].resource"),
            (_entry("Patient/x", {"resourceType": "Encounter"}), "Bundle.entry[1].resource.resourceType"),
            (_entry("Patient/x", {"resourceType": "Patient", "id": "x y"}), "Bundle.entry[1].resource.id"),
            (_entry("Patient/x", {"resourceType": "Patient", "id": "y"}), "Bundle.entry[1].resource.id"),
            ({**_entry("Patient/x", {"resourceType": "Patient"}), "fullUrl": 3}, "Bundle.entry[1].fullUrl"),
        ],
    )
    def test_errors_name_the_entry_member(self, entry, location):
        """A malformed entry is InvalidContent at its own index and member (the locations are built only then)."""
        good = _entry("Patient/ok", {"resourceType": "Patient"})
        with pytest.raises(InvalidContent) as err:
            parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [good, entry]})
        assert err.value.location == location

    @pytest.mark.parametrize("query", ["identifier=sys|v", "?identifier=sys|v", "identifier=a%7Cb", "a=b&c=d", "a=b+c", "a=b=c", "a", "_id=x.y-z"])
    def test_criteria_split_as_parse_qsl_splits(self, query):
        """The fast path for one plain pair gives what parse_qsl gives."""
        assert parse_criteria(query, "here") == tuple(parse_qsl(query.lstrip("?"), keep_blank_values=True))

    @pytest.mark.parametrize("query", ["identifier=sys|MED%2F101", "a=b&c=d", "a=b+c"])
    def test_criteria_parse_qsl_splits_are_the_same_again(self, query):
        """A condition parse_qsl splits is answered alike when it comes again (remembered), in a request url too."""
        first = parse_criteria(query, "here")
        assert parse_criteria(query, "here") == first == tuple(parse_qsl(query, keep_blank_values=True))
        [entry] = parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [_entry(f"Location?{query}", {"resourceType": "Location"})]})
        assert entry.criteria == first

    def test_empty_condition_is_refused_every_time(self):
        """A condition with no pair is refused however often it comes: a refusal is never remembered."""
        for _ in range(2):
            with pytest.raises(InvalidContent) as err:
                parse_criteria("&", "here")
            assert err.value.location == "here"

    @pytest.mark.parametrize("name", ["Patient", "Patient", "patient", "P", "Pa", "Patient1", "A" * 64, "A" * 65, "Patient\n"])
    def test_type_check_is_the_pattern_remembered(self, name):
        """_is_type answers as TYPE_RE does, the second time too (it remembers the names it accepted)."""
        assert _is_type(name) == bool(TYPE_RE.fullmatch(name))
        assert _is_type(name) == bool(TYPE_RE.fullmatch(name))
