"""schemas/outbound-*.schema.json: editors' schemas for the outbound mapping languages agree with the files and the loaders."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from adapters.hl7v2 import _outbound_fields as hl7v2_fields
from adapters.hl7v2 import outbound as hl7v2_outbound
from adapters.hl7v2 import outbound_cases as hl7v2_cases
from adapters.hl7v2._er7 import CHARSETS
from adapters.kith import _outbound as kith_outbound
from adapters.kith._outbound_fns import FUNCTIONS as KITH_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]
HL7V2 = json.loads((ROOT / "schemas" / "outbound-hl7v2.schema.json").read_text(encoding="utf-8"))
KITH = json.loads((ROOT / "schemas" / "outbound-kith.schema.json").read_text(encoding="utf-8"))
HL7V2_DIR = ROOT / "mappings" / "outbound" / "hl7v2"
KITH_DIR = ROOT / "mappings" / "outbound" / "kith"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _validator(schema: dict[str, Any], definition: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for the whole schema, or for one of its $defs (as an editor's `#/$defs/...` would use it)."""
    if definition is None:
        return jsonschema.Draft202012Validator(schema)
    registry = Registry().with_resource(schema["$id"], DRAFT202012.create_resource(schema))
    return jsonschema.Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{definition}"}, registry=registry)


def _rejects(schema: dict[str, Any], doc: Any, definition: str | None = None) -> bool:
    return not _validator(schema, definition).is_valid(doc)


def _ids(root: Path) -> Any:
    return lambda p: str(p.relative_to(root))


def _props(schema: dict[str, Any], definition: str) -> set[str]:
    return set(schema["$defs"][definition]["properties"])


HL7V2_MAPPINGS = sorted(HL7V2_DIR.glob("*.yaml"))
HL7V2_TABLES = sorted((HL7V2_DIR / "tables").glob("*.yaml"))
HL7V2_CASES = sorted(HL7V2_DIR.glob("*.cases/*/case.yaml"))
KITH_MAPPINGS = sorted(KITH_DIR.glob("*.yaml"))


class TestSchemasAreValid:
    @pytest.mark.parametrize("schema", [HL7V2, KITH], ids=["hl7v2", "kith"])
    def test_schema_is_valid(self, schema):
        """Each schema is a valid draft 2020-12 JSON Schema."""
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    @pytest.mark.parametrize("schema", [HL7V2, KITH], ids=["hl7v2", "kith"])
    def test_every_property_has_a_title_and_description(self, schema):
        """Editors show a title and a description for every key a file may hold."""
        missing = []

        def walk(node: Any, where: str) -> None:
            if isinstance(node, dict):
                for name, prop in node.get("properties", {}).items():
                    target = prop
                    if "$ref" in prop and "title" not in prop:  # a shared property: its definition carries them
                        target = _resolve(schema, prop["$ref"])
                    if not (target.get("title") and target.get("description")):
                        missing.append(f"{where}/properties/{name}")
                    walk(prop, f"{where}/properties/{name}")
                for key, child in node.items():
                    if key not in {"properties", "if", "then", "else", "not"}:  # conditions restate keys, they add none
                        walk(child, f"{where}/{key}")
            elif isinstance(node, list):
                for i, child in enumerate(node):
                    walk(child, f"{where}/{i}")

        walk(schema, "#")
        assert missing == []


def _resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


