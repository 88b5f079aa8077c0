"""Pharmacy orders (RDE^O11, v2.3's RDE^O01, OMP^O09) and problem lists (PPR^PC1) → MedicationRequest and Condition.

Messages are converted through the Converter over the project's own mappings
(and once through `helsebro convert`); every Bundle is validated with
fhir.resources. Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest

from router.cli import main
from router.testing import converted as _convert
from router.testing import named_sender
from router.testing import one_bundle as _one

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ATC = "urn:oid:2.16.578.1.12.4.1.1.7180"
ICD10 = "urn:oid:2.16.578.1.12.4.1.1.7110"
ICPC2 = "urn:oid:2.16.578.1.12.4.1.1.7170"
ROUTE = "urn:oid:2.16.578.1.12.4.1.1.7477"  # Volven 7477 Administrasjonsvei
UCUM = "http://unitsofmeasure.org"
PATIENT_A, PATIENT_B = "15866112379", "31929945681"

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|METAVISION|STOLAV-APOTEK|{ts}||{type}|{ctrl}|P|{version}|||AL|NE|NOR|UNICODE UTF-8"
PV1 = "PV1|1|I|MED^301^2^STOLAV||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250310082500"
ORDERER = "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"


def _message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode("utf-8")


def _pid(fnr: str) -> str:
    return f"PID|1||{fnr}^^^NOR^FNR||NORDMANN^OLA^K||19610615|M"


def _rde(*order: str, fnr: str = PATIENT_A, ctrl: str = "RDE-1", pv1: bool = True) -> bytes:
    msh = MSH.format(ts="20250312081500", type="RDE^O11^RDE_O11", ctrl=ctrl, version="2.5.1")
    return _message(msh, _pid(fnr), *([PV1] if pv1 else []), *order)


PARACETAMOL = (
    f"ORC|NW|LM-5001^DIPS||GRP-12^DIPS|||||20250312081000|||{ORDERER}",
    "TQ1|1||QID||||20250312080000||S",  # the order's own timing (TIMING), superseded by the encoded one
    "RXO|N02BE01^Paracetamol^ATC|1||g",
    "RXR|IV^Intravenøs^HL70162",  # the requested route (ORDER_DETAIL), not the encoded one
    "RXE||N02BE01^Paracetamol^ATC|1|2|g^gram^UCUM|53^Tablett^7448|^Ta med et glass vann|||40|tablett|0|||||||4^g||||||||R52^Smerte^ICD10",
    "NTE|1||Ikke over 4 g i døgnet",
    "TQ1|1||BID^to ganger daglig^HL70335||||20250312090000|20250319090000|R||Gis morgen og kveld",
    "RXR|53^Oral bruk^7477",
)


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _url_of(bundle: dict, kind: str) -> str:
    [url] = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    return url


def _refused(converter, data: bytes) -> dict:
    [doc] = _convert(converter, data)
    assert doc["resourceType"] == "OperationOutcome", doc
    return doc["issue"][0]


class TestEncodedOrder:
    def test_rxe_becomes_a_medication_request_of_the_patient_and_stay(self, converter):
        """RDE^O11: the RXE is a MedicationRequest with its ATC code, ORC numbers, status, time and orderer, for the PID's Patient."""
        bundle = _one(converter, _rde(*PARACETAMOL))
        [order] = _of(bundle, "MedicationRequest")
        MedicationRequest.model_validate(order)
        assert order["medicationCodeableConcept"]["coding"] == [{"system": ATC, "code": "N02BE01", "display": "Paracetamol"}]
        assert order["status"] == "active" and order["intent"] == "order"
        assert order["authoredOn"] == "2025-03-12T08:10:00+01:00"  # Europe/Oslo, winter
        assert order["requester"] == {"identifier": {"system": HPR, "value": "9144900"}, "display": "LISA LEGE"}
        [placer] = order["identifier"]
        assert placer["value"] == "LM-5001" and placer["type"]["coding"][0]["code"] == "PLAC"
        assert order["subject"]["reference"] == _url_of(bundle, "Patient")
        assert order["encounter"]["reference"] == _url_of(bundle, "Encounter")
        [patient] = _of(bundle, "Patient")
        assert any(i["system"] == FNR and i["value"] == PATIENT_A for i in patient["identifier"])
        assert order["reasonCode"][0]["coding"][0] == {"code": "R52", "display": "Smerte", "system": ICD10}
        assert order["note"] == [{"text": "Ikke over 4 g i døgnet"}]

    def test_the_dose_route_and_timing_are_the_encoded_ones(self, converter):
        """The RXE's own RXR and TIMING_ENCODED TQ1 give route and timing, not the RXO's RXR or the order's TQ1."""
        [order] = _of(_one(converter, _rde(*PARACETAMOL)), "MedicationRequest")
        [dosage] = order["dosageInstruction"]
        assert dosage["route"]["coding"] == [{"system": ROUTE, "code": "53", "display": "Oral bruk"}]
        assert dosage["timing"]["code"]["coding"][0]["code"] == "BID"
        assert dosage["timing"]["repeat"]["boundsPeriod"] == {"start": "2025-03-12T09:00:00+01:00", "end": "2025-03-19T09:00:00+01:00"}
        assert dosage["text"] == "Gis morgen og kveld"
        assert order["priority"] == "routine"
        dose = dosage["doseAndRate"][0]["doseRange"]
        assert (dose["low"]["value"], dose["high"]["value"], dose["low"]["code"], dose["low"]["system"]) == (1, 2, "g", UCUM)
        assert dosage["maxDosePerPeriod"]["numerator"]["value"] == 4
        assert order["dispenseRequest"] == {"quantity": {"value": 40, "unit": "tablett"}, "numberOfRepeatsAllowed": 0}

    def test_an_infusions_give_rate_is_its_rate(self, converter):
        """RXE-23 in RXE-24's unit (100 mL/h) is the ordered dose's rateQuantity, beside the amount (RXE-3)."""
        infusion = ("ORC|NW|LM-5003^DIPS||||||||||" + ORDERER, "RXE||B05BB01^Natriumklorid^ATC|1000||mL^mL^UCUM" + "|" * 18 + "100|mL/h^milliliter per time^UCUM")
        [order] = _of(_one(converter, _rde(*infusion)), "MedicationRequest")
        MedicationRequest.model_validate(order)
        [dose_and_rate] = order["dosageInstruction"][0]["doseAndRate"]
        assert dose_and_rate["doseRange"]["low"]["value"] == 1000
        assert dose_and_rate["rateQuantity"] == {"system": UCUM, "code": "mL/h", "value": 100, "unit": "mL/h"}

    def test_a_give_rate_in_a_unit_no_table_lists_keeps_its_unit(self, converter):
        """A rate in a unit the dose-unit table does not list (dråper/min) keeps it as written, with no UCUM claimed."""
        infusion = ("ORC|NW|LM-5004^DIPS||||||||||" + ORDERER, "RXE||B05BB01^Natriumklorid^ATC|500||mL" + "|" * 18 + "20|dråper/min")
        [order] = _of(_one(converter, _rde(*infusion)), "MedicationRequest")
        assert order["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"] == {"value": 20, "unit": "dråper/min"}

    def test_each_order_group_is_its_own_request(self, converter):
        """Two ORDER groups are two MedicationRequests, each with its own drug and route."""
        second = ("ORC|NW|LM-5002^DIPS||||||||||" + ORDERER, "RXE||B01AB05^Enoksaparin^ATC|40||mg^^UCUM", "TQ1|1||Q1D||||20250312180000", "RXR|62^Subkutan bruk^7477")
        orders = _of(_one(converter, _rde(*PARACETAMOL, *second)), "MedicationRequest")
        drugs = {o["medicationCodeableConcept"]["coding"][0]["code"]: o["dosageInstruction"][0]["route"]["coding"][0]["code"] for o in orders}
        assert drugs == {"N02BE01": "53", "B01AB05": "62"}

    def test_v23_rde_o01_maps_as_rde_o11(self, converter):
        """A v2.3 RDE^O01 (no MSH-9.3) takes RDE_O11's mapping; RXE-1 (TQ) gives the timing, ORC-5 DC stops the order."""
        msh = MSH.format(ts="20250314120000", type="RDE^O01", ctrl="RDE-23", version="2.3")
        bundle = _one(converter, _message(msh, _pid(PATIENT_B), f"ORC|DC|LM-7001^DIPS|||DC||||20250314115500|||{ORDERER}",
                                          "RXE|1^Q8H^^20250310080000^20250314120000^R|J01CE02^Fenoksymetylpenicillin^ATC|660||mg", "RXR|PO^Oral^HL70162"))
        [order] = _of(bundle, "MedicationRequest")
        assert order["status"] == "stopped"
        timing = order["dosageInstruction"][0]["timing"]
        assert timing["repeat"]["boundsPeriod"]["start"] == "2025-03-10T08:00:00+01:00"
        assert timing["code"]["coding"][0]["code"] == "Q8H"


