"""e-resept → FHIR R4: the ERM1/ERM5/ERM10/ERM96/ERM912/ERM25 mappings over the Sarepta corpus, by hand and in the record.

The corpus tests read ../shared/norsk/eksempel/eresept (skipped when ../shared is
absent) and validate against the national XSDs in ../shared/norsk/skjema.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from lxml import etree

from router.cli import main

MSGHEAD = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
URI = "urn:ietf:rfc:3986"
ATC = "urn:oid:2.16.578.1.12.4.1.1.7180"
FNR_TYPE = {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.8116", "code": "FNR", "display": "Fødselsnummer"}]}  # Volven 8116, as the number is

IN_SCOPE = {"ERM1", "ERM5", "ERM10", "ERM96", "ERM912", "ERM251", "ERM252", "ERM253"}
"""MsgInfo/Type values Helsebro maps."""

REFUSED = {
    # The KITH adapter refuses these before any mapping runs; each with the reason it gives.
    "Diverse eksempler/M96-b64.xml": "the national schema for",  # MsgHead + m96/2009-03-18 set does not compile (XSD missing)
}

BARE = {
    # e-resept payloads without a MsgHead: nothing to answer, so UnknownMessage ("not a message Helsebro reads").
    f"Diverse eksempler/{name}.xml"
    for name in (
        "ER-M14-2008-12-12-eksempel1",
        "ER-M241-2009-02-20-eksempel1",
        "ER-M242-2008-10-03-eksempel1",
        "ER-M3-2010-05-01-eksempel1",
        "ER-M41-2006-10-06-example",
        "ER-M42-2006-10-06-example",
        "ER-M5-2013-04-16-eksempel1",
        "ER-M7-2008-05-01-eksempel1",
        "ER-M91-2013-10-08-eksempel1",
        "ER-M91-2013-10-08-eksempel2",
        "ER-M92-2013-10-08-eksempel1",
        "ER-M93-2008-04-29-eksempel1",
        "ER-M94-2010-07-01-eksempel1",
    )
}

EXPECTED_COUNTS = {
    # MsgInfo/Type (root element name for bare payloads) → (examples, Bundles)
    "ERM1": (7, 7),
    "ERM10": (2, 2),
    "ERM96": (3, 2),  # + M96-b64 refused (XSD)
    "ERM251": (2, 2),
    "ERM252": (2, 2),
    "ERM912": (3, 3),  # its XSD is in the folder, though the catalog has no line for it
    # out of scope: "no mapping for …" (UnknownMessage)
    "ERM14": (2, 0),
    "ERM15": (4, 0),
    "ERM18": (1, 0),
    "ERM20": (1, 0),
    "ERM21": (1, 0),
    "ERM22": (1, 0),
    "ERM23": (1, 0),
    "ERM241": (2, 0),
    "ERM242": (2, 0),
    "ERM271": (2, 0),
    "ERM272": (2, 0),
    "ERM28": (1, 0),
    "ERM3": (2, 0),
    "ERM041": (1, 0),  # M4.1/M4.2 MsgHead examples write the type with a leading zero
    "ERM042": (1, 0),
    "ERM5": (2, 2),  # + the bare ER-M5 payload, above
    "ERM52": (2, 0),
    "ERM6": (1, 0),
    "ERM7": (2, 0),
    "ERM91": (2, 0),
    "ERM92": (2, 0),
    "ERM93": (2, 0),
    "ERM94": (2, 0),
    "ERM95": (2, 0),
    "ERM97": (2, 0),
    "ERM98": (2, 0),
    "ERM911": (3, 0),
    "(bare payload)": (13, 0),
}


def _corpus(shared_dir: Path) -> Path:
    folder = shared_dir / "norsk" / "eksempel" / "eresept"
    if not folder.is_dir():
        pytest.skip("../shared/norsk/eksempel/eresept is not there")
    return folder


def _type_of(path: Path) -> str:
    root = etree.parse(str(path)).getroot()
    if root.tag != f"{MSGHEAD}MsgHead":
        return "(bare payload)"
    return root.find(f"{MSGHEAD}MsgInfo/{MSGHEAD}Type").get("V")


def _convert(monkeypatch, shared_dir: Path, *files: Path) -> list[dict]:
    """Run `helsebro convert` on files; return one document per file."""
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
    conv = Converter(load_settings())
    out = []
    for f in files:
        (r,) = conv.convert(f.read_bytes())
        out.append(r.bundle if r.ok else r.outcome())
    return out


def _entries(bundle: dict, rtype: str) -> list[dict]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


@pytest.mark.corpus
class TestEreseptCorpus:
    def test_every_example_is_a_valid_bundle_or_an_expected_refusal(self, shared_dir, tmp_path, monkeypatch, capsys):
        """convert over the whole e-resept folder: no crash; Bundles valid R4; refusals only where listed."""
        from fhir.resources.R4B.bundle import Bundle

        folder = _corpus(shared_dir)
        monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
        code = main(["convert", "--out", str(tmp_path), str(folder)])
        assert code in (0, 1)  # 1: some messages were refused, as listed below
        counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        files = sorted(f for f in folder.rglob("*.xml"))
        assert len(files) == 80
        for f in files:
            rel = f.relative_to(folder).as_posix()
            out = tmp_path / (rel + ".ndjson")
            assert out.exists(), f"no output for {rel}"
            docs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            assert len(docs) == 1, rel
            doc = docs[0]
            kind = _type_of(f)
            counts[kind][0] += 1
            if doc["resourceType"] == "Bundle":
                counts[kind][1] += 1
                assert kind in IN_SCOPE, f"{rel}: {kind} is out of scope but was mapped"
                Bundle.model_validate(doc)
                # both MsgHead parties are in the Bundle under their HER-ids (receiver: Reseptformidleren, a prescriber, a pharmacy)
                her_ids = {i["value"] for e in _entries(doc, "Organization") for i in e["resource"].get("identifier", []) if i["system"] == "urn:oid:2.16.578.1.12.4.1.2"}
                root = etree.parse(str(f)).getroot()
                for party in ("Sender", "Receiver"):
                    ids = root.xpath(f"m:MsgInfo/m:{party}/m:Organisation/m:Ident[m:TypeId/@V = 'HER']/m:Id/text()", namespaces={"m": MSGHEAD[1:-1]})
                    assert all(i.strip() in her_ids for i in ids), f"{rel}: the {party.lower()}'s HER-id {ids} is not in the Bundle"
                continue
            reason = doc["issue"][0].get("diagnostics", "")
            if rel in REFUSED:
                assert REFUSED[rel] in reason, f"{rel}: {reason}"
            elif rel in BARE:
                assert "is not a message Helsebro reads" in reason, f"{rel}: {reason}"
            else:
                assert kind not in IN_SCOPE, f"{rel} ({kind}) should map, but: {reason}"
                assert reason.startswith("no mapping for "), f"{rel}: {reason}"
        assert {k: tuple(v) for k, v in counts.items()} == EXPECTED_COUNTS

    def test_m1_by_hand(self, shared_dir, monkeypatch):
        """Lege endrer …/M1 Resept.xml: MsgId ef36537f-… is the ReseptId; Ibux 400 mg, ATC M01AE01, varenr 154021."""
        folder = _corpus(shared_dir)
        (bundle,) = _convert(monkeypatch, shared_dir, folder / "Lege endrer på legemiddelbehandling" / "M1 Resept.xml")
        (mr_entry,) = _entries(bundle, "MedicationRequest")
        mr = mr_entry["resource"]
        assert mr["identifier"] == [{"system": URI, "value": "urn:uuid:ef36537f-563b-4fb1-b93d-1681170f9817"}]
        assert mr_entry["request"]["method"] == "PUT"
        assert mr["status"] == "active" and mr["intent"] == "order"
        med = mr["medicationCodeableConcept"]
        assert {"system": ATC, "code": "M01AE01", "display": "Ibuprofen"} in med["coding"]
        assert {"system": "urn:helsebro:fest:varenummer", "code": "154021", "display": "Ibux Tab 400 mg"} in med["coding"]
        assert med["text"] == "Ibux Tab 400 mg"
        assert mr["authoredOn"] == "2019-07-17"
        assert mr["dosageInstruction"][0]["text"].startswith("1 tablett morgen, 1 tablett midt på dagen")
        assert mr["dispenseRequest"]["validityPeriod"] == {"start": "2019-07-17", "end": "2020-07-16"}
        assert mr["dispenseRequest"]["numberOfRepeatsAllowed"] == 0
        assert mr["dispenseRequest"]["quantity"] == {"value": 1, "unit": "pakning"}
        # subject: the patient by FNR; requester: the prescriber's role (HPR) at the HER-identified office
        by_url = {e["fullUrl"]: e for e in bundle["entry"]}
        patient = by_url[mr["subject"]["reference"]]
        assert patient["resource"]["identifier"] == [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "21014605158", "type": FNR_TYPE}]
        assert patient["request"]["method"] == "POST"  # write: create
        role = by_url[mr["requester"]["reference"]]["resource"]
        practitioner = by_url[role["practitioner"]["reference"]]["resource"]
        organization = by_url[role["organization"]["reference"]]["resource"]
        assert practitioner["identifier"] == [{"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "431002737"}]
        assert {"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "8095068"} in organization["identifier"]
        assert {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "100169444"} in organization["identifier"]

    @pytest.mark.parametrize(
        ("m10", "m1"),
        [
            ("Ekspedering og utlevering/M10 Utleveringsrapport.xml", "Rekvirent rekvirerer kun resept og leverer ikke PLL/M1 Resept.xml"),
            ("Søknad om godkjenningsfritak til Legemiddelverket/M10 Utleveringsrapport.xml", "Søknad om godkjenningsfritak til Legemiddelverket/M1 Resept_apotek sender søknad.xml"),
        ],
    )
    def test_m10_dispense_points_at_its_m1_prescription(self, shared_dir, monkeypatch, m10, m1):
        """The M10's authorizingPrescription is the very MedicationRequest the M1 writes (same identifier, same id)."""
        folder = _corpus(shared_dir)
        dispense_bundle, prescription_bundle = _convert(monkeypatch, shared_dir, folder / m10, folder / m1)
        (disp,) = _entries(dispense_bundle, "MedicationDispense")
        d = disp["resource"]
        assert d["status"] == "completed"
        assert any(c["system"] == ATC for c in d["medicationCodeableConcept"]["coding"])
        assert any(c["system"] == "urn:helsebro:fest:varenummer" for c in d["medicationCodeableConcept"]["coding"])
        by_url = {e["fullUrl"]: e for e in dispense_bundle["entry"]}
        (ref,) = d["authorizingPrescription"]
        placeholder = by_url[ref["reference"]]
        assert placeholder["request"]["method"] == "POST"  # created only when the M1 is not stored: never overwrites it
        (m1_entry,) = _entries(prescription_bundle, "MedicationRequest")
        assert placeholder["resource"]["identifier"] == m1_entry["resource"]["identifier"]
        assert placeholder["resource"]["id"] == m1_entry["resource"]["id"]
        pharmacy = by_url[d["performer"][0]["actor"]["reference"]]["resource"]
        assert pharmacy["resourceType"] == "Organization"
        assert any(i["system"] == "urn:oid:2.16.578.1.12.4.1.2" for i in pharmacy["identifier"])

    def test_m251_statements_are_based_on_prescriptions(self, shared_dir, monkeypatch):
        """M25.1 'Avsluttet behandling': one MedicationStatement per LIB entry, basedOn the ReseptId's MedicationRequest."""
        folder = _corpus(shared_dir) / "Lege endrer på legemiddelbehandling"
        lib, m1 = _convert(monkeypatch, shared_dir, folder / "M251 PLL - Avsluttet behandling.xml", folder / "M1 Resept.xml")
        statements = [e["resource"] for e in _entries(lib, "MedicationStatement")]
        assert len(statements) == 5
        assert sorted(s["status"] for s in statements) == ["active", "active", "active", "stopped", "stopped"]
        by_url = {e["fullUrl"]: e["resource"] for e in lib["entry"]}
        based_on = {by_url[s["basedOn"][0]["reference"]]["identifier"][0]["value"] for s in statements}
        assert "urn:uuid:ef36537f-563b-4fb1-b93d-1681170f9817" in based_on  # the M1 example's prescription
        (m1_mr,) = _entries(m1, "MedicationRequest")
        assert any(u.endswith(m1_mr["resource"]["id"]) for s in statements for u in [s["basedOn"][0]["reference"]])

    def test_m96_is_a_list_of_prescriptions_by_resept_id(self, shared_dir, monkeypatch):
        """M9.6: a snapshot List by ReseptId, flagged with the 7408 status, whose subject is the patient of the M1s it carries."""
        folder = _corpus(shared_dir) / "Lege endrer på legemiddelbehandling"
        (bundle,) = _convert(monkeypatch, shared_dir, folder / "M96 Reseptliste rekvirent.xml")
        (lst,) = [e["resource"] for e in _entries(bundle, "List")]
        assert len(lst["entry"]) == 5
        withdrawn = [e for e in lst["entry"] if e["flag"]["coding"][0]["code"] == "T"]
        assert withdrawn[0]["item"]["identifier"] == {"system": URI, "value": "urn:uuid:c2883dc2-8eef-4b8e-a80f-167f858425f7"}
        assert withdrawn[0]["item"]["display"] == "Cosylan Mikst 1,7 mg/ml"
        (patient,) = _entries(bundle, "Patient")
        assert lst["subject"] == {"reference": patient["fullUrl"]}
        assert patient["resource"]["identifier"] == [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "21014605158", "type": FNR_TYPE}]

    def test_m912_carries_its_m251_list_of_medicines_in_use(self, shared_dir, monkeypatch):
        """M9.12's VarerIBrukB64 is a whole M25.1: its MedicationStatements join the Bundle, about the M9.12's patient."""
        folder = _corpus(shared_dir) / "Påmelding multidose"
        (bundle,) = _convert(monkeypatch, shared_dir, folder / "M912 Nedlasting av PLL apotek.xml")
        statements = [e["resource"] for e in _entries(bundle, "MedicationStatement")]
        assert len(statements) == 5
        (patient,) = _entries(bundle, "Patient")
        assert {s["subject"]["reference"] for s in statements} == {patient["fullUrl"]}
        assert {s["meta"]["tag"][0]["display"] for s in statements} == {"mappings/kith/messages/ERM25.yaml"}


