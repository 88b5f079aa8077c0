"""`helsebro convert` on Norwegian KITH XML: the national examples become valid FHIR Bundles."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HER = "urn:oid:2.16.578.1.12.4.1.2"


def _convert(capsys, monkeypatch, shared: Path, *paths: Path) -> tuple[int, list[dict]]:
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared / "norsk" / "skjema"))
    code = main(["convert", *map(str, paths)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _variants(tmp_path: Path, text: str, *changes: dict[str, str]) -> list[Path]:
    """Write one file per entry of *changes*: *text* with each of its old → new replacements made."""
    paths = []
    for k, change in enumerate(changes):
        variant = text
        for old, new in change.items():
            assert old in variant, old
            variant = variant.replace(old, new)
        path = tmp_path / f"variant{k}.xml"
        path.write_text(variant, "utf-8")
        paths.append(path)
    return paths


def _identities(doc: dict, *kinds: str) -> set[str]:
    """What each entry of these resource types is written under: its conditional URL or ifNoneExist."""
    return {e["request"].get("ifNoneExist") or e["request"]["url"] for e in doc["entry"] if e["resource"]["resourceType"] in kinds}


def _of(doc: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == kind]


class TestDialogmelding:
    @pytest.mark.corpus
    def test_every_example_converts_to_a_valid_bundle(self, shared_dir, capsys, monkeypatch):
        """Each Dialogmelding example (1.0 and 1.1) gives a valid Bundle with a Communication."""
        code, docs = _convert(capsys, monkeypatch, shared_dir, shared_dir / "norsk" / "eksempel" / "Dialogmelding")
        assert code == 0 and len(docs) == 6
        for doc in docs:
            Bundle.model_validate(doc)
            assert len(_of(doc, "Communication")) == 1

    @pytest.mark.corpus
    def test_patient_and_parties_carry_national_ids(self, shared_dir, capsys, monkeypatch):
        """The patient's FNR is under its no-basis system; sender and receiver carry HER-ids."""
        path = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-1" / "Helsefaglig dialog.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        [patient] = _of(doc, "Patient")
        assert patient["identifier"][0]["system"] == FNR
        orgs = {o["identifier"][0]["value"]: o for o in _of(doc, "Organization")}
        assert {o["identifier"][0]["system"] for o in orgs.values()} == {HER}
        [comm] = _of(doc, "Communication")
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        # the sender is the writing GP in role (RollerRelatertNotat, review H207) at the sending organisation
        sender = by_url[comm["sender"]["reference"]]
        assert sender["resourceType"] == "PractitionerRole"
        assert by_url[sender["organization"]["reference"]]["identifier"][0]["value"] == "56704"
        assert {by_url[r["reference"]]["identifier"][0]["value"] for r in comm["recipient"]} == {"59", "90998"}
        assert comm["payload"][1]["contentAttachment"]["contentType"] == "application/pdf"

    @pytest.mark.corpus
    def test_an_answer_is_linked_to_the_question_and_asks_nothing(self, shared_dir, capsys, monkeypatch):
        """A DIALOG_SVAR quotes the question it answers (Notat/Foresporsel): it makes no CommunicationRequest of
        its own (the GP's answer is no open request from the GP), and its Communication points at the question's
        Communication by that message's MsgId (RefToParent), the identifier the question's Communication has."""
        folder = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-0"
        code, [question, answer] = _convert(capsys, monkeypatch, shared_dir, folder / "Dialogmelding_foresporsel_PLO_v1-0.xml", folder / "Dialogmelding_svar_foresporsel_PLO_v1-0.xml")
        assert code == 0
        assert len(_of(question, "CommunicationRequest")) == 1
        assert _of(answer, "CommunicationRequest") == []
        [asked] = _of(question, "Communication")
        [answered] = _of(answer, "Communication")
        [link] = answered["inResponseTo"]
        assert link["type"] == "Communication" and link["identifier"] == asked["identifier"][0]

    @pytest.mark.corpus
    def test_a_status_on_a_referral_is_based_on_the_referral(self, shared_dir, capsys, monkeypatch):
        """DIALOG_STATUS_HENVISNING follows up a Henvisning 2.0 (RefToParent is its MsgId): basedOn names that
        referral's ServiceRequest by the MsgId it carries, and it is no answer to a Communication."""
        path = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-1" / "Status_paa_henvisning-InnkaltEtterViderehenvisning.xml"
        parent = re.search(r"<RefToParent>\s*([^<\s]+)", path.read_text("utf-8")).group(1)
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        [comm] = _of(doc, "Communication")
        assert "inResponseTo" not in comm
        assert comm["basedOn"] == [{"type": "ServiceRequest", "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{parent.lower()}"}}]

    @pytest.mark.corpus
    def test_what_a_condition_only_asks_for_is_reported_unmapped(self, shared_dir, tmp_path, capsys, monkeypatch):
        """A `when: … valued` on an element (is there a Foresporsel?) maps none of its content: --unmapped names
        the kind of record asked for (TypeJournalinfo, added to the national forespørsel), which no rule maps,
        instead of reporting nothing. (The nurse it names, RollerRelatertNotat, is mapped since review H207.)"""
        src = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-0" / "Dialogmelding_foresporsel_PLO_v1-0.xml"
        text = src.read_text("utf-8")
        text = text.replace("</Sporsmal>", '</Sporsmal><TypeJournalinfo V="1" DN="Journal" S="2.16.578.1.12.4.1.1.9999"/>', 1)
        path = tmp_path / "foresporsel.xml"
        path.write_text(text, "utf-8")
        monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
        assert main(["convert", "--unmapped", str(path)]) == 0
        err = capsys.readouterr().err
        assert "/Dialogmelding/Foresporsel/TypeJournalinfo" in err
        assert "/Foresporsel/Sporsmal" not in err and "/Foresporsel/TypeForesp" not in err  # these are mapped

    @pytest.mark.corpus
    def test_a_non_uuid_msgid_is_refused(self, shared_dir, tmp_path, capsys, monkeypatch):
        """A MsgId that is not a UUID gives an OperationOutcome and exit 1."""
        src = shared_dir / "norsk" / "eksempel" / "Dialogmelding" / "Dialogmelding-v1-1" / "Helsefaglig dialog.xml"
        bad = tmp_path / "bad.xml"
        bad.write_bytes(src.read_bytes().replace(b"de1a95c0-4d0c-11e7-9598-0800200c9a66", b"not-a-uuid"))
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert code == 1 and doc["resourceType"] == "OperationOutcome"

    def test_xxe_is_refused_without_reading_files(self, tmp_path, capsys, monkeypatch):
        """An XML message with a DOCTYPE is refused as an OperationOutcome, never expanded."""
        evil = tmp_path / "x.xml"
        evil.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><MsgHead>&e;</MsgHead>')
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        assert main(["convert", str(evil)]) == 1
        out = capsys.readouterr().out
        assert "OperationOutcome" in out and "root:" not in out

    @pytest.mark.parametrize("junk", ["<a:b>", '<ns0:Envelope/xmlns:ns0="urn:x"><a/></ns0:Envelope>'], ids=["bare-prefix", "broken-declaration"])
    def test_xml_with_an_undeclared_prefix_is_refused_not_a_traceback(self, tmp_path, capsys, monkeypatch, junk):
        """Broken XML whose repaired root keeps an undeclared prefix (`a:b`) is refused as an OperationOutcome, exit 1."""
        bad = tmp_path / "bad.xml"
        bad.write_text(junk)
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        assert main(["convert", str(bad)]) == 1
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert doc["resourceType"] == "OperationOutcome" and doc["issue"][0]["severity"] == "error"


