"""Build HL7 v2 ACK messages, and decide which ACK answers which error.

The reply table of STYLE §5 for HL7 v2 lives here (``ACK_CODE_FOR``); when to
send an ACK, and over which channel, is left to router/pipeline/settle.py.

The ER7 is written directly, not with hl7apy: building this ACK with
``hl7apy.core.Message`` took about 8 ms (measured: 200 builds, v2.5, MSH + MSA
+ ERR), against a budget of 1 ms, and its ``to_er7`` escaped ``|`` but not
``^`` inside a text field. Direct building takes a few microseconds and
escapes every delimiter (``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``, v2.5 §2.7). hl7apy still
defines which versions we may echo (``_KNOWN_VERSIONS`` mirrors its
``SUPPORTED_LIBRARIES``; a test keeps the two equal).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from router.errors import (
    DecodeError,
    InvalidContent,
    MessageError,
    NotInTable,
    Refused,
    RequiredMissing,
    UnknownMessage,
    UnsupportedEvent,
    UnsupportedProcessingId,
    UnsupportedVersion,
)

__all__ = [
    "ACK_CODE_FOR", "PROCESSING_IDS", "SUPPORTED_VERSIONS", "AckCode", "accept_code_for", "ack_code_for", "acks_for", "build_ack",
]

AckCode = Literal["AA", "AE", "AR", "CA", "CR"]
"""HL7 table 0008: application accept, error, reject (original mode, and enhanced mode's application
ACK); commit accept and commit reject (enhanced mode's accept ACK)."""

#: HL7 table 0008 code and table 0357 error code for each error class. Looked up
#: along the class's MRO by ack_code_for, so a subclass an adapter adds answers
#: like its parent.
#:
#: - DecodeError → AR/100 "segment sequence error": the bytes do not make a
#:   message (framing, delimiters, missing or misplaced segments). 0357 has no
#:   "unparseable" code; 100 is the structural one, and AR says not to resend.
#: - UnknownMessage → AR/200 "unsupported message type"; UnsupportedEvent (the
#:   structure is mapped, its trigger event is not) → AR/201 "unsupported event code".
#: - UnsupportedProcessingId (MSH-11) → AR/202, UnsupportedVersion (MSH-12) → AR/203:
#:   HL7 v2.5 §2.9.2 rejects a message whose MSH-9, MSH-11 or MSH-12 the receiver does not take.
#: - InvalidContent → AE/102 "data type error": a value has the wrong form or
#:   fails its check digit; the sender must correct and resend. RequiredMissing
#:   (a required element's field gives no value) → AE/101 "required field missing",
#:   NotInTable (a code the table does not list, which refuses unlisted codes) →
#:   AE/103 "table value not found".
#: - Refused → AR/207 "application internal error": a destination behind us
#:   rejected it for good; nothing in the message can be pointed at.
#: - MessageError (anything else) → AE/207.
ACK_CODE_FOR: dict[type[MessageError], tuple[AckCode, str]] = {
    DecodeError: ("AR", "100"),
    UnknownMessage: ("AR", "200"),
    UnsupportedEvent: ("AR", "201"),
    UnsupportedProcessingId: ("AR", "202"),
    UnsupportedVersion: ("AR", "203"),
    InvalidContent: ("AE", "102"),
    RequiredMissing: ("AE", "101"),
    NotInTable: ("AE", "103"),
    Refused: ("AR", "207"),
    MessageError: ("AE", "207"),
}

# HL7 table 0357 texts, for ERR-3.2 (v2.5).
_ERROR_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

_KNOWN_VERSIONS = frozenset(
    {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"}
)
SUPPORTED_VERSIONS = _KNOWN_VERSIONS
"""The MSH-12 values Helsebro reads and answers in; a message in any other is rejected (203)."""
PROCESSING_IDS = frozenset({"D", "P", "T"})
"""HL7 table 0103, MSH-11.1: debugging, production, training; any other is rejected (202), and an ACK echoes these only."""
_FALLBACK_VERSION = "2.5"

_OSLO = ZoneInfo("Europe/Oslo")
_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PLAIN = re.compile(r"[^\\|^&~\x00-\x1f\x7f]*")
"""Text with no delimiter and no control character: what _escape leaves as it is."""
# "PID-3[1].1.2", "OBX[2]-5", "MSH-9", "MRG[2]": segment[occurrence]-field[repetition].component.sub
_LOCATION = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?)?", re.ASCII
)
# MSA-3 is ST(80) in v2.5; longer text may be cut off or refused by the sender.
_TEXT_MAX = 80
# MSH-10 is ST(20) in v2.5; 20 hex digits of a uuid4 still carry 80 random bits.
_CONTROL_ID_LEN = 20