class TestOrderIdentity:
    def test_the_same_order_again_is_the_same_resource(self, converter):
        """Sent twice (another control id), the order is one MedicationRequest: same id, same conditional update."""
        first = _of(_one(converter, _rde(*PARACETAMOL, ctrl="A")), "MedicationRequest")[0]
        again = _of(_one(converter, _rde(*PARACETAMOL, ctrl="B")), "MedicationRequest")[0]
        assert first["id"] == again["id"]

    def test_two_patients_unnumbered_orders_are_two_resources(self, converter):
        """Without ORC numbers the identity is derived with the patient: the same drug at the same time for two patients is two orders."""
        unnumbered = (f"ORC|NW|||||||||||{ORDERER}", "RXE||N02BE01^Paracetamol^ATC|1||g")
        a = _of(_one(converter, _rde(*unnumbered, fnr=PATIENT_A, pv1=False)), "MedicationRequest")[0]
        b = _of(_one(converter, _rde(*unnumbered, fnr=PATIENT_B, pv1=False)), "MedicationRequest")[0]
        again = _of(_one(converter, _rde(*unnumbered, fnr=PATIENT_A, pv1=False, ctrl="RDE-2")), "MedicationRequest")[0]
        assert a["id"] != b["id"] and a["id"] == again["id"]
        assert a["identifier"][0]["system"] == "urn:helsebro:identity"


