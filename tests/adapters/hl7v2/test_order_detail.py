"""ORM^O01's ORDER_DETAIL: one of OBR, RQD, RQ1, RXO, ODS or ODT (a choice), placed in its own order.

hl7apy names the choice OBRRQDRQ1RXOODSODT_SUPPGRP (v2.3: CHOICE). Read as a sequence, only an OBR could
open it, so an order's RXO, ODS or RQD, and every segment after it (its notes, its OBX), stood nowhere
(adapters/hl7v2/groups.py). A pharmacy order (RXO) is a MedicationRequest, as the v2-to-FHIR IG's ORM_O01
sheet says; the IG maps none of the others, which the unmapped report lists.
"""

from __future__ import annotations

import pytest

from adapters.hl7v2._tokenizer import tokenize
from adapters.hl7v2.groups import Group, build
from router.testing import converted, one_bundle

FNR = "15866112379"  # synthetic (Tenor, month + 80)
MSH = "MSH|^~\\&|DIPS|STOLAV|APOTEK|STOLAV|20250110093000||ORM^O01^ORM_O01|ORD-1|P|{version}"
PID = f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^OLA||19610615|M"
LAB = ["ORC|NW|REK-1^DIPS", "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK", "NTE|1||Fastende"]
PHARMACY = ["ORC|NW|REK-2^DIPS", "RXO|J01CA04^Amoksicillin^ATC|500||mg", "NTE|1||Tas med mat",
            "OBX|1|NM|29463-7^Kroppsvekt^LN||82|kg|||||F"]
DIET = ["ORC|NW|REK-3^DIPS", "ODS|D||^Laktosefri kost", "NTE|1||Fra i morgen"]
SUPPLY = ["ORC|NW|REK-4^DIPS", "RQD|1|KAT-7^Kateter||||2|STK", "RQ1|10|LEV-1"]


def _message(*body: str, version: str = "2.5.1", pid: bool = True) -> bytes:
    return ("\r".join([MSH.format(version=version), *([PID] if pid else []), *body]) + "\r").encode()


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _names(group: Group) -> list:
    """The tree as nested lists: a group is [its name, its items...], a segment its name."""
    return [group.name, *(_names(i) if isinstance(i, Group) else i.name for i in group.items)]


def _orders(data: bytes) -> tuple[Group, list[list]]:
    root = build(tokenize(data.decode()), "ORM_O01")
    return root, [_names(order) for order in root.find_groups("ORDER")]


class TestPlacement:
    def test_a_pharmacy_order_holds_its_rxo_notes_and_observations(self):
        """An RXO opens its order's ORDER_DETAIL: the RXO, the NTE and the OBX after it are the order's, nothing is out of place."""
        root, [order] = _orders(_message(*PHARMACY))
        assert root.misplaced == []
        assert order == ["ORDER", "ORC", ["ORDER_DETAIL", ["OBRRQDRQ1RXOODSODT_SUPPGRP", "RXO"], "NTE", ["OBSERVATION", "OBX"]]]

    def test_dietary_and_supply_orders_are_placed_in_their_order(self):
        """ODS and RQD open their own order's detail too; the RQ1 hl7apy's choice leaves no room for stays beside its RQD."""
        root, orders = _orders(_message(*DIET, *SUPPLY))
        assert orders == [["ORDER", "ORC", ["ORDER_DETAIL", ["OBRRQDRQ1RXOODSODT_SUPPGRP", "ODS"], "NTE"]],
                          ["ORDER", "ORC", ["ORDER_DETAIL", ["OBRRQDRQ1RXOODSODT_SUPPGRP", "RQD", "RQ1"]]]]
        assert [s.name for s in root.misplaced] == ["RQ1"]

    def test_an_obr_order_is_placed_as_before(self):
        """An OBR order's tree is unchanged: the OBR in the choice, its NTE in ORDER_DETAIL."""
        root, [order] = _orders(_message(*LAB))
        assert root.misplaced == []
        assert order == ["ORDER", "ORC", ["ORDER_DETAIL", ["OBRRQDRQ1RXOODSODT_SUPPGRP", "OBR"], "NTE"]]

    def test_the_detail_segment_is_its_order_details_own(self):
        """ORDER_DETAIL answers for the choice's segments: a pharmacy order's detail has no OBR, not the lab order's."""
        root = build(tokenize(_message(*LAB, *PHARMACY).decode()), "ORM_O01")
        lab, pharmacy = root.find_groups("ORDER")
        [lab_detail], [pharmacy_detail] = lab.groups("ORDER_DETAIL"), pharmacy.groups("ORDER_DETAIL")
        assert [s.field(2) for s in lab_detail.segments("OBR")] == ["REK-1^DIPS"]
        assert pharmacy_detail.segments("OBR") == [] and len(pharmacy_detail.segments("RXO")) == 1


