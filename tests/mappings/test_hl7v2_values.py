"""HL7 v2 coded values, entity identifiers, referrals and the stay's doctors, through the Converter and `helsebro convert`.

A code of only blanks is no code (CWE.1, CWE.4); every Coding.system is a URI, a coding-system
name the table does not list included (HL7nnnn: HL7's v2 table; any other: the sender's local
code system); an EI's system comes from its namespace or universal id, never from EI.4; a
referral keeps its own notes and finds its referring provider in any of the first four PRDs;
and the Encounter an order, result, document, problem or vaccination names lists its
attending doctor by a Practitioner, as an admission does. Every Bundle is validated with
fhir.resources. Synthetic Norwegian people only; the public corpus is read from ../shared.
"""

from __future__ import annotations

import json
import re

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main
from router.testing import converted as _convert
from router.testing import one_bundle as _one

PATIENT = "15866112379"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
ATND = "ATND"

MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||{type}|CTRL-1|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = f"PID|1||{PATIENT}^^^NOR^FNR||NORDMANN^OLA^K||19610615|M"
PV1 = "|".join(["PV1", "1", "I", "MED^301^2^STOLAV", "", "", "", "{doctor}"] + [""] * 11 + ["V25-0001^^^STOLAV^VN"])
DOCTOR = "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def _message(type_: str, *segments: str) -> bytes:
    return ("\r".join([MSH.format(type=type_), *segments]) + "\r").encode("utf-8")


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _refused(converter, data: bytes) -> dict:
    [doc] = _convert(converter, data)
    assert doc["resourceType"] == "OperationOutcome", doc
    return doc["issue"][0]


def _oru(obr4: str, obx3: str = "NPU02319^Hemoglobin^NLK") -> bytes:
    return _message("ORU^R01^ORU_R01", PID, f"OBR|1|ORD-1^DIPS|LAB-1^LABSYS|{obr4}|||20250110080000", f"OBX|1|NM|{obx3}||134|g/L|||||F")


def _report_code(converter, obr4: str) -> dict:
    [report] = _of(_one(converter, _oru(obr4)), "DiagnosticReport")
    return report["code"]


class TestBlankCodes:
    def test_a_code_of_only_blanks_makes_no_coding(self, converter):
        """CWE.1 of only blanks gives no Coding (none with a display and a system but no code): the text is the concept's, as for an empty CWE.1."""
        assert _report_code(converter, "   ^Hemoglobin^NLK") == _report_code(converter, "^Hemoglobin^NLK") == {"text": "Hemoglobin"}

    def test_a_blank_alternate_code_makes_no_second_coding(self, converter):
        """CWE.4 of only blanks gives no alternate Coding; the first stays."""
        code = _report_code(converter, "NPU02319^Hemoglobin^NLK^  ^Hb^L")
        assert code == {"coding": [{"code": "NPU02319", "display": "Hemoglobin", "system": NLK}]}

    @pytest.mark.parametrize("blank", ["   ^^NLK", "  "])
    def test_a_required_code_of_only_blanks_is_refused_as_an_empty_one(self, converter, blank):
        """A required CodeableConcept whose code is only blanks is refused naming its field, with the reason an empty one gets."""
        empty = _refused(converter, _oru("^^NLK"))
        issue = _refused(converter, _oru(blank))
        assert issue["expression"] == empty["expression"] == ["OBR-4"]
        assert issue["diagnostics"] == empty["diagnostics"]
        assert issue["diagnostics"].startswith("DiagnosticReport.code is required, but OBR-4 gives no value")

    def test_a_result_code_of_only_blanks_takes_its_orders_code_as_an_empty_one_does(self, converter):
        """An OBX-3 of only blanks is no code: the result takes its order's code (OBR-4), as with OBX-3 empty."""
        [blank] = _of(_one(converter, _oru("NPU02319^Hemoglobin^NLK", obx3="   ")), "Observation")
        [empty] = _of(_one(converter, _oru("NPU02319^Hemoglobin^NLK", obx3="")), "Observation")
        assert blank["code"] == empty["code"] == {"coding": [{"code": "NPU02319", "display": "Hemoglobin", "system": NLK}]}


