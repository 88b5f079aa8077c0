"""`helsebro find`: what became of a message, by control id or patient, on messages a real engine settled, on both transports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from router.testing import adt_message, drain_queue, publish, run_engine_in_thread, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[2]
GOOD_FNR = "15866112379"  # synthetic (Tenor, month + 80)
MOVED_TO = "02036110182"  # the A45 fixture's PID patient
BAD_FNR = "15866112378"  # fails its check digits
A45 = ROOT / "mappings" / "hl7v2" / "messages" / "ADT_A45.cases" / "move_stay_to_the_right_patient.hl7"


class QuietLogger:
    def __getattr__(self, _name):
        return lambda *_a, **_k: self


def _oru(control_id: str, fnr: str) -> bytes:
    return (f"MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1||{fnr}^^^NOR^FNR\r"
            "OBR|1||LAB-1^LIS|PANEL^Panel|||20250115080000\rOBX|1|NM|NPU02319^Hb||134|g/L|||||F\r").encode()


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def settled(request, exported):
    """An engine run: an admission (F1) and a lab result (F2, its patient created only when missing) for one patient,
    an A45 moving a stay the record does not hold (dead-lettered when applied, its patient known), and an ADT whose
    fødselsnummer fails its check digits (F4, dead-lettered when converted, no patient)."""
    settings = exported(RABBIT if request.param == "rabbitmq" else None)
    publish(settings, [
        adt_message("A01", control_id="F1", fnr=GOOD_FNR, local_id="L1", visit="V1"),
        _oru("F2", GOOD_FNR),
        A45.read_bytes(),
        adt_message("A01", control_id="F4", fnr=BAD_FNR, local_id="L4", visit="V4"),
    ])
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    wait_until(lambda: handle.stats.messages == 4, 60, what="four messages settled")
    handle.stop()
    assert (handle.stats.applied, handle.stats.dead_lettered) == (2, 2)
    return settings


def _find(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["find", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _audit(settings) -> list[dict]:
    path = settings.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestFind:
    def test_a_patients_messages_share_one_key_whatever_they_write(self, settled, capsys):
        """By fødselsnummer: the admission (PUT Patient) and the lab result (Patient created only when missing), newest first,
        with what each wrote; the number is in no output and no audit line, which holds the key."""
        code, out, err = _find(capsys, "--patient", GOOD_FNR, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert [m["control_id"] for m in doc["applied"]] == ["F2", "F1"]
        assert len({m["patient_key"] for m in doc["applied"]}) == 1 and doc["applied"][0]["patient_key"].startswith("h:")
        admission = doc["applied"][1]
        assert admission["message_type"] == "ADT^A01" and admission["sender"]
        assert {"type": "Patient", "version": 1, "outcome": "created"} in [{k: r[k] for k in ("type", "version", "outcome")} for r in admission["resources"]]
        lab = doc["applied"][0]
        assert {r["type"] for r in lab["resources"]} >= {"Observation", "DiagnosticReport"}
        assert doc["dead_letters"] == [] and doc["queues_read"]
        begin, end = _audit(settled)[-2:]
        assert (begin["action"], begin["event"], end["event"]) == ("find", "begin", "end") and end["applied"] == 2
        assert begin["patient_key"] == admission["patient_key"]
        assert GOOD_FNR not in out + err and GOOD_FNR not in (settled.data_dir / "audit.log").read_text()

    def test_the_number_can_come_from_stdin(self, settled, capsys, monkeypatch):
        """`--patient -` reads the number from stdin (kept out of ps and shell history): the same messages."""
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(GOOD_FNR + "\n"))
        code, out, _ = _find(capsys, "--patient", "-", "--json", "--no-dlq")
        assert code == 0 and [m["control_id"] for m in json.loads(out)["applied"]] == ["F2", "F1"]

    def test_a_message_refused_by_the_record_is_found_by_its_patient(self, settled, capsys):
        """The A45 converted (its patient known) but the record refused it: it is a dead letter with that patient's key."""
        code, out, _ = _find(capsys, "--patient", MOVED_TO, "--json")
        assert code == 0
        doc = json.loads(out)
        assert doc["applied"] == []
        [letter] = doc["dead_letters"]
        assert (letter["control_id"], letter["stage"]) == ("OWN-A45", "apply") and letter["patient_key"].startswith("h:")
        assert letter["queue"] == settled.engine.broker.names.dead_letter

    def test_by_control_id_in_text(self, settled, capsys):
        """By control id: an applied message lists its resources and versions; a refused one its reason and position."""
        code, out, _ = _find(capsys, "--control-id", "F1")
        assert code == 0
        assert "F1  ADT^A01" in out and "Patient/" in out and "/_history/1  created" in out
        code, out, _ = _find(capsys, "--control-id", "F4")
        assert code == 0
        assert "applied: none" in out and "F4  at PID-3[1].1: national identity number is not a valid" in out
        assert _audit(settled) == []  # a lookup by control id names no patient: not audited

    def test_a_dead_letter_refused_at_convert_or_apply_names_its_sender(self, settled, capsys):
        """Review H131: F4 (refused at convert) and the A45 (refused by the record) named no sender, so `find --sender`
        showed them under any sender, and an operator could not tell whose they were without the body. They name
        theirs now: found under it, not under another's."""
        for control_id in ("F4", "OWN-A45"):
            code, out, _ = _find(capsys, "--control-id", control_id, "--json")
            [entry], [letter] = json.loads(out)["not_applied"], json.loads(out)["dead_letters"]
            assert code == 0 and entry["sender"]
            code, out, _ = _find(capsys, "--control-id", control_id, "--sender", entry["sender"], "--json")
            assert code == 0 and [d["id"] for d in json.loads(out)["dead_letters"]] == [letter["id"]]
            code, out, _ = _find(capsys, "--control-id", control_id, "--sender", "SOMEONE@ELSE", "--json")
            assert code == 1 and json.loads(out)["dead_letters"] == [], control_id

    def test_a_senders_control_characters_never_reach_the_operators_terminal(self, exported, capsys):
        """Review H131: `find` printed a control id (and the sender, type and notes, all sender-supplied) raw: an ESC in
        MSH-10 cleared the operator's screen or retitled the terminal. The text view escapes them as `dlq` does;
        --json keeps the value."""
        settings = exported(None)
        control_id = "ESC\x1b[2J\x07\x9b"
        publish(settings, [adt_message("A01", control_id=control_id, fnr=BAD_FNR, local_id="L1", visit="V1")])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.dead_lettered == 1, 60, what="the dead letter")
        handle.stop()
        code, out, _ = _find(capsys, "--control-id", control_id)
        assert code == 0
        assert not any(ch in out for ch in "\x1b\x07\x9b")
        assert out.count("ESC\\x1b[2J\\x07\\x9b") == 2  # the journal's entry and the dead letter
        code, out, _ = _find(capsys, "--control-id", control_id, "--json")
        doc = json.loads(out)
        assert code == 0 and doc["not_applied"][0]["control_id"] == doc["dead_letters"][0]["control_id"] == control_id

    def test_nothing_found_exits_1(self, settled, capsys):
        """An unknown control id, or a known one from another sender: exit 1, and the output says where it looked."""
        code, out, _ = _find(capsys, "--control-id", "NO-SUCH")
        assert code == 1 and "applied: none" in out and "dead letters: none in" in out
        code, out, _ = _find(capsys, "--control-id", "F1", "--sender", "SOMEONE@ELSE", "--no-dlq")
        assert code == 1 and "applied: none" in out and "dead letters" not in out

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            ((), "give --control-id, --patient or --patient-key"),
            (("--patient", BAD_FNR), "check digits do not match"),
            (("--patient", "12345"), "not 11 digits"),
            (("--patient", GOOD_FNR, "--patient-key", "h:0"), "not both"),
        ],
    )
    def test_usage_errors_exit_2_without_echoing_the_number(self, exported, capsys, args, says):
        exported(None)
        code, out, err = _find(capsys, *args)
        assert code == 2 and says in err and out == ""
        assert BAD_FNR not in err and GOOD_FNR not in err


    def test_a_record_that_is_not_there_is_not_made(self, exported, capsys, monkeypatch, tmp_path):
        """A mistyped SQLite record URL: find made an empty record there and answered "applied: none", exit 1 as if
        the message was never applied. It now says there is no record at that path (exit 1) and creates nothing."""
        exported(None)
        typo = tmp_path / "recrod.sqlite3"
        monkeypatch.setenv("HELSEBRO_RECORD_URL", f"sqlite:///{typo}")
        code, out, err = _find(capsys, "--control-id", "F1", "--no-dlq")
        assert code == 1 and out == ""
        assert f"no record at {typo}" in err
        assert not typo.exists()

    def test_another_applications_database_is_refused_not_written(self, exported, capsys, monkeypatch, tmp_path):
        """HELSEBRO_RECORD_URL naming another application's SQLite file: find created Helsebro's schema in it and
        answered "applied: none". It now exits 1 saying it is not a Helsebro record, and leaves the file as it was."""
        import sqlite3

        exported(None)
        other = tmp_path / "other" / "app.sqlite3"
        other.parent.mkdir()
        conn = sqlite3.connect(other)
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        conn.commit()
        conn.close()
        before = other.read_bytes()
        monkeypatch.setenv("HELSEBRO_RECORD_URL", f"sqlite:///{other}")
        code, out, err = _find(capsys, "--control-id", "F1", "--no-dlq")
        assert code == 1 and out == ""
        assert "not a Helsebro record" in err and str(other) in err
        assert other.read_bytes() == before
        assert sorted(p.name for p in other.parent.iterdir()) == ["app.sqlite3"]


    def test_a_read_only_record_in_a_read_only_folder_is_found_in_and_left_as_it_was(self, settled, capsys):
        """find opened the SQLite record read-write: it made `-writer.lock` beside it (a record copied without its lock
        file gained one), set WAL mode and prepared the schema, and a record chmod 444 in a read-only folder was unusable
        to anyone but root. Now it reads the file read-only: the message is found, and not a file or byte changed."""
        record = settled.sqlite_path
        record.with_name(record.name + "-writer.lock").unlink()  # as copied from a backup: the engine's lock file stays behind
        before, listing = record.read_bytes(), sorted(p.name for p in record.parent.iterdir())
        record.chmod(0o444)
        record.parent.chmod(0o555)
        try:
            code, out, err = _find(capsys, "--control-id", "F1", "--no-dlq", "--json")
        finally:
            record.parent.chmod(0o755)
            record.chmod(0o644)
        assert code == 0, err
        assert [m["control_id"] for m in json.loads(out)["applied"]] == ["F1"]
        assert record.read_bytes() == before
        assert sorted(p.name for p in record.parent.iterdir()) == listing

    def test_an_empty_record_file_in_the_data_dir_is_no_record_yet(self, exported, capsys):
        """A first `run` stopped before the record's tables committed leaves an empty file in the data dir: find said it
        was not a Helsebro record (check the settings). Now it says there is no record yet, and leaves the file empty."""
        settings = exported(None)
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        settings.sqlite_path.touch()
        code, out, err = _find(capsys, "--control-id", "F1", "--no-dlq")
        assert code == 1 and out == ""
        assert f"no record yet at {settings.sqlite_path}" in err and "not a Helsebro record" not in err
        assert settings.sqlite_path.stat().st_size == 0

