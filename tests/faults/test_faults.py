"""Fault injection against the real RabbitMQ and PostgreSQL: kill -9 workers, restart the broker, break the FHIR destinations.

2,000+ mixed ADT messages (some with a bad check digit, some resent) fan out
to the record, four legacy queues (passthrough, fhir-json, HL7 v2 rendered by
the outbound ADT mapping, KITH PLO rendered in a MsgHead) and two external
FHIR servers (`adapters.fhir.rest.make_server`, each behind a proxy that
answers 503 for a while and counts what it let through), one `on_failure:
strict` and one `park`, through two `helsebro run` workers on four partitions.
Every message renames its patient to `Seq<n>`, so a record's versions count
applications and their order: each good message is applied exactly once, in
order, when a patient's Patient has one version per good message, in
sequence, ending at the last one. The park server gives order up, so there
the versions are each good message once, in any order. The figures are
printed at the end of the run (`figures of tests/faults/…`, in the terminal
summary, also under pytest-xdist) and written to figures.json in the test's tmp dir.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from lxml import etree

from router.testing import drain_queue, drain_with_ids, publish, queue_depth, wait_until
from schemas.identity import FNR_SYSTEM
from tests.faults.conftest import EXTERNAL, FLAKY_EVERY, LEGACY, PATIENTS, PER_PATIENT, WORKERS, FailingProxy, Mix, Workers, message_mix, patient_of, people, rabbitmqctl

pytestmark = [pytest.mark.integration, pytest.mark.restarts_broker]

XSD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "norsk" / "skjema"  # ../shared, when beside the checkout


def _drained(settings) -> bool:
    from adapters.amqp.connection import all_queue_names

    watched = [q.name for q in all_queue_names(settings) if q.role in ("inbound", "partition", "work", "retry")]
    return all(queue_depth(settings, name) == 0 for name in watched)


def _complete(record, mix) -> bool:
    """True when every patient's current version carries its last good sequence number (queues show no unacked work)."""
    for fnr, seq in mix.last_seq.items():
        found = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
        if not found or found[0]["name"][0]["given"][0] != f"Seq{seq:03d}":
            return False
    return True


def _all_sent(proxy: FailingProxy, mix: Mix) -> bool:
    """True when the server behind *proxy* has applied every good message at least once."""
    wanted = {(fnr, f"Seq{seq:03d}") for fnr, seq in mix.good.values()}
    return wanted <= {(fnr, given) for fnr, given, _ in proxy.applied}