class TestEreseptFixtures:
    def test_cases_pass(self):
        """The synthetic ERM* cases under mappings/kith/messages/*.cases convert to their reviewed output."""
        from router.mapping.fixtures import find_cases, run_case
        from router.pipeline.convert import Converter
        from router.settings import load_settings

        settings = load_settings()
        root = settings.mappings_dir / "kith"
        conv = Converter(settings.model_copy(update={"xsd_dir": None}))
        cases = [(s, e) for s, e in find_cases(root) if s.parent.name.startswith("ERM")]
        assert {s.parent.name for s, _ in cases} == {"ERM1.cases", "ERM5.cases", "ERM10.cases", "ERM96.cases", "ERM912.cases", "ERM25.cases"}
        for source, expected in cases:
            res = run_case(source, expected, lambda data: [r.bundle if r.ok else r.outcome() for r in conv.convert(data)], update=False, display=str)
            assert res.passed, f"{res.name}: {res.detail}"


KNOWN_INVALID: dict[str, str] = {}
"""KITH case inputs (`<message>/<case>`) known not to pass the national XSDs, each with the reason it is kept."""


@pytest.mark.corpus
class TestKithFixturesAgainstTheNationalSchemas:
    def test_every_kith_case_input_validates(self, shared_dir):
        """Every KITH case input (mappings/kith/messages/*.cases), the messages it carries included, passes the national
        XSDs (../shared/norsk/skjema) and, validated, still converts to its reviewed output."""
        from router.mapping.fixtures import find_cases, run_case
        from router.pipeline.convert import Converter
        from router.settings import load_settings

        schemas = shared_dir / "norsk" / "skjema"
        if not (schemas / "ehelseCatalog.xml").is_file():
            pytest.skip("../shared/norsk/skjema (the national XSDs) is not there")
        settings = load_settings()
        conv = Converter(settings.model_copy(update={"xsd_dir": schemas}))
        cases = find_cases(settings.mappings_dir / "kith")
        assert cases
        failed = []
        for source, expected in cases:
            res = run_case(source, expected, lambda data: [r.bundle if r.ok else r.outcome() for r in conv.convert(data)], update=False, display=str)
            if not res.passed and res.name not in KNOWN_INVALID:
                failed.append(f"{res.name}: {res.detail[:400]}")
        assert not failed, "\n".join(failed)


