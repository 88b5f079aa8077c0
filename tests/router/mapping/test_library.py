"""Tests for router/mapping/library.py: every function of the mapping language, by its YAML name."""

from __future__ import annotations

import pytest

from router.errors import InvalidContent
from router.mapping.library import LIBRARY, FnContext, call

CTX = FnContext({"STOLAV": "urn:oid:2.16.578.1.12.4.1.7.3.2.1"}, "urn:helsebro:local:{authority}:{type}")


def fn(name: str, *values: str | None):
    return call(LIBRARY[name], CTX, list(values), [f"ARG-{i}" for i in range(len(values))])


CASES = {
    "date": [(("19610615",), "1961-06-15"), (("196106",), "1961-06"), ((None,), None)],
    "datetime": [(("20240115083000",), "2024-01-15T08:30:00+01:00"), (("20240715083000",), "2024-07-15T08:30:00+02:00"), (("202401150830+0000",), "2024-01-15T08:30:00+00:00")],
    "identifier_system": [
        (("15866112379", "NOR", "FNR"), "urn:oid:2.16.578.1.12.4.1.4.1"),
        (("55866110270", "NOR", "FNR"), "urn:oid:2.16.578.1.12.4.1.4.2"),
        (("81234567802", None, "FHN"), "urn:oid:2.16.578.1.12.4.1.4.3"),
        (("9144900", None, "HPR"), "urn:oid:2.16.578.1.12.4.1.4.4"),
        (("112233", None, "HER"), "urn:oid:2.16.578.1.12.4.1.2"),
        (("974749025", None, "ENH"), "urn:oid:2.16.578.1.12.4.1.4.101"),
        (("4471002", "STOLAV", "PI"), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),
        (("X1", "OTHER HOSP", "MR"), "urn:helsebro:local:OTHER-HOSP:MR"),
        ((None, "NOR", "FNR"), None),
    ],
    "cx_system": [
        (("4471002", "STOLAV", "PI", "1.2.3", "ISO"), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),  # CX-4.1 named: as identifier_system
        (("777", None, "PI", "2.16.578.1.12.4.1.7.9", "ISO"), "urn:oid:2.16.578.1.12.4.1.7.9"),  # an OID only: the OID
        (("777", None, "PI", "STOLAV", "L"), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),  # a configured universal id
        (("777", None, "PI", "LAB7", "L"), "urn:helsebro:local:LAB7:PI"),
        (("15866112379", None, None, "2.16.578.1.12.4.1.4.1", "ISO"), "urn:oid:2.16.578.1.12.4.1.4.1"),
    ],
    "cx_value": [
        (("158661 12379", "NOR", "FNR", None, None), "15866112379"),  # a national id: its digits
        (("974 749 025", None, "ENH", None, None), "974749025"),
        (("AB 4471", "STOLAV", "PI", None, None), "AB 4471"),  # a local number as sent
        (("15866112379", "NOR", "FNR", None, None), "15866112379"),
        ((None, "NOR", "FNR", None, None), None),
        (("914 4900", None, "HPR", None, None), "9144900"),  # HPR-nummer and HER-id: their digits too
        (("56 704", None, "HER", None, None), "56704"),
    ],
    "identifier_value": [
        (("158661 12379", '', "FNR"), "15866112379"),  # a KITH Ident: as cx_value
        (("56 704", '', "HER"), "56704"),
    ],
    "staff_identifier_system": [
        (("9144900", "", "HPR"), "urn:oid:2.16.578.1.12.4.1.4.4"),
        (("9144900", "", "FNR"), None),  # an HPR-nummer sent as FNR: no number rather than no message
        (("91449OO", "", "HPR"), None),
        (("15866112379", "", "HPR"), None),  # 11 digits are no HPR-nummer
        (("56704A", "", "HER"), None),
    ],
    "staff_identifier_value": [
        (("914 4900", "", "HPR"), "9144900"),
        (("9144900", "", "FNR"), None),  # nothing where the system is nothing: no number without its system
        (("91449OO", "", "HPR"), None),
    ],
    "person_id_type": [
        (("55866110270",), "DNR"), (("81234567802",), "FHN"), (("01415010016",), "HNR"), (("158661 12379",), "FNR"),
        (("15866112378",), None), ((None,), None),
    ],
    "ei_system": [
        (("ALG-1", "DIPS", None, None), "urn:helsebro:local:DIPS:id"),
        (("ALG-1", "DIPS", "2.16.578.1.12.4.1.7.9", "ISO"), "urn:helsebro:local:DIPS:id"),  # EI.4 is no identifier type: not …:DIPS:ISO
        (("ALG-1", "STOLAV", "1.2.3", "ISO"), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),  # a configured namespace
        (("ALG-1", None, "2.16.578.1.12.4.1.7.9", "ISO"), "urn:oid:2.16.578.1.12.4.1.7.9"),  # a universal id only
        ((None, "DIPS", None, None), None),
    ],
    "placer_system": [
        (("100", "DIPS", None, None), "urn:helsebro:local:DIPS:id"),  # a namespace: as ei_system
        (("100", "DIPS", "1.2.3", "ISO"), "urn:helsebro:local:DIPS:id"),
        (("100", "STOLAV", None, None), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),
        (("100", None, "1.2.3", "ISO"), "urn:oid:1.2.3"),
        ((None, None, None, None), None),
    ],
    "filler_system": [
        (("100", "LABSYS", None, None), "urn:helsebro:local:LABSYS:id"),
    ],
    "coding_system": [
        (("HL70078",), "http://terminology.hl7.org/CodeSystem/v2-0078"),  # an HL7 table
        (("HL7127",), "http://terminology.hl7.org/CodeSystem/v2-0127"),  # a digit short, as some senders write it
        (("  ",), None),
        ((None,), None),
    ],
    "hd_system": [(("STOLAV", "974749025", "ENH"), "urn:oid:2.16.578.1.12.4.1.4.101"), (("X", "112233", "HER"), "urn:oid:2.16.578.1.12.4.1.2"), (("X", "1.2.3", "ISO"), "urn:oid:1.2.3"), (("STOLAV", None, None), "urn:oid:2.16.578.1.12.4.1.7.3.2.1"),
                  (("X", "2.16.578.1.12.4.1.2.112233", "ISO"), "urn:oid:2.16.578.1.12.4.1.2"), (("X", "4001", "RESH"), "urn:oid:2.16.578.1.12.4.1.4.102")],
    "hd_value": [(("STOLAV", "974749025", "ENH"), "974749025"), (("STOLAV", None, None), "STOLAV"), (("X", "2.16.578.1.12.4.1.2.112233", "ISO"), "112233"),
                 (("X", "974 749 025", "noorg"), "974749025"), (("X", "1.2.3", "ISO"), "1.2.3")],
    "location_facility": [(("STOLAV", "974749025", "ENH"), "STOLAV"), ((None, "974749025", "ENH"), "974749025"), ((None, None, None), None)],
    "location_system": [
        (("STOLAV", None, None), "urn:helsebro:local:STOLAV:location"),  # not STOLAV's configured patient-number system
        ((None, "974749025", "ENH"), "urn:helsebro:local:974749025:location"),  # a facility named by its universal id
        (("GOOD HEALTH", None, None), "urn:helsebro:local:GOOD-HEALTH:location"),
    ],
    "key": [
        (("MED", "301", "2"), "MED/301/2"),
        (("MED", None, "2"), "MED//2"),  # bed 2 with no room is not room 2's bed, nor room 2
        (("MED", "301/2"), "MED/301%2F2"),  # a / inside a part is not a step
        (("A%B",), "A%25B"),
        ((None, None), None),
    ],
    "upper": [(("abc",), "ABC"), ((None,), None)],
    "lower": [(("ABC",), "abc")],
    "trim": [(("  a ",), "a"), (("   ",), None)],
    "join": [(("Ola", None, "Nordmann"), "Ola Nordmann"), ((None, None), None)],
    "lines": [(("a", None, "b"), "a\nb")],
    "lines_base64": [(("a", None, "b"), "YQpi"), (("å",), "w6U="), ((None, None), None)],
    "number": [(("13.2",), 13.2), (("7",), 7), (("<5",), None), (("pos",), None)],
    "mime": [(("application", "pdf"), "application/pdf"), (("TEXT", None), "text/plain"), (("image/png", None), "image/png")],
    "uuid5": [(("a", "b"), "9a9c7f6b-04f4-5b5b-8b0f-1a0f3f3c5c9e")],
    "uuid_urn": [(("3F2B6F0E-8F1C-4C55-9A59-2F3D7D1C0A01",), "urn:uuid:3f2b6f0e-8f1c-4c55-9a59-2f3d7d1c0a01"), ((None,), None)],
    "markup_base64": [(("Ingen funn",), "SW5nZW4gZnVubg=="), ((None,), None)],  # a plain value: its text (an element's XHTML: test_convert_kith)
    "concat_text": [(("Cave-opplysninger", ":", "Penicillinallergi"), "Cave-opplysninger: Penicillinallergi"), ((None, ":", "Ingen  funn "), "Ingen funn"),
                    (("Hb", "<5", "g/L"), "Hb <5 g/L"), ((None, None), None)],  # plain values (an element's XHTML: test_library_markup.py)
    "compact": [(("QUJD\nREVG\n",), "QUJDREVG")],
    "xml_datetime": [(("2018-01-30T15:34:47",), "2018-01-30T15:34:47+01:00"), (("2018-07-30",), "2018-07-30"), (("2018-01-30T15:34:47Z",), "2018-01-30T15:34:47+00:00")],
    "datetime_plus": [
        (("20250120093000", "45", "min"), "2025-01-20T10:15:00+01:00"),
        (("20250120093000", "1.5", "h"), "2025-01-20T11:00:00+01:00"),
        (("20250120093000", "1", "d"), "2025-01-21T09:30:00+01:00"),
        (("20250120093000", "0", "min"), "2025-01-20T09:30:00+01:00"),
        (("20250330013000", "2", "h"), "2025-03-30T04:30:00+02:00"),  # elapsed time: the clock skips 02:00-03:00
        (("202501200930+0000", "30", "MIN"), "2025-01-20T10:00:00+00:00"),  # the sender's offset kept
        (("20250120093000", " 30 ", "Minutes"), "2025-01-20T10:00:00+01:00"),
        (("20250120093000", "30", "M"), None),  # M is a month to some senders: no guess
        (("20250120093000", "1", "mo"), None),
        (("20250120093000", "-30", "min"), None),
        (("20250120093000", "ca 30", "min"), None),
        (("20250120", "30", "min"), None),  # a date has no time to add to
        ((None, "30", "min"), None),
        (("20250120093000", None, "min"), None),
    ],
    "comparator": [(("<5",), "<"), ((" >= 10.5 ",), ">="), (("5",), None), (("<see note",), None), ((None,), None)],
    "compared_number": [(("<5",), 5), ((">= 10.5",), 10.5), (("5",), None), (("<see note",), None)],
    "range_low": [(("3.5-5.0",), 3.5), ((" 3,5 - 5,0 ",), 3.5), ((">2",), 2), ((">= 2.5",), 2.5), (("<10",), None), (("se kommentar",), None),
                  (("-5--2",), None), ((None,), None)],
    "range_high": [(("3.5-5.0",), 5.0), (("<10",), 10), (("<=10,5",), 10.5), ((">2",), None), (("1-2-3",), None)],
    "time": [(("1230",), "12:30:00"), (("08",), "08:00:00"), (("123045.25+0100",), "12:30:45.25"), (("2400",), None), (("1260",), None),
             (("12:30",), None), ((None,), None)],
    "oid_system": [(("2.16.578.1.12.4.1.1.7110",), "urn:oid:2.16.578.1.12.4.1.1.7110"), (("http://loinc.org",), "http://loinc.org")],
}


