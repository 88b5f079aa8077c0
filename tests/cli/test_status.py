"""`helsebro status` through the CLI: queues, locations, XML validation and dead letters by reason, on both transports."""

from __future__ import annotations

import io
import json

import pytest

from router.cli import main
from router.testing import adt_message, delete_queues, isolated_settings, publish, run_engine_in_thread, settings_env, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
BAD_FNR = "15866112378"  # fails its check digits
NO_MSH = "not an HL7 v2 message: no MSH segment found"
QUEUE_KEYS = {"role", "name", "exists", "depth", "consumers", "depth_change_per_s"}


class QuietLogger:
    """A logger that drops every event, so the engine's lines stay out of the CLI's captured output."""

    def __getattr__(self, _name):
        return lambda *_a, **_k: self


def _use(monkeypatch, settings):
    for name in ("HELSEBRO_BROKER_URL", "HELSEBRO_RECORD_URL", "HELSEBRO_XSD_DIR", "HELSEBRO_MAPPINGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settings(request, tmp_path, monkeypatch):
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None)
    _use(monkeypatch, s)
    yield s
    if s.broker_url:
        delete_queues(s)


@pytest.fixture
def dead(settings):
    """Three dead letters from a real engine run: two not HL7, one ADT with a bad fnr check digit."""
    publish(settings, [b"not hl7", adt_message("A01", control_id="ST1", fnr=BAD_FNR, local_id="L1", visit="V1"), b"still not hl7"])
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    wait_until(lambda: handle.stats.dead_lettered == 3, 30, what="three dead letters")
    handle.stop()
    return settings


