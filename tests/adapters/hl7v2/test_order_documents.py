"""v2.8 orders (ORDER_DOCUMENT, a TQ1 after the order's NTE), orders without their OBR, segments out of place.

v2.8 puts a document about the order (an OBX holding it, then its TXA) right after the ORC, in a
COMMON_ORDER group v2.5.1 lacks. Helsebro merges that ORDER_DOCUMENT group into the ORU^R01 and
OUL^R22–R24 structures it reads (adapters/hl7v2/groups.py): the order keeps its OBR and its results,
the document is read by no rule (the v2-to-FHIR IG leaves it to FHIR R5) and stays in the unmapped
report. An ORC whose OBR is missing holds no results: the OBX after it is refused at its position.
A segment out of place no longer moves the segments after it to the top of the structure.
"""

from __future__ import annotations

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.groups import Group, build
from router.testing import converted, one_bundle

FNR = "15866112379"  # synthetic (Tenor, month + 80)
MSH = "MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||{type}|C1|P|{version}"
PID = f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^KARI||19610615|F"
PV1 = "PV1|1|I|MED^301^2^STOLAV" + "|" * 16 + "V1^^^STOLAV^VN"
ORC = "ORC|RE|ORD-1"
DOCUMENT = ["OBX|1|ED|||^TEXT^^Base64^U3ludGV0aXNr", "TXA|1|CN|TX|20250115090000"]  # v2.8 ORDER_DOCUMENT
OBR = "OBR|1|ORD-1|LAB-1^LIS|24331-1^Lipid panel^LN|||20250115090000"
NOTE = "NTE|1||Fasting sample"
TIMING = "TQ1|1||||||20250115080000"
CHOLESTEROL = "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F"
TRIGLYCERIDES = "OBX|2|NM|2571-8^Triglycerides^LN||1.1|mmol/L|||||F"
SPM = "SPM|1|S1&LIS||BLD^Blood^L"


def _message(kind: str, *body: str, version: str = "2.8") -> bytes:
    structure = kind.replace("^", "_")
    return ("\r".join([MSH.format(type=f"{kind}^{structure}", version=version), PID, PV1, *body]) + "\r").encode()


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _codes(bundle: dict) -> list[str]:
    return [o["code"]["coding"][0]["code"] for o in _resources(bundle, "Observation")]


def _url_of(bundle: dict, code: str) -> str:
    [url] = [e["fullUrl"] for e in bundle["entry"]
             if e["resource"]["resourceType"] == "Observation" and e["resource"]["code"]["coding"][0]["code"] == code]
    return url


def _results(report: dict) -> list[str]:
    return [r["reference"] for r in report.get("result", [])]


def _names(group: Group) -> list:
    """The tree as nested lists: a group is [its name, its items...], a segment its name."""
    return [group.name, *(_names(i) if isinstance(i, Group) else i.name for i in group.items)]


def _refusal(converter, data: bytes) -> dict:
    [outcome] = converted(converter, data)
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return outcome["issue"][0]