class TestOverrideKey:
    @pytest.mark.parametrize(
        ("old", "new", "says", "at"),
        [
            ("    alone: patch\n", "    alone: patch\n    kind: x\n", "unknown key 'kind' in embedded.override", "    kind:"),
            ("    type: MedicationRequest\n", "    type: Medisinering\n", "must name a FHIR resource type", "    type:"),
            ("    elements: [status, statusReason]\n", "    elements: [status, reseptStatus]\n", "top-level elements of MedicationRequest", "    elements:"),
            ("    elements: [status, statusReason]\n", "    elements: [identifier]\n", "other than its identifier", "    elements:"),
            ("    alone: patch\n", "    alone: forget\n", "keep (the default", "    alone:"),
            ("    elements: [status, statusReason]\n", "    elements: [status, note]\n", "alone: patch needs elements of MedicationRequest that do not repeat", "    elements:"),
        ],
        ids=["unknown-key", "type", "element", "identity", "alone", "patch-repeating"],
    )
    def test_errors_point_at_the_line(self, tmp_path, old, new, says, at):
        """A wrong `embedded.override:` (unknown key, a type FHIR lacks, an element the type lacks or its identity, an
        unknown `alone:`, a repeating element to patch) refuses the mappings at load with file:line."""
        _refused_at_load(tmp_path, "ERM96", old, new, at, says)


