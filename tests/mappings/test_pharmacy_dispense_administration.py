"""Pharmacy dispenses (RDS^O13) and administrations (RAS^O17) → MedicationDispense and MedicationAdministration.

Each names the order it fills: the MedicationRequest RDE^O11 makes for the same ORC numbers,
under the same reference, made from the ENCODING group's RXE only when the record lacks it.
Messages are converted through the Converter over the project's own mappings (and the public
RDS samples once through `helsebro convert`); every Bundle is validated with fhir.resources.
Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationdispense import MedicationDispense

from router.cli import main
from router.testing import converted as _convert
from router.testing import one_bundle as _one

ATC = "urn:oid:2.16.578.1.12.4.1.1.7180"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ROUTE = "urn:oid:2.16.578.1.12.4.1.1.7477"  # Volven 7477 Administrasjonsvei
UCUM = "http://unitsofmeasure.org"
PATIENT = "15866112379"

MSH = "MSH|^~\\&|{app}|STOLAV^974749025^ENH|DIPS|STOLAV|20250312143000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = f"PID|1||{PATIENT}^^^NOR^FNR||NORDMANN^OLA^K||19610615|M"
ORDERER = "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
PHARMACIST = "9144893^APOTEKER^KARI^^^^^^HPR^^^^HPR"
NURSE = "6024416^SYKEPLEIER^SIGRID^^^^^^HPR^^^^HPR"

ORC_RDE = f"ORC|NW|LM-5001^DIPS||GRP-12^DIPS|||||20250312081000|||{ORDERER}"
ORC_RE = f"ORC|RE|LM-5001^DIPS|AP-90001^APOTEK|GRP-12^DIPS|||||20250312081000|||{ORDERER}"
ENCODED = (
    "RXE||N02BE01^Paracetamol^ATC|1|2|g^gram^UCUM|53^Tablett^7448|^Ta med et glass vann|||40|tablett|0",
    "TQ1|1||BID^to ganger daglig^HL70335||||20250312090000|20250319090000|R",
    "RXR|53^Oral bruk^7477",
)
RXD = f"RXD|1|N02BE01^Paracetamol 500 mg tablett^ATC|20250312142500|40|tablett|53^Tablett^7448|RX-778812||Generisk bytte|{PHARMACIST}|G|4^g"


def _message(type_: str, *segments: str, app: str = "DIPS", ctrl: str = "CTRL-1") -> bytes:
    return ("\r".join([MSH.format(app=app, type=type_, ctrl=ctrl), *segments]) + "\r").encode("utf-8")


def _rde() -> bytes:
    return _message("RDE^O11^RDE_O11", PID, ORC_RDE, *ENCODED)


def _rds(*order: str) -> bytes:
    return _message("RDS^O13^RDS_O13", PID, *order, app="APOTEK")


def _rxa(rxa20: str = "CP", *, rxa4: str = "", rxa5: str = "N02BE01^Paracetamol 500 mg tablett^ATC", rxa21: str = "A") -> str:
    fields = ["RXA", "0", "1", "20250312090500", rxa4, rxa5, "1", "g^gram^UCUM", "", "", NURSE] + [""] * 9 + [rxa20, rxa21]
    return "|".join(fields)


def _ras(*administration: str, encoded: bool = True) -> bytes:
    order = (ORC_RE, *ENCODED) if encoded else (ORC_RE,)
    return _message("RAS^O17^RAS_O17", PID, *order, *administration, app="METAVISION")


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _entry(bundle: dict, kind: str) -> dict:
    [entry] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
    return entry


def _refused(converter, data: bytes) -> dict:
    [doc] = _convert(converter, data)
    assert doc["resourceType"] == "OperationOutcome", doc
    return doc["issue"][0]


class TestDispense:
    def test_the_dispense_names_the_order_rde_made(self, converter):
        """RDS^O13: authorizingPrescription is the very reference RDE^O11 gives the MedicationRequest of the same ORC-2."""
        order = _entry(_one(converter, _rde()), "MedicationRequest")
        bundle = _one(converter, _rds(ORC_RE, *ENCODED, RXD, "RXR|53^Oral bruk^7477"))
        [dispense] = _of(bundle, "MedicationDispense")
        MedicationDispense.model_validate(dispense)
        assert dispense["authorizingPrescription"] == [{"reference": order["fullUrl"]}]
        assert _entry(bundle, "MedicationRequest")["fullUrl"] == order["fullUrl"]

    def test_the_order_is_created_when_missing_and_never_written_over(self, converter):
        """The dispense's RXE makes the MedicationRequest only if the record has none of its identity (POST ifNoneExist, not PUT)."""
        request = _entry(_one(converter, _rds(ORC_RE, *ENCODED, RXD)), "MedicationRequest")["request"]
        assert request == {"method": "POST", "url": "MedicationRequest", "ifNoneExist": "identifier=urn:helsebro:local:DIPS:id|LM-5001"}

    def test_the_dispense_gives_drug_amount_time_pharmacist_and_substitution(self, converter):
        """RXD-2 the drug, RXD-4/5 the amount, RXD-3 the time (Europe/Oslo), RXD-10 the pharmacist, RXD-11 G a generic swap."""
        [dispense] = _of(_one(converter, _rds(ORC_RE, *ENCODED, RXD)), "MedicationDispense")
        assert dispense["status"] == "completed"
        assert dispense["medicationCodeableConcept"]["coding"] == [{"system": ATC, "code": "N02BE01", "display": "Paracetamol 500 mg tablett"}]
        assert dispense["quantity"] == {"value": 40, "unit": "tablett"}
        assert dispense["whenHandedOver"] == "2025-03-12T14:25:00+01:00"
        assert dispense["performer"] == [{"actor": {"identifier": {"system": HPR, "value": "9144893"}, "display": "KARI APOTEKER"}}]
        assert dispense["substitution"]["wasSubstituted"] is True
        assert dispense["substitution"]["type"]["coding"][0]["code"] == "G"
        assert dispense["dosageInstruction"][0]["maxDosePerPeriod"]["numerator"] == {"system": UCUM, "code": "g", "value": 4, "unit": "g"}

    def test_the_route_is_the_dispenses_own(self, converter):
        """The RXR after the RXD is the dispense's route, not the ENCODING group's."""
        encoded = (*ENCODED[:2], "RXR|64^Intravenøs bruk^7477")
        [dispense] = _of(_one(converter, _rds(ORC_RE, *encoded, RXD, "RXR|53^Oral bruk^7477")), "MedicationDispense")
        assert dispense["dosageInstruction"][0]["route"]["coding"] == [{"system": ROUTE, "code": "53", "display": "Oral bruk"}]

    def test_without_encoding_the_order_is_named_by_its_placer_number(self, converter):
        """An RDS with no RXE makes no MedicationRequest; the dispense names it by the placer identifier RDE gives it."""
        order = _of(_one(converter, _rde()), "MedicationRequest")[0]
        bundle = _one(converter, _rds(ORC_RE, RXD))
        assert _of(bundle, "MedicationRequest") == []
        [dispense] = _of(bundle, "MedicationDispense")
        [placer] = [i for i in order["identifier"] if i["type"]["coding"][0]["code"] == "PLAC"]
        assert dispense["authorizingPrescription"] == [{"type": "MedicationRequest", "identifier": {"system": placer["system"], "value": placer["value"]}}]

    def test_an_order_detail_without_its_nte_keeps_the_encoding(self, converter):
        """An RXR right after the RXO (v2.5.1 wants an NTE first; senders leave it out) still leaves the RXE its ENCODING group."""
        detail = ("RXO|N02BE01^Paracetamol^ATC|1||g", "RXR|53^Oral bruk^7477")
        bundle = _one(converter, _rds(ORC_RE, *detail, *ENCODED, RXD))
        [order] = _of(bundle, "MedicationRequest")
        assert order["dispenseRequest"]["quantity"] == {"value": 40, "unit": "tablett"}  # RXE-10/11: the encoded order
        assert _of(bundle, "MedicationDispense")[0]["authorizingPrescription"] == [{"reference": _entry(bundle, "MedicationRequest")["fullUrl"]}]

    def test_a_dispense_without_a_drug_is_refused_at_rxd_2(self, converter):
        """An RXD with no RXD-2 is refused naming RXD-2: a MedicationDispense needs its medication."""
        issue = _refused(converter, _rds(ORC_RE, *ENCODED, RXD.replace("|N02BE01^Paracetamol 500 mg tablett^ATC|", "||")))
        assert issue["location"] == ["RXD-2"]
        assert "medication" in issue["diagnostics"]

    def test_rds_o13_without_msh_9_3_is_routed(self, converter):
        """A sender that leaves MSH-9.3 empty reaches RDS_O13 through structures.yaml."""
        bundle = _one(converter, _message("RDS^O13", PID, ORC_RE, *ENCODED, RXD, app="APOTEK"))
        assert len(_of(bundle, "MedicationDispense")) == 1

    def test_helsebro_convert_links_the_public_sample_to_its_order(self, shared_dir, capsys):
        """`helsebro convert` on the public RDS-O13-01 (v2.8, no NTE before its RXR) makes the order and the dispense naming it."""
        path = shared_dir / "corpus" / "hl7v2" / "microsoft" / "SampleData-Hl7v2" / "RDS-O13-01.hl7"
        assert main(["convert", str(path)]) == 0
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        Bundle.model_validate(doc)
        order = _entry(doc, "MedicationRequest")
        [dispense] = _of(doc, "MedicationDispense")
        assert dispense["authorizingPrescription"] == [{"reference": order["fullUrl"]}]


