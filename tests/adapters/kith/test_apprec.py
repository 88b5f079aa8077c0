"""Tests for adapters/kith/apprec.py: the error table, versions, addresses, and XSD-valid AppRecs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from adapters.kith.apprec import APPREC_ERROR_FOR, apprec_error_for, apprec_version_for, build_apprecs
from adapters.kith.dispatch import read_message
from adapters.kith.envelope import APPREC_NS, KithEnvelope
from adapters.kith.errors import InvalidMsgId, PatientInsufficient, PatientNotFound, SchemaInvalid
from router.errors import DecodeError, InvalidContent, InvalidNationalId, MessageError, NotInTable, Refused, RequiredMissing, UnknownMessage

from .conftest import FAMILIES, PLO_16, examples

NOW = datetime(2024, 3, 1, 12, 30, tzinfo=ZoneInfo("Europe/Oslo"))
STATUS = "Dialogmelding/Dialogmelding-v1-1/Status_paa_henvisning-InnkaltEtterViderehenvisning.xml"
ERRORS = [
    (DecodeError("not well-formed XML", location="line 1, column 5"), "T01"),
    (SchemaInvalid("XML does not validate", location="/MsgHead/MsgInfo/MsgId"), "T02"),
    (UnknownMessage("no national schema"), "T10"),
    (InvalidMsgId("MsgId is not a UUID"), "E10"),
    (PatientNotFound("patient not in the receiving system"), "E35"),
    (PatientInsufficient("no national id and no name"), "E36"),
    (InvalidNationalId("the patient's FNR fails its check digits", location="/MsgHead/MsgInfo/Patient/Ident/Id"), "E31"),
    (Refused("destination said no"), "X99"),
    # review H160: an element the mapping requires with no value is a fault in the message's form (T99, as HL7 0357's 101);
    # 8221 has no code for a table value (HL7 0357's 103): X99, as any other error.
    (RequiredMissing("Observation.code is required, but the result gives no value", location="/Message/ServRprt/ResultItem/Investigation"), "T99"),
    (NotInTable("code is not in table volven-7408", location="/MsgHead/Document/RefDoc/Content"), "X99"),
]


def _ns(apprec) -> dict[str, str]:
    return {"a": APPREC_NS[apprec.version]}


def _envelope(example, relative: str = PLO_16):
    received = read_message(example(relative))
    assert received.envelope is not None
    return received.envelope


class TestAppRecErrorFor:
    @pytest.mark.parametrize(("error", "code"), ERRORS)
    def test_table(self, error, code):
        """Each error class answers with its Volven 8221 code."""
        assert apprec_error_for(error)[0] == code

    def test_subclass_answers_like_parent(self):
        """An unlisted subclass answers like its nearest listed parent; plain InvalidContent is X99."""

        class Truncated(DecodeError):
            pass

        assert apprec_error_for(Truncated("x"))[0] == "T01"
        assert apprec_error_for(InvalidContent("x"))[0] == "X99"
        assert set(APPREC_ERROR_FOR) >= {DecodeError, SchemaInvalid, UnknownMessage, InvalidMsgId, MessageError}


class TestThePatientsNationalId:
    """A fødselsnummer, D-nummer or FH-nummer that fails its check digits is E31 when it is the patient's, X99 elsewhere."""

    @pytest.mark.parametrize("where", ["/MsgHead/MsgInfo/Patient/Ident/Id", "/MsgHead/MsgInfo/Patient/Ident[2]/Id", "/Message/ServRprt/Patient/OffId", "/Message/ServReq/Patient/OffId"])
    def test_the_patients_number_is_e31(self, where):
        """HIS 80415 §6.3, Volven 8221 E31 "Pasientens fødselsnummer er feil": the sender learns which number to correct."""
        assert apprec_error_for(InvalidNationalId("bad check digits", location=where)) == ("E31", "Pasientens fødselsnummer er feil")

    @pytest.mark.parametrize("where", [None, "/MsgHead/Document/RefDoc/Content/Innleggelsesrapport/Parorende/Ident/Id", "/Message/ServRprt/Patient/InfItem/OffId"])
    def test_another_persons_number_is_x99(self, where):
        """A relative's or a professional's number is not the patient's: E31 would send the sender to the wrong field."""
        assert apprec_error_for(InvalidNationalId("bad check digits", location=where))[0] == "X99"


