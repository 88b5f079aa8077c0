"""Tests for adapters/hl7v2/render.py: ER7 out of a converted message, per destination version and charset."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from adapters.hl7v2.render import Hl7v2Renderer
from router.contracts import Converted
from router.errors import ConfigError, MessageError, UnknownMessage
from router.routing.model import QueueDestination
from router.settings import OwnConfig

FNR = "15866112379"  # synthetic (Tenor), as in the inbound fixtures
ADT_A01 = (
    "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||ADT^A01^ADT_A01|CTRL-0001|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8\r"
    "EVN|A01|20250110083000\r"
    f"PID|1||{FNR}^^^NOR^FNR~4471002^^^STOLAV^PI||NORDMANN^OLA^K||19610615|M|||Storgata 1^^TRONDHEIM^^7011^NOR^H\r"
    "PV1|1|I|MED^301^2^STOLAV||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR||||||||||||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500\r"
).encode()


def _renderer(settings, **options) -> Hl7v2Renderer:
    return Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="lab.adt", format="hl7v2", **options), settings, name="lab")


def _fields(data: bytes, codec: str = "utf-8") -> dict[str, list[str]]:
    """{segment id: fields}, MSH numbered like the standard (MSH-1 is the separator)."""
    out = {}
    for line in data.decode(codec).split("\r")[:-1]:
        fields = line.split("|")
        if fields[0] == "MSH":
            fields.insert(1, "|")
        out[fields[0]] = fields
    return out


def _with_patient(conv: Converted, **changes) -> Converted:
    bundle = copy.deepcopy(conv.bundle)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"].update(changes)
    return Converted(index=0, raw=conv.raw, control_id=conv.control_id, bundle=bundle, header=conv.header, structure=conv.structure)


class TestHl7v2Renderer:
    def test_renders_msh_evn_pid_pv1(self, settings, admit):
        """An admission renders MSH, EVN, PID and PV1 with the type, version, charset and the source's time."""
        out = _renderer(settings).render(admit)
        assert out.endswith(b"\r") and b"\n" not in out
        seg = _fields(out)
        assert list(seg) == ["MSH", "EVN", "PID", "PV1"]
        msh = seg["MSH"]
        assert (msh[3], msh[4], msh[5]) == ("HELSEBRO", "STOLAV", "lab")
        assert msh[7] == "20250110083000+0100"
        assert msh[9] == "ADT^A01^ADT_A01"
        assert len(msh[10]) == 20
        assert (msh[12], msh[18]) == ("2.5.1", "UNICODE UTF-8")
        assert seg["PID"][3] == f"{FNR}^^^NOR^FNR~4471002^^^STOLAV^PI"
        assert seg["PID"][5] == "NORDMANN^OLA^K"
        assert (seg["PID"][7], seg["PID"][8]) == ("19610615", "M")
        assert seg["PV1"][2] == "I"
        assert seg["PV1"][7] == "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"
        assert seg["PV1"][44] == "20250110082500+0100"

    def test_same_message_same_bytes(self, settings, converter):
        """Rendering the same source twice, even after converting it again, gives identical bytes."""
        renderer = _renderer(settings)
        first = renderer.render(converter.convert(ADT_A01)[0])
        assert renderer.render(converter.convert(ADT_A01)[0]) == first

    def test_control_id_differs_per_source_and_destination(self, settings, converter, admit):
        """MSH-10 changes with the source message and with the destination, so receivers never drop a real message as a repeat."""
        msh10 = _fields(_renderer(settings).render(admit))["MSH"][10]
        other_source = converter.convert(ADT_A01.replace(b"CTRL-0001", b"CTRL-0002"))[0]
        assert _fields(_renderer(settings).render(other_source))["MSH"][10] != msh10
        other_dest = Hl7v2Renderer.for_destination(QueueDestination(kind="queue", queue="x", format="hl7v2"), settings, name="kommune")
        assert _fields(other_dest.render(admit))["MSH"][10] != msh10

    def test_version_23_drops_structure_and_offsets(self, settings, admit):
        """For v2.3, MSH-9 has two components, times are Oslo wall time without offset, and PID-5 keeps one name."""
        seg = _fields(_renderer(settings, version="2.3").render(_with_patient(admit, name=[{"family": "A", "given": ["B"]}, {"family": "C"}])))
        assert seg["MSH"][9] == "ADT^A01"
        assert seg["MSH"][12] == "2.3"
        assert seg["MSH"][7] == "20250110083000"
        assert seg["PV1"][44] == "20250110082500"
        assert seg["PID"][5] == "A^B"

    @pytest.mark.parametrize("version", ["2.5.1", "2.3"])
    def test_time_of_death_says_the_patient_died(self, settings, converter, version):
        """PID-29 with PID-30 Y comes back with PID-30 Y: FHIR keeps the time only, and PID-30 was left empty (alive, to a receiver)."""
        pid = ADT_A01.split(b"\r")[2]
        dead = ADT_A01.replace(pid, pid + b"|" * 17 + b"|20250109120000|Y")
        [conv] = converter.convert(dead)
        assert conv.ok, conv.error
        seg = _fields(_renderer(settings, version=version).render(conv))
        assert seg["PID"][29].startswith("20250109120000")
        assert seg["PID"][30] == "Y"
        alive = _fields(_renderer(settings, version=version).render(_with_patient(conv, deceasedDateTime=None, deceasedBoolean=False)))
        assert alive["PID"][30] == "N"

    def test_latin1_encodes_norwegian_letters(self, settings, admit):
        """charset 8859/1 writes Ø, Å and Æ as single Latin-1 bytes and says so in MSH-18."""
        conv = _with_patient(admit, name=[{"family": "ØSTBYE", "given": ["ÅSE", "ÆRLIG"]}])
        out = _renderer(settings, charset="8859/1").render(conv)
        assert "ØSTBYE^ÅSE^ÆRLIG".encode("latin-1") in out
        assert "Ø".encode() not in out
        assert _fields(out, "latin-1")["MSH"][18] == "8859/1"

    def test_ascii_replaces_what_it_cannot_carry(self, settings, admit):
        """charset ASCII writes a character it lacks as '?', never failing the message."""
        out = _renderer(settings, charset="ASCII").render(_with_patient(admit, name=[{"family": "BJØRN"}]))
        assert _fields(out, "ascii")["PID"][5] == "BJ?RN"

    def test_delimiters_in_values_are_escaped(self, settings, admit):
        """A value holding | ^ ~ \\ & or a line break is written with HL7 escapes and stays one component."""
        conv = _with_patient(admit, name=[{"family": "A|B^C~D\\E&F\nG", "given": ["H"]}])
        out = _renderer(settings).render(conv)
        assert _fields(out)["PID"][5] == "A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F\\X0A\\G^H"

    def test_no_patient_is_a_message_error_without_phi(self, settings, admit):
        """A Bundle without a Patient fails with a plain reason that names the resource and no value."""
        bundle = {**admit.bundle, "entry": [e for e in admit.bundle["entry"] if e["resource"]["resourceType"] != "Patient"]}
        conv = Converted(index=0, raw=admit.raw, bundle=bundle, header=admit.header, control_id=admit.control_id)
        with pytest.raises(MessageError) as info:
            _renderer(settings).render(conv)
        assert info.value.reason == "the Bundle has no Patient, which PID is built from"
        assert FNR not in str(info.value) and "NORDMANN" not in str(info.value)

    def test_no_bundle_is_a_message_error(self, settings, admit):
        """A failed conversion has nothing to render."""
        with pytest.raises(MessageError, match="no Bundle"):
            _renderer(settings).render(Converted(index=0, raw=admit.raw, header=admit.header))

    def test_event_the_mapping_does_not_serve(self, settings, converter):
        """An event no outbound mapping serves (A13) is an UnknownMessage for this destination."""
        [conv] = converter.convert(ADT_A01.replace(b"ADT^A01^ADT_A01", b"ADT^A13^ADT_A01").replace(b"EVN|A01", b"EVN|A13"))
        assert conv.ok
        with pytest.raises(UnknownMessage, match="A13"):
            _renderer(settings).render(conv)
        with pytest.raises(UnknownMessage, match="does not serve event A13"):
            _renderer(settings, mapping="ADT_A01").render(conv)

    def test_discharge_uses_the_adt_a03_structure(self, settings, converter):
        """An A03 renders MSH-9 ADT^A03^ADT_A03 and PV1-45 from Encounter.period.end."""
        msg = ADT_A01.replace(b"ADT^A01^ADT_A01", b"ADT^A03^ADT_A03").replace(b"EVN|A01", b"EVN|A03").replace(b"20250110082500\r", b"20250110082500|20250714102000\r")
        seg = _fields(_renderer(settings).render(converter.convert(msg)[0]))
        assert seg["MSH"][9] == "ADT^A03^ADT_A03"
        assert seg["PV1"][45] == "20250714102000+0200"

    def test_unknown_mapping_or_charset_refuses_to_start(self, settings):
        """A destination naming a mapping or charset that does not exist is a ConfigError at start.

        routes.yaml refuses both at load (review H191, tests/cli/test_config_load.py); the renderer still
        checks, for a mapping deleted since and a destination built without the model's checks."""
        with pytest.raises(ConfigError, match="no outbound mapping 'ADT_A99'"):
            _renderer(settings, mapping="ADT_A99")
        with pytest.raises(ConfigError, match="charset"):
            Hl7v2Renderer.for_destination(QueueDestination.model_construct(kind="queue", queue="lab.adt", format="hl7v2", charset="EBCDIC"), settings, name="lab")


