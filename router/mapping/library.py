"""The fixed function library of the mapping language, by the names YAML uses.

Authors call these with `fn: NAME` (one value) or `fn: NAME` plus `args: [paths]`.
The list is closed: there is no way to add Python from YAML. Each entry says
what it does in `docs/mapping-language.md`, generated from the docstrings here.
"""

from __future__ import annotations

import base64 as _b64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import InvalidContent, InvalidNationalId
from router.mapping.functions import hl7_date_to_fhir, hl7_datetime_plus, hl7_datetime_to_fhir, uuid5_id
from schemas import identity as ids


@dataclass(slots=True)
class FnContext:
    """What a function may know besides its arguments: configured identifier systems, and who sent the message.

    It lives as long as its converter, and so does `memo`: the resources the
    engine built from a value alone, by value (engine._one). A new converter
    (new settings, reloaded mappings) starts with an empty one.

    `sender` is the one per-message part, set by the converter before each
    message is mapped: the sending organisation (MSH-4.1, else MSH-4.2; or the KITH
    sender institution's HER-id). A local identifier that names no assigning authority is the
    sender's own number, so its system says so: two hospitals' patient 123456
    are two patients, not one (see `_local_system`).
    """

    authorities: Mapping[str, str]
    local_template: str
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    sender: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Function:
    """One library entry."""

    name: str
    arity: int  # number of arguments; the first is the rule's own `from` value when no args are given
    call: Callable[..., Any]
    doc: str
    blank_lines: bool = False  # a `[*]` argument gives its empty values too, as "" (the blank lines of a text)


class _Values:
    """Argument values plus their positions, so a function can name the field it rejects."""

    __slots__ = ("locations", "values")

    def __init__(self, values: list[str | None], locations: list[str | None]) -> None:
        self.values = values
        self.locations = locations


def _date(ctx: FnContext, v: _Values) -> str | None:
    return _timestamp(hl7_date_to_fhir, v)


def _datetime(ctx: FnContext, v: _Values) -> str | None:
    return _timestamp(hl7_datetime_to_fhir, v)


def _timestamp(fn: Callable[[str], str | None], v: _Values) -> str | None:
    value = v.values[0]
    if value is None:
        return None
    try:
        return fn(value)
    except ValueError as exc:
        raise InvalidContent("not a valid HL7 date/time", location=v.locations[0]) from exc


def _datetime_plus(ctx: FnContext, v: _Values) -> str | None:
    """(TS, duration, units) → the FHIR dateTime that long after TS: an end from a start and a duration."""
    start, amount, unit = (v.values + [None, None, None])[:3]
    if _timestamp(hl7_datetime_to_fhir, v) is None:  # refuses a start that is no timestamp at its own position
        return None
    try:
        return hl7_datetime_plus(start or "", amount or "", unit or "")
    except ValueError as exc:  # the start is valid: the duration took the end past the calendar
        raise InvalidContent("the end is beyond the calendar", location=v.locations[1]) from exc


_HPR_MARKERS = {"HPR", "NOHPR", "HPRNR", ids.HPR_SYSTEM[8:]}


def _local_system(ctx: FnContext, authority: str | None, type_code: str | None, location: str | None, *, oid: bool = False) -> str:
    """The system of a number its authority gives: configured, else the authority's ISO OID itself (*oid*), else the template.

    Raises:
        InvalidContent: the number names no authority and the message no sender (see `_sender`).
    """
    if not authority or not authority.strip():
        # No assigning authority: the number is its sender's (a hospital's own patient or order
        # number). Shared by every sender, one hospital's patient 123456 would be
        # another hospital's, and a message from one would overwrite the other's record.
        authority = _sender(ctx, location, "a local number that names no assigning authority")
    if authority in ctx.authorities:
        return ctx.authorities[authority]
    if oid:
        return "urn:oid:" + authority  # an authority known by its OID only (CX-4.2 with CX-4.3 ISO), as the v2-to-FHIR IG has it
    # A URI may not hold spaces: "GOOD HEALTH HOSPITAL" becomes "GOOD-HEALTH-HOSPITAL".
    return ctx.local_template.format(authority=_uri_part(authority), type=_uri_part(type_code or "id"))


def _sender(ctx: FnContext, location: str | None, what: str) -> str:
    """The sender whose *what* (a number, a code system, a ward) is, or refuse it at *location*.

    Why refuse: with no sender named (HL7 MSH-4 and MSH-3 empty; a KITH sender with no HER-id), the
    number was filed under `urn:helsebro:local:unknown:…`, one system for every such sender, so two
    systems' patient 123456 became one Patient. Whose it is cannot be guessed; the sender must name
    the assigning authority (CX-4) or itself.
    """
    if ctx.sender and ctx.sender.strip():
        return ctx.sender
    raise InvalidContent(
        f"{what}, in a message that names no sender (MSH-4 and MSH-3 empty, or no sender HER-id): "
        "Helsebro cannot tell whose it is; send the assigning authority or the sender's name",
        location=location,
    )


