"""Tests for schemas/identity.py: Norwegian person and organisation numbers."""

from __future__ import annotations

import re

import pytest

from schemas.identity import (
    DNR_SYSTEM,
    FHN_SYSTEM,
    FNR_SYSTEM,
    HNR_SYSTEM,
    PersonId,
    PersonIdError,
    classify_person_id,
    first_valid_fnr,
    her_id_ok,
    hpr_ok,
    looks_like_national_id,
    make_dnr,
    make_fhn,
    make_fnr,
    orgnr_ok,
    person_id_checksum_ok,
    validate_person_id,
)

CLASSIC = "01015000232"  # HIS 1001 §4.1 test number
RULE_2032 = ["02013299997", "30108299920", "30108299939"]  # FACTS §6.3, from Skatteetaten


def _mutations(number: str):
    """Every number that differs from *number* in exactly one digit."""
    for i, digit in enumerate(number):
        for other in "0123456789":
            if other != digit:
                yield number[:i] + other + number[i + 1 :]


class TestSystems:
    def test_oids_match_facts(self):
        """The identifier systems are the OIDs of FACTS §6.1."""
        from schemas import identity

        assert identity.FNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.1"
        assert identity.DNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.2"
        assert identity.FHN_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.3"
        assert identity.HPR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.4"
        assert identity.HER_SYSTEM == "urn:oid:2.16.578.1.12.4.1.2"
        assert identity.ENH_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.101"
        assert identity.RESH_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.102"
        assert identity.HNR_SYSTEM == "HNR"

    def test_all_lists_only_existing_names(self):
        """Every name in __all__ exists in the module."""
        from schemas import identity

        assert all(hasattr(identity, name) for name in identity.__all__)


class TestPersonIdChecksumOk:
    def test_standard_test_number(self):
        """The HIS 1001 test number passes."""
        assert person_id_checksum_ok(CLASSIC)

    @pytest.mark.parametrize("number", RULE_2032)
    def test_2032_rule_examples(self, number):
        """Skatteetaten's examples of numbers issued from 2032 pass."""
        assert person_id_checksum_ok(number)

    def test_2032_example_needs_the_new_rule(self):
        """30108299939 passes although the classic rule gives its body the K1 2, not 3."""
        assert make_fnr(30, 10, 82, 999) == "30108299920"
        assert person_id_checksum_ok("30108299939")

    @pytest.mark.parametrize("number", [CLASSIC, *RULE_2032])
    def test_every_single_digit_mutation_fails(self, number):
        """Changing any one digit breaks the number, since K2 catches every such change."""
        assert not any(person_id_checksum_ok(m) for m in _mutations(number))

    def test_first_digit_changed_fails(self):
        """01015000232 with its first digit changed to 1 fails."""
        assert not person_id_checksum_ok("11015000232")

    def test_k1_out_of_2032_range_fails(self):
        """A K1 that leaves (Σ1 + K1) mod 11 at 4 or more is rejected."""
        # Σ1 of 010150002 is 3·0+7·1+6·0+1·1+8·5+9·0+4·0+5·0+2·2 = 52, 52 mod 11 = 8:
        # K1 ∈ {3, 4, 5, 6} are valid, K1 = 7 gives (52 + 7) mod 11 = 4.
        assert not person_id_checksum_ok("0101500027" + "0")
        assert not any(person_id_checksum_ok("0101500027" + d) for d in "0123456789")

    def test_wrong_length_fails(self):
        """Ten or twelve digits are not a person number."""
        assert not person_id_checksum_ok(CLASSIC[:10])
        assert not person_id_checksum_ok(CLASSIC + "0")

    def test_spaces_are_ignored(self):
        """A number written with spaces passes like the plain one."""
        assert person_id_checksum_ok("010150 00232")


