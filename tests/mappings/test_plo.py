"""PLO 1.5/1.6 → FHIR R4: the national examples convert, and N → M → C of one document lands in the record as one document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.fhir.record import open_record
from router.cli import main
from router.mapping.functions import uuid5_id
from router.testing import publish, wait_until

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "plo_cases"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HER = "urn:oid:2.16.578.1.12.4.1.2"
IDENTITY = "urn:helsebro:identity"
PLO_MAPPINGS = (
    "PLO_Innleggelsesrapport",
    "PLO_Utskrivningsrapport",
    "PLO_HelseopplysningerVedSoknad",
    "PLO_HelseopplysningerTilLege",
    "PLO_MedisinskeOpplysninger",
    "PLO_OrienteringOmTjenestetilbud",
    "PLO_Pasientlogistikk",
)
# National examples that are themselves invalid or unsupported, with the reason. None today:
# all 44 PLO 1.5/1.6 examples validate against the national XSDs and convert.
REFUSED: dict[str, str] = {}


def _convert(capsys, monkeypatch, shared: Path, *paths: Path) -> tuple[int, list[dict]]:
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared / "norsk" / "skjema"))
    code = main(["convert", *map(str, paths)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _of(doc: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in doc["entry"] if e.get("resource", {}).get("resourceType") == kind]


def _document_identity(conversation_id: str) -> str:
    """The identifier value of the document's Communication: the dialog id, hashed as `identity: fallback:` does."""
    return f"{IDENTITY}|{uuid5_id('Communication', conversation_id)}"