def _uri_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-_" else "-" for ch in text.strip())


def _identifier_system(ctx: FnContext, v: _Values) -> str | None:
    """(value, authority, type code) → Identifier.system, validating national ids."""
    value, authority, type_code = (v.values + [None, None, None])[:3]
    return _system(ctx, value, authority, type_code, v.locations[0])


def _cx_system(ctx: FnContext, v: _Values) -> str | None:
    """(id, authority, type code, authority's universal id, its type) → Identifier.system.

    As identifier_system; an authority named only by its universal id (CX-4.2
    and CX-4.3, `777^^^&2.16.578.1.12.4.1.7.1&ISO`) is looked up as the
    authority, and an ISO OID nobody configured is the system itself.
    """
    value, authority, type_code, universal, universal_type = (v.values + [None] * 5)[:5]
    if authority or not universal:
        return _system(ctx, value, authority, type_code, v.locations[0])
    return _system(ctx, value, universal, type_code, v.locations[0], oid=(universal_type or "").upper() == "ISO")


_NATIONAL_SYSTEMS = frozenset({ids.FNR_SYSTEM, ids.DNR_SYSTEM, ids.FHN_SYSTEM, ids.ENH_SYSTEM, ids.HPR_SYSTEM, ids.HER_SYSTEM})
"""The systems whose numbers were checked digit by digit, spaces ignored: their value is the digits."""


def _cx_value(ctx: FnContext, v: _Values) -> str | None:
    """(id, authority, type code, universal id, its type), as cx_system → Identifier.value.

    A number that goes under a national system (fødselsnummer, D-nummer, FH-nummer,
    organisasjonsnummer, HPR-nummer, HER-id) is written without the spaces it was sent with:
    `158661 12379` is the fødselsnummer 15866112379, and as sent it made a second Patient
    beside the one every other message names. Any other number is kept as sent. With only
    (value, authority, type code) it is identifier_value, the value beside identifier_system
    (a KITH Ident's Id and TypeId).
    """
    value = v.values[0]
    if not value or " " not in value:
        return value
    if _cx_system(ctx, v) in _NATIONAL_SYSTEMS:
        return value.replace(" ", "")
    return value


def _staff(strict: Callable[[FnContext, _Values], str | None]) -> Callable[[FnContext, _Values], str | None]:
    """*strict* (identifier_system or identifier_value) for a health professional's Ident: a number that is not what its TypeId says gives nothing.

    Why: an HPR-nummer sent with TypeId FNR, or with a letter in it, refused a whole Innleggelsesrapport,
    though HIS 80415 §3.2 lets a receiver refuse a message only for the listed technical and identification
    reasons (the patient's among them), never for the quality of its content. Nothing is written rather than
    a wrong number under a national system; the person is then known as the template's identity says
    (by name at the sending organisation). A patient's or an organisation's Ident stays strict.
    """

    def lenient(ctx: FnContext, v: _Values) -> str | None:
        try:
            return strict(ctx, v)
        except InvalidContent:
            return None

    return lenient


def _staff_value(ctx: FnContext, v: _Values) -> str | None:
    """identifier_value for a health professional's number: nothing where staff_identifier_system gives nothing, so no number stands without its system."""
    if _staff(_identifier_system)(ctx, v) is None:
        return None
    return _cx_value(ctx, v)


def _person_id_type(ctx: FnContext, v: _Values) -> str | None:
    """A person number → the Volven 8116 code of what it is (FNR, DNR, FHN, HNR), by its digits.

    Why: senders label D-numbers and FH-numbers FNR. cx_system puts the number under the
    system of what it is; its type must say the same, or the Identifier contradicts itself.
    Not a valid person number: nothing (cx_system refuses one declared national).
    """
    value = v.values[0]
    person = ids.classify_person_id(value) if value else None
    return person.kind if person is not None else None


def _ei_system(ctx: FnContext, v: _Values) -> str | None:
    """(EI.1, EI.2, EI.3, EI.4) → Identifier.system: the namespace (EI.2), else the universal id (EI.3, an ISO OID as `urn:oid:`).

    As cx_system without a type code: EI.4 says what kind of id EI.3 is (`ISO`), it is no
    identifier type. Read as one, a namespace nobody configured gave `urn:helsebro:local:<ns>:ISO`,
    and the same number sent without EI.3/EI.4 another system. v2-to-FHIR IG EI[Identifier-System].
    """
    value, namespace, universal, universal_type = (v.values + [None] * 4)[:4]
    return _cx_system(ctx, _Values([value, namespace, None, universal, universal_type], [v.locations[0], None, None, None, None]))


def _role_system(role: str) -> Callable[[FnContext, _Values], str | None]:
    """ei_system for a placer's or a filler's number: without a namespace, the sender's numbers of that role.

    Why: OBR-2 and OBR-3 without EI-2 are both the sender's numbers, but not one
    number space. Under one system, a report whose filler number is 100 was the
    report whose placer number was 100: another patient's, overwritten.
    """

    def system(ctx: FnContext, v: _Values) -> str | None:
        value, namespace, universal = (v.values + [None] * 4)[:3]
        if value and not namespace and not universal:
            return ctx.local_template.format(authority=_uri_part(_sender(ctx, v.locations[0], "a number with no namespace")), type=role)
        return _ei_system(ctx, v)

    return system


