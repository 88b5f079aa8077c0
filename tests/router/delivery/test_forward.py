"""The Forwarder through the engine: one destination's failure stays its own, and each message gets its own forward id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.contracts import Converted, MessageHeader
from router.delivery import forward_id
from router.pipeline.settle import Settled
from router.routing.model import QueueDestination
from router.settings import Settings
from router.testing import adt_message, delete_queues, drain_queue, drain_with_ids, isolated_settings, publish, run_engine_in_thread, wait_until
from schemas.identity import first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
SYSTEM = "urn:helsebro:test:patient"


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    return RABBIT if request.param == "rabbitmq" else None


def _queue(settings: Settings, destination: str) -> str:
    dest = settings.routes.destinations[destination]
    if not isinstance(dest, QueueDestination):
        raise TypeError(f"{destination} is not a queue destination")
    return str(dest.queue)


class _BuggyBundles:
    """`P <id>` becomes a one-Patient Bundle; `P bug` one no JSON encoder takes (an integer past 64 bits), so a
    fhir-json renderer breaks on it with an error that is not a MessageError: a renderer's bug, not the message's."""

    def convert(self, data: bytes) -> list[Converted]:
        value = data.decode("utf-8").split()[1]
        header = MessageHeader(sending_application="PAS", sending_facility="TEST", receiving_application="HELSEBRO", receiving_facility="HB",
                               message_code="ADT", trigger_event="A01", structure="ADT_A01", control_id=f"C{value}", version="2.5.1")
        patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}]}
        if value == "bug":
            patient["multipleBirthInteger"] = 2**70
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{value}"}}]}
        return [Converted(index=0, raw=data, control_id=f"C{value}", sender="PAS@TEST", message_type="ADT^A01", patient_key=f"h:{value}", header=header, bundle=bundle)]


class TestForwarder:
    def test_a_renderer_bug_dead_letters_that_destination_only(self, tmp_path: Path, broker_url: str | None) -> None:
        """A renderer that breaks (not a MessageError) dead-letters the message for its destination alone, at stage render;
        the later destinations still get it, and the engine goes on with the next message."""
        routes = {
            "destinations": {
                "lab": {"kind": "queue", "queue": "test.fwd.lab", "format": "fhir-json"},
                "kommune": {"kind": "queue", "queue": "test.fwd.kommune", "format": "passthrough"},
            },
            "routes": [{"name": "all", "to": ["lab", "kommune"]}],
        }
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=routes)
        seen: list[Settled] = []
        handle = run_engine_in_thread(settings, converter=_BuggyBundles(), on_settled=seen.append)
        try:
            publish(settings, [b"P bug", b"P 7101"])
            wait_until(lambda: len(seen) == 2, 30, what="settled")
        finally:
            handle.stop()
        try:
            kommune = drain_queue(settings, _queue(settings, "kommune"))
            lab = drain_queue(settings, _queue(settings, "lab"))
            dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
        finally:
            if broker_url:
                delete_queues(settings)
        assert handle.errors == []
        assert [s.outcome for s in seen] == ["forwarded", "forwarded"]
        assert [body for _h, body in kommune] == [b"P bug", b"P 7101"]
        assert len(lab) == 1 and b"7101" in lab[0][1]
        [(headers, body)] = dead
        assert body == b"P bug"
        assert (headers["x-helsebro-stage"], headers["x-helsebro-destination"]) == ("render", "lab")
        assert headers["x-helsebro-reason"].startswith("internal error: ")
        assert headers["x-helsebro-control-id"] == "Cbug"

    def test_a_reused_control_id_for_new_content_is_forwarded_under_a_new_id(self, tmp_path: Path, broker_url: str | None) -> None:
        """Two different messages under one control id (MSH-10) reach a legacy queue under two message ids, so a
        receiver that drops repeats by message id takes both (the engine's own duplicate window is off here)."""
        routes = {
            "destinations": {"record": {"kind": "record"}, "raw": {"kind": "queue", "queue": "test.fwd.raw", "format": "passthrough"}},
            "routes": [{"name": "all", "to": ["record", "raw"]}],
            "duplicates": {"window_seconds": 0},
        }
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=routes)
        first = adt_message("A01", control_id="REUSED-1", fnr=first_valid_fnr(17, 5, 87, 100, synthetic=True), local_id="L1", visit="V1")
        second = adt_message("A01", control_id="REUSED-1", fnr=first_valid_fnr(18, 6, 88, 100, synthetic=True), local_id="L2", visit="V2")
        seen: list[Settled] = []
        handle = run_engine_in_thread(settings, on_settled=seen.append)
        try:
            publish(settings, [first, second])
            wait_until(lambda: len(seen) == 2, 60, what="settled")
        finally:
            handle.stop()
        try:
            copies = drain_with_ids(settings, _queue(settings, "raw"))
        finally:
            if broker_url:
                delete_queues(settings)
        assert [s.outcome for s in seen] == ["applied", "applied"]
        assert [b.rstrip(b"\r") for _id, _h, b in copies] == [first.rstrip(b"\r"), second.rstrip(b"\r")]
        assert len({message_id for message_id, _h, _b in copies}) == 2

    def test_the_same_bytes_keep_their_forward_id(self) -> None:
        """A redelivery (the same bytes, sender and control id) gets the forward id its first delivery got; other bytes do not."""
        one = Converted(index=0, raw=b"MSH|one", control_id="C1", sender="PAS@TEST")
        again = Converted(index=0, raw=b"MSH|one", control_id="C1", sender="PAS@TEST")
        other = Converted(index=0, raw=b"MSH|two", control_id="C1", sender="PAS@TEST")
        assert forward_id(one, "lab") == forward_id(again, "lab")
        assert forward_id(one, "lab") != forward_id(other, "lab")
        assert forward_id(one, "lab") != forward_id(one, "kommune")
