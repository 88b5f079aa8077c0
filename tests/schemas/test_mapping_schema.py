"""schemas/mapping.schema.json: editors' schema for mapping files agrees with the files and the library."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from router.mapping.library import LIBRARY

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())


class TestMappingSchema:
    def test_schema_is_valid(self):
        """The schema itself is a valid JSON Schema."""
        jsonschema.Draft202012Validator.check_schema(SCHEMA)

    @pytest.mark.parametrize("path", sorted(p for p in (ROOT / "mappings").rglob("*.yaml") if "outbound" not in p.relative_to(ROOT / "mappings").parts), ids=lambda p: str(p.relative_to(ROOT)))
    def test_every_shipped_mapping_validates(self, path):
        """Every inbound mapping file in mappings/ matches the schema editors use (outbound ones have their own)."""
        jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)

    def test_a_typo_is_rejected(self):
        """An unknown rule key fails the schema, as it fails lint."""
        doc = {"datatype": "CX.Identifier", "target": "Identifier", "rules": [{"target": "value", "fromm": "CX.1"}]}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)

    def test_function_names_match_the_library(self):
        """The schema lists exactly the functions of the library."""
        assert set(SCHEMA["$defs"]["rule"]["properties"]["fn"]["enum"]) == set(LIBRARY)
