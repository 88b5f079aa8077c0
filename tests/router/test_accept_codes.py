"""Enhanced-mode ACKs for messages taken into safe keeping and then refused, and the reply's safe default."""

from __future__ import annotations

from router.contracts import Converted, MessageHeader
from router.errors import InvalidContent, Refused, UnknownMessage
from router.pipeline._reply import reply


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict]] = []

    def reply(self, body: bytes, *, headers: dict) -> None:
        self.sent.append((body, headers))


def _conv(accept: str, application: str) -> Converted:
    header = MessageHeader(sending_application="PAS", sending_facility="STOLAV", receiving_application="HB", receiving_facility="HP",
                           message_code="ADT", trigger_event="A01", structure="ADT_A01", control_id="C1", version="2.5.1",
                           accept_ack_type=accept, application_ack_type=application)
    return Converted(index=0, raw=b"MSH|", control_id="C1", sender="PAS@STOLAV", message_type="ADT^A01", header=header)


def _msh(_header) -> bool:
    return False  # hl7v2.acknowledgments: msh


def _codes(error, accept: str, application: str, **kw) -> list[str]:
    publisher = _Publisher()
    reply(publisher, _conv(accept, application), error, apprec_prefix="x", **kw)  # type: ignore[arg-type]
    return [h["x-helsebro-ack-code"] for _b, h in publisher.sent]


def test_a_message_the_record_refused_was_committed_so_its_accept_ack_is_ca():
    """Refused (AR/207: the record or a destination refused it for good, at apply) comes after the message was taken and
    kept (its dead letter): HL7 v2.5 §2.9.3 CR means 'MSH-9, -11 or -12 not acceptable', which is false here, and a
    sender reading CR as 'unsupported type, do not resend' is misled. The accept ACK is CA; the refusal is the AR."""
    assert _codes(Refused("the stay belongs to another patient"), "AL", "AL", original_acks=_msh) == ["CA", "AR"]
    assert _codes(Refused("the stay belongs to another patient"), "AL", "NE", original_acks=_msh) == ["CA"]


def test_an_unsupported_type_is_still_rejected_at_accept_level():
    assert _codes(UnknownMessage("no mapping for message type MFN^M02"), "AL", "NE", original_acks=_msh) == ["CR"]
    assert _codes(InvalidContent("bad check digit"), "AL", "AL", original_acks=_msh) == ["CA", "AE"]


def test_without_a_sender_policy_the_reply_stays_in_original_mode():
    """The shipped default is `original`: a caller that passes no policy (original_acks=None) must not switch to MSH-15/16."""
    assert _codes(InvalidContent("bad check digit"), "AL", "NE") == ["AE"]
