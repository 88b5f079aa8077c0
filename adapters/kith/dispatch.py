"""Recognise a KITH message by its root and namespaces, and run the edge checks in order.

Owns the order of the checks and what each failure leaves for the reply:
safe parse (T01) → recognise the root (T10) → read the envelope → XSD (T10
unknown namespace, T02 invalid) → MsgId is a UUID (E10). Mapping the payload
and deciding about the patient (E35/E36) are later stages.

Recognition uses the root's QName and the payload's namespace, never a file
name (FACTS §10.1): ``{msghead}MsgHead`` → MsgHead reader; a root named
``Message`` in a known standard's namespace (or one the catalog knows) →
Message reader; ``{apprec/…}AppRec`` → AppRec reader. A bare e-resept payload
(``M41``, ``Reseptliste`` …) has no header to answer, so it is UnknownMessage.

Last, a document an e-resept payload carries base64-encoded (M25.x
``ReseptDokLegemiddelB64``: the prescription's M1 ``ReseptDokLegemiddel``) is
opened in place, checked as a message is (safe parse, DOCTYPE refused, root,
XSD), so the mappings read it by XPath like the rest of the payload.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from dataclasses import dataclass

from lxml import etree

from adapters.kith.envelope import APPREC_NS, MSGHEAD_NS, KithEnvelope, payload_standard
from adapters.kith.errors import InvalidMsgId, PatientInsufficient, SchemaInvalid, shown
from adapters.kith.message import read_apprec, read_message_root
from adapters.kith.msghead import read_msghead
from adapters.kith.safe_xml import DEFAULT_LIMITS, ForbiddenDoctype, XmlLimits, parse_xml
from adapters.kith.xsd import SchemaSet
from router.errors import DecodeError, MessageError, UnknownMessage

__all__ = ["Received", "check_envelope", "read_envelope", "read_message", "salvage"]

# HIS 80601: MsgId is a GUID/UUID; any variant and version, either case, no braces.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MSGHEAD = f"{{{MSGHEAD_NS}}}MsgHead"
_APPRECS = frozenset(f"{{{ns}}}AppRec" for ns in APPREC_NS.values())


@dataclass(frozen=True, slots=True)
class Received:
    """What the edge made of one message: the envelope when it could be read, and the first refusal."""

    envelope: KithEnvelope | None
    error: MessageError | None

    @property
    def ok(self) -> bool:
        """True when every edge check passed."""
        return self.error is None and self.envelope is not None


def read_message(data: bytes, *, schemas: SchemaSet | None = None, limits: XmlLimits = DEFAULT_LIMITS) -> Received:
    """Parse, recognise, validate and check *data*; never raises a MessageError.

    ``schemas=None`` means validation is off (HELSEBRO_XSD_DIR unset). On a
    refusal the envelope is still returned whenever it could be read, so the
    AppRec can be addressed; after a DOCTYPE nothing is read at all.
    """
    try:
        tree = parse_xml(data, limits=limits)
    except ForbiddenDoctype as exc:
        return Received(None, exc)
    except DecodeError as exc:
        return Received(salvage(data, limits=limits, schemas=schemas), exc)
    try:
        envelope = read_envelope(tree.getroot(), schemas=schemas)
    except UnknownMessage as exc:
        return Received(None, exc)
    except SchemaInvalid as exc:  # an attachment that is not base64
        return Received(read_envelope(tree.getroot(), schemas=schemas, attachments=False), exc)
    try:
        if schemas is not None:
            schemas.validate(tree, envelope.schema_namespaces)
        check_envelope(envelope)
        check_patient(tree.getroot(), envelope)
        _open_documents(envelope, schemas=schemas, limits=limits)  # after the XSD: it types them as base64 text
    except MessageError as exc:
        return Received(envelope, exc)
    return Received(envelope, None)


def read_envelope(root: etree._Element, *, schemas: SchemaSet | None = None, attachments: bool = True) -> KithEnvelope:
    """Recognise *root* and read its envelope; lenient about everything but the root.

    Raises:
        UnknownMessage: the root is not MsgHead, a known Message or an AppRec.
        SchemaInvalid: an attachment is not base64 (only with attachments=True).
    """
    tag = root.tag if isinstance(root.tag, str) else ""
    if tag == _MSGHEAD:
        envelope = _receipt_in_msghead(read_msghead(root, attachments=attachments))
    elif tag in _APPRECS:
        envelope = read_apprec(root)
    else:
        try:
            qname = etree.QName(tag) if tag else None
        except ValueError:  # recover mode keeps an undeclared prefix in the tag (`a:b`): no namespace to recognise
            qname = None
        if qname is not None and qname.localname == "Message" and _known(qname.namespace, schemas):
            envelope = read_message_root(root)
        else:
            raise UnknownMessage(f"root element {shown(qname.localname) if qname else '?'} in namespace {shown(str(qname.namespace)) if qname else '?'} is not a message Helsebro reads")
    if envelope.payload_version is None and schemas is not None and envelope.payload_namespace:
        known = schemas.version_of(envelope.payload_namespace)
        if known is not None:
            envelope = dataclasses.replace(envelope, payload_version=known[1])
    return envelope


def _receipt_in_msghead(envelope: KithEnvelope) -> KithEnvelope:
    """Read a MsgHead that carries an AppRec as the AppRec it carries: a receipt, never a message to answer.

    An AppRec stands alone (FACTS §2), but some systems wrap one in a MsgHead: MsgInfo/Type
    ``APPREC``, or an AppRec document as the payload in Content. Read as a business message,
    no mapping served it and it was answered with an AppRec T10, which the other side's engine
    could answer in turn, for ever (HITS 1168: an AppRec is never answered). With an AppRec
    payload the envelope is that AppRec's (what it answers, its status and errors), with the
    MsgHead's root and schema namespaces, so the whole document is still validated. Typed
    ``APPREC`` over anything else, it is still an AppRec (never answered), one that names no
    original (no ``conversation``): the engine dead-letters it.
    """
    payload = envelope.payload
    carried = payload is not None and payload.tag in _APPRECS
    if not carried and envelope.msg_type.upper() != "APPREC":
        return envelope
    if carried:
        inner = read_apprec(payload)
        return dataclasses.replace(inner, root=envelope.root, schema_namespaces=envelope.schema_namespaces, document=envelope.document)
    return dataclasses.replace(envelope, kind="AppRec", conversation=None, other_receivers=(), patient_idents=())


def check_envelope(envelope: KithEnvelope) -> None:
    """Run the header checks HIS 80415 makes grounds for rejection.

    Raises:
        InvalidMsgId: MsgId is not a UUID (E10); AppRecs are not checked, they get no reply.
        UnknownMessage: a MsgHead typed APPREC carries no AppRec (dead-lettered, never answered, never mapped).
    """
    if envelope.kind == "AppRec" and (envelope.payload is None or envelope.payload.tag not in _APPRECS):
        raise UnknownMessage("MsgInfo/Type is APPREC but the message carries no AppRec: it answers nothing that can be found",
                             location="/MsgHead/Document/RefDoc/Content")
    if envelope.kind != "AppRec" and not _UUID.fullmatch(envelope.msg_id):
        where = "/MsgHead/MsgInfo/MsgId" if envelope.kind == "MsgHead" else "/Message/MsgId"
        raise InvalidMsgId("MsgId is not a UUID", location=where)


_NATIONAL_IDS = frozenset({"FNR", "DNR", "FHN"})
"""Identifier types that identify a person with a name alone (HIS 80415 §3.3: FNR, D-nummer, FH-nummer)."""


def check_patient(root: etree._Element, envelope: KithEnvelope) -> None:
    """Refuse a patient not identified well enough to be matched in a record (AppRec E36).

    HIS 80415 §3.3: a name with a fødselsnummer, D-nummer or FH-nummer, or a name
    with date of birth and sex. A message without a patient element is not checked
    (e-resept lists, AppRecs), and neither is an emergency referral: §3.3 makes it
    the exception, since an unconscious or unknown patient must still be referred.

    Raises:
        PatientInsufficient: the patient element lacks a name, or both a national id and date of birth with sex.
    """
    if envelope.kind == "AppRec":
        return
    if envelope.kind == "MsgHead":
        patient, where = _msghead_patient(root), "/MsgHead/MsgInfo/Patient"
    else:
        document = envelope.document
        patient = next((p for p in document.iter() if isinstance(p.tag, str) and _local(p.tag) == "Patient"), None) if document is not None else None
        where = "/Message/…/Patient"
    if patient is None or _identified(patient) or _emergency_referral(root, envelope):
        return
    raise PatientInsufficient("the patient is not identified well enough: a name with a fødselsnummer, D-nummer or FH-nummer, or a name with date of birth and sex", location=where)


_EMERGENCY = "0"
"""Volven 8304 (Prioritet for henvisning) 0: Øyeblikkelig hjelp."""


def _emergency_referral(root: etree._Element, envelope: KithEnvelope) -> bool:
    """Tell whether a referral (Henvisning 1.x or 2.0) asks for emergency care: ReqServ/Priority V="0".

    Read only for a patient who is not identified well enough, so the walk costs nothing on the common path.
    """
    if "/henvisning/" not in (envelope.payload_namespace or ""):
        return False
    for el in root.iter("{*}Priority"):
        parent = el.getparent()
        if parent is not None and etree.QName(parent).localname == "ReqServ" and el.get("V") == _EMERGENCY:
            return True
    return False


_PATIENT_PATH = (f"{{{MSGHEAD_NS}}}MsgInfo", f"{{{MSGHEAD_NS}}}Patient")


def _msghead_patient(root: etree._Element) -> etree._Element | None:
    """``root.find("MsgInfo/Patient")`` in the MsgHead namespace, without ElementPath's parse of the path."""
    info_tag, patient_tag = _PATIENT_PATH
    for info in root:
        if info.tag == info_tag:
            for child in info:
                if child.tag == patient_tag:
                    return child
    return None


