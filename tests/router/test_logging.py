"""Log lines (router/logging.py): one JSON object a line, patient data hashed or masked, whatever the values are."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

from router.logging import configure_logging, get_logger


@pytest.fixture
def lines():
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure_logging()


def test_a_line_is_json_with_patient_data_hashed_and_ids_masked(lines):
    get_logger("engine").info("delivery_settled", fnr="15866112379", name="Ødegård", reason="PID-3 15866112379 fails", outcome="applied", short="1586611237")
    (line,) = lines()
    assert line["event"] == "delivery_settled" and line["component"] == "engine" and line["level"] == "info"
    assert line["fnr"].startswith("h:") and line["name"].startswith("h:")
    assert line["reason"] == "PID-3 <11-digit id> fails"
    assert line["short"] == "1586611237"  # ten digits are no national id
    assert line["timestamp"].endswith("Z")


def test_values_json_cannot_hold_exactly_still_make_a_line(lines):
    """An integer past 64 bits (orjson refuses it) and objects without a JSON form: the line is written all the same."""
    get_logger("engine").info("odd_values", big=2**70, amount=Decimal("1.50"))
    (line,) = lines()
    assert line["big"] == 2**70
    assert line["amount"] == "Decimal('1.50')"


def test_a_keyed_hash_differs_by_secret_and_is_stable():
    """With HELSEBRO_PHI_KEY's secret a PHI field is an HMAC: the same for one secret, another for another, not the plain hash."""
    from router.logging import phi_hash

    stream = io.StringIO()
    try:
        for secret in (b"one", b"one", b"two", None):
            configure_logging(stream=stream, phi_key=secret)
            get_logger("engine").info("x", fnr="15866112379")
    finally:
        configure_logging()
    one, again, two, plain = (json.loads(line)["fnr"] for line in stream.getvalue().splitlines())
    assert one == again == phi_hash("15866112379", b"one") and len({one, two, plain}) == 3
    assert plain == phi_hash("15866112379")


def test_the_publishers_message_ids_reach_the_log_as_they_are(lines, monkeypatch):
    """An operator matches a log line's message id to its dead letter: the eleven-digit mask must never cut one.

    A prefix ending in three digits and a counter still below 0xa: run together they made
    eleven digits, and the log showed `…abc<11-digit id>` (about a tenth of all runs).
    """
    import uuid

    from adapters.amqp import outbound

    monkeypatch.setattr(outbound.uuid, "uuid4", lambda: uuid.UUID("abcdefab-cdef-abcd-efab-c123abcdefab"))
    ids = outbound._MessageIds()
    made = [ids.next() for _ in range(12)]
    for message_id in made:
        get_logger("engine").info("delivery_settled", message_id=message_id)
    assert [line["message_id"] for line in lines()] == made
    assert len(set(made)) == 12
