"""Build AppRec replies (applikasjonskvittering), decide which AppRec answers which error, and read the ones we receive.

The reply table of STYLE §5 for KITH XML lives here (``APPREC_ERROR_FOR``);
when to send, over which queue and whether a duplicate gets one (duplicates.py)
are left to the pipeline.

Rules (FACTS §2; HIS 80415:2012 §3; HITS 1168 §5, §8):

- One AppRec per recipient: the receiver answers with Role PRIM, each copy
  recipient with COP. The AppRec's Sender is that recipient, its Receiver the
  original sender with Role AVS, and every Ident is echoed: the first HER-id
  (else the first Ident) as Id/TypeId, the rest as AdditionalId; MsgHead
  ``Organisation/Organisation`` becomes ``Inst/Dept``, ``HealthcareProfessional``
  ``Inst/HCPerson`` (HIS 80415:2012 §3.5).
- Version 1.0 or 1.1 as the incoming standard and version require (HITS 1168
  §8.3–8.4). A message we could not read, or whose standard we do not know,
  gets 1.1, the current version.
- Status from Volven 8258 (1 OK, 2 Avvist), errors from 8221 with OT in plain
  words, never a value from the message. ``Status`` is ``kith:CS`` (V and DN
  only) in both schemas, so it carries no ``S``; ``Error`` is ``kith:CV`` and does.
- ``OriginalMsgId`` echoes the original Type, GenDate and MsgId. When GenDate
  is missing or is not an xs:dateTime (an unreadable message), IssueDate is the
  AppRec's own GenDate: the element is required and nothing better is known.
- An AppRec is never answered with an AppRec. One that comes in answers a message
  Helsebro sent (a PLO it rendered for a municipality): ``read_receipt`` takes what
  the pipeline journals of it (FACTS §10: track what was sent, and act on a negative
  AppRec): the original's MsgId, the status, and each error's code and display.
  Never the OT free text: a receiver may have written patient data there.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import Literal
from zoneinfo import ZoneInfo

from lxml import etree

from adapters.kith.envelope import APPREC_NS, Ident, KithEnvelope, Party, Person, payload_standard
from adapters.kith.errors import InvalidMsgId, PatientInsufficient, PatientNotFound, SchemaInvalid
from router.errors import DecodeError, InvalidContent, InvalidNationalId, MessageError, NotInTable, RequiredMissing, UnknownMessage

__all__ = ["APPREC_ERROR_FOR", "AppRecMessage", "AppRecVersion", "Receipt", "apprec_error_for", "apprec_version_for", "build_apprecs", "read_receipt", "receipt_error"]

AppRecVersion = Literal["1.0", "1.1"]
"""The two AppRec versions in use (FACTS §2)."""

AppRecStatus = Literal["1", "2"]
"""Volven 8258: 1 OK, 2 Avvist (3 is for Behandlerkrav only)."""

#: Volven 8221 code and display for each error class, looked up along the
#: class's MRO, so a subclass answers like its nearest listed parent.
APPREC_ERROR_FOR: dict[type[MessageError], tuple[str, str]] = {
    DecodeError: ("T01", "Ikke XML / ikke 'well formed' / uleselig"),
    SchemaInvalid: ("T02", "XML validerer ikke"),
    UnknownMessage: ("T10", "Støtter ikke meldingsformatet"),
    InvalidMsgId: ("E10", "Ugyldig meldingsidentifikator"),
    PatientNotFound: ("E35", "Pasienten finnes ikke i mottakersystemet"),
    PatientInsufficient: ("E36", "Pasientopplysninger er utilstrekkelige"),
    # HL7 0357's 101 (RequiredMissing): an element the message must give is empty, a fault in its form; one the XSD
    # requires is T02 before mapping. 8221 has no code for 0357's 103 (NotInTable): "Annen feil", said so here.
    RequiredMissing: ("T99", "Annen feil på format"),
    NotInTable: ("X99", "Annen feil"),
    MessageError: ("X99", "Annen feil"),
}

#: The patient's own national id: MsgHead's ``MsgInfo/Patient/Ident/Id``, or the
#: ``Patient/OffId`` of a ``Message`` root's ServReq or ServRprt (the two header families).
_PATIENT_ID_AT = re.compile(r"/MsgHead/MsgInfo/Patient/Ident(\[\d+\])?/Id|/Message/[^/]+/Patient/OffId")
_PATIENT_ID_WRONG = ("E31", "Pasientens fødselsnummer er feil")

_STATUS_DN = {"1": "OK", "2": "Avvist"}
_ROLE_DN = {"PRIM": "Primærmottaker", "COP": "Kopimottaker", "AVS": "Avsender"}
_MIG = {"1.0": "1.0 2004-11-21", "1.1": "v1.1 2012-02-15"}
_ERROR_OID = "2.16.578.1.12.4.1.1.8221"
_OT_MAX = 500
_OSLO = ZoneInfo("Europe/Oslo")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_DATETIME = re.compile(r"-?\d{4,}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_MAX_OFFSET = timedelta(hours=14)
"""The largest time zone offset an xs:dateTime may carry (XML Schema Part 2, 3.2.7.3)."""

# HITS 1168 §8.3–8.4: these standard versions are answered with AppRec 1.0.
_ANSWERED_WITH_1_0 = {
    ("PLO", "1.5"), ("Dialogmelding", "1.0"), ("Epikrise", "1.1"), ("Henvisning", "1.0"),
    ("Rekvisisjon", "1.5"), ("Svarrapport", "1.3"), ("e-resept", None),
}
# NAV and Helfo messages are answered with 1.0 too (HITS 1168 §8.3).
_NAV_NAMESPACES = frozenset({
    "http://www.kith.no/xmlstds/bkm/2006-12-20",
    "http://www.kith.no/xmlstds/helseopplysningerNAV/2013-10-01",
    "http://www.kith.no/xmlstds/nav/innrapporteringtrekk/2010-02-04",
    "http://www.kith.no/xmlstds/legeerklaring/2008-06-06",
    "http://www.kith.no/xmlstds/sykmelding/2011-03-04",
})
_NAV_PREFIX = "http://www.kith.no/xmlstds/nav/"
"""Helfo's messages (Egenandel, EgenandelMengde, Fastlege, Pasientliste) and NAV's Innrapportering trekk all sit
under this path [S1 skjema/HELFO*/NAV-*.xsd, skjema/NAVInnrapporteringTrekk]: NAV and Helfo answer with 1.0."""


@dataclass(frozen=True, slots=True)
class AppRecMessage:
    """One AppRec ready to send: the XML and what the reply queue needs to know."""

    xml: bytes
    """UTF-8, with an XML declaration."""
    version: AppRecVersion
    status: AppRecStatus
    role: str
    """Our role for the original message: PRIM or COP (Volven 8112)."""
    recipient_her_id: str | None
    """The original sender's HER-id, where this AppRec goes; None when unknown."""
    sender_her_id: str | None
    """The HER-id of the recipient this AppRec answers for."""
    original_msg_id: str
    error_code: str | None = None

    @property
    def positive(self) -> bool:
        """True for status 1 (OK)."""
        return self.status == "1"


