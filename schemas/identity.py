"""Norwegian person and organisation identifiers: systems, check digits, classification.

The canonical model's knowledge of who a number identifies; decoders and mappings
decide *where* a number sits in a message, this module decides *what* it is.
Glossary (FACTS §6): ``fnr`` fødselsnummer (national id number), ``dnr`` D-nummer
(temporary national id, day + 40), ``fhn`` felles hjelpenummer (NHN's shared
auxiliary number, no birth date), ``hnr`` virksomhetsinternt H-nummer (a
hospital's local auxiliary number, month + 40), ``orgnr`` organisasjonsnummer
(Enhetsregisteret), ``hpr_nr`` helsepersonellnummer, ``her_id`` Adresseregisteret
id. Only the standard library is imported: ``schemas/`` depends on nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DNR_SYSTEM",
    "ENH_SYSTEM",
    "FHN_SYSTEM",
    "FNR_SYSTEM",
    "HER_SYSTEM",
    "HNR_SYSTEM",
    "HPR_SYSTEM",
    "NATIONAL_AUTHORITIES",
    "NATIONAL_TYPE_CODES",
    "RESH_SYSTEM",
    "PersonId",
    "PersonIdError",
    "PersonIdKind",
    "classify_person_id",
    "declares_national",
    "first_valid_fnr",
    "her_id_ok",
    "hpr_ok",
    "looks_like_national_id",
    "make_dnr",
    "make_fhn",
    "make_fnr",
    "orgnr_ok",
    "person_id_checksum_ok",
    "validate_person_id",
]

# FACTS §6.1; no-basis uses these as Identifier.system.
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
FHN_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.3"
HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
HER_SYSTEM = "urn:oid:2.16.578.1.12.4.1.2"
ENH_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
RESH_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.102"
# H-nummer has no national OID: no-basis uses the literal "HNR" plus a type
# coding 8327#HNR and a mandatory assigner (FACTS §6.1, §7).
HNR_SYSTEM = "HNR"

NATIONAL_TYPE_CODES = frozenset({"FNR", "DNR", "FHN", "NNNOR", "NNNO", "NOR"})
"""Identifier type codes (HL7 v2 CX-5, KITH TypeId/TypeOffId V), upper case, that declare a national person number."""
NATIONAL_AUTHORITIES = frozenset({"NOR", "NO", "FREG", "SKD", "FOLKEREG", FNR_SYSTEM[8:], DNR_SYSTEM[8:], FHN_SYSTEM[8:]})
"""Assigning authorities (CX-4, or its universal id), upper case, that declare a national person number."""


def declares_national(type_code: str, authority: str) -> bool:
    """Whether an upper-case type code or assigning authority says its number is a national person number.

    One definition for the mapping library (which files the number under a national system) and the
    partition key (which must find the same number in the raw bytes): two copies could drift apart,
    and then one patient's messages spread over partitions.
    """
    return type_code in NATIONAL_TYPE_CODES or authority in NATIONAL_AUTHORITIES or "FNR" in authority

PersonIdKind = Literal["FNR", "DNR", "FHN", "HNR"]
"""Volven 8327 (offisiell personidentifikasjon): the kinds a patient id can be."""

Rule = Literal["classic", "2032"]
"""Which check-digit rule a generator follows (FACTS §6.3)."""

_SYSTEM_FOR: dict[PersonIdKind, str] = {
    "FNR": FNR_SYSTEM,
    "DNR": DNR_SYSTEM,
    "FHN": FHN_SYSTEM,
    "HNR": HNR_SYSTEM,
}

# ASCII only: str.isdigit() would let "²" and Arabic-Indic digits through.
_ELEVEN_DIGITS = re.compile(r"[0-9]{11}")
_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORGNR_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
# February allows 29 here; _date_ok narrows it by the two-digit year.
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class PersonId:
    """A classified, check-digit-valid Norwegian person number.

    ``synthetic`` marks test-population numbers whose month carries a marker
    that real numbers never have: Skatteetaten Tenor (+80) on FNR and DNR, and
    NAV Dolly (+40) on DNR. Month + 40 on a number starting 0–3 is KITH's
    H-nummer syntax, which wins that conflict: such a number is ``HNR`` with
    ``synthetic=False`` (FACTS §6.3).
    """

    kind: PersonIdKind
    value: str
    system: str
    synthetic: bool


class PersonIdError(ValueError):
    """A person number is not valid; the message never contains the number."""


def _normalise(value: str) -> str:
    return value.replace(" ", "")


def looks_like_national_id(value: str) -> bool:
    """Tell whether *value* is shaped like a person number (11 digits, spaces ignored).

    A PID-3 value of this shape is validated as a national id whatever its
    identifier type code says, because senders mislabel them.
    """
    return _ELEVEN_DIGITS.fullmatch(_normalise(value)) is not None


def _sum1(digits: str) -> int:
    return sum(w * int(d) for w, d in zip(_W1, digits))


def _sum2(digits: str) -> int:
    return sum(w * int(d) for w, d in zip(_W2, digits))


def person_id_checksum_ok(value: str) -> bool:
    """Tell whether the two check digits of an 11-digit number are valid.

    Accepts numbers valid under the classic rule or the 2032 rule; the classic
    rule is the special case ``(Σ1 + K1) mod 11 == 0`` of the 2032 rule's
    ``∈ {0, 1, 2, 3}``, so one test covers both (FACTS §6.3). K2 keeps its single
    valid value, computed with the K1 actually written.
    """
    digits = _normalise(value)
    if _ELEVEN_DIGITS.fullmatch(digits) is None:
        return False
    k1, k2 = int(digits[9]), int(digits[10])
    if (_sum1(digits) + k1) % 11 > 3:
        return False
    return (_sum2(digits) + k2) % 11 == 0


def _date_ok(day: int, month: int, year2: int) -> bool:
    """Tell whether day.month can exist in some century for the two-digit year.

    The century is not derived: since 2032 the individnummer no longer tells it
    and D-numbers have used other series since 2021 (FACTS §6.3). 29 February
    exists iff ``year2 % 4 == 0`` in every century the ranges allow (00 → 2000).
    """
    if not 1 <= month <= 12 or day < 1 or day > _DAYS_IN_MONTH[month]:
        return False
    return not (month == 2 and day == 29 and year2 % 4 != 0)


def _classify(digits: str) -> PersonId | str:
    """Return the PersonId, or the plain-words reason it is not one.

    *digits* are 11 ASCII digits. The sums are written out (the rule of
    person_id_checksum_ok): mappings classify every national id they read.
    """
    d = [ord(ch) - 48 for ch in digits]
    s1 = 3 * d[0] + 7 * d[1] + 6 * d[2] + d[3] + 8 * d[4] + 9 * d[5] + 4 * d[6] + 5 * d[7] + 2 * d[8]
    s2 = 5 * d[0] + 4 * d[1] + 3 * d[2] + 2 * d[3] + 7 * d[4] + 6 * d[5] + 5 * d[6] + 4 * d[7] + 3 * d[8] + 2 * d[9]
    if (s1 + d[9]) % 11 > 3 or (s2 + d[10]) % 11 != 0:
        return "check digits do not match"
    first, third = d[0], d[2]
    if first >= 8:  # FH-nummer: 800 000 000–999 999 999, no date (HIS 1001 §3.1)
        return PersonId("FHN", digits, FHN_SYSTEM, False)
    day, month, year2 = first * 10 + d[1], third * 10 + d[3], d[4] * 10 + d[5]
    if first <= 3 and third in (4, 5):
        # H-nummer: fictitious dates are allowed, so only the check digits count.
        return PersonId("HNR", digits, HNR_SYSTEM, False)
    kind: PersonIdKind = "DNR" if first >= 4 else "FNR"
    if kind == "DNR":
        day -= 40
    synthetic = month > 40
    month %= 40  # +80 (Tenor) or, on a D-number, +40 (Dolly)
    if not _date_ok(day, month, year2):
        return "impossible date"
    return PersonId(kind, digits, _SYSTEM_FOR[kind], synthetic)


def classify_person_id(value: str) -> PersonId | None:
    """Classify a person number by its digits (HIS 1001 §4.2), or return None.

    Spaces are ignored. None means: not 11 digits, check digits wrong, or a
    date part no person can have.
    """
    digits = _normalise(value) if " " in value else value
    # The test of _ELEVEN_DIGITS, without the regex: isdigit() alone would pass "²".
    if len(digits) != 11 or not digits.isascii() or not digits.isdigit():
        return None
    result = _classify(digits)
    return result if isinstance(result, PersonId) else None


def validate_person_id(value: str) -> PersonId:
    """Classify a person number or say in plain words why it is not one.

    Raises:
        PersonIdError: the reason ("not 11 digits", "check digits do not match",
            "impossible date"); it never quotes the number, so it may be logged
            and sent back in an ACK or AppRec.
    """
    digits = _normalise(value)
    if _ELEVEN_DIGITS.fullmatch(digits) is None:
        raise PersonIdError("not 11 digits")
    result = _classify(digits)
    if isinstance(result, str):
        raise PersonIdError(result)
    return result


def orgnr_ok(value: str) -> bool:
    """Tell whether *value* is a valid organisasjonsnummer (9 digits, mod 11; FACTS §6.3)."""
    digits = _normalise(value)
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    check = 11 - sum(w * int(d) for w, d in zip(_ORGNR_WEIGHTS, digits)) % 11
    if check == 10:
        return False
    return check % 11 == int(digits[8])


def hpr_ok(value: str) -> bool:
    """Tell whether *value* has the shape of an HPR-nummer: 1 to 9 ASCII digits, spaces ignored.

    Helsedirektoratet publishes no check-digit algorithm for HPR numbers, so
    only the shape is checked; whether the person exists is the register's call.
    Spaces are ignored as in a fødselsnummer (`914 4900`); the mappings store the digits.
    """
    digits = _normalise(value)
    return 1 <= len(digits) <= 9 and digits.isascii() and digits.isdigit()


_HER_ID = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def her_id_ok(value: str) -> bool:
    """Tell whether *value* has the shape of a HER-id: ASCII digits, spaces ignored.

    NHN Adresseregisteret numbers its communication parties (FACTS §6.3) and publishes no
    check digit nor length, so only the shape is checked; whether the party exists is the
    register's call. A letter means it is no HER-id (`HER56704`, `56704A`). One dot between
    digits is allowed: the national examples write some HER-ids so (Reseptformidleren's
    `2397.1` in e-resept, `9644.3` in NPR behandlerkravmelding), and refusing them would
    refuse those messages whole.
    """
    return _HER_ID.fullmatch(_normalise(value)) is not None


_K1_OFFSETS = {"classic": (0,), "2032": (0, 1, 2, 3)}
"""The K1 values a rule allows, as offsets from the classic one (FACTS §6.3)."""


def _check_digits(nine: str, rule: Rule) -> str:
    """Append K1 and K2 to nine digits, or raise ValueError if none are issued.

    Classic: the one K1 with ``(Σ1 + K1) mod 11 == 0``. 2032: the first of the
    four allowed K1 values (in rule order) that is a digit and gives a K2 that is
    a digit.
    """
    s1 = _sum1(nine)
    offsets = _K1_OFFSETS[rule]
    for offset in offsets:
        k1 = (11 + offset - s1 % 11) % 11
        if k1 == 10:
            continue
        k2 = (11 - (_sum2(nine + str(k1)) % 11)) % 11
        if k2 != 10:
            return f"{nine}{k1}{k2}"
    raise ValueError("no valid check digits: such a number is never issued")


def _dated(day: int, month: int, year2: int, individual: int) -> str:
    if not (0 <= year2 <= 99 and 0 <= individual <= 999):
        raise ValueError("year2 must be 0–99 and individual 0–999")
    return f"{day:02d}{month:02d}{year2:02d}{individual:03d}"


def make_fnr(
    day: int,
    month: int,
    year2: int,
    individual: int,
    *,
    rule: Rule = "classic",
    synthetic: bool = False,
) -> str:
    """Build a fødselsnummer with correct check digits, for tests and examples.

    ``synthetic=True`` adds 80 to the month (Skatteetaten Tenor), so the
    number can never belong to a real person.

    Raises:
        ValueError: the date is impossible, or K1/K2 would be 10 (never issued;
            see first_valid_fnr).
    """
    if not _date_ok(day, month, year2):
        raise ValueError("impossible date")
    return _check_digits(_dated(day, month + (80 if synthetic else 0), year2, individual), rule)


def make_dnr(
    day: int,
    month: int,
    year2: int,
    individual: int,
    *,
    rule: Rule = "classic",
    synthetic: bool = False,
) -> str:
    """Build a D-nummer (day + 40) with correct check digits; see make_fnr."""
    if not _date_ok(day, month, year2):
        raise ValueError("impossible date")
    return _check_digits(
        _dated(day + 40, month + (80 if synthetic else 0), year2, individual), rule
    )


def make_fhn(nine_digits: int) -> str:
    """Build an FH-nummer from its 9-digit body (800 000 000–999 999 999).

    Raises:
        ValueError: the body is out of range or K1/K2 would be 10.
    """
    if not 800_000_000 <= nine_digits <= 999_999_999:
        raise ValueError("an FH-nummer body is 800000000–999999999")
    return _check_digits(str(nine_digits), "classic")


def first_valid_fnr(
    day: int, month: int, year2: int, start_individual: int, *, synthetic: bool = False
) -> str:
    """Return the classic-rule fødselsnummer with the lowest individnummer ≥ start.

    About one body in three has K1 or K2 equal to 10 and is never issued, so
    tests walk forward rather than hand-pick.

    Raises:
        ValueError: the date is impossible or no individnummer up to 999 works.
    """
    if not _date_ok(day, month, year2):
        raise ValueError("impossible date")
    for individual in range(max(start_individual, 0), 1000):
        try:
            return make_fnr(day, month, year2, individual, synthetic=synthetic)
        except ValueError:
            continue  # K1 or K2 is 10: this body is never issued
    raise ValueError("no valid individnummer from the start given")