class TestCodingSystems:
    @pytest.mark.parametrize(("name", "system"), [
        ("L", "urn:helsebro:local:STOLAV:codesystem:L"),  # the sender's own codes
        ("99ZLAB", "urn:helsebro:local:STOLAV:codesystem:99ZLAB"),
        ("HL70078", "http://terminology.hl7.org/CodeSystem/v2-0078"),
        ("HL70487", "http://terminology.hl7.org/CodeSystem/v2-0487"),
        ("I9C", "http://hl7.org/fhir/sid/icd-9-cm"),
        ("sct", "http://snomed.info/sct"),  # table 0396 names are not case-sensitive
        ("NLK", NLK),
        # names the public corpus sends, by their THO records
        ("cdcgs1vis", "https://www.cdc.gov/vaccines/hcp/vis/index.html"),
        ("CDCPHINVS", "https://phinvads.cdc.gov/vads/ViewCodeSystem.action?id=2.16.840.1.114222.4.5.274"),
        ("ISO639", "urn:ietf:bcp:47"),
        ("ICDO", "http://terminology.hl7.org/CodeSystem/icd-o"),
        ("ICD-10-CM", "http://hl7.org/fhir/sid/icd-10-cm"),
        ("NIP001", "urn:helsebro:local:STOLAV:codesystem:NIP001"),  # no URI in THO
    ])
    def test_every_coding_system_name_becomes_a_uri(self, converter, name, system):
        """A CWE.3 name becomes a URI: the table's for a name it lists, HL7's v2 table for HL7nnnn, the sender's local code system otherwise."""
        code = _report_code(converter, f"X1^Test^{name}")
        assert code["coding"] == [{"code": "X1", "display": "Test", "system": system}]

    def test_two_senders_local_codes_are_two_code_systems(self, converter):
        """The local code system `L` of two sending facilities are two systems: one hospital's code K1 is not the other's."""
        other = _oru("K1^Test^L").replace(b"STOLAV^974749025^ENH", b"AHUS^983971636^ENH")
        [mine] = _of(_one(converter, _oru("K1^Test^L")), "DiagnosticReport")
        [theirs] = _of(_one(converter, other), "DiagnosticReport")
        assert mine["code"]["coding"][0]["system"] != theirs["code"]["coding"][0]["system"]

    def test_the_referral_type_names_hl7_table_0281(self, converter):
        """RF1-3 `HL70281` (referral type) is HL7's v2 table 0281, as a URI."""
        [referral] = _of(_one(converter, _ref(RP)), "ServiceRequest")
        assert {"code": "Med", "display": "Medical", "system": "http://terminology.hl7.org/CodeSystem/v2-0281"} in [
            c for cat in referral["category"] for c in cat["coding"]]

    def test_every_coding_system_in_the_corpus_is_a_uri(self, shared_dir, tmp_path, capsys):
        """`helsebro convert` over the public HL7 v2 corpus writes no Coding.system that is not a URI."""
        main(["convert", str(shared_dir / "corpus" / "hl7v2")])
        bad: set[str] = set()

        def walk(node):
            if isinstance(node, dict):
                if "code" in node and "system" in node and not URI.match(node["system"]):  # a Coding (or a coded Quantity)
                    bad.add(node["system"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        for line in capsys.readouterr().out.splitlines():
            walk(json.loads(line))
        assert bad == set()


class TestEntityIdentifiers:
    @pytest.mark.parametrize("ei", ["ALG-1^DIPS", "ALG-1^DIPS^2.16.578.1.12.4.1.7.9^ISO"])
    def test_an_allergys_iam_7_is_under_its_namespace(self, converter, ei):
        """IAM-7 is identified under its namespace EI.2, whether or not EI.3/EI.4 name a universal id (never `…:DIPS:ISO`)."""
        iam = f"IAM|1|FA^Matallergi^HL70127|91935009^Peanøttallergi^SCT|||A|{ei}"
        doc = _one(converter, _message("ADT^A60^ADT_A60", "EVN|A60|20250110083000", PID, iam))
        [allergy] = _of(doc, "AllergyIntolerance")
        assert allergy["identifier"] == [{"system": "urn:helsebro:local:DIPS:id", "value": "ALG-1"}]

    def test_an_allergy_id_with_only_a_universal_id_is_under_that_oid(self, converter):
        """IAM-7 without a namespace but with an ISO OID (EI.3, EI.4 ISO) is identified under urn:oid:<EI.3>."""
        iam = "IAM|1|FA^Matallergi^HL70127|91935009^Peanøttallergi^SCT|||A|ALG-1^^2.16.578.1.12.4.1.7.9^ISO"
        [allergy] = _of(_one(converter, _message("ADT^A60^ADT_A60", "EVN|A60|20250110083000", PID, iam)), "AllergyIntolerance")
        assert allergy["identifier"] == [{"system": "urn:oid:2.16.578.1.12.4.1.7.9", "value": "ALG-1"}]

    def test_an_order_number_with_a_universal_id_is_the_same_order(self, converter):
        """ORC-2 sent with and without EI.3/EI.4 gives one placer identifier system, so one ServiceRequest."""
        def order(orc2: str) -> dict:
            data = _message("ORM^O01^ORM_O01", PID, f"ORC|NW|{orc2}", "OBR|1|||NPU02319^Hemoglobin^NLK")
            [request] = _of(_one(converter, data), "ServiceRequest")
            return request

        plain, full = order("100^DIPS"), order("100^DIPS^2.16.578.1.12.4.1.7.9^ISO")
        assert plain["identifier"][0]["system"] == full["identifier"][0]["system"] == "urn:helsebro:local:DIPS:id"
        assert plain["id"] == full["id"]


RF1 = "RF1|P^Pending^HL70283|R^Routine^HL70280|Med^Medical^HL70281||O^Outpatient^HL70284|HEN-5001^INFODOC|20250201|20250801|20250201"
RP = "PRD|RP^Referring Provider^HL70286|FASTLEGE^FRIDA|||||9144901^HPR"
RT = "PRD|RT^Referred to Provider^HL70286|||||||||ST. OLAVS HOSPITAL KARDIOLOGISK POLIKLINIKK^^^^^^ENH^^^974749025"
CP = "PRD|CP^Consulting Provider^HL70286|KONSULENT^KARI|||||9144902^HPR"


def _ref(*prds: str, notes: tuple[str, ...] = ()) -> bytes:
    return _message("REF^I12^REF_I12", RF1, *prds, PID, "DG1|1||I20.9^Angina pectoris^ICD10|||W",
                    "OBR|1|||NPU02319^Hemoglobin^NLK", "NTE|1||Resultatets merknad", "OBX|1|NM|NPU02319^Hemoglobin^NLK||134|g/L|||||F",
                    "NTE|1||Svarets merknad", "PV1|1|O", *notes)


class TestReferral:
    @pytest.mark.parametrize("order", [(RP, RT, CP), (RT, CP, RP), (RT, CP, CP, RP)])
    def test_the_referring_provider_is_the_requester_wherever_his_prd_is(self, converter, order):
        """The PRD with role RP is the requester whether it is the first, third or fourth PRD; RT and CP are performers."""
        [referral] = _of(_one(converter, _ref(*order)), "ServiceRequest")
        assert referral["requester"] == {"identifier": {"system": HPR, "value": "9144901"}, "display": "FRIDA FASTLEGE"}
        performers = [p.get("identifier", {}).get("value") or p["display"] for p in referral["performer"]]
        assert set(performers) == {"9144902", "974749025"}

    def test_the_referrals_own_notes_are_its_notes_and_its_results_notes_are_not(self, converter):
        """The NTEs at the end of a REF^I12 are the ServiceRequest's notes, one per comment line; the NTEs of its OBR and OBX are not."""
        doc = _one(converter, _ref(RP, RT, notes=("NTE|1||Brystsmerter ved anstrengelse~siste tre måneder", "NTE|2||Haster")))
        [referral] = _of(doc, "ServiceRequest")
        assert referral["note"] == [{"text": "Brystsmerter ved anstrengelse"}, {"text": "siste tre måneder"}, {"text": "Haster"}]

    def test_a_referral_without_notes_of_its_own_has_none(self, converter):
        """A referral whose only NTEs belong to its results gets no note."""
        [referral] = _of(_one(converter, _ref(RP, RT)), "ServiceRequest")
        assert "note" not in referral

    def test_the_notes_of_every_result_are_left_to_the_results(self, converter):
        """With two OBR groups, each with OBR and OBX notes, and a stay (PV1, PV2), the notes are exactly the message's closing NTEs, in order."""
        results = ("OBR|1|||NPU02319^Hemoglobin^NLK", "NTE|1||Rekvirentens merknad", "OBX|1|NM|NPU02319^Hemoglobin^NLK||134|g/L|||||F",
                   "NTE|1||Under referanseområdet~kontrolleres", "OBX|2|NM|NPU01960^Leukocytter^NLK||7.1|10*9/L|||||F",
                   "OBR|2|||NPU19748^CRP^NLK", "NTE|1||Tatt ikke-fastende", "OBX|1|NM|NPU19748^CRP^NLK||12|mg/L|||||F", "NTE|1||Svarets merknad")
        data = _message("REF^I12^REF_I12", RF1, RP, "CTD|CP|KONTAKT^KARI", RT, PID, "DG1|1||I20.9^Angina pectoris^ICD10|||W", *results,
                        "PV1|1|O", "PV2|||^Brystsmerter", "NTE|1||Henvisningens merknad", "NTE|2||Haster~innen to uker")
        [referral] = _of(_one(converter, data), "ServiceRequest")
        assert referral["note"] == [{"text": "Henvisningens merknad"}, {"text": "Haster"}, {"text": "innen to uker"}]

    def test_a_referral_without_results_or_stay_keeps_the_note_after_its_diagnoses(self, converter):
        """Without OBR or PV1, the NTE after the last DG1 is the message's own, and the referral's note."""
        data = _message("REF^I12^REF_I12", RF1, RP, RT, PID, "DG1|1||I20.9^Angina pectoris^ICD10|||W", "NTE|1||Vurder koronar angiografi")
        [referral] = _of(_one(converter, data), "ServiceRequest")
        assert referral["note"] == [{"text": "Vurder koronar angiografi"}]

    @pytest.mark.parametrize(("sample", "note"), [("REF-I12-01", "Lab test"), ("REF-I12-02", "Lab test"),
                                                  ("REF-I14-01", "Lab test"), ("REF-I14-02", "Laboratoy test")])
    def test_every_corpus_referral_notes_its_closing_nte_only(self, converter, shared_dir, sample, note):
        """Each public REF sample (v2.8, notes after its OBR, OBX and PRT too) gets its closing NTE as its one note."""
        path = shared_dir / "corpus" / "hl7v2" / "microsoft" / "SampleData-Hl7v2" / f"{sample}.hl7"
        [referral] = _of(_one(converter, path.read_bytes()), "ServiceRequest")
        assert referral["note"] == [{"text": note}]

    def test_helsebro_convert_keeps_the_corpus_referrals_own_note(self, shared_dir, capsys):
        """`helsebro convert` on the public REF^I12 sample notes its closing NTE only, not its five result NTEs."""
        path = shared_dir / "corpus" / "hl7v2" / "microsoft" / "SampleData-Hl7v2" / "REF-I12-02.hl7"
        assert main(["convert", str(path)]) == 0
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        Bundle.model_validate(doc)
        [referral] = _of(doc, "ServiceRequest")
        assert referral["note"] == [{"text": "Lab test"}]


def _stay_messages(doctor: str) -> dict[str, bytes]:
    pv1 = PV1.format(doctor=doctor)
    return {
        "ORM^O01": _message("ORM^O01^ORM_O01", PID, pv1, "ORC|NW|ORD-1^DIPS", "OBR|1|ORD-1^DIPS||NPU02319^Hemoglobin^NLK"),
        "OML^O21": _message("OML^O21^OML_O21", PID, pv1, "ORC|NW|ORD-1^DIPS", "OBR|1|ORD-1^DIPS||NPU02319^Hemoglobin^NLK"),
        "OMG^O19": _message("OMG^O19^OMG_O19", PID, pv1, "ORC|NW|ORD-1^DIPS", "OBR|1|ORD-1^DIPS||RGTHORAX^Røntgen thorax^L"),
        "OMP^O09": _message("OMP^O09^OMP_O09", PID, pv1, "ORC|NW|LM-1^DIPS", "RXO|N02BE01^Paracetamol^ATC|500||mg"),
        "RDE^O11": _message("RDE^O11^RDE_O11", PID, pv1, "ORC|NW|LM-1^DIPS", "RXE|^^^20250110|N02BE01^Paracetamol^ATC|500||mg"),
        "PPR^PC1": _message("PPR^PC1^PPR_PC1", PID, pv1, "PRB|AD|20250110|R51^Hodepine^ICD10|PRB-1^DIPS"),
        "MDM^T02": _message("MDM^T02^MDM_T02", "EVN|T02|20250110083000", PID, pv1,
                            "TXA|1|DS|TX|20250110080000||||||||DOC-1^DIPS||||||AU", "OBX|1|TX|||Epikrise"),
        "VXU^V04": _message("VXU^V04^VXU_V04", PID, pv1, "ORC|RE", "RXA|0|1|20250110||J07BX03^Covid-19-vaksine^ATC|0.3|mL"),
        "ORU^R01": _oru("NPU02319^Hemoglobin^NLK").replace(PID.encode(), f"{PID}\r{pv1}".encode()),
    }


class TestTheStaysDoctor:
    @pytest.mark.parametrize("kind", sorted(_stay_messages(DOCTOR)))
    def test_the_attending_doctor_of_the_stay_is_a_practitioner(self, converter, kind):
        """The Encounter an order, result, document, problem or vaccination names has its ATND participant by the PV1-7 Practitioner, created only when missing."""
        doc = _one(converter, _stay_messages(DOCTOR)[kind])
        [encounter] = _of(doc, "Encounter")
        [participant] = [p for p in encounter["participant"] if p["type"][0]["coding"][0]["code"] == ATND]
        entries = {e["fullUrl"]: e for e in doc["entry"]}
        practitioner = entries[participant["individual"]["reference"]]
        assert practitioner["resource"]["identifier"] == [{"system": HPR, "value": "9144900"}]
        assert practitioner["request"]["method"] == "POST"  # context, like the stay: never overwrites the ADT feed's

    @pytest.mark.parametrize("kind", ["ORM^O01", "RDE^O11", "VXU^V04"])
    def test_a_doctor_without_a_number_is_named(self, converter, kind):
        """A PV1-7 doctor without an HPR number is a participant by name, as in an admission: no participant is left with only a type."""
        doc = _one(converter, _stay_messages("^LEGE^LISA")[kind])
        [encounter] = _of(doc, "Encounter")
        assert [p["individual"] for p in encounter["participant"]] == [{"display": "LISA LEGE"}]
        assert _of(doc, "Practitioner") == []

    def test_no_participant_in_the_corpus_is_only_a_type(self, shared_dir, capsys):
        """`helsebro convert` over the public HL7 v2 corpus writes no Encounter participant without an individual."""
        main(["convert", str(shared_dir / "corpus" / "hl7v2")])
        empty = []
        for line in capsys.readouterr().out.splitlines():
            doc = json.loads(line)
            for encounter in _of(doc, "Encounter") if doc["resourceType"] == "Bundle" else []:
                empty += [p for p in encounter.get("participant", []) if "individual" not in p]
        assert empty == []


class TestPersonNameParts:
    """XPN per the v2-to-FHIR IG's XPN[HumanName] table: degree and professional suffix are suffixes, XPN.12/13 the name's period."""

    def _names(self, converter, xpn: str) -> list[dict]:
        [patient] = _of(_one(converter, _message("ADT^A01^ADT_A01", "EVN|A01|20250110083000", f"PID|1||{PATIENT}^^^NOR^FNR||{xpn}||19610615|M", PV1.format(doctor=DOCTOR))), "Patient")
        return patient["name"]

    def test_degree_and_professional_suffix_follow_the_suffix(self, converter):
        """XPN.4, then XPN.6 (degree), then XPN.14 (professional suffix): the IG's suffix[1], [2], [3]."""
        [name] = self._names(converter, "NORDMANN^OLA^K^JR^DR^PHD^L^^^^^^^MNF")
        assert name["suffix"] == ["JR", "PHD", "MNF"]
        assert name["prefix"] == ["DR"] and name["use"] == "official"

    def test_effective_and_expiration_dates_are_the_names_period(self, converter):
        """XPN.12 and XPN.13 (TS) are period.start and period.end, times as the message's other times (Europe/Oslo)."""
        [name] = self._names(converter, "NORDMANN^OLA^^^^^M^^^^^20010203^20200405120000")
        assert name["period"] == {"start": "2001-02-03", "end": "2020-04-05T12:00:00+02:00"}

    def test_a_name_without_them_has_no_period_and_no_suffix(self, converter):
        """Nothing is invented: a plain name stays plain."""
        [name] = self._names(converter, "NORDMANN^OLA^K")
        assert "period" not in name and "suffix" not in name



class TestNumbersJsonCannotCarry:
    """A result JSON cannot hold as a number is refused at its field, never a traceback, never a value dropped."""

    ORDER = "OBR|1|A1|B1|NPU02319^Hb^NPU"

    @pytest.mark.parametrize("value", ["1234567890123456789012345", "-9223372036854775809", "1" * 400 + ".5", "1" * 400])
    def test_helsebro_convert_refuses_it_at_obx_5(self, value, tmp_path, capsys):
        path = tmp_path / "big.hl7"
        path.write_bytes(_message("ORU^R01^ORU_R01", PID, self.ORDER, f"OBX|1|NM|NPU02319^Hb^NPU||{value}|g/L|||||F"))
        assert main(["convert", str(path)]) == 1
        outcome = json.loads(capsys.readouterr().out)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["location"] == ["OBX-5[1].1"]
        assert value not in outcome["issue"][0]["diagnostics"]

    @pytest.mark.parametrize(("value", "number"), [("9223372036854775807", 9223372036854775807), ("-9223372036854775808", -9223372036854775808), ("0.5", 0.5), ("100000000000000000000", 1e20)])
    def test_the_largest_numbers_it_can_carry_are_kept(self, converter, value, number):
        bundle = _one(converter, _message("ORU^R01^ORU_R01", PID, self.ORDER, f"OBX|1|NM|NPU02319^Hb^NPU||{value}|g/L|||||F"))
        assert [o["valueQuantity"]["value"] for o in _of(bundle, "Observation")] == [number]