@dataclass(frozen=True, slots=True)
class Receipt:
    """A received AppRec, as far as it is safe to journal: what it answers, and how."""

    original_msg_id: str
    """OriginalMsgId/Id: the MsgId of the message it answers (for one Helsebro sent, render.outbound_msg_id)."""
    status: str
    """Status/@V, Volven 8258: 1 OK, 2 Avvist, 3 OK med feil i delmelding ("" when absent)."""
    errors: tuple[tuple[str, str], ...] = ()
    """Each Error's (V, DN): a Volven 8221 code and its display; never its OT."""

    @property
    def accepted(self) -> bool:
        """True for status 1 (and 3: accepted, with errors in a part)."""
        return self.status in ("1", "3")

    def summary(self) -> str:
        """Plain words for the journal and logs: `AppRec OK`, or `AppRec Avvist (2): E35 Pasienten finnes ikke …`."""
        word = {"1": "OK", "2": "Avvist", "3": "OK med feil i delmelding"}.get(self.status, "with no known status")
        text = f"AppRec {word}" + (f" ({self.status})" if self.status not in ("1", "") else "")
        if self.errors:
            text += ": " + "; ".join(f"{code} {display}".strip() for code, display in self.errors)
        return text


def read_receipt(envelope: KithEnvelope) -> Receipt:
    """Read a received AppRec's OriginalMsgId, Status and Errors (the envelope of adapters.kith.message.read_apprec)."""
    root = envelope.payload
    ns = f"{{{envelope.payload_namespace}}}" if envelope.payload_namespace else ""
    status = root.find(f"{ns}Status") if root is not None else None
    errors = root.findall(f"{ns}Error") if root is not None else []
    return Receipt(
        original_msg_id=envelope.conversation.ref_to_parent if envelope.conversation is not None else "",
        status=(status.get("V") or "").strip() if status is not None else "",
        errors=tuple(((e.get("V") or "").strip()[:16], _printable(e.get("DN") or "")[:120]) for e in errors),
    )