_V2_TABLE = re.compile(r"^HL7(\d{3,4})$", re.IGNORECASE)


def _coding_system(ctx: FnContext, v: _Values) -> str | None:
    """A coding-system name (CWE.3, CWE.6; HL7 table 0396) that tables/coding-systems.yaml does not list → a URI.

    `HL7nnnn`, an HL7 table, is `http://terminology.hl7.org/CodeSystem/v2-nnnn` (as the v2-to-FHIR
    IG names v2 tables; `HL7127`, a digit short, is table 0127). Any other name (`L`, `99zzz`,
    `LOCAL`) is the sender's own code system: `urn:helsebro:local:<sender>:codesystem:<name>`, a
    URI, as Coding.system must be, and one per sender: two hospitals' local code `L|K1` are two codes.
    A mapping reads this first and the table after it, so a listed name wins.
    """
    name = (v.values[0] or "").strip()
    if not name:
        return None
    table = _V2_TABLE.match(name)
    if table:
        return "http://terminology.hl7.org/CodeSystem/v2-" + table.group(1).zfill(4)
    sender = _uri_part(_sender(ctx, v.locations[0], "a local coding system"))
    return ctx.local_template.format(authority=sender, type="codesystem:" + _uri_part(name))


def _system(ctx: FnContext, value: str | None, authority: str | None, type_code: str | None, location: str | None, *, oid: bool = False) -> str | None:
    """What identifier_system and cx_system answer; *oid*: the authority is an ISO OID."""
    if not value:
        return None
    t = (type_code or "").upper()
    a = (authority or "").upper()
    if t in _HPR_MARKERS or a in _HPR_MARKERS:
        if not ids.hpr_ok(value):
            raise InvalidContent("HPR number is not 1-9 digits", location=location)
        return ids.HPR_SYSTEM
    if t in ("HER",) or a == "HER":
        # Adresseregisteret's ids are numbers: `56704A` under its system is a party nobody can find.
        if not ids.her_id_ok(value):
            raise InvalidContent("HER-id is not digits", location=location)
        return ids.HER_SYSTEM
    if t in ("RSH", "RESH") or a == "RSH":
        return ids.RESH_SYSTEM
    if t in ("ENH", "NOORG") or a in ("ENH", "BRREG"):
        if not ids.orgnr_ok(value):
            raise InvalidContent("organisasjonsnummer fails its check digit", location=location)
        return ids.ENH_SYSTEM
    declared_national = ids.declares_national(t, a)  # the partition key reads the same markers (router/routing/partition.py)
    if declared_national or (not t and not a and ids.looks_like_national_id(value)):
        person = ids.classify_person_id(value)
        if person is None:
            if declared_national:
                # Never store a number under a national system unless it is one.
                raise InvalidNationalId("national identity number is not a valid fødselsnummer, D-nummer or FH-nummer (check digits or date)", location=location)
            return _local_system(ctx, authority, type_code, location, oid=oid)
        if person.kind != "HNR":
            return person.system
    return _local_system(ctx, authority, type_code, location, oid=oid)


def _hd_system(ctx: FnContext, v: _Values) -> str | None:
    """(namespace id, universal id, universal id type) → system for an organisation."""
    namespace, universal, kind = (v.values + [None, None, None])[:3]
    national = _hd_national(universal, kind, v.locations[1] if len(v.locations) > 1 else None)
    if national is not None:
        return national[0]
    if universal and (kind or "").strip().upper() == "ISO":
        return "urn:oid:" + universal.strip()
    if namespace:
        return _local_system(ctx, namespace, "facility", v.locations[0])
    return None


# The national registers' OIDs: an ISO universal id one arc below names that register's entry
# (`2.16.578.1.12.4.1.2.112233` is HER-id 112233), as the Norwegian HL7 v2 senders write MSH-4.
_HD_ARCS = ((ids.HER_SYSTEM[8:] + ".", "HER"), (ids.ENH_SYSTEM[8:] + ".", "ENH"), (ids.RESH_SYSTEM[8:] + ".", "RSH"))
_HD_TYPES = {"HER": "HER", "ENH": "ENH", "NOORG": "ENH", "RSH": "RSH", "RESH": "RSH"}


