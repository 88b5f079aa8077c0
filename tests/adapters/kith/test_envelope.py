"""Tests for adapters/kith/envelope.py: standards by namespace, HER-id choice."""

from __future__ import annotations

import pytest

from adapters.kith.envelope import Ident, Party, Person, payload_standard

HER = "HER"


def _her(value: str) -> Ident:
    return Ident(id=value, type=HER)


class TestPayloadStandard:
    @pytest.mark.parametrize(
        ("namespace", "expected"),
        [
            ("http://www.kith.no/xmlstds/po/Pasientlogistikk/2009-06-30", ("PLO", "1.5")),
            ("http://www.kith.no/xmlstds/po/Konsultasjon/2009-06-30", ("PLO", "1.5")),
            ("http://www.kith.no/xmlstds/po/Innleggelsesrapport/2012-04-01", ("PLO", "1.6")),
            ("http://www.kith.no/xmlstds/dialog/2013-01-23", ("Dialogmelding", "1.1")),
            ("http://ehelse.no/xmlstds/henvisning/2017-11-30", ("Henvisning", "2.0")),
            ("http://www.kith.no/xmlstds/labsvar/2008-12-01", ("Svarrapport", "1.3")),
            ("http://www.kith.no/xmlstds/eresept/m1/2013-10-08", ("e-resept", None)),
            ("http://www.ehelse.no/xmlstds/eresept/m96/2018-07-01", ("e-resept", None)),
        ],
    )
    def test_known(self, namespace, expected):
        """Each known payload namespace gives its standard and version."""
        assert payload_standard(namespace) == expected

    def test_unknown(self):
        """An unknown namespace, or none, gives None."""
        assert payload_standard("urn:nobody") is None
        assert payload_standard(None) is None
        assert payload_standard("http://www.kith.no/xmlstds/po/Pasientlogistikk/2030-01-01") is None


class TestParty:
    def test_person_her_first(self):
        """A person's HER-id wins over the department's and the institution's."""
        party = Party(name="L", idents=(_her("1"),), depts=(Party(name="D", idents=(_her("2"),)),), persons=(Person(name="P", idents=(_her("3"),)),))
        assert party.her_id == "3"

    def test_deepest_department(self):
        """Without a person, the deepest department with a HER-id wins."""
        party = Party(name="L", idents=(_her("1"),), depts=(Party(name="D", idents=(_her("2"),)), Party(name="E", idents=(Ident("9", "ENH"),))))
        assert party.her_id == "2"

    def test_institution_last(self):
        """The institution's HER-id is used when nothing below has one; no HER-id gives None."""
        assert Party(name="L", idents=(Ident("974749025", "ENH"), _her("1"))).her_id == "1"
        assert Party(name="L", idents=(Ident("974749025", "ENH"),)).her_id is None

    @pytest.mark.parametrize("bad", ["9" * 300, "59 60", "abc", "٥٩", "59/../x", ""])
    def test_an_id_that_is_no_her_id_is_skipped(self, bad):
        """An Ident typed HER whose Id is no number names no AppRec queue: the next holder's HER-id is used, else None."""
        assert Party(name="L", idents=(_her("1"),), persons=(Person(name="P", idents=(_her(bad),)),)).her_id == "1"
        assert Party(name="L", idents=(_her(bad),)).her_id is None

    @pytest.mark.parametrize("good", ["59", "8093225", "2397.1"])
    def test_national_her_ids_are_kept(self, good):
        """Every HER-id shape in the national examples, the dotted e-resept/NPR ones among them, stays a HER-id."""
        assert Party(name="L", idents=(_her(good),)).her_id == good
