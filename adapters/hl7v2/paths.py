"""Terser-style source paths for HL7 v2: `PID-3`, `PID-5.1`, `PID-3[2].4.1`, `NK1[*]-2`, `CX.4.1`.

A path is compiled once, when a mapping loads, into a `SourcePath` whose
`resolve` does only index arithmetic per message. Repetitions and segment
repeats are 1-based as in the standard; `[*]` means every one of them.
Datatype-relative paths (`CX.4.1`) read the value a datatype mapping was
given, so one CX mapping serves PID-3, PID-18 and PV1-19 alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from adapters.hl7v2._tokenizer import EXPLICIT_NULL, Hl7Message, Segment, unescape
from adapters.hl7v2.groups import GROUP_NAMES, Group, nearest
from adapters.hl7v2.structure import DATATYPE_NAMES, SEGMENT_NAMES

ALL = -1
"""`[*]`: every repetition or every segment."""

_MSG_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<srep>\*|\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\*|\d+)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$"
)
_REL_PATH = re.compile(r"^(?P<dt>[A-Z][A-Z0-9_]{1,9})(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?$")


class Scope:
    """Where paths resolve: the message, the segments being iterated, the current value.

    A plain slotted class: inner blocks make one per value they map. The
    current value's position is only needed for an error, so a scope made by
    `at` works it out when asked instead of formatting it up front.
    """

    __slots__ = ("_loc", "_origin", "group", "memo", "message", "reads", "segments", "value")

    def __init__(
        self,
        message: Hl7Message,
        segments: dict[str, Segment] | None = None,
        value: str | None = None,
        value_loc: str | None = "",
        reads: set[tuple[int, int]] | None = None,
        group: Group | None = None,
    ) -> None:
        self.message = message
        self.group = group  # the segment group being mapped (ORDER_OBSERVATION…), or the message's root group
        self.memo: dict[object, bool] | None = None  # condition answers in this scope (conditions.py)
        self.segments = {} if segments is None else segments  # current segment per name, inside `each`
        self.value = value  # current repetition's raw text, inside a datatype mapping
        self.reads = set() if reads is None else reads  # (segment index, field) pairs read
        self._loc = value_loc
        self._origin: tuple[SourcePath, Scope, int] | None = None

    @property
    def value_loc(self) -> str:
        """The current value's position, e.g. `PID-3[2]`."""
        loc = self._loc
        if loc is None:
            path, parent, index = self._origin  # type: ignore[misc]  # set whenever _loc is None
            loc = self._loc = path.resolve(parent)[index].location
        return loc

    def child(self, *, segments: dict[str, Segment] | None = None, value: str | None = None, value_loc: str = "", group: Group | None = None) -> Scope:
        """Return a scope for an inner block (a segment, a group or a value); reads stay shared."""
        if group is not None:
            return Scope(self.message, {}, None, "", self.reads, group)
        if segments:
            segs = dict(self.segments)
            segs.update(segments)
            return Scope(self.message, segs, self.value, self._loc, self.reads, self.group).located(self._origin)
        return Scope(self.message, self.segments, value, value_loc, self.reads, self.group)

    def at(self, value: str, path: SourcePath, index: int) -> Scope:
        """Return a scope for *value*, the index-th value *path* gives here; reads stay shared."""
        inner = Scope(self.message, self.segments, value, None, self.reads, self.group)
        inner._origin = (path, self, index)
        return inner

    def located(self, origin: tuple[SourcePath, Scope, int] | None) -> Scope:
        """Take the lazily found value position of another scope (see `at`)."""
        self._origin = origin
        return self


class Item:
    """One resolved value: raw text (or a segment), and its position for errors.

    A plain slotted class, not a frozen dataclass: one is made per value read,
    and a frozen dataclass's __init__ costs three times as much. A value read
    relative to a datatype's value formats its position only when asked.
    """

    __slots__ = ("_loc", "_scope", "_suffix", "raw", "segment")
    _scope: Scope  # these two are set by _relative() only, for a position formatted when asked
    _suffix: str

    def __init__(self, raw: str, location: str | None, segment: Segment | None = None) -> None:
        self.raw = raw
        self._loc = location
        self.segment = segment

    @property
    def location(self) -> str:
        """Where the value sits, e.g. `PID-3[1].4.1`."""
        loc = self._loc
        if loc is None:
            loc = self._loc = self._scope.value_loc + self._suffix
        return loc


