"""What one HL7 v2 version defines, from hl7apy's tables: message structures, segments, fields, repeats.

Read when an outbound mapping loads, never per message (hl7apy's objects
cost milliseconds; its tables are plain tuples). Inbound path checks use the
union of versions (structure.py); outbound checks use the receiver's one.

A choice group (ORM^O01's `<OBR|RQD|RQ1|RXO|ODS|ODT>`) is one of its children, for
the outbound check as for the inbound matcher (_group_defs.py): both ask `is_choice`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

__all__ = ["FieldDef", "Occurrence", "StructureCursor", "StructureError", "VersionDefs", "is_choice", "version_defs"]


def is_choice(spec: Any) -> bool:
    """Tell whether hl7apy's definition *spec* of a group is a choice: one of its children stands there, not each in turn.

    Why one place: ORM^O01's order detail is OBR, or RXO, or ...; the inbound matcher
    (_group_defs.py) and the outbound structure check (StructureCursor) must agree on that.
    """
    return spec[0] == "choice"  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a segment in one version: its datatype, whether it repeats, its component count."""

    datatype: str
    repeats: bool
    components: int  # 0 for a primitive


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One place a segment may stand in a message structure: the groups around it and whether it may repeat there."""

    segment: str
    groups: tuple[str, ...]  # outermost first, without the structure's prefix: ("PATIENT_RESULT", "ORDER_OBSERVATION")
    repeating: tuple[bool, ...]  # per group in `groups`: whether that group repeats
    repeats: bool  # the segment itself repeats, or one of its groups does
    members: tuple[int | None, ...]  # per group in `groups`: which of a choice group's children it stands in (None: not a choice)

    def excludes(self, other: Occurrence) -> str | None:
        """Return the choice group in which this and *other* stand in different children (one message holds one of them), or None.

        A choice that repeats holds one child per repetition, so it excludes nothing.
        """
        for depth, (group, theirs) in enumerate(zip(self.groups, other.groups)):
            if group != theirs:
                return None
            mine, their = self.members[depth], other.members[depth]
            if mine is not None and mine != their and not self.repeating[depth]:
                return group
        return None


class VersionDefs:
    """The structures and segments of one HL7 version."""

    def __init__(self, version: str, module: Any) -> None:
        self.version = version
        self._module = module

    def has_structure(self, structure: str) -> bool:
        """Tell whether *structure* (e.g. ADT_A01) is a message structure of this version."""
        return structure in self._module.MESSAGES

    @cache  # noqa: B019 - one VersionDefs per HL7 version, kept for the process's life: nothing leaks
    def segments_of(self, structure: str) -> tuple[str, ...]:
        """Return the segment names of *structure* in standard order, groups flattened, first occurrence only."""
        out: list[str] = []
        _flatten(self._module.MESSAGES[structure], out)
        return tuple(dict.fromkeys(out))

    @cache  # noqa: B019 - one VersionDefs per HL7 version, kept for the process's life: nothing leaks
    def occurrences(self, structure: str) -> tuple[Occurrence, ...]:
        """Return every place a segment may stand in *structure*, in standard order, groups kept."""
        out: list[Occurrence] = []
        _walk(self._module.MESSAGES[structure], structure + "_", (), (), out)
        return tuple(out)

    def has_segment(self, segment: str) -> bool:
        """Tell whether *segment* is defined in this version."""
        return segment in self._module.SEGMENTS

    @cache  # noqa: B019 - one VersionDefs per HL7 version, kept for the process's life: nothing leaks
    def fields_of(self, segment: str) -> tuple[FieldDef, ...]:
        """Return the fields of *segment*, index 0 being field 1."""
        out = []
        for _name, spec, (_low, high), _kind in self._module.SEGMENTS[segment][1]:
            if spec[0] == "leaf":
                out.append(FieldDef(str(spec[2]), high != 1, 0))
            else:
                out.append(FieldDef(str(spec[2]), high != 1, len(spec[1])))
        return tuple(out)


class StructureError(ValueError):
    """A segment that the message structure does not allow where a mapping puts it."""


class StructureCursor:
    """Follow a mapping's segments, in its order, through the structures of its events.

    Each segment must come after the one before it; a segment a loop writes
    must be allowed to repeat there; and the segments of one mapping group must
    stay inside the repeating structure group its first segment opens
    (ORC, OBR … OBX, NTE inside ORDER_OBSERVATION).
    """

    def __init__(self, defs: VersionDefs, structures: dict[str, str]) -> None:
        """*structures* maps each trigger event to its message structure."""
        self._defs = defs
        self._by_event = structures
        self._last = dict.fromkeys(structures.values(), -1)
        self._groups: list[dict[str, tuple[tuple[str, ...] | None, str]]] = []  # per open group: structure → (groups it stays in, first segment)

    def open_group(self) -> None:
        """Start a mapping group: its first segment fixes the structure group the rest must stay in."""
        self._groups.append({})

    def close_group(self) -> None:
        """End the innermost mapping group."""
        self._groups.pop()

    def place(self, name: str, events: frozenset[str] | None, *, repeated: bool) -> None:
        """Place segment *name*, written for *events* (None: all), once or (*repeated*) several times.

        Raises:
            StructureError: the structure of one of the events does not allow it there, in plain words.
        """
        structures = dict.fromkeys(self._by_event[e] for e in (events if events is not None else self._by_event) if e in self._by_event)
        for structure in structures:
            occurrences = self._defs.occurrences(structure)
            last = self._last[structure]
            before = occurrences[last] if last >= 0 else None
            # not a later child of the choice the segment before stands in: that one is in its place
            at = next((i for i in range(last + 1, len(occurrences)) if occurrences[i].segment == name and (before is None or before.excludes(occurrences[i]) is None)), None)
            if at is None and before is not None and before.segment == name and before.repeats:
                at = last  # the same segment again, where it may repeat
            if at is None:
                choice = next((c for o in occurrences if o.segment == name and before is not None and (c := before.excludes(o)) is not None), None)
                if choice is not None and before is not None:
                    either = "|".join(_members(occurrences, before, choice))
                    raise StructureError(f"{name} cannot stand with {before.segment}: {structure} holds one of <{either}> there, not both")
                if any(o.segment == name for o in occurrences):
                    raise StructureError(f"{name} is out of order: {structure} puts it earlier")
                raise StructureError(f"{name} is not a segment of {structure} in HL7 {self._defs.version}")
            here = occurrences[at]
            if repeated and not here.repeats:
                raise StructureError(f"{structure} allows one {name} here in HL7 {self._defs.version}; each: would write several")
            self._check_groups(structure, here)
            self._last[structure] = at

    def _check_groups(self, structure: str, here: Occurrence) -> None:
        for group in self._groups:
            if structure not in group:
                repeating = [i for i, r in enumerate(here.repeating) if r]
                group[structure] = (here.groups[: repeating[-1] + 1] if repeating else None, here.segment)
                continue
            inside, first = group[structure]
            if inside is None:
                raise StructureError(f"{here.segment} cannot repeat together with {first}: {structure} repeats {first} on its own")
            if here.groups[: len(inside)] != inside:
                raise StructureError(f"{here.segment} is not part of {structure}'s {inside[-1]} group, which this group's {first} begins")


def _flatten(node: Any, out: list[str]) -> None:
    for name, spec, *_rest in node[1]:
        if len(name) == 3 and name.isalnum() and name.isupper():
            out.append(name)
        else:
            _flatten(spec, out)


@lru_cache(maxsize=1)
def _standard_choices() -> frozenset[tuple[str, frozenset[str]]]:
    """The choices v2.5.1's tables draw: (message structure, its members' names), e.g. ORM_O01 and {OBR, RQD, RQ1, RXO, ODS, ODT}.

    Why only these: hl7apy's tables for v2.6 and later also mark as choices groups the
    standard reads as sequences (EHC_E15's PMT then PYE, QBP_E03's QPD then RCP), so a
    later receiver's valid message would be refused. A group of any version is a choice
    when v2.5.1 draws one with the same members in the same structure (v2.3.1 lists
    ORM's in another order, under another group name); the rest are read in turn.
    """
    from hl7apy import v2_5_1

    out: set[tuple[str, frozenset[str]]] = set()

    def walk(structure: str, node: Any) -> None:
        for _name, spec, _card, kind in node[1]:
            if kind == "GRP":
                if is_choice(spec):
                    out.add((structure, frozenset(child[0] for child in spec[1])))
                walk(structure, spec)

    for structure, spec in v2_5_1.MESSAGES.items():
        walk(structure, spec)
    return frozenset(out)


def _walk(node: Any, prefix: str, groups: tuple[str, ...], repeating: tuple[bool, ...], out: list[Occurrence], members: tuple[int | None, ...] = ()) -> None:
    choice = bool(groups) and is_choice(node) and (prefix.rstrip("_"), frozenset(child[0] for child in node[1])) in _standard_choices()
    for k, (name, spec, (_low, high), kind) in enumerate(node[1]):
        here = (*members[:-1], k) if choice else members  # a choice's child: which one, at the choice's depth
        if kind == "GRP":
            _walk(spec, prefix, (*groups, name.removeprefix(prefix)), (*repeating, high != 1), out, (*here, None))
        else:
            out.append(Occurrence(name, groups, repeating, high != 1 or any(repeating), here))


def _members(occurrences: tuple[Occurrence, ...], one: Occurrence, choice: str) -> list[str]:
    """The first segment of each child of the choice group *choice* that *one* stands in: its alternatives, in standard order."""
    depth = one.groups.index(choice)
    first: dict[int | None, str] = {}
    for o in occurrences:
        if o.groups[: depth + 1] == one.groups[: depth + 1]:
            first.setdefault(o.members[depth], o.segment)
    return list(first.values())


@cache
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