class TestMshParties:
    def test_own_setting_names_msh3_and_msh4(self, settings, admit):
        """engine.yaml's `own.application` and `own.facility` are MSH-3 and MSH-4."""
        own = OwnConfig(application="HBRO", facility="HBRO-FAC")
        custom = settings.model_copy(update={"engine": settings.engine.model_copy(update={"own": own})})
        msh = _fields(_renderer(custom).render(admit))["MSH"]
        assert (msh[3], msh[4]) == ("HBRO", "HBRO-FAC")

    def test_without_own_facility_msh4_is_the_sources(self, settings, admit):
        """Unset `own.facility` keeps the source's sending facility (MSH-4.1) in MSH-4, so receivers tell hospitals apart."""
        assert settings.engine.own.facility is None
        assert _fields(_renderer(settings).render(admit))["MSH"][4] == "STOLAV"

    def test_destination_names_its_receiver(self, settings, admit):
        """`receiving_application` and `receiving_facility` are MSH-5 and MSH-6; unset, the destination's name and empty."""
        named = _fields(_renderer(settings, receiving_application="LABSYS", receiving_facility="STOLAV").render(admit))["MSH"]
        plain = _fields(_renderer(settings).render(admit))["MSH"]
        assert (named[5], named[6]) == ("LABSYS", "STOLAV")
        assert (plain[5], plain[6]) == ("lab", "")

    def test_msh7_is_the_headers_sent(self, settings, admit):
        """MSH-7 comes from MessageHeader.sent (the raw bytes are not read again); none gives an empty MSH-7."""
        later = dataclasses.replace(admit, header=dataclasses.replace(admit.header, sent="20250601120000"))
        none = dataclasses.replace(admit, header=dataclasses.replace(admit.header, sent=None))
        assert _fields(_renderer(settings).render(later))["MSH"][7] == "20250601120000+0200"
        assert _fields(_renderer(settings).render(none))["MSH"][7] == ""