class TestKeyedPatientKeys:
    def test_a_key_made_with_the_secret_is_found_only_with_it(self, exported, capsys, monkeypatch):
        """HELSEBRO_PHI_KEY set for the engine and for find: the patient's key is an HMAC, not the plain hash, and find
        with another secret (or none) cannot name the patient."""
        from router.pipeline.convert import patient_key_for
        from router.settings import load_settings
        from schemas.identity import FNR_SYSTEM

        exported(None)
        monkeypatch.setenv("HELSEBRO_PHI_KEY", "first-secret")
        keyed = load_settings()
        publish(keyed, [adt_message("A01", control_id="K1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
        handle = run_engine_in_thread(keyed, logger=QuietLogger())
        wait_until(lambda: handle.stats.applied == 1, 60, what="applied")
        handle.stop()
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--json", "--no-dlq")
        assert code == 0
        [found] = json.loads(out)["applied"]
        assert found["patient_key"] == patient_key_for(FNR_SYSTEM, GOOD_FNR, b"first-secret") != patient_key_for(FNR_SYSTEM, GOOD_FNR)
        monkeypatch.setenv("HELSEBRO_PHI_KEY", "another-secret")
        assert _find(capsys, "--patient", GOOD_FNR, "--no-dlq")[0] == 1
        monkeypatch.delenv("HELSEBRO_PHI_KEY")
        assert _find(capsys, "--patient", GOOD_FNR, "--no-dlq")[0] == 1
        assert _find(capsys, "--patient-key", found["patient_key"], "--no-dlq")[0] == 0  # the key itself needs no secret


class TestAcrossFormats:
    def test_a_kith_message_is_journalled_under_the_patients_one_key(self, exported, capsys):
        """A PLO Innleggelsesrapport (KITH XML) for the patient of an ADT: one key for both, so find lists both; the
        KITH message under its MsgId, its sender's HER-id and its type."""
        from router.pipeline.convert import patient_key_for
        from schemas.identity import FNR_SYSTEM

        settings = exported(None)
        plo = ROOT / "mappings" / "kith" / "messages" / "PLO_Innleggelsesrapport.cases" / "innleggelsesrapport_ny.xml"
        publish(settings, [adt_message("A01", control_id="X1", fnr=GOOD_FNR, local_id="L1", visit="V1"), plo.read_bytes()])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 2, 60, what="both settled")
        handle.stop()
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--json", "--no-dlq")
        assert code == 0
        # Two partitions may take them (the partition key is read from the raw bytes per format): either may be newer.
        adt, kith = sorted(json.loads(out)["applied"], key=lambda m: m["message_type"])
        assert (adt["control_id"], kith["message_type"]) == ("X1", "INNLEGGELSESRAPPORT")
        assert kith["control_id"] in plo.read_text() and kith["sender"] in plo.read_text()
        assert adt["patient_key"] == kith["patient_key"] == patient_key_for(FNR_SYSTEM, GOOD_FNR)


class TestWhatWasNotApplied:
    @pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def routed(self, request, exported):
        """Admissions (A01) go to the record, lab results (ORU) only to a legacy queue, anything else nowhere; a resent
        A01 comes within the duplicate window; an A01 with a bad fødselsnummer is dead-lettered."""
        routes = {
            "destinations": {"record": {"kind": "record"}, "lab": {"kind": "queue", "queue": "lab.results", "format": "passthrough"}},
            "routes": [{"name": "admissions", "match": {"message_code": ["ADT"], "event": ["A01"]}, "to": ["record"]},
                       {"name": "lab", "match": {"message_code": ["ORU"]}, "to": ["lab"]}],
            "duplicates": {"window_seconds": 3600},
        }
        settings = exported(RABBIT if request.param == "rabbitmq" else None, routes=routes)
        admission = adt_message("A01", control_id="N1", fnr=GOOD_FNR, local_id="L1", visit="V1")
        publish(settings, [
            admission,
            admission,  # resent: a duplicate
            adt_message("A08", control_id="N3", fnr=GOOD_FNR, local_id="L1", visit="V1"),  # no route takes an A08
            _oru("N2", GOOD_FNR),  # forwarded to the lab only
            adt_message("A01", control_id="N4", fnr=BAD_FNR, local_id="L4", visit="V4"),
        ])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 5, 60, what="five messages settled")
        handle.stop()
        return settings

    def test_every_outcome_is_found_with_why(self, routed, capsys):
        """By patient: the one applied admission, then its duplicate, the filtered A08 and the forwarded result, each
        with its outcome and a note; nothing of the patient's is left out, and no number is shown."""
        code, out, err = _find(capsys, "--patient", GOOD_FNR, "--json", "--no-dlq")
        assert code == 0, err
        doc = json.loads(out)
        assert [(m["control_id"], m["outcome"]) for m in doc["applied"]] == [("N1", "applied")]
        outcomes = {m["control_id"]: (m["outcome"], m["note"]) for m in doc["not_applied"]}
        assert set(outcomes) == {"N1", "N2", "N3"}
        assert outcomes["N1"][0] == "duplicate" and "within the last 3600 s" in outcomes["N1"][1]
        assert outcomes["N2"] == ("forwarded", "forwarded to lab (not to the record)")
        routed_to = {m["control_id"]: m["destinations"] for m in doc["applied"] + doc["not_applied"]}
        assert routed_to["N2"] == [{"name": "lab", "kind": "queue", "state": "published", "delivered_at": None, "receipt": None}]
        assert routed_to["N3"] == [] and doc["applied"][0]["destinations"] == []
        assert outcomes["N3"] == ("filtered", "filtered: no route matched (not applied, not forwarded)")
        assert {m["patient_key"] for m in doc["applied"] + doc["not_applied"]} == {doc["applied"][0]["patient_key"]}
        assert all(m["settled_at"].endswith("Z") for m in doc["not_applied"])
        _begin, end = _audit(routed)[-2:]
        assert (end["applied"], end["not_applied"]) == (1, 3)
        code, text, _ = _find(capsys, "--patient", GOOD_FNR, "--no-dlq")
        assert "not applied (3, newest first):" in text and "      duplicate: its sender's control id was settled within" in text
        assert "      forwarded to lab (not to the record)\n      also to: lab (queue): published" in text
        assert GOOD_FNR not in out + text

    def test_a_list_by_outcome_and_time_reads_the_journal_only(self, routed, capsys):
        """--outcome alone lists the journal's messages with that outcome, newest first, and searches no dead-letter queue;
        --since narrows by age; --sender narrows too; nothing by patient, so nothing is audited."""
        code, out, _ = _find(capsys, "--outcome", "filtered", "--json")
        doc = json.loads(out)
        assert code == 0 and [(m["control_id"], m["outcome"]) for m in doc["not_applied"]] == [("N3", "filtered")]
        assert doc["applied"] == [] and doc["dead_letters"] == [] and doc["queues_read"] == []
        code, out, _ = _find(capsys, "--outcome", "dead_lettered")
        assert code == 0 and "N4" in out and "dead letters: searched for a control id or a patient only" in out
        code, out, _ = _find(capsys, "--since", "1h", "--json")
        assert code == 0 and {m["control_id"] for m in json.loads(out)["applied"] + json.loads(out)["not_applied"]} == {"N1", "N2", "N3", "N4"}
        sender = json.loads(out)["applied"][0]["sender"]
        assert _find(capsys, "--sender", sender, "--outcome", "applied", "--no-dlq")[0] == 0
        assert _find(capsys, "--sender", "SOMEONE@ELSE", "--outcome", "applied")[0] == 1
        assert _find(capsys, "--outcome", "unchanged")[0] == 1
        assert _audit(routed) == []

    def test_an_outcome_narrows_a_patients_trail(self, routed, capsys):
        """--patient with --outcome: only that outcome of the patient's messages; dead letters are searched only for dead_lettered."""
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--outcome", "duplicate", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["applied"] == [] and [m["outcome"] for m in doc["not_applied"]] == ["duplicate"]
        assert doc["queues_read"] == []

    @pytest.mark.parametrize("age", ["0h", "1w", "h", "-5m", "1.5h"])
    def test_a_since_that_is_no_age_is_a_usage_error(self, exported, capsys, age):
        exported(None)
        with pytest.raises(SystemExit) as exit_:
            main(["find", "--outcome", "filtered", f"--since={age}"])
        assert exit_.value.code == 2 and "90s, 15m, 2h or 7d" in capsys.readouterr().err

    def test_a_dead_letter_stays_in_the_journal_after_the_queue_is_purged(self, routed, capsys):
        """The refused A01 is found in the journal (with its reason and position) and in the dead-letter queue; once an
        operator purges the queue, the journal still says what became of it."""
        code, out, _ = _find(capsys, "--control-id", "N4", "--json")
        doc = json.loads(out)
        assert code == 0 and [d["control_id"] for d in doc["dead_letters"]] == ["N4"]
        [entry] = doc["not_applied"]
        assert entry["outcome"] == "dead_lettered" and entry["note"].startswith("dead-lettered (convert) at PID-3[1].1: national identity number")
        assert entry["patient_key"] == ""  # refused before its patient was known
        assert main(["dlq", "purge", "--all", "--yes"]) == 0
        code, out, _ = _find(capsys, "--control-id", "N4", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["dead_letters"] == [] and [m["outcome"] for m in doc["not_applied"]] == ["dead_lettered"]
        assert BAD_FNR not in out

    def test_a_message_dead_lettered_at_render_is_journalled_with_what_failed(self, exported, capsys):
        """An A13 the outbound HL7 v2 mapping cannot render: sent only to that legacy queue (R1), it is dead-lettered at
        stage render and journalled so; sent also to a passthrough queue (R2), the note names only the queue it reached
        and says which destination dead-lettered it."""
        routes = {
            "destinations": {"lab": {"kind": "queue", "queue": "lab.adt", "format": "hl7v2", "version": "2.3", "charset": "8859/1"},
                             "raw": {"kind": "queue", "queue": "raw.adt", "format": "passthrough"}},
            "routes": [{"name": "here", "match": {"event": ["A13"], "sender": ["PAS@STOLAV"]}, "to": ["lab"]},
                       {"name": "there", "match": {"event": ["A13"], "sender": ["PAS@OTHER"]}, "to": ["lab", "raw"]}],
        }
        settings = exported(None, routes=routes)
        other = adt_message("A13", control_id="R2", fnr=GOOD_FNR, local_id="L2", visit="V2").replace(b"|PAS|STOLAV|", b"|PAS|OTHER|", 1)
        publish(settings, [adt_message("A13", control_id="R1", fnr=GOOD_FNR, local_id="L1", visit="V1"), other])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 2, 60, what="both settled")
        handle.stop()
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--json", "--no-dlq")
        assert code == 0
        notes = {m["control_id"]: (m["outcome"], m["note"]) for m in json.loads(out)["not_applied"]}
        why = "dead-lettered (render) for lab at MSH-9: no outbound hl7v2 mapping serves ADT^A13"
        assert notes == {"R1": ("dead_lettered", why), "R2": ("forwarded", f"forwarded to raw (not to the record); {why}")}
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--json")  # the dead letters read: each says where it failed
        states = {m["control_id"]: [(d["name"], d["state"]) for d in m["destinations"]] for m in json.loads(out)["not_applied"]}
        assert states == {"R1": [("lab", "dead_lettered")], "R2": [("lab", "dead_lettered"), ("raw", "published")]}

    def test_a_batch_settled_again_after_a_stop_keeps_its_outcome(self, exported, capsys):
        """The engine stops while the record cannot take the journal rows: the batch is not acked and comes again. The
        filtered message is journalled as filtered then, not as a duplicate of itself."""
        from router.errors import RecordUnavailable

        routes = {"destinations": {"record": {"kind": "record"}},
                  "routes": [{"name": "admissions", "match": {"event": ["A01"]}, "to": ["record"]}],
                  "duplicates": {"window_seconds": 3600}}
        settings = exported(None, routes=routes)
        publish(settings, [adt_message("A08", control_id="S1", fnr=GOOD_FNR, local_id="L1", visit="V1")])

        class Unjournalled:
            def __init__(self, inner):
                self.inner, self.calls = inner, 0

            def journal_settled(self, _rows):
                self.calls += 1
                raise RecordUnavailable("database is restarting")

            def __getattr__(self, name):
                return getattr(self.inner, name)

        from adapters.fhir.record import open_record

        record = Unjournalled(open_record(settings))
        handle = run_engine_in_thread(settings, logger=QuietLogger(), record=record)
        wait_until(lambda: record.calls >= 1, 60, what="a journal attempt")
        handle.stop()
        record.inner.close()
        assert handle.stats.messages == 0
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 1, 60, what="settled again")
        handle.stop()
        code, out, _ = _find(capsys, "--control-id", "S1", "--json", "--no-dlq")
        assert code == 0
        assert [(m["outcome"], m["note"]) for m in json.loads(out)["not_applied"]] == [("filtered", "filtered: no route matched (not applied, not forwarded)")]


