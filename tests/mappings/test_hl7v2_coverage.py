"""HL7 v2 coverage through the public interface: a merge (A40) reaches the record as the IG and Helsebro intend.

The engine runs on the embedded defaults (the project's own mappings) in a
thread; messages go in through the inbound exchange and the result is read back
from the record. Synthetic Norwegian people only.
"""

from __future__ import annotations

import pytest

from router.testing import isolated_settings, publish, run_engine_in_thread, wait_until

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
SURVIVOR_FNR = "15866112379"
OLD_DNR = "55866110270"  # the same person, first registered under a D-nummer

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|{ts}||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"


def _message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode("utf-8")


A01_OLD = _message(
    MSH.format(ts="20250110083000", type="ADT^A01^ADT_A01", ctrl="COV-A01"),
    "EVN|A01|20250110083000",
    f"PID|1||{OLD_DNR}^^^NOR^DNR~4471002^^^STOLAV^PI||NORDMANN^OLA||19610615|M",
    "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500",
)

A40_MERGE = _message(
    MSH.format(ts="20250111090000", type="ADT^A40^ADT_A39", ctrl="COV-A40"),
    "EVN|A40|20250111090000",
    f"PID|1||{SURVIVOR_FNR}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
    f"MRG|{OLD_DNR}^^^NOR^DNR",
)


def _record_after(tmp_path, *batches: list[bytes]):
    """Run the engine, publish each batch in turn (waiting until it settled, none dead-lettered), then yield the record."""
    from adapters.fhir.record import open_record

    settings = isolated_settings(tmp_path)
    handle = run_engine_in_thread(settings)
    try:
        sent = 0
        for batch in batches:
            publish(settings, batch)
            sent += len(batch)
            wait_until(lambda n=sent: handle.stats.messages >= n, 30, what=f"{sent} messages settled")
        assert handle.stats.dead_lettered == 0
    finally:
        handle.stop()
    record = open_record(settings)
    try:
        yield record
    finally:
        record.close()


@pytest.fixture
def merged(tmp_path):
    """The record after an A01 for the old identity and then an A40 merging it into the survivor."""
    yield from _record_after(tmp_path, [A01_OLD], [A40_MERGE])


def _is_old(patient: dict) -> bool:
    return any(i.get("system") == DNR_SYSTEM and i.get("value") == OLD_DNR and i.get("use") != "old" for i in patient.get("identifier", []))


class TestMerge:
    def test_survivor_carries_the_old_identifier_and_replaces_the_old_record(self, merged):
        """A40: the survivor (PID-3) gets MRG-1 as an old identifier and a `replaces` link to the old record."""
        [survivor] = merged.search("Patient", {"identifier": f"{FNR_SYSTEM}|{SURVIVOR_FNR}"})
        old = [i for i in survivor["identifier"] if i["value"] == OLD_DNR]
        assert old == [{"use": "old", "system": DNR_SYSTEM, "value": OLD_DNR, "type": old[0]["type"], "assigner": {"display": "NOR"}}]
        [link] = survivor["link"]
        assert link["type"] == "replaces"

    def test_old_record_is_inactive_and_replaced_by_the_survivor(self, merged):
        """The old Patient, kept at its own id (write: by-id), is active false with a `replaced-by` link."""
        [survivor] = merged.search("Patient", {"identifier": f"{FNR_SYSTEM}|{SURVIVOR_FNR}"})
        [link] = survivor["link"]
        old_id = link["other"]["reference"].split("/")[1]
        [old] = merged.search("Patient", {"_id": old_id})
        assert old["active"] is False
        assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
        history = merged.history("Patient", old_id)  # newest first
        assert len(history) == 2 and history[1]["name"][0]["family"] == "NORDMANN"  # the A01's own record, retired in place
        assert len(merged.search("Patient", {"identifier": f"{FNR_SYSTEM}|{SURVIVOR_FNR}"})) == 1

    def test_search_by_the_old_identifier_finds_the_survivor(self, merged):
        """After the merge the old D-nummer leads to the survivor."""
        found = merged.search("Patient", {"identifier": f"{DNR_SYSTEM}|{OLD_DNR}"})
        assert any(p["identifier"][0]["value"] == SURVIVOR_FNR for p in found)

    def test_search_by_the_old_identifier_finds_only_the_survivor(self, merged):
        """The old identifier finds exactly the survivor: the retired record no longer carries it."""
        found = merged.search("Patient", {"identifier": f"{DNR_SYSTEM}|{OLD_DNR}"})
        assert [p["identifier"][0]["value"] for p in found] == [SURVIVOR_FNR]
        assert not any(_is_old(p) for p in found)


