"""`mappings test` runs its cases on lint's own compile: what it runs must be what the files say now.

Why: the cases ran on a second compile of each folder (and of each sender overlay) after lint's;
now they run on lint's. These guard what that must not change: each run compiles the files as
they are at that run, and a sender's overlay is its own set, not the base's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adapters.hl7v2.paths import compile_path
from adapters.hl7v2.structure import check_path, check_reach
from router.cli import main
from router.mapping import MappingSet
from router.mapping.mapping_set import lint_load

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = (ROOT / "examples" / "hl7v2" / "02_A01_admit_hansen.hl7").read_bytes().replace(b"|F|||", b"|K|||")


@pytest.fixture
def hl7v2(tmp_path, monkeypatch) -> Path:
    """A private copy of mappings/ (HELSEBRO_MAPPINGS_DIR), its hl7v2/ holding two cases: one from LEGACYPAS, one from DIPS."""
    dst = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", dst)
    monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(dst))
    cases = dst / "hl7v2" / "messages" / "ADT_A01.cases"
    (cases / "overlay_legacypas.hl7").write_bytes(MESSAGE.replace(b"MSH|^~\\&|DIPS|", b"MSH|^~\\&|LEGACYPAS|"))
    (cases / "overlay_dips.hl7").write_bytes(MESSAGE)
    return dst / "hl7v2"


def _gender(expected: Path) -> str:
    doc = json.loads(expected.read_text(encoding="utf-8"))
    bundle = doc[0] if isinstance(doc, list) else doc
    return next(e["resource"]["gender"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


class TestCasesRunOnWhatLintCompiled:
    def test_a_senders_case_runs_on_its_overlay(self, hl7v2, capsys):
        """LEGACYPAS's case reads K through its overlay's table (female); DIPS's through the shared one (unknown)."""
        assert main(["mappings", "test", str(hl7v2), "--update"]) == 0
        cases = hl7v2 / "messages" / "ADT_A01.cases"
        assert _gender(cases / "overlay_legacypas.expected.json") == "female"
        assert _gender(cases / "overlay_dips.expected.json") == "unknown"

    def test_a_second_run_in_one_process_sees_an_edit(self, hl7v2, capsys):
        """An overlay table edited between two runs: the second run's case fails on the edit, and --update takes it."""
        assert main(["mappings", "test", str(hl7v2), "--update"]) == 0
        assert main(["mappings", "test", str(hl7v2)]) == 0
        table = hl7v2 / "senders" / "LEGACYPAS" / "tables" / "hl7-0001.yaml"
        table.write_text(table.read_text(encoding="utf-8").replace("  K: female\n", "  K: male\n"), encoding="utf-8")
        capsys.readouterr()
        assert main(["mappings", "test", str(hl7v2)]) == 1
        out = capsys.readouterr().out
        assert "FAIL ADT_A01/overlay_legacypas" in out and "PASS ADT_A01/overlay_dips" in out, out
        assert main(["mappings", "test", str(hl7v2), "--update"]) == 0
        assert _gender(hl7v2 / "messages" / "ADT_A01.cases" / "overlay_legacypas.expected.json") == "male"

    def test_a_second_run_sees_a_broken_file(self, hl7v2, capsys):
        """A file broken after a clean run is a lint failure at the next, and no case runs."""
        assert main(["mappings", "test", str(hl7v2), "--update"]) == 0
        table = hl7v2 / "senders" / "LEGACYPAS" / "tables" / "hl7-0001.yaml"
        table.write_text(table.read_text(encoding="utf-8").replace("unmapped: {value: unknown}", "unmapped: sometimes"), encoding="utf-8")
        capsys.readouterr()
        assert main(["mappings", "test", str(hl7v2)]) == 1
        captured = capsys.readouterr()
        assert "lint failed" in captured.err and "PASS" not in captured.out


class TestLintLoad:
    def test_a_clean_folder_gives_the_set_load_gives(self, hl7v2):
        """The same messages, structures and senders as MappingSet.load, each overlay compiled from its own files."""
        errors, got = lint_load(hl7v2, compile_path, check_path=check_path, check_reach=check_reach)
        want = MappingSet.load(hl7v2, compile_path, check_path=check_path, check_reach=check_reach)
        assert errors == [] and got is not None
        assert got.root == want.root and got.messages.keys() == want.messages.keys() and got.structures == want.structures
        assert got.senders.keys() == want.senders.keys() == {"LEGACYPAS"}
        overlay = got.senders["LEGACYPAS"]
        assert overlay.compiler.overlay == hl7v2 / "senders" / "LEGACYPAS" and overlay.senders == {}
        assert overlay.compiler.tables["hl7-0001"] is not got.compiler.tables["hl7-0001"]
        assert got.compiler.errors is None and overlay.compiler.errors is None  # as load leaves them: a later compile raises
        assert {mm.sha for mm in got.messages.values()} == {mm.sha for mm in want.messages.values()}

    def test_a_folder_with_an_error_gives_no_set(self, hl7v2):
        """Errors as lint reports them, and no set: the caller stops."""
        table = hl7v2 / "senders" / "LEGACYPAS" / "tables" / "hl7-0001.yaml"
        table.write_text(table.read_text(encoding="utf-8").replace("unmapped: {value: unknown}", "unmapped: sometimes"), encoding="utf-8")
        errors, got = lint_load(hl7v2, compile_path, check_path=check_path, check_reach=check_reach)
        assert got is None and errors and "unmapped must be" in errors[0].reason
