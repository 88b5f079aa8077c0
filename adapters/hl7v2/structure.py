"""HL7 v2 structure knowledge from hl7apy: segment and datatype names, fields per segment.

hl7apy is slow to parse messages but its structure tables are the standard's;
Helsebro reads them once, when mappings load, to check source paths.
"""

from __future__ import annotations

from functools import lru_cache

from hl7apy.v2_5 import DATATYPES_STRUCTS, SEGMENTS

SEGMENT_NAMES = frozenset(SEGMENTS)
"""Every standard segment name of v2.5 (Z-segments are site-defined and not listed)."""

DATATYPE_NAMES = frozenset(k for k in DATATYPES_STRUCTS if "_" not in k) | {"TS", "DTM", "ST", "NM", "ID", "IS", "TX", "FT", "SI", "DT", "TM"}
"""Every v2.5 datatype name: a bare one in a path means "the current value" (e.g. `XCN`)."""


@lru_cache(maxsize=None)
def field_count(segment: str) -> int | None:
    """Return how many fields the standard defines for *segment*, or None if unknown (Z-segments)."""
    spec = SEGMENTS.get(segment)
    if spec is None:
        return None
    return len(spec[1])
