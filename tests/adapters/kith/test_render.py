"""Tests for adapters/kith/render.py: MsgHead around the payload, determinism, refusals without PHI, XSD, round trip."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from pathlib import Path

import pytest
from lxml import etree

from adapters.kith import MSGHEAD_NS, KithRenderer, load_outbound, read_message
from adapters.kith.errors import SchemaInvalid
from router.errors import ConfigError, InvalidContent, MappingError, MessageError
from router.testing import adt_message, isolated_settings
from schemas.identity import first_valid_fnr, make_dnr

ROOT = Path(__file__).resolve().parents[3]
PLO = ROOT / "mappings" / "outbound" / "kith" / "PLO_InnlagtPasient.yaml"
FNR = first_valid_fnr(15, 3, 85, 100, synthetic=True)
FAMILY, GIVEN = "Testesen", "Kari"
NS = {"m": MSGHEAD_NS, "pl": "http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01", "po": "http://www.kith.no/xmlstds/po/poKomponent/2012-04-01"}
KOMMUNE = {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"}


@pytest.fixture(scope="module")
def mapping():
    return load_outbound(PLO)


@pytest.fixture
def renderer(mapping):
    return KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345")


@pytest.fixture
def admission(converter):
    """A synthetic ADT^A01 (admitted 2024-01-15 08:30 Oslo), converted by Helsebro's own Converter."""
    [conv] = converter.convert(adt_message("A01", control_id="CTRL-R1", fnr=FNR, local_id="L-1", visit="V-1", family=FAMILY, given=GIVEN, admitted="20240115083000", sent="20240115083500"))
    assert conv.ok, conv.error
    return conv


def _xpath(xml: bytes, path: str) -> list:
    return etree.fromstring(xml).xpath(path, namespaces=NS)


def _without(conv, resource_type: str):
    bundle = copy.deepcopy(conv.bundle)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != resource_type]
    return dataclasses.replace(conv, bundle=bundle)


def _no_phi(exc: MessageError) -> None:
    for secret in (FNR, FAMILY, GIVEN, "1985-03-15"):
        assert secret not in exc.reason and secret not in (exc.location or "") and secret not in str(exc)


