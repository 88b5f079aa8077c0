"""Group-aware structure: place each segment in its segment group (ORDER_OBSERVATION, OBSERVATION…).

A result is never attached to the wrong order because results are read inside
their own group, not by counting segments. The structure definitions are the
standard's, from hl7apy (v2.5.1, whose structures are a superset of the older
ones for the messages Helsebro maps, so one set of group names serves every
sender). Group names drop hl7apy's message prefix: `ORU_R01_ORDER_OBSERVATION`
is `ORDER_OBSERVATION`.

Two groups later versions added are merged into these definitions (`_ADDED`), as
v2.5.1 has no place for them: v2.7's PATIENT_OBSERVATION (an OBX about the patient
right after PID, in ORU^R01's and OUL's PATIENT) and v2.8's ORDER_DOCUMENT (an OBX
holding a document and its TXA, right after the ORC; without it, an ORC whose OBR
follows its document was read as an order without an OBR). Only those groups are
merged, not the later structures whole, so every other group name and every mapping
stays as it was.

Matching is a greedy recursive descent, like HAPI's: each child of a group is
taken as often as its cardinality allows while the next segment can start it. One
exception: a segment that anchors the next repetition of an enclosing group (ORC
for OML's ORDER) does not open a nested group through an optional member (the ORC
of a PRIOR_RESULT), where greedy HAPI-style matching would swallow every later order.
A group entered through an optional leading member (ORU's ORDER_OBSERVATION through
its ORC) ends where its first required member is missing: an OBX after an ORC with
no OBR belongs to no order, and is refused as out of place.

A segment that fits nowhere (a Z-segment, or one out of place) is kept in the
innermost open group, right after the segment before it, so nothing is ever dropped
and the unmapped report sees it; the segments after it are placed as if it had not
been sent, not matched again from the top of the structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from hl7apy import v2_5_1

from adapters.hl7v2._tokenizer import Hl7Message, Segment

# Over 400 lines: the v2.5.1 definitions, the later groups merged into them and the matcher share one
# private definition type (_Def) and its derived sets; apart, each would reach into the other's internals.


@dataclass(frozen=True, slots=True)
class _Def:
    """One child of a structure: a segment or a group, with its cardinality."""

    name: str
    is_group: bool
    min: int
    max: int  # -1: unbounded
    children: tuple[_Def, ...] = ()
    starts: frozenset[str] = frozenset()  # segment names that can start it (through optional leading children)
    allowed: frozenset[str] = frozenset()  # for a group: the segments its definition holds directly (and any it answers for: _PATIENT_OBSERVATION)
    anchor: frozenset[str] = frozenset()  # for a group: what starts its first required child (ORDER_PRIOR: OBR, not its optional ORC)
    first_required: int = -1  # for a group: the index of its first required child (-1: none)
    after: str | None = None  # taken only right after this segment (ORDER_DOCUMENT: v2.8 holds it in COMMON_ORDER, after ORC)
    whole: bool = False  # taken only when every required member follows (ORDER_DOCUMENT: its OBX only with its TXA)


@dataclass(slots=True)
class Group:
    """One occurrence of a segment group, with its segments and subgroups in order."""

    name: str
    items: list[Union[Segment, Group]] = field(default_factory=list)
    parent: Group | None = field(default=None, repr=False, compare=False)
    allowed: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # segments the standard puts directly here
    _direct: dict[str, list[Segment]] | None = field(default=None, repr=False, compare=False)  # built on first lookup
    _near: dict[str, list[Segment]] | None = field(default=None, repr=False, compare=False)  # near_map(): nearest()'s answers here
    misplaced: list[Segment] = field(default_factory=list, repr=False, compare=False)  # root only: standard segments where the structure has no place for them

    def groups(self, name: str) -> list[Group]:
        """Return the direct child groups called *name*."""
        return [g for g in self.items if isinstance(g, Group) and g.name == name]

    def find_groups(self, name: str) -> list[Group]:
        """Return the groups called *name* at the shallowest depth where any occur."""
        level: list[Group] = [self]
        while level:
            hits = [g for grp in level for g in grp.groups(name)]
            if hits:
                return hits
            level = [g for grp in level for g in grp.items if isinstance(g, Group)]
        return []

    def direct(self) -> dict[str, list[Segment]]:
        """Return this group's own segments by name (not its subgroups'), indexed once: every rule of a group asks."""
        direct = self._direct
        if direct is None:
            direct = {}
            for item in self.items:
                if not isinstance(item, Group):
                    same = direct.get(item.name)
                    if same is None:
                        direct[item.name] = [item]
                    else:
                        same.append(item)
            self._direct = direct
        return direct

    def segments(self, name: str, *, deep: bool = False) -> list[Segment]:
        """Return the segments called *name* in this group (and, with *deep*, its subgroups)."""
        if not deep:
            return self.direct().get(name, [])
        out: list[Segment] = []
        for item in self.items:
            if isinstance(item, Group):
                if deep:
                    out.extend(item.segments(name, deep=True))
            elif item.name == name:
                out.append(item)
        return out


def _convert(defn: Any, prefix: str) -> tuple[_Def, ...]:
    """Convert hl7apy's definition, working out each child's start set and direct segments once.

    Matching asks both for every segment it places; as fields they cost an
    attribute read, where working them out (or hashing the nested definition
    to find them in a cache) cost a walk of the children each time.
    """
    out = []
    for name, sub, (lo, hi), kind in defn[1]:
        if kind == "GRP":
            out.append(_group(name[len(prefix):] if name.startswith(prefix) else name, lo, hi, _convert(sub, prefix)))
        else:
            out.append(_segment(name, lo, hi))
    return tuple(out)


def _segment(name: str, lo: int, hi: int) -> _Def:
    """A segment definition: it starts itself."""
    return _Def(name, False, lo, hi, (), frozenset({name}))


def _group(name: str, lo: int, hi: int, children: tuple[_Def, ...], also: frozenset[str] = frozenset(), *, after: str | None = None, whole: bool = False) -> _Def:
    """A group definition, with what can start it, what it holds directly (and *also* answers for) and its anchor.

    A child that needs a segment before it (*after*) never starts its parent.
    """
    starts: set[str] = set()
    for child in children:
        if child.after is None:
            starts |= child.starts
        if child.min > 0:
            break
    allowed = frozenset(c.name for c in children if not c.is_group) | also
    at = next((k for k, c in enumerate(children) if c.min > 0), -1)
    required = children[at] if at >= 0 else None
    anchor = (required.anchor if required.is_group else required.starts) if required is not None else frozenset(starts)
    return _Def(name, True, lo, hi, children, frozenset(starts), allowed, anchor, at, after, whole)


_PATIENT_OBSERVATION = _group(
    "PATIENT_OBSERVATION", 0, -1, (_segment("OBX", 1, 1), _segment("NTE", 0, -1)),
    # OBR too, though it holds none: a patient's own observation belongs to no order, and must not
    # read the first order's OBR (its number, test and time) as its identity, code or time.
    also=frozenset({"OBR"}),
)
"""v2.7's PATIENT_OBSERVATION: an OBX about the patient. v2.7 gives it PRT, not NTE: the NTEs
are Helsebro's, read as that observation's notes (as everywhere else an NTE follows its OBX)
rather than refused. PRT stays out: v2.5.1 knows no PRT, and naming it here would move the PRTs
of every other ORU and OUL."""

_ORDER_DOCUMENT = _group("ORDER_DOCUMENT", 0, 1, (_segment("OBX", 1, 1), _segment("TXA", 1, 1)), after="ORC", whole=True)
"""v2.8's ORDER_DOCUMENT (an OBX holding a document about the order, its TXA header), in COMMON_ORDER
after the ORC; here right after the ORC, as a COMMON_ORDER would move the ORC every mapping reads. Only
with its TXA: an OBX an older sender puts after its ORC stays what it was. The v2-to-FHIR IG maps none
of it for R4 ("will be addressed with FHIR R5"): no rule reads it, the unmapped report lists it."""

_ADDED: dict[str, tuple[tuple[tuple[str, ...], str | None, _Def], ...]] = {
    # structure: (path of the group that holds it, the child it goes before (None: at its end), the group)...,
    # where v2.7 and v2.8 put them
    "ORU_R01": (
        (("PATIENT_RESULT", "PATIENT"), "VISIT", _PATIENT_OBSERVATION),
        (("PATIENT_RESULT", "ORDER_OBSERVATION"), "OBR", _ORDER_DOCUMENT),
    ),
    "OUL_R22": (
        (("PATIENT",), None, _PATIENT_OBSERVATION),
        (("SPECIMEN", "ORDER"), "NTE", _ORDER_DOCUMENT),
    ),
    "OUL_R23": (
        (("PIDPD1NTE_SUPPGRP",), None, _PATIENT_OBSERVATION),  # v2.8's PATIENT, under its v2.5.1 name
        (("SPMOBXSACINVOBRORCNTETQ1TQ2OBXTCDSIDNTECTI_SUPPGRP", "CONTAINER", "ORDER"), "NTE", _ORDER_DOCUMENT),
    ),
    "OUL_R24": (
        (("PIDPD1NTE_SUPPGRP",), None, _PATIENT_OBSERVATION),
        (("ORDER",), "NTE", _ORDER_DOCUMENT),
    ),
}
"""Groups later versions added to structures Helsebro maps, merged into the v2.5.1 definitions."""


def _merge(defs: tuple[_Def, ...], path: tuple[str, ...], before: str | None, added: _Def) -> tuple[_Def, ...]:
    """Return *defs* with *added* put into the group at *path*, before its child *before*.

    The groups on the way are rebuilt, so their start sets and anchors take it in.
    """
    out = []
    for d in defs:
        if d.is_group and d.name == path[0]:
            if len(path) > 1:
                children = _merge(d.children, path[1:], before, added)
            else:
                at = next((k for k, c in enumerate(d.children) if c.name == before), len(d.children))
                children = d.children[:at] + (added,) + d.children[at:]
            also = d.allowed - {c.name for c in children if not c.is_group}
            d = _group(d.name, d.min, d.max, children, also, after=d.after, whole=d.whole)
        out.append(d)
    return tuple(out)


def _all_group_names() -> frozenset[str]:
    names: set[str] = set()
    for msg in v2_5_1.MESSAGES:
        stack = list(structure(msg) or ())
        while stack:
            d = stack.pop()
            if d.is_group:
                names.add(d.name)
                stack.extend(d.children)
    return frozenset(names)


@lru_cache(maxsize=None)
def structure(name: str) -> tuple[_Def, ...] | None:
    """Return the v2.5.1 structure *name* (e.g. `ORU_R01`) with its `_ADDED` group, or None if the standard has none."""
    defn = v2_5_1.MESSAGES.get(name)
    if not defn:
        return None
    defs = _convert(defn, name + "_")
    for added in _ADDED.get(name, ()):
        defs = _merge(defs, *added)
    return defs


def _match(defs: tuple[_Def, ...], segs: list[Segment], i: int, into: Group, stops: frozenset[str] = frozenset(), required: int = -1) -> int:
    """Place segments from *i* on into *into*'s children; return where it stopped.

    *stops* are the segments that anchor the next repetition of an enclosing repeating
    group (its first required segment). Such a segment does not open a group it would
    enter only through an optional leading member: in OML^O21 a second ORC is the next ORDER, not the optional ORC of a
    PRIOR_RESULT inside the first order (greedy, it swallowed every later order).

    *required* is the index of *into*'s first required child: when it is missing (the group was
    entered through an optional member before it), the group ends there. OBR is required in ORU's
    ORDER_OBSERVATION: an OBX after an ORC with no OBR is a result of no order, not of that ORC.
    """
    n = len(segs)
    for k, d in enumerate(defs):
        count = 0
        starts = d.starts
        while i < n and (d.max == -1 or count < d.max) and segs[i].name in starts:
            if d.is_group:
                name = segs[i].name
                if name in stops and name not in d.anchor:
                    break
                if (d.after is not None and not _follows(into, d.after)) or (d.whole and not _complete(d.children, segs, i)):
                    break
                sub = Group(d.name, parent=into, allowed=d.allowed)
                j = _match(d.children, segs, i, sub, stops | d.anchor if d.max != 1 else stops, d.first_required)
                if j == i:
                    break
                into.items.append(sub)
                i = j
            else:
                into.items.append(segs[i])
                i += 1
            count += 1
        if k == required and count == 0:
            break
    return i


def _follows(into: Group, name: str) -> bool:
    """Whether the last thing placed in *into* is a segment called *name*."""
    return bool(into.items) and not isinstance(into.items[-1], Group) and into.items[-1].name == name


def _complete(children: tuple[_Def, ...], segs: list[Segment], i: int) -> bool:
    """Whether the segments from *i* on hold every required member of a group of segments (*children*)."""
    n = len(segs)
    for c in children:
        count = 0
        while i < n and segs[i].name == c.name and (c.max == -1 or count < c.max):
            i += 1
            count += 1
        if count < c.min:
            return False
    return True


_MAX_REMATCHES = 32
"""Misplaced segments after which `build` stops matching the rest again (each match reads the whole message)."""


def build(message: Hl7Message, structure_name: str) -> Group:
    """Arrange *message*'s segments into the groups of *structure_name*.

    Unknown structures give a flat root group holding every segment.
    """
    defs = structure(structure_name)
    root = Group(structure_name, allowed=_direct(defs) if defs else frozenset())
    segs = message.segments
    if defs is None:
        root.items.extend(segs)
        return root
    known_names = _names(defs)
    known = [s for s in segs if s.name in known_names]
    misplaced: list[Segment] = []
    i = _match(defs, known, 0, root)
    while i < len(known):
        # A standard segment out of place: set aside, and the rest matched again (left to right, so what came
        # before lands as it did). Matching on from the top read an order's NTE as the message's, its OBXs nowhere.
        misplaced.append(known[i])
        del known[i]
        if len(misplaced) > _MAX_REMATCHES:
            # Each match is linear in the message: past a few, one message of thousands of stray segments
            # would hold a worker for minutes. The rest is out of place too, kept where it stands.
            misplaced += known[i:]
            del known[i:]
            break
        root = Group(structure_name, allowed=root.allowed)
        i = _match(defs, known, 0, root)
    root.misplaced = misplaced
    if len(known) != len(segs):
        _place_strays(root, segs)
    return root


@lru_cache(maxsize=None)
def _names_cached(defs: tuple[_Def, ...]) -> frozenset[str]:
    out: set[str] = set()
    for d in defs:
        out |= _names_cached(d.children) if d.is_group else {d.name}
    return frozenset(out)


def _names(defs: tuple[_Def, ...]) -> frozenset[str]:
    return _names_cached(defs)


def _place_strays(root: Group, segs: list[Segment]) -> None:
    """Put each segment the tree lacks (Z-segments, misplaced ones) right after the segment before it, in that segment's group."""
    where: dict[int, Group] = {}
    stack = [root]
    while stack:
        g = stack.pop()
        for item in g.items:
            if isinstance(item, Group):
                stack.append(item)
            else:
                where[id(item)] = g
    prev: Segment | None = None
    for seg in segs:
        if id(seg) in where:
            prev = seg
            continue
        group = where.get(id(prev)) if prev is not None else root
        group = group or root
        at = group.items.index(prev) + 1 if prev is not None and prev in group.items else len(group.items)
        group.items.insert(at, seg)
        where[id(seg)] = group
        prev = seg


