"""Tests for adapters/hl7v2/paths.py: terser paths and their positions."""

from __future__ import annotations

import pytest

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.paths import PathSyntaxError, Scope, compile_path

MSG = tokenize("MSH|^~\\&|PAS|F\rPID|1||A^^^X^MR~~B^^^Y&Y2^PI||NORDMANN^OLA\rNK1|1|EN^A\rNK1|2|TO^B\r")


def values(path: str) -> list[tuple[str, str]]:
    return [(i.raw, i.location) for i in compile_path(path).resolve(Scope(MSG))]


class TestSourcePath:
    def test_first_repetition_by_default(self):
        """A field path without [n] reads the first repetition."""
        assert values("PID-3.1") == [("A", "PID-3[1].1")]

    def test_all_repetitions_skip_empty_ones(self):
        """[*] reads every non-empty repetition, with 1-based positions."""
        assert values("PID-3[*].1") == [("A", "PID-3[1].1"), ("B", "PID-3[3].1")]

    def test_subcomponent(self):
        """A third number reads a subcomponent."""
        assert values("PID-3[3].4.2") == [("Y2", "PID-3[3].4.2")]

    def test_repeated_segments_are_numbered(self):
        """Segments that repeat are named SEG[n] in positions."""
        assert values("NK1[*]-2.1") == [("EN", "NK1[1]-2[1].1"), ("TO", "NK1[2]-2[1].1")]

    def test_reads_are_recorded(self):
        """Resolving a path records which fields were read, for the unmapped report."""
        scope = Scope(MSG)
        compile_path("PID-5.1").resolve(scope)
        assert (1, 5) in scope.reads

    @pytest.mark.parametrize("bad", ["PID-0", "pid-3", "PID-3.x", "PID-3[0]", "P-3"])
    def test_bad_paths_are_refused(self, bad):
        """Malformed paths raise PathSyntaxError at compile time."""
        with pytest.raises(PathSyntaxError):
            compile_path(bad)
