"""End to end: an engine renders HL7 v2 for a legacy queue (`format: hl7v2`) and dead-letters what it cannot render."""

from __future__ import annotations

import pytest

from router.testing import adt_message, delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until
from schemas.identity import FNR_SYSTEM, first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "lab": {"kind": "queue", "queue": "lab.adt", "format": "hl7v2", "version": "2.3", "charset": "8859/1"},
    },
    "routes": [{"name": "all", "to": ["record", "lab"]}],
}


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def broker_url(request):
    return RABBIT if request.param == "rabbitmq" else None


def _patients(settings, fnr: str) -> list[dict]:
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        return record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
    finally:
        record.close()


def _segments(body: bytes) -> dict[str, list[str]]:
    out = {}
    for line in body.decode("latin-1").split("\r")[:-1]:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        out[fields[0]] = fields
    return out


class TestHl7v2Destination:
    def test_legacy_queue_gets_v23_latin1(self, tmp_path, broker_url):
        """An admission reaches the record and, rendered as HL7 v2.3 in ISO-8859-1, the lab queue."""
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=ROUTES)
        fnr = first_valid_fnr(15, 3, 85, 100, synthetic=True)
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [adt_message("A01", control_id="E2E-1", fnr=fnr, local_id="L1", visit="V1", family="ØSTBYE", given="Åse")])
            wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
        finally:
            handle.stop()
        try:
            [(headers, body)] = drain_queue(settings, settings.routes.destinations["lab"].queue)
            dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
        finally:
            if broker_url:
                delete_queues(settings)
        assert dead == []
        assert headers["x-helsebro-format"] == "hl7v2"
        assert "ØSTBYE^Åse".encode("latin-1") in body
        seg = _segments(body)
        assert seg["MSH"][9] == "ADT^A01"
        assert (seg["MSH"][12], seg["MSH"][18]) == ("2.3", "8859/1")
        assert seg["MSH"][7] == "20240115083000"
        assert seg["PID"][3].startswith(f"{fnr}^^^NOR^FNR~L1^^^STOLAV^PI")
        assert seg["PV1"][2] == "I"
        assert seg["PV1"][44] == "20240115083000"
        assert len(_patients(settings, fnr)) == 1

    def test_unrenderable_message_is_dead_lettered_for_lab_only(self, tmp_path, broker_url):
        """An event the outbound mapping does not serve (A13) goes to the dead-letter queue at stage render for lab; the record still has it."""
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=ROUTES)
        fnr = first_valid_fnr(16, 4, 86, 100, synthetic=True)
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [adt_message("A13", control_id="E2E-2", fnr=fnr, local_id="L2", visit="V2")])
            wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
        finally:
            handle.stop()
        try:
            lab = drain_queue(settings, settings.routes.destinations["lab"].queue)
            dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
        finally:
            if broker_url:
                delete_queues(settings)
        assert lab == []
        [(headers, body)] = dead
        assert headers["x-helsebro-stage"] == "render"
        assert headers["x-helsebro-destination"] == "lab"
        assert "A13" in headers["x-helsebro-reason"] and fnr not in headers["x-helsebro-reason"]
        assert b"E2E-2" in body
        assert len(_patients(settings, fnr)) == 1
