"""Two partition workers, each with its own record connection, applying at the same moment.

Each test forces the overlap with a barrier and runs on SQLite (whose writers take turns)
and on PostgreSQL (whose writers run at once, serialised only by identity locks). What must
hold on both: one resource per identifier, no lost update, a history without gaps, a message
applied once however many copies race, and no error a worker would have to wait out.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from adapters.fhir.record import open_record
from router.contracts import JournalFacts
from router.pipeline.convert import Converter
from router.settings import load_settings

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HOSPITAL = "urn:helsebro:local:STOLAV:PI"
HER = "urn:oid:2.16.578.1.12.4.1.2"
VISIT = "urn:helsebro:local:STOLAV:VN"
ROUNDS = 8
WORKERS = 4


def _race(records: list[Any], work: list[Any]) -> list[Any]:
    """Run work[i](records[i]) in threads released together; return each one's result, raising the first error."""
    barrier = threading.Barrier(len(records))
    results: list[Any] = [None] * len(records)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work[i](records[i])
        except Exception as exc:  # noqa: BLE001  # reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [], errors
    return results


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(load_settings(environ={}))


@pytest.fixture
def records(settings):
    opened = [open_record(settings) for _ in range(WORKERS)]
    yield opened
    for r in opened:
        r.close()


def _bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _organization(her: str, name: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:org-{her}", "resource": {"resourceType": "Organization", "identifier": [{"system": HER, "value": her}], "name": name},
            "request": {"method": "POST", "url": "Organization", "ifNoneExist": f"identifier={HER}|{her}"}}


def _patient(fnr: str, family: str, *, org: str | None = None, extra: list[dict[str, str]] | None = None,
             by: tuple[str, str] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": FNR, "value": fnr}, *(extra or [])],
                                "name": [{"family": family}]}
    if org:
        resource["managingOrganization"] = {"reference": f"urn:uuid:org-{org}"}
    system, value = by or (FNR, fnr)
    return {"fullUrl": f"urn:uuid:pat-{fnr}", "resource": resource, "request": {"method": "PUT", "url": f"Patient?identifier={system}|{value}"}}


def _versions_are_whole(record: Any, resource_type: str, id_: str) -> list[int]:
    versions = [v.version for v in record.versions(resource_type, id_)]
    assert versions == list(range(len(versions), 0, -1)), versions
    current = record.read(resource_type, id_)
    assert current is not None and current["meta"]["versionId"] == str(versions[0])
    return versions


class TestSharedResources:
    def test_patients_of_one_organization_share_one_organization(self, records):
        """Workers applying different patients that name the same Organization (ifNoneExist) make it once."""
        for round_ in range(ROUNDS):
            her = f"9{round_:05d}"
            work = [lambda r, i=i, her=her, fnr=f"{round_:02d}{i:09d}": r.apply(_bundle(_organization(her, "Sykehuset"), _patient(fnr, "N", org=her)))
                    for i in range(WORKERS)]
            _race(records, work)
            [org] = records[0].search("Organization", {"identifier": f"{HER}|{her}"})
            for i in range(WORKERS):
                [pat] = records[0].search("Patient", {"identifier": f"{FNR}|{round_:02d}{i:09d}"})
                assert pat["managingOrganization"]["reference"] == f"Organization/{org['id']}"
            assert _versions_are_whole(records[0], "Organization", org["id"]) == [1]

    def test_one_patient_updated_at_once_keeps_every_version(self, records):
        """Conditional PUTs of one Patient by the same identifier: one Patient, each write a version, none lost."""
        for round_ in range(ROUNDS):
            fnr = f"{round_:011d}"
            _race(records, [lambda r, i=i, fnr=fnr: r.apply(_bundle(_patient(fnr, f"W{i}"))) for i in range(WORKERS)])
            [pat] = records[0].search("Patient", {"identifier": f"{FNR}|{fnr}"})
            history = records[0].history("Patient", pat["id"])
            assert _versions_are_whole(records[0], "Patient", pat["id"]) == list(range(WORKERS, 0, -1))
            assert sorted(v["name"][0]["family"] for v in history) == [f"W{i}" for i in range(WORKERS)]

    def test_a_delete_by_id_and_an_update_by_identifier_at_once_lose_neither(self, records):
        """Two writers of one Encounter that share no identity lock (its id, its identifier): each is applied whole.

        Taking turns, either order is right: update then delete (versions 1-3, the last deleted),
        or delete then update (the update finds none and creates another Encounter).
        """
        for round_ in range(ROUNDS):
            visit = f"V{round_}"

            def encounter(status: str, visit: str = visit) -> dict[str, Any]:
                return {"resourceType": "Encounter", "identifier": [{"system": VISIT, "value": visit}], "status": status, "class": {"code": "IMP"}}

            [made] = records[0].apply(_bundle({"fullUrl": "urn:uuid:e", "resource": encounter("planned"),
                                               "request": {"method": "PUT", "url": f"Encounter?identifier={VISIT}|{visit}"}})).entries
            update = _bundle({"fullUrl": "urn:uuid:e", "resource": encounter("finished"),
                              "request": {"method": "PUT", "url": f"Encounter?identifier={VISIT}|{visit}"}})
            delete = _bundle({"request": {"method": "DELETE", "url": f"Encounter/{made.id}"}})
            _race(records[:2], [lambda r, b=update: r.apply(b), lambda r, b=delete: r.apply(b)])
            versions = _versions_are_whole(records[0], "Encounter", made.id) if records[0].read("Encounter", made.id) else \
                [v.version for v in records[0].versions("Encounter", made.id)]
            assert versions == list(range(len(versions), 0, -1))
            stored = records[0].versions("Encounter", made.id)
            assert stored[0].deleted
            others = records[0].search("Encounter", {"identifier": f"{VISIT}|{visit}"})
            if len(stored) == 3:  # the update first
                assert stored[1].resource["status"] == "finished" and others == []
            else:  # the delete first: the update made a new Encounter
                assert len(stored) == 2 and [o["status"] for o in others] == ["finished"]


