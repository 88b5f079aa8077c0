"""Queued destinations: work partitions, strict retry in place, the retry ladder, and the destination's dead-letter queue."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from router.errors import ConfigError, RecordUnavailable, Refused
from router.testing import delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


class FakeServer:
    """Stands in for a FhirClient: fails for now `failures` times (or refuses), records what it applied."""

    def __init__(self, failures: int = 0, refuse: bool = False) -> None:
        self.failures = failures
        self.refuse = refuse
        self.calls = 0
        self.applied: list[dict] = []
        self.lock = threading.Lock()

    def apply(self, bundle):
        with self.lock:
            self.calls += 1
            if self.refuse:
                raise Refused("the server refused the transaction (422)", detail="Patient Ola Nordmann has no birth date")
            if self.calls <= self.failures:
                raise RecordUnavailable("503 from the server")
            self.applied.append(bundle)


class _Busy(BaseHTTPRequestHandler):
    """A FHIR server under load: every request is a 503 asking for a minute's rest."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Retry-After", "60")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def finish(self):
        super().finish()
        self.server.closed += 1  # type: ignore[attr-defined]  # the client closed its connection

    def log_message(self, format, *args):
        """Keep the test output quiet."""


def _routes(on_failure: str, *, max_attempts: int = 50, window: int | None = None, server: dict | None = None) -> dict:
    extra = {"duplicates": {"window_seconds": window}} if window is not None else {}
    return {**extra,
        "destinations": {
            "record": {"kind": "record"},
            "ekstern": {"kind": "fhir", "on_failure": on_failure, "server": server or {"base_url": "http://127.0.0.1:9/fhir"},
                        "retry": {"delays_seconds": [0.2, 0.4], "jitter": 0.1, "max_attempts": max_attempts}},
        },
        "routes": [{"name": "all", "to": ["record", "ekstern"]}],
    }


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def broker_url(request):
    return RABBIT if request.param == "rabbitmq" else None


class TestDestinationWorker:
    def test_strict_retries_in_place_and_keeps_order(self, tmp_path, broker_url, fake_converter):
        """A destination failing for now is retried in place; every message arrives once, in publish order."""
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=_routes("strict"))
        server = FakeServer(failures=3)
        handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
        try:
            publish(settings, [f"P {4000 + i}".encode() for i in range(10)])
            wait_until(lambda: len(server.applied) == 10, 60, what="all delivered")
        finally:
            handle.stop()
            if broker_url:
                delete_queues(settings)
        values = [b["entry"][0]["resource"]["identifier"][0]["value"] for b in server.applied]
        assert values == [str(4000 + i) for i in range(10)]

    @pytest.mark.integration
    def test_park_goes_round_the_ladder(self, tmp_path, fake_converter):
        """With park, a failing message rides the retry ladder back to its partition and is delivered later; others go on."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, routes=_routes("park"))
        server = FakeServer(failures=2)
        handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
        try:
            publish(settings, [b"P 5001", b"P 5002"])
            wait_until(lambda: len(server.applied) == 2, 60, what="both delivered")
            stats = handle.engine.destinations[0].stats
        finally:
            handle.stop()
            delete_queues(settings)
        assert stats.parked == 2 and stats.applied == 2 and stats.dead_lettered == 0

    @pytest.mark.integration
    def test_park_gives_up_into_the_dead_letter_queue(self, tmp_path, fake_converter):
        """After max_attempts the message goes to the destination's DLQ with reason, attempts and last error."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, routes=_routes("park", max_attempts=3))
        server = FakeServer(failures=10_000)
        handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        try:
            publish(settings, [b"P 5003"])
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="given up")
            [(headers, _body)] = drain_queue(settings, dlq)
        finally:
            handle.stop()
            delete_queues(settings)
        assert headers["x-helsebro-reason"] == "gave up after 3 attempts"
        assert headers["x-helsebro-attempts"] == 3
        assert headers["x-helsebro-last-error"] == "RecordUnavailable"
        assert headers["x-helsebro-destination"] == "ekstern"
        assert headers["x-helsebro-stage"] == "deliver"
        assert server.calls == 3

    def test_refused_goes_straight_to_the_dead_letter_queue(self, tmp_path, broker_url, fake_converter):
        """A message the server refuses is dead-lettered at once, the record still has it, nothing is retried."""
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=_routes("strict"))
        server = FakeServer(refuse=True)
        handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        try:
            publish(settings, [b"P 5004"])
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="refused")
            [(headers, _body)] = drain_queue(settings, dlq)
        finally:
            handle.stop()
            if broker_url:
                delete_queues(settings)
        assert headers["x-helsebro-reason"] == "the server refused the transaction (422)"
        # the server's own words stay with the letter (dlq show), never in the reason that is logged and counted
        assert json.loads(headers["x-helsebro-outcome"])["issue"][0]["details"] == {"text": "Patient Ola Nordmann has no birth date"}
        assert server.calls == 1

    def test_a_copy_already_sent_is_not_sent_again(self, tmp_path, broker_url, fake_converter):
        """With duplicate detection off, a resent copy reaches the work queue again; the ledger keeps the server from getting it twice."""
        settings = isolated_settings(tmp_path, broker_url=broker_url, routes=_routes("strict", window=0))
        server = FakeServer()
        handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
        try:
            publish(settings, [b"P 6001", b"P 6002", b"P 6001"])
            wait_until(lambda: handle.engine.destinations[0].stats.already_sent == 1, 60, what="the copy acked unsent")
            stats = handle.engine.destinations[0].stats
        finally:
            handle.stop()
            if broker_url:
                delete_queues(settings)
        assert [b["entry"][0]["resource"]["identifier"][0]["value"] for b in server.applied] == ["6001", "6002"]
        assert stats.applied == 2


