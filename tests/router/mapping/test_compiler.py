"""Tests for router/mapping/compiler.py: load-time checks name file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.hl7v2.paths import compile_path
from router.errors import MappingError
from router.mapping import MappingSet

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def mapping_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "mappings" / "hl7v2"
    shutil.copytree(ROOT / "mappings" / "hl7v2", dst)
    return dst


def _edit(path: Path, old: str, new: str) -> int:
    text = path.read_text()
    assert old in text, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1))
    return line


class TestLoadChecks:
    def test_project_mappings_load(self):
        """The shipped mappings compile without error."""
        ms = MappingSet.load(ROOT / "mappings" / "hl7v2", compile_path)
        assert {"ADT_A01", "ADT_A02", "ADT_A03", "ADT_A05", "ADT_A09"} <= set(ms.messages)

    @pytest.mark.parametrize(
        ("file", "old", "new", "says"),
        [
            ("segments/PID.Patient.yaml", "target: birthDate", "target: birthdate", "has no element 'birthdate'"),
            ("segments/PID.Patient.yaml", "from: PID-7", "from: PID-0", "count from 1"),
            ("segments/PID.Patient.yaml", "    fn: date\n", "    fnn: date\n", "unknown key 'fnn'"),
            ("segments/PV1.Encounter.yaml", "when: PV1-19 not valued", "when: PV1-19 not", "bad condition"),
            ("segments/PID.Patient.yaml", "table: hl7-0001", "table: hl7-9999", "no table 'hl7-9999'"),
            ("segments/PID.Patient.yaml", "fn: date", "fn: dato", "unknown function 'dato'"),
            ("segments/PID.Patient.yaml", "use: XPN.HumanName", "use: CX.Identifier", "produces Identifier"),
            ("segments/PV1.Encounter.yaml", "ref: patient", "ref: pasient", "not a declared parameter"),
            ("segments/PID.Patient.yaml", "from: PID-7", "each: PID-7", "holds only one (0..1)"),
            ("segments/PID.Patient.yaml", "target: name\n    each: PID-5\n    use: XPN.HumanName\n", "target: name\n    each: PID-5\n", "needs use:"),
            ("segments/PV1.Encounter.yaml", "table: hl7-0004", "table: hl7-0001", "gives plain codes"),
            ("segments/OBX.Observation.yaml", "    - when: OBR-3.1 valued\n      paths:", "    - paths:", "but the last needs when:"),
            ("segments/OBX.Observation.yaml", "    - paths: [MSH-4.1, MSH-4.2, ref(patient)", "    - when: PID-3 valued\n      paths: [MSH-4.1, MSH-4.2, ref(patient)", "the last has none"),
            ("segments/OBX.Observation.yaml", "    - paths: [MSH-4.1, MSH-4.2, ref(patient), OBR-4.1, OBR-7, OBX-3.1, OBX-4]", "    - MSH-4.1", "not both"),
            ("segments/AL1.AllergyIntolerance.yaml", "  fallback: [MSH-4.1, MSH-4.2, ref(patient)", "  fallback: [MSH-4.1, MSH-4.2, ref(pasient)", "'pasient' is not a parameter of this template"),
            ("segments/AL1.AllergyIntolerance.yaml", "  fallback: [MSH-4.1, MSH-4.2, ref(patient)", "  fallback: [MSH-4.1, MSH-4.2, ref(patient", "'ref(patient' is not an HL7 path"),
            ("messages/ADT_A01.yaml", "  - name: allergy\n    use: AL1.AllergyIntolerance\n", "  - name: allergy\n    use: AL1.AllergyIntolerance\n    with: {patient: diagnosis}\n", "names 'diagnosis', which this message makes later"),
            ("messages/ORU_R01.yaml", "  - name: result\n    note: >\n      one PATIENT_RESULT group per patient: each group's results belong to its own patient\n      and stay (made at the top, a second patient's results went to the first)\n    each: PATIENT_RESULT\n",
             "  - name: result\n", "needs each: <a segment group> and resources:"),
            ("messages/ORU_R01.yaml", "    each: PATIENT_RESULT\n", "    each: PID\n", "is not a segment group"),
            ("segments/XCN.Practitioner.yaml", "unidentified: display", "unidentified: drop", "display is the only choice"),
            ("segments/XCN.Practitioner.yaml", "unidentified: display", "unidentified: display\n  fallback: [XCN.2]", "exclude each other"),
            ("segments/AL1.AllergyIntolerance.yaml", "  # The sender (MSH-4.1", "  shared: [urn:oid:2.16.578.1.12.4.1.4.101]\n  # The sender (MSH-4.1", "shared: and fallback: exclude each other"),
            ("segments/XON.Organization.yaml", "  # an office sent by name only", "  shared: urn:oid:2.16.578.1.12.4.1.4.101\n  # an office sent by name only", "shared: must be a list"),
            ("segments/AL1.AllergyIntolerance.yaml", "  fallback: [MSH-4.1, MSH-4.2, ref(patient), AL1-3.1, AL1-3.2, AL1-3.4]", "  fallback: MSH-4.1", "fallback: must be a list"),
            ("messages/ORU_R01.yaml", "    each: PATIENT_RESULT\n", "    write: create\n    each: PATIENT_RESULT\n", "takes no write:"),
            ("messages/ORU_R01.yaml", "  refuse: [OBX, SPM, OBR]", "  refuse: [OBX, specimen]", "must list segment names"),
            ("segments/OBX.Observation.yaml", "      paths: [MSH-4.1, OBR-3.1", "      pahts: [MSH-4.1, OBR-3.1", "unknown key 'pahts'"),
            ("segments/OBX.Observation.yaml", "    - when: OBR-3.1 valued\n", "    - when: OBR-3.1 valued or\n", "bad condition"),
            ("segments/PL.Bed.Location.yaml", "    ref: [room, ward]", "    ref: [room, wart]", "'wart' is not a declared parameter"),
            ("segments/PL.Bed.Location.yaml", "    ref: [room, ward]", "    ref: [room, room]", "one or more different parameters"),
            ("segments/PV1.Encounter.yaml", "          - target: display\n            fn: join\n            args: [PV1-3.1",
             "          - target: reference\n            fn: join\n            args: [PV1-3.1", "the reference is the named resource's own"),
            ("messages/ADT_A01.yaml", "  - name: encounter\n    use: PV1.Encounter\n", "  - name: encounter\n    use: PV1.Encounter\n    with: {bed: allergy}\n",
             "reads 'bed' when it runs, but 'allergy' is made later"),
            ("segments/PV1.Encounter.yaml", "        same: DG1\n", "        same: dg1\n", "same: names a segment (DG1)"),
            ("segments/PV1.Encounter.yaml", "        ref: diagnosis\n        same: DG1\n", "        same: DG1\n", "same: goes with ref:"),
            ("segments/PID.Patient.yaml", "  prefer:\n    - urn:oid:2.16.578.1.12.4.1.4.1\n    - urn:oid:2.16.578.1.12.4.1.4.2\n    - urn:oid:2.16.578.1.12.4.1.4.3\n",
             "  prefer: urn:oid:2.16.578.1.12.4.1.4.1\n", "prefer: must be a list"),
            ("messages/ADT_A45.yaml", "      owner: prior", "      owner: facility", "'facility' must name a Patient this message makes earlier"),
            ("messages/ADT_A45.yaml", "      owner: prior", "      owner: stay", "'stay' must name a Patient this message makes earlier"),
            # review H109: what lint let through, to be met per message instead
            ("messages/ADT_A01.yaml", "events: [A01, A04, A08, A13]", "events: A01", "events must list"),
            ("segments/AL1.AllergyIntolerance.yaml", "params: [patient]", "params: patient", "params: must be a list"),
            ("messages/ADT_A01.yaml", "    each: AL1\n", "    with: patient\n    each: AL1\n", "with: must be a mapping"),
            ("segments/OBR.ServiceRequest.yaml", 'value: {system: "http://terminology.hl7.org/CodeSystem/v2-0203", code: PLAC',
             'value: {sytem: "http://terminology.hl7.org/CodeSystem/v2-0203", code: PLAC', "Coding has no element 'sytem'"),
        ],
    )
    def test_errors_point_at_the_line(self, mapping_copy, file, old, new, says):
        """Each kind of mistake is refused with file:line:col and a plain reason."""
        line = _edit(mapping_copy / file, old, new)
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy, compile_path)
        assert says in err.value.reason
        assert err.value.file.endswith(file)
        assert err.value.line == line
        assert err.value.column >= 1

    def test_an_unknown_function_is_pointed_at_its_name(self, mapping_copy):
        """Review H182: `fn: dato` is reported at `dato`, the value to change, not at the `fn` key's column."""
        line = _edit(mapping_copy / "segments/PID.Patient.yaml", "    fn: date\n", "    fn:    dato\n")
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy, compile_path)
        assert "unknown function 'dato'" in err.value.reason
        assert (err.value.line, err.value.column) == (line, len("    fn:    ") + 1)

    def test_a_required_choice_element_needs_a_rule(self, mapping_copy):
        """MedicationRequest.medication[x] is 1..1: a template that writes none of its types is refused at its rules."""
        path = mapping_copy / "segments" / "RXE.MedicationRequest.yaml"
        _edit(path, "  - target: medicationCodeableConcept\n    from: RXE-2\n    use: CWE.CodeableConcept\n", "")
        rules_line = path.read_text().split("\n").index("rules:") + 1
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy, compile_path)
        assert "MedicationRequest.medication[x] is required (min 1) but no rule writes any of medicationCodeableConcept, medicationReference" in err.value.reason
        assert err.value.file.endswith("RXE.MedicationRequest.yaml") and err.value.line == rules_line

    def test_yaml_syntax_error_has_position(self, mapping_copy):
        """Broken YAML is reported with its line."""
        (mapping_copy / "tables" / "hl7-0001.yaml").write_text("table: hl7-0001\nmap: {M: male\n")
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy, compile_path)
        assert err.value.file.endswith("hl7-0001.yaml") and err.value.line >= 2