class TestRoundTrip:
    def test_msh7_the_calendar_lacks_renders_without_a_time(self, settings, converter):
        """A source MSH-7 of February 30th passes the inbound side; rendering writes no MSH-7 rather than raising ValueError.

        Why: the forwarder dead-letters a MessageError per destination; any other exception stops the whole delivery.
        """
        [conv] = converter.convert(ADT_A01.replace(b"|20250110083000||ADT", b"|20250230083000||ADT"))
        assert conv.ok, conv.error
        for version in ("2.5.1", "2.3"):
            seg = _fields(_renderer(settings, version=version).render(conv))
            assert seg["MSH"][7] == "" and seg["EVN"] == ["EVN", "A01"]

    def test_small_and_large_decimals_are_written_without_an_exponent(self, settings, converter):
        """OBX-5 NM and SN numbers of 0.00001 and 1E20 are written in digits: HL7 NM has no exponent, and str(float) gives one."""
        src = (Path(settings.mappings_dir) / "outbound/hl7v2/ORU_R01.cases/two_orders_string_and_nm/input.hl7").read_bytes().replace(b"\n", b"\r")
        src = src.replace(b"||13.2|g/dL", b"||0.00001|g/dL").replace(b"<^5", b">=^100000000000000000000")
        [conv] = converter.convert(src)
        assert conv.ok, conv.error
        out = _renderer(settings).render(conv).decode()
        obx5 = [line.split("|")[5] for line in out.split("\r") if line.startswith("OBX|")]
        assert obx5[0] == "0.00001"
        assert obx5[2] == ">=^100000000000000000000"

    def test_patient_and_encounter_survive(self, settings, converter, admit):
        """Inbound ADT^A01 → Bundle → HL7 v2 → Bundle again keeps identifiers, name, birth date, gender and the stay."""
        for version in ("2.5.1", "2.3"):
            out = _renderer(settings, version=version, charset="8859/1").render(admit)
            [back] = converter.convert(out)
            assert back.ok, back.error
            before, after = _resources(admit.bundle), _resources(back.bundle)
            for key in ("identifier", "name", "birthDate", "gender"):
                assert after["Patient"][key] == before["Patient"][key], (version, key)
            assert after["Encounter"]["class"] == before["Encounter"]["class"]
            assert after["Encounter"]["period"] == before["Encounter"]["period"]
            assert after["Practitioner"]["identifier"] == before["Practitioner"]["identifier"]