class TestOrderDocument:
    def test_oru_order_with_its_document_before_the_obr_keeps_its_report(self, converter):
        """v2.8 ORU^R01: ORC, the document's OBX and TXA, then OBR: one report with the OBR's code and its own result;
        the document's OBX is no result (read as an order without an OBR, the message was refused)."""
        bundle = one_bundle(converter, _message("ORU^R01", ORC, *DOCUMENT, OBR, NOTE, TIMING, CHOLESTEROL))
        [report] = _resources(bundle, "DiagnosticReport")
        assert report["code"]["coding"][0]["code"] == "24331-1"
        assert _codes(bundle) == ["2093-3"]
        assert _results(report) == [_url_of(bundle, "2093-3")]

    def test_the_document_stays_in_the_unmapped_report(self, converter):
        """No rule reads ORDER_DOCUMENT (the IG leaves it to FHIR R5): its OBX and TXA are listed, not dropped unseen."""
        [result] = converter.convert(_message("ORU^R01", ORC, *DOCUMENT, OBR, CHOLESTEROL))
        assert result.ok
        assert {"OBX[1]-5", "TXA-2", "TXA-3", "TXA-4"} <= set(result.unmapped)

    def test_oul_r22_order_document_then_note_then_timing_then_results(self, converter):
        """v2.8 OUL^R22: OBR, ORC, document, NTE, TQ1, results: both results belong to the order's report
        (the TQ1 after the NTE was refused at the OBX after it)."""
        bundle = one_bundle(converter, _message("OUL^R22", SPM, OBR, ORC, *DOCUMENT, NOTE, TIMING, CHOLESTEROL, TRIGLYCERIDES))
        [report] = _resources(bundle, "DiagnosticReport")
        assert _codes(bundle) == ["2093-3", "2571-8"]
        assert _results(report) == [_url_of(bundle, "2093-3"), _url_of(bundle, "2571-8")]

    def test_oul_r24_specimen_after_the_timing(self, converter):
        """v2.8 OUL^R24: an SPM after the order's document, NTE and TQ1 is the order's specimen, the OBX after its
        container the order's result (the SPM was refused)."""
        bundle = one_bundle(converter, _message("OUL^R24", OBR, ORC, *DOCUMENT, NOTE, TIMING, SPM, "SAC|||C1", CHOLESTEROL))
        [report] = _resources(bundle, "DiagnosticReport")
        assert len(_resources(bundle, "Specimen")) == 1
        assert _results(report) == [_url_of(bundle, "2093-3")]

    def test_oul_r23_places_the_document_in_its_order(self):
        """OUL^R23 (order under SPM and SAC): the document is the order's ORDER_DOCUMENT, nothing is out of place."""
        root = build(tokenize(_message("OUL^R23", SPM, "SAC|||C1", OBR, ORC, *DOCUMENT, NOTE, TIMING, CHOLESTEROL).decode()), "OUL_R23")
        assert root.misplaced == []
        [order] = root.find_groups("ORDER")
        assert _names(order) == ["ORDER", "OBR", "ORC", ["ORDER_DOCUMENT", "OBX", "TXA"], "NTE",
                                 ["TQ1TQ2_SUPPGRP", "TQ1"], ["OBXTCDSIDNTE_SUPPGRP", "OBX"]]

    def test_an_obx_after_the_orc_without_a_txa_is_no_document(self):
        """ORDER_DOCUMENT is taken only whole: an OUL order's OBX after its ORC with no TXA stays a result, as before."""
        root = build(tokenize(_message("OUL^R22", SPM, OBR, ORC, CHOLESTEROL).decode()), "OUL_R22")
        assert root.find_groups("ORDER_DOCUMENT") == []
        [order] = root.find_groups("ORDER")
        assert _names(order) == ["ORDER", "OBR", "ORC", ["OBXTCDSIDNTE_SUPPGRP", "OBX"]]


class TestOrderWithoutObr:
    def test_a_result_after_an_orc_with_no_obr_is_refused_at_that_obx(self, converter):
        """ORU^R01: OBR is required in ORDER_OBSERVATION and gives the report its code; an OBX after an ORC with no OBR
        is refused at its own position, not mapped as the result of a report without a code."""
        issue = _refusal(converter, _message("ORU^R01", ORC, CHOLESTEROL, "ORC|RE|ORD-2", OBR, TRIGLYCERIDES, version="2.5.1"))
        assert issue["location"] == ["OBX[1]"]
        assert "no place for it" in issue["diagnostics"]

    def test_the_document_without_its_txa_does_not_open_an_order(self, converter):
        """v2.8 ORU^R01: an OBX after the ORC but no TXA before the OBR is no document and no result: refused at it."""
        issue = _refusal(converter, _message("ORU^R01", ORC, DOCUMENT[0], OBR, CHOLESTEROL))
        assert issue["location"] == ["OBX[1]"]
        assert "no place for it" in issue["diagnostics"]


