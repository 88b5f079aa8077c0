"""The worker loop on both transports: apply, dead-letter, reply, ack; transient failures; the catch-all."""

from __future__ import annotations

import socket

import orjson
import pytest

from router.contracts import Converted, MessageHeader
from router.errors import BrokerUnavailable, DecodeError, RecordUnavailable
from router.testing import (
    delete_queues,
    drain_queue,
    isolated_settings,
    publish,
    queue_depth,
    run_engine_in_thread,
    wait_until,
)

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
SYSTEM = "urn:helsebro:test:patient"
_ROUTES_NO_DUPLICATES = {"destinations": {"record": {"kind": "record"}}, "routes": [{"name": "all", "to": ["record"]}], "duplicates": {"window_seconds": 0}}


class FakeConverter:
    """A converter for tiny test messages: `P <id> [family]`, `BAD`, `INVALID`, `BOOM`, and `BATCH a b` (two patients)."""

    def convert(self, data: bytes) -> list[Converted]:
        words = data.decode("utf-8").split()
        if words[0] == "BOOM":
            raise RuntimeError("the converter broke on this one")
        if words[0] == "BATCH":
            return [self._one(i, f"P {w}".encode()) for i, w in enumerate(words[1:])]
        return [self._one(0, data)]

    def _one(self, index: int, raw: bytes) -> Converted:
        words = raw.decode("utf-8").split()
        control = f"CTRL-{words[1] if len(words) > 1 else words[0]}"
        header = MessageHeader(sending_application="PAS", sending_facility="TEST", receiving_application="HELSEBRO", receiving_facility="HB", message_code="ADT", trigger_event="A01", structure="ADT_A01", control_id=control, version="2.5.1")
        conv = Converted(index=index, raw=raw, control_id=control, sender="PAS@TEST", message_type="ADT^A01", patient_key="h:test", header=header)
        if words[0] == "BAD":
            conv.error = DecodeError("segment MSH is missing", location="MSH")
        elif words[0] == "INVALID":
            conv.bundle = {"resourceType": "Bundle", "type": "batch", "entry": []}
        else:
            patient = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": words[1]}]}
            if len(words) > 2:
                patient["name"] = [{"family": words[2]}]
            conv.bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{words[1]}"}}],
            }
        return conv