def _local(tag: str) -> str:
    """An element's local name from its Clark name (``etree.QName(tag).localname``, without the object)."""
    return tag[tag.rfind("}") + 1:]


def _identified(patient: etree._Element) -> bool:
    """A name, and a national id or date of birth with sex: in MsgHead's form (FamilyName, Ident) or Message's (Name, OffId)."""
    kids: dict[str, list[etree._Element]] = {}
    for child in patient:
        tag = child.tag
        if tag.__class__ is str:
            kids.setdefault(_local(tag), []).append(child)

    def text(name: str) -> str:
        el = kids.get(name, [None])[0]
        return ((el.text or el.get("V") or "") if el is not None else "").strip()

    if not (text("FamilyName") or text("GivenName") or text("Name")):
        return False
    for ident in kids.get("Ident", []):
        kind: str | None = None
        number: str | None = None
        for c in ident:  # the first TypeId's V and the first Id's text
            tag = c.tag
            if tag.__class__ is not str:
                continue
            local = _local(tag)
            if local == "TypeId" and kind is None:
                kind = c.get("V") or ""
            elif local == "Id" and number is None:
                number = (c.text or "").strip()
        if number and (kind or "").upper() in _NATIONAL_IDS:
            return True
    type_off = kids.get("TypeOffId", [None])[0]
    if text("OffId") and type_off is not None and (type_off.get("V") or "").upper() in _NATIONAL_IDS:
        return True
    sex = kids.get("Sex", [None])[0]
    return bool(text("DateOfBirth") and sex is not None and sex.get("V"))


