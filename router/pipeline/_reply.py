"""Answer the sender: an HL7 ACK on the replies queue, or one KITH AppRec per recipient on a queue per sender HER-id.

Kept beside settle.py, the only caller; which ACK code answers which error is
adapters/hl7v2/ack.py's table, the AppRec's is adapters/kith/apprec.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.hl7v2.ack import AckCode, accept_code_for, ack_code_for, acks_for, build_ack
from adapters.hl7v2.decode import declared_charset, hl7_charset, msh_names, salvage_header

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapters.amqp.outbound import Publisher
    from router.contracts import Converted, MessageHeader
    from router.errors import MessageError


def reply(publisher: Publisher, conv: Converted, error: MessageError | None, *, apprec_prefix: str,
          original_acks: Callable[[MessageHeader], bool] | None = None) -> None:
    """Publish the answer to *conv*: for HL7 v2 the ACKs its MSH-15/16 ask for (adapters/hl7v2/ack.py acks_for), each
    AA or CA, or the code *error* calls for; one application ACK when *original_acks* says its sender reads only those, or is not given (the shipped default)."""
    if conv.format == "kith":
        _reply_apprec(publisher, conv, error, apprec_prefix)
        return
    # A message decode refused has no header: what can be read of its MSH still names the message the AR answers.
    header = conv.header if conv.header is not None else salvage_header(conv.raw)
    code: AckCode
    if error is None:
        code, err_code = "AA", None
    else:
        code, err_code = ack_code_for(error)
    codes: tuple[AckCode, ...] = (code,)
    if header is not None and original_acks is not None and not original_acks(header):  # no policy given: original, the default
        codes = acks_for(code, accept_type=header.accept_ack_type, application_type=header.application_ack_type, accept=accept_code_for(error))
    # The charset the message was read in (MSH-18, or the sender's configured default): its names come back as it wrote them.
    charset = (header.charset if header is not None else "") or hl7_charset(conv.raw) or "utf-8"
    # MSH-3 to MSH-6 whole (the header keeps each HD's first component): the ACK names the sender as it named itself.
    names = msh_names(conv.raw, charset) or (
        (header.sending_application, header.sending_facility, header.receiving_application, header.receiving_facility) if header else ("", "", "", ""))
    for one in codes:
        failed = one not in ("AA", "CA")
        ack = build_ack(
            code=one,
            control_id=conv.control_id or (header.control_id if header else None),
            sending_application=names[0],
            sending_facility=names[1],
            receiving_application=names[2],
            receiving_facility=names[3],
            version=(header.version if header else "") or "2.5",
            message_type=conv.message_type or (header.message_type if header else None),
            text=error.reason if error and failed else None,
            error_location=error.location if error and failed else None,
            error_code=err_code if failed else None,
            processing_id=(header.processing_id.upper() if header else "") or "P",  # a training message is answered as one
            charset=charset,
            charset_name=declared_charset(conv.raw) if charset == hl7_charset(conv.raw) else "",  # MSH-18: what the bytes are in
        )
        publisher.reply(ack, headers={
            "x-helsebro-control-id": conv.control_id or (header.control_id if header else ""),
            "x-helsebro-ack-code": one,
            "x-helsebro-sender": conv.sender or "",
        })


def _reply_apprec(publisher: Publisher, conv: Converted, error: MessageError | None, prefix: str) -> None:
    from adapters.kith import build_apprecs  # the XML edge loads only when XML arrives

    for apprec in build_apprecs(conv.envelope, error=error):
        queue = f"{prefix}.{apprec.recipient_her_id or 'unknown'}"
        publisher.reply_to(queue, apprec.xml, headers={
            "x-helsebro-original-msg-id": apprec.original_msg_id or "",
            "x-helsebro-apprec-status": apprec.status,
            "x-helsebro-apprec-version": apprec.version,
            "x-helsebro-role": apprec.role,
            "x-helsebro-error-code": apprec.error_code or "",
        })