class TestAppRecVersionFor:
    @pytest.mark.parametrize(
        ("relative", "version"),
        [
            ("plo/1_5/Innleggelsesrapport-v1_5/Innleggelsesrapport_v1-5_Ny.xml", "1.0"),
            ("plo/1_6/innleggelsesrapport_1_6_mottak/Innleggelsesrapport_v1-6_Ny.xml", "1.1"),
            ("Dialogmelding/Dialogmelding-v1-0/Dialogmelding_avvik_v1-0.xml", "1.0"),
            ("Dialogmelding/Dialogmelding-v1-1/Helsefaglig dialog.xml", "1.1"),
            ("Epikrise/Epikrise_v1-1/epikrise_v1.1_n.xml", "1.0"),
            ("Epikrise/Epikrise_v1-2/epikrise_v1.2_n.xml", "1.1"),
            ("Henvisning/Henvisning_v1-0/henvisning_v1.0_n.xml", "1.0"),
            ("Henvisning/Henvisning_v1-1/henvisning_v1.1_n.xml", "1.1"),
            ("Henvisning/Henvisning_v2-0/Henvisning_ny_tilstand_v2-0_Ny.xml", "1.1"),
            ("Rekvisisjon/Rekvisisjon-v-1-5/Rekvisisjon_lab_v1-5_Ny.xml", "1.0"),
            ("Rekvisisjon/Rekvisisjon-v-1-6/Rekvisisjon_lab_v1-6_Ny.xml", "1.1"),
            ("Svarrapport/Svarrapport-v-1-3/Svar_biokjemi_v1-3_Ny.xml", "1.0"),
            ("Svarrapport/Svarrapport-v-1-4/Svar_biokjemi_v1-4_Ny.xml", "1.1"),
            ("eresept/Lege endrer på legemiddelbehandling/M1 Resept.xml", "1.0"),
        ],
    )
    def test_by_standard(self, example, relative, version):
        """The incoming standard and version pick the AppRec version (HITS 1168 §8.3–8.4)."""
        assert apprec_version_for(_envelope(example, relative)) == version

    @pytest.mark.parametrize("namespace", [
        "http://www.kith.no/xmlstds/nav/pasientliste/2010-02-01",
        "http://www.kith.no/xmlstds/nav/fastlege/2010-02-01",
        "http://www.kith.no/xmlstds/nav/egenandel/2016-06-10",
        "http://www.kith.no/xmlstds/nav/egenandelmengde/2016-06-10",
    ])
    def test_helfo_messages_get_1_0(self, namespace):
        """Helfo's messages (skjema/HELFO*, namespaces under xmlstds/nav/) are answered with 1.0, as every NAV/Helfo message (HITS 1168 §8.3)."""
        env = KithEnvelope(kind="MsgHead", root="MsgHead", msg_type="", msg_type_name="", msg_id="", gen_date="", mig_version="",
                           conversation=None, payload_namespace=namespace, payload_root="X", payload_version=None, sender=None, receiver=None)
        assert apprec_version_for(env) == "1.0"

    def test_unreadable(self):
        """A message that could not be read is answered with 1.1."""
        assert apprec_version_for(None) == "1.1"


