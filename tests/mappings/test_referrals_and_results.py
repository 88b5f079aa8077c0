"""Henvisning, Epikrise, Rekvisisjon and Svarrapport (KITH XML) → FHIR R4 Bundles.

The national examples (../shared/norsk/eksempel) must all convert to valid
Bundles; the patient's national id sits under its no-basis system and the
parties under their HER-ids; a Svarrapport's results belong to their own
report; Forsendelsesstatus N/M/C keeps one identity; the fixture cases pass.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from lxml import etree

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "mappings" / "kith" / "messages"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
HER = "urn:oid:2.16.578.1.12.4.1.2"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
NLK = "urn:oid:2.16.578.1.12.4.1.1.7280"
UCUM = "http://unitsofmeasure.org"

FAMILIES = {"Henvisning": 21, "Epikrise": 6, "Svarrapport": 41, "Rekvisisjon": 19}

# National examples that are themselves invalid or unsupported, with the reason.
# None today: every example converts to a valid Bundle.
EXPECTED_OUTCOMES: dict[str, str] = {}


def _convert(capsys, monkeypatch, shared: Path, *paths: Path) -> tuple[int, list[dict]]:
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared / "norsk" / "skjema"))
    code = main(["convert", *map(str, paths)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _of(doc: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in doc["entry"] if e.get("resource", {}).get("resourceType") == kind]


def _by_url(doc: dict) -> dict[str, dict]:
    return {e["fullUrl"]: e["resource"] for e in doc["entry"]}


def _idents(resources: list[dict], system: str) -> set[str]:
    return {i["value"] for r in resources for i in r.get("identifier", []) if i.get("system") == system}


def _x(root: etree._Element, path: str) -> list[str]:
    return [str(v).strip() for v in root.xpath(path)]


def _expected_parties(root: etree._Element) -> tuple[list[str], set[str]]:
    """The patient's FNRs and the HER-ids of sender/receiver institutions and departments, read from the XML."""
    fnr = _x(root, '//*[local-name()="Patient"][*[local-name()="TypeOffId"]/@V="FNR"]/*[local-name()="OffId"]/text()')
    fnr += _x(root, '//*[local-name()="MsgInfo"]/*[local-name()="Patient"]/*[local-name()="Ident"][*[local-name()="TypeId"]/@V="FNR"]/*[local-name()="Id"]/text()')
    inst = '//*[local-name()="ServProvider" or local-name()="Requester"]/*[local-name()="HCP"]/*[local-name()="Inst"]'
    her = set(_x(root, f'({inst} | {inst}/*[local-name()="Dept"])[*[local-name()="TypeId"]/@V="HER"]/*[local-name()="Id"]/text()'))
    org = '//*[local-name()="MsgInfo"]/*[local-name()="Sender" or local-name()="Receiver"]//*[local-name()="Organisation"]'
    her |= set(_x(root, f'{org}/*[local-name()="Ident"][*[local-name()="TypeId"]/@V="HER"]/*[local-name()="Id"]/text()'))
    return fnr, her


