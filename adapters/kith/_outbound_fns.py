"""The outbound XML mappings' fixed function library and their FHIR path readers.

Owns what a value in mappings/outbound/kith/ may be turned by (``fn:``) and how
a dotted FHIR path reads a Bundle resource. Loading and checking the files is
_outbound.py's; building the MsgHead is render.py's.

Words: *fnr* is fødselsnummer, *dnr* D-nummer, *fhn* felles hjelpenummer,
*hpr* the health-personnel register number, *her_id* a party's id in NHN's
Adresseregisteret, *enh* the organisation number (Enhetsregisteret), *rsh* the
RESH-id. Their FHIR systems are FACTS §6.1; their KITH codes are Volven 8116
(persons) and 9051 (organisations), FACTS §1 and §6.2.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["FUNCTIONS", "Getter", "PathStep", "compile_path", "parse_path", "text_of"]

# STYLE §11: local times in Europe/Oslo by name. KITH messages write local time
# without an offset (every Sarepta example does); Helsebro's inbound side reads
# an offset-less time as Oslo time again, so the round trip keeps the instant.
# Except in the hour the clocks go back, which happens twice: there the wall
# time names two instants, so the offset is written too (xml_datetime).
_OSLO = ZoneInfo("Europe/Oslo")

_PERSON_LIST = "2.16.578.1.12.4.1.1.8116"
_ORG_LIST = "2.16.578.1.12.4.1.1.9051"

# Identifier.system (FACTS §6.1) → (KITH code, display, the Volven list it is from).
_ID_TYPES: dict[str, tuple[str, str, str]] = {
    "urn:oid:2.16.578.1.12.4.1.4.1": ("FNR", "Fødselsnummer", _PERSON_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.2": ("DNR", "D-nummer", _PERSON_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.3": ("FHN", "Felles hjelpenummer", _PERSON_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.4": ("HPR", "HPR-nummer", _PERSON_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.5": ("DUF", "DUF-nummer", _PERSON_LIST),
    "urn:oid:2.16.578.1.12.4.1.2": ("HER", "HER-id", _ORG_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.101": ("ENH", "Organisasjonsnummeret i Enhetsregister", _ORG_LIST),
    "urn:oid:2.16.578.1.12.4.1.4.102": ("RSH", "RESH-id", _ORG_LIST),
}

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]{1,3})\])?")

Getter = Callable[[dict[str, Any]], Any]
"""Reads one path from the render context (resource name → FHIR JSON); None when absent."""


@dataclass(frozen=True, slots=True)
class PathStep:
    """One step of a dotted path: an element name and the repetition to take (None: the first)."""

    name: str
    index: int | None


def parse_path(text: str) -> tuple[PathStep, ...] | None:
    """Split ``encounter.participant[1].individual`` into steps; None when it is not a path."""
    steps = []
    for part in text.split("."):
        m = _STEP.fullmatch(part)
        if m is None:
            return None
        steps.append(PathStep(m.group(1), int(m.group(2)) if m.group(2) is not None else None))
    return tuple(steps)


def compile_path(steps: tuple[PathStep, ...], *, whole_list: bool = False) -> Getter:
    """Return a reader for *steps*: a repeating element gives its first item unless indexed.

    With *whole_list*, the last step's repetitions are returned as a list (for ``each``).
    """
    root, rest = steps[0].name, steps[1:]
    first_index = steps[0].index

    def read(ctx: dict[str, Any]) -> Any:
        value = ctx.get(root)
        if first_index is not None:
            value = _pick(value, first_index)
        for i, step in enumerate(rest):
            if isinstance(value, list):
                value = value[0] if value else None
            if not isinstance(value, dict):
                return [] if whole_list else None
            value = value.get(step.name)
            if step.index is not None:
                value = _pick(value, step.index)
            elif isinstance(value, list) and not (whole_list and i == len(rest) - 1):
                value = value[0] if value else None
        if whole_list:
            return value if isinstance(value, list) else ([] if value is None else [value])
        return value

    return read


def _pick(value: Any, index: int) -> Any:
    if isinstance(value, list):
        return value[index] if index < len(value) else None
    return value if index == 0 else None


def text_of(value: Any) -> str | None:
    """Return a FHIR primitive as XML text: booleans as ``true``/``false``; None for absent or empty."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if text.strip() else None


def _moment(value: str) -> datetime | None:
    """*value* as Oslo local time; None when it is no time, or has no Oslo time (9999-12-31T23:30-02:00 is past year 9999).

    The OverflowError that conversion raises was no refusal a destination could take: it failed the whole delivery.
    """
    try:
        moment = datetime.fromisoformat(value)
        return moment.astimezone(_OSLO) if moment.tzinfo is not None else moment
    except (ValueError, OverflowError):
        return None


def xml_datetime(value: str) -> str | None:
    """FHIR date or dateTime → KITH local time ``YYYY-MM-DDTHH:MM:SS`` in Europe/Oslo, without offset.

    In the hour the clocks go back (02:00-03:00 on the last Sunday of October) the
    wall time happens twice, and without its offset a reader takes the first: the
    later instant came back an hour early. There the offset is written
    (``2024-10-27T02:30:00+01:00``), as xs:dateTime allows.

    A date (or year, year-month) stays as it is: kith:TS accepts them, and a
    time that was never sent must not be invented. Anything else is None.
    """
    if "T" not in value:
        return value if _calendar_date(value) else None
    moment = _moment(value)
    if moment is None:
        return None
    moment = moment.replace(microsecond=0)
    if moment.tzinfo is not None and moment.replace(fold=1 - moment.fold).utcoffset() != moment.utcoffset():
        return moment.isoformat()
    # isoformat, not strftime: glibc's %Y writes year 999 as "999", which xs:dateTime refuses.
    return moment.replace(tzinfo=None).isoformat()


def _calendar_date(value: str) -> bool:
    """Whether *value* is a year, year-month or date that exists: 1961-02-30 is not, and xs:date refuses it.

    The shape alone let an impossible date through to the message (an XSD refusal of the whole
    message, or without HELSEBRO_XSD_DIR an invalid message sent); now it is missing, as the docs say.
    """
    m = re.fullmatch(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?", value)
    if m is None:
        return False
    try:
        date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return False
    return True


def xml_date(value: str) -> str | None:
    """FHIR date or dateTime → ``YYYY-MM-DD`` (the Oslo day of a dateTime); partial dates give None."""
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return value if _calendar_date(value) else None
    if "T" not in value:
        return None
    moment = _moment(value)
    return moment.date().isoformat() if moment is not None else None


def id_type(system: str) -> str | None:
    """Identifier.system → the KITH TypeId code: FNR, DNR, FHN, HPR, DUF (8116) or HER, ENH, RSH (9051)."""
    found = _ID_TYPES.get(system)
    return found[0] if found else None


def id_type_name(system: str) -> str | None:
    """Identifier.system → the TypeId display (DN), e.g. ``Fødselsnummer``."""
    found = _ID_TYPES.get(system)
    return found[1] if found else None


def id_type_list(system: str) -> str | None:
    """Identifier.system → the OID of the Volven list its code is from (S): 8116 for persons, 9051 for organisations."""
    found = _ID_TYPES.get(system)
    return found[2] if found else None


FUNCTIONS: dict[str, Callable[[str], str | None]] = {
    "date": xml_date,
    "datetime": xml_datetime,
    "id_type": id_type,
    "id_type_name": id_type_name,
    "id_type_list": id_type_list,
}
"""Every function a value may name with ``fn:``; each takes the text and returns text or None (left out)."""
