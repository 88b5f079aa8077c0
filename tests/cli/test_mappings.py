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

    def test_a_condition_naming_what_hl7v2_lacks_is_reported_at_its_line(self, authoring, capsys):
        """A `when:` with a segment typo (AL9) or a field past the segment's end (PV1-99) is a lint error, as in from:.

        Why: such a condition never holds, so the resources it guards were silently never made (review H109).
        """
        expected = {
            ("ADT_A01.yaml", edit(authoring / "messages" / "ADT_A01.yaml", "    when: AL1 valued", "    when: AL9 valued"), "AL9 is not an HL7 v2 segment"),
            ("PV1.Encounter.yaml", edit(authoring / "segments" / "PV1.Encounter.yaml", "when: PV1-19 not valued", "when: PV1-99 not valued"), "PV1-99 does not exist"),
        }
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        for name, line, says in expected:
            assert any(f"/{name}:{line}:" in e and says in e for e in err), (name, line, says, err)

    def test_table_coding_with_an_unknown_element_is_refused(self, authoring, capsys):
        """A table's Coding with a misspelt key (`sytem:`) is a lint error at the rule that applies it, not a Bundle FHIR refuses."""
        edit(authoring / "tables" / "condition-clinical-status.yaml", "  active: {system:", "  active: {sytem:")
        text = (authoring / "segments" / "PRB.Condition.yaml").read_text(encoding="utf-8")
        line = text[: text.index("table: condition-clinical-status")].count("\n") + 1
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert f"PRB.Condition.yaml:{line}:" in err and "Coding has no element 'sytem'" in err, err

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

    def test_outbound_errors_name_their_file_as_inbound_ones_do(self, authoring, capsys, monkeypatch):
        """Review H182: outbound lint printed absolute paths where inbound prints them as given (`mappings/...`)."""
        monkeypatch.chdir(authoring.parent.parent)
        mappings = authoring.parent
        edit(mappings / "hl7v2" / "messages" / "ADT_A01.yaml", "events:", "bogus_key: 1\nevents:")
        edit(mappings / "outbound" / "hl7v2" / "ADT_A01.yaml", "events:", "bogus_key: 1\nevents:")
        edit(mappings / "outbound" / "kith" / "PLO_InnlagtPasient.yaml", "fn: datetime", "fn: when")
        assert main(["mappings", "lint", "mappings"]) == 1
        files = sorted(line.split(":", 1)[0] for line in capsys.readouterr().err.splitlines() if ".yaml:" in line)
        assert files == ["mappings/hl7v2/messages/ADT_A01.yaml", "mappings/outbound/hl7v2/ADT_A01.yaml",
                         "mappings/outbound/kith/PLO_InnlagtPasient.yaml"], files

    def test_missing_path_is_a_usage_error(self, capsys):
        """A PATH that does not exist exits 2."""
        assert main(["mappings", "lint", "/no/such/folder"]) == 2

    @pytest.mark.parametrize("action", ["lint", "test"])
    def test_a_folder_holding_no_mapping_is_a_usage_error(self, tmp_path, capsys, action):
        """A PATH with no mapping folder in or above it exits 2 with a sentence, as a missing one does, not 1 as if
        a mapping had an error (review H129)."""
        (tmp_path / "notes").mkdir()
        assert main(["mappings", action, str(tmp_path / "notes")]) == 2
        err = capsys.readouterr().err
        assert "holds no mapping folder" in err and str(tmp_path / "notes") in err, err

    def test_the_mappings_folder_itself_lints_every_folder_in_it(self, authoring, capsys):
        """`lint mappings/` (the folder HELSEBRO_MAPPINGS_DIR names) lints the folders in it, as lint without PATH does;
        `lint mappings/outbound` its two outbound folders."""
        line = edit(authoring / "segments" / "PID.Patient.yaml", "target: birthDate", "target: birthdate")
        assert main(["mappings", "lint", str(authoring.parent)]) == 1
        captured = capsys.readouterr()
        assert f"PID.Patient.yaml:{line}:" in captured.err and "in 4 mapping folder(s)" in captured.out, captured
        assert main(["mappings", "lint", str(authoring.parent / "outbound")]) == 0
        assert "ok: 2 mapping folder(s) clean" in capsys.readouterr().out

    @pytest.mark.parametrize("file", ["tables/hl7-0001.yaml", "datatypes/CX.Identifier.yaml", "segments/PID.Patient.yaml"])
    def test_a_file_that_does_not_parse_is_reported_once_not_at_every_use(self, authoring, capsys, file):
        """A table, datatype or segment file that does not parse is one error at its line; the rules and messages using
        it add no `no table`/`no datatype mapping`/`no resource template` each (review H129: 32 lines for one tab)."""
        path = authoring / file
        lines = path.read_text(encoding="utf-8").count("\n")
        path.write_text(path.read_text(encoding="utf-8") + "x: [\n", encoding="utf-8")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"{file}:{lines + 2}:1: YAML syntax" in err[0], err

    def test_a_table_that_fails_its_checks_is_reported_once(self, authoring, capsys):
        """A table that parses but is wrong (an unknown key) is its own error alone."""
        line = edit(authoring / "tables" / "hl7-0001.yaml", "map:", "mapp: {}\nmap:")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"tables/hl7-0001.yaml:{line}:1: unknown key 'mapp'" in err[0], err


