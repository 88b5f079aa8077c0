"""Group-aware structure: place each segment in its segment group (ORDER_OBSERVATION, OBSERVATION…).

A result is never attached to the wrong order because results are read inside
their own group, not by counting segments. The group definitions (hl7apy's
v2.5.1, with the groups later versions added) are _group_defs.py's; this module
matches a message against them and answers which segments a group holds.

Matching is a greedy recursive descent, like HAPI's: each child of a group is
taken as often as its cardinality allows while the next segment can start it. One
exception: a segment that anchors the next repetition of an enclosing group (ORC
for OML's ORDER) does not open a nested group through an optional member (the ORC
of a PRIOR_RESULT), where greedy HAPI-style matching would swallow every later order.
A group entered through an optional leading member (ORU's ORDER_OBSERVATION through
its ORC) ends where its first required member is missing: an OBX after an ORC with
no OBR belongs to no order, and is refused as out of place. A choice group (ORM^O01's
`<OBR|RQD|RQ1|RXO|ODS|ODT>`) takes the one child the next segment starts, and its
parent (ORDER_DETAIL) holds that segment as its own.

A segment a group does not hold is looked for in the groups around it, then inside its
top-level group (ORU's second PATIENT_RESULT reads its own PID), then message-wide (an
RDS order's PID); one the structure places only inside that top-level group (an order's
RXE) is that group's or none, never another order's.

A segment that fits nowhere (a Z-segment, or one out of place) is kept in the
innermost open group, right after the segment before it, so nothing is ever dropped
and the unmapped report sees it; the segments after it are placed as if it had not
been sent, not matched again from the top of the structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from adapters.hl7v2._group_defs import GROUP_NAMES, Def, direct_names, segment_names, structure
from adapters.hl7v2._tokenizer import Hl7Message, Segment

__all__ = ["GROUP_NAMES", "Group", "build", "near_map", "nearest", "structure"]


@dataclass(slots=True)
class Group:
    """One occurrence of a segment group, with its segments and subgroups in order."""

    name: str
    items: list[Segment | Group] = field(default_factory=list)
    parent: Group | None = field(default=None, repr=False, compare=False)
    allowed: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # segments the standard puts directly here
    _direct: dict[str, list[Segment]] | None = field(default=None, repr=False, compare=False)  # built on first lookup
    _near: dict[str, list[Segment]] | None = field(default=None, repr=False, compare=False)  # near_map(): nearest()'s answers here
    misplaced: list[Segment] = field(default_factory=list, repr=False, compare=False)  # root only: standard segments where the structure has no place for them
    choice: bool = False  # hl7apy's wrapper around a choice: its parent holds its segment as its own (direct())
    own: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # a top-level group: what the structure places only in it (Def.own)

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
        """Return this group's own segments by name (not its subgroups'), indexed once: every rule of a group asks.

        The segment of a choice counts as the group's own: the standard draws ORM's
        `<OBR|RQD|...>` inside ORDER_DETAIL, the wrapper group is hl7apy's name for it.
        """
        direct = self._direct
        if direct is None:
            direct = {}
            for item in self.items:
                if isinstance(item, Group):
                    if not item.choice:
                        continue
                    for seg in item.items:
                        if not isinstance(seg, Group):
                            direct.setdefault(seg.name, []).append(seg)
                else:
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


def _match(
    defs: tuple[Def, ...], segs: list[Segment], i: int, into: Group, stops: frozenset[str] = frozenset(), required: int = -1,
    last: dict[str, int] | None = None,
) -> int:
    """Place segments from *i* on into *into*'s children; return where it stopped.

    *stops* are the segments that anchor the next repetition of an enclosing repeating
    group (its first required segment). Such a segment does not open a group it would
    enter only through an optional leading member: in OML^O21 a second ORC is the next ORDER, not the optional ORC of a
    PRIOR_RESULT inside the first order (greedy, it swallowed every later order).

    *required* is the index of *into*'s first required child: when it is missing (the group was
    entered through an optional member before it), the group ends there. OBR is required in ORU's
    ORDER_OBSERVATION: an OBX after an ORC with no OBR is a result of no order, not of that ORC.

    *last* (the top level only: where each segment name last occurs) stops at a top-level segment that
    skips members whose segments follow it (`_jumps`): it is the stray, not everything after it.
    """
    n = len(segs)
    skipped: set[str] = set()  # at the top: what starts the members passed with nothing
    for k, d in enumerate(defs):
        count = 0
        starts = d.starts
        while i < n and (d.max == -1 or count < d.max) and segs[i].name in starts:
            if last is not None and count == 0 and skipped and not d.is_group and _jumps(defs, k, skipped, last, i):
                return i  # a stray: build sets it aside, and the segments after it are placed where they belong
            if d.is_group:
                name = segs[i].name
                if name in stops and name not in d.anchor:
                    break
                if (d.after is not None and not _follows(into, d.after)) or (d.whole and not _complete(d.children, segs, i)):
                    break
                sub = Group(d.name, parent=into, allowed=d.allowed, choice=d.choice, own=d.own)
                if d.choice:  # the one child the segment starts
                    j = _match(tuple(c for c in d.children if name in c.starts)[:1], segs, i, sub, stops)
                else:
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
        if last is not None and count == 0:
            skipped |= starts
    return i


def _jumps(defs: tuple[Def, ...], k: int, skipped: set[str], last: dict[str, int], i: int) -> bool:
    """Whether the segment at *i*, matching the top-level segment *defs[k]*, skips a member whose segments follow it.

    Such a segment is out of place, not the rest: REF^I12's closing {NTE} sent right after RF1 (or a PRD,
    PID, DG1) took the NTE as the message's last and left every PRD, DG1, OBR and OBX after it out of
    their groups. Only segments that no later member can take count: ADT's second ROL is not its first.
    """
    later = _tail_starts(defs, k)
    return any(last.get(name, -1) > i for name in skipped if name not in later)


@cache
def _tail_starts(defs: tuple[Def, ...], k: int) -> frozenset[str]:
    """The segments that can start any of *defs* from *k* on."""
    return frozenset().union(*(d.starts for d in defs[k:]))


def _follows(into: Group, name: str) -> bool:
    """Whether the last thing placed in *into* is a segment called *name*."""
    return bool(into.items) and not isinstance(into.items[-1], Group) and into.items[-1].name == name


def _complete(children: tuple[Def, ...], segs: list[Segment], i: int) -> bool:
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
    root = Group(structure_name, allowed=direct_names(defs) if defs else frozenset())
    segs = message.segments
    if defs is None:
        root.items.extend(segs)
        return root
    known_names = segment_names(defs)
    known = [s for s in segs if s.name in known_names]
    misplaced: list[Segment] = []
    i = _match(defs, known, 0, root, last=_last(known))
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
        i = _match(defs, known, 0, root, last=_last(known))
    root.misplaced = misplaced
    if len(known) != len(segs):
        _place_strays(root, segs)
    return root


def _last(segs: list[Segment]) -> dict[str, int]:
    """Where each segment name last occurs in *segs*: one pass, so `_jumps` asks in constant time."""
    return {seg.name: k for k, seg in enumerate(segs)}


def _place_strays(root: Group, segs: list[Segment]) -> None:
    """Put each segment the tree lacks (Z-segments, misplaced ones) right after the segment before it, in that segment's group.

    A misplaced segment whose group has no place for it, but an enclosing group has, goes to the nearest
    such group, right after the group that holds the segment before it.
    """
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
        found = where.get(id(prev)) if prev is not None else root
        group = found or root
        after: Segment | Group | None = prev
        holder: Group | None = group
        while holder is not None and seg.name not in holder.allowed:
            holder = holder.parent
        if holder is not None:
            # A standard segment the group before it has no place for, but an enclosing group has (REF^I12's
            # closing NTE sent after a PRD), is that group's, after the group it follows: not a note of a
            # PROVIDER_CONTACT, whose definition holds none, where REF_I12's path to its own notes would read it.
            while group is not holder and (parent := group.parent) is not None:
                after, group = group, parent
        at = next((k + 1 for k, item in enumerate(group.items) if item is after), len(group.items))  # by identity: groups compare equal by content
        group.items.insert(at, seg)
        where[id(seg)] = group
        prev = seg


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
            # What the structure places only in such a group is this one's or none: the second order of an
            # RDS without its ENCODING has no RXE, not the first order's.
            for n in group.own:
                near.setdefault(n, [])
        group._near = near
    return near


def _subtree(group: Group) -> dict[str, list[Segment]]:
    """Every segment under *group*, by name, in message order."""
    out: dict[str, list[Segment]] = {}
    stack: list[Segment | Group] = list(reversed(group.items))
    while stack:
        item = stack.pop()
        if isinstance(item, Group):
            stack.extend(reversed(item.items))
        else:
            out.setdefault(item.name, []).append(item)
    return out