def _resources(bundle) -> dict:
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}



def _with_bundle(conv: Converted, bundle: dict) -> Converted:
    return Converted(index=0, raw=conv.raw, control_id=conv.control_id, bundle=bundle, header=conv.header, structure=conv.structure)


class TestLocationChain:
    def test_pv1_3_is_read_up_the_location_chain(self, settings, admit):
        """PV1-3 takes the bed the stay refers to, the room it is part of, that room's ward, and the facility."""
        assert _fields(_renderer(settings).render(admit))["PV1"][3] == "MED^301^2^STOLAV"

    def test_a_loop_of_part_of_references_ends(self, settings, admit):
        """A room that says it is part of its own bed, with no ward in the Bundle, ends the climb: no ward, no hang."""
        bundle = copy.deepcopy(admit.bundle)
        locations = {e["resource"]["physicalType"]["coding"][0]["code"]: e for e in bundle["entry"] if e["resource"]["resourceType"] == "Location"}
        locations["ro"]["resource"]["partOf"] = {"reference": locations["bd"]["fullUrl"]}
        bundle["entry"].remove(locations["wa"])
        assert _fields(_renderer(settings).render(_with_bundle(admit, bundle)))["PV1"][3] == "^301^2^STOLAV"


def _with_participants(conv: Converted, *participants: tuple[str, dict]) -> Converted:
    """*conv* with its Encounter's participants replaced by (type code, individual) pairs, in order."""
    bundle = copy.deepcopy(conv.bundle)
    [encounter] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    code = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
    encounter["participant"] = [{"type": [{"coding": [{"system": code, "code": c}]}], "individual": who} for c, who in participants]
    return _with_bundle(conv, bundle)