class TestRefusals:
    def test_an_rxe_without_a_give_code_is_refused_at_rxe_2(self, converter):
        """No RXE-2 means no medication: the message is refused naming RXE-2, never written as invalid FHIR."""
        issue = _refused(converter, _rde("ORC|NW|LM-5009^DIPS", "RXE|||1||g"))
        assert issue["expression"] == ["RXE-2"]
        assert issue["diagnostics"].startswith("MedicationRequest.medication[x] is required, but RXE-2 gives no value")

    def test_a_give_code_sent_as_text_only_is_a_medication(self, converter):
        """RXE-2 with only its text (`^Paracetamol 500 mg`) still makes the order, with the text as the medication."""
        [order] = _of(_one(converter, _rde("ORC|NW|LM-5010^DIPS", "RXE||^Paracetamol 500 mg tablett|1||g")), "MedicationRequest")
        assert order["medicationCodeableConcept"] == {"text": "Paracetamol 500 mg tablett"}

    def test_an_invalid_national_id_is_refused_at_its_field(self, converter):
        """A fødselsnummer whose check digits fail refuses the order at PID-3[1].1."""
        issue = _refused(converter, _rde(*PARACETAMOL, fnr="15866112378"))
        assert issue["expression"] == ["PID-3[1].1"]

    def test_a_patient_without_an_identifier_is_refused(self, converter):
        """A PID naming nobody refuses the order: it is never filed without its patient."""
        msh = MSH.format(ts="20250312081500", type="RDE^O11^RDE_O11", ctrl="RDE-X", version="2.5.1")
        issue = _refused(converter, _message(msh, "PID|1||||NORDMANN^OLA", *PARACETAMOL))
        assert "has no identifier" in issue["diagnostics"]


def _omp(*order: str, fnr: str = PATIENT_A) -> bytes:
    msh = MSH.format(ts="20250315101500", type="OMP^O09^OMP_O09", ctrl="OMP-1", version="2.5.1")
    return _message(msh, _pid(fnr), PV1, *order)