def _foreign_database(path) -> None:
    """Another application's SQLite database: a table of its own, nothing of Helsebro's."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.commit()
    conn.close()


def _status(capsys, *args):
    capsys.readouterr()
    code = main(["status", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


class TestStatus:
    def test_json_shape(self, dead, capsys):
        """`status --json` gives broker, record, XML validation, one entry per queue and dead letters by reason."""
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        assert code == 0
        assert set(doc) == {"broker", "record", "xml_validation", "patient_keys", "interval_s", "queues", "dead_letters", "destinations", "settled", "apprecs", "apprecs_refused", "apprecs_unmatched"}
        assert doc["destinations"] == []  # the record is the only destination here: nothing queued
        assert doc["apprecs"] == []  # and no destination is fed KITH
        names = dead.engine.broker.names
        assert [(q["role"], q["name"]) for q in doc["queues"]] == [("inbound", names.inbound), ("dead_letter", names.dead_letter), ("replies", names.replies)]
        assert all(set(q) == QUEUE_KEYS for q in doc["queues"])
        depths = {q["role"]: q["depth"] for q in doc["queues"]}
        assert depths == {"inbound": 0, "dead_letter": 3, "replies": 3}
        assert doc["broker"]["transport"] == ("rabbitmq" if dead.broker_url else "embedded")
        assert doc["broker"]["damaged"] == (None if dead.broker_url else 0)
        assert doc["record"] == {"kind": "sqlite", "location": str(dead.sqlite_path.resolve()), "state": "ready", "reason": None}
        assert doc["xml_validation"] == {"enabled": False, "xsd_dir": None}
        assert doc["patient_keys"] == {"keyed": False}
        [dl] = doc["dead_letters"]
        assert (dl["queue"], dl["scanned"], dl["complete"]) == (names.dead_letter, 3, True)
        assert [(r["stage"], r["reason"], r["count"]) for r in dl["by_reason"]] == [("convert", NO_MSH, 2), ("convert", dl["by_reason"][1]["reason"], 1)]
        # Settled, from the journal: the ADT (control id ST1) as dead-lettered; the two that were not HL7 name no
        # control id and no patient, so only their dead letters hold them.
        none = dict.fromkeys(("applied", "unchanged", "duplicate", "filtered", "forwarded", "dead_lettered", "receipt"), 0)
        assert doc["settled"] == {"last_minute": {**none, "dead_lettered": 1}, "last_hour": {**none, "dead_lettered": 1}}

    def test_unreadable_embedded_message_files_are_counted(self, tmp_path, capsys, monkeypatch):
        """An embedded message file the engine set aside as unreadable shows in `broker.damaged` and under the queue table."""
        s = isolated_settings(tmp_path)
        _use(monkeypatch, s)
        publish(s, [b"not hl7", b"\x00"])
        [*_, second] = sorted((s.data_dir / "broker" / "queue").glob("*.msg"))
        second.write_bytes(b"{not json")
        handle = run_engine_in_thread(s, logger=QuietLogger())
        wait_until(lambda: handle.stats.dead_lettered == 1, 30, what="the readable one dead-lettered")
        handle.stop()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        assert code == 0 and json.loads(out)["broker"]["damaged"] == 1
        code, out, _ = _status(capsys, "--interval", "0")
        assert "1 unreadable message file(s) set aside in" in out

    def test_a_record_that_is_not_there_is_not_made(self, settings, capsys, monkeypatch, tmp_path):
        """A mistyped SQLite record URL: status made an empty record there and showed 0 settled. Now settled is not
        known (null) and no file is created."""
        publish(settings, [])
        typo = tmp_path / "recrod.sqlite3"
        monkeypatch.setenv("HELSEBRO_RECORD_URL", f"sqlite:///{typo}")
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        assert code == 0 and json.loads(out)["settled"] is None
        assert not typo.exists()

    def test_another_applications_database_is_not_written(self, settings, capsys, monkeypatch, tmp_path):
        """HELSEBRO_RECORD_URL naming another application's SQLite file: status created the whole Helsebro schema
        in it. Now the file is left byte for byte as it was, and the record shows as unusable: not a Helsebro record."""
        publish(settings, [])
        other = tmp_path / "other" / "app.sqlite3"
        other.parent.mkdir()
        _foreign_database(other)
        before = other.read_bytes()
        monkeypatch.setenv("HELSEBRO_RECORD_URL", f"sqlite:///{other}")
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        assert code == 0 and doc["settled"] is None and doc["queues"]
        assert doc["record"]["state"] == "unusable" and "not a Helsebro record" in doc["record"]["reason"]
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0 and "not a Helsebro record" in out
        assert other.read_bytes() == before
        assert sorted(p.name for p in other.parent.iterdir()) == ["app.sqlite3"]  # no log, no lock file beside it

    def test_a_fresh_install_says_there_is_no_record_yet(self, settings, capsys):
        """Nothing ever run, no record file: status said "SETTLED: not known (the record cannot be read)", an alarm at
        3am. Now it says plainly there is no record yet, in the table and as the record's state in --json."""
        publish(settings, [])
        assert not settings.sqlite_path.exists()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        where = str(settings.sqlite_path.resolve())
        assert code == 0 and doc["settled"] is None and doc["apprecs_refused"] is None
        assert doc["record"] == {"kind": "sqlite", "location": where, "state": "none_yet",
                                 "reason": f"no record yet at {where}: nothing has been applied"}
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0 and "cannot be read" not in out
        assert f"SETTLED: none yet (no record yet at {where}: nothing has been applied)" in out
        assert not settings.sqlite_path.exists()

    def test_a_read_only_record_in_a_read_only_folder_is_read_and_left_as_it_was(self, dead, capsys):
        """status opened the SQLite record read-write: it made `-writer.lock` beside it, set WAL mode and prepared the
        schema (a record copied without its lock file gained one; a record chmod 444 in a read-only folder read as
        unusable to anyone but root). Now it opens the file read-only: the same counts, and not a file or byte changed."""
        record = dead.sqlite_path
        record.with_name(record.name + "-writer.lock").unlink()  # as copied from a backup: the engine's lock file stays behind
        before, listing = record.read_bytes(), sorted(p.name for p in record.parent.iterdir())
        record.chmod(0o444)
        record.parent.chmod(0o555)
        try:
            code, out, _ = _status(capsys, "--json", "--interval", "0")
        finally:
            record.parent.chmod(0o755)
            record.chmod(0o644)
        doc = json.loads(out)
        assert code == 0 and doc["record"]["state"] == "ready", doc["record"]
        assert doc["settled"]["last_hour"]["dead_lettered"] == 1
        assert record.read_bytes() == before
        assert sorted(p.name for p in record.parent.iterdir()) == listing

    def test_an_older_record_is_not_migrated_by_status(self, dead, capsys):
        """A record written by the Helsebro before (schema version 3: a journal without outcomes) was migrated by status,
        a read-only verb. Now status leaves it byte for byte, shows it unusable and says to run the engine, which migrates."""
        import sqlite3

        record = dead.sqlite_path
        conn = sqlite3.connect(record)
        for column in ("outcome", "note", "destinations"):
            conn.execute(f"ALTER TABLE helsebro_journal DROP COLUMN {column}")
        conn.execute("UPDATE helsebro_schema SET version = 3")
        conn.commit()
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        before = record.read_bytes()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        assert code == 0 and doc["settled"] is None
        assert doc["record"]["state"] == "unusable"
        assert "version 3" in doc["record"]["reason"] and "helsebro run" in doc["record"]["reason"]
        assert record.read_bytes() == before

    @pytest.mark.parametrize("interrupted", [False, True], ids=["zero_bytes", "wal_header_no_tables"])
    def test_a_record_whose_first_run_stopped_before_its_tables_is_no_record_yet(self, settings, capsys, interrupted):
        """A first `run` stopped after it created the record's file but before its tables committed leaves an empty
        file (or one with only the WAL header): status called it "unusable: not a Helsebro record (no tables)". In
        Helsebro's own data dir that is no record yet, as a missing file is; the file is left as it was."""
        import sqlite3

        publish(settings, [])
        record = settings.sqlite_path
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
        if interrupted:
            conn = sqlite3.connect(record)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.close()
        before = record.read_bytes()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        where = str(record.resolve())
        assert code == 0 and doc["record"]["state"] == "none_yet", doc["record"]
        assert doc["record"]["reason"] == f"no record yet at {where}: nothing has been applied"
        assert record.read_bytes() == before

    def test_settled_unknown_when_the_record_cannot_be_read(self, settings, capsys, monkeypatch):
        """The record away: settled is null (the table says so) and the queues still show; exit 0."""
        publish(settings, [])
        monkeypatch.setenv("HELSEBRO_RECORD_URL", "postgresql://nobody@127.0.0.1:1/none")
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        assert code == 0 and doc["settled"] is None and doc["queues"]
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0 and "SETTLED: not known (the record cannot be read)" in out

    def test_scan_limit_skips_a_deep_queue(self, dead, capsys):
        """A dead-letter queue deeper than --scan-limit is not read: complete is false and nothing is counted."""
        code, out, _ = _status(capsys, "--json", "--interval", "0", "--scan-limit", "2")
        [dl] = json.loads(out)["dead_letters"]
        assert code == 0
        assert (dl["scanned"], dl["complete"], dl["by_reason"]) == (0, False, [])
        code, out, _ = _status(capsys, "--interval", "0", "--scan-limit", "2")
        assert "not read: more than --scan-limit messages wait" in out

    def test_broker_url_without_password(self, settings, capsys):
        """The broker is shown by URL without its password (or as the embedded folder)."""
        publish(settings, [])
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        location = json.loads(out)["broker"]["location"]
        assert code == 0
        if settings.broker_url:
            assert location == "amqp://guest@127.0.0.1:5672/%2F"
        else:
            assert location == str((settings.data_dir / "broker").resolve())

    def test_human_table_without_patient_data(self, dead, capsys):
        """The table names every queue with its depth and the reasons with counts, and no fnr or body text."""
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split()[0] == "broker" and lines[2].split()[:3] == ["xml", "validation", "off"]
        table = lines[lines.index("") + 1:]
        assert table[0].split() == ["ROLE", "QUEUE", "DEPTH", "CONSUMERS", "DEPTH", "CHANGE/S"]
        assert table[2].split()[:3] == ["dead_letter", dead.engine.broker.names.dead_letter, "3"]
        assert len({len(row) for row in table[1:4]}) == 1  # aligned columns
        assert any(line.split()[:2] == ["2", "convert"] and line.endswith(NO_MSH) for line in lines)
        for secret in (BAD_FNR, "Testesen", "not hl7", "19850315"):
            assert secret not in out

    def test_a_dead_letters_control_characters_are_escaped_in_the_table(self, settings, capsys):
        """A reason or stage header holding ESC or a line break (any publisher can dead-letter one) is shown escaped,
        as `dlq` and `find` show it, never raw to the operator's terminal; --json keeps the value."""
        from adapters.amqp.connection import declare_topology, open_connection
        from adapters.amqp.outbound import Publisher

        conn = open_connection(settings)
        try:
            declare_topology(conn, settings)
            publisher = Publisher(conn, settings)
            publisher.dead_letter(b"x", headers={"x-helsebro-reason": "bad \x1b[2J\x1b]0;pwn\x07 value\nsecond line", "x-helsebro-stage": "con\x9bvert"})
            publisher.close()
        finally:
            conn.release()
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0
        assert not any(c in out for c in "\x1b\x07\x9b")
        assert any(line.endswith("bad \\x1b[2J\\x1b]0;pwn\\x07 value\\x0asecond line") and "con\\x9bvert" in line for line in out.splitlines())
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        [reason] = json.loads(out)["dead_letters"][0]["by_reason"]
        assert reason == {"stage": "con\x9bvert", "reason": "bad \x1b[2J\x1b]0;pwn\x07 value\nsecond line", "count": 1}

    def test_rate_over_an_interval(self, settings, capsys):
        """With an interval each existing queue gets a numeric depth change per second."""
        publish(settings, [b"x"])
        code, out, _ = _status(capsys, "--json", "--interval", "0.05")
        doc = json.loads(out)
        assert code == 0 and doc["interval_s"] == 0.05
        assert all(isinstance(q["depth_change_per_s"], float) for q in doc["queues"])

    def test_consumers_while_the_engine_runs(self, settings, capsys):
        """RabbitMQ reports the engine as the inbound queue's one consumer; the embedded transport cannot tell."""
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        try:
            code, out, _ = _status(capsys, "--json", "--interval", "0")
        finally:
            handle.stop()
        inbound = json.loads(out)["queues"][0]
        assert code == 0
        assert inbound["consumers"] == (1 if settings.broker_url else None)

    def test_xml_validation_on_with_a_schema_folder(self, settings, capsys, monkeypatch, tmp_path):
        """HELSEBRO_XSD_DIR set turns the XML validation line on, naming the folder."""
        publish(settings, [])
        (tmp_path / "xsd").mkdir()  # a folder that does not exist is refused at load
        monkeypatch.setenv("HELSEBRO_XSD_DIR", str(tmp_path / "xsd"))
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        assert code == 0
        assert json.loads(out)["xml_validation"] == {"enabled": True, "xsd_dir": str(tmp_path / "xsd")}

    def test_patient_keys_keyed_with_a_secret_never_shown(self, settings, capsys, monkeypatch):
        """HELSEBRO_PHI_KEY set: the patient keys are reported keyed; the secret is in neither output."""
        publish(settings, [])
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0 and "plain hash" in out and "HELSEBRO_PHI_KEY is not set" in out
        monkeypatch.setenv("HELSEBRO_PHI_KEY", "s3cret-phi-key")
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        assert json.loads(out)["patient_keys"] == {"keyed": True} and "s3cret-phi-key" not in out
        code, out, _ = _status(capsys, "--interval", "0")
        assert "keyed" in out and "plain hash" not in out and "s3cret-phi-key" not in out

    def test_unreachable_broker_exits_1(self, tmp_path, capsys, monkeypatch):
        """A broker that cannot be reached gives one line on stderr, without password or traceback, and exit 1."""
        s = isolated_settings(tmp_path, broker_url="amqp://guest:s3cret@127.0.0.1:1/%2F")
        _use(monkeypatch, s)
        code, out, err = _status(capsys, "--interval", "0")
        assert code == 1 and out == ""
        assert err.startswith("helsebro status: cannot reach the broker at amqp://guest@127.0.0.1:1/%2F")
        assert len(err.splitlines()) == 1 and "s3cret" not in err and "Traceback" not in err


