"""Through the queue: a batch delivery whose BTS-1 count disagrees with what arrived is applied, and its loss dead-lettered and answered."""

from __future__ import annotations

import orjson

from adapters.fhir.record import open_record
from router.testing import adt_message, drain_queue, publish, wait_until
from schemas.identity import FNR_SYSTEM, first_valid_fnr

FNRS = [first_valid_fnr(1 + i, 4, 80, 200 + i, synthetic=True) for i in range(2)]


def _batch(bts: str) -> bytes:
    messages = b"".join(adt_message("A01", control_id=f"QB{i}", fnr=fnr, local_id=f"Q{i}", visit=f"QV{i}") for i, fnr in enumerate(FNRS))
    return b"FHS|^~\\&|PAS|STOLAV\rBHS|^~\\&|PAS|STOLAV|||||||BATCH-9\r" + messages + f"BTS|{bts}\rFTS|1\r".encode()


def _patients(settings) -> int:
    record = open_record(settings)
    try:
        return sum(len(record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})) for fnr in FNRS)
    finally:
        record.close()


class TestBatchCountsThroughTheQueue:
    def test_a_short_batch_applies_what_arrived_and_dead_letters_the_loss(self, engine):
        """BTS-1 says 3, two arrived: both applied (AA each), plus one dead letter at BTS-1 holding only the envelope, answered AR."""
        settings, handle = engine
        publish(settings, [_batch("3")])
        wait_until(lambda: handle.stats.messages == 3, timeout=60, what="settled")
        assert (handle.stats.applied, handle.stats.dead_lettered) == (2, 1)
        assert _patients(settings) == 2
        [(headers, body)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert headers["x-helsebro-location"] == "BTS-1"
        assert headers["x-helsebro-reason"].startswith("BTS-1 says 3 messages, the batch holds 2")
        assert headers["x-helsebro-control-id"] == "BATCH-9"
        assert orjson.loads(headers["x-helsebro-outcome"])["issue"][0]["expression"] == ["BTS-1"]
        assert b"MSH" not in body and b"PID" not in body and body.startswith(b"FHS")  # the envelope, no message and no patient
        replies = drain_queue(settings, settings.engine.broker.names.replies)
        assert sorted(h["x-helsebro-ack-code"] for h, _ in replies) == ["AA", "AA", "AR"]
        [nack] = [body for h, body in replies if h["x-helsebro-ack-code"] == "AR"]
        assert b"MSA|AR|BATCH-9|" in nack and b"BTS^1^1" in nack  # MSA-2 the batch's control id (BHS-11); ERR-2 at BTS-1

    def test_a_batch_whose_count_agrees_is_applied_with_no_dead_letter(self, engine):
        """BTS-1 says 2, two arrived: two applied, nothing dead-lettered."""
        settings, handle = engine
        publish(settings, [_batch("2")])
        wait_until(lambda: handle.stats.messages == 2, timeout=60, what="settled")
        assert (handle.stats.applied, handle.stats.dead_lettered) == (2, 0)
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []
