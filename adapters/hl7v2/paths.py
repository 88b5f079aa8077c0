"""Terser-style source paths for HL7 v2: `PID-3`, `PID-5.1`, `PID-3[2].4.1`, `NK1[*]-2`, `CX.4.1`.

A path is compiled once, when a mapping loads, into a `SourcePath` whose
`resolve` does only index arithmetic per message. Repetitions and segment
repeats are 1-based as in the standard; `[*]` means every one of them.
Datatype-relative paths (`CX.4.1`) read the value a datatype mapping was
given, so one CX mapping serves PID-3, PID-18 and PV1-19 alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2._tokenizer import Hl7Message, Segment
from adapters.hl7v2.structure import DATATYPE_NAMES, SEGMENT_NAMES

ALL = -1
"""`[*]`: every repetition or every segment."""

_MSG_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<srep>\*|\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\*|\d+)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$"
)
_REL_PATH = re.compile(r"^(?P<dt>[A-Z][A-Z0-9_]{1,9})(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?$")


@dataclass(slots=True)
class Scope:
    """Where paths resolve: the message, the segments being iterated, the current value."""

    message: Hl7Message
    segments: dict[str, Segment] = field(default_factory=dict)  # current segment per name, inside `each`
    value: str | None = None  # current repetition's raw text, inside a datatype mapping
    value_loc: str = ""
    reads: set[tuple[int, int]] = field(default_factory=set)  # (segment index, field) pairs read

    def child(self, *, segments: dict[str, Segment] | None = None, value: str | None = None, value_loc: str = "") -> Scope:
        """Return a scope for an inner block (a segment or a value); reads stay shared."""
        if segments:
            segs = dict(self.segments)
            segs.update(segments)
            return Scope(self.message, segs, self.value, self.value_loc, self.reads)
        return Scope(self.message, self.segments, value, value_loc, self.reads)


class Item:
    """One resolved value: raw text (or a segment), and its position for errors.

    A plain slotted class, not a frozen dataclass: one is made per value read,
    and a frozen dataclass's __init__ costs three times as much.
    """

    __slots__ = ("raw", "location", "segment")

    def __init__(self, raw: str, location: str, segment: Segment | None = None) -> None:
        self.raw = raw
        self.location = location
        self.segment = segment


class PathSyntaxError(ValueError):
    """A path does not follow the terser grammar."""


@dataclass(frozen=True, slots=True)
class SourcePath:
    """A compiled path. `text` is what the author wrote."""

    text: str
    segment: str | None  # None for a datatype-relative path
    datatype: str | None
    seg_rep: int | None  # None: current or first; ALL; or 1-based
    field_no: int | None
    rep: int | None  # None: first; ALL; or 1-based
    comp: int
    sub: int

    @property
    def is_segment(self) -> bool:
        """True for a bare segment path such as `NK1`, which iterates segments."""
        return self.segment is not None and self.field_no is None

    @property
    def is_leaf(self) -> bool:
        """True when the path names a component or subcomponent, not a whole value."""
        return self.comp > 0

    def resolve(self, scope: Scope) -> list[Item]:
        """Return every value the path names in *scope* (empty values left out)."""
        if self.segment is None:
            return self._resolve_relative(scope)
        msg = scope.message
        current = scope.segments.get(self.segment)
        if current is not None and self.seg_rep is None:
            segs = [current]
        else:
            segs = msg.all(self.segment)
            if self.seg_rep is None:
                segs = segs[:1]
            elif self.seg_rep != ALL:
                segs = segs[self.seg_rep - 1 : self.seg_rep]
        if self.field_no is None:
            return [Item("", self._seg_loc(msg, s), s) for s in segs]
        out: list[Item] = []
        for seg in segs:
            scope.reads.add((seg.index, self.field_no))
            reps = msg.repetitions(seg, self.field_no)
            picks = range(len(reps)) if self.rep == ALL else [0 if self.rep is None else self.rep - 1]
            for i in picks:
                if i >= len(reps) or not reps[i]:
                    continue
                loc = f"{self._seg_loc(msg, seg)}-{self.field_no}[{i + 1}]"
                self._leaf_into(out, msg, reps[i], loc)
        return out

    def _resolve_relative(self, scope: Scope) -> list[Item]:
        raw = scope.value
        if not raw:
            return []
        if not self.comp:
            return [Item(raw, scope.value_loc)] if raw != '""' else []
        value = scope.message.leaf(raw, self.comp, self.sub)
        if value is None:
            return []
        return [Item(value, f"{scope.value_loc}.{self.comp}.{self.sub}" if self.sub else f"{scope.value_loc}.{self.comp}")]

    def _leaf_into(self, out: list[Item], msg: Hl7Message, raw: str, loc: str) -> None:
        if not self.comp:
            if raw and raw != '""':
                out.append(Item(raw, loc))
            return
        value = msg.leaf(raw, self.comp, self.sub)
        if value is not None:
            suffix = f".{self.comp}" + (f".{self.sub}" if self.sub else "")
            out.append(Item(value, loc + suffix))

    def _seg_loc(self, msg: Hl7Message, seg: Segment) -> str:
        same = msg.all(seg.name)
        return seg.name if len(same) == 1 else f"{seg.name}[{same.index(seg) + 1}]"


def _rep(text: str | None) -> int | None:
    if text is None:
        return None
    return ALL if text == "*" else int(text)


def compile_path(text: str) -> SourcePath:
    """Compile a terser path.

    Raises:
        PathSyntaxError: the text is not a valid path.
    """
    t = text.strip()
    m = _MSG_PATH.match(t)
    if m and not (m["field"] is None and m["srep"] is None and t in DATATYPE_NAMES and t not in SEGMENT_NAMES):
        field_no = int(m["field"]) if m["field"] else None
        if field_no == 0 or (m["rep"] and m["rep"] != "*" and int(m["rep"]) == 0):
            raise PathSyntaxError(f"{text!r}: fields and repetitions count from 1")
        return SourcePath(t, m["seg"], None, _rep(m["srep"]), field_no, _rep(m["rep"]), int(m["comp"] or 0), int(m["sub"] or 0))
    m = _REL_PATH.match(t)
    if m:
        return SourcePath(t, None, m["dt"], None, None, None, int(m["comp"] or 0), int(m["sub"] or 0))
    raise PathSyntaxError(f"{text!r} is not an HL7 path (expected e.g. PID-3, PID-3[2].4.1, NK1[*]-2 or CX.4.1)")


__all__ = ["ALL", "Item", "PathSyntaxError", "Scope", "SourcePath", "compile_path"]