class TestDestinations:
    def test_per_destination_delivered_waiting_retrying_and_dead_lettered(self, with_destination, scripted_fhir, capsys):
        """Two messages to an external FHIR server that takes one and refuses the other: status says 1 delivered, 1 dead-lettered."""
        settings = with_destination
        server = scripted_fhir(take=1)
        publish(settings, [adt_message("A01", control_id=f"D{i}", fnr="15866112379", local_id=f"L{i}", visit=f"V{i}") for i in (1, 2)])
        handle = run_engine_in_thread(settings, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1 and len(server.applied) == 1, 60, what="one delivered, one refused")
        finally:
            handle.stop()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        assert code == 0
        assert json.loads(out)["destinations"] == [{"name": "ekstern", "delivered_24h": 1, "waiting": 0, "retrying": 0, "dead_lettered": 1}]
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0
        [row] = [line.split() for line in out.splitlines() if line.startswith("ekstern")]
        assert row == ["ekstern", "1", "0", "0", "1"]
        # Both went to the record too (the route's other destination): settled as applied, whatever the external server did.
        assert [line.split() for line in out.splitlines() if line.split()[:1] in (["SETTLED"], ["applied"], ["dead-lettered"])] == [
            ["SETTLED", "LAST", "MINUTE", "LAST", "HOUR"], ["applied", "2", "2"], ["dead-lettered", "0", "0"]]


