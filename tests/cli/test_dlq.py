"""`helsebro dlq list|show|replay|purge` through the CLI, on dead letters the engine really produced, on both transports."""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.amqp.connection import open_connection
from adapters.amqp.outbound import Publisher
from router.cli import main
from router.pipeline.settle import dead_letter_headers
from router.testing import adt_message, drain_with_ids, isolated_settings, publish, queue_depth, run_engine_in_thread, wait_until
from schemas.identity import FNR_SYSTEM, first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
BAD_FNR = "15866112378"  # fails its check digits
GOOD_FNR = "15866112379"  # synthetic (Tenor, month + 80)
NOT_HL7 = b"not hl7"
LIST_KEYS = {"id", "failed_at", "stage", "reason", "location", "control_id", "size", "delivery_count", "patient_key"}
NO_MSH = "not an HL7 v2 message: no MSH segment found"


class QuietLogger:
    """A logger that drops every event, so the engine's lines stay out of the CLI's captured output."""

    def __getattr__(self, _name):
        return lambda *_a, **_k: self


def _engine(settings):
    return run_engine_in_thread(settings, logger=QuietLogger())


class Tty(io.StringIO):
    """A terminal that types *answer*."""

    def isatty(self):
        return True


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, exported):
    return exported(RABBIT if request.param == "rabbitmq" else None)


@pytest.fixture
def dead(settings):
    """Two dead letters from a real engine run: not HL7, then an ADT with a bad fnr check digit."""
    publish(settings, [NOT_HL7, adt_message("A01", control_id="DLQ1", fnr=BAD_FNR, local_id="L1", visit="V1")])
    handle = _engine(settings)
    wait_until(lambda: handle.stats.dead_lettered == 2, 30, what="two dead letters")
    handle.stop()
    return settings