class TestAdministration:
    @pytest.mark.parametrize(
        ("rxa20", "status"),
        [("CP", "completed"), ("PA", "stopped"), ("RE", "not-done"), ("NA", "not-done"), ("", "completed"), ("XX", "unknown")],
    )
    def test_rxa_20_gives_the_status(self, converter, rxa20, status):
        """RXA-20 (table 0322) gives MedicationAdministration.status; no RXA-20 is a dose given, a code outside 0322 unknown."""
        [given] = _of(_one(converter, _ras(_rxa(rxa20), "RXR|53^Oral bruk^7477")), "MedicationAdministration")
        MedicationAdministration.model_validate(given)
        assert given["status"] == status

    def test_a_deleted_administration_is_entered_in_error(self, converter):
        """RXA-21 D (delete) makes the administration entered-in-error, whatever RXA-20 says."""
        [given] = _of(_one(converter, _ras(_rxa("CP", rxa21="D"), "RXR|53^Oral bruk^7477")), "MedicationAdministration")
        assert given["status"] == "entered-in-error"

    def test_the_administration_names_the_order_rde_made(self, converter):
        """RAS^O17: request is the reference RDE^O11 gives the MedicationRequest of the same ORC-2."""
        order = _entry(_one(converter, _rde()), "MedicationRequest")
        bundle = _one(converter, _ras(_rxa(), "RXR|53^Oral bruk^7477"))
        [given] = _of(bundle, "MedicationAdministration")
        assert given["request"] == {"reference": order["fullUrl"]}
        assert _entry(bundle, "MedicationRequest")["request"]["method"] == "POST"

    def test_without_encoding_the_order_is_named_by_its_placer_number(self, converter):
        """A RAS with no RXE names the order by its placer identifier and makes no MedicationRequest."""
        bundle = _one(converter, _ras(_rxa(), "RXR|53^Oral bruk^7477", encoded=False))
        assert _of(bundle, "MedicationRequest") == []
        [given] = _of(bundle, "MedicationAdministration")
        assert given["request"] == {"type": "MedicationRequest", "identifier": {"system": "urn:helsebro:local:DIPS:id", "value": "LM-5001"}}

    def test_every_rxa_is_an_administration_with_dose_time_and_nurse(self, converter):
        """Each RXA of the order is its own MedicationAdministration: RXA-6/7 the dose, RXA-3/4 the time, RXA-10 who gave it."""
        infusion = _rxa("CP", rxa4="20250312093500").replace("20250312090500", "20250312090000")
        bundle = _one(converter, _ras(_rxa(), "RXR|53^Oral bruk^7477", infusion, "RXR|64^Intravenøs bruk^7477"))
        first, second = _of(bundle, "MedicationAdministration")
        assert first["effectiveDateTime"] == "2025-03-12T09:05:00+01:00"
        assert second["effectivePeriod"] == {"start": "2025-03-12T09:00:00+01:00", "end": "2025-03-12T09:35:00+01:00"}
        assert first["dosage"]["dose"] == {"system": UCUM, "code": "g", "value": 1, "unit": "g"}
        assert second["dosage"]["route"]["coding"][0]["code"] == "64"
        assert first["performer"][0]["actor"] == {"identifier": {"system": HPR, "value": "6024416"}, "display": "SIGRID SYKEPLEIER"}
        assert first["id"] != second["id"]

    def test_an_administration_without_a_drug_is_refused_at_rxa_5(self, converter):
        """An RXA with no RXA-5 is refused naming RXA-5: a MedicationAdministration needs its medication."""
        issue = _refused(converter, _ras(_rxa(rxa5=""), "RXR|53^Oral bruk^7477"))
        assert issue["location"] == ["RXA-5"]