def ack_code_for(error: MessageError) -> tuple[AckCode, str]:
    """Return the ACK code and table 0357 code for *error*, by its nearest listed class."""
    for cls in type(error).__mro__:
        if issubclass(cls, MessageError) and cls in ACK_CODE_FOR:
            return ACK_CODE_FOR[cls]
    return ACK_CODE_FOR[MessageError]


def acks_for(code: AckCode, *, accept_type: str, application_type: str, accept: AckCode | None = None) -> tuple[AckCode, ...]:
    """The ACKs that answer a message whose outcome is *code* (AA, AE or AR), as its MSH-15 and MSH-16 ask.

    Both empty: original acknowledgment mode, one application ACK, *code*. Either set:
    enhanced mode (HL7 v2.5 §2.9.3), where MSH-15 says when to send the accept ACK and
    MSH-16 when to send the application ACK, each by table 0155: AL always, NE never, ER
    only on an error or reject, SU only on success. The accept ACK is CA, or CR for a
    message rejected as unsupported (*code* AR: type, event, version, or unreadable); a
    message refused for its content was still taken into safe keeping (its dead letter),
    so it is CA with an AE application ACK. *accept* overrides that guess: the caller that knows
    the error passes accept_code_for's (a message refused after it was kept, AR/Refused, is CA).
    An empty or unknown condition in enhanced mode reads as AL: a sender that asks for nothing it
    understands is answered, not left waiting. A CR sent ends the exchange: the message never
    reached an application, so no application ACK follows it (§2.9.3: the application ACK
    answers processing); when the sender asked for no accept ACK, the AR says it instead.
    """
    if not accept_type and not application_type:
        return (code,)
    if accept is None:
        accept = "CR" if code == "AR" else "CA"
    if _wanted(accept_type, ok=accept == "CA"):
        if accept != "CA":  # rejected at accept level: no application took it, so none answers for it
            return (accept,)
        return (accept, code) if _wanted(application_type, ok=code == "AA") else (accept,)
    # No accept ACK wanted: the application ACK is the only word the sender gets, a rejection included.
    return (code,) if _wanted(application_type, ok=code == "AA") else ()


def accept_code_for(error: MessageError | None) -> AckCode:
    """The enhanced-mode accept ACK for a message settled with *error*: CR when it was not acceptable as a message at all
    (unreadable, or a type, event or version Helsebro does not take: HL7 v2.5 §2.9.3, MSH-9/11/12), else CA: it was
    kept (applied, forwarded, or dead-lettered), and a refusal by the record or a destination is the application ACK's AR."""
    return "CR" if isinstance(error, (DecodeError, UnknownMessage)) else "CA"


def _wanted(condition: str, *, ok: bool) -> bool:
    """Whether a table 0155 *condition* asks for the ACK of an outcome that is *ok* or not."""
    if condition == "NE":
        return False
    if condition == "ER":
        return not ok
    if condition == "SU":
        return ok
    return True  # AL, empty or unknown


def _escape(text: str) -> str:
    """Escape HL7 delimiters and flatten control characters (a CR would end the segment)."""
    if _PLAIN.fullmatch(text):  # most values (ids, names, codes) need neither: one scan, no copy
        return text
    return _CONTROL.sub(" ", text).translate(_ESCAPES)


@lru_cache(maxsize=4096)
def _components(value: str) -> str:
    """Escape each ``^``-separated component of an HD or MSG value, keeping the ``^``."""
    return "^".join(_escape(part) for part in value.split("^"))


def _erl(location: str | None) -> str:
    """Turn "PID-3[1].1" into the ERL "PID^1^3^1^1"; "" for anything unrecognised.

    A whole segment ("MRG[2]", "PID") is an ERL too: its segment id and
    sequence are required, its field position optional.

    An XPath or a malformed location must not stop the ACK from going out, so
    it yields an empty ERR-2 rather than an error.
    """
    match = _LOCATION.fullmatch(location or "")
    if match is None:
        return ""
    segment, occurrence, field, repetition, component, sub = match.groups()
    parts = [segment, occurrence or "1"]
    if field:
        parts.append(field)
    if repetition or component:
        parts.append(repetition or "1")
    if component:
        parts.append(component)
    if sub:
        parts.append(sub)
    return "^".join(parts)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@lru_cache(maxsize=1024)
def _message_type(trigger: str, version: str) -> str:
    """MSH-9 of the ACK: ``ACK^<trigger>^ACK``; v2.1–2.3 have no structure component."""
    if not trigger:
        return "ACK"
    if _version_tuple(version) < (2, 3, 1):
        return f"ACK^{trigger}"
    return f"ACK^{trigger}^ACK"


_LAST_SECOND: tuple[int, str] = (-1, "")
"""The last whole second stamped and its text: ACKs go out by the thousand per second."""


