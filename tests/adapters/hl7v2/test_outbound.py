"""Tests for adapters/hl7v2/outbound.py: outbound mappings are checked when they load, each error at file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.hl7v2.outbound import lint_outbound, load_outbound
from router.errors import MappingError
from router.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "mappings" / "outbound" / "hl7v2"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A private copy of the shipped outbound mappings and tables (no cases)."""
    dst = tmp_path / "outbound" / "hl7v2"
    shutil.copytree(SHIPPED, dst, ignore=shutil.ignore_patterns("*.cases"))
    return dst


def _edit(path: Path, old: str, new: str) -> int:
    """Replace the first *old*; return the 1-based line it was on."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def _errors(folder: Path, version: str = "2.5.1") -> list[str]:
    return [str(e) for e in lint_outbound(folder, version=version)]


class TestOutboundLoad:
    def test_shipped_mappings_load_for_each_version(self):
        """The shipped mappings lint clean for v2.3, v2.4 and v2.5.1."""
        for version in ("2.3", "2.4", "2.5.1"):
            assert _errors(SHIPPED, version) == [], version

    @pytest.mark.parametrize(
        ("old", "new", "says"),
        [
            ("PID-30:", "PID-99:", "PID has 39 fields in HL7 2.5.1; PID-99 does not exist"),
            ("  - segment: EVN", "  - segment: OBR", "OBR is not a segment of ADT_A01 in HL7 2.5.1"),
            ("PID-7: {from: birthDate", "PID-7: {from: birthdate", "Patient has no element 'birthdate'"),
            ("PID-7: {from: birthDate, fn: hl7_date}", "PID-7: {from: birthDate, fn: hl7_datum}", "fn: 'hl7_datum' is not one of"),
            ("table: fhir-gender-to-0001", "table: fhir-gender", "no table 'fhir-gender'"),
            ("    resource: Encounter", "    resourse: Encounter", "unknown key 'resourse'"),
            ("      MSH-11:", "      MSH-10:", "MSH-10 is written by the renderer"),
            ("      PID-8: {from: gender,", "      PID-8: {from: name,", "name reaches a HumanName, not a value"),
            ("          5: postalCode", "          15: postalCode", "has 14 components in HL7 2.5.1"),
            ("        resolve: individual", "        resolve: period", "resolve: period is not a Reference"),
            ("  A03: ADT_A03", "  A03: ADT_A99", "ADT_A99 (for A03) is not a message structure of HL7 2.5.1"),
            ('1: {from: name, up: partOf, where: "physicalType.coding.code=wa"}', '1: {from: name, up: name, where: "physicalType.coding.code=wa"}', "up: name is not a Reference"),
            ('1: {from: name, up: partOf, where: "physicalType.coding.code=wa"}', '1: {from: name, up: partOf, where: "physicalType.coding.cod=wa"}', "has no element 'cod'"),
            ('4: {from: "identifier[0].assigner.display", up: partOf}', "4: {value: STOLAV, up: partOf}", "up: reads from:"),
            ('1: {from: name, up: partOf, where: "physicalType.coding.code=wa"}', '1: {from: name, where: "physicalType.coding.code=wa"}', "give up: too"),
            ("        components:              # each part from", "        up: partOf\n        components:              # each part from", "up: belongs to one value"),
            ("2: {from: individual.display, fn: family_name}", "2: {from: individual.display, fn: surname}", "fn: 'surname' is not one of"),
        ],
    )
    def test_each_mistake_names_its_line(self, folder, old, new, says):
        """A wrong field, segment, element, function, table, key or structure is reported at its file and line."""
        line = _edit(folder / "ADT_A01.yaml", old, new)
        errors = _errors(folder)
        hits = [e for e in errors if says in e]
        assert hits, errors
        assert f"ADT_A01.yaml:{line}:" in hits[0]

    def test_field_beyond_an_old_version(self, folder):
        """A field that v2.5.1 has and v2.3 lacks fails only for a v2.3 receiver."""
        _edit(folder / "ADT_A01.yaml", "PID-30:", "PID-33:")
        assert _errors(folder, "2.5.1") == []
        assert any("PID has 30 fields in HL7 2.3; PID-33 does not exist" in e for e in _errors(folder, "2.3"))

    def test_segments_out_of_order(self, folder):
        """Segments must follow the structure's order: PV1 before PID is an error."""
        path = folder / "ADT_A01.yaml"
        text = path.read_text(encoding="utf-8")
        pid = text.index("  - segment: PID")
        pv1 = text.index("  - segment: PV1")
        path.write_text(text[:pid] + text[pv1:] + text[pid:pv1], encoding="utf-8")
        assert any("PID is out of order" in e for e in _errors(folder))

    def test_load_raises_the_first_error(self, folder):
        """load_outbound raises MappingError carrying file, line and column."""
        line = _edit(folder / "ADT_A01.yaml", "PID-30:", "PID-99:")
        with pytest.raises(MappingError) as info:
            load_outbound(folder / "ADT_A01.yaml", "2.5.1")
        assert (info.value.line, info.value.column) == (line, 7)
        assert info.value.file.endswith("ADT_A01.yaml")

    def test_name_must_match_file(self, folder):
        """outbound: must be the file's own name, so a destination's `mapping:` finds it."""
        line = _edit(folder / "ADT_A01.yaml", "outbound: ADT_A01", "outbound: ADT_A02")
        assert any(f"ADT_A01.yaml:{line}:" in e and "must be the file's name" in e for e in _errors(folder))

    def test_bad_table(self, folder):
        """A table whose unmapped: is not a known policy is reported at its line."""
        line = _edit(folder / "tables" / "fhir-gender-to-0001.yaml", "unmapped: {value: U}", "unmapped: guess")
        assert any(f"fhir-gender-to-0001.yaml:{line}:" in e and "unmapped:" in e for e in _errors(folder))


    @pytest.mark.parametrize(("old", "new"), [
        ("unmapped: {value: U}", "unmapped: guess"),  # a value the loader refuses
        ("map: {male: M", "map: {male: [M"),  # a YAML syntax error
    ])
    def test_a_broken_table_is_reported_once(self, folder, old, new):
        """A broken table gives its own error only, not one more `no table` at each field that uses it (PID-8 of both mappings).

        Why: the one line that matters was buried under its users' errors; the inbound side reports a broken file once too.
        """
        _edit(folder / "tables" / "fhir-gender-to-0001.yaml", old, new)
        errors = _errors(folder)
        assert len([e for e in errors if "fhir-gender-to-0001.yaml:" in e]) == 1, errors
        assert not [e for e in errors if "no table" in e], errors

    def test_a_missing_table_is_still_reported_at_its_use(self, folder):
        """A table no file defines is reported at the field that names it."""
        line = _edit(folder / "ADT_A01.yaml", "table: fhir-address-use-to-0190", "table: fhir-address-use-to-0999")
        assert any(f"ADT_A01.yaml:{line}:" in e and "no table 'fhir-address-use-to-0999'" in e for e in _errors(folder))


