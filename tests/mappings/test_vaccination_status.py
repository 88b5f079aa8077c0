"""Whether a vaccination was given (VXU^V04 RXA-18/20) reaches Immunization.status, through `helsebro convert`.

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


def _rxa(*, refusal: str = "", completion: str = "", action: str = "A") -> str:
    fields = ["RXA", "0", "1", "20250115100000", "", "J07BB02^Influensa^ATC", "0.5", "mL^mL^UCUM"]
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