def _cli(capsys, *args):
    capsys.readouterr()
    code = main(["dlq", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _listed(capsys):
    code, out, _ = _cli(capsys, "list", "--json")
    assert code == 0
    return json.loads(out)["dead_letters"]


def _audit(settings):
    path = settings.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _good_dead_letter(settings, body):
    """Put *body* on the DLQ as if an earlier, since fixed, mapping had refused it."""
    conn = open_connection(settings)
    try:
        publisher = Publisher(conn, settings)
        headers = dead_letter_headers(reason="no mapping for ADT_A01", stage="convert", location=None, control_id="GOOD1", outcome={"resourceType": "OperationOutcome", "issue": []})
        publisher.dead_letter(body, headers=headers)
        publisher.close()
    finally:
        conn.release()


class TestDlq:
    def test_list_shows_reasons_never_bodies(self, dead, capsys):
        """`list` shows one line per dead letter with reason and position, and no patient data."""
        code, out, _ = _cli(capsys, "list")
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split()[:4] == ["ID", "FAILED", "AT", "STAGE"]
        assert NO_MSH in lines[1] and "PID-3[1].1" in lines[2] and "DLQ1" in lines[2]
        assert lines[-1].startswith("2 dead letters in ")
        for secret in (BAD_FNR, "Testesen", "Kari", "not hl7", "19850315"):
            assert secret not in out

    def test_list_json_shape(self, dead, capsys):
        """`list --json` gives each dead letter's summary fields, in queue order, and no body."""
        code, out, _ = _cli(capsys, "list", "--json")
        doc = json.loads(out)
        assert code == 0
        assert set(doc) == {"queue", "truncated", "dead_letters"}
        assert doc["queue"] == dead.engine.broker.names.dead_letter and doc["truncated"] is False
        first, second = doc["dead_letters"]
        assert set(first) == set(second) == LIST_KEYS
        assert (first["stage"], first["reason"], first["location"], first["size"]) == ("convert", NO_MSH, "MSH", len(NOT_HL7))
        assert (second["control_id"], second["location"]) == ("DLQ1", "PID-3[1].1")
        assert BAD_FNR not in out

    def test_list_limit(self, dead, capsys):
        """`--limit 1` lists the first dead letter and says more wait."""
        code, out, _ = _cli(capsys, "list", "--json", "--limit", "1")
        doc = json.loads(out)
        assert code == 0 and doc["truncated"] is True and len(doc["dead_letters"]) == 1
        assert doc["dead_letters"][0]["reason"] == NO_MSH
        assert queue_depth(dead, dead.engine.broker.names.dead_letter) == 2

    def test_show_gives_headers_and_outcome_without_body(self, dead, capsys):
        """`show ID` prints the headers and the OperationOutcome, hides the body, and audits nothing."""
        letter = _listed(capsys)[1]
        code, out, _ = _cli(capsys, "show", letter["id"], "--json")
        doc = json.loads(out)
        assert code == 0
        assert set(doc) == {"queue", "dead_letter", "headers", "outcome", "body", "body_charset"}
        assert doc["body_charset"] is None
        assert doc["dead_letter"] == letter | {"delivery_count": doc["dead_letter"]["delivery_count"]}
        assert doc["headers"]["x-helsebro-location"] == "PID-3[1].1"
        assert doc["outcome"]["issue"][0]["expression"] == ["PID-3[1].1"]
        assert doc["body"] is None
        code, out, _ = _cli(capsys, "show", letter["id"])
        assert "not shown" in out and BAD_FNR not in out
        assert _audit(dead) == []

    def test_show_body_asks_and_is_audited(self, dead, capsys, monkeypatch):
        """`show --body` asks on the terminal, writes the audit line, then shows the body."""
        monkeypatch.setenv("HELSEBRO_OPERATOR", "kari.operator")
        letter = _listed(capsys)[1]
        monkeypatch.setattr("sys.stdin", Tty("y\n"))
        code, out, err = _cli(capsys, "show", letter["id"], "--body")
        assert code == 0
        assert "[y/N]" in err
        assert BAD_FNR in out
        begin, end = _audit(dead)
        assert (begin["action"], begin["event"], begin["ids"]) == ("show_body", "begin", [letter["id"]])
        assert (end["event"], end["done"]) == ("end", [letter["id"]])
        assert begin["operator"] == "kari.operator" and begin["user"]

    @pytest.mark.parametrize(("body", "charset"), [
        ("MSH|^~\\&|PAS|STOLAV|HB|HP|20240101||ADT^A01|L1|P|2.5.1||||||8859/1\rPID|1||||SKJØRSÆTER^ÅSE\r".encode("iso-8859-1"), "iso8859-1"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><MsgHead><Navn>SKJØRSÆTER ÅSE</Navn></MsgHead>'.encode("iso-8859-1"), "iso8859-1"),
        ("MSH|^~\\&|PAS|STOLAV|HB|HP|20240101||ADT^A01|L2|P|2.5.1\rPID|1||||SKJØRSÆTER^ÅSE\r".encode("iso-8859-1"), "iso-8859-1"),
        ("MSH|^~\\&|PAS|STOLAV|HB|HP|20240101||ADT^A01|L3|P|2.5.1\rPID|1||||SKJØRSÆTER^ÅSE\r".encode(), "utf-8"),
    ], ids=["hl7-msh18", "xml-declaration", "hl7-undeclared", "utf-8"])
    def test_show_body_reads_the_charset_the_message_names(self, settings, capsys, body, charset):
        """A Latin-1 body is shown with its æøå, in the charset MSH-18 or the XML declaration names (ISO-8859-1 when
        it names none), not as replacement characters (review H89); `--json` says which in `body_charset`."""
        publish(settings, [])  # declares the queues
        _good_dead_letter(settings, body)
        [letter] = _listed(capsys)
        code, out, _ = _cli(capsys, "show", letter["id"], "--body", "--yes", "--json")
        doc = json.loads(out)
        assert code == 0 and "SKJØRSÆTER" in doc["body"] and "\ufffd" not in doc["body"]
        assert doc["body_charset"] == charset
        code, out, _ = _cli(capsys, "show", letter["id"], "--body", "--yes")
        assert "SKJØRSÆTER" in out and (f"body ({charset}):" in out) == (charset != "utf-8")

    def test_show_body_into_a_closed_pipe_is_audited_to_the_end(self, dead, capsys, monkeypatch):
        """`show --body --yes | head -1`: the reader goes, the write fails. The end line is still written (the
        body was at least partly shown) and the error is not blamed on the audit log."""
        letter_id = _listed(capsys)[1]["id"]

        def reader_gone(*_args, **_kwargs):
            raise BrokenPipeError(32, "Broken pipe")

        monkeypatch.setattr("router.cli.dlq._print_letter", reader_gone)
        code, _, err = _cli(capsys, "show", letter_id, "--body", "--yes")
        assert code == 1 and "audit log" not in err
        begin, end = _audit(dead)
        assert (begin["event"], end["event"], end["action_id"], end["done"]) == ("begin", "end", begin["action_id"], [letter_id])

    def test_a_senders_control_characters_never_reach_the_operators_terminal(self, settings, capsys):
        """A dead letter is whatever a sender sent: an ESC in MSH-10 or in the body went raw to the terminal in
        `list`, `show` and `show --body`, where `ESC [2J` clears the operator's screen and `ESC ]` retitles it or
        worse. The text views now show such characters as escapes (`\\x1b`); --json always escaped them."""
        publish(settings, [adt_message("A01", control_id="ESC\x1b[2J", fnr=BAD_FNR, local_id="L1", visit="V1\x1b]0;owned\x07\x9b")])
        handle = _engine(settings)
        wait_until(lambda: handle.stats.dead_lettered == 1, 30, what="the dead letter")
        handle.stop()
        [letter] = _listed(capsys)
        assert letter["control_id"] == "ESC\x1b[2J"  # the data as it is
        for args in (("list",), ("show", letter["id"]), ("show", letter["id"], "--body", "--yes")):
            code, out, _ = _cli(capsys, *args)
            assert code == 0
            assert not any(ch in out for ch in "\x1b\x07\x9b"), args
            assert "ESC\\x1b[2J" in out, args
        assert "V1\\x1b]0;owned\\x07\\x9b" in out
        code, out, _ = _cli(capsys, "show", letter["id"], "--body", "--yes", "--json")
        assert code == 0 and "V1\x1b]0;owned\x07\x9b" in json.loads(out)["body"]

    def test_show_body_refused(self, dead, capsys, monkeypatch):
        """Answering no, or having no terminal and no --yes, exits 2 without the body; the no alone is audited (review H190)."""
        letter_id = _listed(capsys)[1]["id"]
        code, out, err = _cli(capsys, "show", letter_id, "--body")
        assert code == 2 and "not a terminal" in err and BAD_FNR not in out
        monkeypatch.setattr("sys.stdin", Tty("n\n"))
        code, out, _ = _cli(capsys, "show", letter_id, "--body")
        assert code == 2 and BAD_FNR not in out
        assert [(a["action"], a["event"]) for a in _audit(dead)] == [("show_body", "declined")]

    def test_show_unknown_id(self, dead, capsys):
        """An id that is not in the queue exits 1."""
        code, _, err = _cli(capsys, "show", "no-such-id")
        assert code == 1 and "no dead letter with id no-such-id" in err

    def test_replay_of_an_unfixed_message_comes_back(self, dead, capsys):
        """Replayed twice, the same bad messages return to the DLQ each time with the same reasons, in order."""
        before = _listed(capsys)
        handle = _engine(dead)
        try:
            for round_ in (1, 2):
                code, out, _ = _cli(capsys, "replay", "--all", "--yes")
                assert code == 0, out
                assert out.splitlines()[-1] == "2 replayed, 0 no longer found"
                wait_until(lambda r=round_: handle.stats.dead_lettered == 2 * r, 30, what="replays dead-lettered again")
                wait_until(lambda: queue_depth(dead, dead.engine.broker.names.dead_letter) == 2, 30, what="two dead letters")
        finally:
            handle.stop()
        after = _listed(capsys)
        assert [(d["reason"], d["control_id"]) for d in after] == [(d["reason"], d["control_id"]) for d in before]
        assert not {d["id"] for d in after} & {d["id"] for d in before}
        replays = [line for line in _audit(dead) if line["action"] == "replay"]
        assert [line["event"] for line in replays] == ["begin", "end", "begin", "end"]
        assert replays[1]["count"] == 2 and replays[1]["done"] == [d["id"] for d in before]

    def test_a_replay_that_fails_again_names_the_letter_it_replaced(self, dead, capsys):
        """Review H131: a replayed letter that failed again came back under a new id with its new reason only, nothing
        linking it to the letter it replaced. It now carries `x-helsebro-replay-of` (that letter's id) and the earlier
        reasons, newest first (`x-helsebro-previous-reason`), which `dlq show` prints."""
        first = _listed(capsys)
        handle = _engine(dead)
        try:
            ids = [first]
            for round_ in (1, 2):
                assert _cli(capsys, "replay", "--all", "--yes")[0] == 0
                wait_until(lambda r=round_: handle.stats.dead_lettered == 2 * r, 30, what="replays dead-lettered again")
                wait_until(lambda: queue_depth(dead, dead.engine.broker.names.dead_letter) == 2, 30, what="two dead letters")
                ids.append(_listed(capsys))
        finally:
            handle.stop()
        for n, letter in enumerate(ids[2]):
            code, out, _ = _cli(capsys, "show", letter["id"], "--json")
            headers = json.loads(out)["headers"]
            assert code == 0 and headers["x-helsebro-replay-of"] == ids[1][n]["id"]
            reason = f"{letter['stage']}: {letter['reason']}"
            assert headers["x-helsebro-previous-reason"] == f"{reason} | {reason}", headers  # twice refused before, alike
            assert all(isinstance(v, (str, int)) for k, v in headers.items() if k.startswith("x-helsebro-"))
            code, out, _ = _cli(capsys, "show", letter["id"])
            assert code == 0 and re.search(rf"x-helsebro-replay-of +{re.escape(ids[1][n]['id'])}", out), out
        for secret in (BAD_FNR, "Testesen", "Kari"):
            assert secret not in json.dumps(ids[2])

    def test_replay_of_a_fixed_message_applies_it_once(self, settings, capsys):
        """A dead letter held twice (a duplicate after a crash) replays into one patient, one version."""
        fnr = first_valid_fnr(12, 3, 85, 432, synthetic=True)
        body = adt_message("A01", control_id="GOOD1", fnr=fnr, local_id="L9", visit="V9")
        publish(settings, [])
        _good_dead_letter(settings, body)
        _good_dead_letter(settings, body)
        handle = _engine(settings)
        try:
            code, out, _ = _cli(capsys, "replay", "--all", "--yes")
            assert code == 0, out
            wait_until(lambda: handle.stats.messages == 2, 30, what="both replays settled")
        finally:
            handle.stop()
        assert (handle.stats.applied, handle.stats.unchanged, handle.stats.dead_lettered) == (1, 1, 0)
        assert _listed(capsys) == []
        from adapters.fhir.record import open_record

        record = open_record(settings)
        try:
            [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
        finally:
            record.close()
        assert patient["meta"]["versionId"] == "1"

    def test_replay_of_a_kith_message_applies_it_without_a_second_apprec(self, settings, capsys):
        """docs/decisions.md: an e-resept M5 for a prescription the record lacks is dead-lettered and answered AppRec
        X99, "and can be replayed once the M1 is in". The replay was settled as a duplicate (its MsgId was answered
        before): never applied, the prescription never stopped. Now it is applied; its sender, answered once, gets no
        second AppRec for that MsgId (HITS 1168 §5.4)."""
        from pathlib import Path

        from lxml import etree

        from adapters.fhir.record import open_record
        from router.testing import drain_queue

        cases = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages"
        m1, m5 = (cases / "ERM1.cases" / "resept_pakning.xml").read_bytes(), (cases / "ERM5.cases" / "tilbakekalling.xml").read_bytes()
        handle = _engine(settings)
        try:
            publish(settings, [m5])
            wait_until(lambda: handle.stats.dead_lettered == 1, 30, what="the M5 dead-lettered")
            publish(settings, [m1])
            wait_until(lambda: handle.stats.applied == 1, 30, what="the M1 applied")
            code, out, _ = _cli(capsys, "replay", "--all", "--yes")
            assert code == 0, out
            wait_until(lambda: handle.stats.messages == 3, 30, what="the replay settled")
        finally:
            handle.stop()
        assert (handle.stats.applied, handle.stats.duplicates, handle.stats.dead_lettered) == (2, 0, 1)
        record = open_record(settings)
        try:
            [prescription] = record.search("MedicationRequest", {"identifier": "urn:ietf:rfc:3986|urn:uuid:5b1f0c1e-2d3a-4c4b-9e5f-0a1b2c3d4e01"})
        finally:
            record.close()
        assert prescription["status"] == "stopped"
        answers = []
        for _headers, body in drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233"):
            root = etree.fromstring(body)
            found = {etree.QName(e).localname: (e.get("V") or e.text) for e in root.iter() if isinstance(e.tag, str)}
            answers.append((root.findtext("{*}OriginalMsgId/{*}Id"), found["Status"], found.get("Error")))
        assert answers == [("9c2d4e6f-7a8b-4c9d-8e0f-1a2b3c4d5e05", "2", "X99"), ("5b1f0c1e-2d3a-4c4b-9e5f-0a1b2c3d4e01", "1", None)]

    def test_replay_of_one_id_leaves_the_others(self, dead, capsys):
        """Replaying one id moves only that letter to the inbound queue; the other keeps its place."""
        first, second = _listed(capsys)
        code, out, _ = _cli(capsys, "replay", second["id"], "--yes")
        assert code == 0 and f"replayed {second['id']}" in out
        assert [d["id"] for d in _listed(capsys)] == [first["id"]]
        assert queue_depth(dead, dead.engine.broker.names.inbound) == 1

    def test_a_letter_another_operator_took_meanwhile_is_named(self, dead, capsys, monkeypatch):
        """Two operators: while the first is asked `Replay 2 dead letters ...? [y/N]`, the second purges one of them.
        The first's replay does the other and exits 1; stderr names the letter it no longer found (it said only
        "1 no longer found", and which one the operator had to dig out of the audit log), and so does the end line."""
        first, second = _listed(capsys)

        class SecondOperatorMeanwhile(Tty):
            def readline(self, *_args):
                assert main(["dlq", "purge", first["id"], "--yes"]) == 0
                return "y\n"

        monkeypatch.setattr("sys.stdin", SecondOperatorMeanwhile())
        code, out, err = _cli(capsys, "replay", "--all")
        assert code == 1
        assert out.splitlines()[-1] == "1 replayed, 1 no longer found"
        assert f"no longer in {dead.engine.broker.names.dead_letter}: {first['id']}" in err
        end = _audit(dead)[-1]
        assert (end["action"], end["done"], end["missing"]) == ("replay", [second["id"]], [first["id"]])

    def test_replay_unknown_id_does_nothing(self, dead, capsys):
        """One unknown id among the given ones exits 1 before anything is asked, moved or audited."""
        first = _listed(capsys)[0]
        code, _, err = _cli(capsys, "replay", first["id"], "nope", "--yes")
        assert code == 1 and "nope" in err
        assert len(_listed(capsys)) == 2 and _audit(dead) == []

    def test_replay_names_a_letter_the_broker_kept_after_publishing_it(self, dead, capsys, monkeypatch):
        """The broker fails between a replay's confirmed publish and the dead letter's ack: that letter is
        replayed *and* still a dead letter. Output and audit say so; before, both said it was not replayed."""
        from kombu.message import Message

        first, second = _listed(capsys)
        real_ack, acks = Message.ack, []

        def ack_then_lose_the_broker(message, *args, **kwargs):
            acks.append(1)
            if len(acks) == 2:
                raise ConnectionResetError(104, "Connection reset by peer")
            return real_ack(message, *args, **kwargs)

        monkeypatch.setattr(Message, "ack", ack_then_lose_the_broker)
        code, out, err = _cli(capsys, "replay", "--all", "--yes")
        monkeypatch.setattr(Message, "ack", real_ack)
        assert code == 1
        assert out.splitlines() == [f"replayed {first['id']}", "1 replayed, 0 no longer found"]
        assert f"{second['id']} was replayed, but the broker failed before it left" in err
        assert queue_depth(dead, dead.engine.broker.names.inbound) == 2
        assert [d["id"] for d in _listed(capsys)] == [second["id"]]
        end = _audit(dead)[-1]
        assert (end["event"], end["done"], end["kept"]) == ("end", [first["id"]], [second["id"]])
        assert "ConnectionResetError" in end["error"]

    def test_a_replay_that_fails_before_moving_anything_still_writes_its_end_line(self, dead, capsys, monkeypatch):
        """The broker goes between the question and the act: the begin line gets its end line, saying nothing was done."""
        from router.errors import BrokerUnavailable

        def gone(*_args, **_kwargs):
            raise BrokerUnavailable("cannot declare the topology: ConnectionRefusedError")

        monkeypatch.setattr("router.cli.dlq.declare_topology", gone)
        code, _, err = _cli(capsys, "replay", "--all", "--yes")
        assert code == 1 and "cannot declare the topology" in err
        begin, end = _audit(dead)
        assert (begin["event"], end["event"], end["action_id"]) == ("begin", "end", begin["action_id"])
        assert (end["done"], end["count"]) == ([], 0) and "cannot declare" in end["error"]
        assert len(_listed(capsys)) == 2

    def test_an_end_line_that_cannot_be_written_does_not_hide_what_was_done(self, dead, capsys, monkeypatch):
        """The audit log fails after the purge: the purged ids are still printed, then the audit error, exit 1."""
        from router.ops import AuditLog

        def full(*_args, **_kwargs):
            raise OSError(28, "No space left on device")

        first, _ = _listed(capsys)
        monkeypatch.setattr(AuditLog, "end", full)
        code, out, err = _cli(capsys, "purge", first["id"], "--yes")
        assert code == 1
        assert out.splitlines() == [f"purged {first['id']}", "1 purged, 0 no longer found"]
        assert "audit log" in err and "No space left" in err

    def test_ctrl_c_during_a_replay_reports_and_audits_what_was_done(self, dead, capsys, monkeypatch):
        """Ctrl-C in the middle of `replay --all`: the letters replayed so far are printed and in the end line,
        the rest stays, exit 130. Before, the KeyboardInterrupt left a begin line alone and printed nothing."""
        from adapters.amqp.outbound import Publisher

        first, second = _listed(capsys)
        real, calls = Publisher.publish_inbound, []

        def interrupted_on_the_second(publisher, body, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(publisher, body, **kwargs)

        monkeypatch.setattr(Publisher, "publish_inbound", interrupted_on_the_second)
        code, out, err = _cli(capsys, "replay", "--all", "--yes")
        monkeypatch.setattr(Publisher, "publish_inbound", real)
        assert code == 130
        assert out.splitlines() == [f"replayed {first['id']}", "1 replayed, 0 no longer found"]
        assert "interrupted" in err
        begin, end = _audit(dead)
        assert (end["event"], end["action_id"], end["done"], end["kept"]) == ("end", begin["action_id"], [first["id"]], [])
        assert "interrupted" in end["error"]
        assert [d["id"] for d in _listed(capsys)] == [second["id"]]

    def test_purge_into_a_closed_pipe_is_audited_to_the_end(self, dead, capsys, monkeypatch):
        """`purge --all --yes | head -1`: the purge is done when the report's write fails; the end line is still
        written with what was done, and the error is not blamed on the audit log."""
        ids = [d["id"] for d in _listed(capsys)]

        def reader_gone(*_args, **_kwargs):
            raise BrokenPipeError(32, "Broken pipe")

        real_print = print
        monkeypatch.setattr("builtins.print", lambda *a, **k: reader_gone() if k.get("file") is None else None)
        code = main(["dlq", "purge", "--all", "--yes"])
        monkeypatch.setattr("builtins.print", real_print)
        assert code == 1
        begin, end = _audit(dead)
        assert (end["event"], end["action_id"], end["done"]) == ("end", begin["action_id"], ids)

    def test_replay_and_purge_need_ids_or_all(self, dead, capsys):
        """Replay without ids or --all, or either verb with both, is a usage error."""
        assert _cli(capsys, "replay", "--yes")[0] == 2
        assert _cli(capsys, "purge", "x", "--all", "--yes")[0] == 2
        assert len(_listed(capsys)) == 2

    def test_purge_alone_is_purge_all_after_the_same_question(self, dead, capsys, monkeypatch):
        """`dlq purge` as the issue writes it: every dead letter, asked first; a no deletes nothing."""
        monkeypatch.setattr("sys.stdin", Tty("n\n"))
        code, _, err = _cli(capsys, "purge")
        assert code == 2 and "Purge (delete for good) 2 dead letters from" in err
        assert len(_listed(capsys)) == 2
        code, out, _ = _cli(capsys, "purge", "--yes")
        assert code == 0 and out.splitlines()[-1] == "2 purged, 0 no longer found"
        assert _listed(capsys) == []

    def test_purge_asks_and_audits(self, dead, capsys, monkeypatch):
        """`purge ID` asks "Purge 1 dead letter ...? [y/N]", deletes it on yes, and audits who and what."""
        first, second = _listed(capsys)
        monkeypatch.setattr("sys.stdin", Tty("yes\n"))
        code, out, err = _cli(capsys, "purge", first["id"])
        assert code == 0
        assert "Purge (delete for good) 1 dead letter from" in err and "[y/N]" in err
        assert out.splitlines() == [f"purged {first['id']}", "1 purged, 0 no longer found"]
        assert [d["id"] for d in _listed(capsys)] == [second["id"]]
        begin, end = _audit(dead)
        assert (begin["action"], begin["ids"], begin["count"]) == ("purge", [first["id"]], 1)
        assert (end["done"], end["missing"], end["error"]) == ([first["id"]], [], None)

    def test_the_audit_names_the_os_user_not_what_the_environment_claims(self, dead, capsys, monkeypatch):
        """The audit line's `user` is the OS user the command runs as. It was getpass.getuser(), which reads
        LOGNAME and USER first: `USER=kari helsebro dlq purge --all --yes` wrote Kari into the audit log (review H124)."""
        import os
        import pwd

        first, _ = _listed(capsys)
        monkeypatch.setenv("LOGNAME", "kari.nordmann")
        monkeypatch.setenv("USER", "kari.nordmann")
        code, _, _ = _cli(capsys, "purge", first["id"], "--yes")
        assert code == 0
        begin, end = _audit(dead)
        assert begin["user"] == end["user"] == pwd.getpwuid(os.geteuid()).pw_name != "kari.nordmann"

    def test_a_uid_without_a_name_is_audited_by_its_number(self, dead, capsys, monkeypatch):
        """A container's arbitrary uid (OpenShift) has no passwd entry and no USER: getpass.getuser() raised KeyError,
        so no replay, purge or `show --body` could start (a traceback, not exit 1). Now the line names `uid:<n>`
        (review H124)."""
        import os
        import pwd

        def no_entry(uid):
            raise KeyError(f"getpwuid(): uid not found: {uid}")

        first, second = _listed(capsys)
        for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(pwd, "getpwuid", no_entry)
        code, out, _ = _cli(capsys, "purge", first["id"], "--yes")
        assert code == 0 and out.splitlines()[-1] == "1 purged, 0 no longer found"
        begin, end = _audit(dead)
        assert begin["user"] == end["user"] == f"uid:{os.geteuid()}"
        assert [d["id"] for d in _listed(capsys)] == [second["id"]]

    def test_under_sudo_the_person_behind_root_is_audited(self, dead, capsys, monkeypatch):
        """`sudo helsebro dlq purge …` wrote `user: root` and `operator: null` (sudo drops HELSEBRO_OPERATOR): the
        line could not say who acted. It now names sudo's SUDO_USER, taken only when the process runs as root, since
        anyone can set the variable (review H185)."""
        import os

        first, second = _listed(capsys)
        monkeypatch.setenv("SUDO_USER", "kari.nordmann")
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        code, _, _ = _cli(capsys, "purge", first["id"], "--yes")
        assert code == 0
        begin, end = _audit(dead)
        assert begin["user"] == "root" and begin["sudo_user"] == end["sudo_user"] == "kari.nordmann"
        monkeypatch.setattr(os, "geteuid", lambda: 4242)  # not root: SUDO_USER is only a claim
        code, _, _ = _cli(capsys, "purge", second["id"], "--yes")
        assert code == 0 and _audit(dead)[-1]["sudo_user"] is None and _audit(dead)[-1]["user"] != "kari.nordmann"

    @pytest.mark.parametrize(("loginuid", "expected"), [("0", "root"), ("4294967295", None), (None, None)])
    def test_the_login_user_the_kernel_kept_is_audited(self, dead, capsys, monkeypatch, tmp_path, loginuid, expected):
        """The kernel's login uid survives sudo and su and cannot be changed by the user: the line names it, or null
        where there is none (a container, an unset login uid) (review H185)."""
        from router.ops import audit

        path = tmp_path / "loginuid"
        if loginuid is not None:
            path.write_text(loginuid)
        monkeypatch.setattr(audit, "_LOGINUID", path)
        first, _ = _listed(capsys)
        code, _, _ = _cli(capsys, "purge", first["id"], "--yes")
        assert code == 0
        begin, end = _audit(dead)
        assert begin["login_user"] == end["login_user"] == expected

    def test_purge_refused(self, dead, capsys, monkeypatch):
        """Without a terminal and --yes, or with a no, purge exits 2 and deletes nothing."""
        assert _cli(capsys, "purge", "--all")[0] == 2
        monkeypatch.setattr("sys.stdin", Tty("\n"))
        assert _cli(capsys, "purge", "--all")[0] == 2
        assert len(_listed(capsys)) == 2 and [a["event"] for a in _audit(dead)] == ["declined"]  # the no alone (review H190)

    def test_purge_all(self, dead, capsys):
        """`purge --all --yes` empties the dead-letter queue."""
        code, out, _ = _cli(capsys, "purge", "--all", "--yes")
        assert code == 0 and out.splitlines()[-1] == "2 purged, 0 no longer found"
        assert queue_depth(dead, dead.engine.broker.names.dead_letter) == 0
        code, out, _ = _cli(capsys, "purge", "--all", "--yes")
        assert code == 0 and out.startswith("no dead letters")

    def test_unknown_queue_is_a_usage_error(self, dead, capsys):
        """--queue must name one of the engine's dead-letter queues."""
        code, _, err = _cli(capsys, "list", "--queue", dead.engine.broker.names.inbound)
        assert code == 2 and "not a dead-letter queue" in err

    def test_unreachable_broker_exits_1(self, tmp_path, capsys, monkeypatch):
        """A broker that cannot be reached gives one line on stderr, without password, and exit 1."""
        s = isolated_settings(tmp_path, broker_url="amqp://guest:s3cret@127.0.0.1:1/%2F")
        monkeypatch.setenv("HELSEBRO_CONFIG_DIR", str(s.config_dir))
        monkeypatch.setenv("HELSEBRO_DATA_DIR", str(s.data_dir))
        monkeypatch.setenv("HELSEBRO_BROKER_URL", s.broker_url)
        code, out, err = _cli(capsys, "list")
        assert code == 1 and out == ""
        assert err.startswith("helsebro dlq: ") and len(err.splitlines()) == 1 and "s3cret" not in err


class _Quoting(BaseHTTPRequestHandler):
    """A FHIR server that refuses every transaction with HTTP 422, its diagnostics quoting the Patient it was sent."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status, resource):
        data = json.dumps(resource).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer(200, {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"]})

    def do_POST(self):
        bundle = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        name = patient["name"][0]
        said = f"Patient {name['family']} {' '.join(name['given'])}, {patient['identifier'][0]['value']}, has no GP"
        self._answer(422, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "business-rule", "diagnostics": said, "expression": ["Patient.generalPractitioner"]}]})

    def log_message(self, format, *args):
        """Keep the test output quiet."""


class TestDestinationDeadLetters:
    def test_list_and_replay_a_destinations_dead_letter(self, with_destination, scripted_fhir, capsys):
        """A Bundle the external server refused is in `helsebro.dest.ekstern.dlq`: `dlq list --queue` shows it, and
        `dlq replay --queue ... --all --yes` sends it back to that destination alone, which takes it now."""
        settings = with_destination
        server = scripted_fhir()
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        publish(settings, [adt_message("A01", control_id="DEST1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
        handle = run_engine_in_thread(settings, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="refused by ekstern")
            code, out, _ = _cli(capsys, "list", "--queue", dlq, "--json")
            assert code == 0
            [letter] = json.loads(out)["dead_letters"]
            assert (letter["control_id"], letter["stage"]) == ("DEST1", "deliver")
            assert letter["reason"] == "destination refused with HTTP 422: business-rule"
            server.refusing = False
            code, out, _ = _cli(capsys, "replay", "--queue", dlq, "--all", "--yes")
            assert code == 0 and out.splitlines()[-1] == "1 replayed, 0 no longer found"
            wait_until(lambda: len(server.applied) == 1, 60, what="the replayed Bundle applied")
            assert handle.stats.messages == 1  # back to the destination only: the engine did not take it again
        finally:
            handle.stop()
        assert server.applied[0]["resourceType"] == "Bundle"
        assert _cli(capsys, "list", "--queue", dlq, "--json")[0] == 0 and json.loads(_cli(capsys, "list", "--queue", dlq, "--json")[1])["dead_letters"] == []

    def test_a_destinations_letter_refused_again_names_the_letter_it_replaced(self, with_destination, scripted_fhir, capsys):
        """Review H131: replayed to the external server and refused again, a destination's letter came back with its new
        reason only, and without the sender, type and routes its work message had. It keeps them, names the letter it
        replaced and the earlier reason."""
        settings = with_destination
        server = scripted_fhir()
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        publish(settings, [adt_message("A01", control_id="DEST3", fnr=GOOD_FNR, local_id="L3", visit="V3")])
        handle = run_engine_in_thread(settings, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="refused by ekstern")
            [first] = json.loads(_cli(capsys, "list", "--queue", dlq, "--json")[1])["dead_letters"]
            assert _cli(capsys, "replay", "--queue", dlq, "--all", "--yes")[0] == 0
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 2, 60, what="refused again")
        finally:
            handle.stop()
        [again] = json.loads(_cli(capsys, "list", "--queue", dlq, "--json")[1])["dead_letters"]
        code, out, _ = _cli(capsys, "show", again["id"], "--queue", dlq, "--json")
        headers = json.loads(out)["headers"]
        assert code == 0 and headers["x-helsebro-replay-of"] == first["id"]
        assert headers["x-helsebro-previous-reason"] == f"deliver: {first['reason']}"
        assert (headers["x-helsebro-sender"], headers["x-helsebro-message-type"], headers["x-helsebro-routes"]) == ("PAS@STOLAV", "ADT^A01", "all")

    @pytest.mark.parametrize("transport", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def test_a_replayed_destination_dead_letter_keeps_its_routes_on_failure(self, transport, exported, scripted_fhir, capsys):
        """A route that says `on_failure: park` for a strict destination: its refused Bundle, replayed, goes back
        with `park` still on it. Before, the dead letter dropped the header and the replay was delivered `strict`
        (holding back the patient's partition through an outage the route wanted parked), or the reverse."""
        routes = {
            "destinations": {"record": {"kind": "record"},
                             "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": "http://127.0.0.1:9/fhir"}}},
            "routes": [{"name": "all", "to": ["record", "ekstern"], "on_failure": "park"}],
        }
        settings = exported(RABBIT if transport == "rabbitmq" else None, routes=routes)
        server = scripted_fhir()
        prefix = f"{settings.engine.broker.names.destination_prefix}.ekstern"
        publish(settings, [adt_message("A01", control_id="DEST2", fnr=GOOD_FNR, local_id="L2", visit="V2")])
        handle = run_engine_in_thread(settings, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="refused by ekstern")
        finally:
            handle.stop()
        code, out, _ = _cli(capsys, "replay", "--queue", f"{prefix}.dlq", "--all", "--yes")
        assert code == 0 and out.splitlines()[-1] == "1 replayed, 0 no longer found"
        work = [headers for p in range(settings.engine.broker.partitions) for headers in _consumed_headers(settings, f"{prefix}.p{p}")]
        assert [h.get("x-helsebro-on-failure") for h in work] == ["park"]


    def test_the_replay_question_for_a_destinations_dead_letters_names_that_destination(self, with_destination, capsys, monkeypatch):
        """The operator consents to what the question says: a destination's dead letters go back to that
        destination, not to the inbound exchange as the question claimed."""
        from kombu import Producer

        settings = with_destination
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        publish(settings, [])  # declares the topology
        conn = open_connection(settings)
        try:
            Producer(conn.channel()).publish(b"{}", exchange="", routing_key=dlq, headers={"x-helsebro-stage": "deliver"}, content_type="application/octet-stream", content_encoding="binary")
        finally:
            conn.release()
        monkeypatch.setattr("sys.stdin", Tty("n\n"))
        code, _, err = _cli(capsys, "replay", "--queue", dlq, "--all")
        assert code == 2
        assert f"Replay 1 dead letter from {dlq} to the destination ekstern's work queue?" in err

    @pytest.mark.parametrize("transport", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def test_show_withholds_what_a_refusing_server_said_about_the_patient(self, transport, exported, capsys):
        """A server's refusal quoting the patient by name stays with the dead letter, but `show` prints it only with --body,
        asked and audited; without, the reason, the code and the location still say what failed where. Before, `show`
        printed the server's words, name and all, to any operator, unaudited."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Quoting)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        routes = {
            "destinations": {"record": {"kind": "record"},
                             "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": f"http://127.0.0.1:{server.server_port}/fhir"}}},
            "routes": [{"name": "all", "to": ["record", "ekstern"]}],
        }
        settings = exported(RABBIT if transport == "rabbitmq" else None, routes=routes)
        dlq = f"{settings.engine.broker.names.destination_prefix}.ekstern.dlq"
        publish(settings, [adt_message("A01", control_id="DEST9", fnr=GOOD_FNR, local_id="L9", visit="V9", family="Rakfiskvik", given="Gudbrandine")])
        handle = _engine(settings)
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="refused by ekstern")
        finally:
            handle.stop()
            server.shutdown()
            server.server_close()
        [letter] = json.loads(_cli(capsys, "list", "--queue", dlq, "--json")[1])["dead_letters"]
        code, text, _ = _cli(capsys, "show", letter["id"], "--queue", dlq)
        assert code == 0
        code, out, _ = _cli(capsys, "show", letter["id"], "--queue", dlq, "--json")
        [issue] = json.loads(out)["outcome"]["issue"]
        assert code == 0 and issue["details"]["text"].startswith("withheld: ")
        for shown in (text, out):
            assert "Rakfiskvik" not in shown and "Gudbrandine" not in shown
            assert "destination refused with HTTP 422: business-rule" in shown and "Patient.generalPractitioner" in shown
        assert _audit(settings) == []
        code, out, _ = _cli(capsys, "show", letter["id"], "--queue", dlq, "--json", "--body", "--yes")
        [issue] = json.loads(out)["outcome"]["issue"]
        assert code == 0 and issue["details"]["text"] == "Patient Rakfiskvik Gudbrandine, ***********, has no GP"
        assert [(a["action"], a["event"]) for a in _audit(settings)] == [("show_body", "begin"), ("show_body", "end")]


LEGACY_ROUTES = {
    "destinations": {"lab": {"kind": "queue", "queue": "lab.adt", "format": "hl7v2", "version": "2.3", "charset": "8859/1"},
                     "raw": {"kind": "queue", "queue": "raw.adt", "format": "passthrough"}},
    "routes": [{"name": "legacy", "match": {"event": ["A13"]}, "to": ["lab", "raw"]}],
}
"""An A13, which lab's outbound HL7 v2 mapping does not serve, for lab and for a passthrough queue."""


class TestRenderDeadLetters:
    @pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def replayed(self, request, exported, capsys):
        """An A13 lab cannot render, dead-lettered at render, replayed with `dlq replay` and refused again: the
        settings, the first letter, and the A13 as sent."""
        settings = exported(RABBIT if request.param == "rabbitmq" else None, routes=LEGACY_ROUTES)
        body = adt_message("A13", control_id="REN1", fnr=GOOD_FNR, local_id="L1", visit="V1")
        publish(settings, [body])
        handle = _engine(settings)
        try:
            wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
            [first] = _listed(capsys)
            assert _cli(capsys, "replay", "--all", "--yes")[0] == 0
            wait_until(lambda: handle.stats.messages == 2, 60, what="the replay settled")
            wait_until(lambda: queue_depth(settings, settings.engine.broker.names.dead_letter) == 1, 30, what="refused again")
        finally:
            handle.stop()
        return settings, first, body

    def test_a_render_letter_refused_again_names_the_letter_it_replaced(self, replayed, capsys):
        """Review H141: a legacy destination's renderer refused a replayed message, and its new letter had neither the
        letter it replaced, nor the earlier reason, nor the message type: the Forwarder did not see the delivery's
        headers. It carries them now, as the engine's own letters do."""
        _settings, first, _body = replayed
        assert (first["stage"], first["control_id"]) == ("render", "REN1")
        [again] = _listed(capsys)
        code, out, _ = _cli(capsys, "show", again["id"], "--json")
        headers = json.loads(out)["headers"]
        assert code == 0 and again["id"] != first["id"]
        assert headers["x-helsebro-replay-of"] == first["id"]
        assert headers["x-helsebro-previous-reason"] == f"render: {first['reason']}"
        assert (headers["x-helsebro-stage"], headers["x-helsebro-destination"]) == ("render", "lab")
        assert (headers["x-helsebro-sender"], headers["x-helsebro-message-type"]) == ("PAS@STOLAV", "ADT^A13")
        assert GOOD_FNR not in json.dumps(headers)

    def test_the_passthrough_copy_is_the_message_as_sent_under_one_id(self, replayed):
        """Lab's refusal does not stop the passthrough queue; each copy (first and replayed) is the A13's own bytes
        under the same message id, so the legacy receiver drops the second as a duplicate."""
        settings, _first, body = replayed
        copies = drain_with_ids(settings, settings.routes.destinations["raw"].queue)
        assert [b for _id, _h, b in copies] == [body, body]
        assert len({message_id for message_id, _h, _b in copies}) == 1
        for _id, headers, _b in copies:
            assert (headers["x-helsebro-format"], headers["x-helsebro-destination"]) == ("passthrough", "raw")
            assert GOOD_FNR not in json.dumps(headers)
        assert drain_with_ids(settings, settings.routes.destinations["lab"].queue) == []


def _consumed_headers(settings, queue):
    """Take every message off *queue* with a consumer (a quorum queue with a single active consumer refuses
    basic.get); return their headers in order."""
    from kombu import Consumer, Queue

    depth = queue_depth(settings, queue)
    got: list[dict] = []
    conn = open_connection(settings)
    try:
        def take(message):
            got.append(dict(message.headers or {}))
            message.ack()

        with Consumer(conn.channel(), queues=[Queue(queue, no_declare=True)], on_message=take, prefetch_count=10):
            while len(got) < depth:
                conn.drain_events(timeout=10)
    finally:
        conn.release()
    return got


@pytest.mark.integration
def test_listing_and_replaying_a_queue_of_big_letters_holds_only_the_bodies_it_needs(exported, capsys):
    """Session 22: `list` keeps no body and `replay ID` only its own; the queue's bodies stay with the broker.

    Twenty 2 MB letters (KITH messages carry their PDFs) held whole took 40 MB and more per pass;
    a hospital's dead-letter queue could run the operator's command out of memory.
    """
    import tracemalloc

    from adapters.amqp.connection import declare_topology

    settings = exported(RABBIT)
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
    finally:
        conn.release()
    for n in range(20):
        _good_dead_letter(settings, b"%d" % n + b"x" * 2_000_000)
    tracemalloc.start()
    try:
        rows = _listed(capsys)
        _, listing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        code, _, _ = _cli(capsys, "purge", rows[3]["id"], "--yes")
        _, purge_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 20 and {r["size"] for r in rows} == {2_000_001, 2_000_002}
    assert code == 0 and len(_listed(capsys)) == 19
    assert listing_peak < 16_000_000 and purge_peak < 16_000_000


def _letter_with(settings, body, *, stage, reason, control_id, failed_at=None, headers=None):
    """Put a dead letter the engine could have made on the DLQ: *failed_at* (an ISO time) and *headers* laid over its own."""
    conn = open_connection(settings)
    try:
        publisher = Publisher(conn, settings)
        made = dead_letter_headers(reason=reason, stage=stage, location=None, control_id=control_id, outcome={"resourceType": "OperationOutcome", "issue": []})
        if failed_at:
            made["x-helsebro-failed-at"] = failed_at
        publisher.dead_letter(body, headers={**made, **(headers or {})})
        publisher.close()
    finally:
        conn.release()


def _hl7_from(sender_app, facility, control_id):
    return f"MSH|^~\\&|{sender_app}|{facility}|HB|HP|20240101||ADT^A01|{control_id}|P|2.5.1\rPID|1\r".encode()


@pytest.fixture
def mixed(settings):
    """Four dead letters of different stages, reasons, senders and ages, in this order:
    F1 convert from LAB@STOLAV (its MSH), 3 days old; F2 apply from PAS@AHUS (its MSH), now;
    F3 render for a legacy system, from LAB@STOLAV (its header), now; F4 convert, not HL7, 2 hours old."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    publish(settings, [])  # declares the queues
    _letter_with(settings, _hl7_from("LAB", "STOLAV", "F1"), stage="convert", reason="MSH-18 names a character set Helsebro does not know", control_id="F1",
                 failed_at=(now - timedelta(days=3)).isoformat())
    _letter_with(settings, _hl7_from("PAS", "AHUS", "F2"), stage="apply", reason="the stay belongs to another patient", control_id="F2")
    _letter_with(settings, b"{}", stage="render", reason="no outbound mapping for ADT^A08", control_id="F3", headers={"x-helsebro-sender": "LAB@STOLAV"})
    _letter_with(settings, NOT_HL7, stage="convert", reason=NO_MSH, control_id="F4", failed_at=(now - timedelta(hours=2)).isoformat())
    return settings


class TestFilters:
    """`dlq list`, `replay --all` and `purge --all` narrowed by stage, reason, sender, control id and age (review H130).

    Before, there was no filter: an operator who wanted to replay the apply failures of one sender had to
    `list --json | jq | xargs`, and a typo in the jq replayed or purged the whole queue."""

    def _ids(self, capsys, *filters):
        code, out, err = _cli(capsys, "list", "--json", *filters)
        assert code == 0, err
        doc = json.loads(out)
        assert set(doc) == {"queue", "truncated", "dead_letters"} and all(set(d) == LIST_KEYS for d in doc["dead_letters"])
        return [d["control_id"] for d in doc["dead_letters"]]

    def test_list_narrowed_by_each_filter_and_by_several_together(self, mixed, capsys):
        assert self._ids(capsys) == ["F1", "F2", "F3", "F4"]
        assert self._ids(capsys, "--stage", "convert") == ["F1", "F4"]
        assert self._ids(capsys, "--reason", "OUTBOUND mapping") == ["F3"]  # a substring, any case
        assert self._ids(capsys, "--sender", "LAB@STOLAV") == ["F1", "F3"]  # from MSH-3/4, or the header a render letter has
        assert self._ids(capsys, "--control-id", "F2") == ["F2"]
        assert self._ids(capsys, "--since", "1h") == ["F2", "F3"]
        assert self._ids(capsys, "--since", "1d") == ["F2", "F3", "F4"]
        assert self._ids(capsys, "--older-than", "1h") == ["F1", "F4"]
        assert self._ids(capsys, "--older-than", "1h", "--stage", "convert", "--sender", "LAB@STOLAV") == ["F1"]
        assert self._ids(capsys, "--stage", "apply", "--sender", "LAB@STOLAV") == []

    def test_list_text_says_the_filter_and_limit_counts_matches(self, mixed, capsys):
        code, out, _ = _cli(capsys, "list", "--stage", "convert")
        assert code == 0
        assert out.splitlines()[-1] == f"2 dead letters in {mixed.engine.broker.names.dead_letter} matching stage convert"
        code, out, _ = _cli(capsys, "list", "--json", "--stage", "convert", "--limit", "1")
        doc = json.loads(out)
        assert doc["truncated"] is True and [d["control_id"] for d in doc["dead_letters"]] == ["F1"]
        code, out, _ = _cli(capsys, "list", "--json", "--stage", "apply", "--limit", "1")
        assert json.loads(out)["truncated"] is False

    def test_purge_all_narrowed_asks_and_audits_the_filter_and_count(self, mixed, capsys, monkeypatch):
        dlq = mixed.engine.broker.names.dead_letter
        monkeypatch.setattr("sys.stdin", Tty("n\n"))
        code, _, err = _cli(capsys, "purge", "--all", "--stage", "convert", "--since", "1d")
        assert code == 2 and f"Purge (delete for good) 1 dead letter matching stage convert, failed within 1d from {dlq}?" in err
        assert self._ids(capsys) == ["F1", "F2", "F3", "F4"]
        [declined] = _audit(mixed)  # the no, with the filter it was asked with (review H190)
        assert declined["event"] == "declined" and declined["filter"] == {"stage": "convert", "since": "1d"} and declined["count"] == 1
        code, out, _ = _cli(capsys, "purge", "--stage", "convert", "--since", "1d", "--yes")  # purge alone is --all, narrowed too
        assert code == 0 and out.splitlines()[-1] == "1 purged, 0 no longer found"
        assert self._ids(capsys) == ["F1", "F2", "F3"]
        begin, end = _audit(mixed)[1:]
        assert begin["filter"] == end["filter"] == {"stage": "convert", "since": "1d"}
        assert begin["count"] == end["count"] == 1 and len(begin["ids"]) == 1

    def test_replay_all_narrowed_replays_only_the_matches(self, mixed, capsys):
        code, out, _ = _cli(capsys, "replay", "--all", "--sender", "PAS@AHUS", "--yes")
        assert code == 0 and out.splitlines()[-1] == "1 replayed, 0 no longer found"
        assert self._ids(capsys) == ["F1", "F3", "F4"]
        assert queue_depth(mixed, mixed.engine.broker.names.inbound) == 1
        begin, _ = _audit(mixed)
        assert (begin["action"], begin["filter"], begin["count"]) == ("replay", {"sender": "PAS@AHUS"}, 1)

    def test_nothing_matching_does_nothing(self, mixed, capsys):
        code, out, _ = _cli(capsys, "purge", "--all", "--control-id", "NOPE", "--yes")
        assert code == 0 and out == f"no dead letters in {mixed.engine.broker.names.dead_letter} matching control id NOPE\n"
        assert len(self._ids(capsys)) == 4 and _audit(mixed) == []

    def test_filters_are_for_all_not_for_ids(self, mixed, capsys):
        """A filter narrows --all; with ids, or a bad age or stage, it is a usage error and nothing is touched."""
        first = _listed(capsys)[0]["id"]
        assert _cli(capsys, "replay", first, "--stage", "convert", "--yes")[0] == 2
        assert _cli(capsys, "purge", first, "--reason", "x", "--yes")[0] == 2
        assert _cli(capsys, "replay", "--stage", "convert", "--yes")[0] == 2  # replay still needs ids or --all
        with pytest.raises(SystemExit) as exited:
            main(["dlq", "list", "--since", "yesterday"])
        assert exited.value.code == 2
        with pytest.raises(SystemExit) as exited:
            main(["dlq", "list", "--stage", "nowhere"])
        assert exited.value.code == 2
        assert len(self._ids(capsys)) == 4 and _audit(mixed) == []


EKSTERN_ROUTES = {
    "destinations": {"record": {"kind": "record"},
                     "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": "http://127.0.0.1:9/fhir"}}},
    "routes": [{"name": "all", "to": ["record", "ekstern"]}],
}


def _broker_dead_letter(settings, queue, body, *, died_in, routing_key, headers):
    """Put on *queue* what RabbitMQ puts there when a quorum queue (*died_in*) dead-letters a message past its
    delivery limit: the message's own headers, `x-first-death-*` and `x-death`, and no `x-helsebro-reason`."""
    from kombu import Producer

    death = {"count": 1, "reason": "delivery_limit", "queue": died_in, "time": "2026-11-30T10:00:00+00:00", "exchange": "", "routing-keys": [routing_key]}
    broker = {"x-first-death-reason": "delivery_limit", "x-first-death-queue": died_in, "x-first-death-exchange": "", "x-death": [death]}
    conn = open_connection(settings)
    try:
        Producer(conn.channel()).publish(body, exchange="", routing_key=queue, headers={**headers, **broker}, message_id="m-broker-1",
                                         content_type="application/octet-stream", content_encoding="binary")
    finally:
        conn.release()


class TestBrokerDeadLetters:
    """Letters the broker dead-lettered (a quorum queue's delivery limit, a message TTL) carry the broker's reason,
    not Helsebro's (review H130)."""

    def test_list_and_show_give_the_brokers_reason(self, settings, capsys):
        """They showed no reason and no time: `dlq list` now says why the broker took them and from where."""
        publish(settings, [])
        died_in = f"{settings.engine.broker.names.inbound}.p2"
        _broker_dead_letter(settings, settings.engine.broker.names.dead_letter, NOT_HL7, died_in=died_in, routing_key="p2", headers={})
        [letter] = _listed(capsys)
        assert letter["reason"] == f"broker: delivery_limit (queue {died_in})"
        assert letter["failed_at"] == "2026-11-30T10:00:00+00:00"
        code, out, _ = _cli(capsys, "show", letter["id"])
        assert code == 0 and f"broker: delivery_limit (queue {died_in})" in out
        code, out, _ = _cli(capsys, "list", "--json", "--reason", "delivery_limit")
        assert [d["id"] for d in json.loads(out)["dead_letters"]] == [letter["id"]]

    @pytest.mark.parametrize("transport", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def test_replay_goes_back_to_the_partition_the_broker_took_it_from(self, transport, exported, capsys):
        """A destination's work message the broker dead-lettered has no `x-helsebro-partition`: its replay went to p0,
        behind or ahead of the patient's other messages on p1. It now goes back to the partition `x-death` names (when that
        partition is in use)."""
        settings = exported(RABBIT if transport == "rabbitmq" else None, routes=EKSTERN_ROUTES, broker={"partitions": 2})
        publish(settings, [])
        base = f"{settings.engine.broker.names.destination_prefix}.ekstern"
        work = {"x-helsebro-control-id": "BRK1", "x-helsebro-destination": "ekstern", "x-helsebro-attempt": 3, "x-helsebro-patient": "h:abc"}
        _broker_dead_letter(settings, f"{base}.dlq", b"{}", died_in=f"{base}.p1", routing_key="p1", headers=work)
        code, out, _ = _cli(capsys, "list", "--queue", f"{base}.dlq", "--json")
        [letter] = json.loads(out)["dead_letters"]
        assert (letter["control_id"], letter["reason"]) == ("BRK1", f"broker: delivery_limit (queue {base}.p1)")
        code, out, err = _cli(capsys, "replay", "--queue", f"{base}.dlq", "--all", "--yes")
        assert code == 0 and out.splitlines()[-1] == "1 replayed, 0 no longer found", err
        partition = "p1" if transport == "rabbitmq" else "p0"  # the embedded transport has one partition: p1 is no queue there
        [headers] = _consumed_headers(settings, f"{base}.{partition}")
        assert headers["x-helsebro-control-id"] == "BRK1" and headers["x-helsebro-attempt"] == 1 and "x-death" not in headers


@pytest.mark.integration
def test_a_real_delivery_limit_dead_letter_is_named_and_replayed_to_its_partition(tmp_path, capsys, monkeypatch):
    """RabbitMQ itself dead-letters a destination's work message past a policy's delivery limit: `dlq list` names the
    broker's reason and `dlq replay` puts it back on the partition it came from (review H130)."""
    import re
    import subprocess
    import uuid

    from kombu import Consumer, Queue

    from router.testing import delete_queues, settings_env

    def rabbitmqctl(*args):
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    try:
        rabbitmqctl("list_policies")
    except (OSError, subprocess.SubprocessError):
        pytest.skip("rabbitmqctl cannot set a policy here")
    tag = uuid.uuid4().hex[:10]
    settings = isolated_settings(tmp_path, broker_url=RABBIT, tag=tag, routes=EKSTERN_ROUTES, broker={"partitions": 2})
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    base = f"{settings.engine.broker.names.destination_prefix}.ekstern"
    policy = f"h-limit-{tag}"
    rabbitmqctl("set_policy", policy, f"^{re.escape(base)}\\.p[0-9]+$", '{"delivery-limit": 1}', "--apply-to", "queues")
    try:
        publish(settings, [])
        conn = open_connection(settings)
        try:
            publisher = Publisher(conn, settings)
            publisher.publish_to(base, "p1", b"{}", headers={"x-helsebro-control-id": "BRK2", "x-helsebro-destination": "ekstern", "x-helsebro-attempt": 1})
            publisher.close()
            for _ in range(3):  # each consumer that goes away holding it counts a delivery
                channel = conn.channel()
                got = []
                with Consumer(channel, queues=[Queue(f"{base}.p1", no_declare=True)], on_message=got.append, prefetch_count=1):
                    try:
                        conn.drain_events(timeout=2)
                    except TimeoutError:
                        pass
                channel.close()
                if not got:
                    break
        finally:
            conn.release()
        wait_until(lambda: queue_depth(settings, f"{base}.dlq") == 1, 10, what="dead-lettered by the broker")
        code, out, _ = _cli(capsys, "list", "--queue", f"{base}.dlq", "--json")
        [letter] = json.loads(out)["dead_letters"]
        assert (letter["control_id"], letter["reason"]) == ("BRK2", f"broker: delivery_limit (queue {base}.p1)")
        assert letter["failed_at"]
        code, out, _ = _cli(capsys, "replay", "--queue", f"{base}.dlq", "--all", "--yes")
        assert code == 0 and out.splitlines()[-1] == "1 replayed, 0 no longer found"
        assert queue_depth(settings, f"{base}.p0") == 0
        assert [h["x-helsebro-control-id"] for h in _consumed_headers(settings, f"{base}.p1")] == ["BRK2"]
    finally:
        rabbitmqctl("clear_policy", policy)
        delete_queues(settings)


class TestBrowsingKeepsEveryLetter:
    def test_a_letter_browsed_more_than_twenty_times_is_still_there(self, dead, capsys):
        """Review H163: every `list`, `show` and `status` scan gives each letter back, which a quorum queue counts as a
        delivery; RabbitMQ 4.x drops a letter past its default delivery limit (20), and 3.x with `x-delivery-limit: -1`
        on its first return. Browsed 23 times, both letters are still there, in order."""
        first_id = _listed(capsys)[0]["id"]
        for i in range(11):  # each pass browses twice: with the first list, 23 deliveries
            # --interval 0: one depth sample, no second a pass; status still scans (browses) the dead letters.
            code, _, _ = _cli(capsys, "show", first_id) if i % 3 == 0 else (main(["status", "--json", "--interval", "0"]), "", "")
            assert code == 0
            letters = _listed(capsys)
        assert [letter["id"] for letter in letters][:1] == [first_id] and len(letters) == 2
        if dead.broker_url:  # the broker counted every pass: the letters went past 20 deliveries
            assert all(letter["delivery_count"] > 20 for letter in letters)
        assert queue_depth(dead, dead.engine.broker.names.dead_letter) == 2


class TestDeclinedReviewH190:
    """Found by review (H190): what an operator declined left no trace."""

    @pytest.mark.parametrize("verb", [("show", "--body"), ("replay", "--all"), ("purge", "--all")])
    def test_a_question_answered_no_is_audited(self, dead, capsys, monkeypatch, verb):
        """An operator who asked to see a body, or to replay or purge, and answered no at "[y/N]" left no audit
        line: an audit that shows only the yeses cannot tell someone probing for patient data. A no is one
        `declined` line now, naming what was asked (never a body); nothing is done."""
        ids = [letter["id"] for letter in _listed(capsys)]
        args = [verb[0], ids[1], verb[1]] if verb[0] == "show" else list(verb)
        monkeypatch.setattr("sys.stdin", Tty("n\n"))
        code, out, _ = _cli(capsys, *args)
        assert code == 2 and BAD_FNR not in out
        [line] = _audit(dead)
        action = {"show": "show_body"}.get(verb[0], verb[0])
        assert (line["action"], line["event"]) == (action, "declined")
        assert set(line["ids"]) == ({ids[1]} if verb[0] == "show" else set(ids)) and line["user"]
        assert BAD_FNR not in json.dumps(line)
        assert len(_listed(capsys)) == 2
