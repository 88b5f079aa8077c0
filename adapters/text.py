"""A message's bytes as text for a person to read (`helsebro dlq show --body`), in the charset the message says,
and a sender's text made safe to print on an operator's terminal (`visible`).

Why: a dead letter is kept as the bytes that came in. Norwegian legacy systems send
ISO-8859-1, and a KITH document may declare its own encoding; read as UTF-8, their
æøå become replacement characters, and an operator cannot tell a name from noise.
This is for showing only: the engine decodes with its own rules (adapters/hl7v2/decode.py,
adapters/kith), which refuse what they cannot trust.
"""

from __future__ import annotations

import codecs
import re

from adapters.hl7v2.decode import hl7_charset

__all__ = ["readable", "visible"]

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: ESC, BEL, CSI (0x9b)
_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # a body keeps its tabs and line breaks
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def readable(data: bytes) -> tuple[str, str]:
    """Return (text, charset): UTF-8 when the bytes are valid UTF-8; else the charset an HL7 v2 MSH-18 or an
    XML declaration names; else ISO-8859-1, which reads any byte (what legacy senders mean by saying nothing)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    named = _named_charset(data)
    if named is not None:
        try:
            return data.decode(named), named
        except UnicodeDecodeError:
            pass  # it says one thing and holds another: show every byte as ISO-8859-1 reads it
    return data.decode("iso-8859-1"), "iso-8859-1"


def _named_charset(data: bytes) -> str | None:
    """The Python codec the message's own header names, or None."""
    found = _XML_ENCODING.match(data)
    if found is not None:
        name = found.group(1).decode("ascii")
    else:
        name = hl7_charset(data) or ""
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def visible(text: str, *, lines: bool = False) -> str:
    """Return *text* with its control characters written as escapes (`\\x1b`); *lines* keeps tabs and line breaks.

    What a sender sent (a control id, a header, a body) reaches an operator's text views
    (`helsebro dlq`, `helsebro find`): an ESC printed raw clears the screen (`ESC [2J`) or
    retitles the terminal (`ESC ]`). Their --json output escapes such characters by itself.
    """
    return (_CONTROLS_BUT_LINES if lines else _CONTROLS).sub(lambda m: f"\\x{ord(m.group()):02x}", text)