class TestNationalExamples:
    @pytest.mark.corpus
    @pytest.mark.parametrize("family", sorted(FAMILIES))
    def test_every_example_is_a_valid_bundle_with_national_ids(self, family, shared_dir, capsys, monkeypatch):
        """Each example of the family converts (no crash) to a Bundle that validates; FNR and HER-ids carry their systems."""
        folder = shared_dir / "norsk" / "eksempel" / family
        files = sorted(str(p) for p in folder.rglob("*.xml"))
        assert len(files) == FAMILIES[family]
        code, docs = _convert(capsys, monkeypatch, shared_dir, folder)
        assert len(docs) == len(files)
        for path, doc in zip(files, docs):
            name = Path(path).name
            if name in EXPECTED_OUTCOMES:
                assert doc["resourceType"] == "OperationOutcome", name
                continue
            assert doc["resourceType"] == "Bundle", f"{name}: {doc}"
            Bundle.model_validate(doc)
            fnr, her = _expected_parties(etree.parse(path).getroot())
            [patient] = _of(doc, "Patient")
            assert _idents([patient], FNR) == set(fnr), name
            assert her and her <= _idents(_of(doc, "Organization"), HER), name
        assert code == (1 if any(Path(f).name in EXPECTED_OUTCOMES for f in files) else 0)

    @pytest.mark.corpus
    def test_svarrapport_results_belong_to_their_own_report(self, shared_dir, capsys, monkeypatch):
        """Svar_biokjemi 1.4: every Observation is referenced once, by its report; NLK codes; values and units by hand."""
        path = shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_biokjemi_v1-4_Ny.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        by_url = _by_url(doc)
        [report] = _of(doc, "DiagnosticReport")
        obs_urls = [e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert len(obs_urls) == 8
        referenced = [r["reference"] for r in report["result"]]
        referenced += [m["reference"] for o in _of(doc, "Observation") for m in o.get("hasMember", [])]
        assert sorted(referenced) == sorted(obs_urls)  # each exactly once, all from this report
        obs = {o["code"]["coding"][0]["code"]: o for o in _of(doc, "Observation")}
        assert all(o["code"]["coding"][0]["system"] == NLK for o in obs.values())
        ft4, ddimer, lh, leuk = obs["NOR05863"], obs["NPU19767"], obs["NOR05857"], obs["NPU02593"]
        assert ft4["valueQuantity"] == {"value": 11, "unit": "pmol/L", "system": UCUM, "code": "pmol/L"}
        assert ddimer["valueQuantity"]["value"] == 0.4 and ddimer["valueQuantity"]["code"] == "mg/L"
        assert ddimer["referenceRange"] == [{"text": "< 0,5"}]
        assert leuk["valueQuantity"] == {"value": 11.0, "unit": "10E9/L", "system": UCUM, "code": "10*9/L"}
        assert lh["interpretation"][0]["coding"][0]["code"] == "H"
        assert all(o["status"] == "final" for o in obs.values())
        # RefAnalysedSubject 1 → the serum specimen, by its identity identifier
        specimens = {s["accessionIdentifier"]["value"]: s for s in _of(doc, "Specimen")}
        assert ft4["specimen"]["identifier"] == specimens["1"]["identifier"][0]
        assert ddimer["specimen"]["identifier"] == specimens["2"]["identifier"][0]
        assert {by_url[s["reference"]]["accessionIdentifier"]["value"] for s in report["specimen"]} == {"1", "2", "3"}
        [request] = _of(doc, "ServiceRequest")
        assert report["basedOn"] == [{"reference": next(u for u, r in by_url.items() if r is request)}]
        assert report["identifier"][1] == {"use": "secondary", "system": "urn:ietf:rfc:3986", "value": "urn:uuid:01c59bd0-c6a5-11e6-9598-0800200c9a66"}

    @pytest.mark.corpus
    def test_grouped_results_are_members_of_their_group(self, shared_dir, capsys, monkeypatch):
        """A grouping ResultItem (Heading GR) is a panel Observation whose members are its own nested results."""
        path = shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_mikrobiologi_gruppert_v1-4_Ny.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        by_url = _by_url(doc)
        [report] = _of(doc, "DiagnosticReport")
        groups = [by_url[r["reference"]] for r in report["result"]]
        assert [g["code"]["text"] for g in groups][:2] == ["Antinukleære antistoff", "Immunglobuliner"]
        first = [by_url[m["reference"]] for m in groups[0]["hasMember"]]
        assert len(first) == 8 and {m["valueString"] for m in first} == {"Negativ"}

    def test_a_radiology_reports_paragraphs_stay_apart(self, shared_dir, capsys, monkeypatch):
        """The report text sent as XHTML keeps its paragraphs and line breaks: flattened, the conclusion ran into the
        findings ("jfr. kommentar.Leveren ses") and a line break vanished ("flowvariasjon.Ved kontrast")."""
        path = shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_radiologi_v1-4_Ny.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        [text] = [o["code"]["text"] for o in _of(doc, "Observation") if o["code"]["text"].startswith("R: ")]
        assert "jfr. kommentar.\n\nLeveren ses jevnt over" in text
        assert "god flowvariasjon.\nVed kontrast us" in text
        assert "  " not in text

    @pytest.mark.corpus
    def test_forsendelsesstatus_keeps_identity_and_cancels(self, shared_dir, capsys, monkeypatch):
        """N, M and C of one document are one resource: final, amended, entered-in-error (Svarrapport and Henvisning 1.0)."""
        ex = shared_dir / "norsk" / "eksempel"
        lab = ex / "Svarrapport" / "Svarrapport-v-1-4"
        _, docs = _convert(capsys, monkeypatch, shared_dir, *(lab / f"Svar_biokjemi_v1-4_{s}.xml" for s in ("Ny", "Endring", "Kansellering")))
        reports = [next(e for e in d["entry"] if e.get("resource", {}).get("resourceType") == "DiagnosticReport") for d in docs]
        assert len({e["fullUrl"] for e in reports}) == 1
        assert [e["resource"]["status"] for e in reports] == ["final", "amended", "entered-in-error"]
        henv = ex / "Henvisning" / "Henvisning_v1-0"
        _, docs = _convert(capsys, monkeypatch, shared_dir, *(henv / f"henvisning_v1.0_{s}.xml" for s in ("n", "m", "c")))
        requests = [next(e for e in d["entry"] if e["resource"]["resourceType"] == "ServiceRequest") for d in docs]
        assert len({e["fullUrl"] for e in requests}) == 1
        assert [e["resource"]["status"] for e in requests] == ["active", "active", "entered-in-error"]
        [cancelled] = _of(docs[2], "Condition")
        assert cancelled["verificationStatus"]["coding"][0]["code"] == "entered-in-error"

    @pytest.mark.corpus
    def test_svarrapport_change_and_cancel_retire_that_reports_results_in_the_record(self, shared_dir, capsys, monkeypatch, tmp_path):
        """Svar_biokjemi 1.4 N → M (one result left out) → C, beside another report of the same patient, applied to the record.

        M is the whole report again: the result it no longer has is entered-in-error, the others stay.
        C carries no results: every result and sample of that report is entered-in-error, and the other
        report (mikrobiologi, same patient) is untouched. A C for a report the record never saw applies.
        """
        from adapters.fhir.record import open_record
        from router.testing import isolated_settings

        lab = shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4"
        tree = etree.parse(str(lab / "Svar_biokjemi_v1-4_Endring.xml"))
        [left_out] = tree.xpath('//*[local-name()="ResultItem"][*[local-name()="IdResultItem"]="118891124"]')
        [left_out_code] = left_out.xpath('*[local-name()="Investigation"]/*[local-name()="Id"]/@V')
        left_out.getparent().remove(left_out)
        change = tmp_path / "Svar_biokjemi_uten_ett_Endring.xml"
        tree.write(str(change), xml_declaration=True, encoding="UTF-8")
        paths = [lab / "Svar_biokjemi_v1-4_Ny.xml", lab / "Svar_mikrobiologi_dyrkning_v1-4_Ny.xml", change,
                 lab / "Svar_biokjemi_v1-4_Kansellering.xml", lab / "Svar_patologi_cytologi_v1-4_Kansellering.xml"]
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0 and len(docs) == 5
        record = open_record(isolated_settings(tmp_path / "record"))
        try:
            def results(doc: dict, element: str = "result") -> dict[str, str]:
                [report] = _of(doc, "DiagnosticReport")
                [stored] = record.search("DiagnosticReport", {"identifier": f"{report['identifier'][0]['system']}|{report['identifier'][0]['value']}"})
                out = {}
                for ref in stored.get(element, []):
                    kind, id_ = ref["reference"].split("/")
                    out[id_] = record.read(kind, id_).get("status")
                return out

            record.apply(docs[0])
            record.apply(docs[1])
            bio, micro, samples = results(docs[0]), results(docs[1]), results(docs[0], "specimen")
            assert len(bio) == 8 and set(bio.values()) == {"final"}
            micro_versions = {o["id"]: o["meta"]["versionId"] for o in record.search("Observation", {}) if o["id"] in micro}
            record.apply(docs[2])
            after_m = {i: record.read("Observation", i)["status"] for i in bio}
            assert sorted(after_m.values()).count("entered-in-error") == 2, after_m  # FT4 (its own C) and the one left out
            [gone] = [o for o in record.search("Observation", {}) if o["id"] in bio and o["code"]["coding"][0]["code"] == left_out_code]
            assert gone["status"] == "entered-in-error"
            record.apply(docs[3])
            assert {record.read("Observation", i)["status"] for i in bio} == {"entered-in-error"}
            assert len(samples) == 3 and {record.read("Specimen", i)["status"] for i in samples} == {"entered-in-error"}
            # The other report of the same patient: not one result touched.
            assert {o["id"]: o["meta"]["versionId"] for o in record.search("Observation", {}) if o["id"] in micro} == micro_versions
            assert set(results(docs[1]).values()) <= {"final", "preliminary", "amended"}
            record.apply(docs[4])  # a cancel of a report never seen: applied, marks only itself
            [never] = _of(docs[4], "DiagnosticReport")
            assert never["status"] == "entered-in-error"
        finally:
            record.close()

    @pytest.mark.corpus
    def test_a_results_arithmetic_comparison_is_kept(self, shared_dir, capsys, monkeypatch, tmp_path):
        """Svar_biokjemi 1.4 with D-dimer "<0.4": ArithmeticComp in Volven 8239 codes (or the sign) → valueQuantity.comparator.

        LT 0.4 must never read as 0.4. NE has no FHIR comparator and is kept as a note.
        """
        src = (shared_dir / "norsk" / "eksempel" / "Svarrapport" / "Svarrapport-v-1-4" / "Svar_biokjemi_v1-4_Ny.xml").read_text("utf-8")
        value = '<NumResultValue V="0.4" U="mg/L"/>'
        assert value in src
        cases = {"LT": "<", "GE": ">=", "&lt;": "<", "NE": None}
        paths = []
        for i, code in enumerate(cases):
            path = tmp_path / f"svar_{i}.xml"
            path.write_text(src.replace(value, f'<ArithmeticComp V="{code}" DN="x{i}"/>{value}'), "utf-8")
            paths.append(path)
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        for (sent, expected), doc in zip(cases.items(), docs):
            [dimer] = [o for o in _of(doc, "Observation") if o["code"]["text"] == "P-D-dimer"]
            assert dimer["valueQuantity"]["value"] == 0.4 and dimer["valueQuantity"].get("comparator") == expected, sent
        assert {"text": "x3 0.4 mg/L"} in dimer["note"]  # NE: said in words

    @pytest.mark.corpus
    def test_epikrise_is_a_document_reference_linked_to_its_referral(self, shared_dir, capsys, monkeypatch):
        """Epikrise 1.2: DocumentReference with its sections as text, diagnoses as Conditions, the referral by ServReq/Id."""
        path = shared_dir / "norsk" / "eksempel" / "Epikrise" / "Epikrise_v1-2" / "epikrise_v1.2_n.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        by_url = _by_url(doc)
        [ref] = _of(doc, "DocumentReference")
        assert ref["identifier"][0]["value"] == "urn:uuid:b9270660-4567-11e7-9598-0800200c9a66"
        titles = [c["attachment"]["title"] for c in ref["content"]]
        assert "Forløp og behandling" in titles
        section = ref["content"][titles.index("Sykmelding")]["attachment"]
        assert section["contentType"] == "application/xhtml+xml"  # as it was written: XHTML stays XHTML
        markup = etree.fromstring(base64.b64decode(section["data"]))
        assert " ".join("".join(markup.itertext()).split()) == "Sykmeldt ut uken etter utskrivelsen."
        related = [by_url[r["reference"]] for r in ref["context"]["related"]]
        [referral] = [r for r in related if r["resourceType"] == "ServiceRequest"]
        assert referral["identifier"][0]["value"] == "urn:uuid:fdebda50-4567-11e7-9598-0800200c9a66"
        assert sorted(r["code"]["coding"][0]["code"] for r in related if r["resourceType"] == "Condition") == ["E119", "I252", "I330"]
        entry = next(e for e in doc["entry"] if e["resource"] is referral)
        assert entry["request"]["method"] == "POST"  # the referral is only created when absent
        assert _idents(_of(doc, "Practitioner"), HPR) == {"9144900", "9144889", "9144897"}  # responsible, fastlege, referrer


class TestFixtures:
    def _docs(self, converter, name: str, stem: str = "*") -> dict:
        [source] = sorted((CASES / f"{name}.cases").glob(f"{stem}.xml"))
        [item] = converter.convert(source.read_bytes())
        assert item.bundle is not None, item.error
        Bundle.model_validate(item.bundle)
        return item.bundle

    def test_a_result_links_to_the_requisition_it_answers(self, converter):
        """Svarrapport ServReq/Id = Rekvisisjon ServReq/Id: the report is basedOn the very same ServiceRequest."""
        req = self._docs(converter, "Rekvisisjon", "rekvisisjon_lab_1_6_ny")
        svar = self._docs(converter, "Svarrapport", "svar_lab_1_4_ny")
        [requisition] = [e for e in req["entry"] if e["resource"]["resourceType"] == "ServiceRequest" and "basedOn" not in e["resource"]]
        [report] = _of(svar, "DiagnosticReport")
        assert report["basedOn"] == [{"reference": requisition["fullUrl"]}]
        tests = [r for r in _of(req, "ServiceRequest") if "basedOn" in r]
        assert sorted(t["code"]["coding"][0]["code"] for t in tests) == ["NOR05172", "NPU03230", "NPU03429"]
        assert all(t["requisition"]["value"] == "urn:uuid:e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7081" for t in tests)

    @pytest.mark.parametrize(
        ("type_element", "code"),
        [
            ('<Type V="REQ_LAB" DN="Rekvisisjon-Laboratoriemedisin"/>', {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.8279", "code": "REQ_LAB", "display": "Rekvisisjon-Laboratoriemedisin"}]}),
            ('<Type DN="Rekvisisjon-Laboratoriemedisin"/>', {"text": "Rekvisisjon-Laboratoriemedisin"}),
            ('<Type V="R" DN="Rekvisisjon"/>', {"coding": [{"code": "R", "display": "Rekvisisjon"}]}),
        ],
    )
    def test_a_requisitions_kind_is_kept_with_or_without_its_code(self, converter, type_element, code):
        """Message/Type → the requisition's code: a Volven 8279 Coding, 1.5's R as sent, and a display name alone as text (not dropped)."""
        source = CASES / "Rekvisisjon.cases" / "rekvisisjon_lab_1_6_ny.xml"
        xml = source.read_bytes().replace(b'<Type V="REQ_LAB" DN="Rekvisisjon-Laboratoriemedisin"/>', type_element.encode(), 1)
        [item] = converter.convert(xml)
        assert item.bundle is not None, item.error
        [requisition] = [r for r in _of(item.bundle, "ServiceRequest") if "basedOn" not in r]
        assert requisition["code"] == code

    def test_a_henvisning_2_0_change_keeps_its_document_identity(self, converter):
        """Henvisning 2.0 ServType M: the ServiceRequest is found by DocumentId, the MsgId is a second identifier."""
        doc = self._docs(converter, "Henvisning20", "henvisning_2_0_endring")
        [sr] = _of(doc, "ServiceRequest")
        assert [i["value"] for i in sr["identifier"]] == ["urn:uuid:9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4", "urn:uuid:5c2d7e10-1111-4a2b-8c3d-4e5f60718293"]
        assert sr["priority"] == "routine" and sr["status"] == "active"
        assert _by_url(doc)[sr["requester"]["reference"]]["identifier"][0] == {"system": HPR, "value": "9144900"}

    def test_cases_pass_through_the_cli(self):
        """`helsebro mappings test mappings/kith` passes, including a case per message mapping here."""
        proc = subprocess.run([sys.executable, "-m", "router.cli", "mappings", "test", "mappings/kith"], cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for case in ("Henvisning/henvisning_1_1_ny", "Henvisning20/henvisning_2_0_endring", "Epikrise/epikrise_1_2_ny", "Rekvisisjon/rekvisisjon_lab_1_6_ny", "Svarrapport/svar_lab_1_4_ny"):
            assert f"PASS {case}" in proc.stdout


class TestWhatAReceivingRecordNeeds:
    """Next of kin, precautions, consent and the patient's GP are read, not dropped (review H136)."""

    def _case(self, converter: Any, name: str, stem: str) -> dict[str, Any]:
        [item] = converter.convert((CASES / f"{name}.cases" / f"{stem}.xml").read_bytes())
        assert item.bundle is not None, item.error
        Bundle.model_validate(item.bundle)
        bundle: dict[str, Any] = item.bundle
        return bundle

    def test_henvisning_2_0_next_of_kin_is_a_related_person(self, converter: Any) -> None:
        """po:ParorendeForesatt (poKomponent 2017) → RelatedPerson of the patient, as PLO maps it."""
        doc = self._case(converter, "Henvisning20", "henvisning_2_0_paaroerende_samtykke")
        by_url = _by_url(doc)
        [person] = _of(doc, "RelatedPerson")
        assert by_url[person["patient"]["reference"]]["resourceType"] == "Patient"
        assert person["relationship"][0]["coding"][0]["code"] == "EF"
        assert person["name"][0]["family"] == "Testesen" and person["name"][0]["given"] == ["Kari"]
        assert [t["value"] for t in person["telecom"]] == ["40000000"]

    def test_henvisning_2_0_precaution_is_a_flag(self, converter: Any) -> None:
        """PatientPrecaution (free text, period) → a Flag on the patient, so whoever meets the patient sees it."""
        doc = self._case(converter, "Henvisning20", "henvisning_2_0_paaroerende_samtykke")
        by_url = _by_url(doc)
        [flag] = _of(doc, "Flag")
        assert flag["status"] == "active"
        assert flag["code"]["text"] == "Smitte: MRSA-bærer"
        assert flag["period"]["start"].startswith("2024-01-10")
        assert by_url[flag["subject"]["reference"]]["resourceType"] == "Patient"

    def test_henvisning_2_0_consent_is_a_consent_the_referral_points_to(self, converter: Any) -> None:
        """Consent (Volven 9064) → Consent of the patient (date, given by), the referral's supportingInfo."""
        doc = self._case(converter, "Henvisning20", "henvisning_2_0_paaroerende_samtykke")
        by_url = _by_url(doc)
        [consent] = _of(doc, "Consent")
        assert consent["status"] == "active"
        assert consent["dateTime"].startswith("2024-03-05")
        codes = {(c["system"], c["code"]) for cc in consent["category"] for c in cc.get("coding", [])}
        assert ("urn:oid:2.16.578.1.12.4.1.1.9064", "1") in codes
        assert consent["performer"] == [{"display": "Test Testesen"}]
        assert by_url[consent["patient"]["reference"]]["resourceType"] == "Patient"
        [sr] = _of(doc, "ServiceRequest")
        assert [by_url[r["reference"]] for r in sr["supportingInfo"]] == [consent]

    def test_epikrise_names_the_patients_gp_and_referring_doctor(self, converter: Any) -> None:
        """PatRelHCP FLE → Patient.generalPractitioner; HHE → the referral's requester (as in Henvisning)."""
        doc = self._case(converter, "Epikrise", "epikrise_1_2_fastlege")
        by_url = _by_url(doc)
        [patient] = _of(doc, "Patient")
        [gp] = [by_url[r["reference"]] for r in patient["generalPractitioner"]]
        assert gp["identifier"][0] == {"system": HPR, "value": "9144889"}
        [sr] = _of(doc, "ServiceRequest")
        assert by_url[sr["requester"]["reference"]]["identifier"][0] == {"system": HPR, "value": "9144897"}

    @pytest.mark.corpus
    def test_henvisning_1_1_next_of_kin_and_gp(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """Henvisning 1.1: po:ParorendeForesatt (poKomponent 2009) → RelatedPerson; PatRelHCP FLE → generalPractitioner."""
        path = shared_dir / "norsk" / "eksempel" / "Henvisning" / "Henvisning_v1-1" / "henvisning_v1.1_n.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        by_url = _by_url(doc)
        [person] = _of(doc, "RelatedPerson")
        assert person["relationship"][0]["coding"][0]["code"] == "SD"
        [patient] = _of(doc, "Patient")
        [gp] = [by_url[r["reference"]] for r in patient["generalPractitioner"]]
        assert gp["identifier"][0] == {"system": HPR, "value": "9144889"}


class TestWhoElseAndHow:
    """The copy recipients of an Epikrise and the interpreter need of a Henvisning 2.0 are read, not dropped (review H159)."""

    @pytest.mark.corpus
    def test_epikrise_copy_recipients_are_the_recipients_of_its_sending(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """CopyDest (kopimottaker) → a Communication of the letter, its recipients the copy departments under their HER-ids."""
        path = shared_dir / "norsk" / "eksempel" / "Epikrise" / "Epikrise_v1-2" / "epikrise_v1.2_n.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        Bundle.model_validate(doc)
        by_url = _by_url(doc)
        [sending] = _of(doc, "Communication")
        recipients = [by_url[r["reference"]] for r in sending["recipient"]]
        assert _idents(recipients, HER) == {"95136"}
        [letter] = _of(doc, "DocumentReference")
        assert [by_url[p["contentReference"]["reference"]] for p in sending["payload"]] == [letter]
        assert by_url[sending["subject"]["reference"]]["resourceType"] == "Patient"
        assert sending["status"] == "completed"

    @pytest.mark.corpus
    def test_a_cancelled_epikrise_cancels_its_sending(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """ServType C: the copies' Communication is entered-in-error, under the same identity as the first."""
        folder = shared_dir / "norsk" / "eksempel" / "Epikrise" / "Epikrise_v1-2"
        _, docs = _convert(capsys, monkeypatch, shared_dir, folder / "epikrise_v1.2_n.xml", folder / "epikrise_v1.2_c.xml")
        [new], [cancel] = (_of(d, "Communication") for d in docs)
        assert (new["identifier"], cancel["status"]) == (cancel["identifier"], "entered-in-error")

    @pytest.mark.corpus
    def test_henvisning_2_0_interpreter_need_is_a_flag(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """po:InfoAssistertKommunikasjon (poKomponent 2017) → the interpreter Flag PLO makes: language, whom it concerns, note."""
        path = shared_dir / "norsk" / "eksempel" / "Henvisning" / "Henvisning_v2-0" / "Henvisning_ny_tilstand_v2-0_Ny.xml"
        _, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        Bundle.model_validate(doc)
        by_url = _by_url(doc)
        [flag] = [f for f in _of(doc, "Flag") if "tolk" in f["code"]["text"]]
        assert flag["code"]["text"].startswith("Behov for tolk: NORDSAMISK Gjelder: Mor Telokk")
        assert flag["status"] == "active"
        assert by_url[flag["subject"]["reference"]]["resourceType"] == "Patient"


V8304 = "urn:oid:2.16.578.1.12.4.1.1.8304"
V8306 = "urn:oid:2.16.578.1.12.4.1.1.8306"


def _priority_codes(sr: dict[str, Any], system: str) -> list[tuple[str, str]]:
    """The Volven priority codings a ServiceRequest keeps as categories: (code, display)."""
    return [(c["code"], c.get("display", "")) for cat in sr.get("category", []) for c in cat.get("coding", []) if c.get("system") == system]


class TestReferralPriority:
    """A referral's or a test's priority is read, never dropped (session 30): Henvisning 2.0 through
    Volven 8306 (its own list), Rekvisisjon through 8304 with the test's own priority first; the code as
    sent is always a category beside FHIR's four-valued priority, and a code the table lacks gives no
    priority but stays as that category."""

    @pytest.mark.corpus
    def test_national_henvisning_2_0_examples_keep_their_priority(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """Every 2.0 example converts through `helsebro convert`: N → routine, PK (pakkeforløp) → urgent, each with its 8306 code."""
        folder = shared_dir / "norsk" / "eksempel" / "Henvisning" / "Henvisning_v2-0"
        files = sorted(folder.glob("*.xml"))
        code, docs = _convert(capsys, monkeypatch, shared_dir, *files)
        assert code == 0 and len(docs) == len(files) == 13
        expected = {"N": "routine", "PK": "urgent"}
        seen = set()
        for path, doc in zip(files, docs):
            [sent] = etree.parse(str(path)).xpath('//*[local-name()="ReqServ"]/*[local-name()="Priority"]/@V')
            [sr] = _of(doc, "ServiceRequest")
            assert sr["priority"] == expected[sent], path.name
            assert [c for c, _ in _priority_codes(sr, V8306)] == [sent], path.name
            seen.add(sent)
        assert seen == {"N", "PK"}

    def test_a_code_8306_does_not_list_gives_no_priority_but_is_kept(self, converter: Any) -> None:
        """14 "Innen to uker" is an 8304 code, not 8306's: priority is not guessed, the code and its name stay."""
        [item] = converter.convert((CASES / "Henvisning20.cases" / "henvisning_2_0_prioritet_utenfor_8306.xml").read_bytes())
        assert item.bundle is not None, item.error
        [sr] = _of(item.bundle, "ServiceRequest")
        assert "priority" not in sr
        assert _priority_codes(sr, V8306) == [("14", "Innen to uker")]

    def test_a_tests_own_priority_wins_over_its_groups(self, converter: Any) -> None:
        """Rekvisisjon: ReqInvestigation N with P-Kalium's own 1H → Natrium routine, Kalium asap (before: routine), Hb stat."""
        [item] = converter.convert((CASES / "Rekvisisjon.cases" / "rekvisisjon_lab_1_6_prioritet.xml").read_bytes())
        assert item.bundle is not None, item.error
        Bundle.model_validate(item.bundle)
        tests = {t["code"]["coding"][0]["display"]: t for t in _of(item.bundle, "ServiceRequest") if "basedOn" in t}
        assert {k: t["priority"] for k, t in tests.items()} == {"P-Natrium": "routine", "P-Kalium": "asap", "B-Hemoglobin": "stat"}
        assert _priority_codes(tests["P-Kalium"], V8304) == [("1H", "Innen en time")]
        assert _priority_codes(tests["P-Natrium"], V8304) == [("N", "Elektiv/Ordinær (elektiv)")]

    def test_an_unknown_requisition_priority_is_kept_as_sent(self, converter: Any) -> None:
        """A ReqInvestigation Priority no 8304 entry lists: no priority, the code as a category (before: nothing at all)."""
        xml = (CASES / "Rekvisisjon.cases" / "rekvisisjon_lab_1_6_prioritet.xml").read_bytes()
        xml = xml.replace('<Priority V="0" DN="Øyeblikkelig hjelp"/>'.encode(), b'<Priority V="ZZ" DN="Ukjent kode"/>')
        [item] = converter.convert(xml)
        assert item.bundle is not None, item.error
        [hb] = [t for t in _of(item.bundle, "ServiceRequest") if t.get("code", {}).get("coding", [{}])[0].get("code") == "NOR05172"]
        assert "priority" not in hb
        assert _priority_codes(hb, V8304) == [("ZZ", "Ukjent kode")]


class TestEpikriseStay:
    """The stay an Epikrise reports is an Encounter, the letter's context.encounter (session 30)."""

    @pytest.mark.corpus
    def test_national_epikrise_examples_report_their_stay(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """epikrise 1.1 and 1.2 n/m through `helsebro convert`: one finished Encounter per letter, n and m the same stay."""
        ex = shared_dir / "norsk" / "eksempel" / "Epikrise"
        paths = [ex / "Epikrise_v1-2" / "epikrise_v1.2_n.xml", ex / "Epikrise_v1-2" / "epikrise_v1.2_m.xml", ex / "Epikrise_v1-1" / "epikrise_v1.1_n.xml"]
        code, docs = _convert(capsys, monkeypatch, shared_dir, *paths)
        assert code == 0
        stays = []
        for doc in docs:
            Bundle.model_validate(doc)
            by_url = _by_url(doc)
            [stay] = _of(doc, "Encounter")
            [letter] = _of(doc, "DocumentReference")
            assert [by_url[r["reference"]] for r in letter["context"]["encounter"]] == [stay]
            assert stay["status"] == "finished"
            assert stay["class"]["code"] == "IMP"
            assert stay["type"][0]["coding"] == [{"system": "urn:oid:2.16.578.1.12.4.1.1.8240", "code": "1", "display": "Heldøgnsopphold"}]
            assert stay["period"] == {"start": "2017-04-27T09:00:10+02:00", "end": "2017-05-04T09:20:12+02:00"}
            assert stay["hospitalization"]["dischargeDisposition"]["coding"][0]["display"] == "Ut til hjemmet"
            assert by_url[stay["subject"]["reference"]]["resourceType"] == "Patient"
            dept = by_url[stay["serviceProvider"]["reference"]]
            assert _idents([dept], HER) == {"94866"}  # the writing department, part of its institution
            assert _idents([by_url[dept["partOf"]["reference"]]], HER) == {"91393"}
            stays.append(next(e["request"]["url"] for e in doc["entry"] if e["resource"] is stay))
        assert stays[0] == stays[1] != stays[2]  # n and m: one stay (ServProvId); 1.1 is another letter

    @pytest.mark.corpus
    def test_a_cancelled_epikrise_takes_its_stay_with_it(self, shared_dir: Path, capsys: Any, monkeypatch: Any, tmp_path: Path) -> None:
        """epikrise_v1.2_n then _c, applied to the record: the C restates no event, and the stay becomes entered-in-error."""
        from adapters.fhir.record import open_record
        from router.testing import isolated_settings

        folder = shared_dir / "norsk" / "eksempel" / "Epikrise" / "Epikrise_v1-2"
        code, docs = _convert(capsys, monkeypatch, shared_dir, folder / "epikrise_v1.2_n.xml", folder / "epikrise_v1.2_c.xml")
        assert code == 0
        record = open_record(isolated_settings(tmp_path / "record"))
        try:
            record.apply(docs[0])
            record.apply(docs[0])  # twice: still one stay
            [stay] = record.search("Encounter", {})
            assert stay["status"] == "finished"
            record.apply(docs[1])
            assert record.read("Encounter", stay["id"])["status"] == "entered-in-error"
            assert len(record.search("Encounter", {})) == 1
        finally:
            record.close()

    def test_two_reported_events_are_two_stays(self, converter: Any) -> None:
        """A stay and a later outpatient check in one letter: two Encounters (IMP, AMB), both the letter's context."""
        [item] = converter.convert((CASES / "Epikrise.cases" / "epikrise_1_2_opphold_avdeling.xml").read_bytes())
        assert item.bundle is not None, item.error
        Bundle.model_validate(item.bundle)
        by_url = _by_url(item.bundle)
        [letter] = _of(item.bundle, "DocumentReference")
        stays = [by_url[r["reference"]] for r in letter["context"]["encounter"]]
        assert [s["class"]["code"] for s in stays] == ["IMP", "AMB"]
        assert stays[0]["priority"]["coding"] == [{"system": V8304, "code": "0", "display": "Øyeblikkelig hjelp"}]
        assert {by_url[s["serviceProvider"]["reference"]]["name"] for s in stays} == {"Ortopedisk avdeling"}
        assert len({s["id"] for s in stays}) == 2

    @pytest.mark.parametrize(
        ("adm_cat", "klass"),
        [("2", ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SS")), ("7", ("urn:oid:2.16.578.1.12.4.1.1.8240", "7")), (None, ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP"))],
    )
    def test_the_kind_of_contact_is_the_class(self, converter: Any, adm_cat: str | None, klass: tuple[str, str]) -> None:
        """AdmCat (8240) → class: dagbehandling is a short stay; an unknown code is kept under 8240's system; none is IMP."""
        xml = (CASES / "Epikrise.cases" / "epikrise_1_2_ny.xml").read_text("utf-8")
        sent = '\t\t\t<Service>\n\t\t\t\t<AdmCat V="1" DN="Heldøgnsopphold"/>\n\t\t\t</Service>'
        assert sent in xml
        xml = xml.replace(sent, f'\t\t\t<Service>\n\t\t\t\t<AdmCat V="{adm_cat}" DN="Kontakt"/>\n\t\t\t</Service>' if adm_cat else "\t\t\t<Service/>")
        [item] = converter.convert(xml.encode())
        assert item.bundle is not None, item.error
        [stay] = _of(item.bundle, "Encounter")
        assert (stay["class"]["system"], stay["class"]["code"]) == klass
        assert ("type" in stay) == (adm_cat is not None)


class TestSvarrapportResultContent:
    """What a lab result says must arrive unchanged in meaning (review H206)."""

    V14 = ("Svarrapport", "Svarrapport-v-1-4")

    def _observations(self, capsys: Any, monkeypatch: Any, shared_dir: Path, name: str) -> dict[str, dict]:
        path = shared_dir.joinpath("norsk", "eksempel", *self.V14, name)
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        return {o["code"]["text"]: o for o in _of(doc, "Observation")}

    @pytest.mark.corpus
    def test_a_changed_result_is_corrected_not_final(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """Endring: B-Hemoglobin 15 → 12 and Ro60 Negativ → Positiv carry ServType M and StatusInvestigation "Endelig":
        `corrected` (HL7 v2 OBX-11 C), never a plain `final` beside the unchanged results."""
        hb = self._observations(capsys, monkeypatch, shared_dir, "Svar_biokjemi_v1-4_Endring.xml")
        assert hb["B-Hemoglobin"]["status"] == "corrected" and hb["B-Hemoglobin"]["valueQuantity"]["value"] == 12.0
        assert hb["P-D-dimer"]["status"] == "final" and hb["Us-FT4"]["status"] == "entered-in-error"
        ana = self._observations(capsys, monkeypatch, shared_dir, "Svar_mikrobiologi_gruppert_v1-4_Endring.xml")
        assert ana["P-Ro60 IgG"]["status"] == "corrected" and ana["P-Ro60 IgG"]["valueString"] == "Positiv"
        assert ana["P-SSA IgG"]["status"] != "corrected"

    @pytest.mark.corpus
    def test_a_plain_reference_range_has_low_and_high_and_keeps_its_text(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """Descr "3,5 - 11,0" (decimal comma) → low 3.5, high 11.0 in the result's UCUM unit; "< 1,2" stays text only."""
        obs = self._observations(capsys, monkeypatch, shared_dir, "Svar_biokjemi_v1-4_Ny.xml")
        [leuk] = obs["B-Leukocytter"]["referenceRange"]
        assert leuk["text"] == "3,5 - 11,0"
        assert leuk["low"] == {"value": 3.5, "unit": "10E9/L", "system": UCUM, "code": "10*9/L"}
        assert leuk["high"] == {"value": 11.0, "unit": "10E9/L", "system": UCUM, "code": "10*9/L"}
        assert obs["P-INR"]["referenceRange"] == [{"text": "< 1,2"}]
        assert obs["Us-LH"]["referenceRange"] == [{"text": "< 12"}]

    @pytest.mark.corpus
    def test_a_susceptibility_is_interpreted_s_i_r(self, shared_dir: Path, capsys: Any, monkeypatch: Any) -> None:
        """Resistensbestemmelse in Volven 8271 → interpretation S/I/R (as OBX-8); Mecillinam's "0,25" stays the value text."""
        path = shared_dir.joinpath("norsk", "eksempel", *self.V14, "Svar_mikrobiologi_dyrkning_v1-4_Ny.xml")
        code, [doc] = _convert(capsys, monkeypatch, shared_dir, path)
        assert code == 0
        v3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        seen = {}
        for o in _of(doc, "Observation"):
            if o.get("derivedFrom"):
                [sir] = o["interpretation"]
                [coding] = sir["coding"]
                assert coding["system"] == v3
                assert coding["code"] == o["valueCodeableConcept"]["coding"][0]["code"]
                seen.setdefault(o["code"]["text"], []).append(coding["code"])
        assert seen["Us-Ampicillin"] == ["R", "R"] and seen["Us-Mecillinam"] == ["S"]
        assert seen["Us-Trimetoprim+Sulfametoksazol"] == ["I", "I"]
        [mec] = [o for o in _of(doc, "Observation") if o["code"]["text"] == "Us-Mecillinam"]
        assert mec["valueCodeableConcept"]["text"] == "0,25"

    def test_the_fixture_case_says_the_same(self, converter: Any) -> None:
        """svar_lab_1_4_endring_resistens: corrected Hb with its range, INR "< 1,2" unparsed, S and R interpreted."""
        [item] = converter.convert((CASES / "Svarrapport.cases" / "svar_lab_1_4_endring_resistens.xml").read_bytes())
        assert item.bundle is not None, item.error
        Bundle.model_validate(item.bundle)
        obs = {o["code"]["text"]: o for o in _of(item.bundle, "Observation")}
        assert obs["B-Hemoglobin"]["status"] == "corrected"
        assert obs["B-Hemoglobin"]["referenceRange"][0]["low"]["value"] == 11.7
        assert obs["P-INR"]["referenceRange"] == [{"text": "< 1,2"}]
        assert obs["Us-Mecillinam"]["interpretation"][0]["coding"][0]["code"] == "S"
        assert obs["Us-Ampicillin"]["interpretation"][0]["coding"][0]["code"] == "R"
