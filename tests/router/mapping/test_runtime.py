"""Tests for router/mapping/runtime.py: resource ids and pruning."""

from __future__ import annotations

import copy

from router.mapping.functions import uuid5_id
from router.mapping.runtime import has_empty, prune, resource_id


class TestRuntime:
    def test_resource_id_equals_uuid5_id(self):
        """The fast resource id is the same UUID that uuid5_id gives, for any text."""
        for parts in [("Patient", "urn:oid:2.16.578.1.12.4.1.4.1", "x"), ("Encounter", "", "æøå €"), ("a|b",)]:
            assert resource_id(*parts) == uuid5_id(*parts)
        variants = set()
        for k in range(500):  # enough digests that every value of the digit holding the variant bits occurs
            parts = ("Observation", "urn:helsebro:identity", f"value-{k}")
            assert resource_id(*parts) == uuid5_id(*parts)
            variants.add(uuid5_id(*parts)[19])
        assert variants == set("89ab")

    def test_has_empty_finds_nested_empties(self):
        """has_empty is true exactly when prune would remove something."""
        for value in [{}, [], {"a": {"b": []}}, [{"x": "1"}, {}], {"a": "1", "b": [{"c": "2"}]}, "text"]:
            pruned = {"v": copy.deepcopy(value)}
            prune(pruned)
            assert has_empty(value) == (pruned != {"v": value})