class TestDispenseInTheRecord:
    """The create-only order, applied: what the record holds after RDE^O11 and then RDS^O13 (SQLite)."""

    def _record(self, tmp_path):
        from adapters.fhir.record import open_record
        from router.settings import Settings

        return open_record(Settings(record_url=f"sqlite:///{tmp_path}/record.sqlite3", data_dir=tmp_path / "data"))

    def test_a_dispense_never_writes_over_the_prescribers_order(self, converter, tmp_path):
        """The pharmacy's RXE (a generic swap: another drug, another dose) leaves the stored order as RDE^O11 wrote it,
        and the dispense's authorizingPrescription resolves to that stored order."""
        swapped = (ENCODED[0].replace("N02BE01^Paracetamol", "N02BE51^Paracetamol kombinasjoner").replace("|1|2|g", "|2|2|g"), *ENCODED[1:])
        record = self._record(tmp_path)
        try:
            record.apply(_one(converter, _rde()))
            [before] = record.search("MedicationRequest", {})
            record.apply(_one(converter, _rds(ORC_RE, *swapped, RXD)))
            [after] = record.search("MedicationRequest", {})
            [dispense] = record.search("MedicationDispense", {})
        finally:
            record.close()
        assert after == before  # same content, same version: the POST ifNoneExist found it and wrote nothing
        assert after["medicationCodeableConcept"]["coding"][0]["code"] == "N02BE01"
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{after['id']}"}]

    def test_a_dispense_before_its_order_creates_the_order_once(self, converter, tmp_path):
        """RDS first: its RXE makes the order, so the dispense points at something; the RDE after it updates that one order."""
        record = self._record(tmp_path)
        try:
            record.apply(_one(converter, _rds(ORC_RE, *ENCODED, RXD)))
            record.apply(_one(converter, _rde()))
            orders = record.search("MedicationRequest", {})
            [dispense] = record.search("MedicationDispense", {})
        finally:
            record.close()
        assert len(orders) == 1
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{orders[0]['id']}"}]