def _relative(raw: str, scope: Scope, suffix: str) -> Item:
    item = Item(raw, None)
    item._scope = scope
    item._suffix = suffix
    return item


Reader = Callable[[Scope], "str | None"]
"""Gives what `resolve(scope)[0].raw` gives, or None, without making Items."""


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
    decode_whole: bool = False  # a whole repetition is read as text (escapes undone), not as a datatype's value
    keep_blank: bool = False  # an empty repetition is read as "" (a blank line of a text), not left out

    def decoded(self) -> SourcePath:
        """This path, reading whole repetitions as final text: `\\T\\` becomes `&`, `\\.br\\` a line break.

        A whole repetition normally stays escaped, because a datatype mapping
        splits it into components first; a function or a table that takes it as
        it is (`fn: lines, args: [OBX-5[*]]`) must get the text the sender meant.
        """
        return self if self.comp else replace(self, decode_whole=True)

    def with_blanks(self) -> SourcePath:
        """This path, reading an empty repetition (or an empty field) as "" instead of leaving it out.

        Why: the lines of a TX document are its OBX-5 values, one per OBX or repetition, and
        an empty one is a blank line, the paragraph break of a letter (`fn: lines_base64`).
        """
        return replace(self, keep_blank=True)

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
        segs = self._segments(scope)
        if self.field_no is None:
            return [Item("", s.label, s) for s in segs]
        locs: list[str] = []
        return [Item(raw, loc) for raw, loc in zip(self._collect(scope, segs, locs), locs)]

    def values(self, scope: Scope) -> list[str]:
        """Return the raw text of each Item `resolve` gives, in the same order."""
        if self.segment is None or self.field_no is None:
            return [item.raw for item in self.resolve(scope)]
        return self._collect(scope, self._segments(scope), None)

    def keyed(self, scope: Scope) -> list[tuple[str, tuple[int, int, int]]]:
        """Return each value `values` gives with its (segment index, field, repetition): what `same:` pairs by.

        Why: a resource made per repetition (a doctor per PV1-7 repetition) and an element made per
        repetition (the stay's participant) must pair by the repetition itself, which the values
        alone do not tell (two doctors may be sent alike; empty repetitions are left out).
        """
        if self.segment is None or self.field_no is None:
            return []
        keys: list[tuple[int, int, int]] = []
        raws = self._collect(scope, self._segments(scope), None, keys)
        return list(zip(raws, keys))

    def location(self, scope: Scope, index: int = 0) -> str | None:
        """Return the position of the index-th value, or None (worked out again: errors only)."""
        items = self.resolve(scope)
        return items[index].location if index < len(items) else None

    def _segments(self, scope: Scope) -> list[Segment]:
        current = scope.segments.get(self.segment) if self.seg_rep is None else None  # type: ignore[arg-type]
        if current is not None:
            return [current]
        segs = nearest(scope.group, self.segment) if scope.group is not None else None  # type: ignore[arg-type]
        if segs is None:
            segs = scope.message.all(self.segment)  # type: ignore[arg-type]
        if self.seg_rep is None:
            return segs[:1]
        if self.seg_rep != ALL:
            return segs[self.seg_rep - 1 : self.seg_rep]
        return segs

    def _collect(self, scope: Scope, segs: list[Segment], locs: list[str] | None, keys: list[tuple[int, int, int]] | None = None) -> list[str]:
        msg = scope.message
        field_no = self.field_no or 0
        comp, sub = self.comp, self.sub
        out: list[str] = []
        for seg in segs:
            scope.reads.add((seg.index, field_no))
            reps = msg.repetitions(seg, field_no)
            if self.keep_blank and not reps:
                reps = [""]  # an empty field is one blank line
            picks = range(len(reps)) if self.rep == ALL else (0 if self.rep is None else self.rep - 1,)
            for i in picks:
                if i >= len(reps) or (not reps[i] and not self.keep_blank):
                    continue
                value: str | None = reps[i]
                if comp:
                    value = msg.leaf(reps[i], comp, sub) if reps[i] else None
                    if value is None:
                        if not self.keep_blank:
                            continue
                        value = ""
                elif value == EXPLICIT_NULL:
                    if not self.keep_blank:
                        continue
                    value = ""
                elif self.decode_whole and msg.delims.escape and msg.delims.escape in value:  # type: ignore[operator]
                    value = unescape(value, msg.delims)  # type: ignore[arg-type]
                out.append(value)  # type: ignore[arg-type]  # narrowed above
                if locs is not None:
                    locs.append(f"{seg.label}-{field_no}[{i + 1}]{self._suffix()}")
                if keys is not None:
                    keys.append((seg.index, field_no, i + 1))
        return out

    def _suffix(self) -> str:
        if not self.comp:
            return ""
        return f".{self.comp}.{self.sub}" if self.sub else f".{self.comp}"

    def _resolve_relative(self, scope: Scope) -> list[Item]:
        raw = scope.value
        if not raw:
            return []
        if not self.comp:
            if raw == EXPLICIT_NULL:
                return []
            delims = scope.message.delims
            if self.decode_whole and delims.escape and delims.escape in raw:
                raw = unescape(raw, delims)
            return [_relative(raw, scope, "")]
        value = scope.message.leaf(raw, self.comp, self.sub)
        if value is None:
            return []
        return [_relative(value, scope, self._suffix())]

    def reader(self) -> Reader:
        """Return a function that reads the first value, specialised for this path's shape."""
        comp, sub = self.comp, self.sub
        if self.decode_whole:
            return self._first_item  # rare (function arguments): the general path undoes escapes
        if self.segment is None:
            if not comp:
                return lambda scope: raw if (raw := scope.value) and raw != EXPLICIT_NULL else None
            return lambda scope: scope.message.leaf(raw, comp, sub) if (raw := scope.value) else None
        if self.field_no is None or self.rep == ALL or (self.seg_rep is not None and self.seg_rep < 1):
            return self._first_item
        return _field_reader(self.segment, self.seg_rep, self.field_no, self.rep, comp, sub)

    def _first_item(self, scope: Scope) -> str | None:
        items = self.resolve(scope)
        return items[0].raw if items else None