CASES = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages"
M1 = CASES / "ERM1.cases" / "resept_pakning.xml"
"""Our M1: ReseptId 5b1f0c1e-…-0a1b2c3d4e01 (its MsgId), Syntetisk Cetirizin Tab 10 mg, for patient 15866112379."""
M5 = CASES / "ERM5.cases" / "tilbakekalling.xml"
"""Our M5: withdraws that prescription, 7500 2 Seponering, Merknad "Behandlingen avsluttes"."""
M96 = CASES / "ERM96.cases" / "reseptliste.xml"
"""Our M9.6: carries that M1 (listed U) and lists 8e4c3f41-…-3d4e5f6a7b04 as T tilbakekalt without carrying it."""
RESEPT_ID = "5b1f0c1e-2d3a-4c4b-9e5f-0a1b2c3d4e01"
LISTED_ONLY = "8e4c3f41-5a6d-4f7e-a182-3d4e5f6a7b04"
FNR_A = "15866112379"
"""The patient of our M1, M5 and M9.6 (synthetic)."""
FNR_B = "01015000232"
"""Another patient: the test number of HIS 1001 §4.1 (FACTS §6.3)."""


def _apprec(body: bytes) -> tuple[str | None, str | None]:
    """(Status/@V, Error/@V) of an AppRec, whichever version (e-resept is answered with AppRec 1.0)."""
    root = etree.fromstring(body)
    found = {etree.QName(e).localname: e.get("V") for e in root.iter() if isinstance(e.tag, str)}
    return found.get("Status"), found.get("Error")


