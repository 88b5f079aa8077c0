"""Read the self-contained ``Message`` roots (Epikrise, Henvisning 1.x, Rekvisisjon, Svarrapport) and a standalone AppRec.

Owns where these roots keep their header and parties (FACTS §5): ``Message{Type,
MIGversion, GenDate@V, MsgId, ServReq|ServRprt|ServReport{Patient, ServProvider,
Requester, CopyDest*}}``. The patient is inside the payload, not in a MsgHead.
Who sends depends on the document: a request (``ServReq``: Henvisning,
Rekvisisjon) goes from the Requester to the ServProvider; a report
(``ServRprt``: Epikrise, ``ServReport``: Svarrapport) from the ServProvider to
the Requester. CopyDest parties are copy recipients. The readers are lenient,
like msghead.py.
"""

from __future__ import annotations

import dataclasses

from lxml import etree

from adapters.kith.envelope import ConversationRef, Ident, KithEnvelope, Party, Person, ident_of, payload_standard

__all__ = ["read_apprec", "read_message_root"]

_REQUESTS = ("ServReq",)
_REPORTS = ("ServRprt", "ServReport")


def read_message_root(root: etree._Element) -> KithEnvelope:
    """Read a ``Message`` root; the payload is the root itself."""
    ns = etree.QName(root).namespace or ""
    n = f"{{{ns}}}"
    document = next((c for c in root.iterchildren(f"{n}ServReq", f"{n}ServRprt", f"{n}ServReport")), None)
    sender = receiver = None
    copies: tuple[Party, ...] = ()
    patient: tuple[Ident, ...] = ()
    if document is not None:
        local = etree.QName(document).localname
        requester = _hcp_party(document.find(f"{n}Requester/{n}HCP"), n)
        provider = _hcp_party(document.find(f"{n}ServProvider/{n}HCP"), n)
        sender, receiver = (requester, provider) if local in _REQUESTS else (provider, requester)
        copies = tuple(p for p in (_hcp_party(h, n, role="COP") for h in document.iterfind(f"{n}CopyDest/{n}HCP")) if p)
        patient = _patient(document.find(f"{n}Patient"), n)
    if receiver is not None:
        receiver = dataclasses.replace(receiver, role="PRIM")
    standard = payload_standard(ns)
    return KithEnvelope(
        kind="Message",
        root=root.tag,
        msg_type=_attr(root, f"{n}Type", "V"),
        msg_type_name=_attr(root, f"{n}Type", "DN"),
        msg_id=_text(root, f"{n}MsgId"),
        gen_date=_attr(root, f"{n}GenDate", "V"),
        mig_version=_text(root, f"{n}MIGversion"),
        conversation=None,
        payload_namespace=ns,
        payload_root=etree.QName(root).localname,
        payload_version=standard[1] if standard else None,
        sender=sender,
        receiver=receiver,
        other_receivers=copies,
        patient_idents=patient,
        schema_namespaces=(ns,),
        payload=root,
        document=root,
    )


def read_apprec(root: etree._Element) -> KithEnvelope:
    """Read a standalone AppRec; ``conversation.ref_to_parent`` is the OriginalMsgId/Id it answers."""
    ns = etree.QName(root).namespace or ""
    n = f"{{{ns}}}"
    original = root.find(f"{n}OriginalMsgId")
    standard = payload_standard(ns)
    return KithEnvelope(
        kind="AppRec",
        root=root.tag,
        msg_type=_attr(root, f"{n}MsgType", "V"),
        msg_type_name=_attr(root, f"{n}MsgType", "DN"),
        msg_id=_text(root, f"{n}Id"),
        gen_date=_text(root, f"{n}GenDate"),
        mig_version=_text(root, f"{n}MIGversion"),
        conversation=ConversationRef(ref_to_parent=_text(original, f"{n}Id"), ref_to_conversation="") if original is not None else None,
        payload_namespace=ns,
        payload_root=etree.QName(root).localname,
        payload_version=standard[1] if standard else None,
        sender=_hcp_party(root.find(f"{n}Sender/{n}HCP"), n, role=_attr(root, f"{n}Sender/{n}Role", "V")),
        receiver=_hcp_party(root.find(f"{n}Receiver/{n}HCP"), n, role=_attr(root, f"{n}Receiver/{n}Role", "V")),
        schema_namespaces=(ns,),
        payload=root,
        document=root,
    )


def _hcp_party(hcp: etree._Element | None, n: str, *, role: str = "") -> Party | None:
    """An ``HCP`` (Inst with Dept*/HCPerson*, or HCProf) as a Party."""
    if hcp is None:
        return None
    inst = hcp.find(f"{n}Inst")
    if inst is not None:
        return Party(
            name=_text(inst, f"{n}Name"),
            idents=_hcp_idents(inst, n),
            depts=tuple(Party(name=_text(d, f"{n}Name"), idents=_hcp_idents(d, n)) for d in inst.iterfind(f"{n}Dept")),
            persons=tuple(_hcp_person(p, n) for p in inst.iterfind(f"{n}HCPerson")),
            role=role,
        )
    prof = hcp.find(f"{n}HCProf")
    if prof is not None:
        return Party(name="", idents=(), professional=_hcp_person(prof, n), role=role)
    return None


def _hcp_person(node: etree._Element, n: str) -> Person:
    return Person(name=_text(node, f"{n}Name"), idents=_hcp_idents(node, n), profession=_attr(node, f"{n}Type", "V"))


def _hcp_idents(node: etree._Element, n: str) -> tuple[Ident, ...]:
    """Id + TypeId, then each AdditionalId{Id, Type}."""
    out = []
    main = _text(node, f"{n}Id")
    if main:
        out.append(ident_of(main, node.find(f"{n}TypeId")))
    for extra in node.iterfind(f"{n}AdditionalId"):
        out.append(ident_of(_text(extra, f"{n}Id"), extra.find(f"{n}Type")))
    return tuple(out)


def _patient(node: etree._Element | None, n: str) -> tuple[Ident, ...]:
    if node is None:
        return ()
    off_id = _text(node, f"{n}OffId")
    if not off_id:
        return ()
    return (ident_of(off_id, node.find(f"{n}TypeOffId")),)


def _text(node: etree._Element | None, path: str) -> str:
    return (node.findtext(path) or "").strip() if node is not None else ""


def _attr(node: etree._Element, path: str, attr: str) -> str:
    child = node.find(path)
    return (child.get(attr) or "").strip() if child is not None else ""