class TestLibrary:
    def test_every_function_is_tested(self):
        """Every library function has cases here or in a sibling test_library_*.py that names it."""
        from pathlib import Path

        assert set(CASES) <= set(LIBRARY)
        siblings = "".join(p.read_text() for p in Path(__file__).parent.glob("test_library_*.py"))
        untested = [name for name in LIBRARY if name not in CASES and f'"{name}"' not in siblings]
        assert untested == []

    @pytest.mark.parametrize(("name", "args", "want"), [(n, a, w) for n, cases in CASES.items() for a, w in cases if n != "uuid5"])
    def test_function(self, name, args, want):
        """Each function gives the documented result."""
        assert fn(name, *args) == want

    def test_uuid5_is_deterministic_and_distinct(self):
        """uuid5 gives the same id for the same parts and a different one for other parts."""
        assert fn("uuid5", "a", "b") == fn("uuid5", "a", "b") != fn("uuid5", "a", "c")

    @pytest.mark.parametrize(("name", "args"), [("identifier_system", ("15866112378", "NOR", "FNR")), ("cx_system", ("15866112378", None, None, "2.16.578.1.12.4.1.4.1", "ISO")), ("identifier_system", ("974749024", None, "ENH")), ("identifier_system", ("56704A", None, "HER")), ("cx_system", ("9144900X", None, "HPR", None, None)), ("cx_system", ("56704A", None, "HER", None, None)), ("hd_system", ("X", "56704A", "HER")), ("hd_value", ("X", "974749024", "ENH")), ("datetime", ("2024-13-01",)), ("datetime_plus", ("2024-13-01", "30", "min")), ("datetime_plus", ("99991231230000", "2", "d")), ("xml_datetime", ("30.01.2018",))])
    def test_bad_values_are_refused_with_their_position(self, name, args):
        """A value that cannot be what it claims is refused, naming the argument's position."""
        with pytest.raises(InvalidContent) as err:
            fn(name, *args)
        assert err.value.location and err.value.location.startswith("ARG-")
        assert "15866112378" not in err.value.reason