class TestOutboundHl7v2Schema:
    def test_the_shipped_files_are_found(self):
        """The parametrised checks below see the shipped mapping, its tables and its case options."""
        assert HL7V2_MAPPINGS and HL7V2_TABLES and HL7V2_CASES

    @pytest.mark.parametrize("path", HL7V2_MAPPINGS + HL7V2_TABLES + HL7V2_CASES, ids=_ids(ROOT))
    def test_every_shipped_file_validates(self, path):
        """Every outbound HL7 v2 mapping, table and case.yaml matches the schema editors use."""
        jsonschema.validate(_load(path), HL7V2)

    @pytest.mark.parametrize(
        ("paths", "definition"),
        [(HL7V2_MAPPINGS, "mapping"), (HL7V2_TABLES, "table"), (HL7V2_CASES, "case")],
        ids=["mapping", "table", "case"],
    )
    def test_each_kind_validates_against_its_own_definition(self, paths, definition):
        """A file matches the $defs entry of its kind (editors may point a case.yaml at #/$defs/case)."""
        validator = _validator(HL7V2, definition)
        for path in paths:
            validator.validate(_load(path))

    @pytest.mark.parametrize(
        ("where", "edit"),
        [
            ("top level", lambda d: d.update(segmnts=d.pop("segments"))),
            ("segment", lambda d: d["segments"][2].update(resorce="Patient")),
            ("field", lambda d: d["segments"][2]["fields"]["PID-3"].update(componets={1: "value"})),
            ("value", lambda d: d["segments"][2]["fields"]["PID-8"].update(tabel="x")),
            ("component", lambda d: d["segments"][2]["fields"]["PID-3"]["components"][4].update(fromm="system")),
        ],
    )
    def test_a_typo_is_rejected(self, where, edit):
        """An unknown key anywhere in a mapping fails the schema, as it fails the loader."""
        doc = _load(HL7V2_DIR / "ADT_A01.yaml")
        edit(doc)
        assert _rejects(HL7V2, doc), where

    @pytest.mark.parametrize(
        ("what", "edit"),
        [
            ("a typo in a group", lambda d: _oru_group(d).update(eech="DiagnosticReport")),
            ("a group without each", lambda d: _oru_group(d).pop("each")),
            ("a typo in a nested group", lambda d: _oru_group(d)["segments"][2].update(ass="Observation")),
            ("resource with each", lambda d: d["segments"][4].update(resource="AllergyIntolerance")),
            ("where without each", lambda d: d["segments"][2].update(where="gender=male")),
            ("required inside alternatives", lambda d: _obx(d)["OBX-2"][0].update(required=True)),
            ("a bad version", lambda d: _obx(d)["OBX-2"][4].update(versions=["two"])),
        ],
    )
    def test_repeats_and_groups_are_checked(self, what, edit):
        """Groups, each:/as:/where: and field alternatives refuse what the loader refuses."""
        doc = {"ADT": _load(HL7V2_DIR / "ADT_A01.yaml"), "ORU": _load(HL7V2_DIR / "ORU_R01.yaml")}
        target = doc["ADT"] if what in ("resource with each", "where without each") else doc["ORU"]
        assert not _rejects(HL7V2, target)
        edit(target)
        assert _rejects(HL7V2, target), what

    def test_a_typo_in_a_table_or_case_is_rejected(self):
        """Tables and case.yaml refuse unknown keys too, and unmapped: takes only its four forms."""
        table = _load(HL7V2_TABLES[0])
        assert _rejects(HL7V2, {**table, "unmaped": "omit"})
        assert _rejects(HL7V2, {**table, "unmapped": "drop"})
        assert not _validator(HL7V2, "table").is_valid({**table, "unmapped": {"value": "U", "else": "X"}})
        assert _rejects(HL7V2, {"version": "2.3", "charst": "ASCII"})
        assert _rejects(HL7V2, {"charset": "UTF-8"}, "case")

    def test_an_unknown_function_is_rejected(self):
        """fn: names one of the field library's functions."""
        doc = _load(HL7V2_DIR / "ADT_A01.yaml")
        doc["segments"][2]["fields"]["PID-7"]["fn"] = "hl7_datetime"
        assert _rejects(HL7V2, doc)

    def test_an_unknown_context_name_is_rejected(self):
        """context: names one of the values the renderer offers."""
        doc = _load(HL7V2_DIR / "ADT_A01.yaml")
        doc["segments"][1]["fields"]["EVN-1"] = {"context": "trigger"}
        assert _rejects(HL7V2, doc)

    @pytest.mark.parametrize(
        ("what", "spec"),
        [
            ("two sources", {"value": "1", "from": "gender"}),
            ("no source", {"fn": "hl7_date"}),
            ("each with from", {"each": "identifier", "from": "identifier[0]", "components": {1: "value"}}),
            ("resolve without as", {"each": "generalPractitioner", "resolve": "reference", "components": {1: "display"}}),
            ("as without resolve", {"from": "gender", "as": "Patient"}),
            ("value with components", {"value": "1", "components": {1: "value"}}),
            ("component zero", {"each": "identifier", "components": {"0": "value"}}),
            ("a required: that is not a boolean", {"from": "gender", "required": "yes"}),
        ],
    )
    def test_a_malformed_field_is_rejected(self, what, spec):
        """The field rules the loader states in words hold in the schema too."""
        doc = _load(HL7V2_DIR / "ADT_A01.yaml")
        doc["segments"][2]["fields"]["PID-8"] = spec
        assert _rejects(HL7V2, doc), what

    def test_msh_rules(self):
        """MSH takes no resource:, and the fields the renderer writes itself are refused."""
        doc = _load(HL7V2_DIR / "ADT_A01.yaml")
        with_resource = copy.deepcopy(doc)
        with_resource["segments"][0]["resource"] = "Patient"
        assert _rejects(HL7V2, with_resource)
        owned = copy.deepcopy(doc)
        owned["segments"][0]["fields"]["MSH-10"] = {"value": "X"}
        assert _rejects(HL7V2, owned)
        other = copy.deepcopy(doc)
        other["segments"][0]["fields"]["MSH-3"] = {"value": "HELSEBRO"}
        assert not _rejects(HL7V2, other)

    def test_function_names_match_the_library(self):
        """The schema lists exactly the functions the field compiler knows."""
        assert set(HL7V2["$defs"]["valueSpec"]["properties"]["fn"]["enum"]) == set(hl7v2_fields.FUNCTIONS)

    def test_context_names_match_the_renderer(self):
        """The schema lists exactly the context: names the compiler accepts."""
        assert set(HL7V2["$defs"]["valueSpec"]["properties"]["context"]["enum"]) == set(hl7v2_fields.CONTEXT_NAMES)

    def test_charsets_match_the_encoder(self):
        """case.yaml's charset: lists exactly the charsets the renderer encodes."""
        assert set(HL7V2["$defs"]["case"]["properties"]["charset"]["enum"]) == set(CHARSETS)

    def test_msh_owned_fields_match_the_renderer(self):
        """The MSH fields the schema refuses are exactly the ones the renderer writes."""
        refused = HL7V2["$defs"]["segment"]["then"]["properties"]["fields"]["propertyNames"]["not"]["enum"]
        assert set(refused) == {f"MSH-{n}" for n in hl7v2_outbound.MSH_OWNED}

    def test_keys_match_the_loader(self):
        """Each object lists exactly the keys the loader accepts (additionalProperties: false does the rest)."""
        assert _props(HL7V2, "mapping") == hl7v2_outbound._TOP_KEYS
        assert _props(HL7V2, "segment") == hl7v2_outbound._SEGMENT_KEYS
        assert _props(HL7V2, "group") == hl7v2_outbound._GROUP_KEYS
        assert _props(HL7V2, "fieldSpec") == hl7v2_fields._FIELD_KEYS
        assert _props(HL7V2, "valueSpec") == hl7v2_fields._VALUE_KEYS | {"required"}
        assert _props(HL7V2, "case") == hl7v2_cases._CASE_KEYS
        assert _props(HL7V2, "table") == {"table", "description", "map", "unmapped", "note"}  # outbound._load_table