class TestPartitions:
    @pytest.mark.integration
    def test_messages_waiting_in_partitions_are_shown(self, tmp_path, monkeypatch, capsys):
        """broker.partitions 4 and no worker: what waits sits in the patient's partition, not the intake; status shows
        each partition's depth and consumers, so 'inbound depth rising, consumers 0' still tells that workers are down."""
        s = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4})
        _use(monkeypatch, s)
        try:
            publish(s, [adt_message("A01", control_id=f"PT{i}", fnr="15866112379", local_id="L1", visit=f"V{i}") for i in range(3)])
            code, out, _ = _status(capsys, "--json", "--interval", "0")
            queues = json.loads(out)["queues"]
            assert code == 0 and all(set(q) == QUEUE_KEYS for q in queues)
            names = s.engine.broker.names
            parts = [q for q in queues if q["role"] == "partition"]
            assert [q["name"] for q in parts] == [f"{names.inbound}.p{k}" for k in range(4)]
            assert sum(q["depth"] for q in parts) == 3 and {q["consumers"] for q in parts} == {0}
            code, out, _ = _status(capsys, "--interval", "0")
            assert code == 0 and [line.split()[:2] for line in out.splitlines() if line.startswith("partition ")] == [
                ["partition", f"{names.inbound}.p{k}"] for k in range(4)]
        finally:
            delete_queues(s)