class TestAdministrationIdentity:
    def test_a_corrected_time_updates_the_administration_it_corrects(self, converter):
        """RXA-21 U with another RXA-3 (the nurse corrects when the dose was given) reaches the same
        MedicationAdministration through the order and RXA-2: keyed on the time, the dose looked given twice."""
        first = _entry(_one(converter, _ras(_rxa())), "MedicationAdministration")
        corrected = _rxa(rxa21="U").replace("|20250312090500|", "|20250312091500|", 1)
        again = _entry(_one(converter, _ras(corrected)), "MedicationAdministration")
        assert again["fullUrl"] == first["fullUrl"]
        assert again["resource"]["effectiveDateTime"] == "2025-03-12T09:15:00+01:00"

    def test_two_administrations_of_one_order_are_two(self, converter):
        """The counter (RXA-2) tells one order's administrations apart, whatever their times."""
        first = _entry(_one(converter, _ras(_rxa())), "MedicationAdministration")
        second = _entry(_one(converter, _ras(_rxa().replace("RXA|0|1|", "RXA|0|2|", 1))), "MedicationAdministration")
        assert second["fullUrl"] != first["fullUrl"]


class TestAnotherPatientsOrder:
    """A create-only order found by its number must be this patient's (SQLite record)."""

    OTHER = "PID|1||01015000232^^^NOR^FNR||HANSEN^KARI||19500101|F"  # synthetic

    def test_a_dispense_naming_another_patients_order_is_refused(self, converter, tmp_path):
        """RDE for patient A, then an RDS for patient B with A's order number: refused whole (nothing of B written),
        not a dispense of B's pointing at A's prescription."""
        from router.errors import InvalidContent

        record = TestDispenseInTheRecord()._record(tmp_path)
        try:
            record.apply(_one(converter, _rde()))
            other = _message("RDS^O13^RDS_O13", self.OTHER, ORC_RE, *ENCODED, RXD, app="APOTEK")
            with pytest.raises(InvalidContent, match="belongs to another patient"):
                record.apply(_one(converter, other))
            assert record.search("MedicationDispense", {}) == []
            assert len(record.search("Patient", {})) == 1
        finally:
            record.close()

    def test_an_order_of_a_patient_merged_into_this_one_is_theirs(self, converter, tmp_path):
        """After an A40 merges A into B, a dispense for B with the order A's number names is B's own order."""
        merge = _message(
            "ADT^A40^ADT_A39", "EVN|A40|20250312100000", self.OTHER, f"MRG|{PATIENT}^^^NOR^FNR", ctrl="MERGE-1",
        )
        record = TestDispenseInTheRecord()._record(tmp_path)
        try:
            record.apply(_one(converter, _rde()))
            record.apply(_one(converter, merge))
            record.apply(_one(converter, _message("RDS^O13^RDS_O13", self.OTHER, ORC_RE, *ENCODED, RXD, app="APOTEK")))
            [dispense] = record.search("MedicationDispense", {})
            [order] = record.search("MedicationRequest", {})
        finally:
            record.close()
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{order['id']}"}]


