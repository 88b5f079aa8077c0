"""`helsebro mappings lint|test` through the command line, and an author's round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def authoring(tmp_path, monkeypatch) -> Path:
    """A private copy of mappings/ that HELSEBRO_MAPPINGS_DIR points at."""
    dst = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", dst)
    monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(dst))
    return dst / "hl7v2"


def edit(path: Path, old: str, new: str) -> int:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


class TestLint:
    def test_clean_folder_passes(self, capsys):
        """The shipped mappings lint clean, exit 0."""
        assert main(["mappings", "lint"]) == 0

    def test_every_kind_of_mistake_is_reported_with_its_line(self, authoring, capsys):
        """Unknown FHIR element, unknown HL7 field, key typo, bad condition and missing table all appear, each at file:line."""
        seg = authoring / "segments"
        expected = {
            ("PID.Patient.yaml", edit(seg / "PID.Patient.yaml", "target: birthDate", "target: birthdate"), "has no element 'birthdate'"),
            ("PV1.Encounter.yaml", edit(seg / "PV1.Encounter.yaml", "from: PV1-44", "from: PV1-99"), "PV1-99 does not exist"),
            ("XCN.Practitioner.yaml", edit(seg / "XCN.Practitioner.yaml", "    use: XCN.HumanName", "    uze: XCN.HumanName"), "unknown key 'uze'"),
            ("HD.Organization.yaml", edit(seg / "HD.Organization.yaml", "  - target: name\n", "  - target: name\n    when: HD.1 valued and\n"), "bad condition"),
            ("XPN.HumanName.yaml", edit(authoring / "datatypes" / "XPN.HumanName.yaml", "table: hl7-0200", "table: hl7-0999"), "no table 'hl7-0999'"),
        }
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        for name, line, says in expected:
            hits = [e for e in err if f"{name}:" in e and says in e]
            assert hits, (name, says, err)
            assert f"{name}:{line}:" in hits[0] or f"{name}:{line + 1}:" in hits[0]

    def test_default_covers_inbound_and_outbound_folders(self, capsys):
        """Without PATHs, lint covers mappings/hl7v2, mappings/kith, mappings/outbound/hl7v2 and mappings/outbound/kith."""
        assert main(["mappings", "lint"]) == 0
        assert "ok: 4 mapping folder(s) clean" in capsys.readouterr().out

    def test_broken_kith_outbound_mapping_is_reported_at_its_line(self, authoring, capsys):
        """An unknown function in an outbound KITH mapping is printed as file:line:col and lint exits 1, by default and by PATH."""
        outbound = authoring.parent / "outbound" / "kith"
        line = edit(outbound / "PLO_InnlagtPasient.yaml", "fn: datetime", "fn: when")
        for args in ([], [str(outbound)], [str(outbound / "PLO_InnlagtPasient.yaml")]):
            assert main(["mappings", "lint", *args]) == 1
            err = capsys.readouterr().err
            assert f"PLO_InnlagtPasient.yaml:{line}:" in err and "unknown function 'when'" in err, (args, err)

    def test_missing_path_is_a_usage_error(self, capsys):
        """A PATH that does not exist exits 2."""
        assert main(["mappings", "lint", "/no/such/folder"]) == 2


class TestFixtureCases:
    def test_shipped_cases_pass(self, capsys):
        """Every fixture case beside the shipped mappings passes."""
        assert main(["mappings", "test"]) == 0
        assert " 0 failed" in capsys.readouterr().out

    def test_author_round_trip(self, authoring, tmp_path, capsys):
        """Edit a mapping, lint it, see the case fail with a diff, update it, and see the rule in --explain."""
        line = edit(authoring / "datatypes" / "XPN.HumanName.yaml", "  - target: family\n    from: XPN.1.1\n", "  - target: family\n    from: XPN.1.1\n    fn: upper\n  - target: text\n    fn: join\n    args: [XPN.2, XPN.1.1]\n")
        assert main(["mappings", "lint"]) == 0
        capsys.readouterr()
        assert main(["mappings", "test"]) == 1
        out = capsys.readouterr().out
        assert "FAIL ADT_A01/admit_fnr" in out and '"text": "OLA NORDMANN"' in out
        assert main(["mappings", "test", "--update"]) == 0
        capsys.readouterr()
        assert main(["mappings", "test"]) == 0
        capsys.readouterr()
        msg = authoring / "messages" / "ADT_A01.cases" / "admit_fnr.hl7"
        assert main(["convert", "--explain", str(msg)]) == 0
        err = capsys.readouterr().err
        assert any("text" in ln and "XPN.HumanName.yaml:" in ln for ln in err.splitlines()), err
        assert line > 0

    def test_failing_kith_outbound_case_shows_a_diff(self, authoring, capsys):
        """A KITH outbound case whose output changed fails with its name and a diff, exits 1, and passes after --update."""
        outbound = authoring.parent / "outbound" / "kith"
        edit(outbound / "PLO_InnlagtPasient.yaml", "attributes: {V: N, DN: Ny}", "attributes: {V: N, DN: Ny melding}")
        assert main(["mappings", "test", str(outbound)]) == 1
        out = capsys.readouterr().out
        assert "FAIL outbound PLO_InnlagtPasient/admission_fnr" in out
        assert '-            <po:Forsendelsesstatus V="N" DN="Ny"/>' in out and '+            <po:Forsendelsesstatus V="N" DN="Ny melding"/>' in out
        assert "PASS outbound PLO_InnlagtPasient/no_admission_time" in out
        assert main(["mappings", "test", "--update", str(outbound)]) == 0
        capsys.readouterr()
        assert main(["mappings", "test"]) == 0
        assert b'DN="Ny melding"' in (outbound / "PLO_InnlagtPasient.cases" / "admission_fnr.expected.xml").read_bytes()

    def test_missing_expected_output_fails_until_updated(self, authoring, capsys):
        """A new case without an expected file fails and says to run --update."""
        case = authoring / "messages" / "ADT_A01.cases" / "new.hl7"
        shutil.copy(authoring / "messages" / "ADT_A01.cases" / "admit_fnr.hl7", case)
        assert main(["mappings", "test"]) == 1
        assert "--update" in capsys.readouterr().out
