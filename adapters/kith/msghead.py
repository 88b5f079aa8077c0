"""Read a MsgHead 1.2 envelope ("hodemelding"): header, parties, payload, attachments.

Owns the MsgHead structure of HIS 80601 (FACTS §1). Whether the document is
valid is xsd.py's question; this reader is lenient, so that even an invalid
message yields the addresses its AppRec needs, and missing parts read as "".
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lxml import etree

from adapters.kith._plans import children_index
from adapters.kith.envelope import BASE64_NS, MSGHEAD_NS, Attachment, ConversationRef, Ident, KithEnvelope, Party, Person, ident_of, payload_standard
from adapters.kith.errors import SchemaInvalid

__all__ = ["read_msghead"]

_M = f"{{{MSGHEAD_NS}}}"
_B64 = f"{{{BASE64_NS}}}Base64Container"


def read_msghead(root: etree._Element, *, attachments: bool = True) -> KithEnvelope:
    """Read the MsgHead rooted at *root*.

    The payload is the first element in a ``Document/RefDoc/Content`` that is
    not a Base64Container; every Base64Container is an attachment, decoded
    unless *attachments* is false (then the tuple is empty).

    Raises:
        SchemaInvalid: an attachment is not base64 (T02, as the XSD would say).
    """
    info = _child(root, _MSG_INFO)
    header = tuple(info.iter()) if info is not None else ()  # one proxy per element, made in C (KithEnvelope.header_elements)
    kids = _kids(info) if info is not None else {}
    payload, found, content_ns = _documents(root, decode=attachments)
    tag = payload.tag if payload is not None else ""
    ns, _, local = tag[1:].partition("}") if tag[:1] == "{" else ("", "", tag)
    standard = payload_standard(ns or None)
    patient = _first(kids, _PATIENT)
    return KithEnvelope(
        kind="MsgHead",
        root=root.tag,
        msg_type=_attr(kids, _TYPE, "V"),
        msg_type_name=_attr(kids, _TYPE, "DN"),
        msg_id=_text(kids, _MSG_ID),
        gen_date=_text(kids, _GEN_DATE),
        mig_version=_text(kids, _MIG_VERSION),
        conversation=_conversation(kids),
        payload_namespace=(ns or None) if payload is not None else None,
        payload_root=local if payload is not None else None,
        payload_version=standard[1] if standard else None,
        sender=_party(_nested(kids, _SENDER, _ORGANISATION), role=""),
        receiver=_party(_nested(kids, _RECEIVER, _ORGANISATION), role="PRIM"),
        other_receivers=tuple(p for p in map(_other_receiver, kids.get(_OTHER_RECEIVER, ())) if p is not None),
        patient_idents=tuple(_ident(c) for c in patient if c.tag == _IDENT) if patient is not None else (),
        attachments=tuple(found),
        ack_requested=_attr(kids, _ACK, "V"),
        schema_namespaces=(MSGHEAD_NS, *content_ns),
        payload=payload,
        document=root,
        header_elements=header,
    )

Kids = dict[Any, list[etree._Element]]
"""An element's element children by tag, each list in document order (paths.children_index)."""

_MSG_INFO, _TYPE, _MSG_ID, _GEN_DATE, _MIG_VERSION, _ACK = (f"{_M}{n}" for n in ("MsgInfo", "Type", "MsgId", "GenDate", "MIGversion", "Ack"))
_SENDER, _RECEIVER, _OTHER_RECEIVER, _PATIENT = (f"{_M}{n}" for n in ("Sender", "Receiver", "OtherReceiver", "Patient"))
_ROLE_RECEIVER = f"{_M}RoleReceiver"
_NOT_ANSWERED = frozenset({"OR", "FR"})  # Volven 8112: opprinnelig mottaker, mottaker i videresendt melding
_CONVERSATION_REF, _REF_TO_PARENT, _REF_TO_CONVERSATION = (f"{_M}{n}" for n in ("ConversationRef", "RefToParent", "RefToConversation"))
_ORGANISATION, _ORGANISATION_NAME, _HCP, _IDENT, _ID, _TYPE_ID = (
    f"{_M}{n}" for n in ("Organisation", "OrganisationName", "HealthcareProfessional", "Ident", "Id", "TypeId")
)
_DOCUMENT, _REF_DOC, _CONTENT, _MIME_TYPE, _DESCRIPTION = (f"{_M}{n}" for n in ("Document", "RefDoc", "Content", "MimeType", "Description"))
_NAMES = tuple(f"{_M}{n}" for n in ("GivenName", "MiddleName", "FamilyName"))
_PROFESSION = f"{_M}TypeHealthcareProfessional"


_kids = children_index
"""One pass over an element's children, for MsgInfo: the reader asks it for a dozen of them by name,
and `iterchildren(tag)` parses its tag argument on every call, which costs more than the walk.
The smaller elements (parties, Ident, Document) are read in one loop each that keeps only what
the envelope needs, which costs less again than building their index."""


def _first(kids: Kids, tag: str) -> etree._Element | None:
    same = kids.get(tag)
    return same[0] if same else None


def _child(element: etree._Element, tag: str) -> etree._Element | None:
    """The first child named *tag* (what ``find(tag)`` gives for a Clark name)."""
    for child in element:
        if child.tag == tag:
            return child
    return None


def _nested(kids: Kids, outer: str, inner: str) -> etree._Element | None:
    """The first *inner* child of an *outer* child (what ``find("outer/inner")`` gives)."""
    for node in kids.get(outer, ()):
        found = _child(node, inner)
        if found is not None:
            return found
    return None


