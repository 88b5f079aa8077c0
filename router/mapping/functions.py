"""The mapping language's fixed function library: pure conversions a mapping may call.

Every function here is pure, fast (the compiled mappings call them once per
field on the hot path), documented for mapping authors, and tested. Mappings
have no code escape hatch (STYLE §11), so a conversion they need lives here.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "HELSEBRO_NAMESPACE",
    "hl7_date_to_fhir",
    "hl7_datetime_plus",
    "hl7_datetime_to_fhir",
    "uuid5_id",
]

#: Namespace of every deterministic resource id Helsebro makes. It never changes:
#: changing it would give every resource already in a record a new id, so a
#: re-sent message would create duplicates instead of updating.
HELSEBRO_NAMESPACE = uuid.UUID("d10ee399-0d8d-475b-87fd-f286ebc99291")

# STYLE §11: local times are converted in Europe/Oslo by name, never a fixed offset.
_OSLO = ZoneInfo("Europe/Oslo")

# HL7 v2 TS/DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ] (v2.5 §2.A.22).
_HL7_TS = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(\.[0-9]{1,4})?)?)?)?)?)?(?:([+-])([0-9]{2})([0-9]{2}))?",
    re.ASCII,  # "[0-9]", not "\d": Unicode digits are not HL7
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_NOT_TS = "not an HL7 timestamp"


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _check_date(year: int, month: str | None, day: str | None) -> None:
    """Raise ValueError unless year-month-day exists (FHIR has no year 0000)."""
    if year == 0:
        raise ValueError(_NOT_TS)
    if month is None:
        return
    m = int(month)
    if not 1 <= m <= 12:
        raise ValueError(_NOT_TS)
    if day is None:
        return
    last = 29 if m == 2 and _leap(year) else _DAYS_IN_MONTH[m]
    if not 1 <= int(day) <= last:
        raise ValueError(_NOT_TS)


def _format_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    seconds = int(offset.total_seconds()) if offset is not None else 0
    sign = "-" if seconds < 0 else "+"
    # Oslo's LMT before 1895 (+00:43) is whole minutes; FHIR cannot say seconds anyway.
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


@lru_cache(maxsize=16384)
def _oslo_day(date8: str) -> str | None:
    """Return Europe/Oslo's offset for a whole local day, or None if it changes that day.

    Also validates the date (raising ValueError), so a cache hit skips both. The
    cache holds about 45 years of days. No Oslo day has two transitions (checked
    against tzdata for 1880–2100), so equal offsets at 00:00 and 23:59 mean one
    offset all day.
    """
    year, month, day = int(date8[:4]), date8[4:6], date8[6:8]
    _check_date(year, month, day)
    first = datetime(year, int(month), int(day), 0, 0, tzinfo=_OSLO)
    last = datetime(year, int(month), int(day), 23, 59, tzinfo=_OSLO)
    offset = _format_offset(first)
    return offset if offset == _format_offset(last) else None


def _oslo_offset(date8: str, hour: str, minute: str) -> str:
    """Return Europe/Oslo's offset for a local wall-clock time, as ``+HH:MM``.

    ``fold=0`` decides the two odd hours: in the spring-forward gap (02:30 on
    the last Sunday of March never shows on a clock) the offset from before
    the change, +01:00, applies; in the repeated autumn hour the first pass,
    summer time +02:00, applies. HL7 carries no fold bit, so a sender that
    means the other reading must send an explicit offset.
    """
    offset = _oslo_day(date8)
    if offset is not None:
        return offset
    moment = datetime(
        int(date8[:4]), int(date8[4:6]), int(date8[6:8]), int(hour), int(minute),
        fold=0, tzinfo=_OSLO,
    )
    return _format_offset(moment)


@lru_cache(maxsize=8192)  # a lab message repeats its time in every OBX; errors are raised each time, never kept
def hl7_datetime_to_fhir(value: str) -> str | None:
    """Convert an HL7 v2 TS/DTM to a FHIR ``date`` or ``dateTime``.

    Date precision stays a FHIR date (``1961``, ``1961-06``, ``1961-06-15``);
    an offset on a date-only value is dropped, as FHIR dates have none. With a
    time, the result has seconds (``HH`` and ``HHMM`` are padded with zeros),
    keeps fractional seconds, and carries the sender's ``+/-ZZZZ`` or else the
    Europe/Oslo offset of that wall time (see _oslo_offset for the DST hours).

    Spaces around the value (a sender's padding) are ignored.

    Returns:
        None for an empty string (HL7 sends empty for "not known"), or one of spaces.

    Raises:
        ValueError: "not an HL7 timestamp" for anything else that is not one.
    """
    if not value:
        return None
    match = _HL7_TS.fullmatch(value)
    if match is None:
        if value.strip() != value:
            # `20040629 `: senders pad a field with spaces before the next delimiter; the time is whole.
            return hl7_datetime_to_fhir(value.strip())
        raise ValueError(_NOT_TS)
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if hour is None:
        _check_date(int(year), month, day)
        return "-".join(part for part in (year, month, day) if part is not None)
    minute = minute or "00"
    second = second or "00"
    # Two-digit strings compare like numbers; HL7 has no leap second.
    if hour > "23" or minute > "59" or second > "59":
        raise ValueError(_NOT_TS)
    if sign is None:
        offset = _oslo_offset(value[:8], hour, minute)  # also validates the date
    else:
        _check_date(int(year), month, day)
        if off_h > "14" or off_m > "59" or (off_h == "14" and off_m != "00"):
            raise ValueError(_NOT_TS)  # FHIR allows -13:59..+14:00
        offset = f"{sign}{off_h}:{off_m}"
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}{fraction or ''}{offset}"


def hl7_date_to_fhir(value: str) -> str | None:
    """Convert an HL7 v2 DT, or the date part of a TS/DTM, to a FHIR ``date``.

    For birthDate and other date-only elements. The whole timestamp must be
    valid; its date is taken as written, without shifting between time zones
    (a birth date is the date where the person was born).

    Raises:
        ValueError: "not an HL7 timestamp".
    """
    result = hl7_datetime_to_fhir(value)
    return None if result is None else result[:10]


# Duration units a start plus a duration may be in (AIS-8, SCH-10, an AIx's units: CNE/CE
# codes, UCUM or ANSI+/ISO+ spellings), as seconds. Words match in any case; one letter only
# in UCUM's lower case, since `M` is a month to some senders. `m` is a minute, as SCH-10 reads it.
_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("wk", "week", "weeks"), 604800),
}
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_NOT_IN_CALENDAR = "the end is beyond the calendar"


def hl7_datetime_plus(value: str, amount: str, unit: str) -> str | None:
    """Return the FHIR ``dateTime`` that is *amount* *unit* after the HL7 v2 TS/DTM *value*.

    For an end that is a start plus a duration (an Appointment's end from SCH-9/10 or
    AIS-7/8, FHIR app-2). The duration is elapsed time: two hours from 01:30 on the night
    summer time starts is 04:30 on the clock, and a day is 24 hours. The end keeps the
    sender's ``+/-ZZZZ`` when the start had one, else it is Europe/Oslo time.

    Returns:
        None when there is nothing to add to or nothing to add: an empty value, a start
        without an hour (a date is no instant), an amount that is not a plain non-negative
        decimal, or a unit not known (see _UNIT_SECONDS).

    Raises:
        ValueError: "not an HL7 timestamp" for a start that is not one; "the end is beyond
            the calendar" when the end would be after the year 9999.
    """
    start = hl7_datetime_to_fhir(value) if value else None
    amount = (amount or "").strip()
    unit = (unit or "").strip()
    seconds = _UNIT_SECONDS.get(unit if len(unit) == 1 else unit.lower())
    if start is None or len(start) <= 10 or seconds is None or not _AMOUNT.fullmatch(amount):
        return None
    sent = _HL7_TS.fullmatch(value.strip())
    try:
        end = datetime.fromisoformat(start) + timedelta(seconds=float(amount) * seconds)  # a fixed offset: elapsed time
        if sent is not None and sent.group(8) is None:  # no offset sent: the end's is Oslo's at that instant
            end = end.astimezone(_OSLO)
    except OverflowError as exc:
        raise ValueError(_NOT_IN_CALENDAR) from exc
    return end.replace(tzinfo=None).isoformat() + _format_offset(end)


def uuid5_id(*parts: str) -> str:
    """Return a deterministic FHIR resource id for the given identity parts.

    The same parts always give the same id, so a re-sent message updates the
    resource it made before instead of making a second one. Parts are joined
    with ``|``; callers must not put ``|`` inside a part, or ``("a|b", "c")``
    and ``("a", "b|c")`` would collide.

    Raises:
        ValueError: no parts were given.
    """
    if not parts:
        raise ValueError("uuid5_id needs at least one part")
    return str(uuid.uuid5(HELSEBRO_NAMESPACE, "|".join(parts)))