class TestNationalExamples:
    @pytest.mark.corpus
    def test_every_example_converts_to_a_valid_bundle(self, shared_dir, capsys, monkeypatch):
        """All PLO 1.5/1.6 examples (N, M and C) give valid Bundles, one document Communication each; no crash."""
        folder = shared_dir / "norsk" / "eksempel" / "plo"
        files = sorted(folder.rglob("*.xml"))
        code, docs = _convert(capsys, monkeypatch, shared_dir, folder)
        assert len(docs) == len(files) == 44
        refused = [d for d in docs if d["resourceType"] == "OperationOutcome"]
        assert len(refused) == len(REFUSED), [d["issue"] for d in refused]
        assert code == (1 if REFUSED else 0)
        for doc in docs:
            if doc["resourceType"] != "Bundle":
                continue
            Bundle.model_validate(doc)
            assert doc["meta"]["tag"][0]["code"].split("@")[0] in PLO_MAPPINGS
            assert len(_of(doc, "Communication")) == 1
            [patient] = _of(doc, "Patient")
            assert patient["identifier"][0]["system"] == FNR
            orgs = _of(doc, "Organization")
            assert orgs and all(o["identifier"][0]["system"] == HER for o in orgs)

    @pytest.mark.corpus
    def test_innleggelsesrapport_content(self, shared_dir, capsys, monkeypatch):
        """Diagnosis, medicines, CAVE, IPLOS function, services and next of kin of the 1.6 Innleggelsesrapport."""
        path = shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        by_url = {e["fullUrl"]: e for e in doc["entry"]}
        [comm] = _of(doc, "Communication")
        assert by_url[comm["sender"]["reference"]]["resource"]["identifier"][0] == {"system": HER, "value": "5078"}
        assert {by_url[r["reference"]]["resource"]["identifier"][0]["value"] for r in comm["recipient"]} == {"59", "91090"}
        [condition] = _of(doc, "Condition")
        assert condition["code"]["coding"][0] == {"system": "urn:oid:2.16.578.1.12.4.1.1.7110", "code": "I50", "display": "Hjertesvikt"}
        assert {m["medicationCodeableConcept"]["text"].split()[0] for m in _of(doc, "MedicationStatement")} == {"Burinex", "Triatec", "Lipitor", "Imdur", "Paracetamol"}
        [allergy] = _of(doc, "AllergyIntolerance")
        assert allergy["code"]["text"].startswith("Morfin")
        observations = _of(doc, "Observation")
        iplos = [o for o in observations if o["code"].get("coding", [{}])[0].get("system") == "urn:oid:2.16.578.1.12.4.1.1.9111"]
        social = [o for o in observations if [c["code"] for k in o.get("category", []) for c in k["coding"]] == ["social-history"]]
        aids = sorted(o["code"]["text"] for o in observations if o not in iplos and o not in social)
        assert len(iplos) == 17 and aids == ["Faste hjelpemidler (briller, hørselshjelpemiddel, pacemaker)"] * 2 + ["Krykker"]
        assert [(o["code"]["text"], "valueBoolean" in o) for o in social] == [("Bor alene", True)]
        assert len(_of(doc, "RelatedPerson")) == 2 and len(_of(doc, "EpisodeOfCare")) == 1
        [practitioner] = _of(doc, "Practitioner")
        assert practitioner["identifier"][0] == {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9876543"}
        # Parties and the patient are created only when missing; the document's own resources replace.
        methods = {e["resource"]["resourceType"]: e["request"]["method"] for e in doc["entry"]}
        assert methods["Patient"] == methods["Organization"] == methods["Practitioner"] == "POST"
        assert methods["Communication"] == methods["Condition"] == methods["MedicationStatement"] == "PUT"

    @pytest.mark.corpus
    def test_change_and_cancel_share_the_document_identity(self, shared_dir, capsys, monkeypatch):
        """The national N, M and C of one Innleggelsesrapport address the same Communication and Encounter; C marks them entered-in-error."""
        folder = shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "innleggelsesrapport_1_6_mottak"
        names = ["Innleggelsesrapport_v1-6_Ny.xml", "Innleggelsesrapport_v1-6_Endring.xml", "Innleggelsesrapport_v1-6_Kansellering.xml"]
        _, docs = _convert(capsys, monkeypatch, shared_dir, *(folder / n for n in names))
        comms = [_of(d, "Communication")[0] for d in docs]
        encounters = [_of(d, "Encounter")[0] for d in docs]
        assert len({c["id"] for c in comms}) == 1 and len({e["id"] for e in encounters}) == 1
        assert [c["status"] for c in comms] == ["completed", "completed", "entered-in-error"]
        assert encounters[2]["status"] == "entered-in-error"
        assert len(_of(docs[1], "MedicationStatement")) == len(_of(docs[0], "MedicationStatement")) + 1  # M adds Marevan


class TestFixtureCases:
    def test_every_plo_mapping_has_a_passing_case(self, capsys):
        """Each PLO message mapping has at least one synthetic fixture case, and they pass."""
        code = main(["mappings", "test", str(ROOT / "mappings" / "kith")])
        out = capsys.readouterr().out
        assert code == 0, out
        for name in PLO_MAPPINGS:
            assert f"PASS {name}/" in out, name


def _apply(settings, handle, path: Path | None, count: int, *, raw: bytes | None = None) -> None:
    publish(settings, [raw if path is None else path.read_bytes()])
    wait_until(lambda: handle.stats.applied == count, timeout=30, what=f"{path.name if path else 'message'} applied")


class TestChangeAndCancelInTheRecord:
    """N, then M, then C of one synthetic Innleggelsesrapport (dialog 5a1e7c00-…-0001), through the queue into the record."""

    CONVERSATION = "5a1e7c00-1111-4a00-8000-000000000001"

    def test_new_change_cancel(self, engine):
        settings, handle = engine
        record = open_record(settings)
        try:
            _apply(settings, handle, CASES / "innleggelsesrapport_N.xml", 1)
            [comm] = record.search("Communication", {"identifier": _document_identity(self.CONVERSATION)})
            assert comm["status"] == "completed" and comm["meta"]["versionId"] == "1"
            assert any("falt hjemme" in p["contentString"] for p in comm["payload"])
            [patient] = record.search("Patient", {"identifier": f"{FNR}|15866112379"})
            meds = record.search("MedicationStatement", {"subject": f"Patient/{patient['id']}"})
            assert sorted(m["medicationCodeableConcept"]["text"] for m in meds) == ["Furosemid 40 mg Tablett", "Paracetamol 500 mg Tablett"]
            [encounter] = record.search("Encounter", {"subject": f"Patient/{patient['id']}"})

            # M: the whole document again, changed. Same identities → the same resources, replaced.
            _apply(settings, handle, CASES / "innleggelsesrapport_M.xml", 2)
            [changed] = record.search("Communication", {"identifier": _document_identity(self.CONVERSATION)})
            assert changed["id"] == comm["id"] and changed["meta"]["versionId"] == "2"
            assert any("venstre skulder" in p["contentString"] for p in changed["payload"])
            assert not any("falt hjemme" in p["contentString"] for p in changed["payload"])
            assert record.search("Communication", {"subject": f"Patient/{patient['id']}"}) == [changed]
            meds_after = {m["id"]: m for m in record.search("MedicationStatement", {"subject": f"Patient/{patient['id']}"})}
            assert len(meds_after) == 3 and {m["id"] for m in meds} <= set(meds_after)  # the component ids keep them
            assert all(meds_after[m["id"]]["meta"]["versionId"] == "1" for m in meds)  # unchanged ones stay unchanged

            # C: the document and its stay are entered-in-error; still one resource each.
            _apply(settings, handle, CASES / "innleggelsesrapport_C.xml", 3)
            [cancelled] = record.search("Communication", {"identifier": _document_identity(self.CONVERSATION)})
            assert cancelled["id"] == comm["id"] and cancelled["meta"]["versionId"] == "3"
            assert cancelled["status"] == "entered-in-error"
            [stay] = record.search("Encounter", {"subject": f"Patient/{patient['id']}"})
            assert stay["id"] == encounter["id"] and stay["status"] == "entered-in-error"
            # The patient is shared context: created once, never rewritten by PLO messages.
            assert record.search("Patient", {"identifier": f"{FNR}|15866112379"})[0]["meta"]["versionId"] == "1"
        finally:
            record.close()

    def test_sent_under_the_wrong_patient_cancelled_then_changed_for_the_right_one(self, engine):
        """N for the wrong patient, C, then an M of the same dialog for the right one: the document goes to the right patient.

        The cancel left the document's resources entered-in-error; the record lets a retired resource
        take another patient (a live one it refuses: an M straight after the N is dead-lettered), so
        the correction is applied, and the first patient's versions stay in each resource's history."""
        settings, handle = engine
        right = "15866112530"  # another synthetic person, same birth date
        change = (CASES / "innleggelsesrapport_M.xml").read_bytes().replace(b"15866112379", right.encode())
        # Sent again after the cancel: a new message (its own MsgId) of the same dialog.
        late = change.replace(b"<GenDate>2024-03-01T11:05:00", b"<GenDate>2024-03-01T13:00:00").replace(
            b"<MsgId>5a1e7c00-1111-4a00-8000-000000000002", b"<MsgId>5a1e7c00-1111-4a00-8000-000000000004")
        early = change
        record = open_record(settings)
        try:
            _apply(settings, handle, CASES / "innleggelsesrapport_N.xml", 1)
            publish(settings, [early])  # the document is live and the first patient's: refused
            wait_until(lambda: handle.stats.dead_lettered == 1, timeout=30, what="the early change refused")
            _apply(settings, handle, CASES / "innleggelsesrapport_C.xml", 2)
            _apply(settings, handle, None, 3, raw=late)
            [patient] = record.search("Patient", {"identifier": f"{FNR}|{right}"})
            [comm] = record.search("Communication", {"identifier": _document_identity(self.CONVERSATION)})
            assert comm["status"] == "completed" and comm["subject"]["reference"] == f"Patient/{patient['id']}"
            history = record.history("Communication", comm["id"])
            assert [(v["status"], v["subject"]["reference"] == f"Patient/{patient['id']}") for v in history] == [
                ("completed", True), ("entered-in-error", False), ("completed", False)]
        finally:
            record.close()

    def test_cancel_reaches_the_children_of_the_document(self, engine):
        """A cancel (C) with only the header retires the medicines the N/M made (entered-in-error), through the document identity."""
        settings, handle = engine
        record = open_record(settings)
        try:
            for i, name in enumerate(["N", "M", "C"], start=1):
                _apply(settings, handle, CASES / f"innleggelsesrapport_{name}.xml", i)
            [patient] = record.search("Patient", {"identifier": f"{FNR}|15866112379"})
            meds = record.search("MedicationStatement", {"subject": f"Patient/{patient['id']}"})
            assert meds and all(m["status"] == "entered-in-error" for m in meds)
        finally:
            record.close()


def _convert_unmapped(capsys, monkeypatch, shared: Path, path: Path) -> tuple[dict, str]:
    """Convert one file with --unmapped: its Bundle and what stderr reports as dropped."""
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared / "norsk" / "skjema"))
    assert main(["convert", "--unmapped", str(path)]) == 0
    captured = capsys.readouterr()
    [doc] = [json.loads(line) for line in captured.out.splitlines()]
    assert doc["resourceType"] == "Bundle", doc
    return doc, captured.err


