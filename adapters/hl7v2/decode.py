"""Turn delivered bytes into tokenized HL7 v2 messages: framing, batches, charset.

Owns: MLLP frame bytes, FHS/BHS batch envelopes, line endings, the UTF-8 BOM,
MSH-18 charsets with a per-sender fallback, and the message header. Mapping
the message to FHIR is the router's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.hl7v2._tokenizer import EXPLICIT_NULL, Delimiters, Hl7Message, TokenizeError, hex_escapes_fit, tokenize, unescape
from adapters.hl7v2.ack import PROCESSING_IDS, SUPPORTED_VERSIONS
from router.contracts import MessageHeader
from router.errors import DecodeError, UnsupportedProcessingId, UnsupportedVersion

if TYPE_CHECKING:
    from typing import Protocol

    class _HasData(Protocol):
        """What decode() reads of a RawMessage: its bytes (the pipeline's slotted stand-ins have them too)."""

        @property
        def data(self) -> bytes: ...

# MSH-18 values (HL7 table 0211) to Python codecs. Unknown values are refused:
# guessing a charset silently corrupts names.
_CHARSETS = {
    "": None,
    "ASCII": "ascii",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "ISO IR100": "iso-8859-1",
    "ISO-8859-1": "iso-8859-1",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}
_KNOWN_CHARSETS = ", ".join(name for name in _CHARSETS if name)
"""The MSH-18 names an unknown one's refusal lists."""

_MSH_START = re.compile(rb"(?:^|\r)[ \t]*(MSH)", re.IGNORECASE)  # after _line_ends every segment ends in CR; an LF left is text
_NEXT_MSH = re.compile(rb"\r[ \t]*MSH", re.IGNORECASE)  # a literal first byte: ten times faster than _MSH_START
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_MLLP_START = b"\x0b"  # MLLP frames a message as 0x0B ... 0x1C 0x0D
_FRAME_START = re.compile(rb"\x0b(?:\xef\xbb\xbf)?[ \t\r\n]*(?:MSH|FHS|BHS)", re.IGNORECASE)
_OUTSIDE_FRAMES = re.compile(rb"(?<=\x1c\r)(?:(?!MSH|FHS|BHS|BTS|FTS)[^\x0b])+(?=\x0b|$)", re.IGNORECASE)
"""What follows an MLLP frame's end (0x1C 0x0D) up to the next start byte or the end: MLLP ignores it (noise in a
captured stream), so it joins no message. Never a stretch naming a segment that starts a message or a batch (a sender
that forgot a start byte): that one is kept, and refused or converted as before, never dropped unseen."""
_LINE_BOM = re.compile(rb"(?:^|(?<=[\r\n\x0b]))\xef\xbb\xbf")
"""A UTF-8 BOM that starts the delivery or a line: files saved with one and joined (`cat a.hl7 b.hl7`) carry one before each MSH."""


_UTF16_STARTS = (b"\xff\xfe", b"\xfe\xff", b"M\x00S\x00H\x00", b"\x00M\x00S\x00H")
"""How a UTF-16 message begins, with its byte order mark or without: named as such, not as "no MSH"."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's bytes, cut out of a delivery, with CR segment endings."""

    index: int
    data: bytes


@dataclass(slots=True)
class DecodedMessage:
    """A tokenized message and its header."""

    message: Hl7Message
    header: MessageHeader
    charset: str


def split_messages(data: bytes) -> list[RawMessage]:
    """Cut a delivery or file into messages, each starting at MSH.

    Handles MLLP start/end bytes, a UTF-8 BOM, CR/LF/CRLF endings, blank lines
    and FHS/BHS/BTS/FTS batch segments. Bytes with no MSH give one RawMessage
    holding them all, so the caller can report it rather than drop it. The last
    message of an MLLP frame that never ends keeps the start byte, so decode()
    refuses it instead of converting a message cut mid-field. That holds for every
    frame, not only the last: a frame cut short before the next start byte is split
    from it, never joined to the message that follows.
    """
    if b"\x0b" not in data and b"\x1c" not in data:
        return _split(data, open_frame=False)
    pieces = _open_frame_pieces(data)
    if len(pieces) == 1:
        return _split(pieces[0][0], open_frame=pieces[0][1])
    out: list[RawMessage] = []
    for piece, open_frame in pieces:
        base = len(out)
        out.extend([RawMessage(base + k, raw.data) for k, raw in enumerate(_split(piece, open_frame=open_frame))])
    return out


def _split(data: bytes, *, open_frame: bool) -> list[RawMessage]:
    """split_messages() for bytes holding at most one frame cut short, at their end (*open_frame*)."""
    if b"\x0b" in data or b"\x1c" in data:
        data = _OUTSIDE_FRAMES.sub(b"", data).replace(b"\x0b", b"").replace(b"\x1c", b"")
    if b"\xef\xbb\xbf" in data:
        data = _LINE_BOM.sub(b"", data)
    if b"\n" in data:
        data = _line_ends(data)
    # The common case, one plain message, checked without the slow scan below.
    # Line ends are all CR by now, so a second MSH can only follow a CR.
    if data[:3].upper() == b"MSH" and b"FHS" not in data and b"BHS" not in data and not _NEXT_MSH.search(data):
        out = [RawMessage(0, data)]
    elif starts := [m.start(1) for m in _MSH_START.finditer(data)]:
        out = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(data)
            lines = [ln for ln in data[start:end].split(b"\r") if ln.strip() and ln.lstrip()[:3].upper() not in _BATCH_SEGMENTS]
            out.append(RawMessage(i, b"\r".join(lines) + b"\r"))
    else:
        out = [RawMessage(0, data)] if data.strip() else []
    if open_frame and out:
        # Keep the start byte on the message the open frame cut: decode() refuses it.
        out[-1] = RawMessage(out[-1].index, _MLLP_START + out[-1].data)
    return out


_HEADER_LINE = re.compile(rb"(?:^|[\r\n])([ \t]*(?:MSH|FHS|BHS))([^A-Za-z0-9\s])", re.IGNORECASE)
"""A line that starts a message or a batch, and its field separator."""
_BARE_LF = re.compile(rb"\n((?:[ \t]*\n)*)([^\r\n]*)")
"""A bare LF, the blank lines after it, and the next line: whether it ends a segment depends on that line."""


def _line_ends(data: bytes) -> bytes:
    """Make every segment end a CR; a bare LF inside a field's text stays in it.

    Why: files from Unix tools end segments with LF, from Windows with CRLF. But
    some senders also put a bare LF inside a text (an NTE or OBX-5 written on
    several lines) where HL7 wants ``\\.br\\``. Cut there, the rest of the text
    becomes a "segment" with no name and the whole message is refused. So a bare
    LF (with any blank lines after it) ends a segment only when the next line can
    start one: a segment name and its message's field separator, a name alone
    in capitals (a segment with no fields, never a word such as "Mvh"), or
    nothing (the end).
    Otherwise that line is the text's next line, and the LFs stay in the field.
    """
    data = data.replace(b"\r\n", b"\r")
    if b"\n" not in data:
        return data  # CRLF throughout: no bare LF to judge
    # Each message (or batch header) names its own field separator: its segments are read with it.
    heads = [(m.start(1), m.group(2)) for m in _HEADER_LINE.finditer(data)]
    if not heads:
        at = data.find(b"MSH")
        heads = [(0, data[at + 3 : at + 4] if at >= 0 else b"|")]
    out: list[bytes] = []
    for n, (start, sep) in enumerate(heads):
        segment = re.compile(rb"[ \t]*(?:[A-Za-z][A-Za-z0-9]{2}" + re.escape(sep or b"|") + rb"|[A-Z][A-Z0-9]{2}[ \t]*$|$)")

        def one(m: re.Match[bytes], segment: re.Pattern[bytes] = segment) -> bytes:
            if segment.match(m.group(2)):
                return b"\r" + m.group(1).replace(b"\n", b"\r") + m.group(2)
            return m.group(0)

        end = heads[n + 1][0] if n + 1 < len(heads) else len(data)
        out.append(_BARE_LF.sub(one, data[0 if n == 0 else start : end]))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class BatchShortfall:
    """A batch whose BTS-1 or FTS-1 count disagrees with what arrived: messages were lost on the way.

    `envelope` is the batch's own segments (FHS, BHS, BTS, FTS), never a message,
    so a dead letter of it carries no patient data; `control_id` is the short batch's BHS-11
    (else FHS-11), for the ACK's MSA-2 and the dead letter's header.
    """

    error: DecodeError
    envelope: bytes
    control_id: str | None
    messages: int  # how many messages the delivery held: 0 for an envelope alone (a replayed dead letter of one)


def check_batch_counts(data: bytes) -> BatchShortfall | None:
    """Compare each BTS-1 (messages in the batch) and FTS-1 (batches in the file) with what *data* holds.

    Why: a batch file that lost messages in transit still converts message by
    message, so without this check nobody would hear of the loss. An absent or
    empty count is not checked. Messages are counted as split_messages() cuts them
    (a line starting with MSH), per batch: since the last BHS or BTS. Batches are
    counted by their BHS, per file (since the last FHS or FTS: files concatenated in one
    delivery each have their own FTS); a file with messages but no BHS is one batch. Returns
    None when every count agrees or the delivery has no BTS/FTS.
    """
    if b"BTS" not in data and b"FTS" not in data and b"bts" not in data and b"fts" not in data:
        return None  # the common case, a delivery without trailers: four byte searches, no copy
    data = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    lines = (_line_ends(data) if b"\n" in data else data).split(b"\r")  # segments as split_messages() sees them: an LF in a text stays in it
    problems: list[tuple[str, str, str]] = []  # (reason, location, control id of the batch or file)
    envelope: list[bytes] = []
    batch_id = file_id = ""
    in_batch = trailers = messages = 0
    file_batches = file_messages = file_trailers = 0  # since the last FHS: files concatenated in one delivery are counted each on its own
    sep = b"|"  # the field separator of the last MSH, FHS or BHS: a BTS or FTS trailer is written with it
    for raw_line in lines:
        line = raw_line.lstrip().lstrip(b"\xef\xbb\xbf")
        name = line[:3].upper()
        mark = line[3:4]
        if name == b"MSH":
            in_batch += 1
            messages += 1
            file_messages += 1
            sep = mark if _is_separator(mark) else sep
            continue
        if name not in _BATCH_SEGMENTS:
            continue
        if name in (b"FHS", b"BHS"):
            if not _is_separator(mark):
                continue
            sep = mark
        elif mark and mark != sep:
            continue  # text that starts with BTS or FTS (a field's line-feed continuation), not a trailer: never in the envelope
        envelope.append(line)
        count = _count_field(line)
        if name == b"BHS":
            file_batches += 1
            in_batch = 0
            batch_id = _field(line, 10)  # BHS-11: BHS-1 is the separator itself, as MSH-1
        elif name == b"FHS":
            file_id = _field(line, 10)  # FHS-11
            file_batches = file_messages = 0
        elif name == b"BTS":
            trailers += 1
            label = "BTS-1" if trailers == 1 else f"BTS[{trailers}]-1"
            if count is not None and count != in_batch:
                problems.append((_says(label, count, in_batch, "message"), label, batch_id or file_id))
            in_batch = 0
        else:  # FTS
            file_trailers += 1
            label = "FTS-1" if file_trailers == 1 else f"FTS[{file_trailers}]-1"
            held = file_batches or (1 if file_messages else 0)
            if count is not None and count != held:
                problems.append((_says(label, count, held, "batch"), label, file_id))
            file_batches = file_messages = 0
    if not problems:
        return None
    reason = "; ".join(text for text, _, _ in problems) + ": messages were lost on the way; each message that arrived was still converted"
    return BatchShortfall(DecodeError(reason, location=problems[0][1]), b"\r".join(envelope) + b"\r", problems[0][2] or None, messages)


def _is_separator(mark: bytes) -> bool:
    """Tell whether the byte after a segment name can be a field separator (not a letter, digit or blank)."""
    return len(mark) == 1 and not mark.isalnum() and not mark.isspace()


def _count_field(line: bytes) -> int | None:
    """BTS-1 or FTS-1 as a number; None when absent or empty, -1 when it is not a number."""
    value = _field(line, 1)
    if not value:
        return None
    return int(value) if value.isdigit() else -1


def _field(line: bytes, n: int) -> str:
    """Item *n* of a segment split on its own separator (the byte after the name), first component, stripped.

    For BTS and FTS that is field *n*; for FHS and BHS, whose field 1 is the separator itself, field *n* + 1.
    """
    fields = line.split(line[3:4] or b"|") if len(line) > 3 else []
    if len(fields) <= n:
        return ""
    return fields[n].split(b"^", 1)[0].decode("ascii", errors="replace").strip()


def _says(label: str, count: int, held: int, what: str) -> str:
    if count < 0:
        return f"{label} is not a number of {what}es" if what == "batch" else f"{label} is not a number of {what}s"
    noun = what if count == 1 else (f"{what}es" if what == "batch" else f"{what}s")
    holds = "the file holds" if what == "batch" else "the batch holds"
    return f"{label} says {count} {noun}, {holds} {held}"


def _open_frame_pieces(data: bytes) -> list[tuple[bytes, bool]]:
    """Cut *data* after each MLLP frame that never got its end byte (0x1C) before the next frame starts.

    Returns the pieces in order, each with whether it ends in such a frame, whose last message may be cut
    short. Why cut: with its end byte lost, a frame's last message runs on into the next frame's MSH, and
    only a frame of its own lets decode() refuse the one and convert the other.
    """
    # Only a start byte before a message (MSH, or a batch header) opens a frame: a stray 0x0B inside a field
    # of an unframed message (dropped, as before) does not.
    starts = [m.start() for m in _FRAME_START.finditer(data)]
    pieces: list[tuple[bytes, bool]] = []
    cut = 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        if data.find(b"\x1c", start, end) < 0:
            pieces.append((data[cut:end], True))
            cut = end
    if cut < len(data) or not pieces:
        pieces.append((data[cut:], False))
    return pieces


def _raw_msh_fields(data: bytes) -> list[bytes]:
    line = data.split(b"\r", 1)[0]
    if len(line) < 4:
        return []
    fs = line[3:4]
    return [b"MSH", fs, *line.split(fs)[1:]]


def _component(value: bytes, sep: bytes) -> str:
    return value.split(sep, 1)[0].decode("ascii", errors="replace").strip()


def _charset_for(data: bytes, *, default: str, senders: Mapping[str, str]) -> tuple[str, bool]:
    """Return (codec, declared) from MSH-18, or the sender's or global default."""
    fields = _raw_msh_fields(data)
    if len(fields) < 3:
        raise DecodeError("message does not start with a valid MSH segment", location="MSH-1")
    comp = fields[2][:1] or b"^"
    declared = fields[18].split(fields[2][1:2] or b"~")[0].decode("ascii", errors="replace").strip().upper() if len(fields) > 18 else ""
    if declared:
        if declared not in _CHARSETS:
            # The known names, never the value: a sender that shifts its MSH fields puts a name or a
            # fødselsnummer here, and the reason goes to the log, the dead letter and the ACK.
            raise DecodeError(f"MSH-18 names a character set Helsebro does not know; it reads {_KNOWN_CHARSETS}", location="MSH-18")
        return str(_CHARSETS[declared]), True
    for n in (3, 4):
        if len(fields) > n:
            key = _component(fields[n], comp)
            if key in senders:
                return senders[key], False
    return default, False


def hl7_charset(data: bytes) -> str | None:
    """The Python codec *data*'s MSH-18 declares, or None (not HL7 v2, nothing declared, or a name Helsebro does not know)."""
    start = data.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")
    if start[:3].upper() != b"MSH":
        return None
    try:
        codec, declared = _charset_for(start, default="", senders={})
    except DecodeError:
        return None
    return codec if declared else None


def declared_charset(data: bytes) -> str:
    """*data*'s MSH-18 as HL7 table 0211 names it (``8859/1``), when it names one Helsebro reads; else "".

    Why: the ACK is written in the charset the message was read in, and says so in its own MSH-18; without it
    a sender whose default is another charset read the ISO-8859-1 bytes of its own "SØR" as something else.
    """
    start = data.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")
    if start[:3].upper() != b"MSH":
        return ""
    fields = _raw_msh_fields(start.split(b"\r", 1)[0].split(b"\n", 1)[0])
    if len(fields) <= 18 or len(fields[2]) < 2:
        return ""
    name = fields[18].split(fields[2][1:2])[0].decode("ascii", errors="replace").strip().upper()
    return name if _CHARSETS.get(name) else ""


_V2_RELEASE = re.compile(r"2\.[1-9][0-9]?(\.[1-9])?")
"""Any release of version 2 (2.7.1, 2.9, 2.9.1 too): v2 only adds, so a reader of 2.8 reads them; hl7apy cannot
write their ACK, which is then in 2.5 (ack.build_ack)."""


def check_header(header: MessageHeader) -> None:
    """Refuse a message whose MSH-12 or MSH-11 Helsebro does not take (HL7 v2.5 §2.9.2: the receiver rejects it).

    An empty one is let through, as legacy senders leave them out. The reason names the values taken, never the
    value sent: a sender that shifts its MSH fields puts a name or a fødselsnummer there.

    Raises:
        UnsupportedVersion: MSH-12 is not a version Helsebro reads (ACK ERR-3 203).
        UnsupportedProcessingId: MSH-11.1 is not in HL7 table 0103 (ACK ERR-3 202).
    """
    if header.version and header.version not in SUPPORTED_VERSIONS and not _V2_RELEASE.fullmatch(header.version):
        raise UnsupportedVersion("MSH-12 names an HL7 version Helsebro does not read; it reads version 2 (2.1 and later)", location="MSH-12")
    if header.processing_id and header.processing_id.upper() not in PROCESSING_IDS:
        raise UnsupportedProcessingId("MSH-11 is not a processing id of HL7 table 0103 (D, P or T)", location="MSH-11")


def _msh_text(data: bytes, codec: str) -> tuple[list[str], Delimiters] | None:
    """The fields of *data*'s MSH line as text in *codec* (index n is MSH-n), and its delimiters; None without an MSH line."""
    start = data.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")
    if start[:3].upper() != b"MSH":
        return None
    fields = [f.decode(codec, errors="replace") for f in _raw_msh_fields(start.split(b"\n", 1)[0])]
    if len(fields) < 3:
        return None
    enc = fields[2]
    return fields, Delimiters(field=fields[1], component=enc[0:1] or "^", repetition=enc[1:2] or "~", escape=enc[2:3], subcomponent=enc[3:4] or "&")


def msh_names(data: bytes, codec: str = "iso-8859-1") -> tuple[str, str, str, str] | None:
    """MSH-3 to MSH-6 of *data* as whole HD values (``LAB^2.16.578.1.12.4.1.2.12345^ISO``), escapes undone, in *codec*.

    Why: the ACK's MSH-5/6 must name the sender as its MSH-3/4 did (HL7 v2.5 §2.9). MessageHeader keeps only
    each HD's namespace id, so a sender known by its OID (``^2.16.578…^ISO``) was answered to an empty MSH-5 and
    one named ``LAB^OID^ISO`` to ``LAB``: an interface engine that routes ACKs by the whole HD dropped them.
    """
    found = _msh_text(data, codec)
    if found is None:
        return None
    fields, d = found

    def hd(n: int) -> str:
        raw = fields[n].split(d.repetition, 1)[0] if len(fields) > n else ""
        return "^".join(_leaf(part, d).strip() for part in raw.split(d.component)).rstrip("^")[:_MOST_HD]

    return hd(3), hd(4), hd(5), hd(6)


_CODE = re.compile(r"[A-Z0-9]{3}")
"""MSH-9.2 as HL7 table 0003 writes it: what salvage_header echoes of MSH-9, never free text a shifted field put there."""


def salvage_header(data: bytes) -> MessageHeader | None:
    """Best-effort MSH of a message decode refused: the sender's and receiver's names, MSH-10, MSH-11/12/15/16 as written.

    Why: a message refused before its header was read (an unknown MSH-18, a broken segment) was answered with an
    ACK AR whose MSA-2 and MSH-5/6 were empty, an answer its sender cannot match to the message it sent, so it
    waits for the ACK or resends for ever (HL7 v2.5 §2.9: an unreadable message still gets a reject naming its
    MSH-10 when that can be found). Read as ISO-8859-1, which reads any byte; None when there is no MSH line.
    """
    found = _msh_text(data, "iso-8859-1")
    if found is None:
        return None
    fields, d = found

    def field(n: int, *, whole: bool = False) -> str:
        raw = fields[n] if len(fields) > n else ""
        return (_leaf(raw, d) if whole else _first(raw, d)).strip()

    kind = fields[9].split(d.component) if len(fields) > 9 else []
    event = _leaf(kind[1], d).upper() if len(kind) > 1 else ""
    control_id = field(10, whole=True)
    return MessageHeader(
        sending_application=field(3)[:_MOST_HD], sending_facility=field(4)[:_MOST_HD],
        receiving_application=field(5)[:_MOST_HD], receiving_facility=field(6)[:_MOST_HD],
        trigger_event=event if _CODE.fullmatch(event) else "",
        control_id=control_id if len(control_id) <= _MOST_CONTROL_ID else "",
        processing_id=field(11), version=field(12), accept_ack_type=field(15).upper(), application_ack_type=field(16).upper(),
    )


def decode(raw: RawMessage | _HasData, *, default_charset: str = "utf-8", sender_charsets: Mapping[str, str] | None = None) -> DecodedMessage:
    """Decode and tokenize one message.

    Raises:
        DecodeError: not an HL7 v2 message, or its bytes do not fit its charset.
    """
    data = raw.data
    if data[:1] == _MLLP_START:  # split_messages left it on a message whose frame never ended
        raise DecodeError("the MLLP frame has no end byte (0x1C): the message may be cut short", location="MSH")
    if data.lstrip()[:3].upper() != b"MSH":
        if data.startswith(_UTF16_STARTS):
            raise DecodeError("the message is in UTF-16, which HL7 v2 here is not read in: send it as UTF-8 or ISO-8859-1 (MSH-18)", location="MSH")
        raise DecodeError("not an HL7 v2 message: no MSH segment found", location="MSH")
    codec, declared = _charset_for(data, default=default_charset, senders=sender_charsets or {})
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        if declared:
            raise DecodeError(f"the bytes are not valid {codec}, the character set MSH-18 declares", location="MSH-18") from exc
        # Undeclared and not valid in the default: Norwegian legacy systems send
        # ISO-8859-1 without saying so, and latin-1 decodes any byte.
        codec = "iso-8859-1"
        text = data.decode(codec)
    if "\x00" in text:
        raise DecodeError("the message holds a NUL character, which no HL7 v2 value may hold (a binary value is sent base64-encoded)",
                          location=_position_of(text, text.index("\x00")))
    try:
        message = tokenize(text, charset=codec, declared=declared)
    except ValueError as exc:  # a TokenizeError says where; anything else in tokenizing is the message's fault too
        raise DecodeError(str(exc), location=exc.location if isinstance(exc, TokenizeError) else None) from exc
    if declared and message.delims.escape and message.delims.escape + "X" in text:
        _check_hex_escapes(message, codec)
    return DecodedMessage(message, read_header(message, charset=codec), codec)


def _check_hex_escapes(message: Hl7Message, codec: str) -> None:
    """Refuse a hex escape (`\\Xhh\\`) whose bytes the charset MSH-18 declares cannot read, at its field.

    Why: such bytes are as wrong as raw bytes that do not fit MSH-18, which refuse the message; read
    as UTF-8 whatever MSH-18 said, an ISO-8859-1 sender's letters were changed (docs/hl7v2-coverage.md,
    Hex escapes). The reason names the field, never the value.
    """
    d = message.delims
    marker = d.escape + "X"
    for seg in message.segments:
        for n in range(3 if seg.name == "MSH" else 1, len(seg.fields)):
            if marker in seg.fields[n] and not hex_escapes_fit(seg.fields[n], d):
                raise DecodeError(f"{seg.label}-{n} holds a hex escape (\\Xhh\\) whose bytes are not valid {codec}, the character set MSH-18 declares",
                                  location=f"{seg.label}-{n}")


_NAMED = re.compile(r"[A-Za-z?][A-Za-z0-9?]{2}")  # a segment name, a NUL in it read as `?`


def _position_of(text: str, at: int) -> str:
    """The segment and field (`PID-5`) the character at *at* lies in, for an error about the raw text."""
    # Segments end in CR, as tokenize reads them: a bare LF left in the text is inside a field (split_messages).
    start = text.rfind("\r", 0, at) + 1
    line = text[start:at]
    separator = text.lstrip()[3:4] or "|"
    name = text[start:].split("\r", 1)[0].split(separator, 1)[0].strip().replace("\x00", "?")  # a NUL in the name itself: `?ID`
    if not _NAMED.fullmatch(name):
        # No segment name (a text's line after a CR): its number, as tokenize says, never its text.
        number = sum(1 for ln in text[:start].split("\r") if ln.strip()) + 1
        return f"segment {number}"
    fields = line.count(separator)
    if not fields:
        return name
    return f"{name}-{fields + 1 if name == 'MSH' else fields}"


_MOST_CONTROL_ID = 199  # MSH-10 (ST), v2.7 and later; 20 before
_MOST_HD = 227  # MSH-3 and MSH-4 (HD), whole


def read_header(msg: Hl7Message, *, charset: str = "") -> MessageHeader:
    """Read the MSH fields every later stage needs."""
    msh = msg.first("MSH")
    if msh is None:  # tokenize guarantees MSH first; kept for type narrowing
        raise DecodeError("no MSH segment", location="MSH")
    fields = msh.fields
    d = msg.delims
    n = len(fields)
    # Each field as Hl7Message.leaf reads its first component of the first repetition, "" for
    # none; MSH-9 split once for its three components. Every message reads these eleven.
    kind = _components(fields[9], d) if n > 9 else ("", "", "")
    # MSH-10 is ST: whole, escapes undone. Cut at a `^` or `~` a sender wrote in it, `B7^1` and `B7^2` were both `B7`,
    # the second suppressed as a duplicate of the first, and MSA-2 answered neither.
    control_id = _leaf(fields[10], d) if n > 10 else ""
    application = _first(fields[3], d) if n > 3 else ""
    facility = _first(fields[4], d) if n > 4 else ""
    # The sender and the control id name the message in the record's keys (applied, duplicates, journal):
    # longer than HL7 lets them be, they would be longer than the database indexes.
    for value, where, most in ((control_id, "MSH-10", _MOST_CONTROL_ID), (application, "MSH-3", _MOST_HD), (facility, "MSH-4", _MOST_HD)):
        if len(value) > most:
            raise DecodeError(f"{where} is {len(value)} characters long; HL7 v2 allows at most {most}", location=where)
    return MessageHeader(
        sending_application=application,
        sending_facility=facility,
        receiving_application=_first(fields[5], d) if n > 5 else "",
        receiving_facility=_first(fields[6], d) if n > 6 else "",
        message_code=kind[0].upper(),
        trigger_event=kind[1].upper(),
        structure=kind[2].upper(),
        control_id=control_id,
        processing_id=_first(fields[11], d) if n > 11 else "",
        version=_first(fields[12], d) if n > 12 else "",
        accept_ack_type=_first(fields[15], d).upper() if n > 15 else "",
        application_ack_type=_first(fields[16], d).upper() if n > 16 else "",
        sent=(_first(fields[7], d) if n > 7 else "").strip() or None,
        charset=charset,
    )


def _first(raw: str, d: Delimiters) -> str:
    """The first component of the first repetition of *raw*, as _leaf reads it."""
    return _leaf(raw.split(d.repetition, 1)[0].split(d.component, 1)[0], d) if raw else ""


def _components(raw: str, d: Delimiters) -> tuple[str, str, str]:
    """The first three components of the first repetition of *raw*, each as _leaf reads it."""
    parts = [_leaf(value, d) for value in raw.split(d.repetition, 1)[0].split(d.component)[:3]] if raw else []
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def _leaf(value: str, d: Delimiters) -> str:
    """A component's text, escapes undone; "" for none or an explicit null."""
    if not value or value == EXPLICIT_NULL:
        return ""
    return unescape(value, d) if d.escape and d.escape in value else value


__all__ = ["BatchShortfall", "DecodedMessage", "Delimiters", "RawMessage", "check_batch_counts", "check_header", "declared_charset", "decode", "msh_names", "read_header", "salvage_header", "split_messages"]