class TestRefusingAppRecs:
    """Found by review H113: an AppRec refusing what Helsebro sent (FACTS §10: alarm on a negative AppRec) shows at a glance."""

    def test_refused_apprecs_are_counted_from_the_journal_in_json_and_table(self, settings, capsys):
        from pathlib import Path

        from adapters.kith import build_apprecs, read_message
        from adapters.kith.errors import PatientNotFound

        case = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
        envelope = read_message(case.read_bytes()).envelope
        [refusing] = build_apprecs(envelope, error=PatientNotFound("x"))
        [accepting] = build_apprecs(envelope, error=None)
        publish(settings, [refusing.xml, accepting.xml])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        try:
            wait_until(lambda: handle.stats.receipts == 2, 30, what="two receipts")
        finally:
            handle.stop()
        code, out, _ = _status(capsys, "--json", "--interval", "0")
        doc = json.loads(out)
        assert code == 0
        assert doc["settled"]["last_minute"]["receipt"] == 2  # unchanged: every receipt, whatever it says
        assert doc["apprecs_refused"] == {"last_hour": 1, "last_24h": 1}
        code, out, _ = _status(capsys, "--interval", "0")
        assert code == 0
        [line] = [row for row in out.splitlines() if row.startswith("APPRECS REFUSED")]
        assert line.split()[2:4] == ["1", "1"] and "find --outcome receipt" in out