class TestRender:
    def test_msghead_around_the_plo_payload(self, renderer, admission):
        """The message is a UTF-8 MsgHead: LOG_INNLAGT, the receiver's HER-id, the patient's FNR, the admission time."""
        xml = renderer.render(admission)
        assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">')
        assert _xpath(xml, "/m:MsgHead/m:MsgInfo/m:Type/@V") == ["LOG_INNLAGT"]
        assert _xpath(xml, "/m:MsgHead/m:MsgInfo/m:MIGversion/text()") == ["v1.2 2006-05-24"]
        assert _xpath(xml, "/m:MsgHead/m:MsgInfo/m:GenDate/text()") == ["2024-01-15T08:35:00"]  # MSH-7, not the clock
        assert _xpath(xml, "//m:Receiver/m:Organisation/m:Ident/m:Id/text()") == ["12345"]
        assert _xpath(xml, "//m:Patient/m:Ident/m:Id/text()") == [FNR]
        assert _xpath(xml, "//m:Patient/m:Ident/m:TypeId/@V") == ["FNR"]
        assert _xpath(xml, "//m:RefDoc/m:MsgType/@V") == ["XML"]
        assert _xpath(xml, "//m:Content/pl:Pasientlogistikk/pl:MeldingInnlagtPasient/po:TidsfestetHendelse/po:TidspunktForHendelse/@V") == ["2024-01-15T08:30:00"]
        assert _xpath(xml, "//po:Hendelsekode/@V") == ["1"]

    def test_msgid_is_a_uuid(self, renderer, admission):
        """MsgId is a UUID, as HIS 80601 requires."""
        [msg_id] = _xpath(renderer.render(admission), "//m:MsgId/text()")
        assert uuid.UUID(msg_id).version == 5

    def test_same_message_same_bytes(self, renderer, admission, converter):
        """Rendering twice, or rendering a fresh conversion of the same bytes, gives identical bytes."""
        again = converter.convert(admission.raw)[0]
        assert renderer.render(admission) == renderer.render(admission) == renderer.render(again)

    def test_msgid_differs_per_message_and_receiver(self, mapping, renderer, admission, converter):
        """Another control id, or another receiver, gives another MsgId: one per message, as HIS 80601 wants."""
        other = converter.convert(admission.raw.replace(b"CTRL-R1", b"CTRL-R2"))[0]
        elsewhere = KithRenderer(mapping, destination_name="kommune-b", receiver_her_id="54321")
        ids = {_xpath(r.render(c), "//m:MsgId/text()")[0] for r, c in ((renderer, admission), (renderer, other), (elsewhere, admission))}
        assert len(ids) == 3

    def test_a_reused_control_id_with_new_content_gets_a_new_msgid(self, renderer, admission, converter):
        """A sender reusing MSH-10 for another message gets another MsgId (a receiver drops a repeated MsgId as a
        duplicate, FACTS §2); a redelivery of the same bytes keeps it, and it stays a UUID."""
        changed = converter.convert(admission.raw.replace(b"20240115083000", b"20240115091500"))[0]
        assert changed.ok and changed.control_id == admission.control_id == "CTRL-R1"
        again = converter.convert(admission.raw)[0]
        [first], [same], [other] = (_xpath(renderer.render(c), "//m:MsgId/text()") for c in (admission, again, changed))
        assert first == same and other != first
        assert uuid.UUID(other).version == 5 and renderer.msg_id(changed) == other

    def test_the_msgid_digest_is_the_journal_keys(self):
        """The content digest a MsgId carries is the one the journal key keeps, so `helsebro find` names the same MsgId."""
        from adapters.kith.render import content_digest
        from router.delivery.forward import content_digest as journal_digest

        assert content_digest(b"MSH|x") == journal_digest(b"MSH|x") != content_digest(b"MSH|y")

    def test_dnr_is_typed_dnr(self, renderer, converter):
        """A D-nummer patient is written with TypeId DNR, chosen by the identifier's system."""
        dnr = make_dnr(12, 3, 88, 500, synthetic=True)
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-D", fnr=dnr, local_id="L-2", visit="V-2").replace(b"^^^NOR^FNR", b"^^^NOR^DNR"))
        xml = renderer.render(conv)
        assert _xpath(xml, "//m:Patient/m:Ident/m:TypeId/@V") == ["DNR"] and _xpath(xml, "//m:Patient/m:Ident/m:Id/text()") == [dnr]

    def test_optional_parts_fall_away(self, renderer, admission):
        """Without a hospital identifier or a clinician, TilknyttetEnhet and KontaktpersonHelsepersonell are left out."""
        xml = renderer.render(_without(_without(admission, "Organization"), "Practitioner"))
        assert _xpath(xml, "//po:TilknyttetEnhet") == [] and _xpath(xml, "//po:KontaktpersonHelsepersonell") == []