class TestLocalNumbers:
    @pytest.mark.corpus
    def test_an_h_nummer_is_its_institutions(self, shared_dir, capsys, monkeypatch, tmp_path):
        """One H-nummer from two laboratories (two institutions' HER-ids) is two patients, each under a system
        naming the institution that gave it; from the same laboratory it is one."""
        src = (shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_biokjemi_v1-4_Ny.xml").read_text("utf-8")
        hnr = src.replace("<OffId>13116900216</OffId>", "<OffId>02436110084</OffId>").replace('<TypeOffId V="FNR" DN="Fødselsnummer"/>', '<TypeOffId V="HNR" DN="H-nummer"/>')
        # with an H-nummer, a name identifies the patient only with date of birth and sex (E36 otherwise)
        hnr = hnr.replace("<Name>Danser, Line</Name>", '<Sex V="2" DN="Kvinne"/><DateOfBirth V="1969-11-13"/><Name>Danser, Line</Name>', 1)
        assert hnr != src
        paths = _variants(tmp_path, hnr, {}, {"<Id>59</Id>": "<Id>88</Id>"}, {})
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        systems = [_of(doc, "Patient")[0]["identifier"][0]["system"] for doc in docs]
        assert systems == ["urn:helsebro:local:59:HNR", "urn:helsebro:local:88:HNR", "urn:helsebro:local:59:HNR"]

    @pytest.mark.corpus
    def test_next_of_kin_follow_the_patient_whatever_the_order_of_its_idents(self, shared_dir, capsys, monkeypatch, tmp_path):
        """The patient's next of kin are one RelatedPerson each whether MsgHead lists the FNR first or a local
        patient number first: they are keyed by the Patient's identity (the FNR), not by its first Ident."""
        src = (shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml").read_text("utf-8")
        fnr = "<Ident>\n\t\t\t\t<Id>13116900216</Id>"
        local = "<Ident>\n\t\t\t\t<Id>KPN-4711</Id>\n\t\t\t\t<TypeId V=\"XX\" DN=\"Kommunalt pasientnummer\"/>\n\t\t\t</Ident>\n\t\t\t"
        paths = _variants(tmp_path, src, {}, {fnr: local + fnr})
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        kin = [_identities(doc, "RelatedPerson") for doc in docs]
        assert kin[0] and kin[0] == kin[1]
        assert len(_of(docs[1], "Patient")[0]["identifier"]) == 2  # the local number is there, and not the key

    @pytest.mark.corpus
    def test_a_professional_without_hpr_is_known_within_the_sending_organisation(self, shared_dir, capsys, monkeypatch, tmp_path):
        """The same nurse's name (no HPR-nummer) from two municipalities is two Practitioners and two roles;
        from the same municipality again, the same ones."""
        src = (shared_dir / "norsk" / "eksempel" / "plo" / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml").read_text("utf-8")
        paths = _variants(tmp_path, src, {}, {"<Id>99387</Id>": "<Id>71717</Id>"}, {})
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        keys = [sorted(e["request"]["ifNoneExist"] for e in doc["entry"] if e["resource"]["resourceType"] in ("Practitioner", "PractitionerRole")
                       and "4.1.4.4|" not in e["request"].get("ifNoneExist", "4.1.4.4|")) for doc in docs]
        assert keys[0] and keys[0] == keys[2]
        assert not set(keys[0]) & set(keys[1])

    @pytest.mark.corpus
    @pytest.mark.parametrize(
        ("example", "number", "institution", "kinds"),
        [
            # two laboratories' reports numbered 12345 (ServProvider's institution 59 and 88)
            ("Svarrapport/Svarrapport-v-1-4/Svar_biokjemi_v1-4_Ny.xml", ("<ServProvId>55b6344fc-a61d-4a67-95fe-7276613785ab</ServProvId>", "<ServProvId>12345</ServProvId>"),
             ("<Id>59</Id>", "<Id>88</Id>"), ("Observation", "Specimen")),
            # two surgeries' requisitions numbered 4711 (Requester's institution 91096 and 77777)
            ("Rekvisisjon/Rekvisisjon-v-1-6/Rekvisisjon_lab_v1-6_Ny.xml", ("<Id>79209fb0-0b3a-11e8-b566-0800200c9a66</Id>", "<Id>4711</Id>"),
             ("<Id>91096</Id>", "<Id>77777</Id>"), ("ServiceRequest", "Specimen")),
        ],
    )
    def test_a_senders_own_document_number_is_its_own(self, shared_dir, capsys, monkeypatch, tmp_path, example, number, institution, kinds):
        """One document number (not a UUID) from two institutions, for two patients: each gets results, specimens and
        ordered tests of its own, and each result still points at its own specimen."""
        src = (shared_dir / "norsk" / "eksempel" / example).read_text("utf-8")
        numbered = src.replace(*number)
        assert numbered != src
        paths = _variants(tmp_path, numbered, {}, {institution[0]: institution[1], "13116900216": "02036110182"})
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        first, second = (_identities(doc, *kinds) for doc in docs)
        assert first and second and not first & second
        for doc in docs:
            specimens = {i["value"] for s in _of(doc, "Specimen") for i in s.get("identifier", [])}
            refs = [o["specimen"]["identifier"]["value"] for o in _of(doc, "Observation") if "identifier" in o.get("specimen", {})]
            assert set(refs) <= specimens and (refs or "Observation" not in kinds)

    def test_a_professionals_malformed_or_mislabelled_number_leaves_the_number_out_not_the_admission(self, capsys, monkeypatch, tmp_path):
        """An Innleggelsesrapport whose responsible nurse's HPR-nummer is sent as an FNR or DNR, or with letters, is
        converted (HIS 80415 §3.2: content quality is no ground to refuse), the nurse known by name at the sender and the
        wrong number under no system; a patient whose FNR fails its check digits is still refused."""
        fixture = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "PLO_Innleggelsesrapport.cases" / "innleggelsesrapport_ny.xml"
        hpr = '<fk1:Id>9144900</fk1:Id><fk1:TypeId V="HPR"'
        paths = _variants(tmp_path, fixture.read_text("utf-8"), {hpr: hpr.replace("HPR", "FNR")}, {hpr: hpr.replace("HPR", "DNR")},
                          {hpr: hpr.replace("9144900", "91449OO")}, {hpr: hpr.replace("9144900", "15866112379")})
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        assert main(["convert", *map(str, paths)]) == 0
        for line in capsys.readouterr().out.splitlines():
            doc = json.loads(line)
            nurses = [p for p in _of(doc, "Practitioner") if p.get("name", [{}])[0].get("family") and not p.get("identifier", [{}])[0].get("system", "").endswith(".4.4")]
            assert nurses, "the nurse is still written"
            for nurse in nurses:
                assert all(i.get("system") not in ("urn:oid:2.16.578.1.12.4.1.4.4", FNR, "urn:oid:2.16.578.1.12.4.1.4.2") or i["value"] == "9144900"
                           for i in nurse.get("identifier", []))
        bad_patient = _variants(tmp_path, fixture.read_text("utf-8"), {"<Id>15866112379</Id>": "<Id>15866112378</Id>"})
        assert main(["convert", *map(str, bad_patient)]) == 1
        capsys.readouterr()

    def test_a_bare_messages_document_number_is_its_institutions(self, capsys, monkeypatch, tmp_path):
        """An Epikrise without MsgHead numbered 55501 by two hospitals (ServProvider 445566 and 778899): two documents, and
        two sets of diagnoses."""
        fixture = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "Epikrise.cases" / "epikrise_1_2_ny.xml"
        numbered = fixture.read_text("utf-8").replace("<ServProvId>c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f</ServProvId>", "<ServProvId>55501</ServProvId>")
        paths = _variants(tmp_path, numbered, {}, {"<Id>445566</Id>": "<Id>778899</Id>"})
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        assert main(["convert", *map(str, paths)]) == 0
        first, second = (_identities(json.loads(line), "DocumentReference", "Condition") for line in capsys.readouterr().out.splitlines())
        assert len(first) == len(second) >= 2 and not first & second


class TestDocumentText:
    @pytest.mark.corpus
    def test_a_table_in_an_epikrise_keeps_its_empty_cells(self, shared_dir, capsys, monkeypatch):
        """The Epikrise's blood-test table is kept as the XHTML it was sent as: glucose 7.9 stays under 29.04,
        the third date, with the empty cell for 28.04 before it (flattened to text it read as 28.04)."""
        from lxml import etree

        path = shared_dir / "norsk" / "eksempel" / "Epikrise" / "Epikrise_v1-1" / "epikrise_v1.1_n.xml"
        code, docs = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        [doc] = _of(docs[0], "DocumentReference")
        [found] = [c["attachment"] for c in doc["content"] if "glukose" in base64.b64decode(c["attachment"]["data"]).decode()]
        assert found["contentType"] == "application/xhtml+xml"
        table = etree.fromstring(base64.b64decode(found["data"]))
        ns = {"x": "http://www.w3.org/1999/xhtml"}
        rows = [[(td.text or "").strip() for td in tr.findall("x:td", ns)] for tr in table.iterfind(".//x:tr", ns)]
        dates, glucose = rows[0], next(r for r in rows if r[0].startswith("glukose"))
        assert dict(zip(dates, glucose))["29.04"] == "7.9" and dict(zip(dates, glucose))["28.04"] == ""


class TestMicrobiology:
    @pytest.mark.corpus
    def test_each_susceptibility_names_its_isolate(self, shared_dir, capsys, monkeypatch):
        """Two isolates (E. coli, Klebsiella) each with an Ampicillin R: each susceptibility is derivedFrom its own
        isolate's Observation (RefIdResultItem → IdResultItem), by the identity identifier that Observation carries."""
        path = shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_mikrobiologi_dyrkning_v1-4_Ny.xml"
        code, docs = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        observations = _of(docs[0], "Observation")
        by_identity = {i["value"]: o for o in observations for i in o.get("identifier", []) if i.get("system") == "urn:helsebro:identity"}
        tested = sorted((o["code"]["coding"][0]["display"], by_identity[o["derivedFrom"][0]["identifier"]["value"]]["valueString"])
                        for o in observations if "derivedFrom" in o)
        assert ("Us-Ampicillin", "Escherichia coli") in tested and ("Us-Ampicillin", "Klebsiella pneumoniae") in tested
        assert len(tested) == 7


class TestAttachments:
    @pytest.mark.corpus
    def test_a_referrals_attached_pdf_is_a_document_of_the_referral(self, shared_dir, capsys, monkeypatch):
        """Henvisning 2.0 with the original referral attached as PDF (Vedlegg): a DocumentReference holding the PDF as
        sent, about the patient and related to the referral; its change (Endring) updates the same DocumentReference."""
        folder = shared_dir / "norsk" / "eksempel" / "Henvisning" / "Henvisning_v2-0"
        paths = [folder / "Viderehenvisning_v2-0_Uten_rettighetsvurdering_Ny.xml", folder / "Viderehenvisning_v2-0_Uten_rettighetsvurdering_Endring.xml"]
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        urls = []
        for doc in docs:
            Bundle.model_validate(doc)
            [entry] = [e for e in doc["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
            ref = entry["resource"]
            attachment = ref["content"][0]["attachment"]
            assert attachment["contentType"] == "application/pdf" and base64.b64decode(attachment["data"]).startswith(b"%PDF")
            by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
            assert by_url[ref["context"]["related"][0]["reference"]]["resourceType"] == "ServiceRequest"
            assert by_url[ref["subject"]["reference"]]["resourceType"] == "Patient"
            urls.append(entry["request"]["url"])
        assert urls[0] == urls[1]


_CARRIED = re.compile(rb"(<bas:Base64Container[^>]*>)([^<]+)(</bas:Base64Container>)")
"""The M9.6 example's carried M1s: each a whole signed MsgHead message, base64 in a Base64Container."""

_XXE = b'<?xml version="1.0"?><!DOCTYPE MsgHead [<!ENTITY e SYSTEM "file:///etc/passwd">]><MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&e;</MsgHead>'
_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><MsgHead>&lol3;</MsgHead>'
)


WITHDRAWN = "urn:uuid:c2883dc2-8eef-4b8e-a80f-167f858425f7"
"""The prescription the national M9.6 lists as T tilbakekalt, whose signed M1 it carries."""


def _but(entry: dict, *names: str) -> dict:
    """*entry* with these elements of its resource left out."""
    return {**entry, "resource": {k: v for k, v in entry["resource"].items() if k not in names}}


def _m96(shared: Path) -> Path:
    path = shared / "norsk" / "eksempel" / "eresept" / "Lege endrer på legemiddelbehandling" / "M96 Reseptliste rekvirent.xml"
    if not path.is_file():
        pytest.skip("../shared/norsk/eksempel/eresept (the national M9.6 example) is not there")
    return path


def _carried(data: bytes) -> list[bytes]:
    """The messages the M9.6 carries, decoded."""
    return [base64.b64decode(b"".join(m.group(2).split())) for m in _CARRIED.finditer(data)]


def _carrying(tmp_path: Path, src: Path, k: int, change) -> Path:
    """Write the M9.6 with its k-th carried message (0-based) replaced: *change* takes the decoded message and
    returns the new one (bytes, encoded here) or the Base64Container's new text (str, written as it is)."""
    data = src.read_bytes()
    found = list(_CARRIED.finditer(data))[k]
    new = change(base64.b64decode(b"".join(found.group(2).split())))
    text = new.encode("ascii") if isinstance(new, str) else base64.b64encode(new)
    path = tmp_path / f"m96_carried{k}.xml"
    path.write_bytes(data[: found.start(2)] + text + data[found.end(2):])
    return path


@pytest.mark.corpus
class TestEmbeddedMessages:
    def test_the_list_is_about_the_patient_of_its_m1s_and_points_at_their_prescriptions(self, shared_dir, capsys, monkeypatch):
        """The national M9.6: a valid Bundle whose List has the M1s' patient as subject and whose five entries each point
        at the MedicationRequest of its ReseptId, carrying the M1's content (medication, subject, requester)."""
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, _m96(shared_dir))
        assert code == 0
        Bundle.model_validate(doc)
        by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
        [lst] = _of(doc, "List")
        [patient] = _of(doc, "Patient")
        assert by_url[lst["subject"]["reference"]] is patient
        assert [(i["system"], i["value"]) for i in patient["identifier"]] == [(FNR, "21014605158")]
        assert len(lst["entry"]) == 5
        for item in (e["item"] for e in lst["entry"]):
            request = by_url[item["reference"]]
            assert request["resourceType"] == "MedicationRequest" and request["identifier"] == [item["identifier"]]
            assert request["medicationCodeableConcept"]["coding"] and request["requester"]["reference"] in by_url
            assert by_url[request["subject"]["reference"]] is patient

    def test_an_embedded_m1_is_written_as_the_same_m1_sent_alone(self, shared_dir, capsys, monkeypatch, tmp_path):
        """Each carried M1, converted alone, gives the same entries (fullUrl, conditional URL, content) as inside the
        M9.6: the record holds one MedicationRequest, not two."""
        src = _m96(shared_dir)
        alone = []
        for k, message in enumerate(_carried(src.read_bytes())):
            alone.append(tmp_path / f"m1_{k}.xml")
            alone[-1].write_bytes(message)
        code, [listed, *singles] = _convert(capsys, monkeypatch, shared_dir, src, *alone)
        assert code == 0 and len(singles) == 5
        inside = {e["fullUrl"]: e for e in listed["entry"]}
        for single in singles:
            [request] = [e for e in single["entry"] if e["resource"]["resourceType"] == "MedicationRequest"]
            if request["resource"]["identifier"][0]["value"] == WITHDRAWN:  # the list's status is laid over it (see below)
                assert _but(inside[request["fullUrl"]], "status", "statusReason", "meta") == _but(request, "status", "statusReason", "meta")
                continue
            assert inside[request["fullUrl"]] == request
            [patient] = [e for e in single["entry"] if e["resource"]["resourceType"] == "Patient"]
            assert patient["fullUrl"] in inside

    def test_a_withdrawn_prescription_is_written_with_the_lists_status(self, shared_dir, capsys, monkeypatch, tmp_path):
        """The national M9.6 lists c2883dc2 as T tilbakekalt (Arsak 4 Annen) and carries its signed M1: its MedicationRequest
        is written stopped with that reason, under the M1's identity and request, and the List entry points at it; the
        Ekspederbar entries stay active. Made Ekspederbar in a copy, the same prescription is written active."""
        src = _m96(shared_dir)
        [active] = _variants(tmp_path, src.read_text("utf-8"), {'<Status V="T" DN="Tilbakekalt"/>': '<Status V="E" DN="Ekspederbar"/>', '<Arsak V="4" S="2.16.578.1.12.4.1.1.7500" DN="Annen"/>': ""})
        code, [listed, edited] = _convert(capsys, monkeypatch, shared_dir, src, active)
        assert code == 0
        Bundle.model_validate(listed)
        requests = {r["identifier"][0]["value"]: r for r in _of(listed, "MedicationRequest")}
        withdrawn = requests.pop(WITHDRAWN)
        assert withdrawn["status"] == "stopped"
        assert withdrawn["statusReason"] == {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.7500", "code": "4", "display": "Annen"}]}
        assert withdrawn["medicationCodeableConcept"]["coding"] and withdrawn["authoredOn"]  # the M1's own content stays
        assert {r["status"] for r in requests.values()} == {"active"} and len(requests) == 4
        [entry] = [e for e in listed["entry"] if e["resource"] is withdrawn]
        assert entry["request"] == {"method": "PUT", "url": f"MedicationRequest?identifier=urn:ietf:rfc:3986|{WITHDRAWN.replace(':', '%3A')}"}
        [lst] = _of(listed, "List")
        assert [e["item"]["reference"] for e in lst["entry"] if e["flag"]["coding"][0]["code"] == "T"] == [entry["fullUrl"]]
        [again] = [r for r in _of(edited, "MedicationRequest") if r["identifier"][0]["value"] == WITHDRAWN]
        assert again["status"] == "active" and "statusReason" not in again

    @pytest.mark.parametrize(
        ("k", "change", "code", "says"),
        [
            (0, lambda m1: "Tm90IGJhc2U2NCEh*****", "value", "not valid base64"),
            (1, lambda m1: m1[: len(m1) // 2], "structure", "not well-formed XML"),
            (2, lambda m1: _XXE, "structure", "DOCTYPE"),
            (3, lambda m1: _LAUGHS, "structure", "DOCTYPE"),
            (4, lambda m1: m1.replace(b"<MIGversion>", b"<MIGversjon>").replace(b"</MIGversion>", b"</MIGversjon>"), "value", "schema"),
        ],
        ids=["base64", "not-xml", "xxe", "entity-bomb", "xsd"],
    )
    def test_a_carried_message_that_cannot_be_read_refuses_the_list(self, shared_dir, capsys, monkeypatch, tmp_path, k, change, code, says):
        """A carried M1 that is not base64, not well-formed, declares a DOCTYPE (XXE, entity bomb) or breaks its XSD
        refuses the M9.6 with an OperationOutcome naming that Document, never a traceback or an expanded entity."""
        bad = _carrying(tmp_path, _m96(shared_dir), k, change)
        exit_code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert exit_code == 1 and doc["resourceType"] == "OperationOutcome"
        [issue] = doc["issue"]
        assert issue["code"] == code and says in issue["diagnostics"]
        assert issue["location"][0].startswith(f"/MsgHead/Document[{k + 2}]/RefDoc/Content/Base64Container")
        assert "root:" not in json.dumps(doc) and "lollol" not in json.dumps(doc)

    def test_a_carried_message_that_is_not_an_m1_refuses_the_list(self, shared_dir, capsys, monkeypatch, tmp_path):
        """An M10 (a message Helsebro maps, but not an M1) carried in an M9.6 is refused at its Document."""
        m10 = (shared_dir / "norsk" / "eksempel" / "eresept" / "Ekspedering og utlevering" / "M10 Utleveringsrapport.xml").read_bytes()
        bad = _carrying(tmp_path, _m96(shared_dir), 1, lambda m1: m10)
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert code == 1
        [issue] = doc["issue"]
        assert "only ERM1 may be embedded" in issue["diagnostics"]
        assert issue["location"] == ["/MsgHead/Document[3]/RefDoc/Content/Base64Container > /MsgHead/MsgInfo/Type"]

    def test_m1s_about_two_patients_refuse_the_list_and_log_no_patient(self, shared_dir, capsys, monkeypatch, tmp_path):
        """One carried M1 about another patient (a valid synthetic fødselsnummer) refuses the list at that Document,
        and neither fødselsnummer appears in the output or the log."""
        bad = _carrying(tmp_path, _m96(shared_dir), 3, lambda m1: m1.replace(b"21014605158", b"15866112379"))
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert code == 1
        [issue] = doc["issue"]
        assert issue["code"] == "value" and "different patients" in issue["diagnostics"]
        assert issue["location"] == ["/MsgHead/Document[5]/RefDoc/Content/Base64Container"]
        main(["convert", str(bad)])  # again, for its log
        err = capsys.readouterr().err
        out = json.dumps(doc)
        assert "21014605158" not in err + out and "15866112379" not in err + out

    def test_an_m912s_list_of_medicines_in_use_must_be_about_its_patient(self, shared_dir, capsys, monkeypatch, tmp_path):
        """M9.12's VarerIBrukB64 (a whole M25.1) joins the Bundle; one about another patient than the M9.12's Fnr is refused."""
        src = shared_dir / "norsk" / "eksempel" / "eresept" / "Lege endrer på legemiddelbehandling" / "M912 Nedlasting av PLL.xml"
        text = src.read_text("utf-8")
        start = text.index("<VarerIBrukB64>") + len("<VarerIBrukB64>")
        end = text.index("</VarerIBrukB64>")
        other = base64.b64encode(base64.b64decode(text[start:end]).replace(b"21014605158", b"15866112379")).decode()
        [bad] = _variants(tmp_path, text, {text[start:end]: other})
        code, [ok, refused] = _convert(capsys, monkeypatch, shared_dir, src, bad)
        assert code == 1
        Bundle.model_validate(ok)
        assert len(_of(ok, "MedicationStatement")) == 2 and len(_of(ok, "Patient")) == 1
        assert refused["issue"][0]["location"] == ["/MsgHead/Document/RefDoc/Content/M912/Multidosepasient/VarerIBrukB64"]


class TestSummaryAndWholeResource:
    def test_an_m912_writes_the_fuller_prescription_with_the_reseptinfos_status(self, capsys, monkeypatch):
        """The ERM912 case names 5b1f… twice: a Reseptinfo (status E, Forskrivningsdato, product) and the entry of the
        M25.1 it carries, which holds the whole prescription. Both are creates; the one written is the entry's, with its
        ATC, dosage and reason, under the Reseptinfo's status and date, and the patient is the M25.1's, with a name."""
        path = Path(__file__).parents[2] / "mappings" / "kith" / "messages" / "ERM912.cases" / "pll_nedlasting.xml"
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        code = main(["convert", str(path)])
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert code == 0
        Bundle.model_validate(doc)
        [entry] = [e for e in doc["entry"] if e["resource"]["resourceType"] == "MedicationRequest" and e["resource"]["identifier"][0]["value"].endswith("0a1b2c3d4e01")]
        request = entry["resource"]
        assert entry["request"]["method"] == "POST"  # still never overwrites the M1's own
        assert any(c["system"] == ATC for c in request["medicationCodeableConcept"]["coding"])
        assert request["dosageInstruction"][0]["text"] == "1 tablett om kvelden"
        assert request["status"] == "active" and request["authoredOn"] == "2024-03-05"
        [patient] = _of(doc, "Patient")
        assert patient["name"] == [{"family": "Syntetisk", "given": ["Pasient"]}]


_DOCUMENTS = re.compile(rb"(<ReseptDokLegemiddelB64>)([^<]+)(</ReseptDokLegemiddelB64>)")
"""The M25.1 example's prescriptions: each an M1 ReseptDokLegemiddel, base64 in a ReseptDokLegemiddelB64."""
_ENTRY = "/MsgHead/Document/RefDoc/Content/LegemidlerIBruk/EnkeltoppforingLIB"
ATC = "urn:oid:2.16.578.1.12.4.1.1.7180"


def _m251(shared: Path) -> Path:
    path = shared / "norsk" / "eksempel" / "eresept" / "Lege endrer på legemiddelbehandling" / "M251 PLL - Avsluttet behandling.xml"
    if not path.is_file():
        pytest.skip("../shared/norsk/eksempel/eresept (the national M25.1 example) is not there")
    return path


def _with_document(tmp_path: Path, src: Path, k: int, change) -> Path:
    """Write the M25.1 with its k-th ReseptDokLegemiddelB64 (0-based) replaced, as _carrying does for the M9.6."""
    data = src.read_bytes()
    found = list(_DOCUMENTS.finditer(data))[k]
    new = change(base64.b64decode(b"".join(found.group(2).split())))
    text = new.encode("ascii") if isinstance(new, str) else base64.b64encode(new)
    path = tmp_path / f"m251_document{k}.xml"
    path.write_bytes(data[: found.start(2)] + text + data[found.end(2):])
    return path


@pytest.mark.corpus
class TestEmbeddedDocuments:
    def test_each_entry_names_the_medicine_its_m1_prescribed(self, shared_dir, capsys, monkeypatch):
        """The national M25.1: every entry's ReseptDokLegemiddelB64 is read, so each MedicationStatement names its medicine
        and dosage, about the M25.1's patient; the prescription it creates (never overwriting) for the national M1's
        ReseptId says what that M1 says of the medicine."""
        folder = _m251(shared_dir).parent
        code, [lib, m1] = _convert(capsys, monkeypatch, shared_dir, _m251(shared_dir), folder / "M1 Resept.xml")
        assert code == 0
        Bundle.model_validate(lib)
        by_url = {e["fullUrl"]: e for e in lib["entry"]}
        [patient] = _of(lib, "Patient")
        statements = _of(lib, "MedicationStatement")
        assert len(statements) == 5
        for statement in statements:
            assert any(c["system"] == ATC for c in statement["medicationCodeableConcept"]["coding"])
            assert statement["dosage"][0]["text"]
            assert by_url[statement["subject"]["reference"]]["resource"] is patient
        [written] = [e for e in m1["entry"] if e["resource"]["resourceType"] == "MedicationRequest"]
        created = by_url[written["fullUrl"]]
        assert created["request"]["method"] == "POST"  # write: create, so the M1's own MedicationRequest stays
        request, own = created["resource"], written["resource"]
        for key in ("medicationCodeableConcept", "dosageInstruction", "category", "reasonCode", "courseOfTherapyType", "substitution"):
            assert request.get(key) == own.get(key), key
        for key in ("numberOfRepeatsAllowed", "quantity"):
            assert request["dispenseRequest"][key] == own["dispenseRequest"][key], key
        assert by_url[request["subject"]["reference"]]["resource"] is patient

    def test_an_m912s_list_of_medicines_in_use_names_its_medicines(self, shared_dir, capsys, monkeypatch):
        """The M25.1 an M9.12 carries (VarerIBrukB64) has its own documents read too: every MedicationStatement names its medicine."""
        src = shared_dir / "norsk" / "eksempel" / "eresept" / "Påmelding multidose" / "M912 Nedlasting av PLL apotek.xml"
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, src)
        assert code == 0
        Bundle.model_validate(doc)
        statements = _of(doc, "MedicationStatement")
        assert len(statements) == 5
        assert all(any(c["system"] == ATC for c in s["medicationCodeableConcept"]["coding"]) for s in statements)

    @pytest.mark.parametrize(
        ("k", "change", "code", "says", "inner"),
        [
            (1, lambda d: d[: len(d) // 2], "structure", "not well-formed XML", " > line "),
            (2, lambda d: _XXE, "structure", "DOCTYPE", ""),
            (3, lambda d: _LAUGHS, "structure", "DOCTYPE", ""),
            (4, lambda d: d.replace(b"<Antall>", b"<Antal>").replace(b"</Antall>", b"</Antal>"), "value", "national schema", " > /ReseptDokLegemiddel/Antal"),
            (0, lambda d: d.replace(b"ReseptDokLegemiddel", b"ReseptDokHandelsvare"), "value", "not an e-resept M1 ReseptDokLegemiddel", " > /ReseptDokHandelsvare"),
        ],
        ids=["not-xml", "xxe", "entity-bomb", "xsd", "other-element"],
    )
    def test_a_document_that_cannot_be_read_refuses_the_list(self, shared_dir, capsys, monkeypatch, tmp_path, k, change, code, says, inner):
        """A ReseptDokLegemiddelB64 that is not well-formed, declares a DOCTYPE (XXE, entity bomb), breaks the M1 XSD or
        holds another element refuses the M25.1 with an OperationOutcome naming that entry's element, never a traceback,
        a file's content or an expanded entity."""
        bad = _with_document(tmp_path, _m251(shared_dir), k, change)
        exit_code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert exit_code == 1 and doc["resourceType"] == "OperationOutcome"
        [issue] = doc["issue"]
        assert issue["code"] == code and says in issue["diagnostics"]
        assert issue["diagnostics"].startswith("the embedded document is refused")
        assert issue["location"][0].startswith(f"{_ENTRY}[{k + 1}]/ReseptDokLegemiddelB64{inner}")
        assert "root:" not in json.dumps(doc) and "lollol" not in json.dumps(doc)

    def test_a_whole_message_in_place_of_the_document_refuses_the_list(self, shared_dir, capsys, monkeypatch, tmp_path):
        """The whole signed M1 message (MsgHead) where its ReseptDokLegemiddel belongs is refused at that element."""
        m1 = (_m251(shared_dir).parent / "M1 Resept.xml").read_bytes()
        bad = _with_document(tmp_path, _m251(shared_dir), 4, lambda d: m1)
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert code == 1
        [issue] = doc["issue"]
        assert issue["code"] == "value" and "not an e-resept M1 ReseptDokLegemiddel" in issue["diagnostics"]
        assert issue["location"] == [f"{_ENTRY}[5]/ReseptDokLegemiddelB64 > /MsgHead"]

    def test_a_document_that_is_not_base64_refuses_the_list_without_validation(self, shared_dir, capsys, monkeypatch, tmp_path):
        """With validation off (HELSEBRO_XSD_DIR unset) the base64 itself is checked: text that is not base64 is refused
        at its element (the national XSD, when on, refuses it first as a base64Binary that does not validate)."""
        bad = _with_document(tmp_path, _m251(shared_dir), 0, lambda d: "Tm90IGJhc2U2NCEh*****")
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        code = main(["convert", str(bad)])
        [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert code == 1
        [issue] = doc["issue"]
        assert issue["code"] == "value" and "not valid base64" in issue["diagnostics"]
        assert issue["location"] == [f"{_ENTRY}[1]/ReseptDokLegemiddelB64"]
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bad)
        assert code == 1 and doc["issue"][0]["location"] == [f"{_ENTRY}[1]/ReseptDokLegemiddelB64"]


_M5 = "Lege endrer på legemiddelbehandling/M5 Tilbakekalling.xml"
"""The national M5: withdraws f63b9535-… for Seponering (7500 2), with Merknad "Ikke oppgitt"."""
_OWN_M5 = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "ERM5.cases" / "tilbakekalling.xml"


def _patches(doc: dict) -> list[dict]:
    return [e for e in doc["entry"] if e["request"]["method"] == "PATCH"]


def _operations(entry: dict) -> list[tuple[str, str, str | None, object]]:
    """(type, path, name, value) of each FHIRPath Patch operation of a PATCH entry."""
    out = []
    for param in entry["resource"]["parameter"]:
        parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in param["part"]}
        out.append((parts["type"], parts["path"], parts.get("name"), parts.get("value")))
    return out


class TestWithdrawal:
    @pytest.mark.corpus
    def test_the_national_m5_changes_only_the_status_of_its_prescription(self, shared_dir, capsys, monkeypatch):
        """The national M5 converts to a valid Bundle whose prescription is a PATCH of status (stopped) and statusReason
        (Arsak and Merknad) under the ReseptId's identity, the M1's: no MedicationRequest is written whole."""
        path = shared_dir / "norsk" / "eksempel" / "eresept" / _M5
        if not path.is_file():
            pytest.skip("../shared/norsk/eksempel/eresept (the national M5 example) is not there")
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        Bundle.model_validate(doc)
        assert _of(doc, "MedicationRequest") == []
        [entry] = _patches(doc)
        [patient] = [e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"]
        condition = f"identifier=urn:ietf:rfc:3986|urn%3Auuid%3Af63b9535-5160-4972-b923-168114660619&subject={patient}"
        assert entry["request"] == {"method": "PATCH", "url": f"MedicationRequest?{condition}"}  # only the M5's patient's prescription
        assert "fullUrl" not in entry
        reason = {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.7500", "code": "2", "display": "Seponering"}], "text": "Ikke oppgitt"}
        assert _operations(entry) == [
            ("delete", "MedicationRequest.status", None, None),
            ("add", "MedicationRequest", "status", "stopped"),
            ("delete", "MedicationRequest.statusReason", None, None),
            ("add", "MedicationRequest", "statusReason", reason),
        ]
        [patient] = _of(doc, "Patient")
        assert [(i["system"], i["value"]) for i in patient["identifier"]] == [(FNR, "21014605158")]

    def test_an_m5_without_a_reason_text_patches_the_coded_reason(self, shared_dir, capsys, monkeypatch, tmp_path):
        """Our own M5 without its Merknad (optional in the schema): statusReason is Arsak alone."""
        [bare] = _variants(tmp_path, _OWN_M5.read_text("utf-8"), {"<Merknad>Behandlingen avsluttes</Merknad>": ""})
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, bare)
        assert code == 0
        [entry] = _patches(doc)
        reason = {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.7500", "code": "2", "display": "Seponering"}]}
        assert ("add", "MedicationRequest", "statusReason", reason) in _operations(entry)


_M10 = "Ekspedering og utlevering/M10 Utleveringsrapport.xml"
"""The national M10: a dispensing (MsgId 4a774ee6-…) of ReseptId c2883dc2-… on 2019-07-16."""
_M10_ANNULLED = "0b0d8a52-6f1e-4c1e-9d43-2f7e5a9c0e11"
"""The MsgId of an earlier M10 that our annulling variants of the national M10 name in AnnulleringsId."""


class TestDispensingReport:
    @pytest.mark.corpus
    def test_an_annulling_m10_retires_the_dispensing_it_names(self, shared_dir, capsys, monkeypatch, tmp_path):
        """Annullering=true with AnnulleringsId (the MsgId of the M10 annulled) marks that M10's MedicationDispense
        entered-in-error, a PATCH of its status under its identity: no new MedicationDispense is written."""
        path = shared_dir / "norsk" / "eksempel" / "eresept" / _M10
        if not path.is_file():
            pytest.skip("../shared/norsk/eksempel/eresept (the national M10 example) is not there")
        [annul] = _variants(tmp_path, path.read_text("utf-8"), {
            "<Annullering>false</Annullering>": "<Annullering>true</Annullering>",
            "<ByttereservasjonKunde>false</ByttereservasjonKunde>": f"<ByttereservasjonKunde>false</ByttereservasjonKunde><AnnulleringsId>{_M10_ANNULLED}</AnnulleringsId>",
        })
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, annul)
        assert code == 0
        Bundle.model_validate(doc)
        assert _of(doc, "MedicationDispense") == []
        [entry] = _patches(doc)
        [patient] = [e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"]
        condition = f"identifier=urn:ietf:rfc:3986|urn%3Auuid%3A{_M10_ANNULLED}&subject={patient}"
        assert entry["request"] == {"method": "PATCH", "url": f"MedicationDispense?{condition}"}
        assert _operations(entry) == [
            ("delete", "MedicationDispense.status", None, None),
            ("add", "MedicationDispense", "status", "entered-in-error"),
        ]

    @pytest.mark.corpus
    def test_an_m10_with_a_cancellation_code_reports_no_dispensing(self, shared_dir, capsys, monkeypatch, tmp_path):
        """An M10 with Kanselleringskode (the pharmacy broke off after downloading the prescription) reports that
        nothing was handed over: its MedicationDispense is cancelled, with no whenHandedOver."""
        path = shared_dir / "norsk" / "eksempel" / "eresept" / _M10
        if not path.is_file():
            pytest.skip("../shared/norsk/eksempel/eresept (the national M10 example) is not there")
        text = path.read_text("utf-8")
        [cancelled] = _variants(tmp_path, text, {
            "<ReservasjonRapportFastlege>": '<Kanselleringskode V="1" DN="Kansellert"/><ReservasjonRapportFastlege>',
        })
        _, [plain] = _convert(capsys, monkeypatch, shared_dir, path)
        [dispensed] = _of(plain, "MedicationDispense")
        assert dispensed["status"] == "completed" and dispensed["whenHandedOver"] == "2019-07-16"
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, cancelled)
        assert code == 0
        Bundle.model_validate(doc)
        [dispense] = _of(doc, "MedicationDispense")
        assert dispense["status"] == "cancelled"
        assert "whenHandedOver" not in dispense


def _codings_without_system(node, path: str = "") -> list[str]:
    """Where a Coding (an item of a `coding` list, or a `…Coding` element) has a code but no system."""
    found: list[str] = []
    if isinstance(node, dict):
        if path.endswith((".coding", "Coding")) and "code" in node and "system" not in node:
            found.append(f"{path}={node['code']}")
        for key, value in node.items():
            found += _codings_without_system(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            found += _codings_without_system(item, path)
    return found


class TestCodeSystems:
    @pytest.mark.corpus
    def test_a_coded_value_whose_list_the_standard_fixes_gets_that_system(self, shared_dir, capsys, monkeypatch):
        """kith:CS values carry no S: MsgInfo/Type (8279), Bruk (9101), Slektskap (9033), Varegruppekode (7402),
        LIB Type (7491) and Seponering/Arsak (7494) get their Volven list as system; no Coding of these examples lacks one."""
        eksempel = shared_dir / "norsk" / "eksempel"
        folders = [eksempel / "plo", eksempel / "eresept", eksempel / "Dialogmelding", eksempel / "Rekvisisjon" / "Rekvisisjon-v-1-6"]
        _, docs = _convert(capsys, monkeypatch, shared_dir, *folders)
        bundles = [d for d in docs if d["resourceType"] == "Bundle"]
        assert len(bundles) > 60
        resources = [e["resource"] for d in bundles for e in d["entry"] if "resource" in e]  # a DELETE has none
        assert [where for r in resources for where in _codings_without_system(r, r["resourceType"])] == []
        systems = {c["system"] for r in resources for c in _all_codings(r)}
        assert {f"urn:oid:2.16.578.1.12.4.1.1.{n}" for n in (8279, 9101, 9033, 7402, 7491, 7494)} <= systems

    @pytest.mark.corpus
    def test_rekvisisjon_1_5s_own_type_r_stays_without_a_system(self, shared_dir, capsys, monkeypatch):
        """Rekvisisjon 1.5 sends Type R, a code of no Volven list: kept as code and display, not given 8279."""
        path = shared_dir / "norsk" / "eksempel" / "Rekvisisjon" / "Rekvisisjon-v-1-5" / "Rekvisisjon_lab_v1-5_Ny.xml"
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        requisition = next(r for r in _of(doc, "ServiceRequest") if r["code"]["coding"][0]["code"] == "R")
        assert requisition["code"]["coding"] == [{"code": "R", "display": "Rekvisisjon"}]


def _all_codings(node) -> list[dict]:
    if isinstance(node, dict):
        own = [c for c in node.get("coding", []) if isinstance(c, dict) and "system" in c]
        return own + [c for value in node.values() for c in _all_codings(value)]
    if isinstance(node, list):
        return [c for item in node for c in _all_codings(item)]
    return []


class TestUnmappedInsideMappedElements:
    @pytest.mark.corpus
    def test_what_a_datatype_leaves_inside_the_prescription_is_reported(self, shared_dir, capsys, monkeypatch):
        """A datatype's `use:` on an element (the Dosage from ReseptDokLegemiddel), or a resource's `from:` (the
        prescription from m1:Resept), maps only what its rules read inside it: the M1's route (AdmMate), structured
        dose amounts, reseptgruppe, form and package size, which no rule maps, are listed by --unmapped; what the
        rules read (the dosage text, Kortdose, the ATC code, the varenummer) is not."""
        monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
        magistrell = shared_dir / "norsk" / "eksempel" / "eresept" / "Magistrell resept" / "M1 Magistrell resept.xml"
        case = Path(__file__).resolve().parents[2] / "mappings" / "kith" / "messages" / "ERM1.cases" / "resept_pakning.xml"
        assert main(["convert", "--unmapped", str(magistrell), str(case)]) == 0
        lines = capsys.readouterr().err.splitlines()
        [of_magistrell] = [line for line in lines if line.startswith(str(magistrell))]
        [of_case] = [line for line in lines if line.startswith(str(case))]
        forskrivning = "/MsgHead/Document/RefDoc/Content/Resept/ReseptDokLegemiddel/Forskrivning"
        assert f"{forskrivning}/AdministreringForskrivning/AdmMate" in of_magistrell
        for unmapped in ("Dosering/DoseFastTidspunkt/Mengde", "Legemiddelpakning/Reseptgruppe"):
            assert f"{forskrivning}/{unmapped}," in of_case + ","
        for mapped in ("DosVeiledEnkel", "Kortdose", "Bruksomrade", "Legemiddelpakning/Atc", "Legemiddelpakning/Varenr", "Legemiddelpakning/NavnFormStyrke", "Dosering/Starttidspunkt"):
            assert f"{forskrivning}/{mapped}" not in of_case
        assert "/Resept/Forskrivningsdato" not in of_case and "/ReseptDokLegemiddel/Reiterasjon" not in of_case
