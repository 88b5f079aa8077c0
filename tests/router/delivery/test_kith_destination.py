"""End to end: an HL7 admission reaches a municipality's queue as PLO "melding om innlagt pasient" (format: kith).

Through the public interface only: routes.yaml with a `format: kith` queue
destination, the engine in a thread, publish, drain. On the embedded
transport and on RabbitMQ. With ../shared present the engine also validates
every rendered message against the national XSD.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from adapters.kith import MSGHEAD_NS
from router.testing import adt_message, delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until
from schemas.identity import first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
SKJEMA = Path(__file__).resolve().parents[4] / "shared" / "norsk" / "skjema"
FNR = first_valid_fnr(2, 5, 79, 300, synthetic=True)
NS = {"m": MSGHEAD_NS, "po": "http://www.kith.no/xmlstds/po/poKomponent/2012-04-01"}
ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "kommune": {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
    },
    "routes": [{"name": "admissions", "to": ["record", "kommune"]}],
}


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, tmp_path):
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None, routes=ROUTES)
    if SKJEMA.is_dir():
        s = s.model_copy(update={"xsd_dir": SKJEMA.resolve()})
    yield s
    if s.broker_url:
        delete_queues(s)


class TestKithDestination:
    def test_admission_reaches_the_municipality_as_plo(self, settings):
        """An ADT^A01 goes to the record and, as a LOG_INNLAGT MsgHead for HER-id 12345, to the kommune queue."""
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [adt_message("A01", control_id="E2E-1", fnr=FNR, local_id="L-9", visit="V-9", admitted="20240301101500", sent="20240301102000")])
            wait_until(lambda: handle.stats.messages >= 1, 60, what="message settled")
            [(headers, body)] = drain_queue(settings, settings.routes.destinations["kommune"].queue)
        finally:
            handle.stop()
        assert handle.stats.applied == 1 and handle.stats.dead_lettered == 0
        assert headers["x-helsebro-format"] == "kith" and headers["x-helsebro-destination"] == "kommune"
        root = etree.fromstring(body)
        assert root.xpath("/m:MsgHead/m:MsgInfo/m:Type/@V", namespaces=NS) == ["LOG_INNLAGT"]
        assert root.xpath("//m:Receiver//m:Ident/m:Id/text()", namespaces=NS) == ["12345"]
        assert root.xpath("//m:Patient/m:Ident/m:Id/text()", namespaces=NS) == [FNR]
        assert root.xpath("//po:TidspunktForHendelse/@V", namespaces=NS) == ["2024-03-01T10:15:00"]

    def test_unrenderable_message_is_dead_lettered_for_that_destination_only(self, settings):
        """An admission without a time still reaches the record; for kommune it is dead-lettered at stage render, without PHI."""
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [adt_message("A01", control_id="E2E-2", fnr=FNR, local_id="L-8", visit="V-8", admitted="")])
            wait_until(lambda: handle.stats.messages >= 1, 60, what="message settled")
            forwarded = drain_queue(settings, settings.routes.destinations["kommune"].queue)
            [(headers, _raw)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        finally:
            handle.stop()
        assert forwarded == [] and handle.stats.applied == 1
        assert headers["x-helsebro-stage"] == "render" and headers["x-helsebro-destination"] == "kommune"
        assert "TidspunktForHendelse" in headers["x-helsebro-reason"]
        assert FNR not in str(headers)


def test_start_warns_when_kith_goes_out_under_the_placeholder_her_id(tmp_path, capsys):
    """A kith destination with the shipped own.her_id logs own_her_id_placeholder at start; none without one."""
    import json

    import structlog

    from router.logging import configure_logging
    from router.testing import isolated_settings, run_engine_in_thread

    def events(routes):
        configure_logging(level="info")
        handle = run_engine_in_thread(isolated_settings(tmp_path / str(len(routes["destinations"])), routes=routes))
        handle.stop()
        structlog.reset_defaults()
        return [json.loads(ln).get("event") for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]

    with_kith = {"destinations": {"record": {"kind": "record"}, "kommune": {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"}}, "routes": [{"name": "all", "to": ["record", "kommune"]}]}
    without = {"destinations": {"record": {"kind": "record"}}, "routes": [{"name": "all", "to": ["record"]}]}
    assert "own_her_id_placeholder" in events(with_kith)
    assert "own_her_id_placeholder" not in events(without)