class TestConversion:
    def test_a_pharmacy_order_is_a_medication_request(self, converter):
        """ORC, RXO, NTE: one MedicationRequest with the RXO's drug and the order's own note, and no ServiceRequest."""
        bundle = one_bundle(converter, _message(*PHARMACY))
        [request] = _resources(bundle, "MedicationRequest")
        assert request["medicationCodeableConcept"]["coding"][0]["code"] == "J01CA04"
        assert request["identifier"][0]["value"] == "REK-2"
        assert request["note"] == [{"text": "Tas med mat"}]
        assert _resources(bundle, "ServiceRequest") == []

    def test_each_order_makes_what_its_own_detail_says(self, converter):
        """A lab order then a pharmacy order: one ServiceRequest (the OBR's) and one MedicationRequest, each with its
        own note; the pharmacy order does not borrow the lab order's OBR."""
        bundle = one_bundle(converter, _message(*LAB, *PHARMACY))
        [service] = _resources(bundle, "ServiceRequest")
        [medication] = _resources(bundle, "MedicationRequest")
        assert service["identifier"][0]["value"] == "REK-1" and service["note"] == [{"text": "Fastende"}]
        assert medication["identifier"][0]["value"] == "REK-2" and medication["note"] == [{"text": "Tas med mat"}]

    def test_without_a_patient_the_order_is_refused(self, converter):
        """No PID, no subject: as for an OBR order, the RXO order is refused with its reason (review H134); it was
        acknowledged as a success that wrote nothing but the sending facility."""
        [result] = converter.convert(_message(*PHARMACY, pid=False))
        assert not result.ok
        assert result.error.reason.startswith("MedicationRequest.subject is required")

    def test_orders_the_ig_does_not_map_are_reported_not_dropped(self, converter):
        """ODS, RQD and RQ1 make nothing (the IG maps none of them with a patient) and every valued field is listed."""
        [doc] = converted(converter, _message(*DIET, *SUPPLY))
        assert doc["resourceType"] == "Bundle", doc
        [result] = converter.convert(_message(*DIET, *SUPPLY))
        assert {"ODS-1", "ODS-3", "NTE-3", "RQD-1", "RQD-2", "RQD-6", "RQD-7", "RQ1-1", "RQ1-2"} <= set(result.unmapped)
        assert {r["resourceType"] for r in (e["resource"] for e in doc["entry"])} == {"Organization", "Patient"}

    def test_a_v23_pharmacy_order_is_a_medication_request(self, converter):
        """v2.3 names the choice CHOICE; the structure Helsebro reads is v2.5.1's, so a v2.3 sender's RXO is placed the same."""
        bundle = one_bundle(converter, _message(*PHARMACY, version="2.3"))
        assert len(_resources(bundle, "MedicationRequest")) == 1


class TestOneDetailPerOrder:
    """An ORDER_DETAIL is one of OBR, RXO (a choice): a second detail segment in one order is refused, never a second order."""

    @pytest.mark.parametrize(
        ("body", "segment"),
        [
            (["ORC|NW|REK-1^DIPS", "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK", "RXO|J01CA04^Amoksicillin^ATC|500||mg", "NTE|1||Fastende"], "RXO"),
            (["ORC|NW|REK-2^DIPS", "RXO|J01CA04^Amoksicillin^ATC|500||mg", "OBR|1|REK-2^DIPS||NPU02319^Hemoglobin;B^NLK", "NTE|1||Tas med mat"], "OBR"),
        ],
    )
    def test_a_second_detail_in_one_order_is_refused(self, converter, body, segment):
        """Read in place, the stray RXO became a MedicationRequest under the lab order's number with its note
        (a medication order nobody placed); now the sender hears which segment has no place."""
        [doc] = converted(converter, _message(*body))
        assert doc["resourceType"] == "OperationOutcome", doc
        issue = doc["issue"][0]
        assert issue["severity"] == "error"
        assert issue["expression"][0].startswith(segment)
