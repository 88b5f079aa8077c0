"""Whether a vaccination was given (VXU^V04 RXA-18/20) reaches Immunization.status, and how much, through `helsebro convert`.

A vaccine the patient refused must never read as given: a registry or a clinician would
skip the next dose. RXA-20 says it (RE, NA: not-done); a sender that gives only the refusal
reason (RXA-18) and leaves RXA-20 empty says it too. Synthetic Norwegian people only.
"""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main

MSH = "MSH|^~\\&|VAKSINE|STOLAV^974749025^ENH|SYSVAK|FHI|20250115101500||VXU^V04^VXU_V04|VXU-0001|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = "PID|1||17857540093^^^NOR^FNR||BERG^ANNE||19850717|F"


def _rxa(*, refusal: str = "", completion: str = "", action: str = "A", units: str = "mL^mL^UCUM") -> str:
    fields = ["RXA", "0", "1", "20250115100000", "", "J07BB02^Influensa^ATC", "0.5", units]
    fields += [""] * 10 + [refusal, "", completion, action]
    return "|".join(fields)


def _immunization(tmp_path, capsys, rxa: str) -> dict:
    path = tmp_path / "vxu.hl7"
    path.write_bytes(("\r".join([MSH, PID, "ORC|RE", rxa]) + "\r").encode("utf-8"))
    assert main(["convert", str(path)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    bundle = json.loads(line)
    Bundle.model_validate(bundle)
    [immunization] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Immunization"]
    return immunization


class TestImmunizationStatus:
    @pytest.mark.parametrize(("completion", "status"), [("CP", "completed"), ("PA", "completed"), ("RE", "not-done"), ("NA", "not-done"), ("", "completed")])
    def test_rxa_20_gives_the_status(self, tmp_path, capsys, completion, status):
        """RXA-20 as the IG's CompletionStatus map says; none sent is a given vaccine."""
        assert _immunization(tmp_path, capsys, _rxa(completion=completion))["status"] == status

    def test_a_refusal_reason_without_completion_status_is_not_done(self, tmp_path, capsys):
        """RXA-18 (refusal reason) with RXA-20 empty is a refused vaccine, not a given one."""
        immunization = _immunization(tmp_path, capsys, _rxa(refusal="00^Pasienten nektet^NIP002"))
        assert immunization["status"] == "not-done"
        assert immunization["statusReason"]["coding"][0]["code"] == "00"

    def test_a_deleted_refusal_is_entered_in_error(self, tmp_path, capsys):
        """RXA-21 D outranks everything: the record was wrong."""
        immunization = _immunization(tmp_path, capsys, _rxa(refusal="00^Pasienten nektet^NIP002", action="D"))
        assert immunization["status"] == "entered-in-error"


class TestImmunizationDose:
    @pytest.mark.parametrize(
        ("units", "code"),
        [("mL^mL^UCUM", "mL"), ("ML^ml^ISO+", "mL"), ("ml^milliliter", "mL"), ("mcg^mikrogram^ISO+", "ug"), ("IE^internasjonale enheter", "[IU]")],
    )
    def test_the_dose_unit_is_the_ucum_code_it_means(self, tmp_path, capsys, units, code):
        """RXA-7 as written (ML, mcg, IE: ISO+ or no system) is the UCUM code it means, as a medication's dose unit is, never claimed UCUM as sent."""
        dose = _immunization(tmp_path, capsys, _rxa(completion="CP", units=units))["doseQuantity"]
        assert (dose["value"], dose["system"], dose["code"], dose["unit"]) == (0.5, "http://unitsofmeasure.org", code, units.split("^")[0])

    def test_a_ucum_unit_the_table_does_not_list_is_kept_as_sent(self, tmp_path, capsys):
        """A unit the sender says is UCUM (RXA-7.3) and the dose-unit table does not list keeps its code as sent."""
        dose = _immunization(tmp_path, capsys, _rxa(completion="CP", units="mg/dL^mg/dL^UCUM"))["doseQuantity"]
        assert (dose["system"], dose["code"]) == ("http://unitsofmeasure.org", "mg/dL")

    def test_a_unit_neither_ucum_nor_listed_claims_no_system(self, tmp_path, capsys):
        """A unit no table lists and the sender does not call UCUM (dose) stays in unit alone."""
        dose = _immunization(tmp_path, capsys, _rxa(completion="CP", units="dose^dose^ISO+"))["doseQuantity"]
        assert dose == {"value": 0.5, "unit": "dose"}