class _ReusedControlIds:
    """`P <id> <control id>`: a sender whose control ids start again (after a counter reset, say)."""

    def convert(self, data):
        from router.contracts import Converted, MessageHeader

        _, value, control = data.decode().split()
        system = "urn:helsebro:test:patient"
        header = MessageHeader(sending_application="PAS", sending_facility="TEST", receiving_application="HELSEBRO", receiving_facility="HB", message_code="ADT", trigger_event="A01", structure="ADT_A01", control_id=control, version="2.5.1")
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}, "request": {"method": "PUT", "url": f"Patient?identifier={system}|{value}"}}]}
        return [Converted(index=0, raw=data, control_id=control, sender="PAS@TEST", message_type="ADT^A01", patient_key=f"h:{value}", header=header, bundle=bundle)]


def test_new_content_under_a_reused_control_id_is_sent(tmp_path):
    """The ledger knows a message by its content too: a reused control id with new content reaches the server."""
    settings = isolated_settings(tmp_path, routes=_routes("strict", window=0))
    server = FakeServer()
    handle = run_engine_in_thread(settings, converter=_ReusedControlIds(), destination_clients={"ekstern": server})
    try:
        publish(settings, [b"P 7001 C1", b"P 7002 C1", b"P 7002 C1"])
        wait_until(lambda: len(server.applied) + handle.engine.destinations[0].stats.already_sent == 3, 60, what="all three handled")
    finally:
        handle.stop()
    assert [b["entry"][0]["resource"]["identifier"][0]["value"] for b in server.applied] == ["7001", "7002"]
    assert handle.engine.destinations[0].stats.already_sent == 1


