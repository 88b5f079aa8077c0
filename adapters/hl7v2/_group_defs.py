"""The segment-group definitions groups.py matches messages against: hl7apy's, with later groups merged in.

The structure definitions are the standard's, from hl7apy (v2.5.1, whose structures
are a superset of the older ones for the messages Helsebro maps, so one set of group
names serves every sender). Group names drop hl7apy's message prefix:
`ORU_R01_ORDER_OBSERVATION` is `ORDER_OBSERVATION`. Each child carries what the
matcher asks of it for every segment (what can start it, what it holds directly),
worked out once here.

Two groups later versions added are merged into these definitions (`_ADDED`), as
v2.5.1 has no place for them: v2.7's PATIENT_OBSERVATION (an OBX about the patient
right after PID, in ORU^R01's and OUL's PATIENT) and v2.8's ORDER_DOCUMENT (an OBX
holding a document and its TXA, right after the ORC; without it, an ORC whose OBR
follows its document was read as an order without an OBR). Only those groups are
merged, not the later structures whole, so every other group name and every mapping
stays as it was. One requirement senders ignore is dropped (`_OPTIONAL`): the NTE that
v2.5.1 puts first in RDS's and RAS's ORDER_DETAIL_SUPPLEMENT.

A choice group (hl7apy's name for ORM^O01's `<OBR|RQD|RQ1|RXO|ODS|ODT>`,
OBRRQDRQ1RXOODSODT_SUPPGRP) is one of its children, not each in turn: read as a
sequence, only its first child, OBR, could start it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from hl7apy import v2_5_1

from adapters.hl7v2._versions import is_choice

__all__ = ["GROUP_NAMES", "Def", "direct_names", "segment_names", "structure"]


@dataclass(frozen=True, slots=True)
class Def:
    """One child of a structure: a segment or a group, with its cardinality."""

    name: str
    is_group: bool
    min: int
    max: int  # -1: unbounded
    children: tuple[Def, ...] = ()
    starts: frozenset[str] = frozenset()  # segment names that can start it (through optional leading children)
    allowed: frozenset[str] = frozenset()  # for a group: the segments its definition holds directly (and any it answers for: a choice child's, _PATIENT_OBSERVATION's OBR)
    anchor: frozenset[str] = frozenset()  # for a group: what starts its first required child (ORDER_PRIOR: OBR, not its optional ORC)
    first_required: int = -1  # for a group: the index of its first required child (-1: none)
    after: str | None = None  # taken only right after this segment (ORDER_DOCUMENT: v2.8 holds it in COMMON_ORDER, after ORC)
    whole: bool = False  # taken only when every required member follows (ORDER_DOCUMENT: its OBX only with its TXA)
    choice: bool = False  # for a group: one of its children, not each in turn (ORM's <OBR|RQD|RQ1|RXO|ODS|ODT>)
    own: frozenset[str] = frozenset()  # a top-level group: the segments the structure places only inside it (an order's RXE)


def _convert(defn: Any, prefix: str) -> tuple[Def, ...]:
    """Convert hl7apy's definition, working out each child's start set and direct segments once.

    Matching asks both for every segment it places; as fields they cost an
    attribute read, where working them out (or hashing the nested definition
    to find them in a cache) cost a walk of the children each time.
    """
    out = []
    for name, sub, (lo, hi), kind in defn[1]:
        if kind == "GRP":
            short = name[len(prefix):] if name.startswith(prefix) else name
            out.append(_group(short, lo, hi, _convert(sub, prefix), choice=is_choice(sub)))
        else:
            out.append(_segment(name, lo, hi))
    return tuple(out)


def _segment(name: str, lo: int, hi: int) -> Def:
    """A segment definition: it starts itself."""
    return Def(name, False, lo, hi, (), frozenset({name}))


def _group(
    name: str, lo: int, hi: int, children: tuple[Def, ...], also: frozenset[str] = frozenset(), *,
    after: str | None = None, whole: bool = False, choice: bool = False,
) -> Def:
    """A group definition, with what can start it, what it holds directly (and *also* answers for) and its anchor.

    A child that needs a segment before it (*after*) never starts its parent. Any child starts
    a *choice*, and its parent holds the choice's segments as its own (`Group.direct`).
    """
    if choice:
        either = frozenset(seg for c in children for seg in c.starts)
        held = frozenset(c.name for c in children if not c.is_group) | also
        return Def(name, True, lo, hi, children, either, held, either, -1, after, whole, True)
    starts: set[str] = set()
    for child in children:
        if child.after is None:
            starts |= child.starts
        if child.min > 0:
            break
    allowed = frozenset(c.name for c in children if not c.is_group).union(*(c.allowed for c in children if c.choice)) | also
    at = next((k for k, c in enumerate(children) if c.min > 0), -1)
    required = children[at] if at >= 0 else None
    anchor = (required.anchor if required.is_group else required.starts) if required is not None else frozenset(starts)
    return Def(name, True, lo, hi, children, frozenset(starts), allowed, anchor, at, after, whole)


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

_ADDED: dict[str, tuple[tuple[tuple[str, ...], str | None, Def], ...]] = {
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


_OPTIONAL: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    # structure: (path of the group, its child made optional)...
    # v2.5.1 requires an NTE before the RXRs of RDS's and RAS's ORDER_DETAIL_SUPPLEMENT (RDE_O11's
    # ORDER_DETAIL has the same segments with the NTEs optional). Senders write it as in RDE, with no NTE
    # (the public corpus' RDS-O13-01/02): read as the standard has it, that RXR fitted only the ORDER's own
    # RXR after RXD, and the RXE, its TQ1 and the RXD after it had no place, so the order was lost.
    "RDS_O13": ((("ORDER", "ORDER_DETAIL", "ORDER_DETAIL_SUPPLEMENT"), "NTE"),),
    "RAS_O17": ((("ORDER", "ORDER_DETAIL", "ORDER_DETAIL_SUPPLEMENT"), "NTE"),),
    # v2.3.1 and v2.4 make the ORC of VXU's order optional (`[{[ORC], RXA, …}]`), and senders of later versions
    # leave it out: read as v2.5.1 has it, each RXA stood in no ORDER, and the vaccination was lost with a success.
    "VXU_V04": ((("ORDER",), "ORC"),),
}
"""Children of a v2.5.1 group that senders leave out where the standard requires them, made optional."""


def _loosen(defs: tuple[Def, ...], path: tuple[str, ...], child: str) -> tuple[Def, ...]:
    """Return *defs* with the child *child* of the group at *path* optional (min 0), the groups on the way rebuilt."""
    out = []
    for d in defs:
        if d.is_group and d.name == path[0]:
            if len(path) > 1:
                children = _loosen(d.children, path[1:], child)
            else:
                children = tuple(replace(c, min=0) if c.name == child else c for c in d.children)
            also = d.allowed - {c.name for c in children if not c.is_group}
            d = _group(d.name, d.min, d.max, children, also, after=d.after, whole=d.whole, choice=d.choice)
        out.append(d)
    return tuple(out)


def _merge(defs: tuple[Def, ...], path: tuple[str, ...], before: str | None, added: Def) -> tuple[Def, ...]:
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
            d = _group(d.name, d.min, d.max, children, also, after=d.after, whole=d.whole, choice=d.choice)
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


@cache
def structure(name: str) -> tuple[Def, ...] | None:
    """Return the v2.5.1 structure *name* (e.g. `ORU_R01`) with its `_ADDED` groups and `_OPTIONAL` children, or None if the standard has none."""
    defn = v2_5_1.MESSAGES.get(name)
    if not defn:
        return None
    defs = _convert(defn, name + "_")
    for added in _ADDED.get(name, ()):
        defs = _merge(defs, *added)
    for path, child in _OPTIONAL.get(name, ()):
        defs = _loosen(defs, path, child)
    return _owning(defs)


def _owning(defs: tuple[Def, ...]) -> tuple[Def, ...]:
    """Return *defs* with each top-level group's `own`: the segments no other top-level member has a place for.

    Such a segment missing from one occurrence of the group is missing, not another occurrence's:
    RDS's second ORDER without an ENCODING group has no RXE, where the first order's RXE, found
    message-wide, hid that it names its order by number. A segment placed outside the group too
    (OML's PID, in PATIENT and in an ORDER's PRIOR_RESULT) is still looked for message-wide.
    """
    names = [segment_names(d.children) if d.is_group else frozenset({d.name}) for d in defs]
    out = []
    for k, d in enumerate(defs):
        if d.is_group:
            elsewhere = frozenset().union(*(n for j, n in enumerate(names) if j != k))
            d = replace(d, own=names[k] - elsewhere)
        out.append(d)
    return tuple(out)


@cache
def _names_cached(defs: tuple[Def, ...]) -> frozenset[str]:
    out: set[str] = set()
    for d in defs:
        out |= _names_cached(d.children) if d.is_group else {d.name}
    return frozenset(out)


def segment_names(defs: tuple[Def, ...]) -> frozenset[str]:
    """Return every segment name *defs* hold, at any depth: the segments a structure has a place for."""
    return _names_cached(defs)


@cache
def direct_names(defs: tuple[Def, ...]) -> frozenset[str]:
    """Return the segment names *defs* hold themselves, not through a group (a structure's top-level segments)."""
    return frozenset(d.name for d in defs if not d.is_group)


GROUP_NAMES = _all_group_names()
"""Every segment group name of the v2.5.1 structures (without message prefixes)."""
