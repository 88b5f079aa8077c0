"""ORU^R01 results through the Converter: every OBX value kept on its own order's report and patient.

The patient-safety bar of a lab feed: a result under the wrong order or patient, or a
value quietly dropped, is a wrong record. Each order group's results, notes and specimens
stay with that group; every OBX-2 value type gives a value (the IG's where it has one, the
text as sent otherwise); an empty value stays empty. Synthetic Norwegian people only.
"""

from __future__ import annotations

from typing import Any

from router.pipeline.convert import Converter
from router.testing import one_bundle

MSH = "MSH|^~\\&|LAB|STOLAV^974749025^ENH|HELSEBRO|HP|20250110083000||ORU^R01^ORU_R01|LAB-CTRL-1|P|2.5.1"
PID = "PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M"
PID_2 = "PID|1||02036110182^^^NOR^FNR||HANSEN^KARI||19610302|F"


def _oru(*segments: str) -> bytes:
    return ("\r".join([MSH, *segments]) + "\r").encode("utf-8")


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _by_url(bundle: dict) -> dict[str, dict]:
    return {e["fullUrl"]: e["resource"] for e in bundle["entry"]}


def _results(converter, *obx: str) -> dict[str, dict]:
    """The Observations of one order's OBXs, by their test code (OBX-3.1)."""
    doc = one_bundle(converter, _oru(PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|PANEL^Panel^L|||20250110080000", *obx))
    return {o["code"]["coding"][0]["code"]: o for o in _of(doc, "Observation")}


class TestEachResultUnderItsOwnOrder:
    def test_results_notes_and_specimens_stay_with_their_own_order_and_patient(self, converter):
        doc = one_bundle(converter, _oru(
            PID,
            "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|HB^Hemoglobin^L|||20250110080000",
            "NTE|1||about order 1",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F",
            "NTE|1||about Hb",
            "SPM|1|^SP-1&LABSYS||BLD^Blood^L",
            PID_2,
            "OBR|1|ORD-2^DIPS|LAB-2^LABSYS|CRP^CRP^L|||20250110080000",
            "OBX|1|NM|CRP^CRP^L||7|mg/L|||||F",
            "NTE|1||about CRP",
            "SPM|1|^SP-2&LABSYS||SER^Serum^L",
            "OBX|1|NM|VOL^Volume^L||2|mL|||||F",
        ))
        urls = _by_url(doc)
        reports = {r["identifier"][0]["value"]: r for r in _of(doc, "DiagnosticReport")}
        patients = {p["identifier"][0]["value"]: u for u, p in urls.items() if p["resourceType"] == "Patient"}
        for order, patient, codes, note, specimen in (
            ("LAB-1", "15866112379", ["HB"], "about Hb", "SP-1"),
            ("LAB-2", "02036110182", ["CRP"], "about CRP", "SP-2"),
        ):
            report = reports[order]
            assert report["subject"]["reference"] == patients[patient]
            results = [urls[r["reference"]] for r in report["result"]]
            assert [o["code"]["coding"][0]["code"] for o in results] == codes
            assert [n["text"] for o in results for n in o.get("note", [])] == [note]
            assert all(o["subject"]["reference"] == patients[patient] for o in results)
            [spec] = [urls[s["reference"]] for s in report["specimen"]]
            assert spec["identifier"][0]["value"] == specimen
        [volume] = [o for o in _of(doc, "Observation") if o["code"]["coding"][0]["code"] == "VOL"]
        assert urls[volume["specimen"]["reference"]]["identifier"][0]["value"] == "SP-2"
        assert volume["subject"]["reference"] == patients["02036110182"]

    def test_a_corrected_result_in_a_later_message_is_the_same_observation(self, converter):
        first = _results(converter, "OBX|1|NM|HB^Hb^L||134|g/L|||||P")["HB"]
        later = _results(converter, "OBX|2|NM|HB^Hb^L||136|g/L|||||C")["HB"]
        assert (first["status"], later["status"]) == ("preliminary", "corrected")
        assert first["id"] == later["id"] and first["identifier"] == later["identifier"]

    def test_a_final_result_that_adds_the_placer_number_updates_the_preliminary(self, converter: Converter) -> None:
        """A lab sends a preliminary result with its own (filler) number only, the final one with the
        placer's too: the final report made a second Observation and Specimen beside the preliminary."""
        def order(placer: str, status: str) -> dict[str, Any]:
            return one_bundle(converter, _oru(
                PID,
                f"OBR|1|{placer}|LAB-1^LABSYS|HB^Hemoglobin^L|||20250110080000",
                f"OBX|1|NM|HB^Hb^L||134|g/L|||||{status}",
                "SPM|1|||BLD^Blood^L",
            ))
        first, final = order("", "P"), order("ORD-1^DIPS", "F")
        for kind in ("Observation", "Specimen", "DiagnosticReport"):
            [before], [after] = _of(first, kind), _of(final, kind)
            assert before["id"] == after["id"], kind
        assert _of(final, "Observation")[0]["status"] == "final"

    @staticmethod
    def _ids(converter: Converter, orc: str, obr_numbers: str) -> dict[str, str]:
        """The report's, its result's and its specimen's ids for one order sent with these numbers."""
        doc = one_bundle(converter, _oru(
            PID,
            *([orc] if orc else []),
            f"OBR|1|{obr_numbers}|HB^Hemoglobin^L|||20250110080000",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F",
            "SPM|1|||BLD^Blood^L",
        ))
        return {kind: _of(doc, kind)[0]["id"] for kind in ("DiagnosticReport", "Observation", "Specimen")}

    def test_the_laboratorys_number_in_orc_alone_names_the_report_and_its_results(self, converter: Converter) -> None:
        """ORU may carry the order numbers in ORC only (ORC-2/ORC-3, OBR-2/OBR-3 empty). The report
        took neither (the IG makes them its identifiers) and was named by the time, its results too:
        the final report that repeats the laboratory's number in OBR-3 made a second of each."""
        first = self._ids(converter, "ORC|RE|ORD-1^DIPS|LAB-1^LABSYS", "|")
        later = self._ids(converter, "ORC|RE|ORD-1^DIPS|LAB-1^LABSYS", "ORD-1^DIPS|LAB-1^LABSYS")
        assert first == later
        doc = one_bundle(converter, _oru(PID, "ORC|RE|ORD-1^DIPS|LAB-1^LABSYS", "OBR|1|||HB^Hemoglobin^L|||20250110080000"))
        [report] = _of(doc, "DiagnosticReport")
        assert [(i["value"], i["type"]["coding"][0]["code"]) for i in report["identifier"]] == [("LAB-1", "FILL"), ("ORD-1", "PLAC")]

    def test_a_report_and_its_results_are_one_or_two_together_in_either_order_of_arrival(self, converter: Converter) -> None:
        """The laboratory's number (OBR-3, else ORC-3) names a report and its results, the placer's only
        without it. A report first sent with the laboratory's number and later with the placer's too is
        one report, whichever segment holds the number. Sent first with the placer's number alone (HL7
        requires the laboratory's in a result) it stays apart from the later one, no stateless rule can
        join both orders: then its results and specimen stay apart with it, never half of them."""
        pairs = {
            "filler, then both": (("", "|LAB-1^LABSYS"), ("", "ORD-1^DIPS|LAB-1^LABSYS")),
            "filler in ORC, then in OBR too": (("ORC|RE||LAB-1^LABSYS", "|"), ("ORC|RE|ORD-1^DIPS|LAB-1^LABSYS", "|LAB-1^LABSYS")),
            "placer in ORC, then in OBR": (("ORC|RE|ORD-1^DIPS", "|"), ("", "ORD-1^DIPS|")),
            "placer, then both": (("", "ORD-1^DIPS|"), ("", "ORD-1^DIPS|LAB-1^LABSYS")),
        }
        for case, (first, later) in pairs.items():
            before, after = self._ids(converter, *first), self._ids(converter, *later)
            same = {kind: before[kind] == after[kind] for kind in before}
            assert len(set(same.values())) == 1, (case, same)
            if case != "placer, then both":
                assert all(same.values()), case

    def test_an_order_number_without_its_number_is_no_order_number(self, converter: Converter) -> None:
        """OBR-3 `^LABSYS` (a namespace, no number) was read as an order number: every patient's Hb
        from that laboratory hashed to one Observation, the second patient's overwriting the first's."""
        def result(pid: str) -> dict[str, str]:
            doc = one_bundle(converter, _oru(pid, "OBR|1||^LABSYS|HB^Hemoglobin^L|||20250110080000", "OBX|1|NM|HB^Hb^L||134|g/L|||||F"))
            return {kind: _of(doc, kind)[0]["id"] for kind in ("Observation", "DiagnosticReport")}
        one, other = result(PID), result(PID_2)
        assert one["Observation"] != other["Observation"]
        assert one["DiagnosticReport"] != other["DiagnosticReport"]

    def test_an_order_note_is_its_reports_note(self, converter: Converter) -> None:
        """An NTE after OBR, before the results, is about the whole order: it was listed as unmapped and
        lost. R4's DiagnosticReport has no note; R5's is carried by its cross-version extension."""
        doc = one_bundle(converter, _oru(
            PID,
            "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|HB^Hemoglobin^L|||20250110080000",
            "NTE|1||Prøven var hemolysert~tolk med forsiktighet",
            "NTE|2||",
            "NTE|3||~ringt lege",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F",
            "NTE|1||about Hb",
        ))
        [report] = _of(doc, "DiagnosticReport")
        url = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
        assert report["extension"] == [
            {"url": url, "valueAnnotation": {"text": "Prøven var hemolysert\ntolk med forsiktighet"}},
            {"url": url, "valueAnnotation": {"text": "ringt lege"}},
        ]
        [result] = _of(doc, "Observation")
        assert result["note"] == [{"text": "about Hb"}]

    def test_a_report_whose_results_are_pending_is_not_final(self, converter: Converter) -> None:
        """OBR-25 N (procedure completed, results pending) made the report `final` before any result came."""
        doc = one_bundle(converter, _oru(PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|HB^Hemoglobin^L|||20250110080000||||||||||||||||||N"))
        [report] = _of(doc, "DiagnosticReport")
        assert report["status"] == "registered"


class TestEveryValueKept:
    def test_each_value_type_gives_its_value(self, converter):
        results = _results(
            converter,
            "OBX|1|NM|NM^n^L||134|g/L|120-160|N|||F",
            "OBX|2|SN|SN^s^L||>^1.0|mg/L|>1.0|H|||F",
            "OBX|3|ST|ST^s^L||positive||||||F",
            "OBX|4|TX|TX^t^L||line one~line two||||||F",
            "OBX|5|FT|FT^f^L||one\\.br\\two||||||F",
            "OBX|6|CWE|CWE^c^L||POS^Positive^L||||||F",
            "OBX|7|DT|DT^d^L||20250101||||||F",
            "OBX|8|TS|TS^t^L||202501011230||||||F",
        )
        assert results["NM"]["valueQuantity"]["value"] == 134
        g_l = {"unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}
        assert results["NM"]["referenceRange"] == [{"text": "120-160", "low": {"value": 120, **g_l}, "high": {"value": 160, **g_l}}]
        assert results["NM"]["interpretation"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        assert (results["SN"]["valueQuantity"]["comparator"], results["SN"]["valueQuantity"]["value"]) == (">", 1.0)
        assert results["ST"]["valueString"] == "positive"
        assert results["TX"]["valueString"] == "line one\nline two"
        assert results["FT"]["valueString"] == "one\ntwo"
        assert results["CWE"]["valueCodeableConcept"]["coding"][0]["code"] == "POS"
        assert results["DT"]["valueDateTime"] == "2025-01-01"
        assert results["TS"]["valueDateTime"].startswith("2025-01-01T12:30")

    def test_a_coded_value_of_type_is_or_cf_is_a_codeable_concept(self, converter):
        """The IG maps IS and CF as it maps CWE; they gave no value at all."""
        results = _results(converter, "OBX|1|IS|IS^i^L||ABC||||||F", "OBX|2|CF|CF^c^L||X^Xray^L||||||F")
        assert results["IS"]["valueCodeableConcept"]["coding"][0]["code"] == "ABC"
        assert results["CF"]["valueCodeableConcept"]["coding"][0]["code"] == "X"

    def test_a_value_of_a_type_without_a_rule_is_kept_as_sent(self, converter):
        """TM, ID, an unknown type, or no OBX-2 at all: the value was dropped with a success."""
        results = _results(
            converter,
            "OBX|1|TM|TM^t^L||2561||||||F",
            "OBX|2|ID|ID^i^L||Y||||||F",
            "OBX|3||NONE^n^L||134|g/L|||||F",
        )
        assert results["TM"]["valueString"] == "2561"  # no time of day: kept as sent (a valid TM is valueTime)
        assert results["ID"]["valueString"] == "Y"
        assert results["NONE"]["valueString"] == "134 g/L"

    def test_a_result_without_a_value_has_none_not_its_unit(self, converter):
        """A cancelled NM result (OBX-5 empty) read "g/L" as its value."""
        [result] = _results(converter, "OBX|1|NM|HB^Hb^L|||g/L|||||X").values()
        assert result["status"] == "cancelled"
        assert not [k for k in result if k.startswith("value")]

    def test_a_result_that_cannot_be_obtained_says_why_it_has_no_value(self, converter: Converter) -> None:
        """OBX-11 X (results cannot be obtained) and N (not asked) left a result without a value and
        without a word why; the IG sets dataAbsentReason. One that carries a value (the reason as
        text) keeps it, and no dataAbsentReason: FHIR allows only one of them (obs-6)."""
        results = _results(
            converter,
            "OBX|1|NM|HB^Hb^L|||g/L|||||X",
            "OBX|2|NM|CRP^CRP^L||||||||N",
            "OBX|3|ST|K^Kalium^L||Hemolysert prøve||||||X",
        )
        dar = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
        assert results["HB"]["dataAbsentReason"]["coding"] == [{"system": dar, "code": "error", "display": "Error"}]
        assert results["CRP"]["dataAbsentReason"]["coding"] == [{"system": dar, "code": "not-asked", "display": "Not Asked"}]
        assert results["K"]["valueString"] == "Hemolysert prøve" and "dataAbsentReason" not in results["K"]
        assert results["HB"]["status"] == "cancelled"

    def test_a_structured_value_not_equal_to_a_number_is_not_that_number(self, converter: Converter) -> None:
        """SN `<>^5` (not equal to 5) was valueQuantity 5, the opposite of what the laboratory said;
        the IG keeps an SN with `<>` as text, whatever its separator."""
        results = _results(
            converter,
            "OBX|1|SN|NE^n^L||<>^5|mg/L|||||F",
            "OBX|2|SN|RANGE^r^L||<>^1^-^2|mg/L|||||F",
            "OBX|3|SN|RATIO^r^L||<>^1^:^2||||||F",
        )
        assert results["NE"]["valueString"] == "<> 5 mg/L"
        assert results["RANGE"]["valueString"] == "<> 1 - 2 mg/L"
        assert results["RATIO"]["valueString"] == "<> 1 : 2"
        for result in results.values():
            assert [k for k in result if k.startswith("value")] == ["valueString"]

    def test_a_deleted_result_is_entered_in_error(self, converter):
        [result] = _results(converter, "OBX|1|NM|HB^Hb^L||134|g/L|||||D").values()
        assert result["status"] == "entered-in-error"

    def test_every_repetition_of_a_value_is_a_component(self, converter):
        """OBX-5 repeated: the IG's components, one per repetition; every one after the first was dropped.
        A repetition `<5` is the Quantity a single `<5` is (comparator, UCUM unit), not text (review H181)."""
        results = _results(
            converter,
            "OBX|1|CWE|ORG^Organisms^L||ECOLI^E. coli^L~KLEB^Klebsiella^L||||||F",
            "OBX|2|NM|SERIES^Series^L||12~<5|g/L|||||F",
        )
        organisms, series = results["ORG"], results["SERIES"]
        assert "valueCodeableConcept" not in organisms and "valueQuantity" not in series
        assert [c["valueCodeableConcept"]["coding"][0]["code"] for c in organisms["component"]] == ["ECOLI", "KLEB"]
        assert all(c["code"]["coding"][0]["code"] == "ORG" for c in organisms["component"])
        ucum = {"unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}
        assert [c["valueQuantity"] for c in series["component"]] == [{"value": 12, **ucum}, {"comparator": "<", "value": 5, **ucum}]
        [words] = _results(converter, "OBX|1|NM|W^w^L||12~<see note|g/L|||||F")["W"]["component"][1:]
        assert words["valueString"] == "<see note g/L" and "valueQuantity" not in words


HPR = "urn:oid:2.16.578.1.12.4.1.4.4"


class TestWhoAndHowMuch:
    """The people behind a result, and a number sent with its comparator in an NM (review H178)."""

    def test_the_responsible_observer_is_the_results_performer(self, converter: Converter) -> None:
        """OBX-16 (the IG's performer, responsibleObserver) was left unread: who vouched for the
        result was lost with a success. Each repetition is a performer, by HPR number and name."""
        data = _oru(
            PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|PANEL^Panel^L|||20250110080000",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F|||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR~^BIOING^BERIT",
        )
        [result] = converter.convert(data)
        assert not [f for f in result.unmapped if f.startswith("OBX") and f.endswith("-16")]
        [obs] = _of(one_bundle(converter, data), "Observation")
        lisa, berit = obs["performer"]
        assert (lisa["identifier"]["system"], lisa["identifier"]["value"]) == (HPR, "9144900")
        assert lisa["display"] == "LISA LEGE"
        assert berit == {"display": "BERIT BIOING"}

    def test_the_principal_interpreter_is_the_reports_results_interpreter(self, converter: Converter) -> None:
        """OBR-32 (principal result interpreter, an NDL whose person is in subcomponents) is the IG's
        DiagnosticReport.resultsInterpreter: the doctor who signed the report was left unread."""
        data = _oru(
            PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|PANEL^Panel^L|||20250110080000" + "|" * 24
            + "|9144900&LEGE&LISA&&&&&&HPR",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F",
        )
        [result] = converter.convert(data)
        assert "OBR-32" not in result.unmapped
        [report] = _of(one_bundle(converter, data), "DiagnosticReport")
        [signer] = report["resultsInterpreter"]
        assert (signer["identifier"]["system"], signer["identifier"]["value"]) == (HPR, "9144900")
        assert signer["display"] == "LISA LEGE"

    def test_a_number_with_its_comparator_in_an_nm_is_a_quantity_with_that_comparator(self, converter: Converter) -> None:
        """`<5` in an NM (what many laboratories send for "below the detection limit") was text, so
        the value and its UCUM unit were lost to anything that reads numbers; it is the Quantity an
        SN `<^5` gives. Text that is no such number stays text."""
        results = _results(
            converter,
            "OBX|1|NM|LOW^l^L||<5|mg/L|||||F",
            "OBX|2|NM|HIGH^h^L||>= 10.5|mmol/L|||||F",
            "OBX|3|NM|WORD^w^L||<see note|mg/L|||||F",
        )
        assert results["LOW"]["valueQuantity"] == {
            "comparator": "<", "value": 5, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L",
        }
        assert (results["HIGH"]["valueQuantity"]["comparator"], results["HIGH"]["valueQuantity"]["value"]) == (">=", 10.5)
        assert results["WORD"]["valueString"] == "<see note mg/L"
        assert "valueString" not in results["LOW"] and "valueString" not in results["HIGH"]


class TestTimesAndRanges:
    """OBX-19 and the value types TM, DR and NR, as the v2-to-FHIR IG maps them (review H181)."""

    def test_the_time_of_the_analysis_is_the_igs_extension(self, converter: Converter) -> None:
        """OBX-19 (when the laboratory analysed the sample, often hours after it was taken) was left
        unread; the IG carries it in the observation-analysis-date-time extension."""
        data = _oru(
            PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|PANEL^Panel^L|||20250110080000",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F|||20250110070000|||||20250110095500",
        )
        [result] = converter.convert(data)
        assert not [f for f in result.unmapped if f.startswith("OBX") and f.endswith("-19")]
        [obs] = _of(one_bundle(converter, data), "Observation")
        assert obs["extension"] == [{
            "url": "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time",
            "valueDateTime": "2025-01-10T09:55:00+01:00",
        }]
        assert obs["effectiveDateTime"] == "2025-01-10T07:00:00+01:00"

    def test_a_time_a_period_and_a_numeric_range_are_the_igs_values(self, converter: Converter) -> None:
        """TM, DR and NR were text ("1230", "20250101080000 20250102"); the IG makes them valueTime,
        valuePeriod and valueRange (the range with OBX-6's unit, UCUM where it is known)."""
        results = _results(
            converter,
            "OBX|1|TM|TM^t^L||1230||||||F",
            "OBX|2|TM|SEC^t^L||123045.5+0100||||||F",
            "OBX|3|DR|DR^d^L||20250101080000^20250102||||||F",
            "OBX|4|NR|NR^n^L||3.5^5|mmol/L|||||F",
            "OBX|5|NR|OPEN^n^L||^40|U/X|||||F",
        )
        assert results["TM"]["valueTime"] == "12:30:00"
        assert results["SEC"]["valueTime"] == "12:30:45.5"
        assert results["DR"]["valuePeriod"] == {"start": "2025-01-01T08:00:00+01:00", "end": "2025-01-02"}
        ucum = {"unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
        assert results["NR"]["valueRange"] == {"low": {"value": 3.5, **ucum}, "high": {"value": 5, **ucum}}
        assert results["OPEN"]["valueRange"] == {"high": {"value": 40, "unit": "U/X"}}
        for result in results.values():
            assert len([k for k in result if k.startswith("value")]) == 1, result

    def test_a_reference_range_that_parses_has_its_low_and_high(self, converter: Converter) -> None:
        """OBX-7 was only referenceRange.text: a reader comparing the value with its range had to parse
        the text. As the IG allows when it parses, `3.5-5.0`, `<10`, `>2` (and a Norwegian `3,5 - 5,0`)
        give low and high with OBX-6's unit, UCUM where known; the text is always kept."""
        results = _results(
            converter,
            "OBX|1|NM|K^Kalium^L||4.1|mmol/L|3.5-5.0|||F",
            "OBX|2|NM|CRP^CRP^L||3|mg/L|<10|||F",
            "OBX|3|NM|EGFR^eGFR^L||90|mL/min/1.73m2|>2|||F",
            "OBX|4|NM|NA^Natrium^L||140|mmol/L|3,5 - 5,0|||F",
            "OBX|5|NM|X^x^L||1|U/X|1-2|||F",
            "OBX|6|NM|TXT^t^L||1|mg/L|se kommentar|||F",
        )
        ucum = {"system": "http://unitsofmeasure.org"}
        mmol = {"unit": "mmol/L", **ucum, "code": "mmol/L"}
        assert results["K"]["referenceRange"] == [{"text": "3.5-5.0", "low": {"value": 3.5, **mmol}, "high": {"value": 5.0, **mmol}}]
        assert results["CRP"]["referenceRange"] == [{"text": "<10", "high": {"value": 10, "unit": "mg/L", **ucum, "code": "mg/L"}}]
        assert results["EGFR"]["referenceRange"][0]["low"]["value"] == 2
        assert "high" not in results["EGFR"]["referenceRange"][0]
        assert results["NA"]["referenceRange"] == [{"text": "3,5 - 5,0", "low": {"value": 3.5, **mmol}, "high": {"value": 5.0, **mmol}}]
        assert results["X"]["referenceRange"] == [{"text": "1-2", "low": {"value": 1, "unit": "U/X"}, "high": {"value": 2, "unit": "U/X"}}]
        assert results["TXT"]["referenceRange"] == [{"text": "se kommentar"}]

    def test_the_laboratory_that_did_the_work_is_a_performer(self, converter: Converter) -> None:
        """OBX-23 (the performing organisation) was left unread: which laboratory analysed a sample is
        what a Norwegian record most needs. It is the IG's performer: an Organization by its HER-id or
        organisasjonsnummer (as an ADT's offices are), a name alone a display (review H181)."""
        data = _oru(
            PID, "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|PANEL^Panel^L|||20250110080000",
            "OBX|1|NM|HB^Hb^L||134|g/L|||||F||||||||||||Fürst Medisinsk Laboratorium^^^^^^HER^^^112233",
            "OBX|2|NM|CRP^CRP^L||3|mg/L|||||F||||||||||||Lab uten nummer",
        )
        [result] = converter.convert(data)
        assert not [f for f in result.unmapped if f.startswith("OBX") and f.endswith("-23")]
        doc = one_bundle(converter, data)
        urls = _by_url(doc)
        obs = {o["code"]["coding"][0]["code"]: o for o in _of(doc, "Observation")}
        [lab] = obs["HB"]["performer"]
        organisation = urls[lab["reference"]]
        assert organisation["resourceType"] == "Organization"
        assert organisation["identifier"] == [{"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "112233"}]
        assert organisation["name"] == "Fürst Medisinsk Laboratorium"
        assert obs["CRP"]["performer"] == [{"display": "Lab uten nummer"}]
