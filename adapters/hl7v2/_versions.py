"""What one HL7 v2 version defines, from hl7apy's tables: message structures, segments, fields, repeats.

Read when an outbound mapping loads, never per message (hl7apy's objects
cost milliseconds; its tables are plain tuples). Inbound path checks use the
union of versions (structure.py); outbound checks use the receiver's one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["FieldDef", "VersionDefs", "version_defs"]


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a segment in one version: its datatype, whether it repeats, its component count."""

    datatype: str
    repeats: bool
    components: int  # 0 for a primitive


class VersionDefs:
    """The structures and segments of one HL7 version."""

    def __init__(self, version: str, module: Any) -> None:
        self.version = version
        self._module = module

    def has_structure(self, structure: str) -> bool:
        """Tell whether *structure* (e.g. ADT_A01) is a message structure of this version."""
        return structure in self._module.MESSAGES

    @lru_cache(maxsize=None)
    def segments_of(self, structure: str) -> tuple[str, ...]:
        """Return the segment names of *structure* in standard order, groups flattened, first occurrence only."""
        out: list[str] = []
        _flatten(self._module.MESSAGES[structure], out)
        return tuple(dict.fromkeys(out))

    def has_segment(self, segment: str) -> bool:
        """Tell whether *segment* is defined in this version."""
        return segment in self._module.SEGMENTS

    @lru_cache(maxsize=None)
    def fields_of(self, segment: str) -> tuple[FieldDef, ...]:
        """Return the fields of *segment*, index 0 being field 1."""
        out = []
        for _name, spec, (_low, high), _kind in self._module.SEGMENTS[segment][1]:
            if spec[0] == "leaf":
                out.append(FieldDef(str(spec[2]), high != 1, 0))
            else:
                out.append(FieldDef(str(spec[2]), high != 1, len(spec[1])))
        return tuple(out)


def _flatten(node: Any, out: list[str]) -> None:
    for name, spec, *_rest in node[1]:
        if len(name) == 3 and name.isalnum() and name.isupper():
            out.append(name)
        else:
            _flatten(spec, out)


@lru_cache(maxsize=None)
def version_defs(version: str) -> VersionDefs:
    """Return the definitions of HL7 *version* ("2.3", "2.5.1").

    Raises:
        LookupError: hl7apy has no tables for that version.
    """
    try:
        module = importlib.import_module("hl7apy.v" + version.replace(".", "_"))
    except ModuleNotFoundError as exc:
        raise LookupError(f"HL7 version {version} is not known (hl7apy has no tables for it)") from exc
    return VersionDefs(version, module)