# v2.3's dispense and administration (RDS^O01, RAS^O01; v2.4 renamed them O13 and O17): no MSH-9.3, the order's
# timing in RXE-1 (TQ) rather than TQ1, and RAS's RXAs with their one RXR straight in the ORDER (no ADMINISTRATION).
MSH_23 = "MSH|^~\\&|{app}|STOLAV^974749025^ENH|DIPS|STOLAV|20250312143000||{type}|{ctrl}|P|{version}"
ENCODED_23 = (
    "RXE|1^BID^^20250312090000^20250319090000^R|N02BE01^Paracetamol^ATC|1|2|g^gram^UCUM|53^Tablett^7448|^Ta med et glass vann|||40|tablett|0",
    "RXR|53^Oral bruk^7477",
)
RXD_23 = f"RXD|1|N02BE01^Paracetamol 500 mg tablett^ATC|20250312142500|40|tablett|53^Tablett^7448|RX-778812||Generisk bytte|{PHARMACIST}|G"


def _v23(type_: str, *segments: str, app: str, ctrl: str = "CTRL-23", version: str = "2.3") -> bytes:
    return ("\r".join([MSH_23.format(app=app, type=type_, ctrl=ctrl, version=version), *segments]) + "\r").encode("utf-8")


def _rds_o01(*order: str, pid: str = PID, type_: str = "RDS^O01", version: str = "2.3") -> bytes:
    return _v23(type_, pid, *order, app="APOTEK", version=version)


def _ras_o01(*order: str, pid: str = PID) -> bytes:
    return _v23("RAS^O01", pid, *order, app="METAVISION")