# What the sender's own numbers and codes become, with a sender (SENT) and with none (CTX): refused, never one
# `urn:helsebro:local:unknown:…` system that every sender naming neither itself nor an authority shares.
SENT = FnContext({"STOLAV": "urn:oid:2.16.578.1.12.4.1.7.3.2.1"}, "urn:helsebro:local:{authority}:{type}", sender="SYKEHUS-A")
SENDERS_OWN = [
    ("cx_system", ("777", None, "PI", None, None), "urn:helsebro:local:SYKEHUS-A:PI"),
    ("cx_system", ("777", "  ", "PI", None, None), "urn:helsebro:local:SYKEHUS-A:PI"),  # a blank authority names nobody
    ("identifier_value", ("AB 4471", "", "HNR"), "AB 4471"),  # a KITH H-nummer: as sent
    ("ei_system", ("ALG-1", None, None, None), "urn:helsebro:local:SYKEHUS-A:id"),
    ("placer_system", ("100", None, None, None), "urn:helsebro:local:SYKEHUS-A:PLAC"),
    ("filler_system", ("100", None, None, None), "urn:helsebro:local:SYKEHUS-A:FILL"),  # a number space apart from placer numbers
    ("coding_system", ("L",), "urn:helsebro:local:SYKEHUS-A:codesystem:L"),
    ("coding_system", ("99 LAB",), "urn:helsebro:local:SYKEHUS-A:codesystem:99-LAB"),  # a URI holds no space
    ("location_system", (None, None, None), "urn:helsebro:local:SYKEHUS-A:location"),
]


