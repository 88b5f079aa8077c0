"""Inbound orders (OML^O21, ORM^O01): each ORDER group is its own order, with its own specimen and status.

Messages are converted through the Converter over the project's own mappings; every Bundle is
validated with fhir.resources. Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

from typing import Any

from router.pipeline.convert import Converter
from router.testing import one_bundle

PATIENT = "15866112379"
MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|LAB|STOLAV-LAB|20250110093000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
PID = f"PID|1||{PATIENT}^^^NOR^FNR||NORDMANN^OLA^K||19610615|M"


def _message(kind: str, *segments: str, ctrl: str = "ORD-1") -> bytes:
    return ("\r".join([MSH.format(type=kind, ctrl=ctrl), PID, *segments]) + "\r").encode("utf-8")


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _specimen_ids(bundle: dict) -> dict[str, str]:
    """Each ServiceRequest's placer number → the id of the Specimen it names."""
    return {sr["identifier"][0]["value"]: sr["specimen"][0]["reference"] for sr in _of(bundle, "ServiceRequest")}


class TestSpecimenOfItsOwnOrder:
    """A specimen without numbers of its own is its order's, also when only ORC carries the order number."""

    def _oml(self, *orders: tuple[str, str]) -> bytes:
        segments: list[str] = []
        for number, test in orders:
            segments += [f"ORC|NW|{number}^DIPS|||SC||||20250110092500", f"OBR|1|||{test}", "SPM|1|||BLD^Blod^HL70487"]
        return _message("OML^O21^OML_O21", *segments)

    def test_two_orders_in_one_message_have_two_specimens(self, converter):
        bundle = one_bundle(converter, self._oml(("REK-1", "NPU02319^Hemoglobin;B^NLK"), ("REK-2", "NPU01459^Kreatinin;P^NLK")))
        ids = _specimen_ids(bundle)
        assert set(ids) == {"REK-1", "REK-2"}
        assert ids["REK-1"] != ids["REK-2"]
        assert len(_of(bundle, "Specimen")) == 2

    def test_the_next_orders_specimen_is_not_the_last_ones(self, converter):
        first = one_bundle(converter, self._oml(("REK-1", "NPU02319^Hemoglobin;B^NLK")))
        second = one_bundle(converter, self._oml(("REK-2", "NPU02319^Hemoglobin;B^NLK")))
        [a], [b] = _of(first, "Specimen"), _of(second, "Specimen")
        assert a["identifier"] != b["identifier"]


