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
