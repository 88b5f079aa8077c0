"""Split HL7 v2 text into segments and fields, and read values by position.

A split-based tokenizer: fields are kept as raw strings and split into
repetitions, components and subcomponents only when a rule reads them, and
escape sequences are undone only at the leaf. This is the hot path (about
0.04 ms per ADT message, against 20 ms for hl7apy's parser).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

EXPLICIT_NULL = '""'
"""HL7's explicit null: the sender says "delete this value" (v2.5 §2.5.3)."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The five (v2.7: six) characters that structure a message, from MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""
    charset: str = ""  # the Python codec a `\\Xhh\\` escape's bytes are read in; "" for UTF-8
    declared: bool = False  # MSH-18 named that charset: bytes it cannot read are no text (else ISO-8859-1 reads them)

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it is written in the message."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


_FORMAT_ESCAPES = {".br": "\n", ".sp": "\n", ".in": "", ".ti": "", ".fi": "", ".nf": "", ".ce": "", ".sk": " ", "H": "", "N": ""}
"""Formatting: line breaks become LF; the rest, highlighting (`\\H\\` … `\\N\\`, v2.5 §2.7.6) included, is markup, not text."""
_HEX = re.compile(r"^X([0-9A-Fa-f]{2})+$")


def unescape(value: str, d: Delimiters) -> str:
    """Undo HL7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ and formatting).

    Unknown sequences are kept as written, so nothing a sender meant is lost.
    """
    esc = d.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        end = value.find(esc, i + 1) if ch == esc else -1
        if end == -1:
            out.append(ch)
            i += 1
            continue
        out.append(_expand(value[i + 1 : end], d, esc))
        i = end + 1
    return "".join(out)


def _expand(seq: str, d: Delimiters, esc: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape, "P": d.truncation}
    if seq in simple:
        return simple[seq]
    if seq in _FORMAT_ESCAPES:
        return _FORMAT_ESCAPES[seq]
    if _HEX.match(seq):
        text = _hex(bytes.fromhex(seq[1:]), d)
        return esc + seq + esc if text is None else text
    if seq.startswith((".sp", ".in", ".ti")):
        return "\n" if seq.startswith(".sp") else ""
    return esc + seq + esc


def _hex(raw: bytes, d: Delimiters) -> str | None:
    """The text of a hex escape's bytes in the message's charset; None when MSH-18 declared one that cannot read them.

    Why the charset: `\\XC3A6\\` in an ISO-8859-1 message is "Ã¦", not UTF-8's "æ" (review H192). Undeclared,
    bytes the sender's charset (UTF-8 by default) refuses are ISO-8859-1 (`\\XE5F8\\`, "åø" from a Norwegian
    legacy sender), as decode() reads an undeclared message's bytes: never U+FFFD for a letter that was sent.
    Declared, decode() refuses such an escape at its field (docs/hl7v2-coverage.md, Hex escapes); read
    otherwise, it is kept as written. A NUL is no character of any text, and PostgreSQL's text refuses it:
    it stands as U+FFFD.
    """
    try:
        text = raw.decode(d.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        if d.declared:
            return None
        text = raw.decode("latin-1")
    return text.replace("\x00", "\ufffd")


def hex_escapes_fit(value: str, d: Delimiters) -> bool:
    """Tell whether every `\\Xhh\\` in *value* (a whole field) holds bytes its message's charset reads, leaf by leaf as unescape sees them."""
    esc = d.escape
    for rep in value.split(d.repetition):
        for comp in rep.split(d.component):
            for leaf in comp.split(d.subcomponent) if d.subcomponent else (comp,):
                i = leaf.find(esc)
                while i != -1:
                    end = leaf.find(esc, i + 1)
                    if end == -1:
                        break
                    seq = leaf[i + 1 : end]
                    if _HEX.match(seq) and _hex(bytes.fromhex(seq[1:]), d) is None:
                        return False
                    i = leaf.find(esc, end + 1)
    return True


class Segment:
    """One segment: its name and its raw fields, indexed as HL7 numbers them."""

    __slots__ = ("fields", "index", "label", "name")

    def __init__(self, name: str, fields: list[str], index: int) -> None:
        self.name = name
        self.fields = fields  # fields[n] is SEG-n; fields[0] is the name
        self.index = index  # position of the segment in the message, 0-based
        self.label = name  # how positions name it: `NK1[2]` once the message has several

    def field(self, n: int) -> str:
        """Return SEG-n as raw text ("" when absent)."""
        f = self.fields
        return f[n] if n < len(f) else ""


class Hl7Message:
    """A tokenized message: segments in order, plus its delimiters."""

    __slots__ = ("_comp", "_comps", "_esc", "_root", "_sub", "by_name", "delims", "segments", "structure")

    def __init__(self, segments: list[Segment], delims: Delimiters, by_name: dict[str, list[Segment]] | None = None) -> None:
        self.segments = segments
        self.delims = delims
        if by_name is None:  # tokenize hands its index over; anyone else gets one built here
            by_name = {}
            for seg in segments:
                same = by_name.get(seg.name)
                if same is None:
                    by_name[seg.name] = [seg]
                else:
                    same.append(seg)
        if len(by_name) < len(segments):  # some name repeats: label each repeat by its place
            for same in by_name.values():
                if len(same) > 1:
                    for k, seg in enumerate(same, 1):
                        seg.label = f"{seg.name}[{k}]"
        self.by_name = by_name  # segment name → its segments in order (read-only: `all` is the same)
        # A datatype mapping reads several components of one value: split it once.
        self._comps: dict[str, list[str]] = {}
        self._comp = delims.component
        self._sub = delims.subcomponent
        self._esc = delims.escape
        self.structure = ""  # set once the mapping is chosen; groups are built from it on demand
        self._root: object | None = None

    def root(self) -> object:
        """Return the message's segment-group tree, built on first use (only group paths need it)."""
        if self._root is None:
            from adapters.hl7v2.groups import build  # groups imports this module

            self._root = build(self, self.structure)
        return self._root

    def all(self, name: str) -> list[Segment]:
        """Return every segment called *name*, in message order."""
        return self.by_name.get(name, [])

    def first(self, name: str) -> Segment | None:
        """Return the first segment called *name*, or None."""
        segs = self.by_name.get(name)
        return segs[0] if segs else None

    def repetitions(self, seg: Segment, n: int) -> list[str]:
        """Return the raw repetitions of SEG-n (MSH-1 and MSH-2 never repeat)."""
        raw = seg.field(n)
        if not raw:
            return []
        if seg.name == "MSH" and n <= 2:
            return [raw]
        return raw.split(self.delims.repetition)

    def leaf(self, raw: str, component: int, subcomponent: int) -> str | None:
        """Return one component (1-based; 0 = whole) and subcomponent of a repetition, unescaped.

        An empty value and the explicit null `""` both read as None: in a FHIR
        update the element is then absent, which is what "delete" means there.
        """
        value = raw
        if component:
            parts = self._comps.get(raw)
            if parts is None:
                parts = self._comps[raw] = raw.split(self._comp)
            value = parts[component - 1] if component <= len(parts) else ""
            if subcomponent:
                subs = value.split(self._sub)
                value = subs[subcomponent - 1] if subcomponent <= len(subs) else ""
        if not value or value == EXPLICIT_NULL:
            return None
        if self._esc and self._esc in value:
            return unescape(value, self.delims)
        return value


class TokenizeError(ValueError):
    """A message that cannot be tokenized, with where it went wrong (`MSH-2`, `segment 5`) for the sender."""

    def __init__(self, reason: str, location: str | None) -> None:
        super().__init__(reason)
        self.location = location


def delimiters_from_msh(line: str) -> Delimiters:
    """Read MSH-1 and MSH-2 from the first line of a message.

    Raises:
        TokenizeError: the line is too short to carry the delimiters, or they are not distinct.
    """
    if len(line) < 8 or line[:3].upper() != "MSH":
        raise TokenizeError("message does not start with an MSH segment", "MSH")
    fs = line[3]
    end = line.find(fs, 4)
    enc = line[4:end] if end != -1 else line[4:]
    if len(enc) == 5 and enc[2] == enc[3] == "\\":
        # `^~\\&`: a doubled backslash from a tool that escaped it when writing the file.
        enc = enc[:3] + enc[4:]
    if len(enc) < 4 or fs in enc or len(set(enc + fs)) != len(enc) + 1:
        raise TokenizeError("MSH-2 must hold four distinct encoding characters", "MSH-2")
    return Delimiters(fs, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) > 4 else "")


_SEGMENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2}$")
_KNOWN_NAMES: dict[str, str] = {}  # raw segment id → its upper-case name, once it has matched


def tokenize(text: str, *, charset: str = "", declared: bool = False) -> Hl7Message:
    """Tokenize one message whose segments are separated by CR; its hex escapes read in *charset* (a Python codec).

    Raises:
        TokenizeError: with a reason and where (handled by decode).
    """
    lines = [ln for ln in text.split("\r") if ln.strip()]
    if not lines:
        raise TokenizeError("empty message", "MSH")
    head = lines[0][:9]  # MSH, MSH-1 and MSH-2 (4 to 5 characters, or 6 when a backslash is doubled)
    d = _DELIMITERS.get(head) or _delimiters(lines[0], head)
    if charset:
        d = _WITH_CHARSET.get((d, charset, declared)) or _with_charset(d, charset, declared)
    fs = d.field
    segments: list[Segment] = []
    by_name: dict[str, list[Segment]] = {}
    for i, line in enumerate(lines):
        parts = line.split(fs)
        name = _KNOWN_NAMES.get(parts[0]) or _segment_name(parts[0], i)
        if name == "MSH":
            parts = ["MSH", fs, *parts[1:]]
        parts[0] = name
        seg = Segment(name, parts, i)
        segments.append(seg)
        same = by_name.get(name)
        if same is None:
            by_name[name] = [seg]
        else:
            same.append(seg)
    return Hl7Message(segments, d, by_name)


_DELIMITERS: dict[str, Delimiters] = {}  # by the first nine characters of MSH, once they parsed
_WITH_CHARSET: dict[tuple[Delimiters, str, bool], Delimiters] = {}  # the same, with a charset: one object per kind, not per message


def _with_charset(d: Delimiters, charset: str, declared: bool) -> Delimiters:
    got = replace(d, charset=charset, declared=declared)
    if len(_WITH_CHARSET) < 256:
        _WITH_CHARSET[(d, charset, declared)] = got
    return got


def _delimiters(line: str, head: str) -> Delimiters:
    d = delimiters_from_msh(line)
    # Cache only when those characters hold all of MSH-2 and the field separator after it.
    if len(head) == 9 and head[3] in head[5:] and len(_DELIMITERS) < 64:
        end = head.find(head[3], 4)
        if delimiters_from_msh(head[: end + 1] + "xxxxx") == d:
            _DELIMITERS[head] = d
    return d


def _segment_name(raw: str, i: int) -> str:
    name = raw.strip()
    if not _SEGMENT_NAME.match(name):
        raise TokenizeError(f"segment {i + 1} has no valid segment name", f"segment {i + 1}")
    # Some senders write segment ids in lower case: normalise rather than drop.
    if len(_KNOWN_NAMES) < 4096:  # bounded: ids are few, but a sender may invent many
        _KNOWN_NAMES[raw] = name.upper()
    return name.upper()