class TestOrderControlWithoutDetail:
    """An ORM^O01 ORDER with its ORC alone (ORDER_DETAIL is optional) still reaches the order it names."""

    NEW = ("ORC|NW|REK-1001^DIPS|||||||20250110092500", "OBR|1|REK-1001^DIPS||NPU02319^Hemoglobin;B^NLK")

    def test_a_cancel_by_orc_alone_revokes_the_order_it_names(self, converter):
        ordered = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.NEW))
        cancelled = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|CA|REK-1001^DIPS|||CA", ctrl="ORD-2"))
        [order] = [e for e in ordered["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
        [cancel] = [e for e in cancelled["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
        assert cancel["request"] == order["request"]  # the same conditional PUT: the order itself, not a new one
        assert cancel["resource"]["id"] == order["resource"]["id"]
        assert cancel["resource"]["status"] == "revoked"

    def test_an_oml_cancel_by_orc_alone_revokes_the_order_it_names(self, converter: Converter) -> None:
        """OML^O21's OBSERVATION_REQUEST is optional too: its cancel by ORC alone reached nothing, a success."""
        ordered = one_bundle(converter, _message("OML^O21^OML_O21", *self.NEW, "SPM|1|||BLD^Blod^HL70487"))
        cancelled = one_bundle(converter, _message("OML^O21^OML_O21", "ORC|CA|REK-1001^DIPS|||CA", ctrl="ORD-2"))
        [order], [cancel] = _of(ordered, "ServiceRequest"), _of(cancelled, "ServiceRequest")
        assert (cancel["id"], cancel["status"]) == (order["id"], "revoked")

    def test_each_orc_alone_is_its_own_order(self, converter):
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|DC|REK-1^DIPS", "ORC|DC|REK-2^DIPS"))
        assert sorted((sr["identifier"][0]["value"], sr["status"]) for sr in _of(bundle, "ServiceRequest")) == [("REK-1", "revoked"), ("REK-2", "revoked")]

    def test_an_order_with_its_detail_is_made_once(self, converter):
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.NEW))
        assert len(_of(bundle, "ServiceRequest")) == 1


PATIENT_2 = "01015000232"
PID_2 = f"PID|1||{PATIENT_2}^^^NOR^FNR||HANSEN^KARI||19500101|F"


def _with(pid: str, kind: str, *segments: str, ctrl: str = "ORD-1") -> bytes:
    return ("\r".join([MSH.format(type=kind, ctrl=ctrl), pid, *segments]) + "\r").encode("utf-8")


def _obr(placer: str, filler: str, *, taken: str = "", specimen: str = "") -> str:
    """An OBR for Hb with its placer (OBR-2) and filler (OBR-3) numbers, collection time (OBR-7) and specimen (OBR-15)."""
    fields = ["OBR", "1", placer, filler, "NPU02319^Hemoglobin;B^NLK", "", "", taken] + [""] * 7 + [specimen]
    return "|".join(fields)


def _ids(bundle: dict[str, Any]) -> dict[str, list[str]]:
    return {kind: [r["id"] for r in _of(bundle, kind)] for kind in ("ServiceRequest", "Specimen")}


class TestOneOrderWhateverNumbersCome:
    """The placer sends its order with its own number; the laboratory's number comes later (OK, SC): one order."""

    ORM_NEW = ("ORC|NW|REK-1^DIPS|||||||20250110092500", _obr("REK-1^DIPS", "", specimen="BLD&Blod&HL70070"))
    ORM_UPDATE = ("ORC|SC|REK-1^DIPS|LAB-9^LABSYS||IP", _obr("REK-1^DIPS", "LAB-9^LABSYS", taken="20250110095500", specimen="BLD&Blod&HL70070"))

    def test_an_orm_update_with_the_filler_number_is_the_same_order_and_specimen(self, converter: Converter) -> None:
        """The OBR-15 specimen hashed both numbers (and the collection time OBR-7): the status update that
        brought the laboratory's number and the time taken made a second Specimen, the order naming it."""
        new = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.ORM_NEW))
        update = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.ORM_UPDATE, ctrl="ORD-2"))
        assert _ids(new) == _ids(update)
        assert len(_ids(new)["Specimen"]) == 1

    def test_an_orm_update_naming_the_order_in_orc_only_is_the_same_specimen(self, converter: Converter) -> None:
        """OBR-2 left empty in the update (ORC-2 holds the number) must not change the specimen."""
        new = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.ORM_NEW))
        update = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|XO|REK-1^DIPS|LAB-9^LABSYS", _obr("", "", specimen="BLD&Blod&HL70070"), ctrl="ORD-2"))
        assert _ids(new) == _ids(update)
        assert len(_ids(new)["Specimen"]) == 1

    def test_an_oml_update_with_the_filler_number_is_the_same_specimen(self, converter: Converter) -> None:
        """SPM without its own id took the laboratory's number first (right for results, which always carry
        it): in an order the placer's is there from the start, so the update made a second Specimen."""
        new = one_bundle(converter, _message("OML^O21^OML_O21", "ORC|NW|REK-1^DIPS|||||||20250110092500", "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK", "SPM|1|||BLD^Blod^HL70487"))
        update = one_bundle(converter, _message("OML^O21^OML_O21", "ORC|SC|REK-1^DIPS|LAB-9^LABSYS||IP", "OBR|1|REK-1^DIPS|LAB-9^LABSYS|NPU02319^Hemoglobin;B^NLK", "SPM|1|||BLD^Blod^HL70487", ctrl="ORD-2"))
        assert _ids(new) == _ids(update)
        assert len(_ids(new)["Specimen"]) == 1


