"""Taking dead letters off a queue and giving them back: order, ids, partial failure, a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from kombu import Producer

from adapters.amqp.connection import open_connection
from adapters.amqp.outbound import Publisher
from router.errors import BrokerUnavailable
from router.ops.deadletters import _act, _holding, browse, find, purge, summarise
from router.pipeline.settle import dead_letter_headers
from router.testing import delete_queues, drain_queue, isolated_settings, publish, queue_depth, settings_env, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, tmp_path):
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None)
    publish(s, [])  # declares the topology
    yield s
    if s.broker_url:
        delete_queues(s)


def _dead_letter(settings, body, *, reason="bad", stage="convert"):
    conn = open_connection(settings)
    try:
        publisher = Publisher(conn, settings)
        headers = dead_letter_headers(reason=reason, stage=stage, location="MSH", control_id=body.decode(), outcome={"resourceType": "OperationOutcome", "issue": []})
        message_id = publisher.dead_letter(body, headers=headers)
        publisher.close()
        return message_id
    finally:
        conn.release()


def _dlq(settings):
    return settings.engine.broker.names.dead_letter


def _with_conn(settings, fn, *args, **kwargs):
    conn = open_connection(settings)
    try:
        return fn(conn, *args, **kwargs)
    finally:
        conn.release()


def _bodies(settings):
    return [body for _, body in drain_queue(settings, _dlq(settings))]


class TestDeadLetters:
    def test_browse_gives_every_letter_back_in_order(self, settings):
        """Browsing twice sees the same letters in the same order, and the queue keeps them all."""
        ids = [_dead_letter(settings, f"m{i}".encode()) for i in range(5)]
        first = _with_conn(settings, browse, _dlq(settings))
        second = _with_conn(settings, browse, _dlq(settings))
        assert [d.id for d in first.letters] == [d.id for d in second.letters] == ids
        assert not first.truncated
        assert _bodies(settings) == [f"m{i}".encode() for i in range(5)]

    def test_browse_with_a_limit(self, settings):
        """A limit returns the first letters and says that more wait."""
        for i in range(3):
            _dead_letter(settings, f"m{i}".encode())
        result = _with_conn(settings, browse, _dlq(settings), limit=2)
        assert [d.control_id for d in result.letters] == ["m0", "m1"]
        assert result.truncated
        assert queue_depth(settings, _dlq(settings)) == 3

    def test_reads_the_reason_headers(self, settings):
        """Stage, reason, location, control id and size come from the headers and body length."""
        letter_id = _dead_letter(settings, b"abcdef", reason="no MSH", stage="convert")
        letter = _with_conn(settings, find, _dlq(settings), letter_id)
        assert (letter.stage, letter.reason, letter.location, letter.control_id, letter.size) == ("convert", "no MSH", "MSH", "abcdef", 6)
        assert letter.outcome() == {"resourceType": "OperationOutcome", "issue": []}

    def test_repeated_passes_keep_the_order(self, settings):
        """Pass after pass (finding a letter in the middle, browsing) leaves the queue in its order, depth visible at once."""
        ids = [_dead_letter(settings, f"m{i}".encode()) for i in range(4)]
        for _ in range(3):
            assert _with_conn(settings, find, _dlq(settings), ids[1]).control_id == "m1"
            assert queue_depth(settings, _dlq(settings)) == 4
        assert _with_conn(settings, find, _dlq(settings), "no-such-id") is None
        assert [d.id for d in _with_conn(settings, browse, _dlq(settings)).letters] == ids
        assert _bodies(settings) == [b"m0", b"m1", b"m2", b"m3"]

    def test_letters_dead_lettered_during_a_pass_come_after(self, settings):
        """A dead letter published while a pass holds the queue lands behind the held ones."""
        for i in range(2):
            _dead_letter(settings, f"m{i}".encode())
        conn = open_connection(settings)
        try:
            with _holding(conn, _dlq(settings)) as held:
                _dead_letter(settings, b"late")
                assert len(held) == 2
        finally:
            conn.release()
        assert _bodies(settings) == [b"m0", b"m1", b"late"]

    def test_content_id_without_a_message_id(self, settings):
        """A letter without message_id gets a stable h- id from its headers and body."""
        conn = open_connection(settings)
        try:
            Producer(conn.channel()).publish(b"raw", exchange="", routing_key=_dlq(settings), headers={"x-helsebro-reason": "r"}, content_type="application/octet-stream", content_encoding="binary")
        finally:
            conn.release()
        first = _with_conn(settings, browse, _dlq(settings)).letters[0].id
        second = _with_conn(settings, browse, _dlq(settings)).letters[0].id
        assert first == second and first.startswith("h-") and len(first) == 34

    def test_summarise_counts_per_stage_and_reason(self, settings):
        """Reasons are counted per stage, most frequent first."""
        _dead_letter(settings, b"a", reason="x")
        _dead_letter(settings, b"b", reason="y")
        _dead_letter(settings, b"c", reason="y")
        counts = summarise(_with_conn(settings, browse, _dlq(settings)).letters)
        assert [(c.stage, c.reason, c.count) for c in counts] == [("convert", "y", 2), ("convert", "x", 1)]

    def test_purge_removes_only_the_chosen(self, settings):
        """Purging two ids leaves the others in their order."""
        ids = [_dead_letter(settings, f"m{i}".encode()) for i in range(4)]
        result = _with_conn(settings, purge, _dlq(settings), [ids[1], ids[3], "no-such-id"])
        assert result.done == [ids[1], ids[3]]
        assert result.missing == ["no-such-id"]
        assert _bodies(settings) == [b"m0", b"m2"]

    def test_a_failure_midway_keeps_the_rest(self, settings):
        """When an action fails on a letter, that letter and every later one stay, in order."""
        ids = [_dead_letter(settings, f"m{i}".encode()) for i in range(4)]

        def fail_on_third(letter):
            if letter.id == ids[2]:
                raise BrokerUnavailable("publish failed: test")

        result = _with_conn(settings, _act, _dlq(settings), ids, fail_on_third)
        assert result.done == ids[:2]
        assert "publish failed" in result.error
        assert _bodies(settings) == [b"m2", b"m3"]

    def test_a_killed_process_loses_nothing(self, settings):
        """A process killed while it holds every letter unacked leaves them all in the queue, in order."""
        for i in range(3):
            _dead_letter(settings, f"m{i}".encode())
        script = textwrap.dedent("""
            import sys, time
            from adapters.amqp.connection import open_connection
            from router.ops.deadletters import _holding
            from router.settings import load_settings
            conn = open_connection(load_settings())
            with _holding(conn, sys.argv[1]) as held:
                print(len(held), flush=True)
                time.sleep(600)  # the test kills this process here
        """)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}, **settings_env(settings)}
        child = subprocess.Popen([sys.executable, "-c", script, _dlq(settings)], env=env, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        try:
            assert child.stdout.readline().strip() == "3"
            assert queue_depth(settings, _dlq(settings)) == 0
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            child.stdout.close()
        if not settings.broker_url:
            _with_conn(settings, lambda conn: conn.channel().close())  # a new embedded channel recovers a dead consumer's folder
        wait_until(lambda: queue_depth(settings, _dlq(settings)) == 3, 30, what="letters back")
        assert _bodies(settings) == [b"m0", b"m1", b"m2"]


def test_a_filter_by_age_never_chooses_a_letter_of_unknown_time():
    """`purge --all --older-than 7d` must not take a letter whose time no header says: it cannot be said to be old."""
    from router.ops.deadletters import DeadLetter, LetterFilter

    def letter(failed_at):
        return DeadLetter(id="x", failed_at=failed_at, stage="convert", reason="Bad thing", location=None, control_id="C1", size=0,
                          delivery_count=None, headers={}, body=b"", sender="LAB@STOLAV")

    now = 1_800_000_000.0
    old = "2020-01-01T00:00:00+00:00"
    assert LetterFilter(older_than=7 * 86400).matches(letter(old), now)
    assert not LetterFilter(older_than=7 * 86400).matches(letter(None), now)
    assert not LetterFilter(since=7 * 86400).matches(letter("not a time"), now)
    assert LetterFilter(reason="bad", sender="LAB@STOLAV", stage="convert", control_id="C1").matches(letter(None), now)
    assert not LetterFilter(sender="LAB").matches(letter(None), now)
    assert not LetterFilter() and LetterFilter(stage="apply")
