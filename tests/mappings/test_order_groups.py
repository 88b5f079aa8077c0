"""Inbound orders (OML^O21, ORM^O01): each ORDER group is its own order, with its own specimen and status.

Messages are converted through the Converter over the project's own mappings; every Bundle is
validated with fhir.resources. Synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

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

    def test_each_orc_alone_is_its_own_order(self, converter):
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", "ORC|DC|REK-1^DIPS", "ORC|DC|REK-2^DIPS"))
        assert sorted((sr["identifier"][0]["value"], sr["status"]) for sr in _of(bundle, "ServiceRequest")) == [("REK-1", "revoked"), ("REK-2", "revoked")]

    def test_an_order_with_its_detail_is_made_once(self, converter):
        bundle = one_bundle(converter, _message("ORM^O01^ORM_O01", *self.NEW))
        assert len(_of(bundle, "ServiceRequest")) == 1
