"""A resource per field repetition, paired by `same:`: every attending doctor (PV1-7) of a stay.

A message mapping's `each: PV1-7[*]` makes one Practitioner per repetition and records which
repetition made which; PV1.Encounter's `each: PV1-7[*]` participant with `ref: attending` and
`same: PV1-7` points each participant at the Practitioner of its own repetition. Messages go
through the Converter over the project's own mappings, or `helsebro convert`; every Bundle is
validated (router.testing). Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.hl7v2.paths import compile_path
from router.cli import main
from router.errors import MappingError
from router.mapping import MappingSet
from router.pipeline.convert import Converter
from router.settings import load_settings
from router.testing import edit_text, one_bundle

HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
PATIENT = "15866112379"
ATND = "ATND"

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = f"PID|1||{PATIENT}^^^NOR^FNR||NORDMANN^OLA^K||19610615|M"


def _doctor(hpr: str, family: str, given: str) -> str:
    return f"{hpr}^{family}^{given}^^^^^^HPR^^^^HPR"


FIVE = [_doctor("9144900", "LEGE", "LISA"), _doctor("9144901", "DOKTOR", "PER"), _doctor("9144902", "HELSE", "KARI"),
        _doctor("9144903", "SYKE", "OLE"), _doctor("9144904", "FEMTE", "EVA")]


def _pv1(doctors: str) -> str:
    fields = ["PV1", "1", "I", "MED^301^2^STOLAV", "", "", "", doctors] + [""] * 11 + ["V25-0001^^^STOLAV^VN"] + [""] * 24 + ["20250110082500"]
    return "|".join(fields)


def _adt(doctors: str, *, event: str = "A01", structure: str = "ADT_A01", ctrl: str = "REP-1") -> bytes:
    msh = MSH.format(type=f"ADT^{event}^{structure}", ctrl=ctrl)
    return ("\r".join([msh, f"EVN|{event}|20250110083000", PID, _pv1(doctors)]) + "\r").encode()


def _oru(doctors: str) -> bytes:
    segments = [
        MSH.format(type="ORU^R01^ORU_R01", ctrl="REP-ORU"),
        PID,
        _pv1(doctors),
        "OBR|1|P-1^DIPS|F-1^LAB|HB^Hemoglobin^L|||20250110080000",
        "OBX|1|NM|HB^Hemoglobin^L||13.5|g/dL|||||F",
    ]
    return ("\r".join(segments) + "\r").encode()


def _attending(bundle: dict) -> list[str]:
    """Each ATND participant of the one Encounter, as the HPR number of its Practitioner or its display."""
    practitioners = {e["fullUrl"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"}
    [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    out = []
    for p in encounter.get("participant", []):
        if p["type"][0]["coding"][0]["code"] == ATND:
            ref = p["individual"]
            if "reference" in ref:
                [number] = [i["value"] for i in practitioners[ref["reference"]]["identifier"] if i["system"] == HPR]
                out.append(number)
            else:
                out.append(ref["display"])
    return out


class TestEveryRepetition:
    @pytest.mark.parametrize(("event", "structure"), [("A01", "ADT_A01"), ("A02", "ADT_A02"), ("A03", "ADT_A03"), ("A08", "ADT_A01")])
    def test_five_attending_doctors_are_five_participants_each_his_own(self, converter, event, structure):
        """Five PV1-7 repetitions: five ATND participants in order, each the Practitioner of its own
        repetition (the fifth was dropped by the four fixed slots before)."""
        doc = one_bundle(converter, _adt("~".join(FIVE), event=event, structure=structure))
        assert _attending(doc) == ["9144900", "9144901", "9144902", "9144903", "9144904"]
        assert len([e for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"]) == 5

    def test_a_result_message_names_every_doctor_of_the_stay(self, converter):
        """An ORU's stay (made only when missing) has all five doctors too, each by his own Practitioner."""
        doc = one_bundle(converter, _oru("~".join(FIVE)))
        assert _attending(doc) == ["9144900", "9144901", "9144902", "9144903", "9144904"]

    def test_a_doctor_without_an_hpr_number_is_named_in_his_own_place(self, converter):
        """The third of five has no HPR number: no Practitioner of his own, a participant by his name,
        and the doctors after him still each point at their own Practitioner."""
        doctors = [*FIVE[:2], "^TURNUS^KARI", *FIVE[3:]]
        doc = one_bundle(converter, _adt("~".join(doctors)))
        assert _attending(doc) == ["9144900", "9144901", "KARI TURNUS", "9144903", "9144904"]
        assert len([e for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"]) == 4

    def test_an_empty_repetition_takes_no_place(self, converter):
        """An empty repetition between two doctors makes neither a Practitioner nor a participant; the pairing holds."""
        doc = one_bundle(converter, _adt(f"{FIVE[0]}~~{FIVE[4]}"))
        assert _attending(doc) == ["9144900", "9144904"]

    def test_a_repetition_that_made_nothing_leaves_no_participant(self, converter):
        """A repetition with neither a number nor a name makes no Practitioner and no display: its
        participant is left out whole, not written with a type and no one."""
        doc = one_bundle(converter, _adt(f"{FIVE[0]}~^^^^^^^^^^^^ABC"))
        [encounter] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Encounter"]
        assert [p["individual"] for p in encounter["participant"]] == [{"reference": next(
            e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner")}]

    def test_the_same_doctor_twice_is_one_practitioner_named_twice(self, converter):
        """Two repetitions naming one HPR number: one Practitioner entry, two participants pointing at it."""
        doc = one_bundle(converter, _adt(f"{FIVE[0]}~{FIVE[0]}"))
        assert _attending(doc) == ["9144900", "9144900"]
        assert len([e for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"]) == 1

    @pytest.mark.parametrize("trace", [False, True], ids=["generated", "explain"])
    def test_interpreted_and_generated_agree(self, trace):
        """--explain runs the interpreted rules, a plain conversion the generated code: the same Bundle."""
        converter = Converter(load_settings(environ={}))
        [item] = converter.convert(_adt("~".join([*FIVE[:2], "^TURNUS^KARI", *FIVE[3:]])), trace=trace)
        assert item.ok
        item.bundle.pop("_explain", None)
        assert _attending(item.bundle) == ["9144900", "9144901", "KARI TURNUS", "9144903", "9144904"]


def test_helsebro_convert_unmapped_no_longer_hides_a_fifth_doctor(tmp_path, capsys):
    """`helsebro convert --unmapped`: the fifth PV1-7 repetition is in the output (its Practitioner and
    participant), and PV1-7 is not reported unmapped."""
    path = tmp_path / "a01.hl7"
    path.write_bytes(_adt("~".join(FIVE)))
    assert main(["convert", "--unmapped", str(path)]) == 0
    out, err = capsys.readouterr()
    [doc] = [json.loads(line) for line in out.splitlines()]
    Bundle.model_validate(doc)
    assert "9144904" in _attending(doc)
    [line] = [x for x in err.splitlines() if "unmapped:" in x]
    assert "PV1-7" not in line.split("unmapped:")[1].split(", ")





def test_a_plain_ref_names_the_first_repetitions_resource(mapping_copy):
    """A `ref: attending` without `same:` names the Practitioner of the first repetition (as `from: PV1-7`
    did), not the last one made."""
    edit_text(mapping_copy / "hl7v2" / "segments" / "PV1.Encounter.yaml", "  - target: serviceProvider\n",
          "  - target: participant\n    rules:\n      - target: type.coding\n        value: {system: urn:test, code: FIRST}\n"
          "      - target: individual\n        ref: attending\n  - target: serviceProvider\n")
    converter = Converter(load_settings(environ={"HELSEBRO_MAPPINGS_DIR": str(mapping_copy)}))
    doc = one_bundle(converter, _adt("~".join(FIVE)))
    [encounter] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Encounter"]
    urls = {e["resource"]["identifier"][0]["value"]: e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Practitioner"}
    [first] = [p["individual"] for p in encounter["participant"] if p["type"][0]["coding"][0]["code"] == "FIRST"]
    assert first == {"reference": urls["9144900"]}


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("        same: PV1-7\n", "        same: PV1-17\n", "no enclosing each: iterates PV1-17"),
        ("    each: PV1-7[*]\n", "    each: PV1-17[*]\n", "no enclosing each: iterates PV1-7"),
        ("        same: PV1-7\n", "        same: pv1-7\n", "names a segment (DG1) or a field"),
    ],
    ids=["another-field", "each-over-another-field", "not-a-field"],
)
def test_a_same_naming_a_field_no_each_iterates_is_refused_at_its_line(mapping_copy, old, new, says):
    """Lint refuses `same: PV1-7` unless an enclosing `each:` iterates PV1-7's repetitions, naming file:line."""
    path = mapping_copy / "hl7v2" / "segments" / "PV1.Encounter.yaml"
    text = path.read_text()
    line = edit_text(path, old, new)
    if old.startswith("    each"):
        line = text[: text.index("        same: PV1-7\n")].count("\n") + 1  # the error is at the same:, not at the each:
    with pytest.raises(MappingError) as err:
        MappingSet.load(mapping_copy / "hl7v2", compile_path)
    assert says in err.value.reason
    assert err.value.file.endswith("PV1.Encounter.yaml")
    assert err.value.line == line


class TestSameNeedsEachOverItsField:
    """Lint refuses a message whose resource a template's `same: PV1-7` names is not made with each: over PV1-7."""

    A01 = ("hl7v2", "messages", "ADT_A01.yaml")
    EACH = "    use: XCN.Practitioner\n    each: PV1-7[*]\n  - name: admitting\n"

    @staticmethod
    def _line_of(path: Path, text: str) -> int:
        return path.read_text()[: path.read_text().index(text)].count("\n") + 1

    @pytest.mark.parametrize(
        ("new", "says"),
        [
            ("    use: XCN.Practitioner\n    from: PV1-7\n  - name: admitting\n", "'attending' is made from: PV1-7"),
            ("    use: XCN.Practitioner\n    each: PV1-17[*]\n  - name: admitting\n", "'attending' is made each: PV1-17[*]"),
            ("    use: XCN.Practitioner\n  - name: admitting\n", "'attending' is made once, with neither from: nor each:"),
        ],
        ids=["from", "each-over-another-field", "once"],
    )
    def test_a_resource_not_made_per_repetition_is_refused_at_its_entry(self, mapping_copy, new, says):
        """`attending` made with from:, over PV1-17, or once: refused at its entry, naming the same: field, its line and what it is made from."""
        path = mapping_copy.joinpath(*self.A01)
        edit_text(path, self.EACH, new)
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy / "hl7v2", compile_path)
        assert says in err.value.reason
        same_line = self._line_of(mapping_copy / "hl7v2" / "segments" / "PV1.Encounter.yaml", "        same: PV1-7\n")
        assert "pairs with the 'attending' made from each PV1-7 repetition (same: PV1-7 at " in err.value.reason
        assert f"hl7v2/segments/PV1.Encounter.yaml:{same_line})" in err.value.reason
        assert err.value.file.endswith("ADT_A01.yaml")
        assert err.value.line == self._line_of(path, "  - name: attending\n")

    def test_a_message_without_the_resource_is_refused_at_the_user(self, mapping_copy):
        """A message that makes no `attending` at all: refused at the encounter that pairs with it."""
        path = mapping_copy.joinpath(*self.A01)
        edit_text(path, "  - name: attending\n", "  - name: doctors\n")
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy / "hl7v2", compile_path)
        assert "this message makes no 'attending'" in err.value.reason and "same: PV1-7" in err.value.reason
        assert err.value.file.endswith("ADT_A01.yaml")
        assert err.value.line == self._line_of(path, "  - name: encounter\n")

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("    each: PV1-7[*]\n  - name: admitting\n", "    each: PV1-7\n  - name: admitting\n"),
            ("    use: PV1.Encounter\n", "    use: PV1.Encounter\n    with: {attending: null}\n"),
        ],
        ids=["each-without-star", "left-unbound"],
    )
    def test_each_over_the_field_or_no_binding_loads(self, mapping_copy, old, new):
        """`each: PV1-7` (every repetition too) loads, and so does a stay whose attending is left out with with: {attending: null}."""
        edit_text(mapping_copy.joinpath(*self.A01), old, new)
        assert "ADT_A01" in MappingSet.load(mapping_copy / "hl7v2", compile_path).messages

    def test_helsebro_mappings_lint_prints_file_and_line(self, mapping_copy, capsys):
        """`helsebro mappings lint` on the folder exits 1 and prints ADT_A01.yaml:<line>: with the reason."""
        path = mapping_copy.joinpath(*self.A01)
        edit_text(path, self.EACH, "    use: XCN.Practitioner\n    from: PV1-7\n  - name: admitting\n")
        assert main(["mappings", "lint", str(mapping_copy / "hl7v2")]) == 1
        err = capsys.readouterr().err
        line = self._line_of(path, "  - name: attending\n")
        assert any(f"ADT_A01.yaml:{line}:" in e and "'attending' is made from: PV1-7" in e for e in err.splitlines()), err