# Two patients' lab results from one laboratory, with no order numbers (OBR-2, OBR-3 empty):
# the same test, so only the patient and the time tell them apart.
PATIENT_A, PATIENT_B = "15866112379", "02036110182"


def _result(ctrl: str, fnr: str, taken: str, value: str) -> bytes:
    return _message(
        MSH.format(ts=taken, type="ORU^R01^ORU_R01", ctrl=ctrl),
        f"PID|1||{fnr}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        f"OBR|1|||NPU02319^Hemoglobin;B^NPU|||{taken}",
        f"OBX|1|NM|NPU02319^Hemoglobin;B^NPU||{value}|g/L|||||F",
    )


@pytest.fixture
def results(tmp_path):
    """The record after three unnumbered Hb results: patient A today, patient B today, patient A a day later."""
    yield from _record_after(tmp_path, [_result("R1", PATIENT_A, "20250115101000", "134"), _result("R2", PATIENT_B, "20250115101000", "99"),
                                        _result("R3", PATIENT_A, "20250116101000", "128")])


def _values(record, fnr: str) -> list[float]:
    [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
    found = [o for o in record.search("Observation", {}) if o["subject"]["reference"] == f"Patient/{patient['id']}"]
    return sorted(o["valueQuantity"]["value"] for o in found)


class TestResultsWithoutOrderNumbers:
    def test_each_patient_keeps_their_own_result(self, results):
        """Another patient's result for the same test never overwrites this one's: the patient is part of a result's identity."""
        assert _values(results, PATIENT_B) == [99]
        assert 134 in _values(results, PATIENT_A)

    def test_a_later_result_is_a_result_of_its_own(self, results):
        """The same test for the same patient on another day is a second result, not a new version of the first."""
        assert _values(results, PATIENT_A) == [128, 134]
        assert len(results.search("DiagnosticReport", {})) == 3


# Two patients' reports from one laboratory whose numbers carry no namespace (OBR-2, OBR-3 without EI-2):
# patient A's order has placer 100 and filler 200, patient B's placer 555 and filler 100.
def _numbered(ctrl: str, fnr: str, placer: str, filler: str, code: str, value: str) -> bytes:
    return _message(
        MSH.format(ts="20250115101000", type="ORU^R01^ORU_R01", ctrl=ctrl),
        f"PID|1||{fnr}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        f"OBR|1|{placer}|{filler}|{code}^Test;B^NPU|||20250115080000||||||||||||||||||F",
        f"OBX|1|NM|{code}^Test;B^NPU||{value}|g/L|||||F",
    )


@pytest.fixture
def numbered(tmp_path):
    """The record after A's report (placer 100, filler 200), then B's (placer 555, filler 100)."""
    yield from _record_after(tmp_path, [_numbered("N1", PATIENT_A, "100", "200", "NPU02319", "134")],
                             [_numbered("N2", PATIENT_B, "555", "100", "NPU01459", "250")])


class TestPlacerAndFillerNumbers:
    def test_a_filler_number_is_not_another_orders_placer_number(self, numbered):
        """B's filler number 100 does not find A's report, whose placer number is 100: both reports stay, each its patient's."""
        reports = numbered.search("DiagnosticReport", {})
        assert len(reports) == 2
        patients = {p["id"]: p["identifier"][0]["value"] for p in numbered.search("Patient", {})}
        about = {r["code"]["coding"][0]["code"]: patients[r["subject"]["reference"].removeprefix("Patient/")] for r in reports}
        assert about == {"NPU02319": PATIENT_A, "NPU01459": PATIENT_B}
        assert _values(numbered, PATIENT_A) == [134] and _values(numbered, PATIENT_B) == [250]


@pytest.fixture
def one_number_each(tmp_path):
    """A's order gives only a placer number 100, B's (another patient, same test) only a filler number 100."""
    yield from _record_after(tmp_path, [_numbered("M1", PATIENT_A, "100", "", "NPU02319", "134")],
                             [_numbered("M2", PATIENT_B, "", "100", "NPU02319", "99")])


class TestDerivedIdentityParts:
    def test_an_empty_part_keeps_its_place(self, one_number_each):
        """Placer 100 and filler 100 of one test are two results: an empty part is kept in its place in the derived
        identity, not dropped (dropped, both were sender|100|test, and B's Hb overwrote A's)."""
        assert _values(one_number_each, PATIENT_A) == [134] and _values(one_number_each, PATIENT_B) == [99]
        assert len(one_number_each.search("DiagnosticReport", {})) == 2


# An admission with the patient's weight and height, an operation (PR1) with its surgeon, and the
# discharge that repeats the weight and adds a new weighing. The IG maps ADT OBX to Observation
# (the patient's, not linked to the stay) and PR1 to Procedure; they used to be dropped as unmapped.
def _adt(event: str, ctrl: str, *extra: str) -> bytes:
    return _message(
        MSH.format(ts="20250110083000", type=f"ADT^{event}^ADT_{'A03' if event == 'A03' else 'A01'}", ctrl=ctrl),
        f"EVN|{event}|20250110083000",
        f"PID|1||{PATIENT_A}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500",
        *extra,
    )


WEIGHT = "OBX|1|NM|29463-7^Body weight^LN||{kg}|kg^kilogram^UCUM|||||F|||{at}"
HEIGHT = "OBX|2|NM|8302-2^Body height^LN||181|cm^centimeter^UCUM|||||F"
PCI = "PR1|1||FNG05^Perkutan koronar intervensjon^NCSP|PCI|20250110120000||||||2222^KIRURG^KARI^^^^^^HPR||||I21.0^Akutt hjerteinfarkt^ICD10"


@pytest.fixture
def admitted_and_discharged(tmp_path):
    """The record after the A01 (weight 82.5 at 09:00, height, the PCI) and the A03 (weight 82.5 at 09:00 again, 80.1 on the 12th, the PCI again)."""
    a01 = _adt("A01", "OBS-1", WEIGHT.format(kg="82.5", at="20250110090000"), HEIGHT, PCI)
    a03 = _adt("A03", "OBS-2", PCI, WEIGHT.format(kg="82.5", at="20250110090000"), WEIGHT.format(kg="80.1", at="20250112080000").replace("OBX|1|", "OBX|2|"))
    yield from _record_after(tmp_path, [a01], [a03])


class TestAdtObservationsAndProcedures:
    def test_weights_are_the_patients_one_per_weighing(self, admitted_and_discharged):
        """The weight the A03 repeats is the A01's Observation, not a third; the new weighing is a second one.
        None is linked to the stay: the IG says an ADT cannot tell whether it was made during it."""
        record = admitted_and_discharged
        [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{PATIENT_A}"})
        observations = record.search("Observation", {"subject": f"Patient/{patient['id']}"})
        weights = sorted((o["effectiveDateTime"], o["valueQuantity"]["value"]) for o in observations if o["code"]["coding"][0]["code"] == "29463-7")
        assert weights == [("2025-01-10T09:00:00+01:00", 82.5), ("2025-01-12T08:00:00+01:00", 80.1)]
        first = next(o for o in observations if o.get("effectiveDateTime") == "2025-01-10T09:00:00+01:00")
        assert first["valueQuantity"] == {"system": "http://unitsofmeasure.org", "code": "kg", "value": 82.5, "unit": "kg"}
        assert all("encounter" not in o for o in observations)
        assert {o["code"]["coding"][0]["code"] for o in observations} == {"29463-7", "8302-2"}

    def test_the_operation_is_one_procedure_on_the_stay_with_its_surgeon(self, admitted_and_discharged):
        """PR1 → Procedure: code, time, reason, the surgeon as a Practitioner by HPR number, the patient and the stay."""
        record = admitted_and_discharged
        [procedure] = record.search("Procedure", {})  # the PCI the discharge repeats is the admission's procedure
        assert procedure["code"]["coding"] == [{"code": "FNG05", "display": "Perkutan koronar intervensjon", "system": "urn:helsebro:local:STOLAV:codesystem:NCSP"}]  # a name tables/coding-systems.yaml does not list: the sender's
        assert procedure["performedDateTime"] == "2025-01-10T12:00:00+01:00"
        assert procedure["reasonCode"][0]["coding"][0]["system"] == "urn:oid:2.16.578.1.12.4.1.1.7110"
        [encounter] = record.search("Encounter", {})
        assert procedure["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
        [performer] = procedure["performer"]
        assert performer["function"] == {"text": "Surgeon"}
        [surgeon] = record.search("Practitioner", {"identifier": "urn:oid:2.16.578.1.12.4.1.4.4|2222"})
        assert performer["actor"] == {"reference": f"Practitioner/{surgeon['id']}"}


def test_adt_observation_and_procedure_fields_are_no_longer_unmapped(tmp_path):
    """`helsebro convert --unmapped` no longer lists OBX-3/-5 or PR1-3 of an admission: they are mapped."""
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "a01.hl7"
    src.write_bytes(_adt("A01", "OBS-3", WEIGHT.format(kg="82.5", at="20250110090000"), PCI))
    helsebro = str(Path(sys.executable).parent / "helsebro")
    done = subprocess.run([helsebro, "convert", "--unmapped", str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    unmapped = done.stderr.split("unmapped:", 1)[1]
    for field in ("OBX-3", "OBX-5", "OBX-6", "OBX-14", "PR1-3", "PR1-5", "PR1-11", "PR1-15"):
        assert f"{field}," not in unmapped + "," and f"{field}\n" not in unmapped
    kinds = [e["resource"]["resourceType"] for e in __import__("json").loads(done.stdout)["entry"]]
    assert kinds.count("Observation") == 1 and kinds.count("Procedure") == 1


def test_an_adt_observation_without_its_patient_is_refused(tmp_path):
    """An A01 with no PID cannot key the weight to anyone: an OperationOutcome, exit 1, not a weight for nobody.

    The ADT mapping requires PID (requires: [PID]), so it is refused at the missing PID before the
    OBX would be refused as needing its patient."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    message = _adt("A01", "OBS-4", WEIGHT.format(kg="82.5", at="20250110090000")).split(b"\r")
    src = tmp_path / "a01.hl7"
    src.write_bytes(b"\r".join(seg for seg in message if not seg.startswith(b"PID|")))
    helsebro = str(Path(sys.executable).parent / "helsebro")
    done = subprocess.run([helsebro, "convert", str(src)], capture_output=True, text=True, timeout=120)
    [issue] = json.loads(done.stdout)["issue"]
    assert done.returncode == 1
    assert issue["location"] == ["PID"] and issue["diagnostics"] == "ADT_A01 needs a PID segment, and this message has none", issue


def _convert(tmp_path, message: bytes) -> tuple[int, dict]:
    import json
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "in.hl7"
    src.write_bytes(message)
    done = subprocess.run([str(Path(sys.executable).parent / "helsebro"), "convert", str(src)], capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_a_vaccinations_observations_are_part_of_it(tmp_path):
    """VXU: each ORDER's OBX becomes an Observation partOf that order's Immunization (v2-to-FHIR IG). Two vaccines'
    funding lines (same code, same sub-id) stay two Observations, each its own vaccine's; they used to be dropped."""
    funding = "OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1|NOR01^Nasjonalt program^NIP002||||||F|||20250115101000"
    message = _message(
        MSH.format(ts="20250115101500", type="VXU^V04^VXU_V04", ctrl="VXU-OBX"),
        f"PID|1||{PATIENT_A}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "ORC|RE|VAKS-1^VAKSINE|||CM",
        "RXA|0|1|20250115100000||J07BB02^Influensa^ATC|0.5|mL^mL^UCUM",
        funding,
        "ORC|RE|VAKS-2^VAKSINE|||CM",
        "RXA|0|1|20250115100500||J07AL02^Pneumokokk^ATC|0.5|mL^mL^UCUM",
        funding,
    )
    code, bundle = _convert(tmp_path, message)
    assert code == 0, bundle
    urls = {e["resource"]["resourceType"] + ":" + e["resource"].get("vaccineCode", {}).get("coding", [{}])[0].get("code", ""): e["fullUrl"] for e in bundle["entry"]}
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert sorted(o["partOf"][0]["reference"] for o in observations) == sorted([urls["Immunization:J07BB02"], urls["Immunization:J07AL02"]])
    assert len({o["id"] for o in observations}) == 2
    assert all(o["valueCodeableConcept"]["coding"][0]["code"] == "NOR01" for o in observations)


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5.1"])
def test_a_vaccination_without_its_orc_is_still_a_vaccination(tmp_path, version):
    """VXU: v2.3.1 and v2.4 make the order's ORC optional (`[{[ORC], RXA, [RXR], [{OBX}]}]`), and senders of
    later versions leave it out too. Each RXA is then its own vaccination with its own OBX; it used to stand in no group,
    and the message converted, exit 0, to a Patient alone: the vaccination was lost with a success."""
    message = _message(
        MSH.format(ts="20250115101500", type="VXU^V04^VXU_V04", ctrl="VXU-NO-ORC").replace("|2.5.1|", f"|{version}|"),
        f"PID|1||{PATIENT_A}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "RXA|0|1|20250115100000||J07BB02^Influensa^ATC|0.5|mL^mL^UCUM",
        "OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1|NOR01^Nasjonalt program^NIP002||||||F",
        "RXA|0|1|20250115100500||J07AL02^Pneumokokk^ATC|0.5|mL^mL^UCUM",
    )
    code, bundle = _convert(tmp_path, message)
    assert code == 0, bundle
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    vaccines = {r["vaccineCode"]["coding"][0]["code"]: url for url, r in by_url.items() if r["resourceType"] == "Immunization"}
    assert sorted(vaccines) == ["J07AL02", "J07BB02"]
    [funding] = [r for r in by_url.values() if r["resourceType"] == "Observation"]
    assert funding["partOf"] == [{"reference": vaccines["J07BB02"]}]  # the OBX after the first RXA is the first vaccination's


def test_the_fastlege_and_the_office_are_the_patients_general_practitioners(tmp_path):
    """PD1-4 (the fastlege, by HPR number) and PD1-3 (the office, by HER-id) become Patient.generalPractitioner
    (v2-to-FHIR IG PD1[Patient]); they were unmapped."""
    code, bundle = _convert(tmp_path, _adt("A01", "GP-1").replace(
        b"\rPV1|", b"\rPD1|||LEGESENTERET NORD^^^^^^HER^^^81234^|9144900^LEGE^LISA^^^^^^HPR^^^^HPR\rPV1|", 1))
    assert code == 0, bundle
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    [patient] = [r for r in by_url.values() if r["resourceType"] == "Patient"]
    gps = [by_url[g["reference"]] for g in patient["generalPractitioner"]]
    assert [(g["resourceType"], g["identifier"][0]["system"], g["identifier"][0]["value"]) for g in gps] == [
        ("Organization", "urn:oid:2.16.578.1.12.4.1.2", "81234"),
        ("Practitioner", "urn:oid:2.16.578.1.12.4.1.4.4", "9144900"),
    ]
    assert gps[0]["name"] == "LEGESENTERET NORD"


def test_a_doctor_or_office_named_without_a_number_does_not_refuse_the_admission(tmp_path):
    """`^LEGE^LISA` in PV1-7 and an office by name only: no Practitioner or Organization of their own (two Lisa Leges
    need not be one person), and references carry the names. The admission was refused ("has no identifier")."""
    message = _adt("A01", "GP-2").replace(b"\rPV1|", b"\rPD1|||LEGESENTERET NORD|^FASTLEGE^FRODE\rPV1|", 1)
    message = message.replace(b"|I|MED^301^2^STOLAV||||", b"|I|MED^301^2^STOLAV||||^LEGE^LISA", 1)
    code, bundle = _convert(tmp_path, message)
    assert code == 0, bundle
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert "Practitioner" not in kinds and kinds.count("Organization") == 1  # the sending facility only
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patient["generalPractitioner"] == [{"display": "LEGESENTERET NORD"}, {"display": "FRODE FASTLEGE"}]
    [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert [p["individual"] for p in encounter["participant"]] == [{"display": "LISA LEGE"}]


def test_a_coded_field_with_text_only_keeps_its_text(tmp_path):
    """`PV2-3 ^Brystsmerter` (a reason with no code, as legacy systems send it) is the reason's text; the coding
    needed CWE.1, so the text was read and lost without a word."""
    code, bundle = _convert(tmp_path, _adt("A01", "CWE-1", "PV2|||^Brystsmerter"))
    assert code == 0, bundle
    [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert encounter["reasonCode"] == [{"text": "Brystsmerter"}]


@pytest.mark.parametrize("structure", ["ORM^O01^ORM_O01", "OML^O21^OML_O21"])
def test_every_order_of_an_order_message_is_a_service_request(tmp_path, structure):
    """Three ORDER groups are three ServiceRequests; the OBX sent with the first (the orderer's answer) is an
    Observation in its supportingInfo (v2-to-FHIR IG). Before, ORM kept only the first order, and OML read orders
    2 and 3 as the first order's prior results: both were acknowledged as applied."""
    message = _message(
        MSH.format(ts="20250110093000", type=structure, ctrl="ORD-3"),
        f"PID|1||{PATIENT_A}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "ORC|NW|REK-1^DIPS",
        "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK",
        "OBX|1|CWE|FAST^Fastende^L||J^Ja^HL70136||||||F",
        "ORC|NW|REK-2^DIPS",
        "OBR|2|REK-2^DIPS||NPU01459^Kreatinin;P^NLK",
        "ORC|NW|REK-3^DIPS",
        "OBR|3|REK-3^DIPS||NPU19748^CRP;P^NLK",
    )
    code, bundle = _convert(tmp_path, message)
    assert code == 0, bundle
    orders = {e["resource"]["identifier"][0]["value"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"}
    assert sorted(orders) == ["REK-1", "REK-2", "REK-3"]
    [answer] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert orders["REK-1"]["supportingInfo"] == [{"reference": answer["fullUrl"]}]
    assert answer["resource"]["valueCodeableConcept"]["coding"][0]["code"] == "J"
    assert "supportingInfo" not in orders["REK-2"]


ADMITTING = "DG1|1||R07.4^Brystsmerter^ICD10|||A|||||||||1"
FINAL = "DG1|2||I21.0^Akutt hjerteinfarkt^ICD10|||F|||||||||1"
SECONDARY = "DG1|3||E11.9^Diabetes type 2^ICD10|||F|||||||||2"


@pytest.fixture
def discharged_with_diagnoses(tmp_path):
    """The record after an A01 with its admitting diagnosis and an A03 with the final ones."""
    yield from _record_after(tmp_path, [_adt("A01", "DG-1", ADMITTING)], [_adt("A03", "DG-2", FINAL, SECONDARY)])


class TestEncounterDiagnoses:
    def test_the_stay_lists_each_diagnosis_with_its_type_and_rank(self, discharged_with_diagnoses):
        """DG1[Encounter]: every DG1's Condition is on the stay, each entry pointing at the Condition
        made from its own DG1, with DG1-6 as its use (admitting → AD) and DG1-15 as its rank."""
        record = discharged_with_diagnoses
        [encounter] = record.search("Encounter", {})
        conditions = {c["id"]: c["code"]["coding"][0]["code"] for c in record.search("Condition", {})}
        listed = [
            (conditions[d["condition"]["reference"].split("/")[1]], d["use"]["coding"][0]["code"], d.get("rank"))
            for d in encounter["diagnosis"]
        ]
        # The A03 states the stay in full (a discharge replaces the Encounter): its two final diagnoses.
        assert listed == [("I21.0", "F", 1), ("E11.9", "F", 2)]
        assert set(conditions.values()) == {"R07.4", "I21.0", "E11.9"}  # the admitting diagnosis stays a Condition

    def test_an_admitting_diagnosis_is_the_fhir_admission_role(self, tmp_path):
        """DG1-6 A is diagnosis-role AD (the IG's DiagnosisType map); its rank 1 is kept."""
        code, doc = _convert(tmp_path, _adt("A01", "DG-3", ADMITTING))
        assert code == 0
        [encounter] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Encounter"]
        [condition] = [e for e in doc["entry"] if e["resource"]["resourceType"] == "Condition"]
        assert encounter["diagnosis"] == [{
            "condition": {"reference": condition["fullUrl"]},
            "use": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/diagnosis-role", "code": "AD", "display": "Admission diagnosis"}]},
            "rank": 1,
        }]


def test_a_diagnosis_no_condition_was_made_from_leaves_no_entry(tmp_path):
    """A transfer (A02) makes no Condition from a DG1 sent with it: the stay gets no diagnosis entry
    either, rather than one without its condition (which FHIR requires)."""
    message = _message(
        MSH.format(ts="20250110083000", type="ADT^A02^ADT_A02", ctrl="DG-4"),
        "EVN|A02|20250110083000",
        f"PID|1||{PATIENT_A}^^^NOR^FNR||NORDMANN^OLA||19610615|M",
        "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN",
        ADMITTING,
    )
    code, doc = _convert(tmp_path, message)
    assert code == 0
    [encounter] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert "diagnosis" not in encounter
    assert not [e for e in doc["entry"] if e["resource"]["resourceType"] == "Condition"]


@pytest.mark.parametrize("trace", [False, True], ids=["generated", "explain"])
def test_fields_read_only_for_a_dropped_diagnosis_entry_are_unmapped(trace):
    """The unmapped list the converter returns names DG1-6 and DG1-15 of an A02's DG1, which reached no
    output with the diagnosis entry dropped, and not those of the same DG1 on an A01, which keeps them."""
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    converter = Converter(load_settings(environ={}))
    pv1 = "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V25-0001^^^STOLAV^VN"
    transfer = _message(MSH.format(ts="20250110083000", type="ADT^A02^ADT_A02", ctrl="DG-5"), "EVN|A02|20250110083000", f"PID|1||{PATIENT_A}^^^NOR^FNR", pv1, ADMITTING)
    admit = _message(MSH.format(ts="20250110083000", type="ADT^A01^ADT_A01", ctrl="DG-6"), "EVN|A01|20250110083000", f"PID|1||{PATIENT_A}^^^NOR^FNR", pv1, ADMITTING)
    [moved] = converter.convert(transfer, trace=trace)
    [admitted] = converter.convert(admit, trace=trace)
    assert moved.ok and admitted.ok
    assert [f for f in moved.unmapped if f.startswith("DG1")] == ["DG1-1", "DG1-3", "DG1-6", "DG1-15"]
    assert [f for f in admitted.unmapped if f.startswith("DG1")] == ["DG1-1"]
