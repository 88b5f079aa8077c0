"""The record's schema migrations: a record written by an earlier Helsebro opens, keeps its data, and works on.

Version 1 had no schema table: fhir_resource held the current body, and every table was keyed by
(type, id). Its layout is frozen here, as it was written, so the migration is tested against it.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import orjson
import pytest

from adapters.fhir._store import SCHEMA_VERSION
from adapters.fhir.record import open_record
from router.contracts import JournalFacts
from router.errors import RecordUnavailable

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
VISITS = "urn:helsebro:local:AHUS:VN"
P1, P2, E1 = "0d9a6c2e-1f3b-4c55-9a51-3f0e2b7c9a01", "3a7d3f1e-0b6a-4d7e-9c1e-2b5f6a8d0c11", "5b1c7e44-8d2a-4f0e-b3a9-6c2d1e0f4a02"
STAMPS = ("2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z")

V1_SCHEMA = (
    "CREATE TABLE fhir_resource (type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
    " deleted INTEGER NOT NULL, last_updated TEXT NOT NULL, digest TEXT NOT NULL, body {body} NOT NULL,"
    " PRIMARY KEY (type, id))",
    "CREATE TABLE fhir_history (type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
    " deleted INTEGER NOT NULL, last_updated TEXT NOT NULL, body {body} NOT NULL, PRIMARY KEY (type, id, version))",
    "CREATE TABLE fhir_token (type TEXT NOT NULL, id TEXT NOT NULL, system TEXT NOT NULL, value TEXT NOT NULL)",
    "CREATE INDEX fhir_token_value ON fhir_token (type, value, system)",
    "CREATE INDEX fhir_token_owner ON fhir_token (type, id)",
    "CREATE TABLE fhir_ref (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, target TEXT NOT NULL)",
    "CREATE INDEX fhir_ref_target ON fhir_ref (type, target, param)",
    "CREATE INDEX fhir_ref_owner ON fhir_ref (type, id)",
    "CREATE TABLE helsebro_seen (key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE helsebro_applied (key TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)",
)


def _patient(id_, family, value, version, stamp):
    return {"resourceType": "Patient", "id": id_, "meta": {"versionId": str(version), "lastUpdated": stamp},
            "identifier": [{"system": FNR, "value": value}], "name": [{"family": family}]}


def _v1_rows():
    """A version-1 record's rows: P1 in two versions, an Encounter of P1, P2 deleted, one applied key."""
    p1 = [_patient(P1, "Old", "01015000232", 1, STAMPS[0]), _patient(P1, "Nordmann", "01015000232", 2, STAMPS[1])]
    e1 = {"resourceType": "Encounter", "id": E1, "meta": {"versionId": "1", "lastUpdated": STAMPS[0]},
          "identifier": [{"system": VISITS, "value": "V1"}], "status": "finished", "subject": {"reference": f"Patient/{P1}"}}
    p2 = [_patient(P2, "Gone", "02020000000", 1, STAMPS[0]),
          {"resourceType": "Patient", "id": P2, "meta": {"versionId": "2", "lastUpdated": STAMPS[1]}}]
    history = [
        ("Patient", P1, 1, 0, STAMPS[0], p1[0]), ("Patient", P1, 2, 0, STAMPS[1], p1[1]),
        ("Encounter", E1, 1, 0, STAMPS[0], e1),
        ("Patient", P2, 1, 0, STAMPS[0], p2[0]), ("Patient", P2, 2, 1, STAMPS[1], p2[1]),
    ]
    current = [
        ("Patient", P1, 2, 0, STAMPS[1], "d-p1", p1[1]),
        ("Encounter", E1, 1, 0, STAMPS[0], "d-e1", e1),
        ("Patient", P2, 2, 1, STAMPS[1], "", p2[1]),
    ]
    tokens = [("Patient", P1, FNR, "01015000232"), ("Encounter", E1, VISITS, "V1")]
    refs = [("Encounter", E1, "subject", f"Patient/{P1}")]
    return history, current, tokens, refs


