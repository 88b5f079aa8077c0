"""Tests for router/mapping/_join.py: one transaction, one entry per identity, logical references linked."""

from __future__ import annotations

from typing import Literal

import pytest

from router.errors import InvalidContent
from router.mapping import join_bundles
from router.mapping._join import Override
from router.mapping.runtime import conditional_entry


def _entry(rtype: str, value: str, *, create: bool = False, tag: str = "A", **content: object) -> dict:
    resource = {"resourceType": rtype, "identifier": [{"system": "urn:s", "value": value}], "meta": {"tag": [{"code": tag}]}, **content}
    return conditional_entry(rtype, resource, "urn:s", value, create_only=create)


def _bundle(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


class TestJoinBundles:
    def test_the_same_resource_from_two_mappings_is_one_entry(self):
        """An identity met again with the same content (only the provenance tag differs) stays one entry."""
        outer = _bundle(_entry("Organization", "1", create=True, name="Legekontor"))
        join_bundles(outer, [("/d[2]", _bundle(_entry("Organization", "1", create=True, tag="B", name="Legekontor")))])
        assert len(outer["entry"]) == 1 and outer["entry"][0]["resource"]["meta"]["tag"] == [{"code": "A"}]

    def test_of_two_carried_creates_the_first_stays(self):
        """Two carried messages' creates of one identity with different content keep the first: the second could never write."""
        outer = _bundle()
        join_bundles(outer, [("/d[2]", _bundle(_entry("Patient", "1", create=True, gender="female"))), ("/d[3]", _bundle(_entry("Patient", "1", create=True)))])
        assert [e["resource"].get("gender") for e in outer["entry"]] == ["female"]

    def test_a_carried_create_wins_over_the_carrying_messages_create(self):
        """The carrying message's create of an identity a carried message also creates gives way to the carried one:
        the carrying message summarises (an M9.12's Reseptinfo), the carried one holds the whole resource."""
        outer = _bundle(_entry("MedicationRequest", "r1", create=True, status="active"))
        join_bundles(outer, [("/d[2]", _bundle(_entry("MedicationRequest", "r1", create=True, tag="B", status="unknown", note=[{"text": "whole"}])))])
        [entry] = outer["entry"]
        assert entry["resource"]["status"] == "unknown" and entry["resource"]["note"] == [{"text": "whole"}]

    def test_an_update_wins_over_a_create(self):
        """An update and a create of one identity keep the update, in the create's place."""
        outer = _bundle(_entry("MedicationRequest", "r1", create=True), _entry("List", "l"))
        join_bundles(outer, [("/d[2]", _bundle(_entry("MedicationRequest", "r1", status="active")))])
        assert [e["request"]["method"] for e in outer["entry"]] == ["PUT", "PUT"]
        assert outer["entry"][0]["resource"]["status"] == "active"

    def test_two_different_updates_are_refused_at_the_carried_message(self):
        """Two updates that say different things about one identity refuse the message, naming where the second sits."""
        outer = _bundle(_entry("MedicationRequest", "r1", status="active"))
        with pytest.raises(InvalidContent) as err:
            join_bundles(outer, [("/d[3]", _bundle(_entry("MedicationRequest", "r1", status="stopped")))])
        assert err.value.location == "/d[3]"

    def test_a_logical_reference_to_a_resource_in_the_bundle_is_linked(self):
        """A Reference with type and identifier gets the fullUrl of the resource the Bundle writes under that identity;
        one whose resource is absent stays logical."""
        request = _entry("MedicationRequest", "r1")
        items = [{"item": {"type": "MedicationRequest", "identifier": {"system": "urn:s", "value": v}}} for v in ("r1", "r2")]
        outer = _bundle(_entry("List", "l", entry=items))
        join_bundles(outer, [("/d[2]", _bundle(request))])
        linked, logical = (e["item"] for e in outer["entry"][0]["resource"]["entry"])
        assert linked["reference"] == request["fullUrl"] and "reference" not in logical


def _override(elements: tuple[str, ...] = ("status", "statusReason"), alone: Literal["keep", "drop"] = "keep") -> Override:
    return Override("MedicationRequest", elements, alone)


class TestOverride:
    def test_the_carrying_messages_elements_are_laid_over_the_carried_resource(self):
        """The named elements the carrying message gives replace the carried resource's; the rest, its request and its
        identity stay the carried one's, and the provenance names both mappings."""
        outer = _bundle(_entry("MedicationRequest", "r1", create=True, status="stopped", intent="plan"))
        carried = _entry("MedicationRequest", "r1", tag="B", status="active", intent="order", authoredOn="2019-07-17")
        join_bundles(outer, [("/d[2]", _bundle(carried))], override=_override())
        [entry] = outer["entry"]
        assert entry["request"]["method"] == "PUT" and entry["fullUrl"] == carried["fullUrl"]
        resource = entry["resource"]
        assert (resource["status"], resource["intent"], resource["authoredOn"]) == ("stopped", "order", "2019-07-17")
        assert "statusReason" not in resource  # the carrying message gives none: nothing to lay over
        assert resource["meta"]["tag"] == [{"code": "B"}, {"code": "A"}]

    @pytest.mark.parametrize(("alone", "kept"), [("keep", ["r1", "r2"]), ("drop", ["r1"])])
    def test_the_carrying_messages_resource_met_by_none_is_kept_or_dropped(self, alone, kept):
        """`alone: keep` writes the carrying message's own resource that no carried message writes; `alone: drop` does not."""
        outer = _bundle(_entry("MedicationRequest", "r1", create=True, status="stopped"), _entry("MedicationRequest", "r2", create=True, status="stopped"))
        join_bundles(outer, [("/d[2]", _bundle(_entry("MedicationRequest", "r1", tag="B", status="active")))], override=_override(alone=alone))
        assert [e["resource"]["identifier"][0]["value"] for e in outer["entry"]] == kept
        assert outer["entry"][0]["resource"]["status"] == "stopped"

