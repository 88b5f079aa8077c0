"""What a KITH message says about itself: who sent it, to whom, what it is.

Owns the envelope dataclasses that msghead.py and message.py fill in, and the
table of known payload namespaces with their standard and version. Mapping the
payload to FHIR is the router's job; it receives ``KithEnvelope.payload``.

Words: *HER-id* is a party's id in NHN's Adresseregisteret (TypeId ``HER``);
*ENH* the organisasjonsnummer; *HPR* the helsepersonellnummer (FACTS §6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from lxml import etree

__all__ = [
    "APPREC_NS",
    "MSGHEAD_NS",
    "Attachment",
    "ConversationRef",
    "Ident",
    "KithEnvelope",
    "Party",
    "Person",
    "ident_of",
    "payload_standard",
]

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
"""MsgHead 1.2, the only MsgHead version in use (FACTS §1)."""
APPREC_NS = {"1.0": "http://www.kith.no/xmlstds/apprec/2004-11-21", "1.1": "http://www.kith.no/xmlstds/apprec/2012-02-15"}
"""AppRec namespace per version (FACTS §2)."""
BASE64_NS = "http://www.kith.no/xmlstds/base64container"

Kind = Literal["MsgHead", "Message", "AppRec"]
"""The header family: MsgHead envelope, self-contained `Message` root, or a standalone AppRec."""


@dataclass(frozen=True, slots=True)
class Ident:
    """One identifier of a party or patient: ``<Ident><Id/><TypeId V S DN/></Ident>``."""

    id: str
    type: str
    """TypeId/@V: HER, ENH, RSH, HPR, FNR, DNR … (Volven 9051, 8116)."""
    type_name: str = ""
    """TypeId/@DN, as sent."""
    system: str = ""
    """TypeId/@S, the code list's OID; "" when the message leaves it out."""


@dataclass(frozen=True, slots=True)
class Person:
    """A health professional: MsgHead HealthcareProfessional, or HCPerson/HCProf in a Message."""

    name: str
    idents: tuple[Ident, ...]
    profession: str = ""
    """Volven 9060 code (LE, SP …) when given."""


@dataclass(frozen=True, slots=True)
class Party:
    """A sender or recipient: an institution with departments and people, or one professional.

    MsgHead's nested ``Organisation/Organisation`` becomes ``depts`` (flattened,
    outermost first) and every ``HealthcareProfessional`` below it ``persons``:
    the shape AppRec's ``HCP/Inst`` echoes (HIS 80415:2012 §3.5).
    """

    name: str
    idents: tuple[Ident, ...]
    depts: tuple[Party, ...] = ()
    persons: tuple[Person, ...] = ()
    professional: Person | None = None
    """Set, with name and idents empty, when the party is one professional (HCProf)."""
    role: str = ""
    """Volven 8112 role as a recipient: PRIM for the receiver, COP for copy recipients."""

    @property
    def her_id(self) -> str | None:
        """The most specific HER-id: a person's, else the deepest department's, else the institution's.

        Replies go to the communication party, which is the most specific one
        that has a HER-id (HIS 1037:2011 ch. 6.2).
        """
        holders: list[Person | Party] = [self.professional] if self.professional else []
        holders += [*self.persons, *reversed(self.depts)]
        for holder in holders:
            her = _her(holder.idents)
            if her:
                return her
        return _her(self.idents)

    @property
    def institution_her_id(self) -> str | None:
        """The institution's own HER-id, else the most specific one: whose numbers the party's local identifiers are.

        An H-nummer belongs to the institution that gave it, not to the department
        or person who sent this message.
        """
        return _her(self.idents) or self.her_id


def _her(idents: tuple[Ident, ...]) -> str | None:
    """The first Ident typed HER whose Id is a HER-id at all (`_HER_ID`).

    The HER-id names the sender's AppRec queue (router/pipeline/_reply.py), the
    duplicate guard's recipient and the sender's mappings: a value that is no
    number (300 digits, letters, spaces) must not name a queue on the broker,
    so it counts as no HER-id and the next holder's is used.
    """
    return next((i.id for i in idents if i.type == "HER" and _HER_ID.fullmatch(i.id)), None)


_HER_ID = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,9})?")
"""A HER-id: a number in NHN's Adresseregisteret (FACTS §6): the national examples have 1–7 digits, and a few
e-resept and NPR examples a dotted one (`2397.1`, `9644.3`). ASCII digits only, not any Unicode digit."""