def _write_v1(record_url):
    """Create a version-1 record at *record_url*, as Helsebro 0.3 left it."""
    history, current, tokens, refs = _v1_rows()
    inserts = (
        ("INSERT INTO fhir_history (type, id, version, deleted, last_updated, body) VALUES (?, ?, ?, ?, ?, ?)",
         [(*row[:5], orjson.dumps(row[5]).decode()) for row in history]),
        ("INSERT INTO fhir_resource (type, id, version, deleted, last_updated, digest, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
         [(*row[:6], orjson.dumps(row[6]).decode()) for row in current]),
        ("INSERT INTO fhir_token (type, id, system, value) VALUES (?, ?, ?, ?)", tokens),
        ("INSERT INTO fhir_ref (type, id, param, target) VALUES (?, ?, ?, ?)", refs),
        ("INSERT INTO helsebro_applied (key, applied_at) VALUES (?, ?)", [("hl7v2|A@B|1|x", time.time())]),
        ("INSERT INTO helsebro_seen (key, seen_at) VALUES (?, ?)", [("A@B|1", time.time())]),
    )
    if record_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(record_url[len("sqlite:///"):])) as conn, conn:
            for statement in V1_SCHEMA:
                conn.execute(statement.format(body="TEXT"))
            for sql, rows in inserts:
                conn.executemany(sql, rows)
        return
    import psycopg
    from psycopg import sql as pgsql

    from adapters.fhir._postgres import split_schema

    url, schema = split_schema(record_url)
    with psycopg.connect(url) as conn:
        conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        for statement in V1_SCHEMA:
            conn.execute(statement.format(body="JSON"))
        for statement, rows in inserts:
            with conn.cursor() as cur:
                cur.executemany(statement.replace("?", "%s"), rows)


def _put(id_, family, value):
    resource = {"resourceType": "Patient", "id": id_, "identifier": [{"system": FNR, "value": value}], "name": [{"family": family}]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{id_}", "resource": resource, "request": {"method": "PUT", "url": f"Patient?identifier={FNR}|{value}"}}]}


class TestFromVersion1:
    def test_data_reads_as_before(self, settings, record_url):
        """Current versions, history, deletions, search and the applied keys survive the migration."""
        _write_v1(record_url)
        with open_record(settings) as record:
            assert record.read("Patient", P1)["name"] == [{"family": "Nordmann"}]
            assert [(v.version, v.deleted, v.last_updated) for v in record.versions("Patient", P1)] == [(2, False, STAMPS[1]), (1, False, STAMPS[0])]
            assert record.vread("Patient", P1, 1)["name"] == [{"family": "Old"}]
            assert record.read("Patient", P2) is None
            assert [(v.version, v.deleted) for v in record.versions("Patient", P2)] == [(2, True), (1, False)]
            assert [r["id"] for r in record.search("Patient", {"identifier": f"{FNR}|01015000232"})] == [P1]
            assert record.search("Patient", {"identifier": "02020000000"}) == []
            assert [r["id"] for r in record.search("Encounter", {"patient": P1})] == [E1]
            assert [r["id"] for r in record.search("Encounter", {"identifier": "V1", "subject": f"Patient/{P1}"})] == [E1]
            assert record.applied(["hl7v2|A@B|1|x", "hl7v2|A@B|2|y"]) == {"hl7v2|A@B|1|x"}
            assert record.seen(["A@B|1"], window_seconds=60) == {"A@B|1"}
            assert record.counts() == {"Encounter": 1, "Patient": 1}

    def test_writes_go_on(self, settings, record_url):
        """After the migration, updates bump the old versions, an identifier change re-indexes, new resources get keys of their own."""
        _write_v1(record_url)
        with open_record(settings) as record:
            (updated,) = record.apply(_put(P1, "Hansen", "01015000232")).entries
            assert (updated.id, updated.version, updated.outcome) == (P1, 3, "updated")
            (moved,) = record.apply({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "Patient", "id": P1, "identifier": [{"system": FNR, "value": "03030000000"}]},
                 "request": {"method": "PUT", "url": f"Patient/{P1}"}}]}).entries
            assert moved.version == 4
            assert record.search("Patient", {"identifier": "01015000232"}) == []
            (created,) = record.apply(_put("p-new", "Ny", "04040000000")).entries
            assert created.outcome == "created"
            (again,) = record.apply(_put(P2, "Back", "02020000000")).entries  # a deleted id, written again
            assert (again.version, again.outcome) == (3, "created")
            assert {r["id"] for r in record.search("Patient", {"identifier": f"{FNR}|"})} == {P1, P2, "p-new"}
            assert record.read("Encounter", E1)["status"] == "finished"
        with open_record(settings) as record:  # opening again migrates nothing
            assert [v.version for v in record.versions("Patient", P1)] == [4, 3, 2, 1]
            assert record.read("Patient", "p-new")["name"] == [{"family": "Ny"}]

    def test_schema_version_is_kept(self, settings):
        """A new record is written at the current version; one from a newer Helsebro is refused, untouched."""
        with open_record(settings) as record:
            assert record._select("SELECT version FROM helsebro_schema", ()) == [(SCHEMA_VERSION,)]
            with record._transaction([]) as db:
                db.execute("UPDATE helsebro_schema SET version = ?", (SCHEMA_VERSION + 1,))
        with pytest.raises(RecordUnavailable):
            open_record(settings)


