"""Outbound HL7 v2 mappings: load mappings/outbound/hl7v2/*.yaml, check them, compile them to closures.

A mapping says which segments a message has and where each field's value
comes from in the canonical Bundle (docs/outbound-hl7v2.md). Everything is
checked when it loads, against the receiver's HL7 version (hl7apy tables) and
FHIR R4, with errors at file:line:col; per message only the compiled closures
run. Building MSH, encoding and publishing are render.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.hl7v2._er7 import keeps_offset
from adapters.hl7v2._outbound_fields import CONTEXT_NAMES, FieldCompiler, FieldFn, RenderContext, Skip, Table
from adapters.hl7v2._versions import VersionDefs, version_defs
from router.errors import MappingError, MessageError
from router.mapping import fhir_model
from router.mapping._yaml import Pos, YList, YMap, load_yaml

__all__ = ["CONTEXT_NAMES", "MSH_OWNED", "OutboundMapping", "RenderContext", "lint_outbound", "load_outbound", "load_tables"]

MSH_OWNED = frozenset({1, 2, 7, 9, 10, 12, 18})
"""MSH fields the renderer writes itself (delimiters, time, type, control id, version, charset)."""

_SEGMENT_KEYS = {"segment", "resource", "required", "fields", "note"}
_TOP_KEYS = {"outbound", "format", "description", "message", "events", "segments", "note"}


@dataclass(frozen=True, slots=True)
class _Segment:
    name: str
    resource: str | None
    required: bool
    fields: tuple[tuple[int, FieldFn], ...]
    width: int

    def render(self, ctx: RenderContext) -> str | None:
        node = None
        if self.resource is not None:
            node = ctx.by_type.get(self.resource)
            if node is None:
                if self.required:
                    raise MessageError(f"the Bundle has no {self.resource}, which {self.name} is built from", location=self.name)
                return None
        values = [""] * self.width
        for n, fn in self.fields:
            values[n - 1] = fn(node, ctx)
        while values and not values[-1]:
            values.pop()
        return self.name + "|" + "|".join(values) if values else self.name


@dataclass(frozen=True, slots=True)
class OutboundMapping:
    """One compiled outbound mapping for one HL7 version."""

    name: str
    file: str
    version: str
    message_code: str
    events: dict[str, str]  # trigger event → message structure (MSH-9.3)
    msh: tuple[tuple[int, FieldFn], ...]
    segments: tuple[_Segment, ...]


def load_outbound(path: Path, version: str, *, tables: dict[str, Table] | None = None, display: str | None = None) -> OutboundMapping:
    """Load and check one outbound mapping file for HL7 *version*.

    Raises:
        MappingError: the first thing wrong, at file:line:col.
    """
    errors: list[MappingError] = []
    mapping = _Compiler(path, version, tables, display, errors).compile()
    if errors:
        raise errors[0]
    if mapping is None:  # the compiler records a reason whenever it gives up
        raise MappingError("mapping did not compile", file=display or str(path), line=1, column=1)
    return mapping


def load_tables(root: Path, *, errors: list[MappingError] | None = None) -> dict[str, Table]:
    """Load every table under *root*/tables/.

    Raises:
        MappingError: a table is malformed (when *errors* is None; else the errors are collected).
    """
    out: dict[str, Table] = {}
    for file in sorted((root / "tables").glob("*.yaml")) if (root / "tables").is_dir() else []:
        try:
            table = _load_table(file)
        except MappingError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        out[table.name] = table
    return out


def lint_outbound(root: Path, *, version: str = "2.5.1") -> list[MappingError]:
    """Run every load-time check on the outbound mappings under *root* for *version*; return all errors."""
    errors: list[MappingError] = []
    tables = load_tables(root, errors=errors)
    for file in sorted(root.glob("*.yaml")):
        try:
            _Compiler(file, version, tables, None, errors).compile()
        except MappingError as exc:  # a YAML syntax error ends that file
            errors.append(exc)
    return errors


def _load_table(file: Path) -> Table:
    doc = load_yaml(file)
    if not isinstance(doc, YMap):
        raise MappingError("a table is a mapping with table:, map: and unmapped:", file=str(file), line=1, column=1)
    for key in doc:
        if key not in {"table", "description", "map", "unmapped", "note"}:
            _raise(f"unknown key {key!r} (table, description, map, unmapped)", doc.pos(key))
    if doc.get("table") != file.stem:
        _raise(f"table: must be the file's name, {file.stem!r}", doc.pos("table"))
    entries = doc.get("map")
    if not isinstance(entries, YMap) or not entries or not all(isinstance(v, (str, int)) for v in entries.values()):
        _raise("map: needs FHIR code → HL7 code pairs (text)", doc.pos("map"))
    unmapped = doc.get("unmapped", "omit")
    default = None
    if isinstance(unmapped, YMap) and set(unmapped) == {"value"}:
        default, unmapped = str(unmapped["value"]), "value"
    elif unmapped not in ("omit", "keep", "error"):
        _raise("unmapped: is omit, keep, error or {value: CODE}", doc.pos("unmapped"))
    return Table(file.stem, {str(k): str(v) for k, v in entries.items()}, str(unmapped), default)


def _raise(reason: str, pos: Pos) -> None:
    raise MappingError(reason, file=pos[0], line=pos[1], column=pos[2])


class _Compiler:
    """Compiles one file; records every error it finds (lint), or the first (load)."""

    def __init__(self, path: Path, version: str, tables: dict[str, Table] | None, display: str | None, errors: list[MappingError]) -> None:
        self.path, self.version, self.display, self.errors = path, version, display or str(path), errors
        self.tables = tables if tables is not None else load_tables(path.parent)
        self.defs: VersionDefs = version_defs(version)
        self.with_offset = keeps_offset(version)

    def fail(self, reason: str, pos: Pos) -> Skip:
        self.errors.append(MappingError(reason, file=pos[0], line=pos[1], column=pos[2]))
        return Skip()

    def compile(self) -> OutboundMapping | None:
        doc = load_yaml(self.path, display=self.display)
        try:
            return self._top(doc)
        except Skip:
            return None

    def _top(self, doc: Any) -> OutboundMapping:
        if not isinstance(doc, YMap):
            raise self.fail("an outbound mapping is a mapping with outbound:, message:, events: and segments:", Pos((self.display, 1, 1)))
        self._keys(doc, _TOP_KEYS)
        if doc.get("outbound") != self.path.stem:
            raise self.fail(f"outbound: must be the file's name, {self.path.stem!r}", doc.pos("outbound"))
        if doc.get("format", "hl7v2") != "hl7v2":
            raise self.fail("format: must be hl7v2 in mappings/outbound/hl7v2", doc.pos("format"))
        code = doc.get("message")
        if not isinstance(code, str) or not code.isalnum():
            raise self.fail("message: needs the message code written in MSH-9.1, e.g. ADT", doc.pos("message"))
        events = self._events(doc)
        segments, msh = self._segments(doc, events)
        return OutboundMapping(self.path.stem, self.display, self.version, code, events, msh, segments)

    def _keys(self, node: YMap, allowed: set[str]) -> None:
        for key in node:
            if key not in allowed:
                self.fail(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})", node.pos(key))

    def _events(self, doc: YMap) -> dict[str, str]:
        raw = doc.get("events")
        if isinstance(raw, YList) and raw and all(isinstance(e, str) for e in raw):
            events = {str(e): self.path.stem for e in raw}
        elif isinstance(raw, YMap) and raw and all(isinstance(v, str) for v in raw.values()):
            events = {str(k): str(v) for k, v in raw.items()}
        else:
            raise self.fail("events: needs a list of trigger events, or a mapping of event to message structure", doc.pos("events"))
        for i, (event, structure) in enumerate(events.items()):
            if not self.defs.has_structure(structure):
                pos = raw.pos(event) if isinstance(raw, YMap) else raw.pos(i)
                self.fail(f"{structure} (for {event}) is not a message structure of HL7 {self.version}", pos)
        return events

    def _segments(self, doc: YMap, events: dict[str, str]) -> tuple[tuple[_Segment, ...], tuple[tuple[int, FieldFn], ...]]:
        items = doc.get("segments")
        if not isinstance(items, YList) or not items:
            raise self.fail("segments: needs a list of segments, in message order", doc.pos("segments"))
        structures = [s for s in dict.fromkeys(events.values()) if self.defs.has_structure(s)]
        out: list[_Segment] = []
        msh: tuple[tuple[int, FieldFn], ...] = ()
        last = -1
        for i, item in enumerate(items):
            try:
                if not isinstance(item, YMap) or not isinstance(item.get("segment"), str):
                    raise self.fail("each segment needs `segment: NAME`", items.pos(i))
                name = item["segment"]
                last = self._place(name, structures, last, item.pos("segment"), first=i == 0)
                seg = self._segment(item, name)
                if name == "MSH":
                    msh = seg.fields
                else:
                    out.append(seg)
            except Skip:
                continue
        return tuple(out), msh

    def _place(self, name: str, structures: list[str], last: int, pos: Pos, *, first: bool) -> int:
        """Check *name* belongs to every structure, after the segment before it; return its place."""
        if not self.defs.has_segment(name):
            raise self.fail(f"{name} is not a segment of HL7 {self.version}", pos)
        if name == "MSH" and not first:
            raise self.fail("MSH, when given, comes first", pos)
        place = last
        for structure in structures:
            order = self.defs.segments_of(structure)
            if name not in order:
                raise self.fail(f"{name} is not a segment of {structure} in HL7 {self.version}", pos)
            place = order.index(name)
        if place < last:
            raise self.fail(f"{name} is out of order: {structures[-1]} puts it earlier", pos)
        return place

    def _segment(self, item: YMap, name: str) -> _Segment:
        self._keys(item, _SEGMENT_KEYS)
        resource = item.get("resource")
        if resource is not None and (not isinstance(resource, str) or not fhir_model.is_resource_type(resource)):
            raise self.fail(f"resource: {resource!r} is not a FHIR R4 resource type", item.pos("resource"))
        if name == "MSH" and resource is not None:
            raise self.fail("MSH has no resource: its fields take value: or context:", item.pos("resource"))
        fields = item.get("fields", YMap())
        if not isinstance(fields, YMap):
            raise self.fail("fields: is a mapping of SEG-n to a field spec", item.pos("fields"))
        defs = self.defs.fields_of(name)
        compiled: list[tuple[int, FieldFn]] = []
        for key, spec in fields.items():
            try:
                n = self._field_number(key, name, len(defs), fields.pos(key))
                compiled.append((n, FieldCompiler(self, name, n, defs[n - 1], resource).compile(spec, fields.pos(key))))
            except Skip:
                continue
        compiled.sort(key=lambda p: p[0])
        width = compiled[-1][0] if compiled else 0
        return _Segment(name, resource, bool(item.get("required", True)), tuple(compiled), width)

    def _field_number(self, key: str, segment: str, count: int, pos: Pos) -> int:
        prefix, _, number = key.partition("-")
        if prefix != segment or not number.isdigit() or int(number) < 1:
            raise self.fail(f"field {key!r} must be written {segment}-<number>", pos)
        n = int(number)
        if n > count:
            raise self.fail(f"{segment} has {count} fields in HL7 {self.version}; {key} does not exist", pos)
        if segment == "MSH" and n in MSH_OWNED:
            raise self.fail(f"{key} is written by the renderer (MSH-1, 2, 7, 9, 10, 12, 18)", pos)
        return n