class TestAttendingDoctors:
    def _practitioner(self, admit) -> dict:
        [url] = [e["fullUrl"] for e in admit.bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"]
        return {"reference": url}

    def test_a_named_doctor_and_a_practitioner_are_both_written_in_order(self, settings, admit):
        """PV1-7 repeats every attending doctor in the Encounter's order: a name alone as ^FAMILY^GIVEN, a Practitioner with its HPR number."""
        conv = _with_participants(admit, ("ATND", {"display": "PER OLAV DOKTOR"}), ("ADM", {"display": "ANNE INNLEGGER"}), ("ATND", self._practitioner(admit)))
        assert _fields(_renderer(settings).render(conv))["PV1"][7] == "^DOKTOR^PER OLAV~9144900^LEGE^LISA^^^^^^HPR^^^^HPR"

    def test_a_receiver_without_repetitions_gets_the_first_attending_doctor(self, settings, admit):
        """For v2.3, where PV1-7 does not repeat, the Encounter's first attending doctor is written, whichever kind it is."""
        conv = _with_participants(admit, ("ATND", {"display": "PER OLAV DOKTOR"}), ("ATND", self._practitioner(admit)))
        assert _fields(_renderer(settings, version="2.3").render(conv))["PV1"][7] == "^DOKTOR^PER OLAV"

    def test_a_reference_outside_the_bundle_without_a_name_is_skipped(self, settings, admit):
        """A participant whose reference leads nowhere in the Bundle and carries no name writes no empty repetition."""
        conv = _with_participants(admit, ("ATND", {"reference": "urn:uuid:00000000-0000-5000-8000-000000000000"}), ("ATND", self._practitioner(admit)))
        assert _fields(_renderer(settings).render(conv))["PV1"][7] == "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"


HL7APY_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")
"""Every version a destination's `version:` accepts (router/routing/model.py) that hl7apy has tables for."""


class TestEveryVersion:
    @pytest.mark.parametrize("version", HL7APY_VERSIONS)
    @pytest.mark.parametrize("mapping", ["ADT_A01", "ORU_R01"])
    def test_shipped_mappings_load_for_every_accepted_version(self, settings, version, mapping):
        """A destination of any version the setting accepts starts: a field the version lacks (AL1-6 from 2.7) is left out."""
        _renderer(settings, version=version, mapping=mapping)

    @pytest.mark.parametrize("version", ["2.7", "2.8.2"])
    def test_an_admission_renders_and_converts_back_for_a_later_version(self, settings, converter, version):
        """A v2.7+ receiver gets MSH-12 of its version, the allergy without AL1-6, and the patient reads back the same."""
        src = (Path(settings.mappings_dir) / "hl7v2/messages/ADT_A01.cases/admit_with_allergy_and_diagnosis.hl7").read_bytes().replace(b"\n", b"\r")
        [conv] = converter.convert(src)
        assert conv.ok, conv.error
        out = _renderer(settings, version=version).render(conv)
        seg = _fields(out)
        assert seg["MSH"][12] == version
        assert "AL1" in seg and len(seg["AL1"]) <= 6
        [back] = converter.convert(out)
        assert back.ok, back.error
        assert _resources(back.bundle)["Patient"]["identifier"] == _resources(conv.bundle)["Patient"]["identifier"]


HPR = "urn:oid:2.16.578.1.12.4.1.4.4"


class TestXcnFromOneIdentifier:
    def test_hpr_number_goes_with_its_own_authority_and_type(self, settings, admit):
        """A Practitioner whose first identifier is local: XCN.1, XCN.9 and XCN.13 all come from the HPR identifier."""
        bundle = copy.deepcopy(admit.bundle)
        [doctor] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"]
        doctor["identifier"] = [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": FNR}, {"system": HPR, "value": "9144900"}]
        pv1_7 = _fields(_renderer(settings).render(_with_bundle(admit, bundle)))["PV1"][7]
        assert pv1_7 == "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"

    def test_without_hpr_the_first_identifier_is_written_whole(self, settings, admit):
        """No HPR number: XCN.1, XCN.9 and XCN.13 all come from the first identifier."""
        bundle = copy.deepcopy(admit.bundle)
        [doctor] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"]
        doctor["identifier"] = [{"system": "urn:oid:2.16.578.1.12.4.1.4.2", "value": "41066112345"}, {"system": "urn:example:local", "value": "L1"}]
        assert _fields(_renderer(settings).render(_with_bundle(admit, bundle)))["PV1"][7] == "41066112345^LEGE^LISA^^^^^^NOR^^^^DNR"


PHONES = "^PRN^PH^^^^^^^^^22334455~^NET^Internet^ola@example.no~^PRS^CP^^^^^^^^^90000000"
WORK = "^WPN^PH^^^^^^^^^73000000"


class TestTelecom:
    @pytest.fixture
    def reachable(self, converter) -> Converted:
        pid = ADT_A01.split(b"\r")[2]
        fields = pid.split(b"|")
        fields += [b""] * (15 - len(fields))
        fields[13], fields[14] = PHONES.encode(), WORK.encode()
        [conv] = converter.convert(ADT_A01.replace(pid, b"|".join(fields)))
        assert conv.ok, conv.error
        assert len(_resources(conv.bundle)["Patient"]["telecom"]) == 4
        return conv

    @pytest.mark.parametrize("version", HL7APY_VERSIONS)
    def test_phone_and_email_survive_a_round_trip(self, settings, converter, reachable, version):
        """PID-13 (home, mobile, e-mail) and PID-14 (work) are written as XTN and read back as the same telecoms."""
        out = _renderer(settings, version=version).render(reachable)
        [back] = converter.convert(out)
        assert back.ok, back.error
        before = _resources(reachable.bundle)["Patient"]["telecom"]
        after = _resources(back.bundle)["Patient"]["telecom"]
        key = lambda t: (t.get("system", ""), t.get("value", ""))  # noqa: E731 - PID-14 follows PID-13
        assert sorted(after, key=key) == sorted(before, key=key)

    def test_xtn_components_per_version(self, settings, reachable):
        """v2.3 writes the number in XTN.1; v2.5.1 in XTN.1 and XTN.12; v2.7, where XTN.1 is withdrawn, in XTN.12; e-mail in XTN.4."""
        v23 = _fields(_renderer(settings, version="2.3").render(reachable))["PID"]
        assert v23[13].split("~") == ["22334455^PRN^PH", "^NET^Internet^ola@example.no", "90000000^ORN^CP"]
        assert v23[14] == "73000000^WPN^PH"
        v251 = _fields(_renderer(settings).render(reachable))["PID"]
        assert v251[13].split("~")[:2] == ["22334455^PRN^PH^^^^^^^^^22334455", "^NET^Internet^ola@example.no"]
        assert v251[13].split("~")[2] == "90000000^PRS^CP^^^^^^^^^90000000"
        v27 = _fields(_renderer(settings, version="2.7").render(reachable))["PID"]
        assert v27[14] == "^WPN^PH^^^^^^^^^73000000"


class TestLineBreaks:
    def _oru(self, settings, converter, note: bytes) -> Converted:
        src = (Path(settings.mappings_dir) / "outbound/hl7v2/ORU_R01.cases/two_orders_string_and_nm/input.hl7").read_bytes().replace(b"\n", b"\r")
        [conv] = converter.convert(src.replace(b"NTE|1||Lett hemolysert pr", b"NTE|1||" + note + b"pr"))
        assert conv.ok, conv.error
        return conv

    def test_a_line_break_in_formatted_text_is_br_and_reads_back(self, settings, converter):
        """NTE-3 (FT) writes a note's line breaks as \\.br\\, HL7's formatting line break, and the inbound side reads it back."""
        conv = self._oru(settings, converter, b"Lett hemolysert\\.br\\")
        [note] = [n["text"] for r in _all(conv.bundle, "Observation") for n in r.get("note", ())]
        assert note == "Lett hemolysert\nprøve"
        out = _renderer(settings).render(conv)
        [nte] = [line for line in out.decode().split("\r") if line.startswith("NTE|")]
        assert nte.split("|")[3] == "Lett hemolysert\\.br\\prøve"
        [back] = converter.convert(out)
        assert [n["text"] for r in _all(back.bundle, "Observation") for n in r.get("note", ())] == [note]

    def test_a_line_break_in_a_string_field_stays_a_hex_escape(self, settings, admit):
        """ST allows no formatting: a line break in DG1-4 or a name stays \\X0A\\."""
        seg = _fields(_renderer(settings).render(_with_patient(admit, name=[{"family": "A\nB"}])))
        assert seg["PID"][5] == "A\\X0A\\B"


def _all(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]