def receipt_error(receipt: Receipt) -> MessageError | None:
    """Why a received AppRec cannot be taken as a receipt (the engine dead-letters it, never answers it), or None.

    OriginalMsgId is required: without its Id the AppRec answers no message `helsebro find` could show.
    Shared by the engine (router/pipeline/settle.py) and `helsebro apprec`, so the two say the same.
    """
    if not receipt.original_msg_id:
        return InvalidContent("the AppRec names no OriginalMsgId/Id: it answers no message that can be found", location="/AppRec/OriginalMsgId/Id")
    return None


def _printable(text: str) -> str:
    return " ".join(text.split())


def apprec_error_for(error: MessageError) -> tuple[str, str]:
    """Return the Volven 8221 code and display for *error*, by its nearest listed class.

    A national id that fails its check digits is E31 when it is the patient's (by its
    location); a relative's or a professional's is no patient problem and stays X99.
    """
    if isinstance(error, InvalidNationalId) and error.location and _PATIENT_ID_AT.fullmatch(error.location):
        return _PATIENT_ID_WRONG
    for cls in type(error).__mro__:
        if cls in APPREC_ERROR_FOR:
            return APPREC_ERROR_FOR[cls]
    return APPREC_ERROR_FOR[MessageError]


def apprec_version_for(envelope: KithEnvelope | None) -> AppRecVersion:
    """Pick the AppRec version the sender of *envelope* expects (HITS 1168 §8.3–8.4)."""
    if envelope is None:
        return "1.1"
    namespace = envelope.payload_namespace
    if namespace in _NAV_NAMESPACES or (namespace or "").startswith(_NAV_PREFIX):
        return "1.0"
    standard = payload_standard(namespace)
    return "1.0" if standard in _ANSWERED_WITH_1_0 else "1.1"


def build_apprecs(envelope: KithEnvelope | None, *, error: MessageError | None, now: datetime | None = None) -> list[AppRecMessage]:
    """Build one AppRec per recipient of *envelope*: positive when *error* is None.

    *envelope* None (nothing could be read) gives one AppRec 1.1 with empty
    addresses and an empty OriginalMsgId/Id; the caller knows the transport's
    HER-ids and may route it. An AppRec envelope gives none.
    """
    if envelope is not None and envelope.kind == "AppRec":
        return []
    moment = now if now is not None else datetime.now(_OSLO)
    version = apprec_version_for(envelope)
    recipients: tuple[Party | None, ...] = (envelope.recipients or (None,)) if envelope is not None else (None,)
    code = apprec_error_for(error) if error is not None else None
    out = []
    for party in recipients:
        role = (party.role if party is not None else "") or "PRIM"
        xml = _render(envelope, party, role=role, version=version, error=error, code=code, now=moment)
        out.append(AppRecMessage(
            xml=xml,
            version=version,
            status="2" if error is not None else "1",
            role=role,
            recipient_her_id=envelope.sender.her_id if envelope is not None and envelope.sender else None,
            sender_her_id=party.her_id if party is not None else None,
            original_msg_id=envelope.msg_id if envelope is not None else "",
            error_code=code[0] if code else None,
        ))
    return out


def _render(
    envelope: KithEnvelope | None,
    party: Party | None,
    *,
    role: str,
    version: AppRecVersion,
    error: MessageError | None,
    code: tuple[str, str] | None,
    now: datetime,
) -> bytes:
    n = f"{{{APPREC_NS[version]}}}"
    gen_date = now.isoformat(timespec="seconds")
    root = etree.Element(f"{n}AppRec", nsmap={None: APPREC_NS[version]})
    _cs(root, f"{n}MsgType", "APPREC", "Applikasjonskvittering")
    _text(root, f"{n}MIGversion", _MIG[version])
    _text(root, f"{n}SoftwareName", "Helsebro")
    _text(root, f"{n}SoftwareVersion", _software_version())
    _text(root, f"{n}GenDate", gen_date)
    _text(root, f"{n}Id", str(uuid.uuid4()))
    _address(root, f"{n}Sender", n, party, role)
    _address(root, f"{n}Receiver", n, envelope.sender if envelope is not None else None, "AVS")
    status = "2" if error is not None else "1"
    _cs(root, f"{n}Status", status, _STATUS_DN[status])
    if error is not None and code is not None:
        reason = f"{error.reason} ({error.location})" if error.location else error.reason
        etree.SubElement(root, f"{n}Error", V=code[0], S=_ERROR_OID, DN=code[1], OT=reason[:_OT_MAX])
    original = etree.SubElement(root, f"{n}OriginalMsgId")
    _cs(original, f"{n}MsgType", envelope.msg_type if envelope else "", envelope.msg_type_name if envelope else "")
    _text(original, f"{n}IssueDate", _issue_date(envelope.gen_date if envelope else "", fallback=gen_date))
    _text(original, f"{n}Id", envelope.msg_id if envelope else "")
    return _DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)  # type: ignore[no-any-return]