def _refused_by_the_server(settings, scripted_fhir) -> None:
    """An engine run in which the external server `ekstern` refuses the one admission E1 (its letter waits in ekstern's dead-letter queue)."""
    server = scripted_fhir(take=0)
    publish(settings, [adt_message("A01", control_id="E1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
    handle = run_engine_in_thread(settings, logger=QuietLogger(), destination_clients={"ekstern": server})
    try:
        wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="the server's refusal dead-lettered")
    finally:
        handle.stop()


class TestDestinations:
    def test_an_applied_message_names_the_external_server_it_also_went_to(self, with_destination, scripted_fhir, capsys):
        """Routed to the record and an external FHIR server that refuses it: applied, naming `ekstern (fhir)`, and the server's
        refusal is among the dead letters (the destination's own queue) with the same control id."""
        _refused_by_the_server(with_destination, scripted_fhir)
        code, out, _ = _find(capsys, "--control-id", "E1", "--json")
        doc = json.loads(out)
        assert code == 0
        [applied] = doc["applied"]
        assert applied["destinations"] == [{"name": "ekstern", "kind": "fhir", "state": "dead_lettered", "delivered_at": None, "receipt": None}]
        [letter] = doc["dead_letters"]
        assert letter["queue"].endswith(".ekstern.dlq") and letter["control_id"] == "E1"
        code, text, _ = _find(capsys, "--control-id", "E1")
        assert "      also to: ekstern (fhir): dead-lettered" in text
        code, text, _ = _find(capsys, "--control-id", "E1", "--no-dlq")  # the dead letters not read: not delivered, and no more known
        assert "      also to: ekstern (fhir): pending" in text

    def test_each_message_says_whether_the_external_server_has_it(self, with_destination, scripted_fhir, capsys):
        """The server accepts the first Bundle and refuses the second: `find` says the first was delivered, and when, from the
        destination's ledger, and the second dead-lettered. Once the operator replays the letter and the server takes it,
        the second reads delivered too."""
        server = scripted_fhir(take=1)
        publish(with_destination, [adt_message("A01", control_id=f"D{n}", fnr=GOOD_FNR, local_id="L1", visit=f"V{n}") for n in (1, 2)])
        handle = run_engine_in_thread(with_destination, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="the second refused")
        finally:
            handle.stop()
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--json")
        assert code == 0
        states = {m["control_id"]: m["destinations"] for m in json.loads(out)["applied"]}
        [first], [second] = states["D1"], states["D2"]
        assert (first["state"], second["state"]) == ("delivered", "dead_lettered")
        assert first["delivered_at"].endswith("Z") and second["delivered_at"] is None
        code, text, _ = _find(capsys, "--control-id", "D1")
        assert f"      also to: ekstern (fhir): delivered {first['delivered_at']}" in text
        [letter] = json.loads(_find(capsys, "--control-id", "D2", "--json")[1])["dead_letters"]
        assert main(["dlq", "replay", letter["id"], "--queue", letter["queue"], "--yes"]) == 0
        server.refusing = False
        handle = run_engine_in_thread(with_destination, logger=QuietLogger(), destination_clients={"ekstern": server})
        try:
            wait_until(lambda: len(server.applied) == 2, 60, what="the replayed letter delivered")
        finally:
            handle.stop()
        [entry] = json.loads(_find(capsys, "--control-id", "D2", "--json")[1])["applied"]
        assert [d["state"] for d in entry["destinations"]] == ["delivered"]

    def test_a_message_the_server_has_not_taken_yet_is_pending(self, with_destination, capsys):
        """The server is down (every call fails for now): the message waits in its work queue (strict order), and `find`
        says so, with no dead letter and no delivery time."""
        from router.errors import RecordUnavailable

        class Down:
            calls = 0

            def apply(self, _bundle):
                Down.calls += 1
                raise RecordUnavailable("connection refused")

        publish(with_destination, [adt_message("A01", control_id="P1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
        handle = run_engine_in_thread(with_destination, logger=QuietLogger(), destination_clients={"ekstern": Down()})
        try:
            wait_until(lambda: Down.calls >= 1 and handle.stats.applied == 1, 60, what="applied, and the server tried")
        finally:
            handle.stop()
        code, out, _ = _find(capsys, "--control-id", "P1", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["dead_letters"] == []
        assert doc["applied"][0]["destinations"] == [{"name": "ekstern", "kind": "fhir", "state": "pending", "delivered_at": None, "receipt": None}]

    def test_a_message_the_record_refused_names_no_destination_it_never_reached(self, exported, capsys):
        """Routed to the record and a legacy queue, an A45 the record refuses is dead-lettered at apply and not forwarded:
        the journal must not say it also went to the queue (found by review)."""
        routes = {
            "destinations": {"record": {"kind": "record"}, "lab": {"kind": "queue", "queue": "lab.adt", "format": "passthrough"}},
            "routes": [{"name": "all", "to": ["record", "lab"]}],
        }
        settings = exported(None, routes=routes)
        publish(settings, [A45.read_bytes()])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 1, 60, what="the A45 settled")
        handle.stop()
        assert handle.stats.dead_lettered == 1
        code, out, _ = _find(capsys, "--control-id", "OWN-A45", "--json", "--no-dlq")
        assert code == 0
        [entry] = json.loads(out)["not_applied"]
        assert entry["outcome"] == "dead_lettered" and entry["note"].startswith("dead-lettered (apply)")
        assert entry["destinations"] == []
        code, text, _ = _find(capsys, "--control-id", "OWN-A45", "--no-dlq")
        assert "also to:" not in text


    def test_a_destinations_dead_letter_keeps_its_sender_type_and_routes(self, with_destination, scripted_fhir, capsys):
        """Review H131: the external server's refusal was dead-lettered without `x-helsebro-sender`, the message type and
        the routes the work message carried: `find --sender` could not tell it from another sender's letter with its
        control id, and `dlq show` could not say whose it was. They are kept now."""
        _refused_by_the_server(with_destination, scripted_fhir)
        code, out, _ = _find(capsys, "--control-id", "E1", "--json")
        [letter] = json.loads(out)["dead_letters"]
        code, out, _ = _find(capsys, "--control-id", "E1", "--sender", "SOMEONE@ELSE", "--json")
        assert code == 1 and json.loads(out)["dead_letters"] == []
        code, out, _ = _find(capsys, "--control-id", "E1", "--sender", "PAS@STOLAV", "--json")
        assert code == 0 and [d["id"] for d in json.loads(out)["dead_letters"]] == [letter["id"]]
        capsys.readouterr()
        assert main(["dlq", "show", letter["id"], "--queue", letter["queue"], "--json"]) == 0
        headers = json.loads(capsys.readouterr().out)["headers"]
        assert (headers.get("x-helsebro-sender"), headers.get("x-helsebro-message-type"), headers.get("x-helsebro-routes")) == ("PAS@STOLAV", "ADT^A01", "all")


class TestDestinationStatesAtTheEdges:
    def test_an_outcome_filter_does_not_turn_a_refused_delivery_into_pending(self, with_destination, scripted_fhir, capsys):
        """The server refused E1 (its letter waits in ekstern's dead-letter queue). `find --control-id E1 --outcome applied`
        reads no dead-letter queue, yet says `pending` ("it waits in the work queue"): it must not claim that."""
        _refused_by_the_server(with_destination, scripted_fhir)
        code, out, _ = _find(capsys, "--control-id", "E1", "--outcome", "applied", "--json")
        assert code == 0
        [applied] = json.loads(out)["applied"]
        assert applied["destinations"][0]["state"] == "dead_lettered"

    def test_another_senders_render_dead_letter_does_not_mark_this_message(self, exported, capsys):
        """Two senders both use control id X1 (MSH-10 is unique per sender only). OTHER's A13 cannot be rendered for lab;
        STOLAV's A08 was rendered and published there. `find --control-id X1` must not say STOLAV's reached lab dead-lettered."""
        routes = {
            "destinations": {"lab": {"kind": "queue", "queue": "lab.adt", "format": "hl7v2", "version": "2.3", "charset": "8859/1"}},
            "routes": [{"name": "all", "to": ["lab"]}],
        }
        settings = exported(None, routes=routes)
        other = adt_message("A13", control_id="X1", fnr=GOOD_FNR, local_id="L2", visit="V2").replace(b"|PAS|STOLAV|", b"|PAS|OTHER|", 1)
        publish(settings, [adt_message("A08", control_id="X1", fnr=GOOD_FNR, local_id="L1", visit="V1"), other])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 2, 60, what="both settled")
        handle.stop()
        code, out, _ = _find(capsys, "--control-id", "X1", "--json")
        assert code == 0
        states = {m["sender"]: (m["outcome"], [d["state"] for d in m["destinations"]]) for m in json.loads(out)["not_applied"]}
        assert states["PAS@STOLAV"] == ("forwarded", ["published"]), states

    def test_without_the_dead_letters_a_render_failure_is_not_called_published(self, exported, capsys):
        """R1 was dead-lettered at render for lab, and its own journal note says so; with --no-dlq `find` must not say
        in the same entry that lab has it (`published`)."""
        routes = {
            "destinations": {"lab": {"kind": "queue", "queue": "lab.adt", "format": "hl7v2", "version": "2.3", "charset": "8859/1"}},
            "routes": [{"name": "here", "to": ["lab"]}],
        }
        settings = exported(None, routes=routes)
        publish(settings, [adt_message("A13", control_id="R1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
        handle.stop()
        code, out, _ = _find(capsys, "--control-id", "R1", "--json", "--no-dlq")
        assert code == 0
        [entry] = json.loads(out)["not_applied"]
        assert "dead-lettered (render) for lab" in entry["note"]
        assert [d["state"] for d in entry["destinations"]] != ["published"], entry


def _drain_if_declared(settings, queue: str) -> list:
    try:
        return drain_queue(settings, queue)
    except Exception as exc:  # noqa: BLE001  # RabbitMQ: a queue nothing was ever sent to was never declared
        assert getattr(exc, "reply_code", None) == 404, exc
        return []


def _k9_dead_lettered_at_render(exported, monkeypatch, routes):
    """Settings after the engine settled K9, an admission that could not be rendered for kommune (dead-lettered at render)."""
    from adapters.kith.render import KithRenderer
    from router.errors import InvalidContent

    def refuse(self, conv):
        raise InvalidContent("the Bundle has no Encounter, which outbound mapping PLO_InnlagtPasient needs", location="Bundle")

    monkeypatch.setattr(KithRenderer, "render", refuse)
    settings = exported(None, routes=routes)
    publish(settings, [adt_message("A01", control_id="K9", fnr=GOOD_FNR, local_id="L1", visit="V9")])
    handle = run_engine_in_thread(settings, logger=QuietLogger())
    wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
    handle.stop()
    return settings


KITH_ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "kommune": {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
    },
    "routes": [{"name": "admissions", "to": ["record", "kommune"]}],
}


class TestReceipts:

    @pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def sent(self, request, exported):
        """Three admissions rendered as PLO for kommune 12345; the municipality answers the first with AppRec OK and the
        second with a refusal (X99), and the third not at all. Returns the settings and the engine's stats of the answers."""
        from adapters.kith import build_apprecs, read_message
        from router.errors import MessageError

        settings = exported(RABBIT if request.param == "rabbitmq" else None, routes=KITH_ROUTES)
        publish(settings, [adt_message("A01", control_id=f"K{n}", fnr=GOOD_FNR, local_id="L1", visit=f"V{n}", admitted="20240301101500")
                           for n in (1, 2, 3)])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 3, 60, what="three admissions settled")
        plo = {h["x-helsebro-control-id"]: body for h, body in drain_queue(settings, settings.routes.destinations["kommune"].queue)}
        answers = []
        for control_id, error in (("K1", None), ("K2", MessageError("the receiving system could not file it"))):
            [apprec] = build_apprecs(read_message(plo[control_id]).envelope, error=error)  # what kommune's system sends back
            answers.append(apprec.xml)
        publish(settings, answers)
        wait_until(lambda: handle.stats.messages == 5, 60, what="both AppRecs settled")
        handle.stop()
        return settings, handle.stats

    def test_an_apprec_for_what_helsebro_sent_is_a_receipt_never_answered(self, sent):
        """Each AppRec settles as a `receipt`: not dead-lettered, not answered with an AppRec of its own."""
        settings, stats = sent
        assert (stats.receipts, stats.dead_lettered, stats.applied) == (2, 0, 3)
        assert drain_queue(settings, settings.engine.broker.names.dead_letter) == []
        assert _drain_if_declared(settings, f"{settings.engine.broker.names.apprec_prefix}.12345") == []

    def test_find_shows_each_messages_apprec_beside_its_destination(self, sent, capsys):
        """find --control-id: the admission's kommune destination says AppRec OK (K1), refused with the code (K2), or
        none yet (K3); --outcome receipt lists the AppRecs with their notes."""
        receipts = {}
        for control_id in ("K1", "K2", "K3"):
            code, out, _ = _find(capsys, "--control-id", control_id, "--json")
            assert code == 0
            [entry] = json.loads(out)["applied"]
            [dest] = entry["destinations"]
            assert (dest["name"], dest["state"]) == ("kommune", "published")
            receipts[control_id] = dest["receipt"]
        assert receipts["K1"]["accepted"] is True and receipts["K1"]["at"].endswith("Z")
        assert receipts["K2"]["accepted"] is False and "Avvist" in receipts["K2"]["note"] and "X99" in receipts["K2"]["note"]
        assert receipts["K3"] == {"accepted": None, "at": None, "note": None}
        code, text, _ = _find(capsys, "--control-id", "K2")
        assert "      also to: kommune (queue): published, REFUSED by AppRec " in text
        code, text, _ = _find(capsys, "--control-id", "K3")
        assert "      also to: kommune (queue): published, no AppRec yet" in text
        code, out, _ = _find(capsys, "--outcome", "receipt", "--json")
        listed = json.loads(out)["not_applied"]
        assert code == 0 and [m["outcome"] for m in listed] == ["receipt", "receipt"]
        assert {m["message_type"] for m in listed} == {"APPREC^1", "APPREC^2"} and all(m["sender"] == "12345" for m in listed)
        assert all(m["note"].startswith("receipt: AppRec ") for m in listed)

    @pytest.mark.parametrize("broker", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
    def test_an_apprec_answering_nothing_helsebro_sent_is_flagged(self, broker, exported, capsys):
        """An AppRec naming an OriginalMsgId Helsebro never sent (review H160) was journalled under that id without a word:
        its note says it answers nothing Helsebro sent, and the log warns (apprec_unmatched, ids only); an AppRec for
        what Helsebro did send says neither."""
        from router.testing import apprec_answers

        events: list[tuple[str, str, dict[str, object]]] = []

        class Recording:
            def __getattr__(self, level):
                return lambda event, **kw: events.append((level, event, kw))

        settings = exported(RABBIT if broker == "rabbitmq" else None, routes=KITH_ROUTES)
        publish(settings, [adt_message("A01", control_id="K1", fnr=GOOD_FNR, local_id="L1", visit="V1", admitted="20240301101500")])
        handle = run_engine_in_thread(settings, logger=Recording())
        try:
            wait_until(lambda: handle.stats.messages == 1, 60, what="the admission settled")
            [(_h, plo)] = drain_queue(settings, settings.routes.destinations["kommune"].queue)
            sent_id, stranger, *answers = apprec_answers(plo)
            publish(settings, answers)
            wait_until(lambda: handle.stats.messages == 3, 60, what="both AppRecs settled")
        finally:
            handle.stop()
        code, out, _ = _find(capsys, "--outcome", "receipt", "--json")
        notes = {m["control_id"]: m["note"] for m in json.loads(out)["not_applied"]}
        assert code == 0 and set(notes) == {sent_id, stranger}
        assert "answers nothing Helsebro sent" in notes[stranger]
        assert "answers nothing Helsebro sent" not in notes[sent_id]
        warned = [(level, kw) for level, event, kw in events if event == "apprec_unmatched"]
        assert [kw["original_msg_id"] for _level, kw in warned] == [stranger]
        assert warned[0][0] == "warning" and GOOD_FNR not in repr(warned)

    def test_the_messages_still_awaiting_an_apprec_are_listed(self, sent, capsys):
        """--awaiting-apprec AGE: the messages sent to a KITH destination at least AGE ago with no AppRec yet: K3 only (K1
        was answered OK, K2 refused: a refusal is followed up by its own note). Nothing that old: exit 1. It lists alone."""
        import time

        time.sleep(1.1)
        code, out, _ = _find(capsys, "--awaiting-apprec", "1s", "--json")
        doc = json.loads(out)
        assert code == 0 and [m["control_id"] for m in doc["applied"]] == ["K3"] and doc["not_applied"] == []
        assert doc["applied"][0]["destinations"][0]["receipt"] == {"accepted": None, "at": None, "note": None}
        code, text, _ = _find(capsys, "--awaiting-apprec", "1s")
        assert "K3" in text and "      also to: kommune (queue): published, no AppRec yet" in text and "K1" not in text
        assert _find(capsys, "--awaiting-apprec", "1h")[0] == 1
        code, _out, err = _find(capsys, "--awaiting-apprec", "96h", "--control-id", "K3")
        assert code == 2 and "--awaiting-apprec lists by itself" in err

    def test_status_counts_the_messages_whose_apprec_is_overdue(self, sent, capsys, monkeypatch):
        """`status`: per KITH destination, the messages sent at least --apprec-overdue ago (default 96h) with no AppRec
        yet: K3 once it is 1 s old, none at 96 h. The record away: the count is null, the rest still shows."""
        import time

        time.sleep(1.1)
        capsys.readouterr()
        assert main(["status", "--json", "--interval", "0", "--apprec-overdue", "1s"]) == 0
        assert json.loads(capsys.readouterr().out)["apprecs"] == [{"destination": "kommune", "overdue": 1, "overdue_after_s": 1.0, "complete": True, "dead_letters_read": True}]
        assert main(["status", "--interval", "0", "--apprec-overdue", "1s"]) == 0
        text = capsys.readouterr().out
        assert "KITH DESTINATION  NO APPREC AFTER 1 s" in text and "(helsebro find --awaiting-apprec 1s lists them)" in text
        assert main(["status", "--json", "--interval", "0"]) == 0
        assert json.loads(capsys.readouterr().out)["apprecs"] == [{"destination": "kommune", "overdue": 0, "overdue_after_s": 345600.0, "complete": True, "dead_letters_read": True}]
        assert main(["status", "--interval", "0"]) == 0
        text = capsys.readouterr().out
        assert "NO APPREC AFTER 96 h" in text and "--awaiting-apprec" not in text
        monkeypatch.setenv("HELSEBRO_RECORD_URL", "postgresql://nobody@127.0.0.1:1/none")
        assert main(["status", "--json", "--interval", "0", "--apprec-overdue", "1s"]) == 0
        assert json.loads(capsys.readouterr().out)["apprecs"] == [{"destination": "kommune", "overdue": None, "overdue_after_s": 1.0, "complete": True, "dead_letters_read": True}]

    def test_a_cut_read_is_said_not_passed_over(self, sent, capsys, monkeypatch):
        """When the journal read per KITH destination stops at its limit, find says so on stderr and in `scans_cut`: older
        messages may be waiting too. Limit 2: K3 and K2 are read (K3 listed), K1 is not; limit 3 reads all, nothing is said."""
        import time

        import router.ops.trail as trail_module

        time.sleep(1.1)
        monkeypatch.setattr(trail_module, "_AWAITING_SCAN", 2)
        code, out, err = _find(capsys, "--awaiting-apprec", "1s", "--json")
        doc = json.loads(out)
        assert code == 0 and [m["control_id"] for m in doc["applied"]] == ["K3"]
        assert doc["scans_cut"] == [{"destination": "kommune", "read": 2}]
        assert "only the newest 2 messages sent to kommune were read" in err
        monkeypatch.setattr(trail_module, "_AWAITING_SCAN", 3)
        code, out, err = _find(capsys, "--awaiting-apprec", "1s", "--json")
        assert code == 0 and json.loads(out)["scans_cut"] == [] and "were read" not in err

    def test_a_message_never_sent_there_awaits_no_apprec(self, exported, capsys, monkeypatch):
        """K9 could not be rendered for kommune (dead-lettered at render): nothing was sent, so no AppRec will ever come.
        `--json` must not say `"receipt": {"accepted": null, ...}` (no AppRec yet): a script chasing missing AppRecs after
        96 h would chase this one for ever (found by review)."""
        _k9_dead_lettered_at_render(exported, monkeypatch, KITH_ROUTES)
        code, out, _ = _find(capsys, "--control-id", "K9", "--json")
        [entry] = json.loads(out)["applied"]
        [dest] = entry["destinations"]
        assert code == 0 and dest["state"] == "dead_lettered" and dest["receipt"] is None, dest

    @pytest.mark.parametrize("to", [["record", "kommune"], ["kommune"]])
    def test_a_message_never_sent_there_is_not_awaiting_an_apprec(self, exported, capsys, monkeypatch, to):
        """Review H86: K9 was dead-lettered at render for kommune (applied, or forwarded-only whose note says so): nothing
        was sent, so --awaiting-apprec must not list it for follow-up (the case H85 fixed for --control-id)."""
        import time

        _k9_dead_lettered_at_render(exported, monkeypatch, {**KITH_ROUTES, "routes": [{"name": "admissions", "to": to}]})
        time.sleep(1.1)
        code, out, _ = _find(capsys, "--awaiting-apprec", "1s", "--json")
        assert code == 1, out

    def test_status_says_when_it_could_not_tell_a_render_dead_letter(self, exported, capsys, monkeypatch):
        """Review H87: K9 was applied but dead-lettered at render for kommune; only its dead letter says so. When status
        does not read the dead-letter queue (--scan-limit 0, or deeper than the limit, or the broker failing), K9 counts
        as overdue: `complete` must then say false (and the table why), not pass the count off as exact."""
        import time

        _k9_dead_lettered_at_render(exported, monkeypatch, KITH_ROUTES)
        time.sleep(1.1)
        capsys.readouterr()
        assert main(["status", "--json", "--interval", "0", "--apprec-overdue", "1s"]) == 0
        assert json.loads(capsys.readouterr().out)["apprecs"] == [{"destination": "kommune", "overdue": 0, "overdue_after_s": 1.0, "complete": True, "dead_letters_read": True}]
        assert main(["status", "--json", "--interval", "0", "--apprec-overdue", "1s", "--scan-limit", "0"]) == 0
        [kommune] = json.loads(capsys.readouterr().out)["apprecs"]
        assert kommune["complete"] is False, kommune
        assert main(["status", "--interval", "0", "--apprec-overdue", "1s", "--scan-limit", "0"]) == 0
        assert "(dead letters not read: one dead-lettered at render may be counted)" in capsys.readouterr().out

    def test_an_apprec_from_another_party_answers_nothing_helsebro_sent_there(self, exported, capsys):
        """Review H151: an AppRec counted by its OriginalMsgId alone, whoever sent it. K1 went to kommune 12345; an
        AppRec OK naming K1's MsgId but sent by HER-id 99999 (a misrouted or forged answer) made find say kommune
        accepted it and dropped K1 from --awaiting-apprec: 12345 has not answered. Only 12345's own AppRec counts."""
        import time

        from lxml import etree

        from adapters.kith import build_apprecs, read_message

        settings = exported(None, routes=KITH_ROUTES)
        publish(settings, [adt_message("A01", control_id="K1", fnr=GOOD_FNR, local_id="L1", visit="V1", admitted="20240301101500")])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 1, 60, what="the admission settled")
        [(_h, plo)] = drain_queue(settings, settings.routes.destinations["kommune"].queue)
        [apprec] = build_apprecs(read_message(plo).envelope, error=None)
        root = etree.fromstring(apprec.xml)
        [sender_id] = root.xpath("/*/*[local-name()='Sender']/*/*/*[local-name()='Id']")
        assert sender_id.text == "12345"
        sender_id.text = "99999"
        publish(settings, [etree.tostring(root, xml_declaration=True, encoding="UTF-8")])
        wait_until(lambda: handle.stats.messages == 2, 60, what="the AppRec settled")
        handle.stop()
        assert handle.stats.receipts == 1
        code, out, _ = _find(capsys, "--control-id", "K1", "--json")
        [dest] = json.loads(out)["applied"][0]["destinations"]
        assert code == 0 and dest["receipt"] == {"accepted": None, "at": None, "note": None}, dest
        time.sleep(1.1)
        code, out, _ = _find(capsys, "--awaiting-apprec", "1s", "--json")
        assert code == 0 and [m["control_id"] for m in json.loads(out)["applied"]] == ["K1"]


HNR = "15456110042"  # an H-nummer (month + 40, first digit 0-3): a hospital's own auxiliary number


def _journal_filtered(settings, patient_key: str, count: int) -> None:
    """*count* filtered messages of one patient in the record's journal, as the engine's settle writes them."""
    from adapters.fhir.record import open_record
    from router.contracts import JournalFacts

    record = open_record(settings)
    try:
        record.journal_settled([(f"hl7|LAB@STOLAV|M{i}|x|filtered", JournalFacts(f"M{i}", "LAB@STOLAV", "ORU^R01", patient_key), "filtered",
                                 "no route took it") for i in range(count)])
    finally:
        record.close()


class TestFoundByReview:
    def test_an_h_nummer_is_refused_not_reported_as_never_arrived(self, exported, capsys):
        """The engine keys an H-nummer under its hospital's own system, which the number does not tell: find hashed it under
        `HNR`, matched nothing and exited 1 ("never arrived") for a patient whose messages were all there. Now a usage
        error (exit 2) that points at --patient-key, and the number is not echoed (found by review)."""
        exported(None)
        code, out, err = _find(capsys, "--patient", HNR, "--no-dlq")
        assert code == 2 and out == ""
        assert "H-nummer" in err and "--patient-key" in err and HNR not in err

    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
    def on_record(self, request, exported, monkeypatch):
        """Settings exported to the CLI, with the record on SQLite or on a PostgreSQL schema of its own."""
        import uuid

        from router.settings import load_settings
        from router.testing import drop_schema

        exported(None)
        if request.param == "sqlite":
            yield load_settings()
            return
        pg, schema = "postgresql://postgres@127.0.0.1:5432/test", f"helsebro_{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("HELSEBRO_RECORD_URL", f"{pg}?schema={schema}")
        yield load_settings()
        drop_schema(pg, schema)

    def test_a_cut_at_the_limit_is_said(self, on_record, capsys):
        """A patient with more settled messages than --limit: only the newest N were listed, and nothing said more matched,
        so an operator took the list for the patient's whole trail. Now stderr says so and `--json` has `"more": true`;
        exactly N messages say nothing (found by review)."""
        from router.pipeline.convert import patient_key_for
        from schemas.identity import FNR_SYSTEM

        settings = on_record
        key = patient_key_for(FNR_SYSTEM, GOOD_FNR, settings.phi_key_bytes)
        _journal_filtered(settings, key, 3)
        code, out, err = _find(capsys, "--patient-key", key, "--limit", "2", "--json", "--no-dlq")
        doc = json.loads(out)
        assert code == 0 and [m["control_id"] for m in doc["not_applied"]] == ["M2", "M1"] and doc["more"] is True
        assert "more than 2 messages match; only the newest 2 are shown" in err
        code, out, err = _find(capsys, "--patient-key", key, "--limit", "3", "--no-dlq")
        assert code == 0 and "M0" in out and "more than" not in err
        code, out, err = _find(capsys, "--outcome", "filtered", "--limit", "1", "--json")
        assert code == 0 and json.loads(out)["more"] is True and "more than 1 messages match" in err

    def test_another_senders_dead_letter_is_not_listed_under_sender(self, exported, capsys):
        """A control id is unique per sender only. A render dead letter names its sender (PAS@STOLAV); `--control-id K9
        --sender LAB@AHUS` listed it as that sender's and exited 0. Now it is left out (exit 1), and still found under
        its own sender; a letter that names no sender (refused at convert) is still shown under any (found by review)."""
        from adapters.amqp.connection import open_connection
        from adapters.amqp.outbound import Publisher
        from adapters.fhir.record import open_record
        from router.pipeline.settle import dead_letter_headers

        settings = exported(None)
        open_record(settings).close()  # as an engine run makes it: find reads a record that is there
        conn = open_connection(settings)
        try:
            publisher = Publisher(conn, settings)
            headers = dead_letter_headers(reason="no outbound mapping", stage="render", location=None, control_id="K9",
                                          outcome={"resourceType": "OperationOutcome", "issue": []}, destination="kommune")
            publisher.dead_letter(b"MSH|", headers={**headers, "x-helsebro-sender": "PAS@STOLAV"})
            publisher.dead_letter(b"MSH|", headers=dead_letter_headers(reason="no mapping", stage="convert", location=None, control_id="K8",
                                                                       outcome={"resourceType": "OperationOutcome", "issue": []}))
            publisher.close()
        finally:
            conn.release()
        code, out, _ = _find(capsys, "--control-id", "K9", "--sender", "LAB@AHUS", "--json")
        assert code == 1 and json.loads(out)["dead_letters"] == []
        code, out, _ = _find(capsys, "--control-id", "K9", "--sender", "PAS@STOLAV", "--json")
        assert code == 0 and [(d["control_id"], d["stage"]) for d in json.loads(out)["dead_letters"]] == [("K9", "render")]
        code, out, _ = _find(capsys, "--control-id", "K8", "--sender", "LAB@AHUS", "--json")
        assert code == 0 and [d["control_id"] for d in json.loads(out)["dead_letters"]] == ["K8"]

    def test_a_lookup_the_record_refused_still_ends_in_the_audit_log(self, exported, capsys, monkeypatch):
        """The record unreachable: a lookup by patient wrote its audit `begin` line and never an `end`, so the audit log
        could not tell a failed lookup from one still running or killed. Now an `end` with the error, nothing read; exit 1
        as the docs say (found by review)."""
        settings = exported(None)
        monkeypatch.setenv("HELSEBRO_RECORD_URL", "postgresql://nobody@127.0.0.1:1/none")
        code, out, err = _find(capsys, "--patient-key", "h:0123", "--no-dlq")
        assert code == 1 and out == "" and "the record:" in err
        begin, end = _audit(settings)[-2:]
        assert (begin["event"], end["event"], end["action_id"]) == ("begin", "end", begin["action_id"])
        assert end["applied"] == 0 and "the record:" in end["error"]


OLD_DNR = "55866110270"  # the A40 case's MRG-1 D-nummer, merged into GOOD_FNR


class TestMergedPatients:
    """A merge (A40) moves one person's record under the survivor: `find` by either number tells the person's whole trail."""

    @pytest.fixture
    def merged(self, exported):
        settings = exported(None)
        merge = (ROOT / "mappings" / "hl7v2" / "messages" / "ADT_A39.cases" / "merge_dnummer_into_fnr.hl7").read_bytes()
        publish(settings, [
            adt_message("A01", control_id="M1", fnr=OLD_DNR, local_id="4471999", visit="V1"),
            adt_message("A01", control_id="M2", fnr=GOOD_FNR, local_id="4471002", visit="V2"),
            merge.replace(b"\n", b"\r"),
            _oru("M3", GOOD_FNR),
        ])
        handle = run_engine_in_thread(settings, logger=QuietLogger())
        wait_until(lambda: handle.stats.messages == 4, 60, what="four messages settled")
        handle.stop()
        assert handle.stats.applied == 4
        return settings

    def test_the_old_number_finds_the_survivors_messages_too(self, merged, capsys):
        """By the merged-away D-nummer: its own admission, the merge and the survivor's messages since. Before, only M1:
        the operator read the person's trail as ending at the merge (review H185)."""
        code, out, err = _find(capsys, "--patient", OLD_DNR, "--json", "--no-dlq")
        assert code == 0, err
        doc = json.loads(out)
        assert sorted(m["control_id"] for m in doc["applied"]) == ["CTRL-0040", "M1", "M2", "M3"]
        keys = {m["patient_key"] for m in doc["applied"]}
        assert len(keys) == 2 and keys <= set(doc["patient_keys"])
        begin, end = _audit(merged)[-2:]
        assert begin["patient_key"] == doc["patient_keys"][0] == next(m["patient_key"] for m in doc["applied"] if m["control_id"] == "M1")
        assert end["patient_keys"] == doc["patient_keys"] and end["applied"] == 4
        text = (merged.data_dir / "audit.log").read_text()
        assert OLD_DNR not in out + err + text and GOOD_FNR not in out + err + text

    def test_the_survivors_number_finds_the_merged_records_messages(self, merged, capsys):
        code, out, err = _find(capsys, "--patient", GOOD_FNR, "--json", "--no-dlq")
        assert code == 0, err
        assert sorted(m["control_id"] for m in json.loads(out)["applied"]) == ["CTRL-0040", "M1", "M2", "M3"]
        code, out, _ = _find(capsys, "--patient", GOOD_FNR, "--no-dlq")
        assert code == 0 and "searched under the patient's" in out and GOOD_FNR not in out

    def test_a_patient_never_merged_searches_one_key(self, merged, capsys):
        code, out, _ = _find(capsys, "--patient", MOVED_TO, "--json", "--no-dlq")
        assert code == 1 and len(json.loads(out)["patient_keys"]) == 1

    def test_a_patient_key_follows_merges_as_the_number_does(self, merged, capsys):
        """`--patient-key` (the key a log line or a dead letter shows) searched its one key: by the merged-away
        number's key, the operator saw M1 alone and read the trail as ending at the merge, where `--patient`
        with the number showed all four (review H190). It follows the record's merges the same way now."""
        _, out, _ = _find(capsys, "--patient", OLD_DNR, "--json", "--no-dlq")
        by_number = json.loads(out)
        journalled = {m["patient_key"] for m in by_number["applied"]}
        assert len(journalled) == 2
        for key in journalled:  # the merged-away number's key and the survivor's
            code, out, err = _find(capsys, "--patient-key", key, "--json", "--no-dlq")
            assert code == 0, err
            doc = json.loads(out)
            assert sorted(m["control_id"] for m in doc["applied"]) == ["CTRL-0040", "M1", "M2", "M3"], key
            assert doc["patient_keys"][0] == key and set(doc["patient_keys"]) == set(by_number["patient_keys"])
            end = _audit(merged)[-1]
            assert end["patient_key"] == key and end["patient_keys"] == doc["patient_keys"]
            assert OLD_DNR not in out + err and GOOD_FNR not in out + err