class TestOutOfPlace:
    def test_segments_after_a_misplaced_one_stay_in_their_order(self, converter):
        """ORU^R01: after a second CTD (one is allowed), the OBX is still its own order's result, and the next order's
        its own (matching resumed from the top, which had no place for that OBX, and the message was refused)."""
        data = _message("ORU^R01", ORC, OBR, "CTD|PAT^Patient", "CTD|EMR^Emergency", CHOLESTEROL,
                        "ORC|RE|ORD-2", "OBR|2|ORD-2|LAB-2^LIS|2571-8^Triglycerides^LN|||20250115090000", TRIGLYCERIDES,
                        version="2.5.1")
        bundle = one_bundle(converter, data)
        reports = {r["code"]["coding"][0]["code"]: r for r in _resources(bundle, "DiagnosticReport")}
        assert _results(reports["24331-1"]) == [_url_of(bundle, "2093-3")]
        assert _results(reports["2571-8"]) == [_url_of(bundle, "2571-8")]

    def test_a_timing_after_a_result_does_not_cut_off_the_results_after_it(self, converter):
        """OUL^R22: a TQ1 after the order's first result has no place, the result after it is still the order's
        (matched again from the top, it had no place and the message was refused)."""
        bundle = one_bundle(converter, _message("OUL^R22", SPM, OBR, ORC, CHOLESTEROL, TIMING, TRIGLYCERIDES, version="2.5.1"))
        [report] = _resources(bundle, "DiagnosticReport")
        assert _results(report) == [_url_of(bundle, "2093-3"), _url_of(bundle, "2571-8")]

    def test_an_orders_note_and_result_after_a_misplaced_timing_are_mapped(self, converter):
        """OMG^O19: a TQ1 after the OBR (v2.5.1 puts it before) has no place; the order's NTE and OBX after it are still
        its note and supporting observation (matched again from the top, the NTE was the message's and the OBX
        was dropped with a success)."""
        data = _message("OMG^O19", "ORC|NW|REK-1", "OBR|1|REK-1||RTHORAX^Rontgen thorax^L|||20250110092500",
                        TIMING, NOTE, CHOLESTEROL, version="2.5.1")
        bundle = one_bundle(converter, data)
        [request] = _resources(bundle, "ServiceRequest")
        assert request["note"] == [{"text": "Fasting sample"}]
        assert request["supportingInfo"] == [{"reference": _url_of(bundle, "2093-3")}]

    def test_a_misplaced_segment_stays_visible(self, converter):
        """The CTD that has no place is kept beside the segment before it: the unmapped report lists it."""
        [result] = converter.convert(_message("ORU^R01", ORC, OBR, "CTD|PAT^Patient", "CTD|EMR^Emergency", CHOLESTEROL, version="2.5.1"))
        assert result.ok
        assert "CTD[2]-1" in result.unmapped

    def test_an_orders_note_after_a_misplaced_segment_stays_the_orders(self):
        """OUL^R22: the NTE after a misplaced TXA is the order's note, not the message's (matched again from the top,
        it was read as the message's NTE, and the TQ1 and OBX after it had no place)."""
        root = build(tokenize(_message("OUL^R22", SPM, OBR, ORC, "TXA|1|CN", NOTE, TIMING, CHOLESTEROL, version="2.5.1").decode()), "OUL_R22")
        assert [s.name for s in root.misplaced] == ["TXA"]
        assert root.segments("NTE") == []
        [order] = root.find_groups("ORDER")
        assert _names(order) == ["ORDER", "OBR", "ORC", "TXA", "NTE", ["TIMING_QTY", "TQ1"], ["OBXTCDSIDNTE_SUPPGRP", "OBX"]]

    def test_past_the_rematch_limit_the_rest_of_the_message_is_out_of_place(self):
        """Each misplaced segment costs a match of the whole message: after 32 of them the matcher stops and keeps
        the rest, misplaced, where it stands (a message of thousands of stray segments held a worker for minutes)."""
        from adapters.hl7v2.groups import _MAX_REMATCHES

        strays = ["CTD|PAT^Patient"] * (_MAX_REMATCHES + 2)  # one CTD has its place, the rest do not
        root = build(tokenize(_message("ORU^R01", ORC, OBR, *strays, CHOLESTEROL, version="2.5.1").decode()), "ORU_R01")
        assert [s.name for s in root.misplaced] == ["CTD"] * (_MAX_REMATCHES + 1) + ["OBX"]
        assert root.segments("OBX") == [] and not root.find_groups("OBSERVATION")

    def test_below_the_rematch_limit_a_result_after_misplaced_segments_is_its_orders(self, converter):
        strays = ["CTD|PAT^Patient"] * 5
        bundle = one_bundle(converter, _message("ORU^R01", ORC, OBR, *strays, CHOLESTEROL, version="2.5.1"))
        [report] = _resources(bundle, "DiagnosticReport")
        assert _results(report) == [_url_of(bundle, "2093-3")]

    def test_past_the_rematch_limit_a_result_is_refused_not_lost(self, converter):
        from adapters.hl7v2.groups import _MAX_REMATCHES

        strays = ["CTD|PAT^Patient"] * (_MAX_REMATCHES + 2)
        issue = _refusal(converter, _message("ORU^R01", ORC, OBR, *strays, CHOLESTEROL, version="2.5.1"))
        assert "OBX" in (issue.get("expression") or issue.get("location") or [""])[0], issue
