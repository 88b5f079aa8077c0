"""Tests for router/mapping/conditions.py: the `when:` language."""

from __future__ import annotations

import json

import pytest

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.paths import Scope, compile_path
from router.cli import main
from router.mapping._codegen import generate_condition
from router.mapping.conditions import ConditionSyntaxError, compile_condition
from router.pipeline.convert import _unmapped

SCOPE = Scope(tokenize("MSH|^~\\&|PAS|F|||||ADT^A03\rPID|1||A^^^X^MR||NORDMANN^OLA||19610615|M\rPV1|1|I\r"))


CASES = [
    ("PV1 valued", True),
    ("ZZZ valued", False),
    ("PID-29 not valued", True),
    ("PV1-2 = I", True),
    ("PV1-2 != I", False),
    ("MSH-9.2 in [A01, A03]", True),
    ("MSH-9.2 in [A01]", False),
    ("PID-5.1 matches '^NORD'", True),
    ("not PID-8 = F and (PV1 valued or ZZZ valued)", True),
    ("PID-8 = F or PV1-2 = O", False),
    ("PID-3.4 = X and PID-3.5 in [MR, PI]", True),
    ("PID-3[2] valued or PID-7 = '19610615'", True),
]


def holds(text: str) -> bool:
    return compile_condition(text, compile_path)(SCOPE)


class TestCompileCondition:
    @pytest.mark.parametrize(("text", "want"), CASES)
    def test_evaluates(self, text, want):
        """Each operator answers as documented."""
        assert holds(text) is want

    @pytest.mark.parametrize(("text", "want"), CASES)
    def test_written_out_answers_alike(self, text, want):
        """Written out as one function (a resource's `when:`), a condition answers as its closures do and leaves the same fields unmapped.

        (The closures also mark empty fields read; the report lists valued fields only, so only those are compared.)
        """
        pred = compile_condition(text, compile_path)
        function = generate_condition(pred)
        assert function is not None and function is not pred
        by_closures, written = Scope(SCOPE.message), Scope(SCOPE.message)
        assert pred(by_closures) is want
        assert function(written) is want
        assert _unmapped(SCOPE.message, written.reads) == _unmapped(SCOPE.message, by_closures.reads)

    @pytest.mark.parametrize("bad", ["PV1 =", "PV1 valued and", "PV1 frobs", "(PV1 valued", "PID-0 valued", "'x' = y", "PID-5 matches '('", ""])
    def test_bad_syntax_is_refused(self, bad):
        """A condition that does not parse raises ConditionSyntaxError at load time."""
        with pytest.raises(ConditionSyntaxError):
            compile_condition(bad, compile_path)


class TestReads:
    """A field counts as read by a condition only where the condition holds: the fields that made it hold (`--unmapped`)."""

    @pytest.mark.parametrize(
        ("text", "read"),
        [
            ("PV1-2 = O", set()),  # failed: PV1-2 reached nothing
            ("PV1-2 = I", {"PV1-2"}),
            ("PID-8 = M and PV1-2 = O", set()),  # an `and` that fails counts none of its parts
            ("PID-8 = M and PV1-2 = I", {"PID-8", "PV1-2"}),
            ("PID-8 = F or PV1-2 = I", {"PV1-2"}),  # an `or`: the part that held, not the one tested and failed
            ("PV1-2 = I or PID-8 = M", {"PV1-2"}),  # the first part that holds, as its closures stop there
            ("not PID-8 = F", {"PID-8"}),  # everything under a `not` that holds
        ],
    )
    def test_only_what_made_it_hold_counts_as_read(self, text, read):
        """As closures and written out alike, a condition marks read the valued fields that made it hold, and none when it fails."""
        pred = compile_condition(text, compile_path)
        valued = set(_unmapped(SCOPE.message, set()))
        for ask in (pred, generate_condition(pred)):
            scope = Scope(SCOPE.message)
            ask(scope)
            assert valued - set(_unmapped(SCOPE.message, scope.reads)) == read, ask

    @pytest.mark.parametrize(("pid25", "listed"), [("2", True), ("", False)])
    def test_a_field_only_a_failed_condition_tested_is_unmapped(self, capsys, tmp_path, pid25, listed):
        """`helsebro convert --unmapped` lists PID-24 `N` when PID-25 gives the birth order (multipleBirthInteger):
        its only rules, `when: PID-24 ... and not PID-25 matches '^\\d+$'`, failed; without PID-25 it maps (multipleBirthBoolean)."""
        pid = "PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M" + "|" * 16 + "N|" + pid25
        text = "\r".join(["MSH|^~\\&|PAS|STOLAV|HB|HP|20250110083000||ADT^A08^ADT_A01|C-1|P|2.5.1", "EVN|A08|20250110083000", pid]) + "\r"
        path = tmp_path / "m.hl7"
        path.write_text(text, encoding="utf-8")
        assert main(["convert", "--unmapped", str(path)]) == 0
        out, err = capsys.readouterr()
        [patient] = [e["resource"] for e in json.loads(out)["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert ("multipleBirthBoolean" in patient) is not listed
        assert ("PID-24" in err) is listed, err