class TestNamespaceAloneIsNoNumber:
    """`^DIPS` (a namespace, no number) is no order number: else every patient's order of one test is one resource."""

    def test_two_patients_orders_without_numbers_stay_apart(self, converter: Converter) -> None:
        for kind, detail in (
            ("ORM^O01^ORM_O01", (_obr("^DIPS", "^LABSYS", specimen="BLD&Blod&HL70070"),)),
            ("OML^O21^OML_O21", ("OBR|1|^DIPS|^LABSYS|NPU02319^Hemoglobin;B^NLK", "SPM|1|||BLD^Blod^HL70487")),
        ):
            one, other = (_ids(one_bundle(converter, _with(pid, kind, "ORC|NW|^DIPS|^LABSYS||||||20250110092500", *detail))) for pid in (PID, PID_2))
            for resource in ("ServiceRequest", "Specimen"):
                assert one[resource] and not set(one[resource]) & set(other[resource]), (kind, resource)

    def test_the_orc_number_counts_when_obr_gives_only_a_namespace(self, converter: Converter) -> None:
        """OBR-2 `^DIPS` hid ORC-2's number: the order lost its placer number, and with it its identity."""
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|NW|REK-1^DIPS|LAB-9^LABSYS", "OBR|1|^DIPS|^LABSYS|NPU02319^Hemoglobin;B^NLK"))
        [order] = _of(bundle, "ServiceRequest")
        assert [i.get("value") for i in order["identifier"]] == ["REK-1", "LAB-9"]
        assert [i["type"]["coding"][0]["code"] for i in order["identifier"]] == ["PLAC", "FILL"]


class TestOrderWithoutPatient:
    """The order mappings do not require PID (their PATIENT group is optional), but a ServiceRequest needs
    its subject: an order without PID was dropped and the message acknowledged as a success."""

    def test_an_order_without_pid_is_refused_at_the_order(self, converter: Converter) -> None:
        from router.testing import converted

        for kind, segments in (
            ("ORM^O01^ORM_O01", ("ORC|NW|REK-1^DIPS", "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK")),
            ("ORM^O01^ORM_O01", ("ORC|CA|REK-1^DIPS|||CA",)),
            ("OML^O21^OML_O21", ("ORC|NW|REK-1^DIPS", "OBR|1|REK-1^DIPS||NPU02319^Hemoglobin;B^NLK", "SPM|1|||BLD^Blod^HL70487")),
            ("OMG^O19^OMG_O19", ("ORC|NW|REK-1^DIPS", "OBR|1|REK-1^DIPS||MR-CAP^MR caput^L")),
        ):
            data = ("\r".join([MSH.format(type=kind, ctrl="ORD-1"), *segments]) + "\r").encode()
            [doc] = converted(converter, data)
            assert doc["resourceType"] == "OperationOutcome", kind
            text = " ".join(i["diagnostics"] for i in doc["issue"])
            assert "patient" in text.lower(), (kind, text)


class TestOrderTiming:
    def test_the_obr_quantity_timing_gives_priority_and_time(self, converter: Converter) -> None:
        """OBR-27 (TQ, where v2.3–2.4 senders give the timing when ORC-7 is empty: IG OBR-27 → TQ[ServiceRequest])
        was not read: a STAT order without ORC-7 lost its priority and its requested time."""
        fields = _obr("REK-1^DIPS", "").split("|") + [""] * 11 + ["^^^20250110100000^^S"]
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|NW|REK-1^DIPS", "|".join(fields)))
        [order] = _of(bundle, "ServiceRequest")
        assert order["priority"] == "stat"
        assert order["occurrenceDateTime"].startswith("2025-01-10T10:00:00")

    def test_orc_timing_comes_before_obr_timing(self, converter: Converter) -> None:
        fields = _obr("REK-1^DIPS", "").split("|") + [""] * 11 + ["^^^20250110100000^^S"]
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|NW|REK-1^DIPS|||||^^^20250111080000^^R", "|".join(fields)))
        [order] = _of(bundle, "ServiceRequest")
        assert (order["priority"], order["occurrenceDateTime"][:19]) == ("routine", "2025-01-11T08:00:00")