class TestClinicalContentIsNotDropped:
    """Content a municipality needs in the shared record, once reported by --unmapped as dropped."""

    UTSKRIVNING = ("plo", "1_6", "utskrivningsrapport_1.6_mottak", "Utskrivningsrapport_v1-6_Ny.xml")

    @pytest.mark.corpus
    def test_medicines_given_at_transfer_are_administrations(self, shared_dir, capsys, monkeypatch):
        """Utskrivningsrapport LegemidlerAdministrertVedOverforing/AdmAvHelsepersonell → MedicationAdministration
        (completed, given at AdmStart, the medicine's name/strength/form, the dose text), for the patient and the stay."""
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, shared_dir.joinpath("norsk", "eksempel", *self.UTSKRIVNING))
        assert "AdmAvHelsepersonell" not in err
        given = _of(doc, "MedicationAdministration")
        assert len(given) == 4 and len({g["id"] for g in given}) == 4
        [patient], [encounter] = _of(doc, "Patient"), _of(doc, "Encounter")
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        burinex = next(g for g in given if g["medicationCodeableConcept"]["text"].startswith("Burinex"))
        assert burinex["status"] == "completed"
        assert burinex["medicationCodeableConcept"]["text"] == "Burinex 1 mg Tablett"
        assert burinex["effectiveDateTime"] == "2018-02-02T08:00:00+01:00"
        assert burinex["dosage"]["text"] == "2 tabletter gitt kl 08 på utskrivelsesdag"
        assert by_url[burinex["subject"]["reference"]] is patient
        assert by_url[burinex["context"]["reference"]] is encounter
        assert {e["request"]["method"] for e in doc["entry"] if e["resource"]["resourceType"] == "MedicationAdministration"} == {"PUT"}

    @pytest.mark.corpus
    def test_administrations_keep_their_identity_through_change_and_cancel(self, shared_dir, capsys, monkeypatch):
        """A resent or changed (M, same medicines) Utskrivningsrapport PUTs the same MedicationAdministration ids."""
        folder = shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "utskrivningsrapport_1.6_mottak"
        names = ["Utskrivningsrapport_v1-6_Ny.xml", "Utskrivningsrapport_v1-6_Ny.xml", "Utskrivningsrapport_v1-6_Endring.xml"]
        _, docs = _convert(capsys, monkeypatch, shared_dir, *(folder / n for n in names))
        ids = [sorted(g["id"] for g in _of(d, "MedicationAdministration")) for d in docs]
        assert len(ids[0]) == 4 and ids[0] == ids[1] == ids[2]

    @pytest.mark.corpus
    def test_fixed_aids_are_an_observation(self, shared_dir, tmp_path, capsys, monkeypatch):
        """FasteHjelpemidler (Briller, HjelpemiddelHorsel, Pacemaker, Merknad) → one Observation with a component
        per aid; a pacemaker is there as `true`."""
        src = shared_dir.joinpath("norsk", "eksempel", *self.UTSKRIVNING)
        msg = tmp_path / "pacemaker.xml"
        text = src.read_text(encoding="utf-8")
        aids = '<Briller V="1" DN="Ja"/><HjelpemiddelHorsel V="2" DN="Nei"/><Pacemaker>true</Pacemaker><Merknad>Briller og tannproteser</Merknad>'
        assert text.count("<Merknad>Briller og tannproteser</Merknad>") == 1
        msg.write_text(text.replace("<Merknad>Briller og tannproteser</Merknad>", aids), encoding="utf-8")
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, msg)
        assert "FasteHjelpemidler" not in err
        [aid] = [o for o in _of(doc, "Observation") if o["code"].get("text", "").startswith("Faste hjelpemidler")]
        components = {c["code"]["text"]: c for c in aid["component"]}
        assert components["Pacemaker"]["valueBoolean"] is True
        assert components["Briller"]["valueCodeableConcept"]["text"] == "Ja"
        assert components["Hjelpemiddel hørsel"]["valueCodeableConcept"]["text"] == "Nei"
        assert aid["note"] == [{"text": "Briller og tannproteser"}]
        assert aid["status"] == "final"

    @pytest.mark.corpus
    def test_interpreter_need_is_the_patients_language_and_a_flag(self, shared_dir, capsys, monkeypatch):
        """InfoAssistertKommunikasjon/BehovTolkSprak → Patient.communication (BCP-47 language, preferred) and an
        interpreter-needed Flag that is part of the document (so it reaches a record whose Patient already exists)."""
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, shared_dir.joinpath("norsk", "eksempel", *self.UTSKRIVNING))
        assert "InfoAssistertKommunikasjon" not in err
        [patient] = _of(doc, "Patient")
        assert patient["communication"] == [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "se", "display": "NORDSAMISK"}], "text": "NORDSAMISK"}, "preferred": True}]
        [flag] = _of(doc, "Flag")
        assert flag["status"] == "active" and "NORDSAMISK" in flag["code"]["text"]
        assert "Hætta" in flag["code"]["text"] and "tel:90909090" in flag["code"]["text"]
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        assert by_url[flag["subject"]["reference"]] is patient
        assert [e["request"]["method"] for e in doc["entry"] if e["resource"]["resourceType"] == "Flag"] == ["PUT"]

    @pytest.mark.corpus
    @pytest.mark.parametrize("version", ["1_5", "1_6"])
    def test_discharge_state_is_part_of_the_discharge_disposition(self, shared_dir, capsys, monkeypatch, version):
        """Melding om utskrevet pasient UtskrevetTil/Uttilstand (Volven 8431) → a coding of
        Encounter.hospitalization.dischargeDisposition beside UtTil (8408)."""
        folder = {"1_5": "Pasientlogistikk_dodsfall-v1_5", "1_6": "pasientlogistikk_1_6_mottak"}[version]
        name = f"Pasientlogistikk_Melding_om_utskrevet_pasient_v{version.replace('_', '-')}_Ny.xml"
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, shared_dir / "norsk" / "eksempel" / "plo" / version / folder / name)
        assert "Uttilstand" not in err
        [encounter] = _of(doc, "Encounter")
        codings = encounter["hospitalization"]["dischargeDisposition"]["coding"]
        assert {"system": "urn:oid:2.16.578.1.12.4.1.1.8431", "code": "1", "display": "Som levende"} in codings
        assert {"system": "urn:oid:2.16.578.1.12.4.1.1.8408", "code": "1", "display": "Bosted/arbeidssted"} in codings

    @pytest.mark.corpus
    def test_forespørsel_reason_priority_period_and_document(self, shared_dir, tmp_path, capsys, monkeypatch):
        """Dialogmelding Foresporsel Begrunnelse → reasonCode text, Hastegrad (Volven 9067) → priority,
        FraDato/TilDato → occurrencePeriod, DokIdForesp → the document asked for, as a payload reference."""
        src = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-0" / "Dialogmelding_foresporsel_PLO_v1-0.xml"
        text = src.read_text(encoding="utf-8")
        anchor = "Ber om fornyelse av resept.</Sporsmal>"
        assert text.count(anchor) == 1
        extra = ("<Begrunnelse>Pasienten har ikke flere tabletter</Begrunnelse><Hastegrad V=\"3\" DN=\"Innen 24 timer\"/>"
                 "<FraDato>2018-02-01</FraDato><TilDato>2018-02-03</TilDato><DokIdForesp>dok-4711</DokIdForesp>")
        msg = tmp_path / "foresporsel.xml"
        msg.write_text(text.replace(anchor, anchor + extra), encoding="utf-8")
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, msg)
        for element in ("Begrunnelse", "Hastegrad", "FraDato", "TilDato", "DokIdForesp"):
            assert f"/Foresporsel/{element}" not in err, element
        [request] = _of(doc, "CommunicationRequest")
        assert request["priority"] == "urgent"
        assert {"text": "Pasienten har ikke flere tabletter"} in request["reasonCode"]
        assert request["occurrencePeriod"] == {"start": "2018-02-01", "end": "2018-02-03"}
        refs = [p["contentReference"] for p in request["payload"] if "contentReference" in p]
        assert refs == [{"type": "DocumentReference", "identifier": {"value": "dok-4711"}}]

    @pytest.mark.parametrize(("code", "priority"), [("1", "stat"), ("2", "urgent"), ("3", "urgent"), ("9", "routine")])
    def test_hastegrad_table(self, code, priority):
        """The stated Volven 9067 → FHIR request-priority map."""
        import yaml

        table = yaml.safe_load((ROOT / "mappings" / "kith" / "tables" / "Dialogmelding.9067-priority.yaml").read_text(encoding="utf-8"))
        assert table["source_system"] == "urn:oid:2.16.578.1.12.4.1.1.9067"
        assert table["map"][code] == priority