class TestBuildApprecs:
    @pytest.mark.parametrize("family", FAMILIES)
    def test_national_examples_validate(self, family, schemas):
        """For every readable example, the OK AppRec and one per error code validate against the AppRec XSD."""
        seen: Counter[tuple[str, str]] = Counter()
        for path in examples(family):
            envelope = read_message(path.read_bytes()).envelope
            if envelope is None:
                continue
            for error, code in [(None, None), *ERRORS]:
                for apprec in build_apprecs(envelope, error=error, now=NOW):
                    doc = etree.fromstring(apprec.xml)
                    schemas.validate(doc, (APPREC_NS[apprec.version],))
                    assert apprec.error_code == code and apprec.positive == (error is None)
                    seen[(apprec.version, apprec.error_code or "OK")] += 1
        assert seen

    def test_both_versions_cover_every_code(self, schemas):
        """Across the families, both AppRec versions are produced for OK and every error code."""
        versions: dict[str, set[str]] = {"1.0": set(), "1.1": set()}
        for family in ("plo", "Epikrise"):
            for path in examples(family):
                envelope = read_message(path.read_bytes()).envelope
                for error, _code in [(None, "OK"), *ERRORS]:
                    for apprec in build_apprecs(envelope, error=error, now=NOW):
                        versions[apprec.version].add(apprec.error_code or "OK")
        expected = {"OK", *(code for _, code in ERRORS)}
        assert versions == {"1.0": expected, "1.1": expected}

    def test_positive(self, example):
        """An OK AppRec goes from the receiver (PRIM) to the sender (AVS) and echoes the original."""
        (apprec,) = build_apprecs(_envelope(example), error=None, now=NOW)
        doc = etree.fromstring(apprec.xml)
        ns = _ns(apprec)
        assert apprec.xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
        assert (apprec.version, apprec.status, apprec.role) == ("1.1", "1", "PRIM")
        assert (apprec.recipient_her_id, apprec.sender_her_id) == ("90998", "5078")
        assert doc.xpath("string(a:Status/@V)", namespaces=ns) == "1"
        assert doc.xpath("string(a:Sender/a:Role/@V)", namespaces=ns) == "PRIM"
        assert doc.xpath("string(a:Receiver/a:Role/@V)", namespaces=ns) == "AVS"
        assert doc.xpath("a:Receiver/a:HCP/a:Inst/a:Id/text()", namespaces=ns) == ["59"]
        assert doc.xpath("a:Receiver/a:HCP/a:Inst/a:Dept/a:Id/text()", namespaces=ns) == ["90998"]
        assert doc.xpath("a:Sender/a:HCP/a:Inst/a:Dept/a:Name/text()", namespaces=ns) == ["Sykepleietjeneste"]
        assert doc.xpath("string(a:OriginalMsgId/a:MsgType/@V)", namespaces=ns) == "LOG_UTSKRIVNINGSKLAR"
        assert doc.xpath("string(a:OriginalMsgId/a:IssueDate)", namespaces=ns) == "2018-01-31T10:20:11"
        assert doc.xpath("string(a:OriginalMsgId/a:Id)", namespaces=ns) == "79c55ed0-0692-11e8-b566-0800200c9a66"
        assert doc.xpath("string(a:GenDate)", namespaces=ns) == "2024-03-01T12:30:00+01:00"
        assert not doc.xpath("a:Error", namespaces=ns)

    def test_negative(self, example):
        """A rejection carries status 2 and an 8221 Error with OID, display and plain-words OT, never patient data."""
        error = SchemaInvalid("XML does not validate against the national schema", location="/MsgHead/MsgInfo/MsgId")
        (apprec,) = build_apprecs(_envelope(example), error=error, now=NOW)
        doc = etree.fromstring(apprec.xml)
        (err,) = doc.xpath("a:Error", namespaces=_ns(apprec))
        assert dict(err.attrib) == {
            "V": "T02", "S": "2.16.578.1.12.4.1.1.8221", "DN": "XML validerer ikke",
            "OT": "XML does not validate against the national schema (/MsgHead/MsgInfo/MsgId)",
        }
        assert doc.xpath("string(a:Status/@DN)", namespaces=_ns(apprec)) == "Avvist"
        assert b"15076500565" not in apprec.xml and b"Gundersen" not in apprec.xml

    def test_one_per_recipient(self, example):
        """The receiver answers as PRIM and each copy recipient as COP, with its own people."""
        apprecs = build_apprecs(_envelope(example, STATUS), error=None, now=NOW)
        assert [(a.role, a.sender_her_id, a.recipient_her_id) for a in apprecs] == [("PRIM", "8605", "90998"), ("COP", "258521", "90998")]
        doc = etree.fromstring(apprecs[1].xml)
        assert doc.xpath("a:Sender/a:HCP/a:Inst/a:HCPerson/a:Name/text()", namespaces=_ns(apprecs[1])) == ["Rita Lin"]
        assert len({a.xml for a in apprecs}) == 2

    def test_extra_idents_echoed(self, example):
        """Every Ident is echoed: the HER-id as Id, the others as AdditionalId after the departments."""
        data = example(PLO_16).replace(
            b"<Id>59</Id>",
            b"<Id>974749025</Id><TypeId V=\"ENH\" DN=\"Organisasjonsnummeret i Enhetsregisteret\" S=\"2.16.578.1.12.4.1.1.9051\"/></Ident><Ident><Id>59</Id>",
            1,
        )
        (apprec,) = build_apprecs(read_message(data).envelope, error=None, now=NOW)
        inst = etree.fromstring(apprec.xml).find("a:Receiver/a:HCP/a:Inst", namespaces=_ns(apprec))
        assert [etree.QName(c).localname for c in inst] == ["Name", "Id", "TypeId", "Dept", "AdditionalId"]
        assert inst.findtext("a:Id", namespaces=_ns(apprec)) == "59"
        assert inst.findtext("a:AdditionalId/a:Id", namespaces=_ns(apprec)) == "974749025"

    def test_unreadable_message(self, schemas):
        """Nothing readable gives one AppRec 1.1 with empty addresses that still validates."""
        (apprec,) = build_apprecs(None, error=DecodeError("not well-formed XML"), now=NOW)
        assert (apprec.version, apprec.recipient_her_id, apprec.original_msg_id, apprec.error_code) == ("1.1", None, "", "T01")
        doc = etree.fromstring(apprec.xml)
        schemas.validate(doc, (APPREC_NS["1.1"],))
        assert doc.xpath("string(a:OriginalMsgId/a:IssueDate)", namespaces=_ns(apprec)) == doc.xpath("string(a:GenDate)", namespaces=_ns(apprec))

    def test_salvaged_message(self, example, schemas):
        """A truncated message is answered T01 with the addresses recovery could read."""
        data = example(PLO_16)
        received = read_message(data[: data.index(b"<Document>")])
        (apprec,) = build_apprecs(received.envelope, error=received.error, now=NOW)
        assert (apprec.error_code, apprec.recipient_her_id) == ("T01", "90998")
        schemas.validate(etree.fromstring(apprec.xml), (APPREC_NS[apprec.version],))

    def test_date_only_gen_date(self, example, schemas):
        """A GenDate that is a date becomes midnight; a nonsense one becomes the AppRec's GenDate."""
        for sent, echoed in (("2018-01-31", "2018-01-31T00:00:00"), ("yesterday", "2024-03-01T12:30:00+01:00")):
            data = example(PLO_16).replace(b"2018-01-31T10:20:11", sent.encode())
            (apprec,) = build_apprecs(read_message(data).envelope, error=None, now=NOW)
            doc = etree.fromstring(apprec.xml)
            assert doc.xpath("string(a:OriginalMsgId/a:IssueDate)", namespaces=_ns(apprec)) == echoed
            schemas.validate(doc, (APPREC_NS[apprec.version],))

    @pytest.mark.parametrize("offset", ["+15:00", "+14:30", "-14:01"])
    def test_a_gen_date_whose_offset_no_xsd_allows_is_not_echoed(self, example, schemas, offset):
        """xs:dateTime allows a time zone offset of at most 14:00 either way; Python's parser takes up to 23:59. Such a
        GenDate makes the message break its schema (T02), and its AppRec echoed it, so the rejection itself broke the
        AppRec XSD. It is answered like any GenDate that is no xs:dateTime: the AppRec's own GenDate."""
        data = example(PLO_16).replace(b"2018-01-31T10:20:11", f"2018-01-31T10:20:11{offset}".encode())
        received = read_message(data, schemas=schemas)
        assert isinstance(received.error, SchemaInvalid)
        (apprec,) = build_apprecs(received.envelope, error=received.error, now=NOW)
        doc = etree.fromstring(apprec.xml)
        schemas.validate(doc, (APPREC_NS[apprec.version],))
        assert doc.xpath("string(a:OriginalMsgId/a:IssueDate)", namespaces=_ns(apprec)) == "2024-03-01T12:30:00+01:00"

    def test_no_apprec_for_apprec(self, norsk):
        """An AppRec is never answered."""
        received = read_message((norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml").read_bytes())
        assert build_apprecs(received.envelope, error=None) == []

    def test_fresh_id(self, example):
        """Each AppRec gets its own UUID."""
        envelope = _envelope(example)
        first, second = (etree.fromstring(build_apprecs(envelope, error=None)[0].xml) for _ in range(2))
        ns = {"a": APPREC_NS["1.1"]}
        assert first.findtext("a:Id", namespaces=ns) != second.findtext("a:Id", namespaces=ns)