def test_stop_does_not_wait_out_a_servers_retry_after(tmp_path, fake_converter):
    """The worker's own FhirClient waits between attempts through the worker: heartbeats go on and a stop ends the wait;
    the stopped worker closes that client, leaving no connection to the server open.

    With time.sleep a 503 asking for 60 s (capped at backoff_max_seconds) held the thread through
    every attempt: no broker heartbeat for minutes, and a stop that outlasted its grace. The message
    is not lost: stopping leaves it unacked, and the next start sends it.
    """
    busy = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    busy.requests = busy.closed = 0  # type: ignore[attr-defined]
    serving = threading.Thread(target=busy.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    serving.start()
    server = {"base_url": f"http://127.0.0.1:{busy.server_address[1]}/fhir", "backoff_max_seconds": 60}
    settings = isolated_settings(tmp_path, routes=_routes("strict", server=server))
    handle = run_engine_in_thread(settings, converter=fake_converter)
    try:
        publish(settings, [b"P 8001"])
        wait_until(lambda: busy.requests >= 1, 60, what="the first attempt")
        started = time.monotonic()
        handle.stop(timeout=15)
        took = time.monotonic() - started
        stats = handle.engine.destinations[0].stats
        wait_until(lambda: busy.closed == 1, 5, what="the stopped worker's client closing its connection")
    finally:
        busy.shutdown()
        busy.server_close()
    assert took < 5 and busy.requests == 1
    assert stats.applied == 0 and stats.dead_lettered == 0 and stats.failures == 0
    healthy = FakeServer()
    again = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": healthy})
    try:
        wait_until(lambda: len(healthy.applied) == 1, 60, what="the unacked message sent after the restart")
    finally:
        again.stop()


def test_unset_token_env_refuses_the_start(tmp_path, fake_converter, monkeypatch):
    """A destination whose bearer token's variable is unset refuses the engine's start with ConfigError.

    Before, the FhirClient was built inside the worker's thread: the ConfigError killed that thread
    alone, the engine ran on, and the destination's work queue only grew, with no line in the log.
    """
    monkeypatch.delenv("HELSEBRO_TEST_UNSET_TOKEN", raising=False)
    server = {"base_url": "http://127.0.0.1:9/fhir", "auth": {"type": "bearer", "token_env": "HELSEBRO_TEST_UNSET_TOKEN"}}
    settings = isolated_settings(tmp_path, routes=_routes("strict", server=server))
    with pytest.raises(ConfigError, match="HELSEBRO_TEST_UNSET_TOKEN"):
        run_engine_in_thread(settings, converter=fake_converter).stop()


class _StopsAtTheSecond(FakeServer):
    """Refuses the first message once the engine has forwarded them all, so they wait received behind it (the dead
    letter's confirm reads them off the socket); at the second, the destination worker is told to stop."""

    def __init__(self, engine, total: int) -> None:
        super().__init__()
        self.engine, self.total = engine, total

    def apply(self, bundle):
        self.calls += 1
        if self.calls == 1:
            wait_until(lambda: self.engine.stats.messages == self.total, 30, what="all forwarded")
            time.sleep(0.5)  # the broker pushes them within the prefetch window
            raise Refused("the server refused the transaction (422)")
        if self.calls == 2:
            stopper = threading.Thread(target=self.engine.destinations[0].stop, kwargs={"grace": 0})
            stopper.start()
            stopper.join()
        self.applied.append(bundle)


@pytest.mark.integration
def test_a_stop_ends_the_worker_after_the_message_in_hand(tmp_path, fake_converter):
    """Review H153: a stopped destination worker went on through every delivery it had taken (up to its prefetch, 20),
    sending each to the server, though stop() says "finish the message in hand". Past the engine's grace (30 s) the
    process then ended under a send, the case that sends a message twice. Now it stops after the one in hand; the
    rest stay unacked and the next start sends them, each once."""
    settings = isolated_settings(tmp_path, broker_url=RABBIT, routes=_routes("strict"))
    values = [str(9001 + i) for i in range(6)]
    server = _StopsAtTheSecond(None, len(values))
    handle = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": server})
    server.engine = handle.engine
    try:
        publish(settings, [f"P {v}".encode() for v in values])
        wait_until(lambda: server.calls >= 2 and handle.engine.destinations[0].thread is not None
                   and not handle.engine.destinations[0].thread.is_alive(), 60, what="the worker stopped")
        handle.stop()
        assert [b["entry"][0]["resource"]["identifier"][0]["value"] for b in server.applied] == [values[1]]
        healthy = FakeServer()
        again = run_engine_in_thread(settings, converter=fake_converter, destination_clients={"ekstern": healthy})
        try:
            wait_until(lambda: len(healthy.applied) >= len(values) - 2, 60, what="the rest sent after the restart")
            time.sleep(0.5)
        finally:
            again.stop()
    finally:
        delete_queues(settings)
    assert [b["entry"][0]["resource"]["identifier"][0]["value"] for b in healthy.applied] == values[2:]