def _field_reader(name: str, seg_rep: int | None, field_no: int, rep: int | None, comp: int, sub: int) -> Reader:
    """A reader for one repetition of one field of one segment: `PID-7`, `PV1-3.1`, `NK1[2]-2`."""
    k = 0 if seg_rep is None else seg_rep - 1
    r = 0 if rep is None else rep - 1

    def read(scope: Scope) -> str | None:
        seg = scope.segments.get(name) if seg_rep is None else None
        msg = scope.message
        if seg is None:
            segs = nearest(scope.group, name) if scope.group is not None else None
            if segs is None:
                segs = msg.all(name)
            if k >= len(segs):
                return None
            seg = segs[k]
        scope.reads.add((seg.index, field_no))
        reps = msg.repetitions(seg, field_no)
        if r >= len(reps) or not (raw := reps[r]):
            return None
        if comp:
            return msg.leaf(raw, comp, sub)
        return raw if raw != EXPLICIT_NULL else None

    return read


@dataclass(frozen=True, slots=True)
class GroupPath:
    """A path through segment groups: `ORDER_OBSERVATION[*]`, `ORDER_OBSERVATION.OBR-4`,
    `ORDER_OBSERVATION[*].OBSERVATION[*].OBX-5`.

    Each group step finds the named groups at the shallowest depth below the
    current group (so `ORDER_OBSERVATION` needs no `PATIENT_RESULT.` before it);
    the tail, if any, is an ordinary path read inside each group found.
    """

    text: str
    steps: tuple[tuple[str, int | None], ...]  # (group name, None: first | ALL | 1-based)
    tail: SourcePath | None

    segment = None
    datatype = None
    seg_rep = None
    is_segment = False

    @property
    def is_group(self) -> bool:
        """True when the path names groups themselves (to iterate), not a value in them."""
        return self.tail is None

    @property
    def field_no(self) -> int | None:
        """The tail's field, for rule checks."""
        return self.tail.field_no if self.tail else None

    @property
    def rep(self) -> int | None:
        """The tail's repetition, for rule checks."""
        return self.tail.rep if self.tail else None

    @property
    def comp(self) -> int:
        """The tail's component."""
        return self.tail.comp if self.tail else 0

    @property
    def sub(self) -> int:
        """The tail's subcomponent."""
        return self.tail.sub if self.tail else 0

    @property
    def is_leaf(self) -> bool:
        """True when the tail names a component."""
        return self.tail is not None and self.tail.is_leaf

    def groups(self, scope: Scope) -> list[Group]:
        """Return the groups the steps select, from the scope's group down."""
        level: list[Group] = [scope.group if scope.group is not None else scope.message.root()]  # type: ignore[list-item]
        for name, rep in self.steps:
            # A step without [n] is the first in each group the step before gave, not the first
            # overall: `ORDER[*].ORDER_DETAIL.X[*]` named only the first order's X.
            found: list[Group] = []
            for grp in level:
                hits = grp.find_groups(name)
                found += hits if rep == ALL else hits[:1] if rep is None else hits[rep - 1 : rep]
            level = found
        return level

    def resolve(self, scope: Scope) -> list[Item]:
        """Return the groups (as Items whose `group` is set) or the tail's values in each group."""
        out: list[Item] = []
        for g in self.groups(scope):
            if self.tail is None:
                out.append(_GroupItem(g))
            else:
                out.extend(self.tail.resolve(scope.child(group=g)))
        return out

    def values(self, scope: Scope) -> list[str]:
        """Return the raw text of each value."""
        return [item.raw for item in self.resolve(scope)]

    def location(self, scope: Scope, index: int = 0) -> str | None:
        """Return the position of the index-th value, or None."""
        items = self.resolve(scope)
        return items[index].location if index < len(items) else None

    def reader(self) -> Reader:
        """Return a function that reads the first value."""

        def read(scope: Scope) -> str | None:
            items = self.resolve(scope)
            return items[0].raw if items else None

        return read

    def decoded(self) -> GroupPath:
        """This path with its tail reading whole repetitions as final text (see SourcePath.decoded)."""
        return self if self.tail is None else GroupPath(self.text, self.steps, self.tail.decoded())

    def starred(self) -> GroupPath:
        """Return this path with its last group step iterating every group (`each:`)."""
        steps = self.steps[:-1] + ((self.steps[-1][0], ALL if self.steps[-1][1] is None else self.steps[-1][1]),)
        return GroupPath(self.text, steps, self.tail)


