"""A converter for tiny test messages, `P <id>`: one Patient per message, the id as its identifier value."""

from __future__ import annotations

import pytest

from router.contracts import Converted, MessageHeader

SYSTEM = "urn:helsebro:test:patient"


class TinyConverter:
    """`P <id>` becomes a transaction Bundle with one conditional Patient PUT."""

    def convert(self, data: bytes) -> list[Converted]:
        value = data.decode("utf-8").split()[1]
        header = MessageHeader(sending_application="PAS", sending_facility="TEST", receiving_application="HELSEBRO", receiving_facility="HB", message_code="ADT", trigger_event="A01", structure="ADT_A01", control_id=f"C{value}", version="2.5.1")
        patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}]}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{value}"}}]}
        return [Converted(index=0, raw=data, control_id=f"C{value}", sender="PAS@TEST", message_type="ADT^A01", patient_key=f"h:{value}", header=header, bundle=bundle)]


@pytest.fixture
def fake_converter():
    return TinyConverter()