def _refused_as_another_patients(settings, apprec_queue: str) -> None:
    """The message is dead-lettered at apply because a prescription it changes is another patient's, and answered AppRec X99."""
    from router.testing import drain_queue

    [(headers, _)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
    assert headers["x-helsebro-stage"] == "apply"
    assert headers["x-helsebro-reason"] == "the MedicationRequest this message changes belongs to another patient"
    [(_, body)] = drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.{apprec_queue}")
    assert _apprec(body) == ("2", "X99")


def _prescription(record, resept_id: str) -> dict | None:
    found = record.search("MedicationRequest", {"identifier": f"{URI}|urn:uuid:{resept_id}"})
    assert len(found) <= 1
    return found[0] if found else None


def _published(settings, handle, *bodies: bytes, applied: int = 0, dead: int = 0) -> None:
    from router.testing import publish, wait_until

    publish(settings, list(bodies))
    wait_until(lambda: handle.stats.applied + handle.stats.dead_lettered >= applied + dead, timeout=30, what="settled")
    assert (handle.stats.applied, handle.stats.dead_lettered) == (applied, dead)


class TestWithdrawalsReachTheRecord:
    """M1, then M5 or M9.6, through the queue into the record (the engine on the embedded broker and SQLite)."""

    def test_our_m5_is_valid_against_the_national_schema(self, shared_dir):
        """The synthetic M5 case passes the national XSDs (MsgHead and m5/2013-04-16)."""
        from adapters.kith import read_message, schema_set

        schemas = shared_dir / "norsk" / "skjema"
        if not (schemas / "ehelseCatalog.xml").is_file():
            pytest.skip("../shared/norsk/skjema (the national XSDs) is not there")
        assert read_message(M5.read_bytes(), schemas=schema_set(schemas)).error is None

    def test_an_m5_stops_the_prescription_its_m1_stored_and_keeps_the_rest(self, engine):
        """M1 then M5: one MedicationRequest, now stopped with the M5's reason, its medication, dosage and prescriber as
        the M1 stored them; a new version whose provenance names both mappings; the M5's sender gets a positive AppRec."""
        from adapters.fhir.record import open_record
        from router.testing import drain_queue

        settings, handle = engine
        _published(settings, handle, M1.read_bytes(), applied=1)
        record = open_record(settings)
        try:
            before = _prescription(record, RESEPT_ID)
            assert before["status"] == "active"
            drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233")
            _published(settings, handle, M5.read_bytes(), applied=2)
            after = _prescription(record, RESEPT_ID)
        finally:
            record.close()
        assert after["id"] == before["id"] and after["meta"]["versionId"] == "2"
        assert after["status"] == "stopped"
        assert after["statusReason"] == {
            "coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.7500", "code": "2", "display": "Seponering"}],
            "text": "Behandlingen avsluttes",
        }
        unchanged = ("status", "statusReason", "meta")
        assert {k: v for k, v in after.items() if k not in unchanged} == {k: v for k, v in before.items() if k not in unchanged}
        assert after["medicationCodeableConcept"]["text"] == "Syntetisk Cetirizin Tab 10 mg" and after["dosageInstruction"]
        assert [t["display"] for t in after["meta"]["tag"]] == ["mappings/kith/messages/ERM1.yaml", "mappings/kith/messages/ERM5.yaml"]
        [(_, body)] = drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233")
        assert _apprec(body) == ("1", None)

    def test_an_annulling_m10_retires_the_dispensing_it_annuls(self, engine):
        """M10, then an M10 annulling it (Annullering true, AnnulleringsId = the first M10's MsgId): the one
        MedicationDispense the record holds is now entered-in-error, product and quantity as the first stored them;
        the annulment writes no dispensing of its own."""
        from adapters.fhir.record import open_record

        m10 = (Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "ERM10.cases" / "utlevering.xml").read_text("utf-8")
        first_id = "6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f02"
        annul = m10.replace(first_id, "6c2a1d2f-3e4b-4d5c-8f60-1b2c3d4e5f03").replace(
            "<Annullering>false</Annullering>", f"<Annullering>true</Annullering><AnnulleringsId>{first_id}</AnnulleringsId>")
        assert annul.count("AnnulleringsId") == 2
        settings, handle = engine
        _published(settings, handle, m10.encode("utf-8"), applied=1)
        record = open_record(settings)
        try:
            [before] = record.search("MedicationDispense", {})
            assert before["status"] == "completed"
            _published(settings, handle, annul.encode("utf-8"), applied=2)
            [after] = record.search("MedicationDispense", {})
        finally:
            record.close()
        assert after["id"] == before["id"] and after["status"] == "entered-in-error"
        assert {k: v for k, v in after.items() if k not in ("status", "meta")} == {k: v for k, v in before.items() if k not in ("status", "meta")}

    def test_an_m5_for_a_prescription_the_record_lacks_is_refused(self, engine):
        """An M5 whose ReseptId the record does not hold writes nothing (not even its patient), is dead-lettered at the
        apply stage with its reason, and its sender gets a negative AppRec (X99): a stopped stub would be overwritten
        whole by the M1 arriving later."""
        from adapters.fhir.record import open_record
        from router.testing import drain_queue

        settings, handle = engine
        _published(settings, handle, M5.read_bytes(), dead=1)
        [(headers, _)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert headers["x-helsebro-stage"] == "apply"
        assert headers["x-helsebro-reason"] == "the MedicationRequest this message changes is not in the record"
        [(_, body)] = drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233")
        assert _apprec(body) == ("2", "X99")
        record = open_record(settings)
        try:
            assert record.search("MedicationRequest", {}) == [] and record.search("Patient", {}) == []
        finally:
            record.close()

    def test_an_m5_naming_another_patient_is_refused(self, engine):
        """M1 for patient A, then an M5 naming patient B with A's ReseptId: A's prescription stays active, nothing of the
        M5 is written (not even B), it is dead-lettered at apply saying whose the prescription is, and its sender gets a
        negative AppRec (X99) (patient safety: a ReseptId must not stop another patient's prescription)."""
        from adapters.fhir.record import open_record
        from router.testing import drain_queue

        settings, handle = engine
        other = M5.read_bytes().replace(f"<Id>{FNR_A}</Id>".encode(), f"<Id>{FNR_B}</Id>".encode())
        assert other != M5.read_bytes()
        _published(settings, handle, M1.read_bytes(), applied=1)
        drain_queue(settings, f"{settings.engine.broker.names.apprec_prefix}.112233")
        _published(settings, handle, other, applied=1, dead=1)
        _refused_as_another_patients(settings, "112233")
        record = open_record(settings)
        try:
            kept = _prescription(record, RESEPT_ID)
            patients = record.search("Patient", {})
        finally:
            record.close()
        assert kept["status"] == "active" and "statusReason" not in kept and kept["meta"]["versionId"] == "1"
        assert [p["identifier"][0]["value"] for p in patients] == [FNR_A]

    def test_an_m96_listing_another_patients_prescription_is_refused(self, engine):
        """An M1 for 8e4c3f41 of patient B is stored; an M9.6 of patient A lists it as T tilbakekalt without carrying it:
        not skipped as absent, the M9.6 is refused and B's prescription stays active."""
        from adapters.fhir.record import open_record
        from router.testing import drain_queue

        settings, handle = engine
        other = M1.read_bytes().replace(f"<MsgId>{RESEPT_ID}</MsgId>".encode(), f"<MsgId>{LISTED_ONLY}</MsgId>".encode())
        other = other.replace(f"<Id>{FNR_A}</Id>".encode(), f"<Id>{FNR_B}</Id>".encode())
        _published(settings, handle, other, applied=1)
        _published(settings, handle, M96.read_bytes(), applied=1, dead=1)
        [(headers, _)] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert headers["x-helsebro-reason"] == "the MedicationRequest this message changes belongs to another patient"
        record = open_record(settings)
        try:
            kept, carried = _prescription(record, LISTED_ONLY), _prescription(record, RESEPT_ID)
        finally:
            record.close()
        assert kept["status"] == "active" and kept["meta"]["versionId"] == "1"
        assert carried is None

    def test_an_m96_entry_withdrawn_without_its_m1_stops_the_stored_prescription(self, engine):
        """An M1 for 8e4c3f41 is stored; the M9.6 lists it as T tilbakekalt without carrying it: the stored prescription
        becomes stopped, its medication kept, while the M1 the list carries (U) is written active."""
        from adapters.fhir.record import open_record

        settings, handle = engine
        other = M1.read_bytes().replace(f"<MsgId>{RESEPT_ID}</MsgId>".encode(), f"<MsgId>{LISTED_ONLY}</MsgId>".encode())
        assert other != M1.read_bytes()
        _published(settings, handle, other, applied=1)
        _published(settings, handle, M96.read_bytes(), applied=2)
        record = open_record(settings)
        try:
            listed_only, carried = _prescription(record, LISTED_ONLY), _prescription(record, RESEPT_ID)
        finally:
            record.close()
        assert listed_only["status"] == "stopped" and "statusReason" not in listed_only
        assert listed_only["medicationCodeableConcept"]["text"] == "Syntetisk Cetirizin Tab 10 mg"
        assert listed_only["meta"]["versionId"] == "2"
        assert carried["status"] == "active" and carried["meta"]["versionId"] == "1"

    def test_an_m96_entry_whose_prescription_the_record_lacks_changes_nothing(self, engine):
        """The same M9.6 on an empty record: applied; the entry without an M1 anywhere writes no MedicationRequest."""
        from adapters.fhir.record import open_record

        settings, handle = engine
        _published(settings, handle, M96.read_bytes(), applied=1)
        record = open_record(settings)
        try:
            assert _prescription(record, LISTED_ONLY) is None
            assert _prescription(record, RESEPT_ID)["status"] == "active"
        finally:
            record.close()


    def test_an_m96_naming_another_patient_without_m1s_does_not_change_her_prescription(self, engine):
        """An M1 of patient A is stored under 8e4c3f41; an M9.6 whose MsgHead names patient B and carries no M1 lists it as
        T tilbakekalt: its PATCH names B as owner, so the M9.6 is refused whole (dead letter, AppRec X99) and A's
        prescription stays active (patient safety: without the MsgHead patient it was found by ReseptId alone)."""
        from adapters.fhir.record import open_record

        settings, handle = engine
        stored = M1.read_bytes().replace(f"<MsgId>{RESEPT_ID}</MsgId>".encode(), f"<MsgId>{LISTED_ONLY}</MsgId>".encode())
        _published(settings, handle, stored, applied=1)
        _published(settings, handle, _m96(patient=FNR_B, carried=False), applied=1, dead=1)
        _refused_as_another_patients(settings, "445566")
        record = open_record(settings)
        try:
            kept = _prescription(record, LISTED_ONLY)
            patients = [p["identifier"][0]["value"] for p in record.search("Patient", {})]
        finally:
            record.close()
        assert kept["status"] == "active" and kept["meta"]["versionId"] == "1"
        assert patients == [FNR_A]

    def test_an_m96_naming_its_patient_without_m1s_stops_her_prescription(self, engine):
        """The same M9.6 naming patient A in its MsgHead: her stored prescription becomes stopped."""
        from adapters.fhir.record import open_record

        settings, handle = engine
        stored = M1.read_bytes().replace(f"<MsgId>{RESEPT_ID}</MsgId>".encode(), f"<MsgId>{LISTED_ONLY}</MsgId>".encode())
        _published(settings, handle, stored, applied=1)
        _published(settings, handle, _m96(patient=FNR_A, carried=False), applied=2)
        record = open_record(settings)
        try:
            stopped = _prescription(record, LISTED_ONLY)
        finally:
            record.close()
        assert stopped["status"] == "stopped" and stopped["meta"]["versionId"] == "2"

    def test_an_m96_with_no_patient_anywhere_is_refused(self, converter):
        """Neither a MsgHead patient nor a carried M1: its entries would be found by ReseptId alone, with no owner to check,
        so the message is refused at conversion (its MedicationRequest needs a subject); naming one, it converts, each
        PATCH with that patient as its subject condition."""
        (result,) = converter.convert(_m96(carried=False))
        assert not result.ok
        assert result.error.reason == "MedicationRequest.subject is required, but the patient it refers to is not in this message"
        (result,) = converter.convert(_m96(patient=FNR_A, carried=False))
        assert result.ok, result.outcome()
        [patient] = _entries(result.bundle, "Patient")
        patches = _entries(result.bundle, "Parameters")
        assert len(patches) == 2 and all(p["request"]["url"].endswith(f"&subject={patient['fullUrl']}") for p in patches)

    def test_an_m96_whose_msghead_names_another_patient_than_its_m1s_is_refused(self, converter):
        """A MsgHead patient other than the carried M1's: the list is not one patient's, refused at conversion."""
        (result,) = converter.convert(_m96(patient=FNR_B))
        assert not result.ok
        assert result.error.reason == "the embedded message is about another patient than the message that carries it"

    def test_an_m96_whose_msghead_names_its_m1s_patient_writes_her_once(self, converter):
        """The same patient in the MsgHead and the carried M1: one Patient entry, the list's and the PATCH's subject; the
        MsgHead's Patient is read (not reported unmapped)."""
        (result,) = converter.convert(_m96(patient=FNR_A))
        assert result.ok, result.outcome()
        assert not [u for u in result.unmapped if "/MsgInfo/Patient" in u]
        [patient] = _entries(result.bundle, "Patient")
        [listed] = _entries(result.bundle, "List")
        [patch] = _entries(result.bundle, "Parameters")
        assert listed["resource"]["subject"] == {"reference": patient["fullUrl"]}
        assert patch["request"]["url"].endswith(f"&subject={patient['fullUrl']}")


def _m96(*, patient: str | None = None, carried: bool = True) -> bytes:
    """Our M9.6, its MsgHead naming *patient* (an FNR) when given, with or without the M1 it carries."""
    text = M96.read_text(encoding="utf-8")
    if patient is not None:
        named = (f'    <Patient>\n      <FamilyName>Syntetisk</FamilyName>\n      <GivenName>Pasient</GivenName>\n'
                 f'      <Ident><Id>{patient}</Id><TypeId V="FNR" DN="Fødselsnummer" S="2.16.578.1.12.4.1.1.8116"/></Ident>\n'
                 f'    </Patient>\n  </MsgInfo>')
        text = text.replace("  </MsgInfo>", named, 1)
    if not carried:
        cut = text.index("  <Document>", text.index("</M96>"))
        text = text[:cut] + "</MsgHead>\n"
    return text.encode("utf-8")


class TestPatchKey:
    @pytest.mark.parametrize(
        ("old", "new", "says", "at"),
        [
            ("      absent: refuse\n", "      absent: maybe\n", "patch.absent is refuse", "      absent:"),
            ("      elements: [status, statusReason]\n", "      elements: [status, note]\n", "do not repeat", "      elements:"),
            ("      elements: [status, statusReason]\n", "      elements: [identifier]\n", "other than its identifier", "      elements:"),
            ("    write: patch\n", "    write: update\n", "patch: goes with write: patch", "    patch:"),
            ("    patch:\n      note: an M5 carries the ReseptId and why, nothing else of the prescription\n      elements: [status, statusReason]\n      absent: refuse\n",
             "", "write: patch needs patch:", "    write: patch"),
            ("      absent: refuse\n", "      absent: refuse\n      when: x\n", "unknown key 'when' in patch", "      when:"),
        ],
        ids=["absent", "repeating", "identity", "without-write", "without-patch", "unknown-key"],
    )
    def test_errors_point_at_the_line(self, tmp_path, old, new, says, at):
        """A wrong `write: patch` (an unknown `absent:`, a repeating element or the identity, `patch:` without it, it
        without `patch:`, an unknown key) refuses the mappings at load with file:line."""
        _refused_at_load(tmp_path, "ERM5", old, new, at, says)

    def test_an_hl7v2_mapping_can_patch(self, tmp_path, monkeypatch, capsys):
        """`write: patch` in an HL7 v2 mapping makes the same PATCH entry as in an XML one: the engine builds it, its
        condition naming the resource's identity and its subject (the Bundle's Patient), and no whole resource is written."""
        import shutil

        root = tmp_path / "mappings"
        shutil.copytree(Path(__file__).resolve().parents[2] / "mappings" / "hl7v2", root / "hl7v2")
        path = root / "hl7v2" / "messages" / "ADT_A01.yaml"
        text = path.read_text("utf-8")
        entry = "  - name: encounter\n    use: PV1.Encounter\n"
        assert entry in text
        path.write_text(text.replace(entry, entry + "    write: patch\n    patch: {elements: [status], absent: skip}\n", 1), "utf-8")
        monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(root))
        assert main(["convert", str(root / "hl7v2" / "messages" / "ADT_A01.cases" / "admit_fnr.hl7")]) == 0
        [bundle] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
        patient = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        [patch] = [e for e in bundle["entry"] if e["request"]["method"] == "PATCH"]
        assert patch["request"]["url"] == f"Encounter?identifier=urn:oid:2.16.578.1.12.4.1.7.3.2.1|V25-0001&subject={patient}"
        assert patch["request"]["extension"] == [{"url": "urn:helsebro:patch-absent", "valueCode": "skip"}]
        assert "fullUrl" not in patch and patch["resource"]["resourceType"] == "Parameters"
        assert [p["part"][0]["valueCode"] for p in patch["resource"]["parameter"]] == ["delete", "add"]
        assert not any(e["resource"]["resourceType"] == "Encounter" for e in bundle["entry"])


def _refused_at_load(tmp_path: Path, message: str, old: str, new: str, at: str, says: str) -> None:
    """Load the KITH mappings with *old* replaced by *new* in messages/<message>.yaml: refused, naming the line of *at*."""
    import shutil

    from adapters.kith.paths import path_compiler
    from router.errors import MappingError
    from router.mapping import MappingSet
    from router.mapping.mapping_set import load_namespaces

    root = tmp_path / "kith"
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings" / "kith", root, ignore=shutil.ignore_patterns("*.cases"))
    path = root / "messages" / f"{message}.yaml"
    text = path.read_text("utf-8")
    assert old in text, old
    text = text.replace(old, new, 1)
    path.write_text(text, "utf-8")
    line = text[: text.index(at)].count("\n") + 1
    with pytest.raises(MappingError) as err:
        MappingSet.load(root, path_compiler(load_namespaces(root / "namespaces.yaml")))
    assert says in err.value.reason
    assert err.value.file.endswith(f"messages/{message}.yaml") and err.value.line == line
