"""HL7 v2 structure knowledge from hl7apy: segment and datatype names, fields per segment.

hl7apy is slow to parse messages but its structure tables are the standard's;
Helsebro reads them once, when mappings load, to check source paths.
"""

from __future__ import annotations

import importlib
from functools import cache

from hl7apy.v2_5 import DATATYPES_STRUCTS

# Paths are checked against the union of v2.5 to v2.8: a v2.8 sender's PID-40 is real.
_VERSIONS = [importlib.import_module(f"hl7apy.{v}") for v in ("v2_5", "v2_5_1", "v2_6", "v2_7", "v2_8")]

SEGMENT_NAMES = frozenset(name for v in _VERSIONS for name in v.SEGMENTS)
"""Every standard segment name of v2.5 to v2.8 (Z-segments are site-defined and not listed)."""

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
