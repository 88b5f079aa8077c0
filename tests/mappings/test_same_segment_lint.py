"""Lint of `same: DG1`: the resource it pairs with must be made one per segment, with `each: DG1`.

PV1.Encounter lists each DG1's Condition (`ref: diagnosis`, `same: DG1`); the engine records
which DG1 made which Condition only for an entry made with `each:` over DG1 (engine._Run.uses).
A `diagnosis` made otherwise (`from: DG1`, once, over another segment or a segment group)
pairs with nothing, and every diagnosis entry of the stay was left out without a word: lint
refuses it at that entry, naming the `same:` line. Through MappingSet.load and `helsebro
mappings lint` on a broken copy of the project's mappings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.paths import compile_path
from router.cli import main
from router.errors import MappingError
from router.mapping import MappingSet
from router.testing import edit_text

ROOT = Path(__file__).resolve().parents[2]

A01 = ("hl7v2", "messages", "ADT_A01.yaml")
ENCOUNTER = ("hl7v2", "segments", "PV1.Encounter.yaml")
EACH = "    use: DG1.Condition\n    each: DG1\n"
SAME = "        same: DG1\n"


def _line_of(path: Path, text: str) -> int:
    body = path.read_text()
    return body[: body.index(text)].count("\n") + 1


def test_the_shipped_mappings_lint_clean(capsys):
    """Every shipped message whose stay lists diagnoses makes them with each: DG1 (or makes none): lint exits 0."""
    assert main(["mappings", "lint", str(ROOT / "mappings" / "hl7v2")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("new", "says"),
    [
        ("    use: DG1.Condition\n    from: DG1\n", "'diagnosis' is made from: DG1"),
        ("    use: DG1.Condition\n", "'diagnosis' is made once, with neither from: nor each:"),
        ("    use: DG1.Condition\n    each: AL1\n", "'diagnosis' is made each: AL1"),
        ("    use: DG1.Condition\n    each: PROCEDURE\n", "'diagnosis' is made each: PROCEDURE"),
    ],
    ids=["from", "once", "each-over-another-segment", "each-over-a-group"],
)
def test_a_resource_not_made_per_segment_is_refused_at_its_entry(mapping_copy, new, says):
    """`diagnosis` made with from:, once, over AL1 or over a group: refused at its entry, naming the same: line."""
    path = mapping_copy.joinpath(*A01)
    edit_text(path, EACH, new)
    with pytest.raises(MappingError) as err:
        MappingSet.load(mapping_copy / "hl7v2", compile_path)
    same_line = _line_of(mapping_copy.joinpath(*ENCOUNTER), SAME)
    assert "encounter (PV1.Encounter) pairs with the 'diagnosis' made from each DG1 segment (same: DG1 at " in err.value.reason
    assert f"hl7v2/segments/PV1.Encounter.yaml:{same_line})" in err.value.reason
    assert says in err.value.reason and "make it with each: DG1" in err.value.reason
    assert err.value.file.endswith("ADT_A01.yaml")
    assert err.value.line == _line_of(path, "  - name: diagnosis\n")


def test_a_resource_made_inside_a_group_is_refused_as_made_once_per_group(mapping_copy):
    """A `diagnosis` made once per PROCEDURE group (no each: of its own) is named as such: the engine pairs it with no DG1."""
    path = mapping_copy.joinpath(*A01)
    edit_text(path, "  - name: diagnosis\n" + EACH + "    when: DG1 valued\n", "")
    edit_text(path, "      - name: procedure\n", "      - name: diagnosis\n        use: DG1.Condition\n      - name: procedure\n")
    with pytest.raises(MappingError) as err:
        MappingSet.load(mapping_copy / "hl7v2", compile_path)
    assert "'diagnosis' is made once per each: PROCEDURE" in err.value.reason
    assert err.value.file.endswith("ADT_A01.yaml")
    assert err.value.line == _line_of(path, "      - name: diagnosis\n")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (EACH, "    use: DG1.Condition\n    each: DG1[*]\n"),
        ("    use: PV1.Encounter\n", "    use: PV1.Encounter\n    with: {diagnosis: null}\n"),
        ("  - name: diagnosis\n" + EACH + "    when: DG1 valued\n", ""),
    ],
    ids=["each-star", "left-unbound", "no-diagnosis"],
)
def test_each_over_the_segment_no_binding_or_no_resource_loads(mapping_copy, old, new):
    """`each: DG1[*]` pairs too; `with: {diagnosis: null}` and a message making no diagnosis (an A02) leave the entries out on purpose."""
    edit_text(mapping_copy.joinpath(*A01), old, new)
    assert "ADT_A01" in MappingSet.load(mapping_copy / "hl7v2", compile_path).messages


def test_helsebro_mappings_lint_prints_file_and_line(mapping_copy, capsys):
    """`helsebro mappings lint` on the folder exits 1 and prints ADT_A01.yaml:<line>: with the reason."""
    path = mapping_copy.joinpath(*A01)
    edit_text(path, EACH, "    use: DG1.Condition\n    from: DG1\n")
    assert main(["mappings", "lint", str(mapping_copy / "hl7v2")]) == 1
    err = capsys.readouterr().err
    line = _line_of(path, "  - name: diagnosis\n")
    assert any(f"ADT_A01.yaml:{line}:" in e and "'diagnosis' is made from: DG1" in e for e in err.splitlines()), err
