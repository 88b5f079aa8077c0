"""Tests for adapters/fhir/record.py: the shared record on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import sqlite3
import threading
import time
import uuid
from contextlib import closing

import pytest

from adapters.fhir.record import NotARecord, SqliteRecord, open_record
from router.contracts import JournalFacts
from router.errors import ConfigError, InvalidContent, RecordUnavailable
from router.settings import Settings
from router.testing import isolated_settings

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
FNR_VALUE = "01015000232"
PATIENT_UUID = "0d9a6c2e-1f3b-4c55-9a51-3f0e2b7c9a01"
ENCOUNTER_UUID = "5b1c7e44-8d2a-4f0e-b3a9-6c2d1e0f4a02"
OBS_UUID = "9e3f1a55-2c4b-4d6e-8f70-1a2b3c4d5e03"
ENC_SYSTEM = "urn:helsebro:local:AHUS:VN"


def patient(*, id_=PATIENT_UUID, family="Nordmann", value=FNR_VALUE):
    return {"resourceType": "Patient", "id": id_, "identifier": [{"system": FNR, "value": value}], "name": [{"family": family}]}


def entry(resource, method="PUT", url=None, **request):
    full = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource, "request": {"method": method, "url": url, **request}}
    return full


def put_patient(**kwargs):
    res = patient(**kwargs)
    value = res["identifier"][0]["value"]
    return entry(res, url=f"Patient?identifier={FNR}|{value}")


def put_encounter(*, subject=PATIENT_UUID, status="finished", id_=ENCOUNTER_UUID, value="V1"):
    res = {
        "resourceType": "Encounter",
        "id": id_,
        "identifier": [{"system": ENC_SYSTEM, "value": value}],
        "status": status,
        "subject": {"reference": f"urn:uuid:{subject}"},
    }
    return entry(res, url=f"Encounter?identifier={ENC_SYSTEM}|{value}")


def put_observation(*, subject=PATIENT_UUID):
    res = {"resourceType": "Observation", "id": OBS_UUID, "status": "final", "code": {"text": "puls"}, "subject": {"reference": f"urn:uuid:{subject}"}}
    return entry(res, url=f"Observation/{OBS_UUID}")


def bundle(*entries):
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def admission(**patient_kwargs):
    return bundle(put_patient(**patient_kwargs), put_encounter(), put_observation())


class TestOpenRecord:
    def test_default_is_sqlite_in_data_dir(self, tmp_path):
        """Without a record URL the record is SQLite at settings.sqlite_path, parent created."""
        settings = Settings(data_dir=tmp_path / "deep" / "data")
        with open_record(settings) as record:
            assert isinstance(record, SqliteRecord)
        assert settings.sqlite_path.exists()

    def test_reopen_keeps_data(self, settings):
        """Opening twice is idempotent and sees earlier writes."""
        with open_record(settings) as first:
            first.apply(admission())
        with open_record(settings) as second:
            assert second.read("Patient", PATIENT_UUID)["name"] == [{"family": "Nordmann"}]

    def test_an_empty_file_is_a_record_for_the_engine_only(self, tmp_path):
        """The engine (create=True) makes its schema in a new or empty file, after which a read-only open finds the record.
        Before that, a read-only open finds no record yet (NoRecord), and writes nothing. It was NotARecord ("not a
        Helsebro record", check the settings), but a first `run` stopped before its schema committed leaves exactly
        this file, which the next run makes the record in: nothing has been applied, as PostgreSQL says of an empty schema."""
        from adapters.fhir.record import NoRecord

        settings = Settings(record_url=f"sqlite:///{tmp_path / 'r.sqlite3'}", data_dir=tmp_path)
        (tmp_path / "r.sqlite3").touch()
        with pytest.raises(NoRecord, match="no record yet at"):
            open_record(settings, create=False)
        assert (tmp_path / "r.sqlite3").stat().st_size == 0
        with open_record(settings) as record:
            record.apply(admission())
        with open_record(settings, create=False) as record:
            assert record.read("Patient", PATIENT_UUID) is not None

    def test_a_file_that_is_no_database_is_not_a_record(self, tmp_path):
        """A text file named by the record URL is refused by the read-only verbs and left as it was."""
        path = tmp_path / "notes.sqlite3"
        path.write_text("x" * 200)
        with pytest.raises(NotARecord, match="no SQLite database"):
            open_record(Settings(record_url=f"sqlite:///{path}", data_dir=tmp_path), create=False)
        assert path.read_text() == "x" * 200

    @pytest.mark.integration
    def test_a_read_only_open_creates_nothing_in_postgresql(self, tmp_path):
        """find and status opened PostgreSQL with create=False and still made Helsebro's schema and tables, in a schema
        that was not there (a typo) or that another application owns. Now the one is NoRecord, the other NotARecord,
        and neither schema gains a thing; once the engine made the record there, a read-only open finds it."""
        import psycopg

        from adapters.fhir.record import NoRecord
        from router.testing import drop_schema

        pg = "postgresql://postgres@127.0.0.1:5432/test"
        missing, foreign, empty = (f"helsebro_{uuid.uuid4().hex[:12]}" for _ in range(3))
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {foreign}")
            conn.execute(f"CREATE TABLE {foreign}.invoices (id INTEGER PRIMARY KEY, amount REAL)")
            conn.execute(f"CREATE SCHEMA {empty}")

        def tables(schema):
            with psycopg.connect(pg, autocommit=True) as conn:
                rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()
                there = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
            return sorted(r[0] for r in rows) if there else None

        try:
            with pytest.raises(NoRecord, match=f"no record yet in schema {missing}"):
                open_record(Settings(record_url=f"{pg}?schema={missing}", data_dir=tmp_path), create=False)
            assert tables(missing) is None
            with pytest.raises(NotARecord, match=f"schema {foreign} .*is not a Helsebro record"):
                open_record(Settings(record_url=f"{pg}?schema={foreign}", data_dir=tmp_path), create=False)
            assert tables(foreign) == ["invoices"]
            settings = Settings(record_url=f"{pg}?schema={empty}", data_dir=tmp_path)
            with pytest.raises(NoRecord):
                open_record(settings, create=False)
            assert tables(empty) == []
            with open_record(settings) as record:
                record.apply(admission())
            with open_record(settings, create=False) as record:
                assert record.read("Patient", PATIENT_UUID) is not None
        finally:
            for schema in (missing, foreign, empty):
                drop_schema(pg, schema)

    def test_the_engine_refuses_another_applications_database(self, tmp_path):
        """`run` (create=True) on another application's SQLite file made Helsebro's tables in it. Now it is a
        ConfigError naming the file, and the file is left byte for byte, with nothing beside it."""
        path = tmp_path / "other" / "app.sqlite3"
        path.parent.mkdir()
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
            conn.commit()
        before = path.read_bytes()
        with pytest.raises(ConfigError, match="is not a Helsebro record"):
            open_record(Settings(record_url=f"sqlite:///{path}", data_dir=tmp_path))
        assert path.read_bytes() == before
        assert sorted(p.name for p in path.parent.iterdir()) == ["app.sqlite3"]

    def test_unknown_scheme_is_config_error(self, tmp_path):
        """A record URL with an unsupported scheme refuses to start."""
        with pytest.raises(ConfigError):
            open_record(Settings(record_url="mysql://x/y", data_dir=tmp_path))

    @pytest.mark.integration
    def test_unreachable_postgres_is_unavailable(self, tmp_path):
        """A PostgreSQL that does not answer raises RecordUnavailable."""
        with pytest.raises(RecordUnavailable):
            open_record(Settings(record_url="postgresql://postgres@127.0.0.1:1/test", data_dir=tmp_path))

    def test_bad_schema_name_is_unavailable(self, tmp_path):
        """A schema parameter that is not a plain identifier is refused before connecting."""
        with pytest.raises(RecordUnavailable):
            open_record(Settings(record_url="postgresql://postgres@127.0.0.1:5432/test?schema=a;drop", data_dir=tmp_path))

    def test_locked_sqlite_is_unavailable(self, tmp_path):
        """A writer that cannot get SQLite's lock raises RecordUnavailable, not sqlite3 errors."""
        path = tmp_path / "r.sqlite3"
        with SqliteRecord(path, busy_timeout=0) as record, closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(RecordUnavailable):
                record.apply(admission())
            other.execute("ROLLBACK")
            assert record.apply(admission()).changed

    @pytest.mark.parametrize("seconds", [0.5, 2.0])
    def test_a_writer_waits_for_the_lock_as_long_as_engine_yaml_says(self, tmp_path, seconds):
        """record.sqlite_busy_timeout in engine.yaml is how long an apply waits for another's lock before it is
        RecordUnavailable: not the built-in 10 s."""
        settings = isolated_settings(tmp_path, record={"sqlite_busy_timeout": seconds})
        assert settings.sqlite_busy_timeout == seconds
        with open_record(settings) as record, closing(sqlite3.connect(settings.sqlite_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(RecordUnavailable):
                record.apply(admission())
            waited = time.monotonic() - started
            other.execute("ROLLBACK")
            assert record.apply(admission()).changed
        assert seconds * 0.8 <= waited < seconds + 3, waited


class TestApply:
    def test_creates_with_own_ids(self, record):
        """Conditional updates with no match create each resource at its own id, version 1."""
        result = record.apply(admission())
        assert [(e.resource_type, e.id, e.version, e.outcome) for e in result.entries] == [
            ("Patient", PATIENT_UUID, 1, "created"),
            ("Encounter", ENCOUNTER_UUID, 1, "created"),
            ("Observation", OBS_UUID, 1, "created"),
        ]
        stored = record.read("Patient", PATIENT_UUID)
        assert stored["meta"]["versionId"] == "1" and stored["meta"]["lastUpdated"].endswith("Z")

    def test_rewrites_references(self, record):
        """A urn:uuid reference to another entry becomes Type/id."""
        record.apply(admission())
        assert record.read("Encounter", ENCOUNTER_UUID)["subject"] == {"reference": f"Patient/{PATIENT_UUID}"}

    def test_conditional_update_keeps_matched_id(self, record):
        """A match on identifier keeps the stored id, and references follow it, not the new uuid."""
        record.apply(bundle(put_patient()))
        other = "7f000000-0000-4000-8000-000000000001"
        result = record.apply(bundle(put_patient(id_=other, family="Hansen"), put_encounter(subject=other)))
        assert (result.entries[0].id, result.entries[0].version, result.entries[0].outcome) == (PATIENT_UUID, 2, "updated")
        assert record.read("Patient", other) is None
        assert record.read("Encounter", ENCOUNTER_UUID)["subject"]["reference"] == f"Patient/{PATIENT_UUID}"

    def test_apply_twice_changes_nothing(self, record):
        """Applying the same Bundle again leaves every version and the history as they were."""
        record.apply(admission())
        again = record.apply(admission())
        assert [e.outcome for e in again.entries] == ["unchanged"] * 3
        assert [e.version for e in again.entries] == [1, 1, 1]
        assert not again.changed
        assert len(record.history("Patient", PATIENT_UUID)) == 1

    def test_redelivered_message_is_not_applied_again(self, record):
        """A message key seen in an earlier batch keeps its older Bundle from rolling back a newer one."""
        first, second = admission(family="Seq1"), admission(family="Seq2")
        record.apply_batch([first, second], ["m1", "m2"])
        again = record.apply_batch([first, second, admission(family="Seq3")], ["m1", "m2", "m3"])
        assert [r.changed for r in again] == [False, False, True]
        assert [r.entries for r in again[:2]] == [(), ()]
        assert [h["name"][0]["family"] for h in record.history("Patient", PATIENT_UUID)] == ["Seq3", "Seq2", "Seq1"]

    def test_key_of_a_refused_bundle_is_not_kept(self, record):
        """A Bundle that cannot apply leaves no key behind: fixed and sent again, it applies."""
        bad = bundle(put_encounter(subject="not-in-bundle"))
        [refused] = record.apply_batch([bad], ["k"])
        assert isinstance(refused, InvalidContent)
        [ok] = record.apply_batch([admission()], ["k"])
        assert ok.changed

    def test_keys_must_match_bundles(self, record):
        """One key per Bundle, or the call is a programming error."""
        with pytest.raises(ValueError):
            record.apply_batch([admission()], ["a", "b"])

    def test_changed_content_makes_new_version(self, record):
        """A changed resource gets version 2; unchanged neighbours stay at 1."""
        record.apply(admission())
        result = record.apply(admission(family="Hansen"))
        assert [(e.version, e.outcome) for e in result.entries] == [(2, "updated"), (1, "unchanged"), (1, "unchanged")]
        history = record.history("Patient", PATIENT_UUID)
        assert [h["meta"]["versionId"] for h in history] == ["2", "1"]
        assert [h["name"][0]["family"] for h in history] == ["Hansen", "Nordmann"]
        assert record.vread("Patient", PATIENT_UUID, 1)["name"][0]["family"] == "Nordmann"

    def test_restated_content_is_compared_with_the_current_version(self, record):
        """Content restated many times stays one version; a change, and a change back, are each a new version."""
        outcomes = [[e.outcome for e in record.apply(admission()).entries] for _ in range(3)]  # the third finds a digest worked out before
        assert outcomes == [["created"] * 3, ["unchanged"] * 3, ["unchanged"] * 3]
        assert [h["meta"]["versionId"] for h in record.history("Patient", PATIENT_UUID)] == ["1"]
        assert record.apply(admission(family="Hansen")).entries[0].outcome == "updated"
        back = record.apply(admission())
        assert [(e.version, e.outcome) for e in back.entries] == [(3, "updated"), (1, "unchanged"), (1, "unchanged")]
        assert [h["name"][0]["family"] for h in record.history("Patient", PATIENT_UUID)] == ["Nordmann", "Hansen", "Nordmann"]

    def test_incoming_meta_version_is_ignored(self, record):
        """Store-owned meta fields do not count as a change; other meta is kept."""
        first = put_patient()
        first["resource"]["meta"] = {"profile": ["http://hl7.no/fhir/StructureDefinition/no-basis-Patient"]}
        record.apply(bundle(first))
        second = copy.deepcopy(first)
        second["resource"]["meta"].update(versionId="9", lastUpdated="2001-01-01T00:00:00Z")
        assert record.apply(bundle(second)).entries[0].outcome == "unchanged"
        assert record.read("Patient", PATIENT_UUID)["meta"]["profile"] == first["resource"]["meta"]["profile"]

    def test_leaves_callers_bundle_alone(self, record):
        """The caller's Bundle still holds its urn:uuid references after apply."""
        sent = admission()
        kept = copy.deepcopy(sent)
        record.apply(sent)
        assert sent == kept

    def test_conditional_create(self, record):
        """POST with ifNoneExist creates once, then reports the match unchanged."""
        post = entry(patient(), method="POST", url="Patient", ifNoneExist=f"identifier={FNR}|{FNR_VALUE}")
        first = record.apply(bundle(post)).entries[0]
        second = record.apply(bundle(post)).entries[0]
        assert (first.outcome, second.outcome, second.id, second.version) == ("created", "unchanged", first.id, 1)

    def test_duplicate_condition_in_one_bundle(self, record):
        """Two conditional creates for one identifier in one Bundle make one resource."""
        post = entry(patient(id_="a1"), method="POST", url="Patient", ifNoneExist=f"identifier={FNR}|{FNR_VALUE}")
        result = record.apply(bundle(post, copy.deepcopy(post)))
        assert result.entries[0].id == result.entries[1].id
        assert record.counts() == {"Patient": 1}

    def test_plain_post_and_put(self, record):
        """POST Type always creates; PUT Type/id creates then updates at that id."""
        post = {"resource": {"resourceType": "Patient", "active": True}, "request": {"method": "POST", "url": "Patient"}}
        ids = {record.apply(bundle(post)).entries[0].id for _ in range(2)}
        put = {"resource": {"resourceType": "Patient", "active": False}, "request": {"method": "PUT", "url": "Patient/p-1"}}
        created = record.apply(bundle(put)).entries[0]
        put["resource"]["active"] = True
        updated = record.apply(bundle(put)).entries[0]
        assert len(ids) == 2 and (created.outcome, updated.outcome, updated.version) == ("created", "updated", 2)
        assert record.counts() == {"Patient": 3}

    def test_multiple_matches_is_invalid(self, record):
        """A condition that matches two resources is refused."""
        for id_ in ("twin-a", "twin-b"):
            record.apply(bundle(entry(patient(id_=id_), url=f"Patient/{id_}")))
        with pytest.raises(InvalidContent, match="multiple matches"):
            record.apply(bundle(put_patient()))

    def test_if_match_writes_only_over_the_version_it_names(self, record):
        """An entry's ifMatch (a version-aware update or delete, FHIR's 412 when the version moved on) writes only when
        the stored version is the one it names; else the transaction is refused whole (found by review H125: ifMatch was
        ignored, so a REST client's update over a version it had not seen was applied, losing the one in between)."""
        record.apply(bundle(put_patient(family="A")))
        record.apply(bundle(put_patient(family="B")))  # version 2: a client that read version 1 has not seen it

        def stale(request_entry, if_match):
            request_entry["request"]["ifMatch"] = if_match
            return request_entry

        with pytest.raises(InvalidContent, match="ifMatch"):
            record.apply(bundle(put_observation(), stale(put_patient(family="C"), 'W/"1"')))
        with pytest.raises(InvalidContent, match="ifMatch"):
            record.apply(bundle(stale({"request": {"method": "DELETE", "url": f"Patient/{PATIENT_UUID}"}}, 'W/"1"')))
        with pytest.raises(InvalidContent, match="ifMatch"):
            record.apply(bundle(stale(put_observation(), 'W/"1"')))  # nothing stored to match
        assert record.read("Patient", PATIENT_UUID)["name"] == [{"family": "B"}] and record.read("Observation", OBS_UUID) is None
        [applied] = record.apply(bundle(stale(put_patient(family="C"), 'W/"2"'))).entries
        assert (applied.version, applied.outcome) == (3, "updated")
        [deleted] = record.apply(bundle(stale({"request": {"method": "DELETE", "url": f"Patient/{PATIENT_UUID}"}}, '"3"'))).entries
        assert (deleted.version, deleted.outcome) == (4, "deleted")

    @pytest.mark.parametrize("if_match", ["W/1", "2", 'W/"x"', 3, ""])
    def test_a_malformed_if_match_is_refused(self, record, if_match):
        """ifMatch is an ETag, W/"n" (or "n"): anything else is refused, never taken for no condition."""
        put = put_patient()
        put["request"]["ifMatch"] = if_match
        with pytest.raises(InvalidContent, match="ifMatch"):
            record.apply(bundle(put))
        post = entry(patient(), method="POST", url="Patient", ifMatch='W/"1"')
        with pytest.raises(InvalidContent, match="ifMatch"):
            record.apply(bundle(post))
        assert record.counts() == {}

    def test_failure_after_a_write_leaves_nothing(self, record):
        """An entry that fails after an earlier entry was written rolls the whole Bundle back."""
        bad = put_encounter()
        bad["resource"]["meta"] = "not an object"
        with pytest.raises(InvalidContent):
            record.apply(bundle(put_patient(), bad))
        assert record.counts() == {}
        assert record.history("Patient", PATIENT_UUID) == []
        assert record.apply(admission()).entries[0].version == 1

    def test_a_number_beyond_64_bits_refuses_only_its_bundle(self, record):
        """A whole number JSON cannot hold (a mapping's number() of a 25-digit field) refuses its Bundle as InvalidContent,
        naming neither the value nor raising a TypeError that broke the batch: the others apply, its key and journal row are not written."""
        huge = bundle(put_patient(family="Stor"), put_observation())
        huge["entry"][1]["resource"]["valueInteger"] = 10**25
        facts = [TestJournal.FACTS._replace(control_id=c) for c in ("C1", "C2", "C3")]
        first, refused, last = record.apply_batch([admission(family="A"), huge, admission(family="B")], ["k1", "k2", "k3"], facts)
        assert isinstance(refused, InvalidContent) and str(10**25) not in refused.reason
        assert refused.reason == "the Observation holds a value the record cannot store (a whole number beyond 64 bits)"
        assert first.changed and last.changed and record.applied(["k1", "k2", "k3"]) == {"k1", "k3"}
        assert record.read("Patient", PATIENT_UUID)["name"] == [{"family": "B"}] and record.journal(control_id="C2") == []

    def test_dangling_reference_is_invalid(self, record):
        """A urn:uuid reference that names no entry is refused and nothing is written."""
        with pytest.raises(InvalidContent) as caught:
            record.apply(bundle(put_encounter(subject="00000000-0000-4000-8000-000000000000")))
        assert caught.value.location == "Bundle.entry[0]"
        assert record.counts() == {}

    @pytest.mark.parametrize(
        "bad",
        [
            {"resourceType": "Patient"},
            {"resourceType": "Bundle", "type": "batch", "entry": []},
            bundle({"request": {"method": "GET", "url": "Patient"}}),
            bundle({"resource": {"resourceType": "Encounter"}, "request": {"method": "PUT", "url": "Patient/x"}}),
            bundle({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient/x"}}),
            bundle({"resource": {"resourceType": "Patient", "id": "y"}, "request": {"method": "PUT", "url": "Patient/x"}}),
            bundle({"request": {"method": "PUT", "url": "Patient"}}),
            bundle({"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?foo=bar"}}),
        ],
        ids=["not-bundle", "batch", "get", "type-mismatch", "post-with-id", "id-mismatch", "put-no-id", "unknown-param"],
    )
    def test_malformed_bundles_are_invalid(self, record, bad):
        """Bad shapes, unsupported methods and unsupported conditions raise InvalidContent."""
        with pytest.raises(InvalidContent):
            record.apply(bad)

    def test_empty_transaction(self, record):
        """A transaction without entries applies and changes nothing."""
        assert record.apply(bundle()).entries == ()


class TestJournal:
    """What each applied message wrote, kept with its key for `helsebro find`."""

    FACTS = JournalFacts("C1", "PAS@STOLAV", "ADT^A01", "h:patient-1")

    def test_an_applied_message_is_journalled_with_what_it_wrote(self, record):
        """Control id, sender, type, patient key, and each resource with its version and outcome; found by control id or patient key."""
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        [entry] = record.journal(control_id="C1")
        assert (entry.key, entry.control_id, entry.sender, entry.message_type, entry.patient_key) == ("m1", "C1", "PAS@STOLAV", "ADT^A01", "h:patient-1")
        assert entry.resources == (("Patient", PATIENT_UUID, 1, "created"), ("Encounter", ENCOUNTER_UUID, 1, "created"), ("Observation", OBS_UUID, 1, "created"))
        assert record.journal(patient_key="h:patient-1") == [entry]
        assert record.journal(control_id="C1", sender="OTHER@X") == [] and record.journal(control_id="C2") == []

    def test_newest_first_also_within_a_batch(self, record):
        """Two messages of one patient in one batch, then one in the next: newest first, the update's versions as written."""
        facts = [self.FACTS._replace(control_id=c) for c in ("C1", "C2", "C3")]
        record.apply_batch([admission(family="A"), admission(family="B")], ["m1", "m2"], facts[:2])
        record.apply_batch([admission(family="C")], ["m3"], facts[2:])
        found = record.journal(patient_key="h:patient-1")
        assert [e.control_id for e in found] == ["C3", "C2", "C1"]
        assert [e.resources[0][2:] for e in found] == [(3, "updated"), (2, "updated"), (1, "created")]
        assert [e.control_id for e in record.journal(patient_key="h:patient-1", limit=2)] == ["C3", "C2"]

    def test_a_redelivery_or_a_refusal_adds_no_row(self, record):
        """A key applied before is not journalled again; a Bundle the record refuses leaves no row."""
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        [refused] = record.apply_batch([bundle(put_encounter(subject="not-in-bundle"))], ["m2"], [self.FACTS._replace(control_id="C2")])
        assert isinstance(refused, InvalidContent)
        assert len(record.journal(patient_key="h:patient-1")) == 1 and record.journal(control_id="C2") == []

    def test_an_unchanged_message_says_so(self, record):
        """A message whose Bundle changed nothing (a new key, the same content) is journalled as unchanged."""
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        record.apply_batch([admission()], ["m2"], [self.FACTS._replace(control_id="C2")])
        assert [(e.control_id, e.outcome) for e in record.journal(patient_key="h:patient-1")] == [("C2", "unchanged"), ("C1", "applied")]

    def test_messages_not_applied_are_journalled_with_their_note(self, record):
        """journal_settled keeps a duplicate, a filtered, a forwarded and a dead-lettered message beside the applied ones,
        newest first; settling one again under its key updates its time and note instead of adding a row."""
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        record.journal_settled([("m1|duplicate", self.FACTS, "duplicate", "first copy"), ("m2|filtered", self.FACTS._replace(control_id="C2"), "filtered", "no route")])
        record.journal_settled([("m1|duplicate", self.FACTS, "duplicate", "second copy")])
        found = record.journal(patient_key="h:patient-1")
        assert [(e.key, e.outcome, e.note, e.was_applied) for e in found] == [
            ("m1|duplicate", "duplicate", "second copy", False), ("m2|filtered", "filtered", "no route", False), ("m1", "applied", "", True)]
        assert found[0].resources == () and found[0].applied_at > found[1].applied_at
        assert [e.outcome for e in record.journal(control_id="C1")] == ["duplicate", "applied"]

    def test_the_destinations_are_journalled_and_follow_the_latest_settling(self, record):
        """Each statement writes the destinations in their own column (apply_batch's and journal_settled's); settling a
        message again under its key keeps the destinations of that settling with its note (found by review: the row
        kept the first settling's destinations beside the latest note)."""
        record.apply_batch([admission()], ["m1"], [self.FACTS._replace(destinations="lab,ekstern")])
        record.journal_settled([("m2|forwarded", self.FACTS._replace(control_id="C2", destinations="lab"), "forwarded", "forwarded to lab")])
        assert [(e.key, e.destinations, e.resources != ()) for e in record.journal(patient_key="h:patient-1")] == [
            ("m2|forwarded", ("lab",), False), ("m1", ("lab", "ekstern"), True)]
        record.journal_settled([("m2|forwarded", self.FACTS._replace(control_id="C2", destinations="raw"), "forwarded", "forwarded to raw")])
        [again] = record.journal(control_id="C2")
        assert (again.note, again.destinations) == ("forwarded to raw", ("raw",))

    @pytest.mark.parametrize("outcome", ["applied", "unchanged", "lost", ""])
    def test_journal_settled_takes_only_outcomes_of_messages_not_applied(self, record, outcome):
        with pytest.raises(ValueError, match="not an outcome of a message that was not applied"):
            record.journal_settled([("k", self.FACTS, outcome, "")])
        assert record.journal(control_id="C1") == []

    def test_a_message_id_with_a_nul_is_journalled_on_every_backend(self, record):
        """Bytes an HL7 v2 sender put in MSH-10 or MSH-3 (a NUL among them: PostgreSQL's text refuses it) must not make
        journal_settled fail: the engine would take that for an outage and wait on this batch for ever."""
        facts = self.FACTS._replace(control_id="C\x001", sender="A\x00@B")
        record.journal_settled([("hl7v2|A\x00@B|C\x001|ff|dead_lettered", facts, "dead_lettered", "dead-lettered (convert)")])
        [entry] = record.journal(patient_key="h:patient-1")
        assert (entry.outcome, entry.note) == ("dead_lettered", "dead-lettered (convert)")
        assert entry.control_id.startswith("C") and entry.control_id.endswith("1")

    def test_rows_go_with_their_applied_keys(self, record, monkeypatch):
        """Past the retention, a purge drops the journal's rows with the applied keys; newer rows stay."""
        import adapters.fhir._store as store

        monkeypatch.setattr(store, "_PURGE_APPLIED_EVERY", 1)
        clock = [1_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        record.apply_batch([admission(family="Old")], ["m1"], [self.FACTS])
        clock[0] += store.APPLIED_RETENTION_SECONDS + 1
        record.apply_batch([admission(family="New")], ["m2"], [self.FACTS._replace(control_id="C2")])  # this batch purges
        assert [e.control_id for e in record.journal(patient_key="h:patient-1")] == ["C2"]
        assert record.applied(["m1", "m2"]) == {"m2"}

    def test_receipts_are_found_by_the_msgids_they_answer_newest_first(self, record):
        """receipts(): per MsgId, the newest AppRec journalled under it (outcome receipt); ids with none, and rows of other
        outcomes under the same id, are left out."""
        def answer(n: int, msg_id: str, status: str) -> tuple:
            return (f"kith|12345|apprec-{n}|h|receipt", JournalFacts(msg_id, "12345", f"APPREC^{status}", "", ""), "receipt", f"receipt {n}")

        record.journal_settled([answer(1, "m-1", "2"), answer(2, "m-2", "1"), answer(3, "m-1", "1"),
                                ("hl7v2|A@B|m-3|h|filtered", JournalFacts("m-3", "A@B", "ADT^A08", "", ""), "filtered", "filtered")])
        found = record.receipts(["m-1", "m-2", "m-3", "m-4", "m-1"])
        assert {k: (e.message_type, e.note) for k, e in found.items()} == {"m-1": ("APPREC^1", "receipt 3"), "m-2": ("APPREC^1", "receipt 2")}
        assert record.receipts([]) == {}

    def test_refused_receipts_counts_the_refusals_since_a_time(self, record, monkeypatch):
        """`status`'s count of AppRecs refusing what Helsebro sent, on every backend (it was tested on SQLite only): statuses
        other than 1 and 3, journalled as receipts at or after the time; other outcomes and older rows are not counted."""
        import adapters.fhir._store as store

        clock = [1_700_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])

        def answer(n: int, status: str, outcome: str = "receipt") -> tuple:
            return (f"kith|12345|apprec-{n}|h|{outcome}", JournalFacts(f"m-{n}", "12345", f"APPREC^{status}", "", ""), outcome, "r")

        record.journal_settled([answer(1, "2")])
        clock[0] += 60
        record.journal_settled([answer(2, "2"), answer(3, "1"), answer(4, "3"), answer(5, "2", "filtered"), answer(6, "")])
        assert record.refused_receipts(since=clock[0] - 30) == 2
        assert record.refused_receipts(since=clock[0] - 90) == 3
        assert record.refused_receipts(since=clock[0] + 1) == 0

    def test_a_destination_and_a_time_bound_narrow_the_journal(self, record, monkeypatch):
        """journal(destination=, until=): rows routed to that destination (a whole name in the list, not a part of one),
        settled before the bound."""
        import adapters.fhir._store as store

        clock = [1_700_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])

        def row(n: int, destinations: str) -> tuple:
            return (f"k{n}|forwarded", JournalFacts(f"C{n}", "A@B", "ADT^A01", "", destinations), "forwarded", "forwarded")

        record.journal_settled([row(1, "kommune"), row(2, "lab,kommune"), row(3, "kommune-2"), row(4, "lab")])
        clock[0] += 60
        record.journal_settled([row(5, "kommune")])
        assert [e.control_id for e in record.journal(destination="kommune")] == ["C5", "C2", "C1"]
        assert [e.control_id for e in record.journal(destination="kommune", until=1_700_000_030.0)] == ["C2", "C1"]
        assert [e.control_id for e in record.journal(until=1_700_000_030.0)] == ["C4", "C3", "C2", "C1"]

    def test_a_mark_says_when_it_was_written(self, record, monkeypatch):
        """marked_at: the time each marked key was written, by mark_applied or apply_batch; keys never marked are absent,
        a key asked twice is answered once."""
        import adapters.fhir._store as store

        clock = [1_700_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        record.mark_applied(["sent|lab|a", "dest|lab|a|h"])
        clock[0] += 60
        record.apply_batch([admission()], ["m1"], [self.FACTS])
        assert record.marked_at(["sent|lab|a", "m1", "sent|lab|b", "sent|lab|a"]) == {"sent|lab|a": 1_700_000_000.0, "m1": 1_700_000_060.0}
        assert record.marked_at([]) == {}

    def test_the_purges_read_by_age_not_the_whole_table(self, tmp_path):
        """The purge runs inside an apply transaction: SQLite's plan for it uses the applied_at indexes (a scan of 14 days
        of keys took 267 ms per 2 million rows, with the writers' lock held), the duplicate window's per kind of key too."""
        import adapters.fhir._store as store

        with SqliteRecord(tmp_path / "r.sqlite3") as record, record._transaction([]) as db:
            for table, index, column in (("helsebro_applied", "helsebro_applied_at", "applied_at"), ("helsebro_journal", "helsebro_journal_at", "applied_at"),
                                         ("helsebro_seen", "helsebro_seen_at", "seen_at")):
                plan = " ".join(str(row) for row in db.query(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE {column} < ?", (0.0,)))
                assert index in plan, plan
            plan = " ".join(str(row) for row in db.query(f"EXPLAIN QUERY PLAN {store._FORGET}", (0.0, 4, "hl7|")))
            assert "helsebro_seen_at" in plan, plan

    def test_an_engine_that_only_forwards_purges_its_journal(self, record, monkeypatch):
        """Rows journal_settled wrote are purged past the retention by journal_settled too: an engine whose routes never
        reach the record applies no keyed batch, and its journal was never purged."""
        import adapters.fhir._store as store

        monkeypatch.setattr(store, "_PURGE_APPLIED_EVERY", 1)
        clock = [1_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        record.journal_settled([("m1|forwarded", self.FACTS._replace(destinations="lab"), "forwarded", "forwarded to lab")])
        clock[0] += store.APPLIED_RETENTION_SECONDS + 1
        record.journal_settled([("m2|forwarded", self.FACTS._replace(control_id="C2", destinations="lab"), "forwarded", "forwarded to lab")])
        assert [e.control_id for e in record.journal(patient_key="h:patient-1")] == ["C2"]

    def test_a_new_process_purges_on_its_first_batch(self, settings, monkeypatch):
        """A worker restarted before its thousandth keyed batch (a quiet interface, a nightly restart) still purges the keys
        and journal rows past the retention: the purge ran only on every thousandth batch of a process, so such a worker never did."""
        import adapters.fhir._store as store

        clock = [1_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        with open_record(settings) as first:
            first.apply_batch([admission(family="Old")], ["m1"], [self.FACTS])
        clock[0] += store.APPLIED_RETENTION_SECONDS + 1
        with open_record(settings) as second:
            second.apply_batch([admission(family="New")], ["m2"], [self.FACTS._replace(control_id="C2")])
            assert second.applied(["m1", "m2"]) == {"m2"}
            assert [e.control_id for e in second.journal(patient_key="h:patient-1")] == ["C2"]

    def test_a_first_batch_that_fails_leaves_the_purge_to_the_next(self, settings, monkeypatch):
        """The first batch's purge is rolled back with it when the batch fails (an outage, a lost update): the purge
        is then the next batch's (found by review H125: counted as done, it waited a thousand batches, which a quiet
        interface restarted nightly never reaches)."""
        import adapters.fhir._store as store

        clock = [1_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        with open_record(settings) as first:
            first.apply_batch([admission(family="Old")], ["m1"], [self.FACTS])
        clock[0] += store.APPLIED_RETENTION_SECONDS + 1
        with open_record(settings) as second:
            with second._transaction([]) as db:  # play another writer: the Patient's version 2 is taken
                db.execute("INSERT INTO fhir_history (rid, version, deleted, last_updated, body) SELECT rid, 2, 0, ?, ? FROM fhir_resource"
                           " WHERE type = 'Patient' AND id = ?", ("2024-01-01T00:00:00.000Z", '{"resourceType": "Patient"}', PATIENT_UUID))
            with pytest.raises(RecordUnavailable):
                second.apply_batch([admission(family="Lost")], ["m2"], [self.FACTS._replace(control_id="C2")])
            other = bundle(put_patient(id_="7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", value="01015000313"))
            second.apply_batch([other], ["m3"], [self.FACTS._replace(control_id="C3")])
            assert second.applied(["m1", "m2", "m3"]) == {"m3"}
            assert [e.control_id for e in second.journal(patient_key="h:patient-1")] == ["C3"]

    def test_a_search_needs_a_criterion(self, record):
        """The journal is never listed whole, an outcome is one the journal knows, and facts go one per Bundle."""
        with pytest.raises(ValueError, match="give a control id"):
            record.journal()
        with pytest.raises(ValueError, match="is not one of"):
            record.journal(outcome="lost")
        with pytest.raises(ValueError):
            record.apply_batch([admission()], ["m1"], [])

    def test_a_list_by_sender_outcome_and_time(self, record, monkeypatch):
        """Sender, outcome and age narrow a search or list by themselves, newest first, the limit counting every row."""
        import adapters.fhir._store as store

        clock = [1_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        record.apply_batch([admission(family="A")], ["m1"], [self.FACTS])
        clock[0] += 3600
        record.apply_batch([admission(family="B")], ["m2"], [self.FACTS._replace(control_id="C2", sender="LAB@STOLAV")])
        clock[0] += 1
        record.journal_settled([("m3|filtered", self.FACTS._replace(control_id="C3"), "filtered", "filtered: no route")])
        assert [e.control_id for e in record.journal(sender="PAS@STOLAV")] == ["C3", "C1"]
        assert [e.control_id for e in record.journal(outcome="filtered")] == ["C3"]
        assert [e.control_id for e in record.journal(since=clock[0] - 60)] == ["C3", "C2"]
        assert [e.control_id for e in record.journal(since=clock[0] - 60, outcome="applied")] == ["C2"]
        assert [e.control_id for e in record.journal(patient_key="h:patient-1", outcome="applied", limit=1)] == ["C2"]


class TestDuplicateWindow:
    """helsebro_seen: message ids remembered for duplicate detection, each kind of key for its own window."""

    DAY = 86400.0

    @pytest.fixture
    def clock(self, monkeypatch):
        import adapters.fhir._store as store

        now = [1_700_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: now[0])
        monkeypatch.setattr(store, "_FORGET_EVERY", 1)
        return now

    def test_a_purge_with_the_hl7_window_keeps_the_kith_msgids_of_their_longer_window(self, record, clock):
        """HL7 v2 ids (7 days) and KITH MsgIds (30 days) share the table: the HL7 v2 purge forgets only HL7 v2 ids past 7
        days (found by review: it forgot every key past 7 days, so a KITH resend on day 8 got a second AppRec and was applied again)."""
        record.remember(["kith|12345|msg-1"], window_seconds=30 * self.DAY)
        record.remember(["hl7|PAS@STOLAV|C1"], window_seconds=7 * self.DAY)
        clock[0] += 8 * self.DAY
        record.remember(["hl7|PAS@STOLAV|C2"], window_seconds=7 * self.DAY)  # this call purges
        assert record.seen(["kith|12345|msg-1"], window_seconds=30 * self.DAY) == {"kith|12345|msg-1"}
        assert record.seen(["hl7|PAS@STOLAV|C1", "hl7|PAS@STOLAV|C2"], window_seconds=365 * self.DAY) == {"hl7|PAS@STOLAV|C2"}
        clock[0] += 23 * self.DAY
        record.remember(["kith|12345|msg-2"], window_seconds=30 * self.DAY)
        assert record.seen(["kith|12345|msg-1", "kith|12345|msg-2"], window_seconds=365 * self.DAY) == {"kith|12345|msg-2"}


class TestDelete:
    def test_delete_by_id(self, record):
        """DELETE makes a new, deleted version; read then returns None and history keeps it."""
        record.apply(admission())
        result = record.apply(bundle({"request": {"method": "DELETE", "url": f"Encounter/{ENCOUNTER_UUID}"}}))
        assert (result.entries[0].version, result.entries[0].outcome) == (2, "deleted")
        assert record.read("Encounter", ENCOUNTER_UUID) is None
        assert [v.deleted for v in record.versions("Encounter", ENCOUNTER_UUID)] == [True, False]
        assert record.search("Encounter", {"patient": PATIENT_UUID}) == []

    def test_delete_twice_and_absent(self, record):
        """Deleting what is already gone, or never was, is unchanged."""
        record.apply(admission())
        delete = bundle({"request": {"method": "DELETE", "url": f"Observation/{OBS_UUID}"}})
        record.apply(delete)
        again = record.apply(delete).entries[0]
        absent = record.apply(bundle({"request": {"method": "DELETE", "url": "Observation/nope"}})).entries[0]
        assert (again.outcome, again.version, absent.outcome, absent.version) == ("unchanged", 2, "unchanged", 0)

    def test_conditional_delete_then_recreate(self, record):
        """DELETE by identifier removes the match; a later PUT recreates it as a new version."""
        record.apply(admission())
        record.apply(bundle({"request": {"method": "DELETE", "url": f"Patient?identifier={FNR}|{FNR_VALUE}"}}))
        assert record.search("Patient", {"identifier": FNR_VALUE}) == []
        again = record.apply(bundle(put_patient())).entries[0]
        assert (again.outcome, again.version) == ("created", 3)


class TestSearch:
    @pytest.mark.parametrize(
        "params",
        [{"identifier": f"{FNR}|{FNR_VALUE}"}, {"identifier": FNR_VALUE}, {"identifier": f"{FNR}|"}, {"_id": PATIENT_UUID}],
        ids=["system-value", "bare-value", "system-only", "id"],
    )
    def test_finds_patient(self, record, params):
        """Identifier with or without system, a system alone, and _id all find the patient."""
        record.apply(admission())
        assert [r["id"] for r in record.search("Patient", params)] == [PATIENT_UUID]

    @pytest.mark.parametrize(
        "params",
        [{"identifier": f"urn:other|{FNR_VALUE}"}, {"identifier": f"|{FNR_VALUE}"}, {"identifier": "02020000000"}, {"_id": "x"}],
        ids=["other-system", "no-system", "other-value", "other-id"],
    )
    def test_misses(self, record, params):
        """A different system, an explicit empty system, or another value finds nothing."""
        record.apply(admission())
        assert record.search("Patient", params) == []

    @pytest.mark.parametrize("param", ["patient", "subject"])
    @pytest.mark.parametrize("value", [PATIENT_UUID, f"Patient/{PATIENT_UUID}"])
    def test_by_patient_and_subject(self, record, param, value):
        """patient and subject accept Patient/id or a bare id."""
        record.apply(admission())
        assert [r["id"] for r in record.search("Observation", {param: value})] == [OBS_UUID]

    def test_params_are_anded(self, record):
        """Several parameters must all match."""
        record.apply(admission())
        record.apply(bundle(put_patient(id_="p2", value="02020000000"), put_encounter(subject="p2", id_="e2", value="V2")))
        both = {"patient": PATIENT_UUID, "identifier": "V1"}
        assert [r["id"] for r in record.search("Encounter", both)] == [ENCOUNTER_UUID]
        assert record.search("Encounter", {"patient": "p2", "identifier": "V1"}) == []

    def test_index_follows_current_version(self, record):
        """A changed identifier is found by its new value only."""
        record.apply(bundle(entry(patient(), url=f"Patient/{PATIENT_UUID}")))
        record.apply(bundle(entry(patient(value="02020000000"), url=f"Patient/{PATIENT_UUID}")))
        assert record.search("Patient", {"identifier": FNR_VALUE}) == []
        assert len(record.search("Patient", {"identifier": "02020000000"})) == 1

    def test_index_kept_and_changed_by_updates(self, record):
        """An update that keeps identifiers and subject is found by them still; one that moves the subject
        (to the patient the first was merged into), by the new one only."""
        def encounter(status, subject):
            e = put_encounter(status=status)
            e["resource"]["subject"] = {"reference": f"Patient/{subject}"}
            return bundle(e)

        record.apply(admission())
        record.apply(bundle(put_patient(id_="p2", value="02020000000")))
        record.apply(encounter("in-progress", PATIENT_UUID))  # same identifier and subject: the index rows stay
        assert [r["status"] for r in record.search("Encounter", {"patient": PATIENT_UUID, "identifier": "V1"})] == ["in-progress"]
        merged = patient() | {"active": False, "link": [{"other": {"reference": "Patient/p2"}, "type": "replaced-by"}]}
        record.apply(bundle(entry(merged, url=f"Patient/{PATIENT_UUID}")))  # an A40: the first patient merged into p2
        record.apply_batch([encounter("planned", PATIENT_UUID), encounter("planned", "p2")])  # kept, then moved, in one batch
        assert record.search("Encounter", {"patient": PATIENT_UUID}) == []
        assert [r["meta"]["versionId"] for r in record.search("Encounter", {"patient": "p2", "identifier": f"{ENC_SYSTEM}|V1"})] == ["4"]

    def test_update_that_moves_a_resource_to_another_patient_is_refused(self, record):
        """A visit number reused for another patient must not move the first patient's stay (patient safety).

        The update is found by identifier alone; the record refuses the whole Bundle, in a
        batch as alone, and the stay stays where it was. A change that keeps the patient, or
        one to a patient the first was merged into (above), goes through.
        """
        def encounter(status, subject):
            e = put_encounter(status=status)
            e["resource"]["subject"] = {"reference": f"Patient/{subject}"}
            return bundle(put_patient(id_="p2", value="02020000000"), e) if subject == "p2" else bundle(e)

        record.apply(admission())
        with pytest.raises(InvalidContent, match="Encounter this message updates belongs to another patient") as err:
            record.apply(encounter("finished", "p2"))
        assert err.value.location == "Bundle.entry[1]"
        outcomes = record.apply_batch([encounter("finished", "p2"), encounter("in-progress", PATIENT_UUID)])
        assert isinstance(outcomes[0], InvalidContent) and not isinstance(outcomes[1], InvalidContent)
        stays = record.search("Encounter", {"identifier": f"{ENC_SYSTEM}|V1"})
        assert [(s["subject"]["reference"], s["status"], s["meta"]["versionId"]) for s in stays] == [(f"Patient/{PATIENT_UUID}", "in-progress", "2")]
        assert record.search("Patient", {"identifier": "02020000000"}) == []  # the refused Bundle left nothing

    def test_unknown_parameter_is_invalid(self, record):
        """A parameter the record does not index raises InvalidContent."""
        with pytest.raises(InvalidContent):
            record.search("Patient", {"name": "Nordmann"})

    def test_counts(self, record):
        """counts() reports current resources per type."""
        record.apply(admission())
        assert record.counts() == {"Encounter": 1, "Observation": 1, "Patient": 1}


class TestConcurrentApply:
    @pytest.mark.parametrize("how", ["post-if-none-exist", "conditional-put"])
    def test_one_resource_per_identifier(self, settings, how):
        """Two connections racing to create one identifier make exactly one resource."""
        records = [open_record(settings) for _ in range(2)]
        try:
            for round_ in range(15):
                value = f"{round_:011d}"
                res = {"resourceType": "Patient", "identifier": [{"system": FNR, "value": value}]}
                request = (
                    {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={FNR}|{value}"}
                    if how == "post-if-none-exist"
                    else {"method": "PUT", "url": f"Patient?identifier={FNR}|{value}"}
                )
                _race(records, bundle({"resource": res, "request": request}))
                assert len(records[0].search("Patient", {"identifier": value})) == 1
        finally:
            for r in records:
                r.close()

    def test_lost_update_is_refused(self, record):
        """A writer whose next version another writer took fails with RecordUnavailable, writing nothing."""
        record.apply(bundle(put_patient()))
        with record._transaction([]) as db:  # play the other writer: version 2 is taken
            db.execute(
                "INSERT INTO fhir_history (rid, version, deleted, last_updated, body)"
                " SELECT rid, ?, ?, ?, ? FROM fhir_resource WHERE type = ? AND id = ?",
                (2, 0, "2024-01-01T00:00:00.000Z", '{"resourceType": "Patient"}', "Patient", PATIENT_UUID),
            )
        with pytest.raises(RecordUnavailable):
            record.apply(bundle(put_patient(family="Hansen")))
        assert record.read("Patient", PATIENT_UUID)["name"] == [{"family": "Nordmann"}]


def _race(records, sent):
    barrier = threading.Barrier(len(records))
    errors = []

    def work(record):
        barrier.wait()
        try:
            record.apply(sent)
        except Exception as exc:  # noqa: BLE001  # reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _by_id(value, family, *, id_=PATIENT_UUID):
    """PUT Patient/<id> carrying one FNR: an identifier change when the value differs."""
    return bundle(entry(patient(id_=id_, family=family, value=value), url=f"Patient/{id_}"))


_SEQUENCES = {
    "update-twice": [admission(family="A"), admission(family="B"), admission(family="C")],
    "identifier-moves-away": [admission(family="A"), _by_id("01015000313", "A2"), bundle(put_patient(family="New"))],
    "identifier-moves-back": [admission(family="A"), _by_id("01015000313", "A2"), _by_id(FNR_VALUE, "A3"), bundle(put_patient(family="Same"))],
    "create-then-find": [bundle(put_patient(value="01015000313", family="X")), bundle(put_patient(value="01015000313", family="Y"))],
}


class TestBatchLookups:
    """One batch reads its matches and versions up front; it must still see its own writes as the database would."""

    @pytest.mark.parametrize("name", sorted(_SEQUENCES))
    def test_one_batch_equals_one_by_one(self, name, record, tmp_path):
        """The same Bundles applied as one batch, and one per batch, leave the same resources and histories."""
        bundles = _SEQUENCES[name]
        record.apply_batch([copy.deepcopy(b) for b in bundles])
        alone = SqliteRecord(tmp_path / "alone.sqlite3")
        try:
            for b in bundles:
                alone.apply_batch([copy.deepcopy(b)])
            for value in (FNR_VALUE, "01015000313"):
                mine = record.search("Patient", {"identifier": f"{FNR}|{value}"})
                theirs = alone.search("Patient", {"identifier": f"{FNR}|{value}"})
                assert [(p["name"], p["meta"]["versionId"]) for p in mine] == [(p["name"], p["meta"]["versionId"]) for p in theirs]
                for p, q in zip(mine, theirs):  # a new resource's id is random where the deterministic one is taken
                    assert [v["name"] for v in record.history("Patient", p["id"])] == [v["name"] for v in alone.history("Patient", q["id"])]
            assert record.counts() == alone.counts()
        finally:
            alone.close()

    def test_document_replaced_twice_in_one_batch(self, record, tmp_path):
        """Two changes of one document in one batch retire what the second drops, as applied one by one."""
        tag = "urn:helsebro:document|doc-1"

        def condition(code):
            return {"resourceType": "Condition", "id": f"c-{code}", "identifier": [{"system": "urn:test", "value": code}], "code": {"text": code},
                    "meta": {"tag": [{"system": "urn:helsebro:document", "code": "doc-1"}]}}

        def change(*codes):
            return bundle({"request": {"method": "DELETE", "url": f"Condition?_tag={tag}"}},
                          *[entry(condition(c), url=f"Condition?identifier=urn:test|{c}") for c in codes])

        def states(rec):
            return {c: ((rec.read("Condition", f"c-{c}") or {}).get("verificationStatus") or {}).get("coding", [{}])[0].get("code", "active") for c in "ab"}

        record.apply_batch([change("a", "b"), change("a")])
        alone = SqliteRecord(tmp_path / "alone-doc.sqlite3")
        try:
            alone.apply_batch([change("a", "b")])
            alone.apply_batch([change("a")])
            assert states(record) == states(alone) == {"a": "active", "b": "entered-in-error"}
        finally:
            alone.close()

    def test_identifier_without_system_in_two_bundles_of_one_batch(self, record):
        """`identifier=value` (no system) written by two Bundles of one batch is one resource, updated once."""
        def put(family):
            res = {"resourceType": "Patient", "id": PATIENT_UUID, "identifier": [{"value": "1"}], "name": [{"family": family}]}
            return bundle(entry(res, url="Patient?identifier=1"))

        first, second = record.apply_batch([put("A"), put("B")])
        assert [e.outcome for e in first.entries] == ["created"]
        assert [e.outcome for e in second.entries] == ["updated"]
        assert record.counts().get("Patient") == 1


def _incompressible(n: int, seed: int = 7) -> str:
    """*n* random letters: too long for a PostgreSQL index entry even compressed."""
    import random
    import string

    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters) for _ in range(n))


@pytest.mark.integration
class TestUnstorableValues:
    """PostgreSQL refuses some values outright (a NUL; an index entry over its size): only the message holding one is refused."""

    @pytest.fixture
    def pg(self, tmp_path):
        import uuid

        from router.testing import drop_schema

        from .conftest import PG_URL

        schema = f"unstorable_{uuid.uuid4().hex[:10]}"
        with open_record(Settings(record_url=f"{PG_URL}?schema={schema}", data_dir=tmp_path / "data")) as record:
            yield record
        drop_schema(PG_URL, schema)

    def test_a_batch_applies_around_the_bundle_that_cannot_be_stored(self, pg):
        """The batch's write fails whole without saying whose value it was: applied one at a time, the others apply in order,
        the one alone is refused as UnstorableContent (never RecordUnavailable, which would be retried for ever) and leaves no key."""
        from router.errors import UnstorableContent

        first = bundle(put_patient(family="Først"))
        unstorable = bundle(put_encounter(value=_incompressible(30_000), id_="6c2d1e0f-4a02-4f0e-b3a9-5b1c7e448d2a", subject=PATIENT_UUID), put_patient())
        last = bundle(put_patient(family="Sist"))
        results = pg.apply_batch([first, unstorable, last], ["k1", "k2", "k3"])
        assert [type(r).__name__ for r in results] == ["ApplyResult", "UnstorableContent", "ApplyResult"]
        assert isinstance(results[1], UnstorableContent) and results[1].reason == "the record cannot store a value of this message (a value is too long to index)"
        assert pg.applied(["k1", "k2", "k3"]) == {"k1", "k3"}
        assert pg.read("Patient", PATIENT_UUID)["name"] == [{"family": "Sist"}]  # in order: the last one wins
        assert sorted(v.version for v in pg.versions("Patient", PATIENT_UUID)) == [1, 2]

    def test_a_journal_row_that_cannot_be_stored_is_left_out_and_counted(self, pg):
        facts = JournalFacts("C1", "PAS@STOLAV", "ADT^A01", "h:p")
        left_out = pg.journal_settled([("k1|filtered", facts, "filtered", "filtered: no route"),
                                       ("k2|" + _incompressible(30_000), facts._replace(control_id="C2"), "filtered", "filtered: no route")])
        assert left_out == 1
        assert [e.control_id for e in pg.journal(patient_key="h:p")] == ["C1"]

    def test_a_key_that_cannot_be_remembered_is_left_out_never_raised(self, pg):
        """The duplicate window's keys (and the KITH guard's, whose recipient HER-id has no length limit) are remembered
        after the batch's publishes: a key the database refuses is left out, the others remembered. Raised,
        UnstorableContent (a MessageError) escaped Settle into the engine's catch-all, which settled the batch again and
        dead-lettered the message as an internal error."""
        from adapters.kith.duplicates import SeenStoreDuplicateGuard

        long_key = "kith|r|" + _incompressible(30_000)
        pg.remember(["hl7|PAS@STOLAV|C1", long_key, "hl7|PAS@STOLAV|C2"], window_seconds=60)
        assert pg.seen(["hl7|PAS@STOLAV|C1", long_key, "hl7|PAS@STOLAV|C2"], window_seconds=60) == {"hl7|PAS@STOLAV|C1", "hl7|PAS@STOLAV|C2"}
        guard = SeenStoreDuplicateGuard(pg)
        assert guard.seen_before("5a1e7c00-1111-4a00-8000-000000000001", recipient=_incompressible(30_000, seed=8)) is False

    def test_a_refused_key_in_a_first_call_leaves_the_purge_to_the_next(self, pg, monkeypatch):
        """A process's first remember() purges the expired keys; when its write is refused (a key too long to index) and
        the keys are remembered one by one, one of those still purges (found by review H125: the refused write had
        counted the purge as done, and the next came a thousand calls later)."""
        import adapters.fhir._store as store

        clock = [1_700_000_000.0]
        monkeypatch.setattr(store.time, "time", lambda: clock[0])
        pg.remember(["hl7|PAS@STOLAV|C1"], window_seconds=60)
        monkeypatch.setattr(pg, "_remembered", 0)  # as a new process
        clock[0] += 120
        pg.remember(["hl7|PAS@STOLAV|C2", "hl7|r|" + _incompressible(30_000)], window_seconds=60)
        assert pg.seen(["hl7|PAS@STOLAV|C1", "hl7|PAS@STOLAV|C2"], window_seconds=3600) == {"hl7|PAS@STOLAV|C2"}
