"""Outbound HL7 v2 mappings: load mappings/outbound/hl7v2/*.yaml, check them, compile them to closures.

A mapping says which segments a message has and where each field's value
comes from in the canonical Bundle (docs/outbound-hl7v2.md). Everything is
checked when it loads, against the receiver's HL7 version (hl7apy tables) and
FHIR R4, with errors at file:line:col; per message only the compiled closures
run. Building MSH, encoding and publishing are render.py's.

Over the 400-line guide (STYLE §12): the compiler of the segment tree
(segments, repeating segments, groups) and its runtime classes share one error
list and one structure cursor; split, both would travel through every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from adapters.hl7v2._er7 import keeps_offset
from adapters.hl7v2._fhir_paths import FhirPath, PathSyntaxError, compile_fhir_condition, compile_fhir_path
from adapters.hl7v2._outbound_fields import CONTEXT_NAMES, FieldCompiler, FieldFn, RenderContext, Skip, Table, left_out
from adapters.hl7v2._versions import StructureCursor, StructureError, VersionDefs, version_defs
from router.errors import MappingError, MessageError
from router.mapping import fhir_model
from router.mapping._yaml import Pos, YList, YMap, load_yaml

__all__ = ["CONTEXT_NAMES", "MSH_OWNED", "OutboundMapping", "RenderContext", "lint_outbound", "load_outbound", "load_tables"]

MSH_OWNED = frozenset({1, 2, 7, 9, 10, 12, 18})
"""MSH fields the renderer writes itself (delimiters, time, type, control id, version, charset)."""

_SEGMENT_KEYS = {"segment", "resource", "each", "as", "where", "required", "events", "fields", "note"}
_GROUP_KEYS = {"group", "each", "as", "where", "required", "events", "segments", "note"}
_TOP_KEYS = {"outbound", "format", "description", "message", "events", "segments", "note"}


@dataclass(frozen=True, slots=True)
class _Segment:
    """One segment line, from a resource of the Bundle, the enclosing loop's item, or no resource at all."""

    name: str
    resource: str | None  # the first resource of this type; None: the loop's item (or none, outside a loop)
    required: bool
    fields: tuple[tuple[int, FieldFn], ...]
    width: int
    set_id: bool  # SEG-1 is a Set ID the mapping leaves to the loop: 1..n
    events: frozenset[str] | None  # written only for these trigger events; None: for every event

    def emit(self, scope: Any, ctx: RenderContext, out: list[str], index: int | None) -> None:
        """Append this segment's line to *out*, read from *scope* (the loop's item) or its own resource."""
        if self.events is not None and ctx.values["event"] not in self.events:
            return
        node = scope
        if self.resource is not None:
            found = ctx.by_type.get(self.resource)
            if not found:
                if self.required:
                    raise MessageError(f"the Bundle has no {self.resource}, which {self.name} is built from", location=self.name)
                return
            node = found[0]
        values = [""] * self.width
        for n, fn in self.fields:
            values[n - 1] = fn(node, ctx)
        if self.set_id and index is not None:
            values[0] = str(index)
        while values and not values[-1]:
            values.pop()
        out.append(self.name + "|" + "|".join(values) if values else self.name)


@dataclass(frozen=True, slots=True)
class _Loop:
    """A repeating segment or a segment group: its body once per resource (or element) `each:` gives, Set IDs 1..n."""

    label: str  # "AL1", "group ORDER_OBSERVATION": for the reason of a MessageError
    missing: str  # "the Bundle has no DiagnosticReport", "the DiagnosticReport has no result"
    items: Callable[[Any, RenderContext], Sequence[Any]]
    where: Callable[[Any], bool] | None
    required: bool
    events: frozenset[str] | None
    body: tuple[_Segment | _Loop, ...]

    def emit(self, scope: Any, ctx: RenderContext, out: list[str], index: int | None) -> None:
        """Append the body's lines for every item, in Bundle (or element) order."""
        if self.events is not None and ctx.values["event"] not in self.events:
            return
        items = self.items(scope, ctx)
        if self.where is not None:
            items = [item for item in items if self.where(item)]
        if not items:
            if self.required:
                raise MessageError(f"{self.missing}, which {self.label} is built from", location=self.label)
            return
        for i, item in enumerate(items, 1):
            for part in self.body:
                part.emit(item, ctx, out, i)