class FlakyRecord:
    """A Record whose apply (and batch apply) fails with RecordUnavailable *failures* times, then works."""

    def __init__(self, inner, failures: int, error=RecordUnavailable) -> None:
        self.inner = inner
        self.failures = failures
        self.error = error
        self.calls = 0

    def apply(self, bundle):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("database is restarting")
        return self.inner.apply(bundle)

    def apply_batch(self, bundles, keys=None, facts=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("database is restarting")
        return self.inner.apply_batch(bundles, keys, facts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def settings(broker_settings):
    """The shared broker fixture (tests/conftest.py): embedded and RabbitMQ."""
    return broker_settings


def _record(settings):
    from adapters.fhir.record import open_record

    return open_record(settings)


def _patients(settings, value):
    record = _record(settings)
    try:
        return record.search("Patient", {"identifier": f"{SYSTEM}|{value}"})
    finally:
        record.close()


def _engine(settings, **kwargs):
    kwargs.setdefault("converter", FakeConverter())
    return run_engine_in_thread(settings, **kwargs)


class TestEngine:
    def test_applies_replies_and_acks(self, settings):
        """A good message is applied, answered with AA on the replies queue, and leaves the inbound queue."""
        handle = _engine(settings)
        publish(settings, [b"P 1001 Testesen"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="settled")
        handle.stop()
        assert len(_patients(settings, "1001")) == 1
        replies = drain_queue(settings, settings.engine.broker.names.replies)
        assert [h["x-helsebro-ack-code"] for h, _ in replies] == ["AA"]
        assert b"MSA|AA|CTRL-1001" in replies[0][1]
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 0
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []

    def test_dead_letters_a_conversion_failure(self, settings):
        """A message that fails to convert goes to the DLQ with its reason headers and raw bytes, and gets an AR."""
        handle = _engine(settings)
        publish(settings, [b"BAD message"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="settled")
        handle.stop()
        [(headers, body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert body == b"BAD message"
        assert headers["x-helsebro-reason"] == "segment MSH is missing"
        assert headers["x-helsebro-stage"] == "convert"
        assert headers["x-helsebro-location"] == "MSH"
        assert headers["x-helsebro-control-id"] == "CTRL-message"
        assert headers["x-helsebro-failed-at"]
        assert orjson.loads(headers["x-helsebro-outcome"])["resourceType"] == "OperationOutcome"
        [(reply, ack)] = drain_queue(settings, settings.engine.broker.names.replies)
        assert reply["x-helsebro-ack-code"] == "AR"
        assert b"MSA|AR|" in ack
        assert b"\rERR||MSH^1|" in ack  # ERR-2 names the segment even without a field number

    def test_dead_letters_invalid_content_from_the_record(self, settings):
        """A Bundle the record refuses goes to the DLQ at stage apply and gets an AE."""
        handle = _engine(settings)
        publish(settings, [b"INVALID x"])
        wait_until(lambda: handle.stats.dead_lettered == 1, 30, what="dead-lettered")
        handle.stop()
        [(headers, _)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert headers["x-helsebro-stage"] == "apply"
        [(reply, _)] = drain_queue(settings, settings.engine.broker.names.replies)
        assert reply["x-helsebro-ack-code"] == "AE"

    def test_survives_an_internal_error(self, settings):
        """A delivery that breaks the code is dead-lettered as internal and the next one is still applied."""
        handle = _engine(settings)
        publish(settings, [b"BOOM", b"P 1002"])
        wait_until(lambda: handle.stats.messages == 2, 30, what="both settled")
        handle.stop()
        [(headers, body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert body == b"BOOM"
        assert headers["x-helsebro-stage"] == "internal"
        assert headers["x-helsebro-reason"] == "internal error: RuntimeError"
        assert len(_patients(settings, "1002")) == 1

    def test_a_dead_letter_names_its_sender_when_it_is_known(self, settings):
        """Review H131: a dead letter refused at convert or apply carried no `x-helsebro-sender`, so an operator could
        not tell whose it was without reading the body (patient data, audited). It now names the sender and the
        message type whenever they are known; one the converter broke on names none (nothing is known of it)."""
        handle = _engine(settings)
        publish(settings, [b"BAD message", b"INVALID x", b"BOOM"])
        wait_until(lambda: handle.stats.dead_lettered == 3, 30, what="three dead letters")
        handle.stop()
        letters = {h["x-helsebro-stage"]: h for h, _ in drain_queue(settings, settings.engine.broker.names.dead_letter)}
        for stage in ("convert", "apply"):
            assert (letters[stage].get("x-helsebro-sender"), letters[stage].get("x-helsebro-message-type")) == ("PAS@TEST", "ADT^A01"), stage
        assert not letters["internal"].get("x-helsebro-sender")

    def test_an_internal_dead_letter_names_the_sender_settling_broke_on(self, settings):
        """Review H131: converted (its sender known from MSH-3/4), then settling broke on it: the internal dead letter
        named no sender although the engine knew it."""
        record = FlakyRecord(_record(settings), failures=10_000, error=RuntimeError)
        handle = _engine(settings, record=record)
        publish(settings, [b"P 1011"])
        wait_until(lambda: handle.stats.dead_lettered == 1, 30, what="dead-lettered as internal")
        handle.stop()
        [(headers, _)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert headers["x-helsebro-stage"] == "internal"
        assert headers.get("x-helsebro-sender") == "PAS@TEST"

    def test_a_resent_message_is_a_duplicate(self, settings):
        """The same message (sender, MSH-10) sent twice is applied once; the copy is answered AA again, never applied."""
        seen = []
        handle = _engine(settings, on_settled=seen.append)
        publish(settings, [b"P 1003 Testesen", b"P 1003 Testesen"])
        wait_until(lambda: handle.stats.messages == 2, 30, what="both settled")
        handle.stop()
        assert [s.outcome for s in seen] == ["applied", "duplicate"]
        assert handle.stats.duplicates == 1
        [patient] = _patients(settings, "1003")
        assert patient["meta"]["versionId"] == "1"
        replies = drain_queue(settings, settings.engine.broker.names.replies)
        assert [h["x-helsebro-ack-code"] for h, _ in replies] == ["AA", "AA"]

    def test_replay_changes_nothing(self, settings, tmp_path):
        """With duplicate detection off, the same message applied twice leaves the record as one application did."""
        settings = isolated_settings(tmp_path / "nodup", broker_url=settings.broker_url, routes=_ROUTES_NO_DUPLICATES)
        seen = []
        handle = _engine(settings, on_settled=seen.append)
        publish(settings, [b"P 1003 Testesen", b"P 1003 Testesen"])
        wait_until(lambda: handle.stats.messages == 2, 30, what="both settled")
        handle.stop()
        if settings.broker_url:
            delete_queues(settings)
        assert [s.outcome for s in seen] == ["applied", "unchanged"]
        [patient] = _patients(settings, "1003")
        assert patient["meta"]["versionId"] == "1"

    def test_settles_a_batch_in_one_delivery(self, settings):
        """Every message of a batch delivery is applied and answered; the delivery is acked once."""
        handle = _engine(settings)
        publish(settings, [b"BATCH 2001 2002 2003"])
        wait_until(lambda: handle.stats.messages == 3, 30, what="batch settled")
        handle.stop()
        assert handle.stats.deliveries == 1
        assert all(len(_patients(settings, v)) == 1 for v in ("2001", "2002", "2003"))
        assert len(drain_queue(settings, settings.engine.broker.names.replies)) == 3

    def test_keeps_publish_order(self, settings):
        """Deliveries are settled in the order they were published."""
        seen = []
        handle = _engine(settings, on_settled=seen.append)
        publish(settings, [f"P {3000 + i}".encode() for i in range(40)])
        wait_until(lambda: handle.stats.messages == 40, 60, what="all settled")
        handle.stop()
        assert [s.control_id for s in seen] == [f"CTRL-{3000 + i}" for i in range(40)]

    def test_waits_out_a_record_outage(self, settings):
        """RecordUnavailable is retried with backoff on the same delivery, never dead-lettered."""
        record = FlakyRecord(_record(settings), failures=2)
        handle = _engine(settings, record=record)
        publish(settings, [b"P 1004"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="settled after the outage")
        handle.stop()
        assert record.calls == 3
        assert handle.stats.applied == 1
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []

    def test_a_record_outage_counts_as_a_reconnect(self, settings):
        """Review H99: a record outage waited out in settle counts once in `reconnects` (helsebro_reconnects_total,
        whose HELP text and runbook alert promise record outages too); it stayed 0."""
        record = FlakyRecord(_record(settings), failures=2)
        handle = _engine(settings, record=record)
        publish(settings, [b"P 1009"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="settled after the outage")
        handle.stop()
        assert handle.stats.reconnects == 1

    def test_a_batch_cut_by_a_broker_outage_is_counted_once(self, settings):
        """Review H99: deliveries and batches count when they settle; a batch the broker's loss interrupted was
        counted, then counted again when it came back."""
        record = FlakyRecord(_record(settings), failures=1, error=BrokerUnavailable)
        handle = _engine(settings, record=record)
        publish(settings, [b"P 1010"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="settled after the reconnect")
        handle.stop()
        assert record.calls == 2 and handle.stats.reconnects == 1
        assert (handle.stats.deliveries, handle.stats.batches) == (1, 1)

    def test_stop_during_an_outage_keeps_the_message(self, settings):
        """Stopping while the record is down leaves the delivery unacked: it is back in the queue."""
        record = FlakyRecord(_record(settings), failures=10_000)
        handle = _engine(settings, record=record)
        publish(settings, [b"P 1005"])
        wait_until(lambda: record.calls >= 1, 30, what="first apply attempt")
        handle.stop()
        assert handle.stats.messages == 0
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 1
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []

    def test_until_idle_returns(self, settings):
        """run(until_idle=…) returns by itself once the inbound queue stays empty."""
        publish(settings, [b"P 1006"])
        handle = _engine(settings, until_idle=0.5)
        handle.thread.join(30)
        assert not handle.thread.is_alive()
        assert handle.stats.applied == 1

    def test_reconnects_after_losing_the_connection(self, settings):
        """When the broker connection drops, the engine reconnects and goes on consuming."""
        handle = _engine(settings)
        publish(settings, [b"P 1007"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="first settled")
        _break_connection(handle.engine)
        wait_until(lambda: handle.stats.reconnects >= 1, 30, what="reconnect")
        publish(settings, [b"P 1008"])
        wait_until(lambda: handle.stats.messages == 2, 30, what="second settled")
        handle.stop()
        assert len(_patients(settings, "1008")) == 1

    def test_an_outage_that_takes_several_tries_counts_once(self, settings):
        """`reconnects` (helsebro_reconnects_total, "the broker or the record keeps going away") counts outages: a broker
        that stays away for three connection attempts is one outage, as a record outage waited out in settle is;
        it counted every failed try, so one restart of the broker tripped the runbook's alert."""
        handle = _engine(settings)
        publish(settings, [b"P 1011"])
        wait_until(lambda: handle.stats.messages == 1, 30, what="first settled")
        engine = handle.engine
        connect, tries = engine._connect, []

        def refused() -> None:
            tries.append(1)
            if len(tries) <= 3:
                raise BrokerUnavailable("broker still away")
            connect()

        engine._connect = refused
        _break_connection(engine)
        publish(settings, [b"P 1012"])
        wait_until(lambda: handle.stats.messages == 2, 60, what="settled after the outage")
        handle.stop()
        assert len(tries) >= 4  # the test can fail: the engine met the broker away three times
        assert handle.stats.reconnects == 1


def _break_connection(engine):
    """Cut the engine's broker connection under it, the way a broker restart does."""
    conn = engine._conn
    if getattr(conn.connection, "sock", None) is not None:  # pyamqp

        conn.connection.sock.shutdown(socket.SHUT_RDWR)
    else:
        # The embedded transport has no socket: make the next poll fail as a lost broker would.
        channel = engine._inbound._channel

        def broken(*_a, **_k):
            raise OSError("broker folder went away")

        channel._get = broken