class TestV23Dispense:
    """RDS^O01 takes RDS_O13's mapping: the same order, the same dispense, the same reference between them."""

    def test_the_dispense_names_the_order_rde_made(self, converter):
        """A v2.3 RDS^O01 with its RXE: the order created only when missing (POST ifNoneExist), under the fullUrl
        RDE^O11 gives the MedicationRequest of the same ORC-2, and the dispense's authorizingPrescription that one."""
        order = _entry(_one(converter, _rde()), "MedicationRequest")
        encoded = (ENCODED_23[0], "RXR|64^Intravenøs bruk^7477")  # the ENCODING's route, not the dispense's
        bundle = _one(converter, _rds_o01(ORC_RE, *encoded, RXD_23, "RXR|53^Oral bruk^7477"))
        Bundle.model_validate(bundle)
        made = _entry(bundle, "MedicationRequest")
        assert made["fullUrl"] == order["fullUrl"]
        assert made["request"] == {"method": "POST", "url": "MedicationRequest", "ifNoneExist": "identifier=urn:helsebro:local:DIPS:id|LM-5001"}
        assert made["resource"]["dispenseRequest"]["quantity"] == {"value": 40, "unit": "tablett"}  # RXE-10/11
        [dispense] = _of(bundle, "MedicationDispense")
        MedicationDispense.model_validate(dispense)
        assert dispense["authorizingPrescription"] == [{"reference": order["fullUrl"]}]
        assert dispense["status"] == "completed"
        assert dispense["quantity"] == {"value": 40, "unit": "tablett"}
        assert dispense["whenHandedOver"] == "2025-03-12T14:25:00+01:00"
        assert dispense["substitution"]["wasSubstituted"] is True
        assert dispense["dosageInstruction"][0]["route"]["coding"] == [{"system": ROUTE, "code": "53", "display": "Oral bruk"}]

    def test_the_dispense_is_the_one_rds_o13_makes(self, converter):
        """The same dispense sent as v2.3 RDS^O01 and as v2.5.1 RDS^O13 is one MedicationDispense (one identity, one content)."""
        old = _entry(_one(converter, _rds_o01(ORC_RE, *ENCODED_23, RXD_23)), "MedicationDispense")
        new = _entry(_one(converter, _rds(ORC_RE, *ENCODED, RXD_23)), "MedicationDispense")
        assert old["fullUrl"] == new["fullUrl"]
        assert old["resource"]["authorizingPrescription"] == new["resource"]["authorizingPrescription"]
        assert {k: v for k, v in old["resource"].items() if k != "meta"} == {k: v for k, v in new["resource"].items() if k != "meta"}

    def test_without_encoding_the_order_is_named_by_its_placer_number(self, converter):
        """An RDS^O01 with no RXE makes no MedicationRequest; the dispense names the order by the placer identifier RDE gives it."""
        order = _of(_one(converter, _rde()), "MedicationRequest")[0]
        bundle = _one(converter, _rds_o01(ORC_RE, RXD_23, "RXR|53^Oral bruk^7477"))
        assert _of(bundle, "MedicationRequest") == []
        [dispense] = _of(bundle, "MedicationDispense")
        [placer] = [i for i in order["identifier"] if i["type"]["coding"][0]["code"] == "PLAC"]
        assert dispense["authorizingPrescription"] == [{"type": "MedicationRequest", "identifier": {"system": placer["system"], "value": placer["value"]}}]

    def test_without_encoding_or_placer_number_the_filler_number_names_it(self, converter):
        """No ORC-2: the dispense names the order by the filler number (ORC-3), as RDS^O13 does."""
        orc = ORC_RE.replace("|LM-5001^DIPS|", "||", 1)
        [dispense] = _of(_one(converter, _rds_o01(orc, RXD_23)), "MedicationDispense")
        [named] = dispense["authorizingPrescription"]
        assert named["type"] == "MedicationRequest"
        assert named["identifier"]["value"] == "AP-90001"

    def test_v231_with_its_own_structure_name_is_routed(self, converter):
        """v2.3.1 senders fill MSH-9.3 with RDS_O01, a structure with no mapping of its own: the event table routes it."""
        bundle = _one(converter, _rds_o01(ORC_RE, *ENCODED_23, RXD_23, type_="RDS^O01^RDS_O01", version="2.3.1"))
        assert len(_of(bundle, "MedicationDispense")) == 1

    def test_a_dispense_without_a_drug_is_refused_at_rxd_2(self, converter):
        """An RXD with no RXD-2 is refused naming RXD-2, as in RDS^O13."""
        issue = _refused(converter, _rds_o01(ORC_RE, *ENCODED_23, RXD_23.replace("|N02BE01^Paracetamol 500 mg tablett^ATC|", "||")))
        assert issue["location"] == ["RXD-2"]

    def test_helsebro_convert_converts_a_v23_dispense_file(self, tmp_path, capsys):
        """`helsebro convert` on an RDS^O01 file exits 0 and prints the order and the dispense naming it."""
        path = tmp_path / "rds_o01.hl7"
        path.write_bytes(_rds_o01(ORC_RE, *ENCODED_23, RXD_23))
        assert main(["convert", str(path)]) == 0
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        [dispense] = _of(doc, "MedicationDispense")
        assert dispense["authorizingPrescription"] == [{"reference": _entry(doc, "MedicationRequest")["fullUrl"]}]