class TestLintReach:
    """A path no message structure that reads it can hold is a lint error at its line (review H184).

    Why: `from: OBR-3` in a template only ADTs use named a real segment and field, so lint passed,
    and at run time the rule read nothing and made nothing, without a word.
    """

    @pytest.mark.parametrize(
        ("old", "new", "says"),
        [
            ("    each: AL1\n", "    each: OBR\n", "ADT_A01 has no OBR segment (message structure ADT_A01, HL7 v2.5 to v2.8)"),
            ("    when: AL1 valued", "    when: ORC valued", "ADT_A01 has no ORC segment (message structure ADT_A01, HL7 v2.5 to v2.8)"),
            ("    each: AL1\n", "    each: ORDER_OBSERVATION\n", "ADT_A01 has no ORDER_OBSERVATION group"),
        ],
    )
    def test_a_message_entry_reading_what_its_structure_lacks(self, authoring, capsys, old, new, says):
        """A `from:`, `each:` or `when:` of a message mapping is checked against that message's own structure."""
        line = edit(authoring / "messages" / "ADT_A01.yaml", old, new)
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert f"messages/ADT_A01.yaml:{line}:" in err and says in err and "this rule never reads anything" in err, err

    def test_a_template_rule_no_message_using_it_can_read(self, authoring, capsys):
        """A template's rule is checked against every structure whose mapping uses the template: AL1's only ADTs use."""
        line = edit(authoring / "segments" / "AL1.AllergyIntolerance.yaml", "from: AL1-3\n", "from: OBR-3\n")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        hits = [e for e in err if f"segments/AL1.AllergyIntolerance.yaml:{line}:" in e]
        assert len(err) == 1 and hits, err
        assert "none of the message structures that use it has the OBR segment (ADT_A01, ADT_A03" in hits[0], hits
        assert hits[0].endswith("HL7 v2.5 to v2.8): this rule never reads anything"), hits

    @pytest.mark.parametrize(
        ("file", "old", "new"),
        [
            # a Z-segment is site-defined: any message may carry it
            ("segments/AL1.AllergyIntolerance.yaml", "from: AL1-3\n", "from: ZAL-3\n"),
            # a template several structures use reads what one of them holds: of AL1's ADTs, only ADT_A06 has an MRG
            ("segments/AL1.AllergyIntolerance.yaml", "from: AL1-3\n", "from: MRG-3\n"),
            # v2.7's PRT has a place in ORU^R01 (v2.5.1 has none)
            ("messages/ORU_R01.yaml", "        when: PV1-19 valued or PV1-44 valued", "        when: PRT valued or PV1-19 valued or PV1-44 valued"),
            # PID read inside a group, from a structure that holds it elsewhere
            ("messages/ORU_R01.yaml", "        when: PV1-19 valued or PV1-44 valued", "        when: MSH-4 valued and PID valued"),
        ],
    )
    def test_what_some_message_that_uses_it_can_hold_lints_clean(self, authoring, capsys, file, old, new):
        """Z-segments, segments later versions added, and segments one of a template's structures holds pass."""
        edit(authoring / file, old, new)
        assert main(["mappings", "lint", str(authoring)]) == 0, capsys.readouterr().err


