"""Read a MsgHead 1.2 envelope ("hodemelding"): header, parties, payload, attachments.

Owns the MsgHead structure of HIS 80601 (FACTS §1). Whether the document is
valid is xsd.py's question; this reader is lenient, so that even an invalid
message yields the addresses its AppRec needs, and missing parts read as "".
"""

from __future__ import annotations

import base64
import binascii

from lxml import etree

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
    info = _child(root, "MsgInfo")
    info = info if info is not None else etree.Element(f"{_M}MsgInfo")
    payload, found, content_ns = _documents(root, decode=attachments)
    ns = etree.QName(payload).namespace if payload is not None else None
    standard = payload_standard(ns)
    return KithEnvelope(
        kind="MsgHead",
        root=root.tag,
        msg_type=_attr(info, "Type", "V"),
        msg_type_name=_attr(info, "Type", "DN"),
        msg_id=_text(info, "MsgId"),
        gen_date=_text(info, "GenDate"),
        mig_version=_text(info, "MIGversion"),
        conversation=_conversation(info),
        payload_namespace=ns,
        payload_root=etree.QName(payload).localname if payload is not None else None,
        payload_version=standard[1] if standard else None,
        sender=_party(info.find(f"{_M}Sender/{_M}Organisation"), role=""),
        receiver=_party(info.find(f"{_M}Receiver/{_M}Organisation"), role="PRIM"),
        other_receivers=tuple(p for p in map(_other_receiver, info.iterchildren(_M + "OtherReceiver")) if p is not None),
        patient_idents=_idents(_child(info, "Patient")),
        attachments=tuple(found),
        ack_requested=_attr(info, "Ack", "V"),
        schema_namespaces=(MSGHEAD_NS, *content_ns),
        payload=payload,
        document=root,
    )


def _documents(root: etree._Element, *, decode: bool) -> tuple[etree._Element | None, list[Attachment], list[str]]:
    payload: etree._Element | None = None
    attachments: list[Attachment] = []
    namespaces: dict[str, None] = {}
    for index, ref in enumerate(root.iterfind(f"{_M}Document/{_M}RefDoc"), start=1):
        for child in ref.iterfind(f"{_M}Content/*"):
            namespaces[etree.QName(child).namespace or ""] = None
            if child.tag == _B64:
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
    mime = _text(ref, "MimeType") or None
    description = _text(ref, "Description") or None
    return Attachment(mime_type=mime, data=data, description=description)


def _conversation(info: etree._Element) -> ConversationRef | None:
    ref = _child(info, "ConversationRef")
    if ref is None:
        return None
    return ConversationRef(ref_to_parent=_text(ref, "RefToParent"), ref_to_conversation=_text(ref, "RefToConversation"))


def _other_receiver(node: etree._Element) -> Party | None:
    """A copy recipient that can send an AppRec: an Organisation or a HealthcareProfessional.

    A Patient or Person copy recipient is a citizen reached through
    helsenorge.no, whose own system answers; we send nothing on its behalf.
    """
    org = _child(node, "Organisation")
    if org is not None:
        return _party(org, role="COP")
    hcp = _child(node, "HealthcareProfessional")
    if hcp is not None:
        return Party(name="", idents=(), professional=_person(hcp), role="COP")
    return None


def _party(org: etree._Element | None, *, role: str) -> Party | None:
    """An Organisation with every nested Organisation as a dept and every HCP as a person."""
    if org is None:
        return None
    depts: list[Party] = []
    persons: list[Person] = []
    node: etree._Element | None = org
    while node is not None:
        persons.extend(_person(h) for h in node.iterchildren(_M + "HealthcareProfessional"))
        node = _child(node, "Organisation")
        if node is not None:
            depts.append(Party(name=_text(node, "OrganisationName"), idents=_idents(node)))
    return Party(name=_text(org, "OrganisationName"), idents=_idents(org), depts=tuple(depts), persons=tuple(persons), role=role)


def _person(hcp: etree._Element) -> Person:
    names = (_text(hcp, "GivenName"), _text(hcp, "MiddleName"), _text(hcp, "FamilyName"))
    return Person(name=" ".join(n for n in names if n), idents=_idents(hcp), profession=_attr(hcp, "TypeHealthcareProfessional", "V"))


def _idents(node: etree._Element | None) -> tuple[Ident, ...]:
    if node is None:
        return ()
    out = []
    for ident in node.iterchildren(_M + "Ident"):
        out.append(ident_of(_text(ident, "Id"), _child(ident, "TypeId")))
    return tuple(out)


def _child(node: etree._Element, name: str) -> etree._Element | None:
    # iterchildren(tag) runs in C; find() goes through ElementPath and is 2-3 times slower.
    return next(node.iterchildren(_M + name), None)


def _text(node: etree._Element, name: str) -> str:
    child = _child(node, name)
    return (child.text or "").strip() if child is not None else ""


def _attr(node: etree._Element, name: str, attr: str) -> str:
    child = _child(node, name)
    return (child.get(attr) or "").strip() if child is not None else ""
