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


class TestGroupPaths:
    ORM = "\r".join([
        "MSH|^~\\&|DIPS|X|||20240101||ORM^O01^ORM_O01|1|P|2.5.1",
        "PID|1||1",
        "ORC|NW|REK-1", "OBR|1|REK-1||HB",
        "ORC|NW|REK-2", "OBR|2|REK-2||KREA",
        "ORC|NW|REK-3", "OBR|3|REK-3||CRP",
    ])

    def test_an_unnumbered_step_is_the_first_in_each_group_before_it(self):
        """`ORDER[*].ORDER_DETAIL.X[*]`: ORDER_DETAIL is the first of each order, so every order's X is named.
        It was the first ORDER_DETAIL of the whole message: an ORM mapped with it kept only its first order."""
        message = tokenize(self.ORM)
        message.structure = "ORM_O01"
        path = compile_path("ORDER[*].ORDER_DETAIL.OBRRQDRQ1RXOODSODT_SUPPGRP[*].OBR-2")
        assert path.values(Scope(message)) == ["REK-1", "REK-2", "REK-3"]
        assert compile_path("ORDER[2].ORDER_DETAIL.OBRRQDRQ1RXOODSODT_SUPPGRP.OBR-2").values(Scope(message)) == ["REK-2"]
        assert compile_path("ORDER.ORDER_DETAIL.OBRRQDRQ1RXOODSODT_SUPPGRP.OBR-2").values(Scope(message)) == ["REK-1"]