def _hd_national(universal: str | None, kind: str | None, location: str | None) -> tuple[str, str] | None:
    """An HD's universal id that names an organisation in a national register → (its OID system, the bare number); else None.

    Said by HD.3 (HER, ENH or NOORG, RSH or RESH, in any case) or by an ISO OID one arc below the
    register's OID. The number is checked and written without spaces, as cx_system and cx_value do, so
    one organisation is one Organization however an HD, a CX or an XON writes it.

    Raises:
        InvalidContent: a HER-id that is not digits, an organisasjonsnummer whose check digit fails.
    """
    if not universal or not universal.strip():
        return None
    k = (kind or "").strip().upper()
    number = universal.strip()
    if k == "ISO":
        arc = next(((prefix, name) for prefix, name in _HD_ARCS if number.startswith(prefix)), None)
        if arc is None:
            return None
        number, k = number[len(arc[0]):], arc[1]
    k = _HD_TYPES.get(k, "")
    if k == "HER":
        if not ids.her_id_ok(number):
            raise InvalidContent("HER-id is not digits", location=location)
        return ids.HER_SYSTEM, number.replace(" ", "")
    if k == "ENH":
        if not ids.orgnr_ok(number):
            raise InvalidContent("organisasjonsnummer fails its check digit", location=location)
        return ids.ENH_SYSTEM, number.replace(" ", "")
    if k == "RSH":
        return ids.RESH_SYSTEM, number.replace(" ", "")
    return None


def _location_facility(ctx: FnContext, v: _Values) -> str | None:
    """(facility's namespace id, its universal id, its type: PL.4.1-3) → the facility whose location codes these are.

    A PL without a facility is its sender's (MSH-4), as a local number is: the same ward sent
    with and without PL.4 by one hospital is one Location, with one assigner.
    """
    namespace, universal = (v.values + [None, None])[:2]
    return namespace or universal or ctx.sender


def _location_system(ctx: FnContext, v: _Values) -> str | None:
    """(PL.4.1-3) → the system of that facility's location codes (see _location_facility).

    Why not the facility's configured system (`identifiers.authorities`): that names its patient
    and visit numbers, and a ward's code is no such number. A system per facility keeps two
    hospitals' ward MED apart.
    """
    facility = _location_facility(ctx, v) or _sender(ctx, v.locations[0], "a location with no facility (PL.4)")
    return ctx.local_template.format(authority=_uri_part(facility), type="location")


def _key(ctx: FnContext, v: _Values) -> str | None:
    """The arguments as one identifying value, each in its place: joined with `/`, an empty one left empty.

    A `/` or `%` inside an argument is written `%2F`, `%25`, so no two argument lists give one key:
    bed 2 of room 301 (`MED/301/2`) is not bed 2 with no room (`MED//2`), nor room `301/2`.
    """
    if not any(v.values):
        return None
    return "/".join((x or "").replace("%", "%25").replace("/", "%2F") for x in v.values)


def _hd_value(ctx: FnContext, v: _Values) -> str | None:
    """The identifying value of an HD: its universal id when it has a type, else its namespace.

    A HER-id, organisasjonsnummer or RESH-id (by HD.3, or an ISO OID under the register's): the bare
    number, beside the national system hd_system gives it.
    """
    namespace, universal, kind = (v.values + [None, None, None])[:3]
    national = _hd_national(universal, kind, v.locations[1] if len(v.locations) > 1 else None)
    if national is not None:
        return national[1]
    return universal if (universal and kind) else namespace


def _xml_datetime(ctx: FnContext, v: _Values) -> str | None:
    """xs:dateTime or xs:date → FHIR; a time without an offset is Europe/Oslo, like HL7's."""
    value = (v.values[0] or "").strip()
    if not value:
        return None
    m = _XS_DATETIME.match(value)
    if not m:
        raise InvalidContent("not a valid XML date or dateTime", location=v.locations[0])
    date, time_part, frac, zone = m.group(1), m.group(2), m.group(3) or "", m.group(4) or ""
    if not time_part:
        return date
    if zone:
        return f"{date}T{time_part}{frac}{'+00:00' if zone == 'Z' else zone}"
    hl7 = date.replace("-", "") + time_part.replace(":", "") + frac
    return hl7_datetime_to_fhir(hl7)


_XS_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")


def _oid_system(ctx: FnContext, v: _Values) -> str | None:
    """A Volven/KITH `S` attribute (an OID) → `urn:oid:<S>`; a value already a URI is kept."""
    value = (v.values[0] or "").strip()
    if not value:
        return None
    return value if ":" in value else "urn:oid:" + value


def _uuid_urn(ctx: FnContext, v: _Values) -> str | None:
    """A MsgId (a UUID) → `urn:uuid:<id>`, the FHIR form of a UUID identifier; other text is kept."""
    value = (v.values[0] or "").strip().lower()
    if not value:
        return None
    return value if value.startswith("urn:") else f"urn:uuid:{value}"


def _compact(ctx: FnContext, v: _Values) -> str | None:
    """Remove every whitespace character (base64 text wrapped over lines)."""
    value = "".join((v.values[0] or "").split())
    return value or None


def _base64(ctx: FnContext, v: _Values) -> str | None:
    """Text → base64 of its UTF-8 bytes: a document's text as `Attachment.data` (base64Binary)."""
    value = v.values[0]
    if not value:
        return None
    return _b64.b64encode(value.encode("utf-8")).decode("ascii")


