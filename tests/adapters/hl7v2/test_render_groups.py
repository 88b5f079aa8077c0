"""Tests for repeating segments and segment groups (adapters/hl7v2/outbound.py, rendered by render.py).

`each:` repeats a segment per resource, `group:` repeats its segments per
resource and follows references (`each: result`, `as: Observation`); Set IDs
count 1..n per loop. The ORU round trip runs the engine's Converter on both sides.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from adapters.hl7v2.outbound import load_outbound, load_tables
from adapters.hl7v2.render import Hl7v2Renderer
from router.contracts import Converted, MessageHeader
from router.errors import MessageError
from router.routing.model import QueueDestination
from router.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "mappings" / "outbound" / "hl7v2"
CASES = SHIPPED / "ORU_R01.cases"

ORU_HEAD = """\
outbound: ORU_R01
message: ORU
events: [R01]
segments:
  - segment: PID
    resource: Patient
    fields:
      PID-5: {each: name, components: {1: family}}
"""

GROUP = """\
  - group: ORDER_OBSERVATION
    each: DiagnosticReport
    required: {required}
    segments:
      - segment: OBR
        fields:
          OBR-4: {{from: code, components: {{1: "coding[0].code"}}}}
      - group: OBSERVATION
        each: result
        as: Observation
        segments:
          - segment: OBX
            fields:
              OBX-3: {{from: code, components: {{1: "coding[0].code"}}}}
              OBX-5: valueString
          - segment: NTE
            each: note
            fields:
              NTE-3: text
"""


def _renderer(tmp_path: Path, text: str, *, name: str = "ORU_R01", version: str = "2.5.1") -> Hl7v2Renderer:
    folder = tmp_path / "hl7v2"
    if not folder.exists():
        shutil.copytree(SHIPPED / "tables", folder / "tables")
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    mapping = load_outbound(path, version, tables=load_tables(folder))
    return Hl7v2Renderer("legacy", [mapping], version=version, charset="UNICODE UTF-8", named=True)


def _conv(resources: list[dict], event: str = "R01", code: str = "ORU") -> Converted:
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    header = MessageHeader(message_code=code, trigger_event=event, control_id="T-1")
    return Converted(index=0, raw=b"x", control_id="T-1", bundle={"resourceType": "Bundle", "type": "transaction", "entry": entries}, header=header)


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8").split("\r")[1:-1]  # without MSH and the final CR


PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "NORDMANN"}]}


def _report(rid: str, code: str, results: list[str]) -> dict:
    return {"resourceType": "DiagnosticReport", "id": rid, "status": "final", "code": {"coding": [{"code": code}]},
            "result": [{"reference": f"urn:uuid:{r}"} for r in results]}


def _obs(oid: str, code: str, value: str, notes: tuple[str, ...] = ()) -> dict:
    out = {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"code": code}]}, "valueString": value}
    if notes:
        out["note"] = [{"text": n} for n in notes]
    return out


class TestRepeatingSegments:
    MAPPING = """\
outbound: ADT_A01
message: ADT
events: [A01]
segments:
  - segment: PID
    resource: Patient
    fields:
      PID-5: {each: name, components: {1: family}}
  - segment: AL1
    each: AllergyIntolerance
    where: "verificationStatus.coding.code!=entered-in-error"
    fields:
      AL1-3: {from: code, components: {2: text}}
  - segment: DG1
    each: Condition
    fields:
      DG1-1: {value: "9"}
      DG1-3: {from: code, components: {1: "coding[0].code"}}