class TestV23Administration:
    """RAS^O01 takes RAS_O17's mapping: v2.3's RXAs and their RXR, straight in the ORDER, read as one ADMINISTRATION."""

    RXR = "RXR|53^Oral bruk^7477"

    def test_the_administration_names_the_order_rde_made(self, converter):
        """RAS^O01 with its RXE: the order created only when missing, the administration's request that order."""
        order = _entry(_one(converter, _rde()), "MedicationRequest")
        bundle = _one(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(), self.RXR))
        Bundle.model_validate(bundle)
        assert _entry(bundle, "MedicationRequest")["request"]["method"] == "POST"
        [given] = _of(bundle, "MedicationAdministration")
        MedicationAdministration.model_validate(given)
        assert given["request"] == {"reference": order["fullUrl"]}
        assert given["status"] == "completed"
        assert given["effectiveDateTime"] == "2025-03-12T09:05:00+01:00"
        assert given["performer"][0]["actor"] == {"identifier": {"system": HPR, "value": "6024416"}, "display": "SIGRID SYKEPLEIER"}

    @pytest.mark.parametrize(("rxa20", "rxa21", "status"), [("CP", "A", "completed"), ("RE", "A", "not-done"), ("PA", "A", "stopped"), ("CP", "D", "entered-in-error")])
    def test_rxa_20_and_21_give_the_status(self, converter, rxa20, rxa21, status):
        """RXA-20 (table 0322) and RXA-21 D give the status, as in RAS^O17."""
        [given] = _of(_one(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(rxa20, rxa21=rxa21), self.RXR)), "MedicationAdministration")
        assert given["status"] == status

    def test_every_rxa_before_the_one_rxr_is_an_administration_by_that_route(self, converter):
        """v2.3 puts one RXR after all the order's RXAs: each RXA is its own administration, each given by that route."""
        second = _rxa().replace("RXA|0|1|20250312090500|", "RXA|0|2|20250312210500|", 1)
        bundle = _one(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(), second, "RXR|64^Intravenøs bruk^7477"))
        first, later = _of(bundle, "MedicationAdministration")
        assert first["id"] != later["id"]
        assert later["effectiveDateTime"] == "2025-03-12T21:05:00+01:00"
        assert [g["dosage"]["route"]["coding"][0]["code"] for g in (first, later)] == ["64", "64"]
        assert first["request"] == later["request"] == {"reference": _entry(bundle, "MedicationRequest")["fullUrl"]}

    def test_the_administration_is_the_one_ras_o17_makes(self, converter):
        """The same RXA sent as v2.3 RAS^O01 and as v2.5.1 RAS^O17 is one MedicationAdministration: a later correction finds it."""
        old = _entry(_one(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(), self.RXR)), "MedicationAdministration")
        new = _entry(_one(converter, _ras(_rxa(), self.RXR)), "MedicationAdministration")
        assert old["fullUrl"] == new["fullUrl"]

    def test_without_encoding_the_order_is_named_by_its_placer_number(self, converter):
        """A RAS^O01 with no RXE names the order by its placer identifier and makes no MedicationRequest."""
        bundle = _one(converter, _ras_o01(ORC_RE, _rxa(), self.RXR))
        assert _of(bundle, "MedicationRequest") == []
        [given] = _of(bundle, "MedicationAdministration")
        assert given["request"] == {"type": "MedicationRequest", "identifier": {"system": "urn:helsebro:local:DIPS:id", "value": "LM-5001"}}

    def test_an_administration_without_a_drug_is_refused_at_rxa_5(self, converter):
        """An RXA with no RXA-5 is refused naming RXA-5, as in RAS^O17."""
        issue = _refused(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(rxa5=""), self.RXR))
        assert issue["location"] == ["RXA-5"]