class TestLintUnreadableFiles:
    """A mapping file lint cannot read or decode is an error at file:line:col, exit 1, never a traceback."""

    def test_a_file_not_in_utf8_is_reported_at_its_first_bad_byte(self, authoring, capsys):
        """A segment saved as Latin-1 (`ø` as one byte 0xf8) names the line and column of that byte."""
        seg = authoring / "segments" / "PID.Patient.yaml"
        text = seg.read_text(encoding="utf-8")
        line = text[: text.index("params:")].count("\n") + 1
        seg.write_bytes(text.replace("params:", "# kommentar på norsk\nparams:", 1).encode("latin-1"))
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert f"PID.Patient.yaml:{line}:14: not UTF-8" in err, err

    @pytest.mark.parametrize("kind", ["folder", "symlink loop"])
    def test_a_yaml_name_that_is_no_file_is_reported(self, authoring, capsys, kind):
        """A folder named X.yaml, or a symlink to itself, in messages/ is `cannot read` at its name."""
        bad = authoring / "messages" / "BROKEN.yaml"
        if kind == "folder":
            bad.mkdir()
        else:
            bad.symlink_to(bad.name)
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert "messages/BROKEN.yaml:1:1: cannot read" in err, err
        assert "Traceback" not in err

    def test_a_broken_message_is_not_called_missing_by_structures(self, authoring, capsys):
        """structures.yaml pointing at a message whose file has an error reports that error alone."""
        line = edit(authoring / "messages" / "ADT_A02.yaml", "events: [A02]\n", "events: [A02]\nevents: [A02]\n") + 1
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err == [f"{authoring.parent.name}/hl7v2/messages/ADT_A02.yaml:{line}:1: duplicate key 'events'"], err

    def test_a_message_that_is_gone_is_still_missing_for_structures(self, authoring, capsys):
        """Deleting a message that structures.yaml names is still reported at the structures.yaml line."""
        (authoring / "messages" / "ADT_A02.yaml").unlink()
        assert main(["mappings", "lint", str(authoring)]) == 1
        assert "structures.yaml:9:3: ADT^A02 points at ADT_A02, but messages/ADT_A02.yaml does not exist" in capsys.readouterr().err

    def test_an_event_routed_to_a_message_that_refuses_it_is_reported(self, authoring, capsys):
        """structures.yaml sending ADT^A04 to ADT_A01, whose events: leave A04 out, refuses every A04: lint says so at the entry."""
        edit(authoring / "messages" / "ADT_A01.yaml", "events: [A01, A04, A08, A13]", "events: [A01, A08, A13]")
        line = edit(authoring / "structures.yaml", "ADT^A04: ADT_A01", "ADT^A04: ADT_A01")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert (
            f"structures.yaml:{line}:3: ADT^A04 points at ADT_A01, but its events: [A01, A08, A13] leave out A04, "
            "so every ADT^A04 would be refused: add A04 to its events, or point ADT^A04 at a mapping that lists it"
        ) in err, err