class TestPharmacyOrder:
    def test_each_rxo_is_an_original_order(self, converter):
        """OMP^O09: each ORDER's RXO is a MedicationRequest (intent original-order) with its dose range, substitution and timing."""
        bundle = _one(converter, _omp(
            f"ORC|NW|LM-8001^DIPS|||||||20250315100000|||{ORDERER}", "TQ1|1||TID||||20250315120000|20250322120000|R",
            "RXO|J01CE02^Fenoksymetylpenicillin^ATC|660||mg|53^Tablett^7448||||G||30|tablett|0", "NTE|1||Tas på tom mage", "RXR|53^Oral bruk^7477",
            f"ORC|NW|LM-8002^DIPS|||||||20250315100000|||{ORDERER}", "TQ1|1||Q6H^^HL70335||||20250315120000||S|Ved temperatur over 38,5",
            "RXO|N02BE01^Paracetamol^ATC|1|1|g", "RXR|53^Oral bruk^7477"))
        orders = {o["identifier"][0]["value"]: o for o in _of(bundle, "MedicationRequest")}
        assert set(orders) == {"LM-8001", "LM-8002"}
        pc = orders["LM-8001"]
        MedicationRequest.model_validate(pc)
        assert pc["intent"] == "original-order" and pc["status"] == "active"
        assert pc["medicationCodeableConcept"]["coding"][0] == {"code": "J01CE02", "display": "Fenoksymetylpenicillin", "system": ATC}
        assert pc["substitution"]["allowedCodeableConcept"]["coding"][0]["code"] == "G"
        assert pc["dosageInstruction"][0]["doseAndRate"][0]["doseRange"]["low"] == {"system": UCUM, "code": "mg", "value": 660, "unit": "mg"}
        assert pc["dosageInstruction"][0]["timing"]["code"]["coding"][0]["code"] == "TID"
        assert pc["note"] == [{"text": "Tas på tom mage"}]
        assert pc["subject"]["reference"] == _url_of(bundle, "Patient")
        para = orders["LM-8002"]
        assert para["priority"] == "stat"
        assert para["dosageInstruction"][0]["additionalInstruction"] == [{"text": "Ved temperatur over 38,5"}]

    def test_an_rxo_without_a_give_code_is_refused_at_rxo_1(self, converter):
        """No RXO-1 means no medication: refused naming RXO-1."""
        issue = _refused(converter, _omp("ORC|NW|LM-8009^DIPS", "RXO||1||g"))
        assert issue["expression"] == ["RXO-1"]
        assert issue["diagnostics"].startswith("MedicationRequest.medication[x] is required, but RXO-1 gives no value")


def _ppr(*problems: str, fnr: str = PATIENT_A, ctrl: str = "PPR-1") -> bytes:
    msh = MSH.format(ts="20250316090000", type="PPR^PC1^PPR_PC1", ctrl=ctrl, version="2.5.1")
    return _message(msh, _pid(fnr), PV1, *problems)


DIABETES = "PRB|AD|20250316085500|E11.9^Diabetes mellitus type 2 uten komplikasjoner^ICD10|PRB-3001^DIPS|||||||||confirmed|active||20180401"
HYPERTENSION = "PRB|AD|20250316085500|K86^Hypertensjon ukomplisert^ICPC-2||||20150101||20240601"  # no PRB-4; resolved