class TestRefusals:
    @pytest.mark.parametrize("missing", ["Patient", "Encounter"])
    def test_missing_resource(self, renderer, admission, missing):
        """A Bundle without a Patient or an Encounter is refused, naming the resource type and no patient data."""
        with pytest.raises(InvalidContent) as info:
            renderer.render(_without(admission, missing))
        assert f"the Bundle has no {missing}" in info.value.reason
        _no_phi(info.value)

    def test_no_national_id(self, renderer, admission):
        """A patient with only a local id cannot be addressed in PLO: refused, naming MsgHead's Patient Ident."""
        conv = copy.deepcopy(admission)
        patient = next(e["resource"] for e in conv.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        patient["identifier"] = [i for i in patient["identifier"] if "4.1.4.1" not in i["system"]]
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.location == "MsgHead/MsgInfo/Patient/Ident"
        _no_phi(info.value)

    def test_no_admission_time(self, renderer, converter):
        """Without PV1-44 there is no admission time to tell: refused with the FHIR path it reads."""
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-N", fnr=FNR, local_id="L-3", visit="V-3", admitted=""))
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.reason == "PLO_InnlagtPasient: no value for TidspunktForHendelse (from Encounter.period.start)"

    @pytest.mark.parametrize("admitted", ["99991231233000-0200", "00010101003000+0200"])
    def test_admission_time_with_no_oslo_time_is_refused_as_content(self, renderer, converter, admitted):
        """A time at the calendar's edge (HL7's 9999-12-31 "no date") has no Oslo time: refused at its element, as
        content this destination cannot take (dead-lettered for it alone), never an OverflowError that fails the delivery."""
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-E", fnr=FNR, local_id="L-4", visit="V-4", admitted=admitted))
        assert conv.ok
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.reason == "PLO_InnlagtPasient: no value for TidspunktForHendelse (from Encounter.period.start)"

    def test_message_time_with_no_oslo_time_is_refused_at_msh7(self, renderer, converter):
        """The same for MSH-7: refused at MSH-7 for GenDate, not an OverflowError."""
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-F", fnr=FNR, local_id="L-5", visit="V-5", sent="99991231233000-0200"))
        assert conv.ok
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.location == "MSH-7"

    def test_no_bundle(self, renderer, admission):
        """A converted message without a Bundle is refused, not crashed on."""
        with pytest.raises(MessageError, match="no Bundle"):
            renderer.render(dataclasses.replace(admission, bundle=None))

    def test_no_message_time(self, renderer, admission, converter):
        """Without MSH-7 there is no GenDate (the clock is never used): refused at MSH-7."""
        [conv] = converter.convert(admission.raw.replace(b"|20240115083500||ADT", b"|||ADT"))
        assert conv.ok and conv.header.sent is None
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.location == "MSH-7"

    def test_impossible_gendate_is_refused_at_gendate(self, renderer, admission, converter):
        """A KITH source whose GenDate is no calendar day (2024-02-30) is refused at GenDate, not sent as an invalid xs:dateTime."""
        xml = renderer.render(admission).replace(b"<GenDate>2024-01-15T08:35:00</GenDate>", b"<GenDate>2024-02-30</GenDate>")
        [conv] = converter.convert(xml)
        assert conv.ok
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.location == "GenDate"

    def test_control_characters(self, renderer, admission):
        """A value XML cannot carry is refused with its place, never its text."""
        conv = copy.deepcopy(admission)
        patient = next(e["resource"] for e in conv.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        patient["name"][0]["family"] = "Teste\x01sen"
        with pytest.raises(InvalidContent) as info:
            renderer.render(conv)
        assert info.value.location == "MsgHead/MsgInfo/Patient/FamilyName" and "sen" not in info.value.reason


class TestForDestination:
    def test_loads_from_routes(self, tmp_path):
        """A kith destination in routes.yaml gets a renderer for its named mapping and its own name."""
        settings = isolated_settings(tmp_path, routes={"destinations": {"record": {"kind": "record"}, "kommune": KOMMUNE}, "routes": [{"name": "all", "to": ["record", "kommune"]}]})
        renderer = KithRenderer.for_destination(settings.routes.destinations["kommune"], settings)
        assert renderer.mapping.name == "PLO_InnlagtPasient"

    def test_unknown_mapping(self, tmp_path):
        """A mapping name with no file is refused when routes.yaml loads, at its line (review H191); one deleted
        since the routes loaded stops the start with a ConfigError naming it."""
        with pytest.raises(ConfigError, match=r"routes\.yaml:\d+:\d+: destinations\.kommune\.mapping: .*PLO_Nope"):
            isolated_settings(tmp_path / "a", routes={"destinations": {"kommune": {**KOMMUNE, "mapping": "PLO_Nope"}}, "routes": [{"name": "all", "to": ["kommune"]}]})
        settings = isolated_settings(tmp_path / "b", routes=_routes(KOMMUNE)).model_copy(update={"mappings_dir": tmp_path / "empty"})
        with pytest.raises(ConfigError, match=KOMMUNE["mapping"]):
            KithRenderer.for_destination(settings.routes.destinations["kommune"], settings)

    def test_receiver_her_id_needed(self, tmp_path):
        """The PLO mapping writes destination.receiver_her_id: a destination without one is refused at start."""
        dest = {k: v for k, v in KOMMUNE.items() if k != "receiver_her_id"}
        settings = isolated_settings(tmp_path, routes={"destinations": {"kommune": dest}, "routes": [{"name": "all", "to": ["kommune"]}]})
        with pytest.raises(ConfigError, match="receiver_her_id"):
            KithRenderer.for_destination(settings.routes.destinations["kommune"], settings)

    def test_broken_mapping_reports_position(self, tmp_path):
        """A mapping that fails its checks stops the start with file:line:col."""
        mappings = tmp_path / "mappings"
        (mappings / "outbound" / "kith").mkdir(parents=True)
        (mappings / "outbound" / "kith" / "PLO_InnlagtPasient.yaml").write_text(PLO.read_text(encoding="utf-8").replace("fn: datetime", "fn: when"), encoding="utf-8")
        settings = isolated_settings(tmp_path, routes={"destinations": {"kommune": KOMMUNE}, "routes": [{"name": "all", "to": ["kommune"]}]}).model_copy(update={"mappings_dir": mappings})
        with pytest.raises(MappingError) as info:
            KithRenderer.for_destination(settings.routes.destinations["kommune"], settings)
        assert info.value.file.endswith("PLO_InnlagtPasient.yaml") and info.value.line > 1 and "unknown function 'when'" in str(info.value)


class TestParties:
    def test_sender_is_the_own_setting(self, tmp_path, admission):
        """MsgHead's Sender is engine.yaml's `own` organisation name and HER-id, not a constant of the mapping."""
        settings = _with_own(isolated_settings(tmp_path, routes=_routes(KOMMUNE)), organisation_name="Testsykehuset integrasjon", her_id="998877")
        xml = KithRenderer.for_destination(settings.routes.destinations["kommune"], settings).render(admission)
        assert _xpath(xml, "//m:Sender/m:Organisation/m:OrganisationName/text()") == ["Testsykehuset integrasjon"]
        assert _xpath(xml, "//m:Sender/m:Organisation/m:Ident/m:Id/text()") == ["998877"]

    def test_sender_defaults_to_the_shipped_placeholder(self, renderer, admission):
        """Built without settings, the sender is the `own` defaults: the placeholder HER-id, so cases stay stable."""
        from router.settings import PLACEHOLDER_HER_ID

        assert _xpath(renderer.render(admission), "//m:Sender/m:Organisation/m:Ident/m:Id/text()") == [PLACEHOLDER_HER_ID]

    def test_receiver_name_from_the_destination(self, tmp_path, admission):
        """A destination's `receiver_name` is the Receiver's OrganisationName; without it, the destination's name is."""
        named = isolated_settings(tmp_path / "a", routes=_routes({**KOMMUNE, "receiver_name": "Testkommune pleie og omsorg"}))
        unnamed = isolated_settings(tmp_path / "b", routes=_routes(KOMMUNE))
        for settings, want in ((named, "Testkommune pleie og omsorg"), (unnamed, "kommune")):
            xml = KithRenderer.for_destination(settings.routes.destinations["kommune"], settings).render(admission)
            assert _xpath(xml, "//m:Receiver/m:Organisation/m:OrganisationName/text()") == [want]

    def test_gendate_is_the_headers_sent(self, renderer, admission):
        """GenDate comes from MessageHeader.sent (the raw bytes are not read again)."""
        conv = dataclasses.replace(admission, header=dataclasses.replace(admission.header, sent="20240620121500"))
        assert _xpath(renderer.render(conv), "//m:GenDate/text()") == ["2024-06-20T12:15:00"]


def _routes(destination: dict) -> dict:
    return {"destinations": {"kommune": destination}, "routes": [{"name": "all", "to": ["kommune"]}]}


def _with_own(settings, **own):
    from router.settings import OwnConfig

    return settings.model_copy(update={"engine": settings.engine.model_copy(update={"own": OwnConfig(**own)})})


class TestNationalSchema:
    def test_output_validates(self, mapping, schemas, admission):
        """With the national schema set, the rendered message validates (MsgHead 1.2 + PLO 1.6 Pasientlogistikk)."""
        renderer = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345", schemas=schemas)
        xml = renderer.render(admission)
        schemas.validate(etree.fromstring(xml), (MSGHEAD_NS, NS["pl"]))  # raises when invalid
        assert read_message(xml, schemas=schemas).ok

    def test_impossible_birth_date_is_left_out(self, mapping, schemas, renderer, admission, converter):
        """A KITH source with a DateOfBirth that is no calendar day (1985-02-30) renders without one: valid, not refused whole."""
        xml = renderer.render(admission).replace(b"<DateOfBirth>1985-03-15</DateOfBirth>", b"<DateOfBirth>1985-02-30</DateOfBirth>")
        [conv] = converter.convert(xml)
        assert conv.ok
        out = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345", schemas=schemas).render(conv)
        assert _xpath(out, "//m:Patient/m:DateOfBirth") == [] and _xpath(out, "//m:Patient/m:Ident/m:Id/text()") == [FNR]
        assert b"1985-02-30" not in renderer.render(conv)  # without the schema too: never an invalid xs:date

    def test_a_year_before_1000_keeps_four_digits(self, mapping, schemas, converter):
        """xs:dateTime and xs:date need a four-digit year: a time in year 999 is written 0999-…, never 999-… (invalid)."""
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-Y", fnr=FNR, local_id="L-6", visit="V-6", admitted="09990715083000", sent="09990715083500"))
        assert conv.ok
        xml = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345", schemas=schemas).render(conv)
        assert _xpath(xml, "//m:GenDate/text()")[0].startswith("0999-07-15T")
        assert _xpath(xml, "//po:TidspunktForHendelse/@V")[0].startswith("0999-07-15T")

    def test_invalid_output_is_refused(self, tmp_path, schemas, admission):
        """A mapping whose output breaks the schema (Anslag left out) is refused per message, with no values in the reason."""
        broken = tmp_path / "PLO_InnlagtPasient.yaml"
        broken.write_text(PLO.read_text(encoding="utf-8").replace("            - {element: po:Anslag, text: false}\n", ""), encoding="utf-8")
        renderer = KithRenderer(load_outbound(broken), destination_name="kommune", receiver_her_id="12345", schemas=schemas)
        with pytest.raises(SchemaInvalid) as info:
            renderer.render(admission)
        assert "breaks the national schema" in info.value.reason and "TidsfestetHendelse" in (info.value.location or "")
        _no_phi(info.value)


class TestRoundTrip:
    def test_inbound_reads_what_outbound_wrote(self, renderer, admission, converter):
        """Render, then convert with Helsebro's own KITH inbound: the patient's FNR and the admission time survive."""
        [back] = converter.convert(renderer.render(admission))
        assert back.ok and back.format == "kith" and back.message_type == "LOG_INNLAGT"
        resources = [e["resource"] for e in back.bundle["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        encounter = next(r for r in resources if r["resourceType"] == "Encounter")
        original = next(e["resource"] for e in admission.bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
        assert ("urn:oid:2.16.578.1.12.4.1.4.1", FNR) in [(i["system"], i["value"]) for i in patient["identifier"]]
        assert encounter["period"]["start"] == original["period"]["start"] == "2024-01-15T08:30:00+01:00"

    @pytest.mark.parametrize(("admitted", "written"), [("20241027023000+0100", "+01:00"), ("20241027023000+0200", "+02:00")])
    def test_the_hour_that_happens_twice_keeps_its_instant(self, mapping, schemas, converter, admitted, written):
        """When the clocks go back, Oslo's 02:00-03:00 happens twice: wall time alone named two instants, and the
        inbound side read the later one back an hour early. In that hour the offset is written (xs:dateTime allows it)."""
        [conv] = converter.convert(adt_message("A01", control_id="CTRL-DST", fnr=FNR, local_id="L-7", visit="V-7", admitted=admitted, sent=admitted))
        xml = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345", schemas=schemas).render(conv)
        assert _xpath(xml, "//po:TidspunktForHendelse/@V") == [f"2024-10-27T02:30:00{written}"]
        assert _xpath(xml, "//m:GenDate/text()") == [f"2024-10-27T02:30:00{written}"]
        [back] = converter.convert(xml)
        encounter = next(e["resource"] for e in back.bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
        assert encounter["period"]["start"] == f"2024-10-27T02:30:00{written}"

    def test_kith_source_keeps_its_gendate(self, renderer, admission, converter):
        """A KITH source message is re-rendered with its own GenDate, and deterministically."""
        first = renderer.render(admission)
        [back] = converter.convert(first)
        again = renderer.render(back)
        assert _xpath(again, "//m:GenDate/text()") == _xpath(first, "//m:GenDate/text()")
        assert renderer.render(back) == again
