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

from adapters.kith.envelope import BASE64_NS, MSGHEAD_NS, Attachment, ConversationRef, Ident, KithEnvelope, Party, Person, ident_of, payload_standard
from adapters.kith.errors import SchemaInvalid
from adapters.kith._plans import children_index

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
    top = _kids(root)
    info = _first(top, _MSG_INFO)
    kids = _kids(info) if info is not None else {}
    payload, found, content_ns = _documents(top, decode=attachments)
    tag = payload.tag if payload is not None else ""
    ns, _, local = tag[1:].partition("}") if tag[:1] == "{" else ("", "", tag)
    standard = payload_standard(ns or None)
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
        patient_idents=_idents(_kids_of(kids, _PATIENT)),
        attachments=tuple(found),
        ack_requested=_attr(kids, _ACK, "V"),
        schema_namespaces=(MSGHEAD_NS, *content_ns),
        payload=payload,
        document=root,
    )


Kids = dict[Any, list[etree._Element]]
"""An element's element children by tag, each list in document order (paths.children_index)."""

_MSG_INFO, _TYPE, _MSG_ID, _GEN_DATE, _MIG_VERSION, _ACK = (f"{_M}{n}" for n in ("MsgInfo", "Type", "MsgId", "GenDate", "MIGversion", "Ack"))
_SENDER, _RECEIVER, _OTHER_RECEIVER, _PATIENT = (f"{_M}{n}" for n in ("Sender", "Receiver", "OtherReceiver", "Patient"))
_CONVERSATION_REF, _REF_TO_PARENT, _REF_TO_CONVERSATION = (f"{_M}{n}" for n in ("ConversationRef", "RefToParent", "RefToConversation"))
_ORGANISATION, _ORGANISATION_NAME, _HCP, _IDENT, _ID, _TYPE_ID = (
    f"{_M}{n}" for n in ("Organisation", "OrganisationName", "HealthcareProfessional", "Ident", "Id", "TypeId")
)
_DOCUMENT, _REF_DOC, _CONTENT, _MIME_TYPE, _DESCRIPTION = (f"{_M}{n}" for n in ("Document", "RefDoc", "Content", "MimeType", "Description"))
_NAMES = tuple(f"{_M}{n}" for n in ("GivenName", "MiddleName", "FamilyName"))
_PROFESSION = f"{_M}TypeHealthcareProfessional"


_kids = children_index
"""One pass over an element's children: the reader asks each element for several of them by name,
and `iterchildren(tag)` parses its tag argument on every call, which costs more than the walk."""


def _first(kids: Kids, tag: str) -> etree._Element | None:
    same = kids.get(tag)
    return same[0] if same else None


def _kids_of(kids: Kids, tag: str) -> Kids | None:
    """The children of the first child named *tag*; None when there is none."""
    child = _first(kids, tag)
    return _kids(child) if child is not None else None


def _nested(kids: Kids, outer: str, inner: str) -> etree._Element | None:
    """The first *inner* child of an *outer* child (what ``find("outer/inner")`` gives)."""
    for node in kids.get(outer, ()):
        found = next(node.iterchildren(inner), None)
        if found is not None:
            return found
    return None


def _documents(top: Kids, *, decode: bool) -> tuple[etree._Element | None, list[Attachment], list[str]]:
    payload: etree._Element | None = None
    attachments: list[Attachment] = []
    namespaces: dict[str, None] = {}
    refs = [ref for doc in top.get(_DOCUMENT, ()) for ref in doc.iterchildren(_REF_DOC)]
    for index, ref in enumerate(refs, start=1):
        for content in ref.iterchildren(_CONTENT):
            for child in content.iterchildren("*"):
                tag = child.tag
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
    kids = _kids(ref)
    mime = _text(kids, _MIME_TYPE) or None
    description = _text(kids, _DESCRIPTION) or None
    return Attachment(mime_type=mime, data=data, description=description)


def _conversation(info: Kids) -> ConversationRef | None:
    ref = _kids_of(info, _CONVERSATION_REF)
    if ref is None:
        return None
    return ConversationRef(ref_to_parent=_text(ref, _REF_TO_PARENT), ref_to_conversation=_text(ref, _REF_TO_CONVERSATION))


def _other_receiver(node: etree._Element) -> Party | None:
    """A copy recipient that can send an AppRec: an Organisation or a HealthcareProfessional.

    A Patient or Person copy recipient is a citizen reached through
    helsenorge.no, whose own system answers; we send nothing on its behalf.
    """
    kids = _kids(node)
    org = _first(kids, _ORGANISATION)
    if org is not None:
        return _party(org, role="COP")
    hcp = _first(kids, _HCP)
    if hcp is not None:
        return Party(name="", idents=(), professional=_person(hcp), role="COP")
    return None


def _party(org: etree._Element | None, *, role: str) -> Party | None:
    """An Organisation with every nested Organisation as a dept and every HCP as a person."""
    if org is None:
        return None
    top = kids = _kids(org)
    depts: list[Party] = []
    persons: list[Person] = []
    while True:
        persons.extend(_person(h) for h in kids.get(_HCP, ()))
        kids = _kids_of(kids, _ORGANISATION)  # type: ignore[assignment]
        if kids is None:
            break
        depts.append(Party(name=_text(kids, _ORGANISATION_NAME), idents=_idents(kids)))
    return Party(name=_text(top, _ORGANISATION_NAME), idents=_idents(top), depts=tuple(depts), persons=tuple(persons), role=role)


def _person(hcp: etree._Element) -> Person:
    kids = _kids(hcp)
    names = [_text(kids, tag) for tag in _NAMES]
    return Person(name=" ".join(n for n in names if n), idents=_idents(kids), profession=_attr(kids, _PROFESSION, "V"))


def _idents(kids: Kids | None) -> tuple[Ident, ...]:
    if kids is None:
        return ()
    out = []
    for ident in kids.get(_IDENT, ()):
        own = _kids(ident)
        out.append(ident_of(_text(own, _ID), _first(own, _TYPE_ID)))
    return tuple(out)


def _text(kids: Kids, tag: str) -> str:
    child = _first(kids, tag)
    return (child.text or "").strip() if child is not None else ""


def _attr(kids: Kids, tag: str, attr: str) -> str:
    child = _first(kids, tag)
    return (child.get(attr) or "").strip() if child is not None else ""