def _before_root_end(text: str, block: str) -> str:
    """`block` placed as the payload's last child (just before its root's closing tag, ahead of </Content>)."""
    import re

    ends = list(re.finditer(r"</p\d+:\w+>\s*</Content>", text))
    assert len(ends) == 1
    at = ends[0].start()
    return text[:at] + block + text[at:]


class TestSharedBlocksReachEveryMessage:
    """A block the poKomponent schema shares (fixed aids, aids status, interpreter need, language) is
    mapped the same in every PLO message whose XSD carries it, not only in the one it was first wired in."""

    INTERPRETER = ("<AssistertKommunikasjon><Horselsvikt>true</Horselsvikt>"
                   "<BehovTolkSprak V=\"AR\" DN=\"Arabisk\"/><Merknad>Tolk på telefon</Merknad></AssistertKommunikasjon>")

    @pytest.mark.corpus
    @pytest.mark.parametrize(("folder", "name", "wrapped"), [
        ("helseopplysninger_1_6_mottak", "Helseopplysninger_Varsel_om_innlagt_pasient_v1-6_Ny.xml", True),
        ("helseopplysninger_til_lege_1_6_mottak", "Helseopplysninger_til_lege_v1-6_Ny.xml", True),
        ("innleggelsesrapport_1_6_mottak", "Innleggelsesrapport_v1-6_Ny.xml", True),
        ("medisinske_opplysninger_1_6_mottak", "Medisinske_opplysninger_v1-6_Ny.xml", True),
        ("orientering_om_tjenestetilbud_1_6_mottak", "Orientering_om_tjenestetilbud_v1-6_Ny.xml", False),
    ])
    def test_interpreter_need_is_a_flag_in_every_message(self, shared_dir, tmp_path, capsys, monkeypatch, folder, name, wrapped):
        """AssistertKommunikasjon → the interpreter Flag (part of the document) in every message whose XSD has it;
        Orientering om tjenestetilbud carries it bare, the others inside InfoAssistertKommunikasjon."""
        text = shared_dir.joinpath("norsk", "eksempel", "plo", "1_6", folder, name).read_text(encoding="utf-8")
        assert "AssistertKommunikasjon" not in text
        block = f"<InfoAssistertKommunikasjon>{self.INTERPRETER}</InfoAssistertKommunikasjon>" if wrapped else self.INTERPRETER
        msg = tmp_path / name
        msg.write_text(_before_root_end(text, block), encoding="utf-8")
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, msg)
        assert "AssistertKommunikasjon" not in err
        [flag] = _of(doc, "Flag")
        assert flag["status"] == "active"
        assert "Arabisk" in flag["code"]["text"] and "Hørselsvikt." in flag["code"]["text"] and "Tolk på telefon" in flag["code"]["text"]
        [patient] = _of(doc, "Patient")
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        assert by_url[flag["subject"]["reference"]] is patient
        assert patient["communication"][0]["language"]["coding"][0]["code"] == "ar"

    @pytest.mark.corpus
    @pytest.mark.parametrize("version", ["1_5", "1_6"])
    def test_innleggelsesrapport_fixed_aids_are_an_observation(self, shared_dir, capsys, monkeypatch, version):
        """Innleggelsesrapport FasteHjelpemidler → the same fixed-aids Observation the Utskrivningsrapport makes."""
        folder = {"1_5": "Innleggelsesrapport-v1_5", "1_6": "innleggelsesrapport_1_6_mottak"}[version]
        name = f"Innleggelsesrapport_v{version.replace('_', '-')}_Ny.xml"
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, shared_dir / "norsk" / "eksempel" / "plo" / version / folder / name)
        assert "FasteHjelpemidler" not in err
        aids = [o for o in _of(doc, "Observation") if o["code"].get("text", "").startswith("Faste hjelpemidler")]
        assert len(aids) == 2 and len({a["id"] for a in aids}) == 2
        texts = {c["code"]["text"]: c.get("valueCodeableConcept", {}).get("text", c.get("valueBoolean")) for a in aids for c in a["component"]}
        assert texts["Briller"] == "Kontaktlinser"
        assert "Hjelpemiddel hørsel" in texts and "Pacemaker" in texts

    @pytest.mark.corpus
    @pytest.mark.parametrize(("folder", "name", "aid"), [
        ("innleggelsesrapport_1_6_mottak", "Innleggelsesrapport_v1-6_Ny.xml", "Krykker"),
        ("utskrivningsrapport_1.6_mottak", "Utskrivningsrapport_v1-6_Ny.xml", "Rullator"),
    ])
    def test_aids_status_is_an_observation(self, shared_dir, capsys, monkeypatch, folder, name, aid):
        """StatusHjelpemiddel (an aid in use or applied for, with its status) → an Observation: the aid is the code,
        its status (Aktiv) the value, for the patient, from the report's author."""
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / folder / name)
        assert "StatusHjelpemiddel" not in err
        [status] = [o for o in _of(doc, "Observation") if o["code"].get("text") == aid]
        assert status["valueCodeableConcept"]["text"] == "Aktiv"
        assert status["status"] == "final"
        [patient] = _of(doc, "Patient")
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        assert by_url[status["subject"]["reference"]] is patient
        assert [e["request"]["method"] for e in doc["entry"] if e["resource"] is status] == ["PUT"]

    @pytest.mark.corpus
    def test_language_is_the_patients_communication(self, shared_dir, tmp_path, capsys, monkeypatch):
        """TilleggsopplysningPasient/Sprak → Patient.communication (BCP-47, preferred), also with no interpreter need."""
        src = shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml"
        text = src.read_text(encoding="utf-8")
        anchor = "<BorAlene>true</BorAlene>"
        assert text.count(anchor) == 1 and "Sprak" not in text
        msg = tmp_path / "sprak.xml"
        msg.write_text(text.replace(anchor, anchor + '<Sprak V="PL" DN="Polsk"/>'), encoding="utf-8")
        doc, err = _convert_unmapped(capsys, monkeypatch, shared_dir, msg)
        assert "Sprak" not in err
        [patient] = _of(doc, "Patient")
        assert patient["communication"] == [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "pl", "display": "Polsk"}], "text": "Polsk"}, "preferred": True}]