def ident_of(id_text: str, code: etree._Element | None) -> Ident:
    """An Ident from an id and the kith:CV/CS element that types it (TypeId, TypeOffId, Type)."""
    if code is None:
        return Ident(id=id_text, type="")
    return Ident(id=id_text, type=code.get("V") or "", type_name=code.get("DN") or "", system=code.get("S") or "")


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """MsgHead ConversationRef: the MsgIds of the previous and the first message."""

    ref_to_parent: str
    ref_to_conversation: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A base64 document carried in the message (``Content/Base64Container``)."""

    mime_type: str | None
    data: bytes = field(repr=False)
    description: str | None


@dataclass(frozen=True, slots=True)
class KithEnvelope:
    """One KITH message, read: the header, the parties and the payload element.

    Safe to log: kind, msg_type, msg_id, payload_namespace, payload_version and
    HER-ids. Not safe: patient_idents, the payload, the attachments.
    """

    kind: Kind
    root: str
    """Clark name of the root element, e.g. ``{http://…/msghead/2006-05-24}MsgHead``."""
    msg_type: str
    """MsgInfo/Type/@V or Message/Type/@V (Volven 8279; older Message versions send E, H, R, S)."""
    msg_type_name: str
    msg_id: str
    gen_date: str
    """GenDate as sent (MsgHead: element text; Message: @V)."""
    mig_version: str
    conversation: ConversationRef | None
    payload_namespace: str | None
    payload_root: str | None
    """Local name of the payload's root element, e.g. ``Pasientlogistikk``."""
    payload_version: str | None
    """Version of the payload standard, e.g. ``1.6``; None when the namespace is not known."""
    sender: Party | None
    receiver: Party | None
    other_receivers: tuple[Party, ...] = ()
    patient_idents: tuple[Ident, ...] = field(default=(), repr=False)
    attachments: tuple[Attachment, ...] = field(default=(), repr=False)
    ack_requested: str = ""
    """MsgInfo/Ack/@V (Volven 7304: J, N, F); "" when absent or not a MsgHead."""
    schema_namespaces: tuple[str, ...] = ()
    """The namespaces a schema set needs to validate this document, root first."""
    payload: etree._Element | None = field(default=None, compare=False, repr=False)
    document: etree._Element | None = field(default=None, compare=False, repr=False)
    header_elements: tuple[etree._Element, ...] = field(default=(), compare=False, repr=False)
    """Every element of MsgInfo, held only to keep lxml's Python proxy (with its cached tag) of each alive.

    lxml builds a new proxy, and the tag string anew, whenever an element is reached while no proxy
    of it is alive; the patient check and the mapping's walk of the whole document reach the header
    again after the reader is done. Bounded by the header's size: the payload is not held.
    """

    @property
    def recipients(self) -> tuple[Party, ...]:
        """The receiver (role PRIM) then every copy recipient (role COP) that can answer."""
        primary = (self.receiver,) if self.receiver is not None else ()
        return primary + self.other_receivers


# Payload namespaces to (standard, version) (FACTS §3, §5; skjema/MeldingsVersjoner.xml).
# PLO namespaces follow a rule instead: /po/<name>/2009-06-30 is 1.5, /2012-04-01 is 1.6.
_STANDARDS: dict[str, tuple[str, str]] = {
    "http://www.kith.no/xmlstds/dialog/2006-10-11": ("Dialogmelding", "1.0"),
    "http://www.kith.no/xmlstds/dialog/2013-01-23": ("Dialogmelding", "1.1"),
    "http://www.kith.no/xmlstds/epikrise/2006-09-23": ("Epikrise", "1.1"),
    "http://www.kith.no/xmlstds/epikrise/2012-02-15": ("Epikrise", "1.2"),
    "http://www.kith.no/xmlstds/henvisning/2005-07-08": ("Henvisning", "1.0"),
    "http://www.kith.no/xmlstds/henvisning/2012-02-15": ("Henvisning", "1.1"),
    "http://ehelse.no/xmlstds/henvisning/2017-11-30": ("Henvisning", "2.0"),
    "http://www.kith.no/xmlstds/rekvisisjon/2008-12-01": ("Rekvisisjon", "1.5"),
    "http://www.kith.no/xmlstds/rekvisisjon/2012-02-15": ("Rekvisisjon", "1.6"),
    "http://www.kith.no/xmlstds/labsvar/2008-12-01": ("Svarrapport", "1.3"),
    "http://www.kith.no/xmlstds/labsvar/2012-02-15": ("Svarrapport", "1.4"),
    APPREC_NS["1.0"]: ("AppRec", "1.0"),
    APPREC_NS["1.1"]: ("AppRec", "1.1"),
}
_PLO_VERSIONS = {"2009-06-30": "1.5", "2012-04-01": "1.6"}
_ERESEPT_PREFIXES = ("http://www.kith.no/xmlstds/eresept/", "http://www.ehelse.no/xmlstds/eresept/", "http://ehelse.no/xmlstds/eresept/")


def payload_standard(namespace: str | None) -> tuple[str, str | None] | None:
    """Return (standard, version) for a payload namespace, or None when unknown.

    e-resept namespaces give ("e-resept", None): each M-message has its own
    version line, and only the family matters for the AppRec version.
    """
    if not namespace:
        return None
    if namespace in _STANDARDS:
        return _STANDARDS[namespace]
    if namespace.startswith("http://www.kith.no/xmlstds/po/"):
        version = _PLO_VERSIONS.get(namespace.rsplit("/", 1)[-1])
        return ("PLO", version) if version else None
    if namespace.startswith(_ERESEPT_PREFIXES):
        return ("e-resept", None)
    return None