class _GroupItem(Item):
    """An Item naming a whole group occurrence (for `each:` over groups)."""

    __slots__ = ("group",)

    def __init__(self, group: Group) -> None:
        super().__init__("", group.name)
        self.group = group


_GROUP_STEP = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]{3,})(?:\[(?P<rep>\*|\d+)\])?$")


def _compile_group_path(t: str) -> GroupPath | None:
    parts = t.split(".")
    steps: list[tuple[str, int | None]] = []
    i = 0
    while i < len(parts):
        m = _GROUP_STEP.match(parts[i])
        if not m or m["name"] in DATATYPE_NAMES or m["name"] not in GROUP_NAMES:
            break
        steps.append((m["name"], _rep(m["rep"])))
        i += 1
    if not steps:
        return None
    tail = ".".join(parts[i:])
    if not tail:
        return GroupPath(t, tuple(steps), None)
    return GroupPath(t, tuple(steps), compile_path(tail))


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
    if "_" in t.split(".")[0] or (len(t.split(".")[0].split("[")[0]) > 3 and t.split(".")[0].split("[")[0] in GROUP_NAMES):
        grouped = _compile_group_path(t)
        if grouped is not None:
            return grouped  # type: ignore[return-value]  # same protocol as SourcePath
    m = _MSG_PATH.match(t)
    if m and not (m["field"] is None and m["srep"] is None and t in DATATYPE_NAMES and t not in SEGMENT_NAMES):
        field_no = int(m["field"]) if m["field"] else None
        if field_no == 0 or (m["rep"] and m["rep"] != "*" and int(m["rep"]) == 0):
            raise PathSyntaxError(f"{text!r}: fields and repetitions count from 1")
        return SourcePath(t, m["seg"], None, _rep(m["srep"]), field_no, _rep(m["rep"]), int(m["comp"] or 0), int(m["sub"] or 0))
    m = _REL_PATH.match(t)
    if m:
        return SourcePath(t, None, m["dt"], None, None, None, int(m["comp"] or 0), int(m["sub"] or 0))
    raise PathSyntaxError(f"{text!r} is not an HL7 path (expected e.g. PID-3, PID-3[2].4.1, NK1[*]-2, CX.4.1 or ORDER_OBSERVATION[*].OBX-5)")


__all__ = ["ALL", "GroupPath", "Item", "PathSyntaxError", "Reader", "Scope", "SourcePath", "compile_path"]