def test_faults_lose_nothing_apply_nothing_twice_keep_order(world, tmp_path, record_property):
    """Through kill -9s, a broker restart and a FHIR outage: every good message applied once and in order everywhere (in any order where parked), every bad one dead-lettered."""
    settings, proxies = world.settings, world.proxies
    mix = message_mix(PATIENTS, PER_PATIENT, bad_every=50, duplicate_every=40)
    rng = random.Random(11)
    faults: dict[str, int] = defaultdict(int)
    workers = Workers(settings, WORKERS, tmp_path)
    started = time.monotonic()
    publish(settings, [])  # declares the topology
    for i in range(WORKERS):
        workers.start(i)
    third = len(mix.bodies) // 3
    publish(settings, mix.bodies[:third])
    for proxy in proxies.values():
        proxy.failing.set()  # both FHIR destinations are down while the first third goes through
    outage_until = time.monotonic() + 6.0
    faults["fhir_outage"] += 1
    for progress in (200, 500):  # kill -9 a random worker mid-stream, then restart it
        wait_until(lambda: workers.settled() >= progress + rng.randrange(100), 120, interval=0.1, what="progress before a kill")  # noqa: B023 - called within this iteration
        victim = rng.randrange(WORKERS)
        workers.kill(victim)
        faults["kill_9"] += 1
        workers.start(victim)
    publish(settings, mix.bodies[third:2 * third])
    time.sleep(max(0.0, outage_until - time.monotonic()))
    for proxy in proxies.values():
        proxy.failing.clear()
    wait_until(lambda: workers.settled() >= 1000, 120, interval=0.1, what="progress before the broker restart")
    rabbitmqctl("stop_app")  # the broker goes away under both workers, mid-stream
    faults["broker_restart"] += 1
    time.sleep(2.0)
    rabbitmqctl("start_app")
    wait_until(lambda: _try(lambda: queue_depth(settings, settings.engine.broker.names.inbound) >= 0), 60, what="broker back")
    publish(settings, mix.bodies[2 * third:])
    wait_until(lambda: workers.settled() >= 1800 + rng.randrange(100), 120, interval=0.1, what="progress before the last kill")
    victim = rng.randrange(WORKERS)
    workers.kill(victim)
    faults["kill_9"] += 1
    workers.start(victim)
    from adapters.fhir.record import SqliteRecord, open_record

    record, strict, park = open_record(settings), SqliteRecord(world.servers["ekstern"]), SqliteRecord(world.servers["parkert"])
    try:
        wait_until(
            lambda: _try(lambda: _drained(settings)) and _complete(record, mix) and _complete(strict, mix) and _all_sent(proxies["parkert"], mix),
            180, interval=1.0, what="every queue drained, every record complete",
        )
        codes = workers.stop_all()
        elapsed = time.monotonic() - started
        applied = _check_record(record, mix)
        external_applied = _check_record(strict, mix)
        park_applied = _check_record(park, mix, ordered=False)
    finally:
        record.close()
        strict.close()
        park.close()
    dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
    dead_ids = {h["x-helsebro-control-id"] for h, _ in dead}
    assert dead_ids == mix.bad, "every bad message, and nothing else, is dead-lettered"
    assert all("fødselsnummer" in h["x-helsebro-reason"] and h["x-helsebro-stage"] == "convert" for h, _ in dead)
    for name in EXTERNAL:
        assert drain_queue(settings, f"{settings.engine.broker.names.destination_prefix}.{name}.dlq") == [], f"{name}: nothing dead-lettered"
    resent = {name: _check_sends(proxies[name].applied, mix, name, ordered=EXTERNAL[name] == "strict", kills=workers.kills) for name in EXTERNAL}
    parked = workers.events("delivery_parked", "parkert")
    parked_ids = {e["control_id"] for e in parked}
    flaky_fnrs = set(people(PATIENTS)[::FLAKY_EVERY])
    flaky = {c for c, (fnr, _) in mix.good.items() if fnr in flaky_fnrs}
    assert flaky <= parked_ids <= set(mix.good), "the park destination parked the flaky patients' messages, and only good ones"
    assert max(e["attempt"] for e in parked) >= 2, "a parked message came back, was refused again and climbed the ladder"
    assert not workers.events("delivery_parked", "ekstern"), "a strict destination never parks"
    legacy_copies = {name: _check_legacy(drain_with_ids(settings, settings.routes.destinations[name].queue), mix, name, fmt, settings) for name, fmt in LEGACY.items()}
    outcomes = workers.outcomes()
    figures = {
        "sent": len(mix.bodies), "distinct_good": len(mix.good), "bad": len(mix.bad), "resent_copies": mix.copies,
        "applied_exactly_once": applied, "applied_exactly_once_external_fhir": external_applied,
        "applied_exactly_once_park_fhir": park_applied,
        "dead_lettered": len(dead_ids), "dead_letter_copies": len(dead) - len(dead_ids),
        "duplicates_suppressed": outcomes.get("duplicate", 0), "settled_outcomes_logged": outcomes,
        "legacy_redelivered_copies": legacy_copies,
        "parked": len(parked), "parked_messages": len(parked_ids), "park_highest_attempt": max(e["attempt"] for e in parked),
        "fhir_resends_of_current_content": resent,
        "fhir_already_sent_skipped": {name: len(workers.events("delivery_already_sent", name)) for name in EXTERNAL},
        "faults_injected": dict(faults), "fhir_503_answers": {name: p.refused for name, p in proxies.items()}, "worker_exit_codes": codes,
        "lost": len(mix.good) - applied, "seconds": round(elapsed, 1),
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    record_property("figures", json.dumps(figures))  # printed at the end of the run, also from a pytest-xdist worker (tests/conftest.py)
    assert figures["lost"] == 0 and external_applied == len(mix.good) and park_applied == len(mix.good)
    assert figures["duplicates_suppressed"] > 0


def _try(call):
    try:
        return call()
    except Exception:  # noqa: BLE001  # the broker is restarting: not yet
        return False


def _check_record(record, mix, *, ordered: bool = True) -> int:
    """Assert each patient's history is one version per good message, in sequence (in any order when not *ordered*); return the good messages applied."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for fnr, seq in mix.good.values():
        by_patient[fnr].append(seq)
    applied = 0
    for fnr, seqs in by_patient.items():
        [patient] = record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
        history = [v["name"][0]["given"][0] for v in reversed(record.history("Patient", patient["id"]))]
        expected = [f"Seq{s:03d}" for s in sorted(seqs)]
        assert (history if ordered else sorted(history)) == expected, f"patient {patient['id']}: applied {'out of order or ' if ordered else ''}twice, or not at all"
        applied += len(history)
    return applied


def _check_sends(applied: list[tuple[str, str, float]], mix, destination: str, *, ordered: bool, kills: list[float]) -> int:
    """Assert the server applied every good message, and one twice only back to back and within moments of a kill -9
    (the window worker.py names: the server has answered, the ledger has not committed); return how many such repeats."""
    sends: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for fnr, given, at in applied:
        sends[fnr].append((int(given.removeprefix("Seq")), at))
    repeats = 0
    for sent in sends.values():
        runs = [seq for i, (seq, _) in enumerate(sent) if i == 0 or sent[i - 1][0] != seq]
        assert len(runs) == len(set(runs)), f"{destination}: a message applied again after another one of its patient"
        assert not ordered or runs == sorted(runs), f"{destination}: a patient's messages applied out of order"
        for (before, at), (seq, _) in pairwise(sent):
            if seq == before:
                repeats += 1
                assert any(abs(at - kill) < _KILL_WINDOW for kill in kills), f"{destination}: a message sent twice with no kill -9 to explain it"
    expected = {(fnr, seq) for fnr, seq in mix.good.values()}
    assert {(fnr, seq) for fnr, sent in sends.items() for seq, _ in sent} == expected, f"{destination}: missing or extra messages"
    return repeats


_KILL_WINDOW = 2.0
"""Seconds between a send the server applied and the kill -9 that kept the ledger from noting it: a request and a commit, with room for a loaded machine."""


def _check_legacy(messages, mix, destination: str, fmt: str, settings) -> int:
    """Assert each good message reached the queue as one message (one message id, one content: a repeat is a redelivered
    copy the receiver drops by id), first arrivals in order per patient, each reading back as its format names the
    message; return the copies."""
    first: dict[str, tuple[str, bytes]] = {}
    order: dict[str, list[int]] = defaultdict(list)
    for message_id, headers, body in messages:
        control = headers["x-helsebro-control-id"]
        if control in first:
            assert first[control] == (message_id, body), f"{destination}: {control} arrived again as a different message"
            continue
        assert control in mix.good, f"{destination}: {control} is not a good message"
        first[control] = (message_id, body)
        order[mix.good[control][0]].append(mix.good[control][1])
    assert set(first) == set(mix.good), f"{destination}: {len(set(mix.good) - set(first))} good messages missing"
    assert len({message_id for message_id, _ in first.values()}) == len(first), f"{destination}: two messages share a message id"
    assert all(seqs == sorted(seqs) for seqs in order.values()), f"{destination}: a patient's messages arrived out of order"
    read = _reader(fmt, settings)
    own_ids = [read(body, control, *mix.good[control], mix) for control, (_, body) in first.items()]
    assert len(set(own_ids)) == len(own_ids), f"{destination}: two messages share their own id (MSH-10, MsgId), so a receiver drops one"
    return len(messages) - len(first)


def _reader(fmt: str, settings):
    """Return a check of one body in *fmt*: it reads back as the message about that patient and sequence; it returns the body's own id."""
    if fmt == "passthrough":
        def passthrough(body, control, fnr, seq, mix):
            assert body == mix.raw[control], f"{control}: passthrough changed the bytes"
            return control
        return passthrough
    if fmt == "fhir-json":
        def fhir_json(body, control, fnr, seq, mix):
            bundle = orjson.loads(body)
            assert bundle["resourceType"] == "Bundle" and patient_of(bundle) == (fnr, f"Seq{seq:03d}"), f"{control}: wrong Bundle"
            return control
        return fhir_json
    if fmt == "hl7v2":
        return _hl7v2_reader(settings)
    return _kith_reader()


def _hl7v2_reader(settings):
    """Rendered HL7 v2 converts again through the inbound path to the same patient; every 50th also passes hl7apy's strict parser."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    from router.pipeline.convert import Converter

    converter, count = Converter(settings), [0]

    def hl7v2(body, control, fnr, seq, mix):
        [back] = converter.convert(body)
        assert back.ok, f"{control}: the rendered HL7 v2 does not convert: {back.error}"
        assert patient_of(back.bundle) == (fnr, f"Seq{seq:03d}"), f"{control}: rendered for the wrong patient or message"
        assert back.message_type == ("ADT^A01" if seq == 0 else "ADT^A08"), f"{control}: rendered as {back.message_type}"
        count[0] += 1
        if count[0] % 50 == 1:  # hl7apy takes some 25 ms a message: a sample
            assert parse_message(body.decode("utf-8").rstrip("\r"), validation_level=VALIDATION_LEVEL.STRICT).validate()
        return back.control_id

    return hl7v2


def _kith_reader():
    """Rendered KITH parses safely, validates against the national XSD (when ../shared is there) and names the patient in MsgHead."""
    from adapters.kith.safe_xml import parse_xml

    schemas = None
    if XSD_DIR.is_dir():
        from adapters.kith.xsd import schema_set

        schemas = schema_set(XSD_DIR)
    ns = {"mh": "http://www.kith.no/xmlstds/msghead/2006-05-24"}

    def kith(body, control, fnr, seq, mix):
        tree = parse_xml(body)
        if schemas is not None:
            payload = tree.find(".//mh:Content/*", ns)
            schemas.validate(tree, (ns["mh"], etree.QName(payload).namespace))
        info = tree.getroot().find("mh:MsgInfo", ns)
        assert info.findtext("mh:Patient/mh:Ident/mh:Id", namespaces=ns) == fnr, f"{control}: wrong patient"
        assert info.findtext("mh:Patient/mh:GivenName", namespaces=ns) == f"Seq{seq:03d}", f"{control}: wrong message"
        return info.findtext("mh:MsgId", namespaces=ns)

    return kith