@pytest.fixture
def kith_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "mappings" / "kith"
    shutil.copytree(ROOT / "mappings" / "kith", dst, ignore=shutil.ignore_patterns("*.cases"))
    return dst


class TestEmbeddedKey:
    @pytest.mark.parametrize(
        ("file", "old", "new", "says", "at"),
        [
            ("ERM96", "  from: 'mh:Document/mh:RefDoc/mh:Content/b64:Base64Container'", "  form: 'mh:Document'", "unknown key 'form' in embedded", "  form:"),
            ("ERM96", "  from: 'mh:Document/mh:RefDoc/mh:Content/b64:Base64Container'", "  from: 'mh:Document/mh:RefDoc/mh:Content/b64:Base64Container/@V'",
             "must select elements", "  from:"),
            ("ERM96", "  message: ERM1\n", "  message: ERM99\n", "there is no messages/ERM99.yaml", "embedded:"),
            ("ERM96", "  message: ERM1\n", "  message: ERM912\n", "embeds messages itself", "embedded:"),
            ("ERM912", "  same: patient\n", "  same: prescriber\n", "ERM25 makes no top-level resource named 'prescriber'", "embedded:"),
        ],
    )
    def test_errors_point_at_the_line(self, kith_copy, file, old, new, says, at):
        """A wrong `embedded:` block (unknown key, a path to attributes, a missing or nesting mapping, a `same:` the
        carried mapping does not make) is refused at load with file:line."""
        from adapters.kith.paths import path_compiler
        from router.mapping.mapping_set import load_namespaces

        path = kith_copy / "messages" / f"{file}.yaml"
        _edit(path, old, new)
        line = _edit(path, at, at)
        with pytest.raises(MappingError) as err:
            MappingSet.load(kith_copy, path_compiler(load_namespaces(kith_copy / "namespaces.yaml")))
        assert says in err.value.reason
        assert err.value.file.endswith(f"messages/{file}.yaml") and err.value.line == line