"""

    def _allergy(self, rid: str, text: str, status: str | None = None) -> dict:
        out = {"resourceType": "AllergyIntolerance", "id": rid, "code": {"text": text}}
        if status:
            out["verificationStatus"] = {"coding": [{"code": status}]}
        return out

    def test_one_segment_per_resource_in_bundle_order(self, tmp_path):
        """each: AllergyIntolerance writes one AL1 per allergy, in Bundle order, AL1-1 numbered 1..n."""
        renderer = _renderer(tmp_path, self.MAPPING, name="ADT_A01")
        conv = _conv([PATIENT, self._allergy("a1", "Penicillin"), self._allergy("a2", "Nøtter"), self._allergy("a3", "Pollen")], "A01", "ADT")
        assert _lines(renderer.render(conv)) == ["PID|||||NORDMANN", "AL1|1||^Penicillin", "AL1|2||^Nøtter", "AL1|3||^Pollen"]

    def test_where_filters_and_numbering_counts_what_is_written(self, tmp_path):
        """where: drops the allergies entered in error, and the Set IDs count only those written."""
        renderer = _renderer(tmp_path, self.MAPPING, name="ADT_A01")
        conv = _conv([PATIENT, self._allergy("a1", "Feil", "entered-in-error"), self._allergy("a2", "Pollen", "confirmed")], "A01", "ADT")
        assert _lines(renderer.render(conv))[1:] == ["AL1|1||^Pollen"]

    def test_a_set_id_the_mapping_sets_is_kept(self, tmp_path):
        """A mapping that sets SEG-1 itself is not renumbered."""
        renderer = _renderer(tmp_path, self.MAPPING, name="ADT_A01")
        conv = _conv([PATIENT, {"resourceType": "Condition", "id": "c1", "code": {"coding": [{"code": "R07.4"}]}}], "A01", "ADT")
        assert _lines(renderer.render(conv))[1:] == ["DG1|9||R07.4"]

    def test_none_writes_nothing(self, tmp_path):
        """Without a resource to repeat over, a repeating segment is left out (required: defaults to false)."""
        renderer = _renderer(tmp_path, self.MAPPING, name="ADT_A01")
        assert _lines(renderer.render(_conv([PATIENT], "A01", "ADT"))) == ["PID|||||NORDMANN"]

    def test_events_leave_a_segment_out_of_other_structures(self, settings, converter):
        """The shipped ADT_A01.yaml writes AL1 and DG1 for A01 but neither for A02, whose structure has none."""
        msg = (PROJECT_ROOT / "mappings/outbound/hl7v2/ADT_A01.cases/admit_allergies_diagnoses/input.hl7").read_bytes().replace(b"\n", b"\r")
        renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2"), settings, name="q")
        a01 = renderer.render(converter.convert(msg)[0]).decode().split("\r")
        a02 = renderer.render(converter.convert(msg.replace(b"ADT^A01^ADT_A01", b"ADT^A02^ADT_A02").replace(b"EVN|A01", b"EVN|A02"))[0]).decode().split("\r")
        assert [line[:3] for line in a01 if line[:3] in ("AL1", "DG1")] == ["AL1", "AL1", "DG1", "DG1"]
        assert not [line for line in a02 if line[:3] in ("AL1", "DG1")]


class TestGroups:
    def test_obr_then_obx_per_result_in_reference_order(self, tmp_path):
        """Each report writes its OBR, then one OBX per result in the order the report lists them, each with its NTEs."""
        renderer = _renderer(tmp_path, ORU_HEAD + GROUP.format(required="true"))
        conv = _conv([
            PATIENT,
            _obs("o2", "B", "b", ("første", "andre")),
            _report("r1", "PANEL", ["o1", "o2"]),
            _obs("o1", "A", "a"),
            _report("r2", "SINGLE", ["o3"]),
            _obs("o3", "C", "c"),
        ])
        assert _lines(renderer.render(conv))[1:] == [
            "OBR|1|||PANEL",
            "OBX|1||A||a",
            "OBX|2||B||b",
            "NTE|1||første",
            "NTE|2||andre",
            "OBR|2|||SINGLE",
            "OBX|1||C||c",
        ]

    def test_a_report_without_results_writes_its_obr_only(self, tmp_path):
        """A DiagnosticReport with no result writes OBR and no OBX."""
        renderer = _renderer(tmp_path, ORU_HEAD + GROUP.format(required="true"))
        assert _lines(renderer.render(_conv([PATIENT, _report("r1", "PENDING", [])])))[1:] == ["OBR|1|||PENDING"]

    def test_references_to_missing_or_other_resources_are_skipped(self, tmp_path):
        """A result that is not in the Bundle, or is not an Observation, writes no OBX."""
        renderer = _renderer(tmp_path, ORU_HEAD + GROUP.format(required="true"))
        conv = _conv([PATIENT, _report("r1", "X", ["gone", "p1", "o1"]), _obs("o1", "A", "a")])
        assert _lines(renderer.render(conv))[1:] == ["OBR|1|||X", "OBX|1||A||a"]

    def test_no_report_and_required_group_is_a_message_error(self, tmp_path):
        """required: true on the group dead-letters a Bundle without a DiagnosticReport, naming the group."""
        renderer = _renderer(tmp_path, ORU_HEAD + GROUP.format(required="true"))
        with pytest.raises(MessageError) as info:
            renderer.render(_conv([PATIENT]))
        assert info.value.reason == "the Bundle has no DiagnosticReport, which group ORDER_OBSERVATION is built from"

    def test_no_report_and_optional_group_writes_nothing(self, tmp_path):
        """required: false on the group leaves it out when there is no DiagnosticReport."""
        renderer = _renderer(tmp_path, ORU_HEAD + GROUP.format(required="false"))
        assert _lines(renderer.render(_conv([PATIENT]))) == ["PID|||||NORDMANN"]


class TestShippedOru:
    def _obx(self, data: bytes) -> list[list[str]]:
        return [line.split("|") for line in data.decode("latin-1").split("\r") if line.startswith("OBX")]

    def test_value_type_follows_value_x_and_version(self, settings, converter):
        """OBX-2 is NM, SN, ST, CWE or TS by the Observation's value[x]; a v2.3 receiver gets CE for a coded value."""
        msg = (CASES / "culture_coded_v23_latin1" / "input.hl7").read_bytes().replace(b"\n", b"\r")
        conv = converter.convert(msg)[0]
        for version, coded in (("2.5.1", "CWE"), ("2.3", "CE")):
            out = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2", version=version), settings, name="q").render(conv)
            assert [f[2] for f in self._obx(out)] == [coded, "TS", "NM"]
            assert self._obx(out)[2][5:7] == ["25", "mL"]

    @pytest.mark.parametrize("version", ["2.5.1", "2.3"])
    @pytest.mark.parametrize("source", ["two_orders_string_and_nm", "blood_panel_20_obx", "culture_coded_v23_latin1"])
    def test_round_trip_keeps_each_result(self, settings, converter, source, version):
        """ORU → Bundle → ORU → Bundle keeps every result's code, value, unit, status and the report it belongs to."""
        msg = (CASES / source / "input.hl7").read_bytes().replace(b"\n", b"\r")
        [first] = converter.convert(msg)
        assert first.ok, first.error
        renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2", version=version, charset="8859/1"), settings, name="q")
        [again] = converter.convert(renderer.render(first))
        assert again.ok, again.error
        assert _results(again.bundle) == _results(first.bundle)
        assert len(_results(first.bundle)) >= 2


    @pytest.mark.parametrize("version", ["2.5.1", "2.3"])
    def test_round_trip_keeps_ratio_range_unit_and_repeated_values(self, converter, settings, version):
        """A titer (SN 1:128), a range's unit and a repeated OBX-5 (several organisms, a series of numbers) survive ORU → Bundle → ORU → Bundle.

        The inbound side makes them valueRatio, valueRange.low/high.unit and components; the
        outbound mapping wrote an OBX with no OBX-2, OBX-5 or OBX-6 for them: the result was gone.
        """
        msg = (
            b"MSH|^~\\&|LAB|STOLAV|HELSEBRO|HP|20250110083000||ORU^R01^ORU_R01|RATIO-1|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8\r"
            b"PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M\r"
            b"OBR|1|P1|F1|MIK^Mikrobiologi^L|||20250110080000\r"
            b"OBX|1|SN|TIT^Titer^L||<^1^:^128||||||F\r"
            b"OBX|2|SN|K^Kalium^L||^2.5^-^5|mmol/L|||||F\r"
            b"OBX|3|CWE|FUNN^Funn^L||ECOLI^E coli^L~KLEB^Klebsiella^L||||||F\r"
            b"OBX|4|NM|SERIE^Serie^L||4.1~4.3|mmol/L|||||F\r"
        )
        [first] = converter.convert(msg)
        assert first.ok, first.error
        renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2", version=version, charset="8859/1"), settings, name="q")
        out = renderer.render(first)
        assert [f[2] for f in self._obx(out)] == ["SN", "SN", "CE" if version == "2.3" else "CWE", "NM"]
        [again] = converter.convert(out)
        assert again.ok, again.error
        assert _results(again.bundle, components=True) == _results(first.bundle, components=True)
        kept = [r[3] for r in _results(first.bundle, components=True)]
        assert kept[0]["valueRatio"]["denominator"]["value"] == 128 and kept[1]["valueRange"]["high"]["unit"] == "mmol/L"
        assert len(kept[2]["component"]) == len(kept[3]["component"]) == 2

    @pytest.mark.parametrize("version", ["2.5.1", "2.3"])
    def test_round_trip_keeps_time_period_numeric_range_and_reference_range(self, converter, settings, version):
        """A TM, DR and NR value and OBX-7's reference range survive ORU → Bundle → ORU → Bundle (review H192).

        The inbound side makes them valueTime, valuePeriod, valueRange and referenceRange low/high;
        the outbound mapping wrote no OBX-2 or OBX-5 for a time or a period: the result was gone.
        """
        msg = (
            b"MSH|^~\\&|LAB|STOLAV|HELSEBRO|HP|20250110083000||ORU^R01^ORU_R01|TMDR-1|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8\r"
            b"PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M\r"
            b"OBR|1|P1|F1|KJ^Klinisk kjemi^L|||20250110080000\r"
            b"OBX|1|TM|TID^Pr\xc3\xb8vetid^L||0830||||||F\r"
            b"OBX|2|DR|PER^Periode^L||20250109080000^20250110080000||||||F\r"
            b"OBX|3|NR|OMR^Omr\xc3\xa5de^L||2.5^5|mmol/L|||||F\r"
            b"OBX|4|NM|K^Kalium^L||4.1|mmol/L|3.5-5.0||||F\r"
            b"OBX|5|NM|CRP^CRP^L||3|mg/L|<5||||F\r"
        )
        [first] = converter.convert(msg)
        assert first.ok, first.error
        renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2", version=version, charset="8859/1"), settings, name="q")
        out = renderer.render(first)
        obx = self._obx(out)
        assert [f[2] for f in obx] == ["TM", "DR", "SN", "NM", "NM"]
        assert obx[0][5] == "083000" and obx[1][5].startswith("20250109080000")
        assert [f[7] for f in obx[3:]] == ["3.5-5.0", "<5"]
        [again] = converter.convert(out)
        assert again.ok, again.error
        assert _results(again.bundle) == _results(first.bundle)
        kept = [r[3] for r in _results(first.bundle)]
        assert kept[0] == {"valueTime": "08:30:00"} and set(kept[1]["valuePeriod"]) == {"start", "end"}
        assert kept[2]["valueRange"]["high"]["value"] == 5
        ranges = [_obs_in(first.bundle, "K"), _obs_in(again.bundle, "K")]
        assert ranges[0]["referenceRange"] == ranges[1]["referenceRange"]
        assert ranges[0]["referenceRange"][0]["low"]["value"] == 3.5

    @pytest.mark.parametrize(("reference_range", "obx7"), [
        ({"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5, "unit": "mmol/L"}}, "3.5-5"),
        ({"low": {"value": 2}}, ">=2"),
        ({"high": {"value": 10}}, "<=10"),
        ({"text": "Negativ", "low": {"value": 1}}, "Negativ"),
    ])
    def test_a_reference_range_without_text_is_written_from_low_and_high(self, settings, reference_range, obx7):
        """OBX-7 is the range's text, else its low and high (`3.5-5`, `>=2`, `<=10`) as the inbound side reads them (review H192).

        Why: a Bundle made elsewhere (a FHIR client) often gives low and high alone; OBX-7 was then empty.
        """
        obs = {**_obs("o1", "K", ""), "valueQuantity": {"value": 4.1, "unit": "mmol/L"}, "referenceRange": [reference_range]}
        del obs["valueString"]
        renderer = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="q", format="hl7v2"), settings, name="q")
        patient = {**PATIENT, "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "15866112379"}]}
        [line] = self._obx(renderer.render(_conv([patient, _report("r1", "KJ", ["o1"]), obs])))
        assert line[7] == obx7


def _obs_in(bundle: dict, code: str) -> dict:
    return next(e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Observation" and e["resource"]["code"]["coding"][0]["code"] == code)


def _results(bundle: dict, *, components: bool = False) -> list[tuple]:
    """Per report (by code, in order): each result's code, value, unit and status."""
    by_ref = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    out = []
    for entry in bundle["entry"]:
        report = entry["resource"]
        if report["resourceType"] != "DiagnosticReport":
            continue
        for ref in report.get("result", ()):
            obs = by_ref[ref["reference"]]
            value = {k: v for k, v in obs.items() if k.startswith("value")}
            if components and "component" in obs:
                value["component"] = [{k: v for k, v in c.items() if k.startswith("value")} for c in obs["component"]]
            out.append((report["code"]["coding"][0]["code"], report["status"], obs["code"]["coding"][0]["code"], value, obs["status"]))
    return out


def test_docs_group_example_loads(tmp_path):
    """The group example of docs/outbound-hl7v2.md compiles (examples cannot rot)."""
    import re

    text = (PROJECT_ROOT / "docs" / "outbound-hl7v2.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(outbound: .*?)```", text, flags=re.S)
    assert blocks, "the docs lost their mapping examples"
    for i, block in enumerate(blocks):
        name = re.match(r"outbound: (\w+)", block).group(1)
        folder = tmp_path / str(i)
        shutil.copytree(SHIPPED / "tables", folder / "tables")
        (folder / f"{name}.yaml").write_text(textwrap.dedent(block), encoding="utf-8")
        load_outbound(folder / f"{name}.yaml", "2.5.1")


class TestLinesSplitOnLineBreaksOnly:
    MAPPING = ORU_HEAD + """\
  - group: ORDER_OBSERVATION
    each: DiagnosticReport
    segments:
      - segment: OBR
        fields:
          OBR-4: {from: code, components: {1: "coding[0].code"}}
      - group: OBSERVATION
        each: result
        as: Observation
        segments:
          - segment: OBX
            fields:
              OBX-5: {from: valueString, fn: lines}
"""

    @pytest.mark.parametrize(("value", "obx5"), [
        ("Svar f\x85lger", "Svar f\x85lger"),  # 0x85 of a cp1252 sender read as 8859/1 ("…"): no line break
        ("a\x1cb\x0bc", "a\\X1C\\b\\X0B\\c"),  # MLLP's frame bytes: escaped, as in any other field
        ("a\u2028b\x0cc", "a\u2028b\\X0C\\c"),
        ("linje 1\r\nlinje 2\rlinje 3\n\nlinje 5\n", "linje 1~linje 2~linje 3~~linje 5"),
    ])
    def test_only_cr_and_lf_start_a_repetition(self, tmp_path, value, obx5):
        """`fn: lines` starts a repetition at CR, LF or CR LF, as escape_text does, and nowhere else (review H176).

        Why: str.splitlines also splits at 0x0B, 0x0C, 0x1C-0x1E, 0x85, U+2028 and U+2029, so such a
        character was dropped from the text and its line cut in two, without a word.
        """
        renderer = _renderer(tmp_path, self.MAPPING)
        conv = _conv([PATIENT, _report("r1", "CBC", ["o1"]), _obs("o1", "HB", value)])
        obx = [line for line in _lines(renderer.render(conv)) if line.startswith("OBX|")]
        assert obx == [f"OBX|1||||{obx5}"]


class TestATableThatRefusesACode:
    MAPPING = ORU_HEAD.replace("PID-5: {each: name, components: {1: family}}",
                               "PID-5: {each: name, components: {1: family}}\n      PID-8: {from: gender, table: strict-gender}")

    def test_the_refusal_names_the_field(self, tmp_path):
        """A table with `unmapped: error` refuses a code it lacks at its field (PID-8), so the dead letter of that
        destination says where; it said only which table, with no position (review H176)."""
        folder = tmp_path / "hl7v2"
        shutil.copytree(SHIPPED / "tables", folder / "tables")
        (folder / "tables" / "strict-gender.yaml").write_text("table: strict-gender\nmap: {male: M, female: F}\nunmapped: error\n")
        renderer = _renderer(tmp_path, self.MAPPING)
        with pytest.raises(MessageError, match="strict-gender") as caught:
            renderer.render(_conv([{**PATIENT, "gender": "unknown"}]))
        assert caught.value.location == "PID-8"
        assert "unknown" not in caught.value.reason
        assert _lines(renderer.render(_conv([{**PATIENT, "gender": "female"}]))) == ["PID|||||NORDMANN|||F"]