def _timestamp(now: datetime | None) -> str:
    global _LAST_SECOND
    if now is not None:
        return now.strftime("%Y%m%d%H%M%S%z")  # %z is "" for a naive datetime
    second = int(time.time())
    last = _LAST_SECOND
    if last[0] == second:
        return last[1]
    text = datetime.fromtimestamp(second, _OSLO).strftime("%Y%m%d%H%M%S%z")
    _LAST_SECOND = (second, text)
    return text


def _err_segment(version: str, *, error_code: str | None, location: str) -> str:
    """The ERR segment: ERR-2/3/4 from v2.5, the ELD in ERR-1 before it."""
    number = error_code or "207"
    coded = f"{_escape(number)}^{_escape(_ERROR_TEXT.get(number, ''))}^HL70357"
    if _version_tuple(version) < (2, 5):
        # v2.1–2.4: ERR-1 is ELD = segment^occurrence^field^code(CE as subcomponents).
        seg, occ, field = (location.split("^") + ["", "", ""])[:3]
        return f"ERR|{seg}^{occ}^{field}^{coded.replace('^', '&')}"
    return f"ERR||{location}|{coded}|E"


def _msh(
    apps: tuple[str, str, str, str],
    now: datetime | None,
    *,
    message_type: str | None,
    control_id: str,
    processing_id: str,
    version: str,
    charset_name: str,
) -> str:
    """The MSH segment; *apps* are our MSH-3 to MSH-6, in order; MSH-18 *charset_name* from v2.3 on, when given."""
    trigger = (message_type or "").split("^")[1:2]
    fields = [
        "MSH",
        "^~\\&",
        *(_components(app) for app in apps),
        _timestamp(now),
        "",
        _message_type(_escape(trigger[0]) if trigger else "", version),
        _escape(control_id),
        _escape(processing_id),
        version,
    ]
    if charset_name and _version_tuple(version) >= (2, 3):
        fields += ["", "", "", "", "", _escape(charset_name)]  # MSH-13 to MSH-17 empty, MSH-18
    return "|".join(fields)


def build_ack(
    *,
    code: AckCode,
    control_id: str | None,
    sending_application: str,
    sending_facility: str,
    receiving_application: str,
    receiving_facility: str,
    version: str = "2.5",
    message_type: str | None = None,
    text: str | None = None,
    error_location: str | None = None,
    error_code: str | None = None,
    ack_control_id: str | None = None,
    now: datetime | None = None,
    processing_id: str = "P",
    charset: str = "utf-8",
    charset_name: str = "",
) -> bytes:
    """Build the ER7 bytes (in *charset*, segments ended by CR) of an ACK to one message.

    *charset* is the Python codec the original message declared in MSH-18: the ACK echoes
    the sender's own names (MSH-5/6) and control id, and written in UTF-8 to a sender that
    reads ISO-8859-1 a facility "SØR" came back as "SÃ˜R". A character the codec lacks
    (never one the sender sent: the text is ours) is written as `?`. *charset_name* is the
    original's MSH-18 as it named that charset (``8859/1``), echoed in the ACK's MSH-18 (v2.3 on),
    so the sender knows which charset the bytes are in; empty when the original named none.
    *processing_id* (MSH-11) is the original's when it is one of table 0103's, else ``P``.

    The application and facility arguments are the *original* message's MSH-3
    to MSH-6, as HD values with ``^`` between components; the ACK swaps them.
    ``text`` goes to MSA-3 and must be a plain-words reason, never a value from
    the message. AE and AR get an ERR segment with ``error_location`` (like
    "PID-3[1].1") and ``error_code`` (table 0357; default 207). MSH-10 is
    ``ack_control_id`` or 20 random hex digits; an unknown ``version`` is
    answered as 2.5.
    """
    if version not in _KNOWN_VERSIONS:
        version = _FALLBACK_VERSION
    # Swapped: the ACK goes from the original's receiver to its sender.
    apps = (receiving_application, receiving_facility, sending_application, sending_facility)
    control = ack_control_id or uuid.uuid4().hex[:_CONTROL_ID_LEN]
    msh = _msh(
        apps, now, message_type=message_type, control_id=control,
        processing_id=processing_id if processing_id in PROCESSING_IDS else "P", version=version,
        charset_name=charset_name,
    )
    msa = f"MSA|{code}|{_escape(control_id or '')}"
    if text:
        msa += f"|{_escape(text[:_TEXT_MAX])}"
    segments = [msh, msa]
    if code not in ("AA", "CA"):
        segments.append(_err_segment(version, error_code=error_code, location=_erl(error_location)))
    return ("\r".join(segments) + "\r").encode(charset, errors="replace")
