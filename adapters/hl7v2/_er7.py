"""Writing ER7 text: escaping delimiters, HL7 timestamps from FHIR ones, the outbound charsets.

Pure string work for the outbound renderer (render.py); reading ER7 is the
tokenizer's. Every function here runs per message, so none parses more than
it must.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

__all__ = [
    "CHARSETS",
    "DEFAULT_CHARSET",
    "escape",
    "escape_text",
    "fhir_to_hl7_date",
    "fhir_to_hl7_tm",
    "fhir_to_hl7_ts",
    "hl7_ts_to_ts",
    "keeps_offset",
    "split_lines",
]

OSLO = ZoneInfo("Europe/Oslo")
"""HL7 timestamps without an offset are Oslo wall time (docs/decisions.md, Time)."""

CHARSETS: dict[str, str] = {"ASCII": "ascii", "8859/1": "latin-1", "UNICODE UTF-8": "utf-8"}
"""MSH-18 values (HL7 table 0211) a destination may name, to the Python codec that encodes them."""

DEFAULT_CHARSET = "UNICODE UTF-8"
"""The charset of a destination that names none."""

# The default encoding characters ^~\& and the field separator |; CR and LF
# would end the segment, and the other control characters (but tab) would reach
# the receiver raw: 0x0B and 0x1C are MLLP's frame bytes, which cut a framed
# message short. They travel as hex escapes (HL7 v2.5 §2.7.5).
_NEEDS_ESCAPE = re.compile(r"[|^~\\&\x00-\x08\x0a-\x1f\x7f]")
_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "\\": "\\E\\", "&": "\\T\\"}


_NULL_ESCAPED = "\\X22\\\\X22\\"
"""A value that is exactly `""`, hex-escaped: written raw it is HL7's explicit null (§2.5.3), which tells a
receiver to delete what it holds, and which the inbound side reads as no value."""


def escape(value: str) -> str:
    """Return *value* with every delimiter written as its HL7 escape, so it stays one leaf."""
    if _NEEDS_ESCAPE.search(value) is None:
        return _NULL_ESCAPED if value == '""' else value
    return _NEEDS_ESCAPE.sub(_escaped, value)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def escape_text(value: str) -> str:
    """Return *value* escaped for a formatted-text field (FT, TX): a line break is `\\.br\\`, the rest as escape().

    Why: HL7 v2 §2.7 makes `\\.br\\` the line break of formatted text (FT, and TX by
    convention); a receiver shows it as a new line, where `\\X0A\\` would be a raw byte.
    ST and the other types allow no formatting and keep the hex escape.
    """
    if "\n" not in value and "\r" not in value:
        return escape(value)
    return "\\.br\\".join(escape(line) for line in _LINE_BREAK.split(value))


def split_lines(value: str) -> list[str]:
    """Split *value* at CR, LF and CR LF, as escape_text does; a final line break ends the last line, it opens none.

    Why not str.splitlines: it also splits at 0x0B, 0x0C, 0x1C-0x1E, 0x85, U+2028 and U+2029, so
    such a character (0x85 is a cp1252 sender's "…" read as 8859/1) vanished and cut its line in two.
    """
    lines = _LINE_BREAK.split(value)
    return lines[:-1] if len(lines) > 1 and not lines[-1] else lines


def _escaped(found: re.Match[str]) -> str:
    char = found.group(0)
    return _ESCAPES.get(char) or f"\\X{ord(char):02X}\\"


def keeps_offset(version: str) -> bool:
    """Tell whether timestamps for *version* carry their UTC offset.

    v2.3 receivers in Norway read local time and many choke on `+0100`; from
    v2.4 on the offset is written, so a timestamp means one instant.
    """
    return not version.startswith("2.3")


_FHIR_DT = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def fhir_to_hl7_date(value: str) -> str:
    """Return a FHIR date, or a dateTime's day in Oslo, as HL7 DT (`1961-06-15` → `19610615`); '' when it is not one.

    Why the Oslo day: `2024-10-27T23:30:00Z` is 00:30 on the 28th in Norway, where HL7
    times without offset are read (the KITH outbound's xml_date does the same). A time
    Oslo's clock cannot show (past year 9999) keeps the day it was written with.
    """
    m = _FHIR_DT.match(value)
    if m is None:
        return ""
    year, month, day, hour, minute, second, _, tz = m.groups()
    if hour is not None and tz is not None:
        stamp = _instant(year, month, day, hour, minute, second, "+0000" if tz == "Z" else tz[:3] + tz[4:6])
        local = _in_oslo(stamp) if stamp is not None else None
        if stamp is None:
            return ""
        if local is not None:
            return f"{local.year:04d}{local.month:02d}{local.day:02d}"
    return "".join(p for p in (year, month, day) if p)


_FHIR_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d+))?$", re.ASCII)


def fhir_to_hl7_tm(value: str) -> str:
    """Return a FHIR time as HL7 TM, `HHMMSS[.SSSS]` (`08:30:00` → `083000`); '' when it is not one.

    FHIR's time has no offset, so neither has the TM; a fraction is cut to TM's four digits.
    """
    m = _FHIR_TIME.match(value)
    if m is None:
        return ""
    hour, minute, second, fraction = m.groups()
    return f"{hour}{minute}{second}" + (f".{fraction[:4]}" if fraction else "")


def fhir_to_hl7_ts(value: str, *, with_offset: bool) -> str:
    """Return a FHIR dateTime as HL7 TS, `YYYYMMDDHHMMSS+ZZZZ`; '' when it is not one.

    A given offset is kept as sent; `Z` becomes Oslo time. Without offsets
    (v2.3) the instant is written as Oslo wall time, but with its offset in the
    hour that wall time names twice (_doubled). A time Oslo's clock cannot show
    (past year 9999) keeps the offset it came with. A date without a time
    stays a date: there is no instant to convert. A time that names no instant
    (February 30th, hour 25) is not one either: '', never a ValueError that the
    renderer's caller would not take for a message's fault.
    """
    m = _FHIR_DT.match(value)
    if m is None:
        return ""
    year, month, day, hour, minute, second, fraction, tz = m.groups()
    if hour is None:
        return "".join(p for p in (year, month, day) if p)
    frac = f".{fraction[:4]}" if fraction else ""
    offset = None if tz is None else "+0000" if tz == "Z" else tz[:3] + tz[4:6]
    stamp = _instant(year, month, day, hour, minute, second, offset)  # no offset: Oslo, like inbound HL7
    if stamp is None:
        return ""
    as_sent = f"{year}{month}{day}{hour}{minute}{second or '00'}{frac}{offset or ''}"
    if with_offset and offset is not None and tz != "Z":
        return as_sent
    local = _in_oslo(stamp)
    if local is None:  # Oslo's clock would read year 0 or 10000: the offset it came with names the instant
        return as_sent
    return _format(local, frac, with_offset or _doubled(local))


def _instant(year: str, month: str, day: str, hour: str, minute: str, second: str | None, offset: str | None) -> datetime | None:
    """The instant a parsed timestamp names (no *offset*: Oslo wall time), or None when the calendar has no such time.

    Why: the patterns only check digits; a sender's MSH-7 of `20250230…` passes the
    inbound side untouched, and must not crash rendering with a ValueError.
    """
    zone: tzinfo = OSLO
    try:
        if offset is not None:
            sign = 1 if offset[0] == "+" else -1
            zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=zone)
    except ValueError:
        return None


_HL7_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$")


def hl7_ts_to_ts(value: str, *, with_offset: bool) -> str:
    """Return a received HL7 TS (MSH-7) in the outbound convention; '' when it is not a TS.

    Without an offset the received value is Oslo wall time: it gains Oslo's
    offset where offsets are written, and is returned as is where they are not.
    A time the calendar lacks (February 30th) is not a TS: ''.
    """
    m = _HL7_TS.match(value.strip())
    if m is None:
        return ""
    year, month, day, hour, minute, second, fraction, tz = m.groups()
    if hour is None or minute is None:
        return "".join(p for p in (year, month, day, hour) if p)
    frac = (fraction or "")[:5]
    stamp = _instant(year, month, day, hour, minute, second, tz)
    if stamp is None:
        return ""
    if tz is None and not with_offset:
        return f"{year}{month}{day}{hour}{minute}{second or '00'}{frac}"
    if tz is not None and with_offset:
        return f"{year}{month}{day}{hour}{minute}{second or '00'}{frac}{tz}"
    local = _in_oslo(stamp)
    if local is None:  # past year 9999 (or before year 1) in Oslo: as received, its offset naming the instant
        return f"{year}{month}{day}{hour}{minute}{second or '00'}{frac}{tz or ''}"
    return _format(local, frac, with_offset or _doubled(local))


def _in_oslo(stamp: datetime) -> datetime | None:
    """*stamp* on Oslo's clock; None when that falls outside years 1-9999 (9999-12-31T23:30-02:00, 0001-01-01T00:10+01:00).

    Why: astimezone raises OverflowError there, which is no MessageError: it failed the
    whole delivery instead of this destination's rendering.
    """
    try:
        return stamp.astimezone(OSLO)
    except OverflowError:
        return None


def _doubled(local: datetime) -> bool:
    """Tell whether Oslo's clock shows *local* twice: 02:00-03:00 on the last Sunday of October.

    Why: a time written without offset (v2.3) is read as Oslo wall time, and there that
    names two instants: 02:30+01:00 was read back as 02:30+02:00, an hour early. That hour
    alone is written with its offset, which v2.3's TS allows (the KITH outbound does the
    same, adapters/kith/_outbound_fns.py). *local* comes from astimezone, so it is never in
    the spring hour that never happens: the other fold's offset differs only in the doubled hour.
    """
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def _format(stamp: datetime, frac: str, with_offset: bool) -> str:
    """Format by hand: strftime costs more than the rest of a timestamp's conversion."""
    text = f"{stamp.year:04d}{stamp.month:02d}{stamp.day:02d}{stamp.hour:02d}{stamp.minute:02d}{stamp.second:02d}{frac}"
    if with_offset:
        offset = stamp.utcoffset()
        minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text