class TestLintValues:
    """Lint refuses what would not do what it reads as: a table no rule applies, a value FHIR would not take."""

    @staticmethod
    def _errors(authoring, capsys) -> list[str]:
        assert main(["mappings", "lint", str(authoring)]) == 1
        return capsys.readouterr().err.splitlines()

    def test_a_table_beside_fn_with_args_is_refused_at_its_line(self, authoring, capsys):
        """`fn: mime` with `args:` and `table:` is refused at table:, saying what to write instead (the table was ignored)."""
        line = edit(authoring / "segments" / "TXA.DocumentReference.yaml", "        fn: mime\n        args: [OBX-5.2, OBX-5.3]\n",
                    "        fn: mime\n        args: [OBX-5.2, OBX-5.3]\n        table: hl7-0001\n") + 2
        err = self._errors(authoring, capsys)
        hits = [e for e in err if "table: is not applied to fn: with args:" in e]
        assert len(hits) == 1 and f"TXA.DocumentReference.yaml:{line}:" in hits[0], err
        assert "from: <path> with table:" in hits[0]

    @pytest.mark.parametrize(
        ("table", "old", "new", "says", "rule"),
        [
            ("hl7-0001", "unmapped: {value: unknown}", "unmapped: {value: unkown}", "'unkown', which gender does not allow", "PID.Patient.yaml:"),
            ("hl7-0004", "unmapped: keep", "unmapped: {value: IMP}", "gives (a plain value), but class is Coding", "PV1.Encounter.yaml:"),
            ("hl7-0004", "unmapped: keep", 'unmapped: {value: {system: "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", code: "UNK "}}',
             "code: 'UNK ' is not a valid FHIR code", "PV1.Encounter.yaml:"),
        ],
    )
    def test_an_unmapped_value_is_checked_like_the_map_at_its_line(self, authoring, capsys, table, old, new, says, rule):
        """A table's `unmapped: {value: …}` gets the checks its map's values get against the element it feeds, reported at unmapped:."""
        line = edit(authoring / "tables" / f"{table}.yaml", old, new)
        err = self._errors(authoring, capsys)
        hits = [e for e in err if f"tables/{table}.yaml:{line}:" in e and says in e]
        assert hits, err
        assert "unmapped: {value: …}" in hits[0] and rule in hits[0]  # and it names the rule that feeds it

    def test_a_constant_code_with_padding_is_refused(self, authoring, capsys):
        """`value:` giving a Coding whose code has a trailing space is refused at value:: FHIR's code allows no padding."""
        line = edit(authoring / "segments" / "PV1.Encounter.yaml", "code: ATND, display: attender}", 'code: "ATND ", display: attender}')
        err = self._errors(authoring, capsys)
        assert any(f"PV1.Encounter.yaml:{line}:" in e and "code: 'ATND ' is not a valid FHIR code" in e for e in err), err

    def test_a_table_code_with_double_space_is_refused_where_the_table_is_used(self, authoring, capsys):
        """A table entry's Coding code `IM  P` is refused at the table: key of the rule it feeds."""
        edit(authoring / "tables" / "hl7-0004.yaml", "code: IMP, display: inpatient encounter}", 'code: "IM  P", display: inpatient encounter}')
        text = (authoring / "segments" / "PV1.Encounter.yaml").read_text(encoding="utf-8")
        line = text[: text.index("    table: hl7-0004")].count("\n") + 1
        err = self._errors(authoring, capsys)
        assert any(f"PV1.Encounter.yaml:{line}:" in e and "code: 'IM  P' is not a valid FHIR code" in e for e in err), err


    def test_a_constant_yaml_reads_as_no_string_is_refused(self, authoring, capsys):
        """`value: NO` (YAML reads a boolean) for a code, and a table value `no`, are refused: they were written as `false`."""
        seg = authoring / "segments" / "PID.Patient.yaml"
        edit(authoring / "tables" / "hl7-0001.yaml", "  N: unknown", "  N: no")
        text = seg.read_text(encoding="utf-8")
        table_line = text[: text.index("    table: hl7-0001")].count("\n") + 1
        err = self._errors(authoring, capsys)
        assert any(f"PID.Patient.yaml:{table_line}:" in e and "table hl7-0001" in e and "False is not a FHIR code" in e for e in err), err
        line = edit(seg, "  - target: gender\n", "  - target: language\n    value: NO\n  - target: gender\n") + 1
        err = self._errors(authoring, capsys)
        assert any(f"PID.Patient.yaml:{line}:" in e and "False is not a FHIR code" in e for e in err), err

    def test_a_table_code_yaml_reads_as_a_number_or_boolean_keeps_its_text(self, authoring, capsys):
        """Table codes written `NO:` or `010:` are looked up as NO and 010 (they were the keys 'False' and '8')."""
        edit(authoring / "tables" / "hl7-0001.yaml", "  N: unknown", "  NO: female\n  010: male")
        case = authoring / "messages" / "ADT_A01.cases" / "admit_fnr.hl7"
        text = case.read_text(encoding="utf-8")
        pid = next(seg for seg in text.replace("\r", "\n").split("\n") if seg.startswith("PID|"))
        fields = pid.split("|")
        for code, gender in (("NO", "female"), ("010", "male")):
            fields[8] = code
            case.write_text(text.replace(pid, "|".join(fields)), encoding="utf-8")
            assert main(["convert", str(case)]) == 0
            out = capsys.readouterr().out
            assert f'"gender":"{gender}"' in out, (code, out[:500])