class TestSendersOwn:
    @pytest.mark.parametrize(("name", "args", "want"), SENDERS_OWN)
    def test_a_number_naming_no_authority_is_its_senders(self, name, args, want):
        """A number, code system or ward that names no authority is the sender's."""
        assert call(LIBRARY[name], SENT, list(args), [f"ARG-{i}" for i in range(len(args))]) == want

    @pytest.mark.parametrize(("name", "args", "want"), SENDERS_OWN)
    def test_with_no_sender_it_is_refused_at_its_position(self, name, args, want):
        """With no sender named either, it is refused where it stands, never filed under a system all such senders share."""
        with pytest.raises(InvalidContent) as err:
            fn(name, *args)
        assert err.value.location == "ARG-0" and "names no sender" in err.value.reason


class TestRangesReadOnce:
    """range_low and range_high keep each range they read (a laboratory repeats its ranges): the answers must not change."""

    def test_repeated_reads_give_the_first_answers(self):
        texts = ["3.5-5.0", "<10", ">= 2,5", "se kommentar", "1-2-3", " 3,5 - 5,0 "]
        first = [(fn("range_low", t), fn("range_high", t)) for t in texts]
        again = [(fn("range_high", t), fn("range_low", t)) for t in reversed(texts)]
        assert first == [(3.5, 5.0), (None, 10), (2.5, None), (None, None), (None, None), (3.5, 5.0)]
        assert [(lo, hi) for hi, lo in reversed(again)] == first

    def test_a_bound_too_large_refuses_only_the_function_that_reads_it(self):
        huge = "9" * 30
        text = f"{huge}-5"
        assert fn("range_high", text) == 5
        with pytest.raises(InvalidContent) as raised:
            fn("range_low", text)
        assert raised.value.location == "ARG-0"
        with pytest.raises(InvalidContent):  # never kept as read: asked again, refused again
            fn("range_low", text)
        assert fn("range_high", text) == 5

    def test_the_kept_ranges_stay_bounded(self):
        from router.mapping import library

        for k in range(library._RANGES_KEPT + 10):
            assert fn("range_low", f"{k}-{k + 1}") == k
        assert len(library._RANGES) <= library._RANGES_KEPT
        assert fn("range_high", "3.5-5.0") == 5.0