_DOCUMENTS = {"ReseptDokLegemiddelB64": "ReseptDokLegemiddel"}
"""e-resept elements that hold one XML document base64-encoded (the XSD says only base64Binary), by local
name, with the local name of that document's root, an element of an M1 namespace. M25.1–M25.4
EnkeltoppforingLIB/ReseptDokLegemiddelB64 is the prescription's m1:ReseptDokLegemiddel (product,
dosage, amount, reiterations: FACTS §4), so the list of medicines in use names what each entry is
[S1 skjema/eresept/ER-M251…M254-2013-10-08.xsd; every national M25.1/M25.2 example, and the M25.1s
the M9.12 examples carry]. SisteUtlevering/UtleveringB64 is not opened: no example shows it."""
_M1_NS = re.compile(r"http://(?:www\.)?(?:kith|ehelse)\.no/xmlstds/eresept/m1/")
_ERESEPT_NS = re.compile(r"http://(?:www\.)?(?:kith|ehelse)\.no/xmlstds/eresept/")


def _open_documents(envelope: KithEnvelope, *, schemas: SchemaSet | None = None, limits: XmlLimits = DEFAULT_LIMITS) -> None:
    """Replace the base64 text of each document an e-resept payload carries (`_DOCUMENTS`) with the document's root element.

    After this, `…/EnkeltoppforingLIB/ReseptDokLegemiddelB64/m1:ReseptDokLegemiddel/f:Forskrivning`
    reads the prescription as if it had been sent inline. The document is read as a whole
    message is: safe parse (a DOCTYPE refused), its root must be an M1 ReseptDokLegemiddel,
    and it must validate against its own national schema when validation is on. Run it only
    after the carrying message validated, since its XSD wants the base64 text.

    Raises:
        SchemaInvalid: not base64, not an M1 ReseptDokLegemiddel, or breaks its schema (AppRec T02).
        DecodeError: not well-formed XML, or a DOCTYPE (ForbiddenDoctype) (T01).
        UnknownMessage: its namespace has no national schema (T10).
    """
    payload, namespace = envelope.payload, envelope.payload_namespace or ""
    if payload is None or not _ERESEPT_NS.match(namespace):
        return
    for name, root_name in _DOCUMENTS.items():
        for holder in list(payload.iter(f"{{{namespace}}}{name}")):
            try:
                root = _document(holder.text or "", root_name, schemas=schemas, limits=limits)
            except MessageError as exc:
                where = _where(holder)
                exc.location = f"{where} > {exc.location}" if exc.location else where
                exc.reason = f"the embedded document is refused: {exc.reason}"
                exc.args = (exc.reason,)
                raise
            holder.text = None
            holder.append(root)


