"""Group-aware structure: place each segment in its segment group (ORDER_OBSERVATION, OBSERVATION…).

A result is never attached to the wrong order because results are read inside
their own group, not by counting segments. The structure definitions are the
standard's, from hl7apy (v2.5.1, whose structures are a superset of the older
ones for the messages Helsebro maps, so one set of group names serves every
sender). Group names drop hl7apy's message prefix: `ORU_R01_ORDER_OBSERVATION`
is `ORDER_OBSERVATION`.

One kind of group later versions added is merged into these definitions (`_ADDED`):
v2.7 put the patient's own observations (an OBX right after PID, before the stay
and the orders) in a PATIENT_OBSERVATION group of ORU^R01's and OUL's PATIENT.
v2.5.1 has no place for such an OBX, so a v2.7+ lab message that carries one was
refused. Only that group is merged, not the later structures whole: every other
group name, and so every mapping and every other message's output, stays as it was.

Matching is a greedy recursive descent, like HAPI's: each child of a group is
taken as often as its cardinality allows while the next segment can start it. One
exception: a segment that anchors the next repetition of an enclosing group (ORC
for OML's ORDER) does not open a nested group through an optional member (the ORC
of a PRIOR_RESULT), where greedy HAPI-style matching would swallow every later order.
A segment that fits nowhere (a Z-segment, or one out of place) is kept in the
innermost open group, so nothing is ever dropped and the unmapped report sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Union

from hl7apy import v2_5_1

from adapters.hl7v2._tokenizer import Hl7Message, Segment


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


def _group(name: str, lo: int, hi: int, children: tuple[_Def, ...], also: frozenset[str] = frozenset()) -> _Def:
    """A group definition, with what can start it, what it holds directly (and *also* answers for) and its anchor."""
    starts: set[str] = set()
    for child in children:
        starts |= child.starts
        if child.min > 0:
            break
    allowed = frozenset(c.name for c in children if not c.is_group) | also
    required = next((c for c in children if c.min > 0), None)
    anchor = (required.anchor if required.is_group else required.starts) if required is not None else frozenset(starts)
    return _Def(name, True, lo, hi, children, frozenset(starts), allowed, anchor)


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

_ADDED: dict[str, tuple[tuple[str, ...], str | None, _Def]] = {
    # structure: (path of the group that holds it, the child it goes before (None: at its end), the group),
    # where v2.7 and v2.8 put it
    "ORU_R01": (("PATIENT_RESULT", "PATIENT"), "VISIT", _PATIENT_OBSERVATION),
    "OUL_R22": (("PATIENT",), None, _PATIENT_OBSERVATION),
    "OUL_R23": (("PIDPD1NTE_SUPPGRP",), None, _PATIENT_OBSERVATION),  # v2.8's PATIENT, under its v2.5.1 name
    "OUL_R24": (("PIDPD1NTE_SUPPGRP",), None, _PATIENT_OBSERVATION),
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
            d = _group(d.name, d.min, d.max, children)
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
    added = _ADDED.get(name)
    return _merge(defs, *added) if added else defs


def _match(defs: tuple[_Def, ...], segs: list[Segment], i: int, into: Group, stops: frozenset[str] = frozenset()) -> int:
    """Place segments from *i* on into *into*'s children; return where it stopped.

    *stops* are the segments that anchor the next repetition of an enclosing repeating
    group (its first required segment). Such a segment does not open a group it would
    enter only through an optional leading member: in OML^O21 a second ORC is the next ORDER, not the optional ORC of a
    PRIOR_RESULT inside the first order (greedy, it swallowed every later order).
    """
    n = len(segs)
    for d in defs:
        count = 0
        starts = d.starts
        while i < n and (d.max == -1 or count < d.max) and segs[i].name in starts:
            if d.is_group:
                name = segs[i].name
                if name in stops and name not in d.anchor:
                    break
                sub = Group(d.name, parent=into, allowed=d.allowed)
                j = _match(d.children, segs, i, sub, stops | d.anchor if d.max != 1 else stops)
                if j == i:
                    break
                into.items.append(sub)
                i = j
            else:
                into.items.append(segs[i])
                i += 1
            count += 1
    return i


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
    i = _match(defs, known, 0, root)
    while i < len(known):
        # A standard segment out of place: keep it where we are, then match on from the top.
        _innermost(root).items.append(known[i])
        root.misplaced.append(known[i])
        i = _match(defs, known, i + 1, root)
    if len(known) != len(segs):
        _place_strays(root, segs, known_names)
    return root


@lru_cache(maxsize=None)
def _names_cached(defs: tuple[_Def, ...]) -> frozenset[str]:
    out: set[str] = set()
    for d in defs:
        out |= _names_cached(d.children) if d.is_group else {d.name}
    return frozenset(out)


def _names(defs: tuple[_Def, ...]) -> frozenset[str]:
    return _names_cached(defs)


def _innermost(group: Group) -> Group:
    while group.items and isinstance(group.items[-1], Group):
        group = group.items[-1]
    return group


def _place_strays(root: Group, segs: list[Segment], known: frozenset[str]) -> None:
    """Put each site-defined segment (Z-segments) right after the segment before it, in that segment's group."""
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
        if seg.name in known:
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