class TestV23AnotherPatientsOrder:
    """RDS^O01 and RAS^O01 through the record (SQLite): the order their RXE finds by number must be this patient's."""

    @pytest.mark.parametrize("kind", ["MedicationDispense", "MedicationAdministration"])
    def test_a_v23_message_naming_another_patients_order_is_refused(self, converter, tmp_path, kind):
        """RDE for patient A, then a v2.3 RDS^O01 (RAS^O01) for patient B with A's order number: refused whole,
        nothing of B written, no dispense (administration) of B's pointing at A's prescription."""
        from router.errors import InvalidContent

        other = TestAnotherPatientsOrder.OTHER
        message = (_rds_o01(ORC_RE, *ENCODED_23, RXD_23, pid=other) if kind == "MedicationDispense"
                   else _ras_o01(ORC_RE, *ENCODED_23, _rxa(), "RXR|53^Oral bruk^7477", pid=other))
        record = TestDispenseInTheRecord()._record(tmp_path)
        try:
            record.apply(_one(converter, _rde()))
            with pytest.raises(InvalidContent, match="belongs to another patient"):
                record.apply(_one(converter, message))
            assert record.search(kind, {}) == []
            assert len(record.search("Patient", {})) == 1
        finally:
            record.close()

    def test_the_patients_own_v23_dispense_leaves_the_order_as_rde_wrote_it(self, converter, tmp_path):
        """The same patient's RDS^O01 writes the dispense, leaves the stored order untouched and points at it."""
        record = TestDispenseInTheRecord()._record(tmp_path)
        try:
            record.apply(_one(converter, _rde()))
            [before] = record.search("MedicationRequest", {})
            record.apply(_one(converter, _rds_o01(ORC_RE, *ENCODED_23, RXD_23)))
            [after] = record.search("MedicationRequest", {})
            [dispense] = record.search("MedicationDispense", {})
        finally:
            record.close()
        assert after == before
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{after['id']}"}]


class TestAnOrderWithoutEncodingBesideOneWith:
    """Two orders in one message, only the first with its ENCODING: the second names its own order by number.

    An RXE is placed only inside an ORDER, so the second ORDER's RXE is none, not the first order's found
    message-wide: read so, the second dispense or administration named no order at all."""

    ORC_2 = "ORC|RE|LM-5002^DIPS|AP-90002^APOTEK||||||20250314101000"

    def test_rds_o13(self, converter):
        """RDS^O13: the first dispense names the order its RXE made, the second LM-5002 by its placer number."""
        bundle = _one(converter, _rds(ORC_RE, *ENCODED, RXD, self.ORC_2, RXD.replace("RXD|1|", "RXD|2|", 1)))
        [order] = _of(bundle, "MedicationRequest")
        first, second = _of(bundle, "MedicationDispense")
        assert first["authorizingPrescription"] == [{"reference": _entry(bundle, "MedicationRequest")["fullUrl"]}]
        assert order["identifier"][0]["value"] == "LM-5001"
        assert second["authorizingPrescription"] == [{"type": "MedicationRequest", "identifier": {"system": "urn:helsebro:local:DIPS:id", "value": "LM-5002"}}]

    def test_v23_ras_o01(self, converter):
        """RAS^O01: the second order's administration names LM-5002 by number, not nothing."""
        bundle = _one(converter, _ras_o01(ORC_RE, *ENCODED_23, _rxa(), "RXR|53^Oral bruk^7477", self.ORC_2, _rxa(), "RXR|53^Oral bruk^7477"))
        first, second = _of(bundle, "MedicationAdministration")
        assert first["request"] == {"reference": _entry(bundle, "MedicationRequest")["fullUrl"]}
        assert second["request"] == {"type": "MedicationRequest", "identifier": {"system": "urn:helsebro:local:DIPS:id", "value": "LM-5002"}}