@dataclass(frozen=True, slots=True)
class OutboundMapping:
    """One compiled outbound mapping for one HL7 version."""

    name: str
    file: str
    version: str
    message_code: str
    events: dict[str, str]  # trigger event → message structure (MSH-9.3)
    msh: tuple[tuple[int, FieldFn], ...]
    segments: tuple[_Segment | _Loop, ...]  # each part's emit(None, ctx, lines, None) appends its lines


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


def load_tables(root: Path, *, errors: list[MappingError] | None = None, broken: set[str] | None = None) -> dict[str, Table]:
    """Load every table under *root*/tables/; with *errors*, collect each broken table's error and its name in *broken*.

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
            if broken is not None:
                broken.add(file.stem)
            continue
        out[table.name] = table
    return out


def lint_outbound(root: Path, *, version: str = "2.5.1") -> list[MappingError]:
    """Run every load-time check on the outbound mappings under *root* for *version*; return all errors."""
    errors: list[MappingError] = []
    broken: set[str] = set()
    tables = load_tables(root, errors=errors, broken=broken)
    for file in sorted(root.glob("*.yaml")):
        try:
            _Compiler(file, version, tables, None, errors, broken_tables=frozenset(broken)).compile()
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


def _raise(reason: str, pos: Pos) -> NoReturn:
    raise MappingError(reason, file=pos[0], line=pos[1], column=pos[2])


class _Compiler:
    """Compiles one file; records every error it finds (lint), or the first (load)."""

    def __init__(self, path: Path, version: str, tables: dict[str, Table] | None, display: str | None, errors: list[MappingError],
                 *, broken_tables: frozenset[str] = frozenset()) -> None:
        self.path, self.version, self.display, self.errors = path, version, display or str(path), errors
        self.tables = tables if tables is not None else load_tables(path.parent)
        # lint: tables reported with an error of their own; a field naming one is not reported again (as inbound, router/mapping/compiler.py)
        self.broken_tables = broken_tables
        self.defs: VersionDefs = version_defs(version)
        self.with_offset = keeps_offset(version)
        self.events: dict[str, str] = {}  # the file's trigger events → structures, once _events has read them
        self.cursor = StructureCursor(self.defs, {})

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

    def _segments(self, doc: YMap, events: dict[str, str]) -> tuple[tuple[_Segment | _Loop, ...], tuple[tuple[int, FieldFn], ...]]:
        items = doc.get("segments")
        if not isinstance(items, YList) or not items:
            raise self.fail("segments: needs a list of segments, in message order", doc.pos("segments"))
        self.events = events
        structures = {e: s for e, s in events.items() if self.defs.has_structure(s)}
        self.cursor = StructureCursor(self.defs, structures)
        msh: tuple[tuple[int, FieldFn], ...] = ()
        first = items[0]
        if isinstance(first, YMap) and first.get("segment") == "MSH":
            try:
                msh = self._msh(first)
            except Skip:
                pass
        skip = 1 if isinstance(first, YMap) and first.get("segment") == "MSH" else 0
        return self._entries(items, _Scope(None, None, looped=False), skip=skip), msh

    def _msh(self, item: YMap) -> tuple[tuple[int, FieldFn], ...]:
        self._keys(item, _SEGMENT_KEYS)
        for key in ("resource", "each"):
            if key in item:
                raise self.fail(f"MSH has no {key}: its fields take value: or context:", item.pos(key))
        return self._fields(item, "MSH", None)

    def _entries(self, items: YList, scope: _Scope, *, skip: int = 0) -> tuple[_Segment | _Loop, ...]:
        """Compile segments and groups in message order: the top level, or a group's segments:."""
        out: list[_Segment | _Loop] = []
        for i in range(skip, len(items)):
            item = items[i]
            try:
                if not isinstance(item, YMap) or not isinstance(item.get("segment", item.get("group")), str):
                    raise self.fail("each entry needs `segment: NAME`, or `group: NAME` with each: and segments:", items.pos(i))
                events = self._restricted(item, scope.events)
                own = frozenset(events) if "events" in item and events is not None else None
                inner = _Scope(scope.type_name, events, looped=scope.looped)
                if "group" in item:
                    out.append(self._group(item, inner, own))
                elif "each" in item:
                    out.append(self._repeating(item, inner, own))
                else:
                    out.append(self._segment(item, inner, own))
            except Skip:
                continue
        return tuple(out)

    def _restricted(self, item: YMap, outer: frozenset[str] | None) -> frozenset[str] | None:
        """The trigger events an entry is written for: its events: (a subset of the file's), else its parent's."""
        if "events" not in item:
            return outer
        raw = item["events"]
        if not isinstance(raw, YList) or not raw or not all(isinstance(e, str) for e in raw):
            raise self.fail("events: lists the trigger events this entry is written for, e.g. [A01, A04]", item.pos("events"))
        for i, event in enumerate(raw):
            if event not in self.events or (outer is not None and event not in outer):
                raise self.fail(f"event {event} is not one of {', '.join(sorted(outer or self.events))}", raw.pos(i))
        return frozenset(raw)

    def _segment(self, item: YMap, scope: _Scope, events: frozenset[str] | None, *, loop: bool = False) -> _Segment:
        self._keys(item, _SEGMENT_KEYS)
        name = item["segment"]
        self._place(name, scope, item.pos("segment"), repeated=loop or scope.looped)
        resource = item.get("resource")
        if resource is not None:
            if "each" in item:
                raise self.fail("resource: and each: exclude each other (each: names what to repeat over)", item.pos("resource"))
            if not isinstance(resource, str) or not fhir_model.is_resource_type(resource):
                raise self.fail(f"resource: {resource!r} is not a FHIR R4 resource type", item.pos("resource"))
        if not loop:
            for key in ("as", "where"):
                if key in item:
                    raise self.fail(f"{key}: belongs to a segment or group with each:", item.pos(key))
        compiled = self._fields(item, name, resource if resource is not None else scope.type_name)
        defs = self.defs.fields_of(name)
        # SEG-1 of type SI (OBR-1, OBX-1, NTE-1, AL1-1 …) counts the loop's items, unless the mapping sets it.
        set_id = (loop or scope.looped) and defs[0].datatype == "SI" and not any(n == 1 for n, _ in compiled)
        width = max(compiled[-1][0] if compiled else 0, 1 if set_id else 0)
        required = item.get("required", True) is not False if not loop else True
        return _Segment(name, resource, required, compiled, width, set_id, events)

    def _fields(self, item: YMap, name: str, source: str | None) -> tuple[tuple[int, FieldFn], ...]:
        fields = item.get("fields", YMap())
        if not isinstance(fields, YMap):
            raise self.fail("fields: is a mapping of SEG-n to a field spec", item.pos("fields"))
        defs = self.defs.fields_of(name)
        compiled: list[tuple[int, FieldFn]] = []
        for key, spec in fields.items():
            if left_out(spec, self.version):
                continue  # versions: leaves this receiver out: a field its version lacks (AL1-6 from v2.7) is fine
            try:
                n = self._field_number(key, name, len(defs), fields.pos(key))
                compiled.append((n, FieldCompiler(self, name, n, defs[n - 1], source).compile(spec, fields.pos(key))))
            except Skip:
                continue
        return tuple(sorted(compiled, key=lambda p: p[0]))

    def _place(self, name: str, scope: _Scope, pos: Pos, *, repeated: bool) -> None:
        if name == "MSH":
            raise self.fail("MSH, when given, comes first", pos)
        if not self.defs.has_segment(name):
            raise self.fail(f"{name} is not a segment of HL7 {self.version}", pos)
        try:
            self.cursor.place(name, scope.events, repeated=repeated)
        except StructureError as exc:
            raise self.fail(str(exc), pos) from None

    def _repeating(self, item: YMap, scope: _Scope, events: frozenset[str] | None) -> _Loop:
        """A `segment:` with `each:`: the segment once per resource (or element) that each: gives."""
        items, type_name, missing = self._each(item, scope)
        segment = self._segment(item, _Scope(type_name, scope.events, looped=True), None, loop=True)
        return _Loop(segment.name, missing, items, self._where(item, type_name), item.get("required") is True, events, (segment,))

    def _group(self, item: YMap, scope: _Scope, events: frozenset[str] | None) -> _Loop:
        """A `group:` with `each:` and `segments:`: the group's segments once per resource, in order."""
        self._keys(item, _GROUP_KEYS)
        label = item["group"]
        if "each" not in item:
            raise self.fail(f"group {label}: needs each: (a resource type, or a path from the enclosing group's resource)", item.pos("group"))
        body = item.get("segments")
        if not isinstance(body, YList) or not body:
            raise self.fail(f"group {label}: segments: needs a list of segments, in message order", item.pos("group"))
        items, type_name, missing = self._each(item, scope)
        self.cursor.open_group()
        try:
            parts = self._entries(body, _Scope(type_name, scope.events, looped=True))
        finally:
            self.cursor.close_group()
        return _Loop(f"group {label}", missing, items, self._where(item, type_name), item.get("required") is True, events, parts)

    def _each(self, item: YMap, scope: _Scope) -> tuple[Callable[[Any, RenderContext], Sequence[Any]], str, str]:
        """Compile `each:` (+ `as:`): what to repeat over, the type of one item, and what an empty result lacks."""
        raw, pos = item["each"], item.pos("each")
        if not isinstance(raw, str) or not raw:
            raise self.fail("each: names a FHIR resource type (AllergyIntolerance) or a path from the group's resource (result)", pos)
        if raw[0].isupper():
            if not fhir_model.is_resource_type(raw):
                raise self.fail(f"each: {raw!r} is not a FHIR R4 resource type", pos)
            if "as" in item:
                raise self.fail("as: names the type a reference path leads to; each: names a resource type already", item.pos("as"))
            return (lambda scope, ctx: ctx.by_type.get(raw, ())), raw, f"the Bundle has no {raw}"
        if scope.type_name is None:
            raise self.fail(f"each: {raw} is a path, which needs an enclosing group's resource; name a resource type here", pos)
        try:
            path = compile_fhir_path(raw, scope.type_name)
        except PathSyntaxError as exc:
            raise self.fail(f"each: {exc}", pos) from None
        missing = f"the {scope.type_name} has no {raw}"
        if path.type_name == "Reference":
            target = item.get("as")
            if not isinstance(target, str) or not fhir_model.is_resource_type(target):
                raise self.fail(f"each: {raw} is a Reference; as: names the FHIR resource type it points to (e.g. as: Observation)", item.pos("as") if "as" in item else pos)
            return _resolver(path, target), target, missing
        if "as" in item:
            raise self.fail(f"each: {raw} is not a Reference ({scope.type_name}.{raw} is {path.type_name or 'a primitive'}), so there is nothing for as: to resolve", item.pos("as"))
        if path.type_name is None:
            raise self.fail(f"each: {raw} reaches a primitive; a segment needs an element with parts (e.g. note, not note.text)", pos)
        return (lambda scope, ctx: path.all(scope) if scope is not None else ()), path.type_name, missing

    def _where(self, item: YMap, type_name: str) -> Callable[[Any], bool] | None:
        if "where" not in item:
            return None
        raw = item["where"]
        if not isinstance(raw, str):
            raise self.fail("where: is a condition, e.g. clinicalStatus.coding.code=active", item.pos("where"))
        try:
            return compile_fhir_condition(raw, type_name)
        except PathSyntaxError as exc:
            raise self.fail(f"where: {exc}", item.pos("where")) from None

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


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where an entry sits: the type its paths start at, the events it is written for, whether a loop encloses it."""

    type_name: str | None
    events: frozenset[str] | None
    looped: bool


def _resolver(path: FhirPath, target: str) -> Callable[[Any, RenderContext], list[Any]]:
    """Follow every Reference at *path* to its Bundle entry (fullUrl, or Type/id); keep those of type *target*."""

    def resolved(scope: Any, ctx: RenderContext) -> list[Any]:
        out = []
        for ref in path.all(scope) if scope is not None else ():
            found = ctx.follow(ref)
            if found is not None and found.get("resourceType") == target:
                out.append(found)
        return out

    return resolved
