"""HL7 v2 structure knowledge from hl7apy: segment and datatype names, fields per segment.

hl7apy is slow to parse messages but its structure tables are the standard's;
Helsebro reads them once, when mappings load, to check source paths.
"""

from __future__ import annotations

import importlib
from functools import cache

from hl7apy.v2_5 import DATATYPES_STRUCTS

from adapters.hl7v2._group_defs import segment_names, structure

# Paths are checked against the union of v2.5 to v2.8: a v2.8 sender's PID-40 is real.
_VERSIONS = [importlib.import_module(f"hl7apy.{v}") for v in ("v2_5", "v2_5_1", "v2_6", "v2_7", "v2_8")]

SEGMENT_NAMES = frozenset(name for v in _VERSIONS for name in v.SEGMENTS)
"""Every standard segment name of v2.5 to v2.8 (Z-segments are site-defined and not listed)."""

_STRUCTURE_NAMES = frozenset(name for v in _VERSIONS for name in v.MESSAGES)
"""Every message structure of v2.5 to v2.8 (ACK, ADT_A01, ORU_R01 …)."""

DATATYPE_NAMES = frozenset(k for k in DATATYPES_STRUCTS if "_" not in k) | {"TS", "DTM", "ST", "NM", "ID", "IS", "TX", "FT", "SI", "DT", "TM"}
"""Every v2.5 datatype name: a bare one in a path means "the current value" (e.g. `XCN`)."""


@cache
def field_count(segment: str) -> int | None:
    """Return how many fields the standard defines for *segment*, or None if unknown (Z-segments)."""
    counts = [len(v.SEGMENTS[segment][1]) for v in _VERSIONS if segment in v.SEGMENTS]
    return max(counts) if counts else None


def check_path(path: object) -> str | None:
    """Say what is wrong with a compiled path against the v2.5 to v2.8 structures, or None.

    Z-segments are site-defined: any field is allowed. Checked when mappings
    load (lint), never per message.
    """
    segment = getattr(path, "segment", None)
    field_no = getattr(path, "field_no", None)
    if segment is None:
        return None
    if segment not in SEGMENT_NAMES:
        if segment.startswith("Z"):
            return None
        return f"{segment} is not an HL7 v2 segment (site segments start with Z)"
    count = field_count(segment)
    if field_no is not None and count is not None and field_no > count:
        return f"{segment} has {count} fields in HL7 v2.5 to v2.8; {segment}-{field_no} does not exist"
    return None


@cache
def _structure_parts(name: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """The segments message structure *name* has a place for in any of v2.5 to v2.8, and its groups; None if unknown.

    Segments from every version: a v2.7 sender's PRT in an ORU is real. Groups are the ones
    groups.py builds (v2.5.1's, with the few later ones merged in): a group it never builds
    is never iterated, whatever a later version calls it.
    """
    defs = structure(name)
    versions = [v.MESSAGES[name] for v in _VERSIONS if name in v.MESSAGES]
    if defs is None and not versions:
        return None
    segments: set[str] = set(segment_names(defs)) if defs else set()
    groups: set[str] = set()
    stack = list(defs or ())
    while stack:
        d = stack.pop()
        if d.is_group:
            groups.add(d.name)
            stack.extend(d.children)
    todo = [defn[1] for defn in versions]
    while todo:
        for child, sub, _, kind in todo.pop():
            if kind == "GRP":
                todo.append(sub[1])
            elif kind == "SEG":
                segments.add(child)
    return frozenset(segments), frozenset(groups)


def check_reach(path: object, structures: tuple[str, ...]) -> str | None:
    """Say why *path* never reads anything in messages of *structures* (one of which uses it), or None.

    Why: a segment every check above knows, read where no message that gets there can carry it
    (an OBR in an ADT^A01), passed lint and made nothing at run time, without a word. A structure
    hl7apy does not know, and Z-segments (site-defined, allowed anywhere), are let through.
    """
    what = unreached(path, structures)
    return _lacks(structures, what) if what else None


def unreached(path: object, structures: tuple[str, ...]) -> str | None:
    """The part of *path* none of *structures* has a place for (`OBR segment`, `ORDER group`), or None.

    check_reach's rule, without its sentence: a route's `when:` (router/routing/match.py) words
    it for the message codes the route names. None when *structures* is empty or one is unknown.
    """
    tail = getattr(path, "tail", None)
    segment = getattr(path, "segment", None) or getattr(tail, "segment", None)
    steps = getattr(path, "steps", ())
    parts = [_structure_parts(s) for s in structures]
    if not structures or any(p is None for p in parts):
        return None
    known = [p for p in parts if p is not None]
    for group, _ in steps:
        if not any(group in groups for _, groups in known):
            return f"{group} group"
    if segment is not None and not segment.startswith("Z") and not any(segment in segs for segs, _ in known):
        return f"{segment} segment"
    return None


def structures_of(message_code: str) -> tuple[str, ...]:
    """The message structures HL7 v2.5 to v2.8 define for *message_code* (ADT: ADT_A01, ADT_A02 …), sorted; () if none.

    A structure is named after its message code (ACK, ADT_A01, ORU_R01), so these are the
    structures a message of that code can have, whatever its trigger event.
    """
    code = message_code.upper()
    return tuple(sorted(s for s in _STRUCTURE_NAMES if s == code or s.startswith(f"{code}_")))


def _lacks(structures: tuple[str, ...], what: str) -> str:
    """`ADT_A01 has no OBR segment (...)`, or the same of every structure a template is used from."""
    if len(structures) == 1:
        return f"{structures[0]} has no {what} (message structure {structures[0]}, HL7 v2.5 to v2.8)"
    return f"none of the message structures that use it has the {what} ({', '.join(structures)}; HL7 v2.5 to v2.8)"