def _address(root: etree._Element, tag: str, n: str, party: Party | None, role: str) -> None:
    node = etree.SubElement(root, tag)
    _cs(node, f"{n}Role", role, _ROLE_DN.get(role, ""))
    hcp = etree.SubElement(node, f"{n}HCP")
    if party is None:
        etree.SubElement(hcp, f"{n}Inst")  # every child of Inst is optional: an empty address
    elif party.professional is not None and not party.name and not party.idents:
        prof = etree.SubElement(hcp, f"{n}HCProf")
        if party.professional.profession:
            _cs(prof, f"{n}Type", party.professional.profession, "")
        _named(prof, n, party.professional.name, party.professional.idents, extras_last=True)
    else:
        inst = etree.SubElement(hcp, f"{n}Inst")
        extras = _named(inst, n, party.name, party.idents, extras_last=False)
        for dept in party.depts:
            _named(etree.SubElement(inst, f"{n}Dept"), n, dept.name, dept.idents, extras_last=True)
        _additional(inst, n, extras)
        for person in party.persons:
            _person(inst, n, person)


def _person(inst: etree._Element, n: str, person: Person) -> None:
    _named(etree.SubElement(inst, f"{n}HCPerson"), n, person.name, person.idents, extras_last=True)


def _named(node: etree._Element, n: str, name: str, idents: tuple[Ident, ...], *, extras_last: bool) -> tuple[Ident, ...]:
    """Write Name, Id, TypeId; the other idents as AdditionalId now, or return them (Inst puts Dept first)."""
    if name:
        _text(node, f"{n}Name", name)
    main = next((i for i in idents if i.type == "HER" and i.id), idents[0] if idents else None)
    extras = tuple(i for i in idents if i is not main and i.id)
    if main is not None and main.id:
        _text(node, f"{n}Id", main.id)
        _cs(node, f"{n}TypeId", main.type, main.type_name)
    if extras_last:
        _additional(node, n, extras)
        return ()
    return extras


def _additional(node: etree._Element, n: str, idents: tuple[Ident, ...]) -> None:
    for ident in idents:
        extra = etree.SubElement(node, f"{n}AdditionalId")
        _text(extra, f"{n}Id", ident.id)
        _cs(extra, f"{n}Type", ident.type, ident.type_name)


def _cs(parent: etree._Element, tag: str, value: str, display: str) -> None:
    attrs = {"V": value}
    if display:
        attrs["DN"] = display
    etree.SubElement(parent, tag, attrs)


def _text(parent: etree._Element, tag: str, value: str) -> None:
    etree.SubElement(parent, tag).text = value


def _issue_date(value: str, *, fallback: str) -> str:
    """The original GenDate if it is an xs:dateTime, a date at midnight, else *fallback*."""
    value = value.strip()
    if _DATETIME.fullmatch(value) and _parses(value):
        return value
    if _DATE.fullmatch(value) and _parses(value + "T00:00:00"):
        return value + "T00:00:00"
    return fallback


def _parses(value: str) -> bool:
    """True when *value* is a date and time xs:dateTime allows: Python's parser also takes offsets past ±14:00."""
    try:
        offset = datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset()
    except ValueError:
        return False
    return offset is None or abs(offset) <= _MAX_OFFSET


@functools.lru_cache(maxsize=1)
def _software_version() -> str:
    """The installed version, asked once: importlib.metadata scans sys.path on every call (~0.1 ms, once per AppRec)."""
    try:
        return metadata.version("helsebro")
    except metadata.PackageNotFoundError:
        return "0"