class TestFixtureCases:
    def test_shipped_cases_pass(self, capsys):
        """Every fixture case beside the shipped mappings passes."""
        assert main(["mappings", "test"]) == 0
        assert " 0 failed" in capsys.readouterr().out

    def test_cases_pass_in_a_copy_under_another_folder_name(self, tmp_path, monkeypatch, capsys):
        """An author's working copy of the tree under another name passes the shipped cases: the provenance tag names the
        mapping file under its folder, whose own name the comparison reads as `mappings` (review H88: 61 cases failed)."""
        copy = tmp_path / "mine"
        shutil.copytree(ROOT / "mappings", copy)
        monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(copy))
        code = main(["mappings", "test", str(copy / "hl7v2" / "messages" / "ADT_A02.yaml")])
        out = capsys.readouterr().out
        assert code == 0 and " 0 failed" in out and "FAIL" not in out

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

    def test_expected_output_without_its_case_fails(self, authoring, capsys):
        """An expected file whose message was renamed is not silently skipped: the run fails and names it."""
        cases = authoring / "messages" / "ADT_A02.cases"
        (cases / "transfer.hl7").rename(cases / "transfer_renamed.hl7")
        (cases / "transfer_renamed.expected.json").write_bytes((cases / "transfer.expected.json").read_bytes())
        assert main(["mappings", "test", str(authoring)]) == 1
        out = capsys.readouterr().out
        assert "FAIL ADT_A02/transfer (mappings/hl7v2/messages/ADT_A02.cases/transfer.expected.json:1)" in out, out
        assert "expected output with no case file" in out and "PASS ADT_A02/transfer_renamed" in out
        assert " 1 failed" in out

    def test_unreadable_case_files_fail_without_a_traceback(self, authoring, capsys):
        """A folder named like a message is no case; an expected file not in UTF-8 fails that case, and --update rewrites it."""
        cases = authoring / "messages" / "ADT_A02.cases"
        (cases / "folder.hl7").mkdir()
        expected = cases / "transfer.expected.json"
        expected.write_bytes(expected.read_bytes() + b"\xff")
        assert main(["mappings", "test", str(authoring)]) == 1
        out = capsys.readouterr().out
        assert "FAIL ADT_A02/transfer (" in out and "transfer.expected.json: not UTF-8" in out, out
        assert "folder" not in out
        assert main(["mappings", "test", "--update", str(authoring)]) == 0
        capsys.readouterr()
        assert main(["mappings", "test", str(authoring)]) == 0


class TestYamlMergeKeys:
    """`<<: *anchor` (YAML merge keys) works in mapping files as in any YAML reader, errors keeping their lines (review H129).

    Why: the loader read `<<` as a tag it had no constructor for, so a table or rule sharing its
    pairs with another was a `YAML syntax` error the author could not act on.
    """

    def test_a_table_merging_shared_pairs_maps_as_written(self, authoring, capsys):
        """Merged pairs are the table's own; a pair written beside the merge wins over a merged one, and the cases still pass."""
        (authoring / "tables" / "hl7-0001.yaml").write_text(
            "table: hl7-0001\nsource_system: http://terminology.hl7.org/CodeSystem/v2-0001\n"
            "map:\n  <<: [&rare {O: other, A: other}, {U: unknown, N: unknown, M: female}]\n  M: male\n  F: female\n", encoding="utf-8")
        assert main(["mappings", "lint", str(authoring)]) == 0
        assert main(["mappings", "test", str(authoring / "messages" / "ADT_A01.yaml")]) == 0
        assert " 0 failed" in capsys.readouterr().out

    def test_an_error_in_merged_pairs_points_at_where_they_are_written(self, authoring, capsys):
        """A rule whose `table:` comes from a merge is refused at that `table:`, not at the rule or line 1."""
        line = edit(authoring / "segments" / "PID.Patient.yaml", "    from: PID-8\n    table: hl7-0001\n", "    <<: {from: PID-8, table: hl7-0999}\n")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert f"PID.Patient.yaml:{line}:23: no table 'hl7-0999'" in err, err

    def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate(self, authoring, capsys):
        """Only a merged key may be written over; two of the mapping's own are the duplicate they always were."""
        line = edit(authoring / "tables" / "hl7-0001.yaml", "  M: male\n", "  <<: {X: other}\n  M: male\n  M: male\n") + 2
        assert main(["mappings", "lint", str(authoring)]) == 1
        assert f"tables/hl7-0001.yaml:{line}:3: duplicate key 'M'" in capsys.readouterr().err

    def test_merging_what_is_no_mapping_is_refused_at_its_line(self, authoring, capsys):
        """`<<: 5` names its line and says what a merge takes."""
        line = edit(authoring / "tables" / "hl7-0001.yaml", "  M: male\n", "  <<: 5\n  M: male\n")
        assert main(["mappings", "lint", str(authoring)]) == 1
        err = capsys.readouterr().err
        assert f"tables/hl7-0001.yaml:{line}:7: YAML syntax: expected a mapping or list of mappings for merging" in err, err