def _oru_group(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["segments"] if e.get("group") == "ORDER_OBSERVATION")


def _obx(doc: dict[str, Any]) -> dict[str, Any]:
    return _oru_group(doc)["segments"][2]["segments"][0]["fields"]


class TestOutboundKithSchema:
    def test_the_shipped_files_are_found(self):
        """The parametrised check below sees the shipped mappings."""
        assert KITH_MAPPINGS

    @pytest.mark.parametrize("path", KITH_MAPPINGS, ids=_ids(ROOT))
    def test_every_shipped_mapping_validates(self, path):
        """Every outbound KITH mapping matches the schema editors use."""
        jsonschema.validate(_load(path), KITH)

    @pytest.mark.parametrize(
        ("where", "edit"),
        [
            ("top level", lambda d: d.update(namespace=d.pop("namespaces"))),
            ("type", lambda d: d["type"].update(S="x")),
            ("resource", lambda d: d["resources"]["patient"].update(requird=True)),
            ("msghead", lambda d: d["msghead"].update(patients=[])),
            ("element", lambda d: d["msghead"]["sender"][0].update(child=[])),
            ("body element", lambda d: d["body"]["children"][0].update(attribute={"V": "N"})),
            ("value", lambda d: d["msghead"]["patient"][3]["text"].update(func="date")),
        ],
    )
    def test_a_typo_is_rejected(self, where, edit):
        """An unknown key anywhere in a mapping fails the schema, as it fails the loader."""
        doc = _load(KITH_DIR / "PLO_InnlagtPasient.yaml")
        edit(doc)
        assert _rejects(KITH, doc), where

    def test_an_unknown_function_is_rejected(self):
        """fn: names one of the library's functions."""
        doc = _load(KITH_DIR / "PLO_InnlagtPasient.yaml")
        doc["msghead"]["patient"][3]["text"]["fn"] = "when"
        assert _rejects(KITH, doc)

    @pytest.mark.parametrize(
        ("what", "edit"),
        [
            ("missing body", lambda d: d.pop("body")),
            ("unprefixed body element", lambda d: d["body"]["children"][0].update(element="InformasjonOmForsendelsen")),
            ("each on the body root", lambda d: d["body"].update(each="patient.identifier")),
            ("as without each", lambda d: d["msghead"]["patient"][0].update({"as": "x"})),
            ("text and children", lambda d: d["msghead"]["sender"][0].update(text="x")),
            ("an empty element", lambda d: d["msghead"]["patient"].append({"element": "Empty"})),
            ("an empty constant", lambda d: d["msghead"]["patient"].append({"element": "Empty", "text": " "})),
            ("a reserved resource name", lambda d: d["resources"].update(own={"type": "Organization"})),
            ("a non-boolean flag", lambda d: d["msghead"]["sender"][0]["children"][0].update(required="yes")),
            ("a path with spaces", lambda d: d["msghead"]["patient"][0]["text"].update({"from": "patient name"})),
        ],
    )
    def test_a_malformed_mapping_is_rejected(self, what, edit):
        """The rules the loader states in words hold in the schema too."""
        doc = _load(KITH_DIR / "PLO_InnlagtPasient.yaml")
        edit(doc)
        assert _rejects(KITH, doc), what

    def test_function_names_match_the_library(self):
        """The schema lists exactly the functions of the library."""
        assert set(KITH["$defs"]["valueSpec"]["properties"]["fn"]["enum"]) == set(KITH_FUNCTIONS)

    def test_reserved_names_match_the_loader(self):
        """Resource names may not be the loader's fixed path roots."""
        reserved = KITH["$defs"]["mapping"]["properties"]["resources"]["propertyNames"]["not"]["enum"]
        assert set(reserved) == set(kith_outbound._FIXED_ROOTS)

    def test_keys_match_the_loader(self):
        """Each object lists exactly the keys the loader accepts (additionalProperties: false does the rest)."""
        assert _props(KITH, "mapping") == kith_outbound._TOP
        assert _props(KITH, "resource") == kith_outbound._RESOURCE
        assert set(KITH["$defs"]["mapping"]["properties"]["msghead"]["properties"]) == kith_outbound._MSGHEAD
        assert _props(KITH, "element") == kith_outbound._NODE
        assert _props(KITH, "valueSpec") == kith_outbound._VALUE