class TestClassifyPersonId:
    def test_classic_fnr(self):
        """The HIS 1001 test number is an ordinary FNR."""
        assert classify_person_id(CLASSIC) == PersonId("FNR", CLASSIC, FNR_SYSTEM, False)

    @pytest.mark.parametrize("number", RULE_2032)
    def test_2032_fnr(self, number):
        """Numbers under the 2032 rule classify as FNR."""
        result = classify_person_id(number)
        assert result is not None and result.kind == "FNR" and result.system == FNR_SYSTEM

    def test_mutated_number_is_none(self):
        """A number whose check digits fail is not classified."""
        assert classify_person_id("01015000233") is None

    def test_dnr(self):
        """A generated D-nummer (day + 40) classifies as DNR."""
        number = make_dnr(15, 6, 61, 101)
        assert classify_person_id(number) == PersonId("DNR", number, DNR_SYSTEM, False)

    def test_fhn(self):
        """A number starting with 8 or 9 is an FH-nummer, with no date check."""
        assert classify_person_id("81234567802") == PersonId("FHN", "81234567802", FHN_SYSTEM, False)
        number = make_fhn(999_999_999)
        result = classify_person_id(number)
        assert result is not None and result.kind == "FHN"

    def test_hnr(self):
        """Month + 40 on a number starting 0–3 is an H-nummer."""
        hnr = _with_check_digits("014150123")  # 1 January (+40) 1950
        result = classify_person_id(hnr)
        assert result == PersonId("HNR", hnr, HNR_SYSTEM, False)

    def test_hnr_with_fictitious_date(self):
        """An H-nummer with a day that no month has is still an H-nummer."""
        hnr = _with_check_digits("394150123")  # day 39, month 41
        result = classify_person_id(hnr)
        assert result is not None and result.kind == "HNR"

    def test_synthetic_tenor_fnr(self):
        """Month + 80 (Skatteetaten Tenor) is a valid FNR marked synthetic."""
        number = make_fnr(15, 6, 61, 123, synthetic=True)
        assert number[2:4] == "86"
        assert classify_person_id(number) == PersonId("FNR", number, FNR_SYSTEM, True)

    def test_synthetic_tenor_dnr(self):
        """Month + 80 on a D-nummer is a valid DNR marked synthetic."""
        number = make_dnr(15, 6, 61, 102, synthetic=True)
        result = classify_person_id(number)
        assert result is not None and result.kind == "DNR" and result.synthetic

    def test_impossible_month_is_none(self):
        """Month 13, or a third digit of 2, 3, 6 or 7, gives no person."""
        assert classify_person_id(_with_check_digits("011350123")) is None
        assert classify_person_id(_with_check_digits("012150123")) is None
        assert classify_person_id(_with_check_digits("019350123")) is None

    def test_impossible_day_is_none(self):
        """Day 32, 31 April and 29 February in a non-leap year give no person."""
        assert classify_person_id(_with_check_digits("320150123")) is None
        assert classify_person_id(_with_check_digits("310450123")) is None
        assert classify_person_id(_with_check_digits("290251123")) is None

    def test_29_february_of_a_leap_year(self):
        """29 February exists when the two-digit year is divisible by 4, 00 included."""
        assert classify_person_id(first_valid_fnr(29, 2, 0, 500)) is not None
        assert classify_person_id(first_valid_fnr(29, 2, 84, 100)) is not None

    def test_impossible_dnr_day_is_none(self):
        """A D-nummer with day 72 (32 + 40) gives no person."""
        assert classify_person_id(_with_check_digits("720150123")) is None

    def test_not_eleven_digits_is_none(self):
        """Letters or the wrong length give None rather than an error."""
        assert classify_person_id("0101500023") is None
        assert classify_person_id("0101500023x") is None
        assert classify_person_id("") is None

    def test_unicode_digits_are_not_digits(self):
        """Full-width digits are not accepted as a number."""
        assert classify_person_id("０１０１５０００２３２") is None


def _with_check_digits(body: str) -> str:
    """Complete a 9-digit body with the classic check digits, walking the last digit if needed."""
    from schemas.identity import _check_digits

    for last in range(10):
        try:
            return _check_digits(body[:8] + str((int(body[8]) + last) % 10), "classic")
        except ValueError:
            continue
    raise AssertionError("no valid body near " + body)


class TestValidatePersonId:
    def test_valid_number_is_returned(self):
        """A valid number comes back classified."""
        assert validate_person_id(CLASSIC).kind == "FNR"

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("0101500023", "not 11 digits"),
            ("01015000233", "check digits do not match"),
            ("32015012349", "impossible date"),  # day 32, check digits valid
        ],
    )
    def test_reasons_never_contain_the_number(self, value, reason):
        """Each failure names its reason and never quotes the number."""
        with pytest.raises(PersonIdError) as info:
            validate_person_id(value)
        assert str(info.value) == reason
        assert re.search(r"[0-9]{3}", str(info.value)) is None

    def test_error_is_a_value_error(self):
        """PersonIdError can be caught as ValueError."""
        with pytest.raises(ValueError):
            validate_person_id("abc")


class TestLooksLikeNationalId:
    def test_eleven_digits(self):
        """Eleven digits look like a national id even with a bad checksum."""
        assert looks_like_national_id("01015000233")
        assert looks_like_national_id("010150 00232")

    def test_other_shapes(self):
        """Local ids of other shapes do not."""
        assert not looks_like_national_id("1234567")
        assert not looks_like_national_id("A1015000232")
        assert not looks_like_national_id("010150002321")