GROUP_NAMES = _all_group_names()
"""Every segment group name of the v2.5.1 structures (without message prefixes)."""


@lru_cache(maxsize=None)
def _direct(defs: tuple[_Def, ...]) -> frozenset[str]:
    return frozenset(d.name for d in defs if not d.is_group)


def nearest(group: Group | None, name: str) -> list[Segment] | None:
    """Return the segments called *name* that belong to *group*, else to the nearest enclosing group.

    A group whose definition holds *name* answers for it even when it has none:
    an OBSERVATION without NTEs must not borrow its order's NTEs. None: no
    group on the way up holds such segments, and the caller looks message-wide.
    """
    return None if group is None else near_map(group).get(name)


def near_map(group: Group) -> dict[str, list[Segment]]:
    """Return what `nearest` answers in *group*, for every segment name at once.

    Built once per group (groups never change once a message's tree is built)
    from its parent's map: a copy, then the names the group's definition holds
    (even when it has none of them) and the strays kept here. Every block of a
    group reads its segments through it, so one dict lookup answers each.
    """
    near = group._near
    if near is None:
        parent = group.parent
        near = dict(near_map(parent)) if parent is not None else {}
        allowed = group.allowed
        direct = group.direct()
        for n in allowed:
            near[n] = direct.get(n, [])
        for n, segs in direct.items():
            if n not in allowed:
                near[n] = segs
        if parent is not None and parent.parent is None:
            # A group at the top (ORU's PATIENT_RESULT, A40's PATIENT) is one patient's part of the
            # message: what no group on the way up holds is looked for inside it before message-wide,
            # so the second patient's results read the second PID, not the first.
            for n, segs in _subtree(group).items():
                near.setdefault(n, segs)
        group._near = near
    return near


def _subtree(group: Group) -> dict[str, list[Segment]]:
    """Every segment under *group*, by name, in message order."""
    out: dict[str, list[Segment]] = {}
    stack: list[Union[Segment, Group]] = list(reversed(group.items))
    while stack:
        item = stack.pop()
        if isinstance(item, Group):
            stack.extend(reversed(item.items))
        else:
            out.setdefault(item.name, []).append(item)
    return out