def _markup_base64(ctx: FnContext, v: _Values) -> str | None:
    """An element's content as written → base64: its XHTML children serialised, else its text (as base64).

    Why: flattened to text, a table loses its empty cells, and a value slides into
    the column of the day before (glucose 7.9 on 29.04 read as on 28.04).
    """
    value = v.values[0]
    node = getattr(value, "node", None)  # an XML path's value remembers its element (adapters/kith/paths.NodeText)
    if node is not None:
        children = [child for child in node if isinstance(child.tag, str)]
        if children:
            from copy import deepcopy

            from lxml import etree  # only XML messages get here

            def written(child: Any) -> str:
                child = deepcopy(child)
                etree.cleanup_namespaces(child)  # the envelope's declarations are not the document's
                return str(etree.tostring(child, encoding="unicode", with_tail=False))

            markup = "".join(written(child) for child in children)
            return _b64.b64encode(markup.encode("utf-8")).decode("ascii")
    return _base64(ctx, v)


_BLOCKS = frozenset(("p", "div", "br", "li", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"))
_CELLS = frozenset(("td", "th"))
_SEPARATORS = frozenset((":", ";", ","))
_LINES = frozenset(("br", "tr", "li"))


def _rendered(node: Any) -> str:
    """An element's text with its XHTML shape kept: a paragraph, line break or row on a line of its own, cells apart.

    Why: `normalize-space()` runs paragraphs together ("jfr. kommentar.Leveren ses"), and a
    table's empty cell vanishes, so a value reads as the column before it.
    """
    out: list[str] = []

    def walk(el: Any) -> None:
        tag = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""
        if tag in _BLOCKS:
            out.append("\n")
        if tag in _CELLS:
            out.append(" | ")
        if el.text and isinstance(el.tag, str):
            out.append(el.text)
        for child in el:
            walk(child)
            if child.tail:
                out.append(child.tail)
        if tag in _BLOCKS and tag not in _LINES:  # a paragraph ends its line; a row or item only starts one
            out.append("\n")

    walk(node)  # the carrying element (TextResultValue) is no block: only its text and children count
    lines = (" ".join(line.split()) for line in "".join(out).split("\n"))
    text = "\n".join(line.removeprefix("| ").removesuffix(" |") if line.startswith("| ") else line for line in lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n ")


def _concat_text(ctx: FnContext, v: _Values) -> str | None:
    """The valued arguments joined with a space, a punctuation-only one (`'":"'`) kept to the part before it.

    As `normalize-space(concat(...))` wrote them, except that an XHTML element keeps its
    paragraphs and line breaks on lines of their own and its table cells apart (`_rendered`).
    Path values come stripped, so the separators are the function's, not the arguments'.
    """
    parts: list[str] = []
    for value in v.values:
        if not value:
            continue
        node = getattr(value, "node", None)  # an XML path's value remembers its element (adapters/kith/paths.NodeText)
        if node is not None and any(isinstance(child.tag, str) for child in node):
            text = _rendered(node)
        else:
            text = " ".join(str(value).split())
        if text in _SEPARATORS:  # to the part before it, if any
            if parts:
                parts[-1] += text
            continue
        parts.append(text)
    return " ".join(parts) or None


def _base64_data(ctx: FnContext, v: _Values) -> str | None:
    """Base64 text as sent (ED.5): whitespace removed, then checked; text that is not base64 rejects the message at its position."""
    value = "".join((v.values[0] or "").split())
    if not value:
        return None
    try:
        _b64.b64decode(value, validate=True)
    except ValueError as exc:
        raise InvalidContent("ED data declared Base64 is not valid base64", location=v.locations[0]) from exc
    return value


def _hex_data(ctx: FnContext, v: _Values) -> str | None:
    """Hexadecimal text as sent (ED.5, encoding Hex): whitespace removed, any case → base64 of its bytes.

    Why: encoded as if it were text, the attachment's bytes were the hex digits, a document
    no reader opens. An odd count of digits or a non-hex character rejects the message at its position.
    """
    value = "".join((v.values[0] or "").split())
    if not value:
        return None
    if len(value) % 2 or any(ch not in _HEX_DIGITS for ch in value):
        raise InvalidContent("ED data declared Hex is not valid hexadecimal (an even count of the digits 0-9, A-F)", location=v.locations[0])
    return _b64.b64encode(bytes.fromhex(value)).decode("ascii")


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _upper(ctx: FnContext, v: _Values) -> str | None:
    return v.values[0].upper() if v.values[0] else None


def _lower(ctx: FnContext, v: _Values) -> str | None:
    return v.values[0].lower() if v.values[0] else None


def _trim(ctx: FnContext, v: _Values) -> str | None:
    return (v.values[0] or "").strip() or None


def _uuid5(ctx: FnContext, v: _Values) -> str:
    return uuid5_id(*[x or "" for x in v.values])


def _number(ctx: FnContext, v: _Values) -> int | float | None:
    """A decimal as a JSON number; text that is not one reads as absent (map it as text instead).

    A number JSON cannot carry exactly is refused at its field rather than dropped: a whole number
    beyond 64 bits (an OBX-5 of 25 digits) stopped `convert` and the record's writer with a
    traceback, and a decimal too large for a double became infinity, which JSON writes as null.
    A whole number beyond 64 bits that a double holds exactly (1E20) is kept as that double.
    """
    raw = (v.values[0] or "").strip()
    if not raw or not _DECIMAL.match(raw):
        return None
    if "." not in raw:
        whole = int(raw)
        if -_INT64 <= whole < _INT64:
            return whole
        if len(raw) < 400 and int(as_double := float(whole)) == whole:
            return as_double
    else:
        value = float(raw)
        if math.isfinite(value):
            return value
    raise InvalidContent("the number is too large to store (beyond 64 bits)", location=v.locations[0])


_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_INT64 = 2**63


def _comparator(ctx: FnContext, v: _Values) -> str | None:
    """The comparator of a number sent with one (`<5`, `>= 10.5` in an NM) → Quantity.comparator.

    Why: laboratories write "below the detection limit" as `<5` in an NM. Read as a number it was
    nothing, so the result became text and lost its value and UCUM unit; as an SN `<^5` it is a
    Quantity with a comparator, and so it is here. Anything else (`<see note`, `5`) gives nothing.
    """
    match = _COMPARED.match(v.values[0] or "")
    return match.group(1) if match else None


def _compared_number(ctx: FnContext, v: _Values) -> int | float | None:
    """The number after the comparator of `<5` (see `_comparator`), as `number` reads it."""
    match = _COMPARED.match(v.values[0] or "")
    return _number(ctx, _Values([match.group(2)], v.locations[:1])) if match else None


_COMPARED = re.compile(r"^\s*(<=|>=|<|>)\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$")


def _range_part(group: int) -> Callable[[FnContext, _Values], int | float | None]:
    """A reference range's text (OBX-7) → its low (*group* 1) or high (2) number, as `number` reads it.

    Why: the IG maps OBX-7 to referenceRange.text and, when the text parses, its low and high; as
    text alone, nothing could compare a value with its range. `3.5-5.0` and `3.5 - 5.0` give both,
    `>2` and `>=2` a low, `<10` and `<=10` a high; a decimal comma (`3,5`, as Norwegian laboratories
    write) is a decimal point. Any other text (`se kommentar`, `-5--2`) gives nothing.
    """

    def part(ctx: FnContext, v: _Values) -> int | float | None:
        text = v.values[0] or ""
        if text in _RANGES:
            bounds = _RANGES[text]
        else:
            try:
                bounds = _parse_range(ctx, text, v.locations[:1])
            except InvalidContent:  # a bound too large to store: refused by the part that reads it, never kept
                bounds = _parse_range(ctx, text, v.locations[:1], only=group)
                return bounds[group - 1] if bounds is not None else None
            if len(_RANGES) >= _RANGES_KEPT:
                _RANGES.clear()
            _RANGES[text] = bounds
        return bounds[group - 1] if bounds is not None else None

    return part


def _parse_range(ctx: FnContext, text: str, locations: list[str | None], only: int = 0) -> tuple[int | float | None, int | float | None] | None:
    """A range's (low, high) as `number` reads them; with *only* (1 or 2), that bound alone, the other None."""
    match = _RANGE.match(text)
    if not match:
        return None
    low, high = match.group(1) or match.group(3), match.group(2) or match.group(4)
    return (_number(ctx, _Values([low.replace(",", ".")], locations)) if low and only != 2 else None,
            _number(ctx, _Values([high.replace(",", ".")], locations)) if high and only != 1 else None)


_RANGES: dict[str, tuple[int | float | None, int | float | None] | None] = {}
"""Reference ranges already read, text → (low, high).

Why: a laboratory sends the same few ranges with every result of an analyte, and reading one
(two regular expressions and two numbers) cost a 20-result ORU^R01 9% of its conversion when
range_low and range_high each read it. A range with a bound too large to store is never kept:
the function reading that bound refuses it, the other reads its own as before.
"""
_RANGES_KEPT = 4096


_NUM = r"(\d+(?:[.,]\d+)?)"
_RANGE = re.compile(r"^\s*(?:" + _NUM + r"\s*-\s*" + _NUM + r"|>=?\s*" + _NUM + r"|<=?\s*" + _NUM + r")\s*$", re.ASCII)


def _time(ctx: FnContext, v: _Values) -> str | None:
    """An HL7 TM (`HH[MM[SS[.S…]]][+/-ZZZZ]`) → a FHIR time `hh:mm:ss[.s…]`.

    Why: the IG maps an OBX-5 of type TM to valueTime; as text, a time of day could not be read as
    one. FHIR's time has no offset, so the sender's is left off (the time is as the sender's clock
    showed it). Anything that is no time of day (`2561`, `12:30`) gives nothing: map it as text.
    """
    match = _TM.match(v.values[0] or "")
    if not match:
        return None
    hour, minute, second, fraction = match.groups()
    return f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"


_TM = re.compile(r"^\s*([01][0-9]|2[0-3])(?:([0-5][0-9])(?:([0-5][0-9])(\.[0-9]{1,4})?)?)?(?:[+-][0-9]{4})?\s*$", re.ASCII)


def _lines(ctx: FnContext, v: _Values) -> str | None:
    """Join the valued arguments, one per line (TX/FT text split over repetitions)."""
    parts = [x for x in v.values if x]
    return "\n".join(parts) or None


def _lines_base64(ctx: FnContext, v: _Values) -> str | None:
    """The valued arguments one per line → base64 of that text's UTF-8: a TX document's lines as one `Attachment.data`.

    Why: a document sent one line per OBX-5 repetition, or one line per OBX, is one text
    (v2-to-FHIR IG OBX[DocumentReference]: each repeat a line feed); `base64` of one
    value kept only its first line, and one attachment per OBX cut it into pieces. An empty value
    (an OBX with no OBX-5, an empty repetition) is a blank line, a letter's paragraph break; blank
    lines before the first line and after the last are left out.
    """
    lines = [x for x in v.values if x is not None]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    text = "\n".join(lines)
    return _b64.b64encode(text.encode("utf-8")).decode("ascii") if text else None


_ED_TYPES = {"ap": "application", "au": "audio", "im": "image", "tx": "text", "ft": "text", "mu": "multipart", "ns": "application", "si": "application", "sd": "application"}
"""HL7 table 0191 (type of referenced data, ED.2/RP.3) codes → the MIME top-level type."""


def _mime(ctx: FnContext, v: _Values) -> str | None:
    """(type, subtype) of an ED value → a MIME type: `application`, `pdf` → `application/pdf`; table 0191 codes (AP, IM, TEXT) too."""
    kind, sub = (v.values + [None, None])[:2]
    if not kind:
        return None
    kind = kind.strip().lower()
    kind = _ED_TYPES.get(kind, kind)
    if "/" in kind or not sub:
        return kind if "/" in kind else {"text": "text/plain", "image": "image/*", "application": "application/octet-stream"}.get(kind, kind)
    return f"{kind}/{sub.strip().lower()}"


def _join(ctx: FnContext, v: _Values) -> str | None:
    parts = [x for x in v.values if x]
    return " ".join(parts) or None


LIBRARY: dict[str, Function] = {
    f.name: f
    for f in (
        Function("date", 1, _date, "HL7 DT/TS → FHIR date (precision kept)."),
        Function("datetime", 1, _datetime, "HL7 TS/DTM → FHIR dateTime; no offset means Europe/Oslo local time."),
        Function("datetime_plus", 3, _datetime_plus, "(TS, duration, units) → the FHIR dateTime that long after TS (an end from a start and a duration): elapsed time, s/min/h/d/wk (m a minute; one-letter units in lower case only), the sender's offset kept, else Europe/Oslo; an amount or unit it does not know, or a start with no hour, gives nothing."),
        Function("identifier_system", 3, _identifier_system, "(id, authority, type code) → Identifier.system. National ids are classified by the number (FNR/DNR/FH) and rejected if invalid; HPR, HER, orgnr by type; others from config per authority."),
        Function("ei_system", 4, _ei_system, "(EI.1, EI.2, EI.3, EI.4) → Identifier.system: the namespace EI.2 (configured, else local), else the universal id EI.3 (urn:oid:<id> when EI.4 is ISO); EI.4 is no identifier type."),
        Function("placer_system", 4, _role_system("PLAC"), "(EI.1, EI.2, EI.3, EI.4) of a placer's number → Identifier.system: as ei_system; with no namespace, the sender's placer numbers (urn:helsebro:local:<sender>:PLAC), apart from its filler numbers."),
        Function("filler_system", 4, _role_system("FILL"), "(EI.1, EI.2, EI.3, EI.4) of a filler's number → Identifier.system: as placer_system, for filler numbers (…:FILL)."),
        Function("coding_system", 1, _coding_system, "A coding-system name the coding-systems table does not list → a URI: HL7nnnn is http://terminology.hl7.org/CodeSystem/v2-nnnn, any other the sender's urn:helsebro:local:<sender>:codesystem:<name>."),
        Function("cx_system", 5, _cx_system, "(CX.1, CX.4.1, CX.5, CX.4.2, CX.4.3) → Identifier.system: as identifier_system; an authority named only by its universal id gives urn:oid:<id> (ISO) or that id's configured system."),
        Function("cx_value", 5, _cx_value, "(CX.1, CX.4.1, CX.5, CX.4.2, CX.4.3) → Identifier.value: a number under a national system (FNR, D-nummer, FH-nummer, organisasjonsnummer, HPR-nummer, HER-id) without its spaces; any other as sent."),
        Function("identifier_value", 3, _cx_value, "(value, authority, type code), as identifier_system → Identifier.value: as cx_value, a number under a national system without its spaces; any other as sent."),
        Function("staff_identifier_system", 3, _staff(_identifier_system), "(value, authority, type code) of a health professional's number → Identifier.system as identifier_system; a number that is not what its type says gives nothing instead of refusing the message."),
        Function("staff_identifier_value", 3, _staff_value, "(value, authority, type code), as staff_identifier_system → Identifier.value as identifier_value; nothing where staff_identifier_system gives nothing."),
        Function("person_id_type", 1, _person_id_type, "A person number → its Volven 8116 code by its digits (FNR, DNR, FHN, HNR); not a valid one: nothing."),
        Function("hd_system", 3, _hd_system, "(HD.1, HD.2, HD.3) → organisation Identifier.system: HER-id, organisasjonsnummer, ISO OID, or a configured local system."),
        Function("hd_value", 3, _hd_value, "(HD.1, HD.2, HD.3) → the organisation's identifying value."),
        Function("location_facility", 3, _location_facility, "(PL.4.1, PL.4.2, PL.4.3) → the facility whose location codes a PL's are: PL.4.1, else PL.4.2, else the sender (MSH-4)."),
        Function("location_system", 3, _location_system, "(PL.4.1, PL.4.2, PL.4.3) → the system of the facility's location codes: urn:helsebro:local:<facility>:location; without a facility, the sender's."),
        Function("key", -1, _key, "The arguments as one identifying value: joined with '/', an empty one kept in its place, '/' and '%' inside one written %2F and %25."),
        Function("xml_datetime", 1, _xml_datetime, "xs:dateTime/xs:date → FHIR; no offset means Europe/Oslo."),
        Function("oid_system", 1, _oid_system, "A KITH/Volven S attribute (OID) → urn:oid:<S>."),
        Function("uuid_urn", 1, _uuid_urn, "A UUID → urn:uuid:<uuid> (identifier values for MsgIds)."),
        Function("compact", 1, _compact, "Remove all whitespace (base64 wrapped over lines)."),
        Function("base64_data", 1, _base64_data, "Base64 as sent (ED data): whitespace removed and checked; invalid base64 is refused at its position."),
        Function("hex_data", 1, _hex_data, "Hexadecimal as sent (ED data, encoding Hex): whitespace removed, any case → base64 of its bytes; an odd length or a non-hex character is refused at its position."),
        Function("markup_base64", 1, _markup_base64, "An XML element → base64 of its XHTML content as written (tables keep their cells), else of its text."),
        Function("concat_text", -1, _concat_text, "Join the valued arguments with a space, a punctuation-only one ('\":\"') kept to the part before it; an XHTML element keeps its paragraphs and line breaks on lines of their own and its table cells apart (' | '), empty ones too."),
        Function("base64", 1, _base64, "Text → base64 of its UTF-8 bytes (Attachment.data for a document's text)."),
        Function("upper", 1, _upper, "Upper-case a string."),
        Function("lower", 1, _lower, "Lower-case a string."),
        Function("trim", 1, _trim, "Strip surrounding spaces; empty becomes absent."),
        Function("join", -1, _join, "Join the valued arguments with a space."),
        Function("lines", -1, _lines, "Join the valued arguments one per line; a [*] path gives all its repetitions."),
        Function("lines_base64", -1, _lines_base64, "Join the arguments one per line → base64 of the text's UTF-8 (a TX document's lines as Attachment.data); an empty one is a blank line, a paragraph break.", blank_lines=True),
        Function("mime", 2, _mime, "(ED.2 type, ED.3 subtype) → a MIME type such as application/pdf."),
        Function("number", 1, _number, "A decimal (NM) as a JSON number; non-numeric text gives nothing."),
        Function("comparator", 1, _comparator, "A number sent with its comparator (`<5`, `>= 10.5` in an NM) → that comparator (`<`, `>=`), a Quantity.comparator; anything else gives nothing."),
        Function("compared_number", 1, _compared_number, "A number sent with its comparator (`<5`) → the number after it, as `number` reads it; anything else gives nothing."),
        Function("range_low", 1, _range_part(1), "A reference range's text (OBX-7) → its low: `3.5-5.0`, `3,5 - 5,0` and `>2` give 3.5, 3.5 and 2; `<10` or other text gives nothing."),
        Function("range_high", 1, _range_part(2), "A reference range's text (OBX-7) → its high: `3.5-5.0` and `<10` give 5.0 and 10; `>2` or other text gives nothing."),
        Function("time", 1, _time, "HL7 TM (HH[MM[SS[.S]]][+/-ZZZZ]) → FHIR time hh:mm:ss (the offset left off: FHIR's time has none); no time of day gives nothing."),
        Function("uuid5", -1, _uuid5, "A deterministic UUID (v5) of the arguments."),
    )
}
"""Every function a mapping can call, by name."""


def call(fn: Function, ctx: FnContext, values: list[str | None], locations: list[str | None]) -> Any:
    """Call a library function with resolved argument values and their positions."""
    return fn.call(ctx, _Values(values, locations))