class TestOrgnrOk:
    def test_valid_orgnr(self):
        """A hand-checked organisasjonsnummer passes."""
        # 97402813 · (3,2,7,6,5,4,3,2) = 27+14+28+0+10+32+3+6 = 120; 120 mod 11 = 10; 11-10 = 1
        assert orgnr_ok("974028131")

    def test_wrong_check_digit(self):
        """The same body with another check digit fails."""
        assert not any(orgnr_ok("97402813" + d) for d in "023456789")

    def test_check_digit_10_is_never_valid(self):
        """A body whose check would be 10 has no valid number."""
        # 00101000: Σ = 7·1 + 5·1 = 12; 12 mod 11 = 1; 11 - 1 = 10
        assert not any(orgnr_ok("00101000" + d) for d in "0123456789")

    def test_wrong_shape(self):
        """Eight digits or letters fail."""
        assert not orgnr_ok("97402813")
        assert not orgnr_ok("97402813X")


class TestHprOk:
    def test_shapes(self):
        """One to nine ASCII digits pass, spaces ignored; nothing else does."""
        assert hpr_ok("9144889")
        assert hpr_ok("1")
        assert not hpr_ok("")
        assert not hpr_ok("1234567890")
        assert not hpr_ok("91448A9")
        assert hpr_ok("914 4889")  # spaces ignored, as in a fødselsnummer
        assert not hpr_ok("1234 567 890")

    def test_her_id_is_digits(self):
        """A HER-id is a number in Adresseregisteret: digits, spaces ignored; a letter is none."""
        assert her_id_ok("56704")
        assert her_id_ok("56 704")
        assert not her_id_ok("56704A")
        assert not her_id_ok("HER56704")
        assert not her_id_ok("")
        assert her_id_ok("2397.1")  # as the national e-resept examples write some
        assert not her_id_ok("2397.")
        assert not her_id_ok("1.2.3")
        assert not her_id_ok("５６７０４")  # full-width digits are not ASCII


class TestMakeFnr:
    def test_standard_test_number(self):
        """The generator rebuilds the HIS 1001 test number."""
        assert make_fnr(1, 1, 50, 2) == CLASSIC

    def test_never_issued_body_raises(self):
        """A body whose K1 or K2 would be 10 raises under the classic rule."""
        with pytest.raises(ValueError):
            make_dnr(15, 6, 61, 107)

    def test_2032_rule_finds_digits_where_classic_cannot(self):
        """The 2032 rule gives a valid number for a body the classic rule cannot use."""
        number = make_dnr(15, 6, 61, 107, rule="2032")
        assert person_id_checksum_ok(number) and number[:9] == "550661107"

    def test_2032_rule_prefers_the_classic_digits(self):
        """Under the 2032 rule the generator still picks the classic K1 when it works."""
        assert make_fnr(2, 1, 32, 999, rule="2032") == "02013299997"
        assert make_fnr(30, 10, 82, 999, rule="2032") == "30108299920"

    def test_impossible_date_raises(self):
        """30 February cannot be generated."""
        with pytest.raises(ValueError):
            make_fnr(30, 2, 0, 500)

    def test_first_valid_fnr_walks(self):
        """first_valid_fnr skips never-issued bodies and returns a valid FNR."""
        number = first_valid_fnr(15, 6, 61, 107)
        assert int(number[6:9]) >= 107
        assert validate_person_id(number).kind == "FNR"


class TestMakeDnr:
    def test_hand_computed_example(self):
        """D-nummer for 15.06.61, individnummer 101, matches a hand computation."""
        # digits 5 5 0 6 6 1 1 0 1
        # Σ1 = 3·5+7·5+6·0+1·6+8·6+9·1+4·1+5·0+2·1 = 119; 119 mod 11 = 9; K1 = 11-9 = 2
        # Σ2 = 5·5+4·5+3·0+2·6+7·6+6·1+5·1+4·0+3·1+2·2 = 117; 117 mod 11 = 7; K2 = 11-7 = 4
        assert make_dnr(15, 6, 61, 101) == "55066110124"

    def test_generated_dnrs_validate(self):
        """Every issued D-nummer the generator makes for a day validates as DNR."""
        made = []
        for individual in range(600, 700):
            try:
                made.append(make_dnr(31, 12, 99, individual))
            except ValueError:
                continue  # never issued
        assert len(made) > 50
        assert all(validate_person_id(number).kind == "DNR" for number in made)


class TestMakeFhn:
    def test_generated_fhn_validates(self):
        """A generated FH-nummer validates as FHN."""
        assert make_fhn(812_345_678) == "81234567802"
        assert validate_person_id("81234567802").kind == "FHN"

    def test_out_of_range_raises(self):
        """Bodies below 800 000 000 are not FH-numbers."""
        with pytest.raises(ValueError):
            make_fhn(799_999_999)