class TestFromVersion2:
    def test_the_journal_is_added_and_kept(self, settings):
        """A version-2 record (no journal) opens at the current version with an empty journal that applies then fill."""
        with open_record(settings) as record:
            record.apply_batch([_put(P1, "Nordmann", "01015000232")], ["hl7v2|A@B|1|x"])
            with record._transaction([]) as db:
                db.execute("DROP TABLE helsebro_journal", ())
                db.execute("UPDATE helsebro_schema SET version = ?", (2,))
        with open_record(settings) as record:
            assert record._select("SELECT version FROM helsebro_schema", ()) == [(SCHEMA_VERSION,)]
            assert record.applied(["hl7v2|A@B|1|x"]) == {"hl7v2|A@B|1|x"}  # what version 2 kept stays
            assert record.journal(control_id="1") == []  # applied before the journal: no row
            record.apply_batch([_put(P1, "Hansen", "01015000232")], ["hl7v2|A@B|2|y"], [JournalFacts("2", "A@B", "ADT^A08", "h:p1")])
            [entry] = record.journal(control_id="2")
            assert entry.resources == (("Patient", P1, 2, "updated"),)


class TestFromVersion3:
    def test_the_journal_gains_outcomes_and_keeps_its_rows(self, settings):
        """A version-3 record (a journal without outcome and note) opens at the current version: its rows read as
        applied, and messages not applied can be journalled beside them."""
        with open_record(settings) as record:
            record.apply_batch([_put(P1, "Nordmann", "01015000232")], ["hl7v2|A@B|1|x"], [JournalFacts("1", "A@B", "ADT^A01", "h:p1")])
            with record._transaction([]) as db:
                db.execute("DROP TABLE helsebro_journal", ())
                db.execute("CREATE TABLE helsebro_journal (key TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL, control_id TEXT NOT NULL,"
                           " sender TEXT NOT NULL, message_type TEXT NOT NULL, patient_key TEXT NOT NULL, resources TEXT NOT NULL)", ())
                db.execute("INSERT INTO helsebro_journal VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ("hl7v2|A@B|1|x", time.time(), "1", "A@B", "ADT^A01", "h:p1", orjson.dumps([["Patient", P1, 1, "created"]]).decode()))
                db.execute("UPDATE helsebro_schema SET version = ?", (3,))
        with open_record(settings) as record:
            assert record._select("SELECT version FROM helsebro_schema", ()) == [(SCHEMA_VERSION,)]
            [old] = record.journal(control_id="1")
            assert (old.outcome, old.note, old.resources) == ("applied", "", (("Patient", P1, 1, "created"),))
            assert old.destinations == ()
            record.journal_settled([("hl7v2|A@B|1|x|duplicate", JournalFacts("1", "A@B", "ADT^A01", "h:p1"), "duplicate", "resent")])
            assert [e.outcome for e in record.journal(patient_key="h:p1")] == ["duplicate", "applied"]
            record.apply_batch([_put(P1, "Hansen", "01015000232")], ["hl7v2|A@B|2|y"], [JournalFacts("2", "A@B", "ADT^A08", "h:p2", "lab")])
            assert [e.destinations for e in record.journal(control_id="2")] == [("lab",)]  # the column version 4 added is written
        with open_record(settings) as record:  # opened again: nothing to migrate twice
            assert len(record.journal(patient_key="h:p1")) == 2 and len(record.journal(patient_key="h:p2")) == 1