def _document(text: str, root_name: str, *, schemas: SchemaSet | None, limits: XmlLimits) -> etree._Element:
    """Decode, parse and check the document *text* holds; return its root element (see _open_documents)."""
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaInvalid("it is not valid base64") from exc
    tree = parse_xml(data, limits=limits)
    root = tree.getroot()
    qname = etree.QName(root)
    if qname.localname != root_name or not _M1_NS.match(qname.namespace or ""):
        raise SchemaInvalid(f"it is not an e-resept M1 {root_name}", location=f"/{qname.localname}")
    if schemas is not None:
        schemas.validate(tree, (qname.namespace or "",))
    return root


def _where(element: etree._Element) -> str:
    """``/MsgHead/Document/RefDoc/Content/LegemidlerIBruk/EnkeltoppforingLIB[2]/ReseptDokLegemiddelB64``: local names, indexed among same-named siblings."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        parent = node.getparent()
        step = etree.QName(node).localname
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def salvage(data: bytes, *, limits: XmlLimits = DEFAULT_LIMITS, schemas: SchemaSet | None = None) -> KithEnvelope | None:
    """Read what can be read from bytes that are not well-formed, for the T01 reply's addresses.

    libxml2's recovery mode repairs truncation and stray markup; whatever it
    rebuilds is used only to address the rejection, never processed.
    """
    try:
        tree = parse_xml(data, limits=limits, recover=True)
        return read_envelope(tree.getroot(), schemas=schemas, attachments=False)
    except MessageError:
        return None


def _known(namespace: str | None, schemas: SchemaSet | None) -> bool:
    if not namespace:
        return False
    if payload_standard(namespace) is not None:
        return True
    return schemas is not None and schemas.knows(namespace)