def _line_of(path: Path, text: str) -> int:
    return path.read_text(encoding="utf-8")[: path.read_text(encoding="utf-8").index(text)].count("\n") + 1


class TestRepeatsAndGroupsLoad:
    @pytest.mark.parametrize(
        ("file", "old", "new", "says"),
        [
            ("ADT_A01.yaml", "    each: AllergyIntolerance", "    each: Allergy", "each: 'Allergy' is not a FHIR R4 resource type"),
            ("ADT_A01.yaml", "    each: AllergyIntolerance", "    eachh: AllergyIntolerance", "unknown key 'eachh'"),
            ("ADT_A01.yaml", '    where: "verificationStatus.coding.code!=entered-in-error"\n    events: [A01, A04, A08]',
             '    where: "verificationstatus.coding.code!=entered-in-error"\n    events: [A01, A04, A08]', "AllergyIntolerance has no element 'verificationstatus'"),
            ("ADT_A01.yaml", "    events: [A01, A04, A08]", "    events: [A01, A02, A04]", "AL1 is not a segment of ADT_A02 in HL7 2.5.1"),  # at `segment: AL1`
            ("ADT_A01.yaml", "    events: [A01, A04, A08]", "    events: [A01, A05]", "event A05 is not one of"),
            ("ORU_R01.yaml", "    required: true               # an ORU", "    requird: true               # an ORU", "unknown key 'requird'"),
            ("ORU_R01.yaml", "        each: result", "        each: code", "each: code is not a Reference"),
            ("ORU_R01.yaml", "        as: Observation", "        as: Observaton", "as: names the FHIR resource type it points to"),
            ("ORU_R01.yaml", "        each: result", "        each: results", "DiagnosticReport has no element 'results'"),
            ("ORU_R01.yaml", "            each: note", "            each: note.text", "each: note.text reaches a primitive"),
            ("ORU_R01.yaml", "          - segment: NTE", "          - segment: SPM", "SPM is not part of ORU_R01's OBSERVATION group"),
            ("ORU_R01.yaml", "      - segment: ORC", "      - segment: PID", "PID is out of order: ORU_R01 puts it earlier"),
            ("ORU_R01.yaml", "versions: [\"2.3\"], value: CE", "versions: [two], value: CE", "versions: lists HL7 versions"),
            ("ORU_R01.yaml", "{when: valueString, value: ST}", "{when: valueStrng, value: ST}", "Observation has no element 'valueStrng'"),
            ("ORU_R01.yaml", "{from: valueString, fn: lines}", "{from: valueString, fn: lines, required: true}", "required: inside a list of alternatives"),
        ],
    )
    def test_each_mistake_names_its_line(self, folder, file, old, new, says):
        """A wrong each:, as:, where:, events:, group member, versions: or when: is reported at its file and line."""
        line = _edit(folder / file, old, new)
        errors = _errors(folder)
        hits = [e for e in errors if says in e]
        assert hits, errors
        assert any(f"{file}:{n}:" in hits[0] for n in range(line - 3, line + 2)), hits[0]  # the key edited, or its entry's first line

    def test_each_on_a_segment_the_structure_does_not_repeat(self, folder):
        """each: on PID, which ADT_A01 allows once, is an error at the segment's line and column."""
        path = folder / "ADT_A01.yaml"
        line = _edit(path, "    resource: Patient            # the first Patient", "    each: Patient            # the first Patient") - 1
        errors = _errors(folder)
        assert any(f"ADT_A01.yaml:{line}:5: ADT_A01 allows one PID here in HL7 2.5.1" in e for e in errors), errors

    def test_a_segment_repeated_with_another_in_a_group(self, folder):
        """A group pairing AL1 with DG1 is refused: the structure repeats AL1 on its own, never AL1 DG1 AL1 DG1."""
        path = folder / "ADT_A01.yaml"
        text = path.read_text(encoding="utf-8")
        start = text.index("  - segment: AL1")
        group = "  - group: ALLERGY\n    each: AllergyIntolerance\n    segments:\n      - segment: AL1\n      - segment: DG1\n"
        path.write_text(text[:start] + group, encoding="utf-8")
        line = _line_of(path, "      - segment: DG1")
        assert any(f"ADT_A01.yaml:{line}:9: DG1 cannot repeat together with AL1" in e for e in _errors(folder)), _errors(folder)

    def test_versions_keep_one_alternative(self, folder):
        """The ORU's OBX-2 alternatives load for v2.3 and v2.8 alike (versions: picks CE or CWE, TS or DTM at load)."""
        assert _errors(folder, "2.3") == []
        assert [e for e in _errors(folder, "2.8") if "ORU_R01" in e] == []