class TestOneMessageRacingItself:
    @pytest.mark.parametrize("shape", ["conditional", "plain-post"])
    def test_the_same_message_applied_at_once_is_applied_once(self, records, shape):
        """Two copies of one message (a redelivery racing the original) write once, and are journalled once."""
        for round_ in range(ROUNDS):
            fnr = f"{round_:011d}"
            observation = {"fullUrl": "urn:uuid:obs", "request": {"method": "POST", "url": "Observation"},
                           "resource": {"resourceType": "Observation", "status": "final", "code": {"text": f"puls {round_}"}}}
            if shape == "conditional":
                observation["resource"]["subject"] = {"reference": f"urn:uuid:pat-{fnr}"}
                sent = _bundle(_patient(fnr, "N"), observation)
            else:
                sent = _bundle(observation)
            key = f"hl7v2|DIPS|{round_}|hash"
            facts = JournalFacts(str(round_), "DIPS", "ORU^R01", "patient-key", "")
            results = _race(records, [lambda r, b=sent, k=key, f=facts: r.apply_batch([b], [k], [f]) for _ in records])
            changed = [res for [res] in results if res.entries]
            assert len(changed) == 1
            assert records[0].counts().get("Observation") == round_ + 1
            [entry] = records[0].journal(control_id=str(round_))
            assert entry.outcome == "applied"


class TestMerges:
    def test_a_merge_and_an_update_of_the_old_record_at_once_leave_one_person(self, records, converter):
        """An A40 (old record into survivor) and an A08 for the old record, applied by two workers at once."""

        def msg(type_: str, ctrl: str, pid: str, *rest: str) -> dict[str, Any]:
            head = (f"MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250111090000||{type_}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8")
            [converted] = converter.convert(("\r".join([head, "EVN||20250111090000", pid, *rest]) + "\r").encode())
            assert converted.ok, converted.error
            return converted.bundle

        for round_ in range(ROUNDS):
            old, survivor = f"1{round_:010d}", f"2{round_:010d}"
            old_cx, survivor_cx = f"{old}^^^STOLAV^PI", f"{survivor}^^^STOLAV^PI"
            records[0].apply(msg("ADT^A01^ADT_A01", f"a{round_}", f"PID|1||{old_cx}||NORDMANN^OLA||19610615|M", "PV1|1|I|MED^101^1"))
            records[0].apply(msg("ADT^A01^ADT_A01", f"b{round_}", f"PID|1||{survivor_cx}||NORDMANN^OLA||19610615|M", "PV1|1|I|MED^101^1"))
            merge = msg("ADT^A40^ADT_A39", f"c{round_}", f"PID|1||{survivor_cx}||NORDMANN^OLA||19610615|M", f"MRG|{old_cx}")
            update = msg("ADT^A08^ADT_A01", f"d{round_}", f"PID|1||{old_cx}||HANSEN^OLA||19610615|M", "PV1|1|I|MED^101^1")
            _race(records[:2], [lambda r, b=merge: r.apply(b), lambda r, b=update: r.apply(b)])
            active = [p for p in records[0].search("Patient", {"identifier": old}) if p.get("active", True)]
            assert len(active) == 1, active
            [kept] = records[0].search("Patient", {"identifier": survivor})
            assert kept["id"] == active[0]["id"]
            for p in records[0].search("Patient", {"identifier": old}):
                _versions_are_whole(records[0], "Patient", p["id"])


class TestTrails:
    def test_workers_remembering_the_same_ids_in_another_order_both_succeed(self, records):
        """The duplicate window written by two workers at once, its keys in opposite orders: no deadlock reaches either."""
        for round_ in range(ROUNDS):
            keys = [f"hl7|DIPS|{round_}-{n}" for n in range(200)]
            _race(records[:2], [lambda r, k=keys: r.remember(k, window_seconds=60), lambda r, k=keys[::-1]: r.remember(k, window_seconds=60)])
            assert records[0].seen(keys, window_seconds=60) == set(keys)

    def test_workers_journalling_the_same_messages_in_another_order_both_succeed(self, records):
        """Messages settled without being applied, journalled by two workers at once in opposite orders."""
        for round_ in range(ROUNDS):
            rows = [(f"hl7v2|DIPS|{round_}-{n}|h|duplicate", JournalFacts(f"{round_}-{n}", "DIPS", "ADT^A08", "k", ""), "duplicate", "seen")
                    for n in range(200)]
            _race(records[:2], [lambda r, w=rows: r.journal_settled(w), lambda r, w=rows[::-1]: r.journal_settled(w)])
            assert len(records[0].journal(sender="DIPS", outcome="duplicate", limit=10_000)) == 200 * (round_ + 1)