class TestProblemAdd:
    def test_prb_becomes_a_problem_list_condition(self, converter):
        """PPR^PC1: PRB-3 is the code (ICD-10 under its Volven OID), PRB-4 the identifier, PRB-13/14 the statuses, PRB-16 the onset."""
        bundle = _one(converter, _ppr(DIABETES, "NTE|1||Kostregulert"))
        [problem] = _of(bundle, "Condition")
        Condition.model_validate(problem)
        assert problem["code"]["coding"] == [{"code": "E11.9", "display": "Diabetes mellitus type 2 uten komplikasjoner", "system": ICD10}]
        assert problem["identifier"][0]["value"] == "PRB-3001"
        assert problem["clinicalStatus"]["coding"][0]["code"] == "active"
        assert problem["verificationStatus"]["coding"][0]["code"] == "confirmed"
        assert problem["category"][0]["coding"][0]["code"] == "problem-list-item"
        assert problem["onsetDateTime"] == "2018-04-01"
        assert problem["recordedDate"] == "2025-03-16T08:55:00+01:00"  # PRB-2 of the AD action
        assert problem["subject"]["reference"] == _url_of(bundle, "Patient")
        assert problem["encounter"]["reference"] == _url_of(bundle, "Encounter")
        assert problem["note"] == [{"text": "Kostregulert"}]

    def test_a_resolution_date_makes_the_problem_resolved(self, converter):
        """PRB-9 without a life cycle status is a resolved problem with its abatement date (FHIR con-4)."""
        [problem] = _of(_one(converter, _ppr(HYPERTENSION)), "Condition")
        assert problem["code"]["coding"][0]["system"] == ICPC2
        assert problem["clinicalStatus"]["coding"][0]["code"] == "resolved"
        assert problem["abatementDateTime"] == "2024-06-01" and problem["recordedDate"] == "2015-01-01"

    def test_problems_without_an_instance_id_belong_to_their_patient(self, converter):
        """Without PRB-4 the identity is derived with the patient: the same problem again is one Condition, another patient's another."""
        a = _of(_one(converter, _ppr(HYPERTENSION, fnr=PATIENT_A)), "Condition")[0]
        again = _of(_one(converter, _ppr(HYPERTENSION, fnr=PATIENT_A, ctrl="PPR-2")), "Condition")[0]
        b = _of(_one(converter, _ppr(HYPERTENSION, fnr=PATIENT_B)), "Condition")[0]
        assert a["id"] == again["id"] and a["id"] != b["id"]

    def test_two_problems_are_two_conditions(self, converter):
        """Each PROBLEM group is its own Condition."""
        assert len(_of(_one(converter, _ppr(DIABETES, HYPERTENSION)), "Condition")) == 2

    def test_an_onset_that_is_no_date_is_refused_at_its_field(self, converter):
        """PRB-16 must be an HL7 date/time: text there refuses the message at PRB-16."""
        issue = _refused(converter, _ppr("PRB|AD|20250316085500|K86^Hypertensjon^ICPC-2|PRB-1^DIPS||||||||||||i fjor"))
        assert issue["expression"] == ["PRB-16[1].1"]

    def test_a_time_padded_with_spaces_is_read(self, converter):
        """`20040629 ` (a sender pads the field before the next delimiter) is the date, not a refusal."""
        [problem] = _of(_one(converter, _ppr("PRB|AD|20250316085500|K86^Hypertensjon^ICPC-2|PRB-1^DIPS||||||||||||20040629 ")), "Condition")
        assert problem["onsetDateTime"] == "2004-06-29"


class TestThroughTheCli:
    def test_helsebro_convert_writes_the_bundle(self, tmp_path, capsys):
        """`helsebro convert` on an RDE file exits 0 and prints a Bundle holding the MedicationRequest."""
        path = tmp_path / "rde.hl7"
        path.write_bytes(_rde(*PARACETAMOL))
        assert main(["convert", str(path)]) == 0
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["medicationCodeableConcept"]["coding"][0]["code"] for r in _of(doc, "MedicationRequest")] == ["N02BE01"]


# The public corpus's messages of these types (../shared/corpus/hl7v2): what they gave when these mappings came.
CORPUS_BUNDLES = {"RDE_O11": 26, "RDE_O01": 3, "OMP_O09": 17, "PPR_PC1": 15}


def _corpus(shared: Path, types: set[str]) -> list[tuple[str, Path]]:
    root = shared / "corpus" / "hl7v2"
    rows = [r.split("\t") for r in (root / "CORPUS_INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return sorted({(r[2], root / r[0].split("#")[0]) for r in rows if r[2] in types})


class TestCorpus:
    @pytest.mark.corpus
    def test_corpus_orders_and_problems_convert(self, shared_dir, converter):
        """The corpus's RDE, OMP and PPR messages give valid Bundles, or OperationOutcomes that say what is wrong."""
        counts: Counter[str] = Counter()
        for kind, path in _corpus(shared_dir, set(CORPUS_BUNDLES)):
            for doc in _convert(converter, named_sender(path.read_bytes())):
                if doc["resourceType"] == "Bundle":
                    counts[kind] += 1
                    continue
                issue = doc["issue"][0]
                said = issue["diagnostics"]
                assert issue.get("expression") or "share the identity" in said or "is not in this message" in said, (path.name, issue)
        for kind, least in CORPUS_BUNDLES.items():
            assert counts[kind] >= least, (kind, counts)
