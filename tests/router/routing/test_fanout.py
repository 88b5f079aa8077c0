"""Fan-out through the engine: the record, legacy queues in their formats, filtered messages, on both transports."""

from __future__ import annotations

import orjson
import pytest

from adapters.amqp.connection import all_queue_names
from router.testing import delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "kommune": {"kind": "queue", "queue": "test.kommune", "format": "passthrough"},
        "lab": {"kind": "queue", "queue": "test.lab", "format": "fhir-json"},
    },
    "routes": [
        {"name": "to-record", "match": {"sender": ["PAS@TEST"]}, "to": ["record", "kommune", "lab"]},
    ],
}


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, tmp_path):
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None, routes=ROUTES)
    yield s
    if s.broker_url:
        delete_queues(s)


class TestFanOut:
    def test_each_destination_gets_its_format(self, settings, fake_converter):
        """One message reaches the record, the passthrough queue as its bytes and the fhir-json queue as its Bundle."""
        seen = []
        handle = run_engine_in_thread(settings, converter=fake_converter, on_settled=seen.append)
        publish(settings, [b"P 7001", b"P 7002"])
        wait_until(lambda: len(seen) == 2, 30, what="settled")
        handle.stop()
        assert [s.outcome for s in seen] == ["applied", "applied"]
        kommune = drain_queue(settings, settings.routes.destinations["kommune"].queue)
        lab = drain_queue(settings, settings.routes.destinations["lab"].queue)
        assert [body for _h, body in kommune] == [b"P 7001", b"P 7002"]
        assert [orjson.loads(body)["entry"][0]["resource"]["identifier"][0]["value"] for _h, body in lab] == ["7001", "7002"]
        assert [h["x-helsebro-control-id"] for h, _b in kommune] == ["C7001", "C7002"]
        assert all(h["x-helsebro-destination"] == "kommune" and h["x-helsebro-format"] == "passthrough" for h, _b in kommune)

    def test_a_message_no_route_takes_is_filtered(self, settings, fake_converter, tmp_path):
        """A message that matches no route is settled as filtered, answered AA, and goes nowhere."""
        routes = {**ROUTES, "routes": [{"name": "other", "match": {"sender": ["SOMEONE@ELSE"]}, "to": ["kommune"]}]}
        s = isolated_settings(tmp_path / "f", broker_url=settings.broker_url, routes=routes)
        seen = []
        handle = run_engine_in_thread(s, converter=fake_converter, on_settled=seen.append)
        publish(s, [b"P 7003"])
        wait_until(lambda: len(seen) == 1, 30, what="settled")
        handle.stop()
        try:
            assert seen[0].outcome == "filtered" and seen[0].reason == "no route matched"
            assert drain_queue(s, s.routes.destinations["kommune"].queue) == []
            [(reply, _ack)] = drain_queue(s, s.engine.broker.names.replies)
            assert reply["x-helsebro-ack-code"] == "AA"
        finally:
            if s.broker_url:
                delete_queues(s)

    def test_queue_names_are_listed_for_operators(self, tmp_path):
        """all_queue_names lists partitions, each queued destination's work, retry and dead-letter queues, and legacy queues."""
        routes = {**ROUTES, "destinations": {**ROUTES["destinations"], "ext": {"kind": "fhir", "server": {"base_url": "http://x/fhir"}, "retry": {"delays_seconds": [1, 5]}}}}
        s = isolated_settings(tmp_path / "q", broker_url=RABBIT, routes=routes, broker={"partitions": 2})
        names = {(q.role, q.name) for q in all_queue_names(s)}
        prefix = s.engine.broker.names.destination_prefix
        inbound = s.engine.broker.names.inbound
        assert {("partition", f"{inbound}.p0"), ("partition", f"{inbound}.p1")} <= names
        assert {("work", f"{prefix}.ext.p0"), ("work", f"{prefix}.ext.p1"), ("retry", f"{prefix}.ext.retry.0"), ("retry", f"{prefix}.ext.retry.1"), ("destination_dead_letter", f"{prefix}.ext.dlq")} <= names
        assert ("legacy", s.routes.destinations["kommune"].queue) in names