def _documents(root: etree._Element, *, decode: bool) -> tuple[etree._Element | None, list[Attachment], list[str]]:
    payload: etree._Element | None = None
    attachments: list[Attachment] = []
    namespaces: dict[str, None] = {}
    refs = [ref for doc in root if doc.tag == _DOCUMENT for ref in doc if ref.tag == _REF_DOC]
    for index, ref in enumerate(refs, start=1):
        for content in ref:
            if content.tag != _CONTENT:
                continue
            for child in content:
                tag = child.tag
                if tag.__class__ is not str:
                    continue  # a comment or a processing instruction
                namespaces[tag[1:].partition("}")[0] if tag[:1] == "{" else ""] = None
                if tag == _B64:
                    if decode:
                        attachments.append(_attachment(ref, child, index))
                elif payload is None:
                    payload = child
    return payload, attachments, [ns for ns in namespaces if ns != MSGHEAD_NS]


def _attachment(ref: etree._Element, container: etree._Element, index: int) -> Attachment:
    try:
        data = base64.b64decode("".join((container.text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaInvalid(
            "attachment is not valid base64", location=f"/MsgHead/Document[{index}]/RefDoc/Content/Base64Container"
        ) from exc
    mime = _child_text(ref, _MIME_TYPE) or None
    description = _child_text(ref, _DESCRIPTION) or None
    return Attachment(mime_type=mime, data=data, description=description)


def _conversation(info: Kids) -> ConversationRef | None:
    ref = _first(info, _CONVERSATION_REF)
    if ref is None:
        return None
    return ConversationRef(ref_to_parent=_child_text(ref, _REF_TO_PARENT), ref_to_conversation=_child_text(ref, _REF_TO_CONVERSATION))


def _other_receiver(node: etree._Element) -> Party | None:
    """A copy recipient that can send an AppRec: an Organisation or a HealthcareProfessional.

    A Patient or Person copy recipient is a citizen reached through
    helsenorge.no, whose own system answers; we send nothing on its behalf.
    Nor for a party whose role (RoleReceiver, Volven 8112) is OR or FR: the
    original recipient of a forwarded message, or the one it goes to next,
    did not receive this copy, and an AppRec in its name would say it had.
    """
    role = _child(node, _ROLE_RECEIVER)
    if role is not None and (role.get("V") or "").strip().upper() in _NOT_ANSWERED:
        return None
    org = _child(node, _ORGANISATION)
    if org is not None:
        return _party(org, role="COP")
    hcp = _child(node, _HCP)
    if hcp is not None:
        return Party(name="", idents=(), professional=_person(hcp), role="COP")
    return None


def _party(org: etree._Element | None, *, role: str) -> Party | None:
    """An Organisation with every nested Organisation as a dept and every HCP as a person."""
    if org is None:
        return None
    name, idents, persons, inner = _organisation(org)
    depts: list[Party] = []
    while inner is not None:
        dept_name, dept_idents, dept_persons, inner = _organisation(inner)
        depts.append(Party(name=dept_name, idents=dept_idents))
        persons += dept_persons
    return Party(name=name, idents=idents, depts=tuple(depts), persons=tuple(persons), role=role)


def _organisation(org: etree._Element) -> tuple[str, tuple[Ident, ...], list[Person], etree._Element | None]:
    """One Organisation's name, idents and HCPs, and its first nested Organisation, in one pass."""
    name: str | None = None
    idents: list[Ident] = []
    persons: list[Person] = []
    inner: etree._Element | None = None
    for child in org:
        tag = child.tag
        if tag == _IDENT:
            idents.append(_ident(child))
        elif tag == _ORGANISATION_NAME:
            if name is None:
                name = (child.text or "").strip()
        elif tag == _HCP:
            persons.append(_person(child))
        elif tag == _ORGANISATION and inner is None:
            inner = child
    return name or "", tuple(idents), persons, inner


def _person(hcp: etree._Element) -> Person:
    names: dict[str, str] = {}
    idents: list[Ident] = []
    profession: str | None = None
    for child in hcp:
        tag = child.tag
        if tag == _IDENT:
            idents.append(_ident(child))
        elif tag in _NAMES:
            if tag not in names:
                names[tag] = (child.text or "").strip()
        elif tag == _PROFESSION and profession is None:
            profession = (child.get("V") or "").strip()
    name = " ".join(n for n in (names.get(tag, "") for tag in _NAMES) if n)
    return Person(name=name, idents=tuple(idents), profession=profession or "")


def _ident(ident: etree._Element) -> Ident:
    """``<Ident><Id/><TypeId/></Ident>``: the first Id's text and the first TypeId."""
    id_text: str | None = None
    code: etree._Element | None = None
    for child in ident:
        tag = child.tag
        if tag == _ID:
            if id_text is None:
                id_text = (child.text or "").strip()
        elif tag == _TYPE_ID and code is None:
            code = child
    return ident_of(id_text or "", code)


def _child_text(element: etree._Element, tag: str) -> str:
    child = _child(element, tag)
    return (child.text or "").strip() if child is not None else ""


def _text(kids: Kids, tag: str) -> str:
    child = _first(kids, tag)
    return (child.text or "").strip() if child is not None else ""


def _attr(kids: Kids, tag: str, attr: str) -> str:
    child = _first(kids, tag)
    return (child.get(attr) or "").strip() if child is not None else ""
