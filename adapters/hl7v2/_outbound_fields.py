"""Compile one field of an outbound mapping into a closure: values, repetitions, components, references.

outbound.py owns the file, its segments and their checks against the HL7
version; this module owns what one `SEG-n:` spec means (docs/outbound-hl7v2.md,
Fields). The closures it returns build escaped ER7 text straight from the
Bundle's dicts.

Over the 400-line guide (STYLE §12): the field language (alternatives, values,
components, references, functions, tables) is one recursive compiler; its
parts call each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from adapters.hl7v2._er7 import escape, escape_text, fhir_to_hl7_date, fhir_to_hl7_tm, fhir_to_hl7_ts, split_lines
from adapters.hl7v2._fhir_paths import FhirPath, PathSyntaxError, as_text, compile_fhir_condition, compile_fhir_path
from adapters.hl7v2._versions import FieldDef
from router.errors import MessageError
from router.mapping import fhir_model
from router.mapping._yaml import Pos, YList, YMap

__all__ = ["CONTEXT_NAMES", "FieldCompiler", "FieldFn", "RenderContext", "Skip", "Table", "left_out"]

CONTEXT_NAMES = frozenset({
    "event", "message_code", "structure", "control_id", "sent", "destination", "processing_id",
    "sending_application", "sending_facility", "receiving_application", "receiving_facility",
})
"""What `context:` may name: the source message's header, its time (`sent`, as HL7 TS) and the destination."""

FUNCTIONS = ("hl7_date", "hl7_ts", "hl7_time", "range_text", "lines", "family_name", "given_names", "coding_system_name")
"""The function library: FHIR date or dateTime (its Oslo day) → HL7 DT, FHIR dateTime → HL7 TS (offset rule per version),
FHIR time → HL7 TM, a Range or reference range (the element itself) → its text, else `low-high`, `>=low` or `<=high`,
text with line breaks → one repetition per line (a whole repeating field only), a name written in one
string, given names first (a Reference's display) → its last word (the family name) or the words before it,
and a Coding.system the inbound side made of a table 0396 name → that name again."""

_FIELD_KEYS = {"value", "context", "from", "each", "fn", "table", "else", "components", "resolve", "as", "when", "versions", "required", "up", "where", "note"}
_VALUE_KEYS = {"value", "context", "from", "fn", "table", "else", "up", "where", "when", "note"}
_MAX_UP = 16
"""Resources `up:` climbs at most: a bed, its room, ward, floor, building and site are six; a loop of references ends here."""
_VERSION = re.compile(r"\d+(\.\d+)*$")
_RANGES = ("Range", "ObservationReferenceRange")
"""What `fn: range_text` reads: an element with low and high (and, a reference range, text), not a value."""


def _covers(wanted: list[str], version: str) -> bool:
    """Tell whether one of the *wanted* versions is *version* or a release of it (2.3 covers 2.3.1)."""
    return any(version == v or version.startswith(v + ".") for v in wanted)


def left_out(spec: Any, version: str) -> bool:
    """Tell whether a field's spec (or every alternative of a list) has a well-formed `versions:` that leaves *version* out.

    Why: such a field is not checked against *version* at all, so a mapping may name a field a
    later version withdrew (AL1-6 from v2.7) for the versions that have it.
    """
    specs = spec if isinstance(spec, list) else [spec]
    for one in specs:
        raw = one.get("versions") if isinstance(one, dict) else None
        wanted = [str(v) for v in (raw if isinstance(raw, list) else [raw])] if raw is not None else []
        if not wanted or not all(_VERSION.match(v) for v in wanted) or _covers(wanted, version):
            return False
    return bool(specs)


@dataclass(slots=True)
class RenderContext:
    """One message's lookups: the Bundle's resources by type (in Bundle order) and by reference, and the context values."""

    by_type: dict[str, list[Any]]
    by_ref: dict[str, Any]
    values: dict[str, str]

    def follow(self, reference: Any) -> Any:
        """The Bundle entry's resource a Reference (an object with `reference`) points at, else None.

        Why: a hand-made Bundle's `reference` may be a list or an object, which as a key
        raised TypeError (a failed delivery) instead of leading nowhere.
        """
        target = reference.get("reference") if isinstance(reference, dict) else None
        return self.by_ref.get(target) if isinstance(target, str) else None


FieldFn = Callable[[Any, RenderContext], str]
"""Render one field's ER7 text (escaped, repetitions and components joined) from a resource."""

_ValueFn = Callable[[Any, RenderContext], "str | None"]
_ItemsFn = Callable[[Any, RenderContext], list[Any]]


@dataclass(frozen=True, slots=True)
class Table:
    """A FHIR code → HL7 code table, with what to do with a code it lacks."""

    name: str
    map: dict[str, str]
    unmapped: str  # omit, keep, value or error
    default: str | None

    def lookup(self, code: str, *, location: str | None = None) -> str | None:
        """Return the HL7 code for *code*, the default, the code itself, or None, as `unmapped` says.

        Raises:
            MessageError: `unmapped: error` and *code* is not in the map; at *location* (the field, `PID-8`),
                so the destination's dead letter says where, never the code.
        """
        got = self.map.get(code)
        if got is not None:
            return got
        if self.default is not None:
            return self.default
        if self.unmapped == "keep":
            return code
        if self.unmapped == "error":
            raise MessageError(f"table {self.name} has no entry for the code found", location=location)
        return None


class Skip(Exception):
    """An error was recorded; skip the rest of this part of the file."""


class Owner(Protocol):
    """What a field compiler needs from the file's compiler."""

    version: str
    with_offset: bool
    tables: dict[str, Table]
    broken_tables: frozenset[str]  # tables lint reported as broken: their users are not reported again

    def fail(self, reason: str, pos: Pos) -> Skip: ...


def _pos(node: Any, key: str, fallback: Pos) -> Pos:
    return node.pos(key) if isinstance(node, YMap) and key in node else fallback


class FieldCompiler:
    """Compiles the spec of field *n* of *segment*, whose paths start at *resource_type*."""

    def __init__(self, owner: Owner, segment: str, n: int, definition: FieldDef, resource_type: str | None) -> None:
        self.owner, self.segment, self.n, self.definition, self.resource_type = owner, segment, n, definition, resource_type
        self.label = f"{segment}-{n}"
        # formatted text (NTE-3, FT; TX) writes a line break as \.br\; every other type as \X0A\ (docs/outbound-hl7v2.md, Escapes)
        self.escape = escape_text if definition.datatype in ("FT", "TX") else escape

    def compile(self, spec: Any, pos: Pos) -> FieldFn:
        """Return the closure for *spec*: a path, a mapping of the keys in _FIELD_KEYS, or a list of alternatives."""
        if isinstance(spec, list):
            return self._alternatives(spec, pos)
        return self._one(spec, pos) or _empty

    def _one(self, spec: Any, pos: Pos) -> FieldFn | None:
        """Compile one spec; None when its versions: leave the receiver's version out."""
        part = self._part(spec, pos)
        if isinstance(part, _Repeated):
            part = part.field(self.definition.repeats)
        if part is not None and isinstance(spec, dict) and spec.get("required", False) is True:
            return _required(part, self.label)
        return part

    def _part(self, spec: Any, pos: Pos) -> FieldFn | _Repeated | None:
        """Compile one spec, an `each:` one kept apart item by item (see _alternatives); None when versions: leave it out."""
        if isinstance(spec, str):
            spec = {"from": spec}
        if not isinstance(spec, dict):
            raise self.owner.fail(f"{self.label}: a field is a path, a mapping (value, context, from, each, components …) or a list of those", pos)
        self._keys(spec, _FIELD_KEYS, pos)
        if "versions" in spec and not self._for_receiver(spec["versions"], _pos(spec, "versions", pos)):
            return None
        if {"each", "components", "resolve"} & set(spec):
            for key in ("up", "where"):
                if key in spec:
                    raise self.owner.fail(f"{self.label}: {key}: belongs to one value (a component, or a field without each:, components: or resolve:)", _pos(spec, key, pos))
            items, render = self._structured(spec, pos)
            when = self._condition(spec["when"], _pos(spec, "when", pos)) if "when" in spec else None
            repeated = _Repeated(str(spec["each"]) if "each" in spec else "", items, render, when)
            return repeated if "each" in spec else repeated.field(self.definition.repeats)
        if spec.get("fn") == "lines":
            fn = self._lines(spec, pos)
        else:
            value = self.value(_without(spec, ("when", "versions")), pos, self.resource_type)
            write = self.escape

            def fn(node: Any, ctx: RenderContext) -> str:
                got = value(node, ctx)
                return write(got) if got else ""

        if "when" in spec:
            fn = _when(fn, self._condition(spec["when"], _pos(spec, "when", pos)))
        return fn

    def _lines(self, spec: dict[str, Any], pos: Pos) -> FieldFn:
        """`fn: lines`: text with line breaks as one repetition per line, the way TX and FT carry them (OBX-5)."""
        if not self.definition.repeats:
            raise self.owner.fail(f"{self.label}: fn: lines writes one repetition per line, and {self.label} does not repeat in HL7 {self.owner.version}", _pos(spec, "fn", pos))
        value = self.value(_without(spec, ("when", "versions", "fn")), pos, self.resource_type)

        def fn(node: Any, ctx: RenderContext) -> str:
            got = value(node, ctx)
            return "~".join(escape(line) for line in split_lines(got)) if got else ""

        return fn

    def _alternatives(self, specs: list[Any], pos: Pos) -> FieldFn:
        """A list of specs: the first that gives a value wins (alternatives by `when:` or by `versions:`).

        Alternatives that all repeat over the same `each:` path are chosen item by item: each
        item's repetition is the first alternative's that gives one, in the items' order. Why: the
        Encounter names one attending doctor by a Practitioner (an HPR number) and another by a
        display only (docs/outbound-hl7v2.md, Locations and doctors); PV1-7 needs both, in order.
        """
        parts: list[FieldFn | _Repeated] = []
        for i, spec in enumerate(specs):
            ipos = specs.pos(i) if isinstance(specs, YList) else pos
            if isinstance(spec, list):
                raise self.owner.fail(f"{self.label}: an alternative is one spec, not another list", ipos)
            if isinstance(spec, dict) and "required" in spec:
                raise self.owner.fail(f"{self.label}: required: inside a list of alternatives would stop at the first; leave it out", _pos(spec, "required", ipos))
            part = self._part(spec, ipos)
            if part is not None:
                parts.append(part)
        if not specs:
            raise self.owner.fail(f"{self.label}: a list of alternatives needs at least one", pos)
        repeats = self.definition.repeats
        repeated = [p for p in parts if isinstance(p, _Repeated)]
        if len(parts) > 1 and len(repeated) == len(parts) and len({p.each for p in repeated}) == 1:
            return _per_item(repeated, repeats)
        fns = [p.field(repeats) if isinstance(p, _Repeated) else p for p in parts]
        if len(fns) <= 1:
            return fns[0] if fns else _empty

        def first(node: Any, ctx: RenderContext) -> str:
            for fn in fns:
                text = fn(node, ctx)
                if text:
                    return text
            return ""

        return first

    def _for_receiver(self, raw: Any, pos: Pos) -> bool:
        """Tell whether `versions:` (a version or a list; 2.3 covers 2.3.1) includes the receiver's version."""
        wanted = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
        if not wanted or not all(_VERSION.match(v) for v in wanted):
            raise self.owner.fail(f"{self.label}: versions: lists HL7 versions, e.g. [\"2.3\", \"2.4\"]", pos)
        return _covers(wanted, self.owner.version)

    def _condition(self, text: Any, pos: Pos, *, key: str = "when", type_name: str | None = None,
                   example: str = "valueQuantity or status=final") -> Callable[[Any], bool]:
        """Compile a condition (`when:`, a value's `when:`, `where:`) on *type_name* (the segment's resource), or fail at *pos*."""
        type_name = type_name or self.resource_type
        if type_name is None:
            raise self.owner.fail(f"{self.label}: {key}: needs the segment's resource (or the item of each:)", pos)
        if not isinstance(text, str):
            raise self.owner.fail(f"{self.label}: {key}: is a condition, e.g. {example}", pos)
        try:
            return compile_fhir_condition(text, type_name)
        except PathSyntaxError as exc:
            raise self.owner.fail(f"{self.label}: {key}: {exc}", pos) from None

    def _keys(self, spec: dict[str, Any], allowed: set[str], pos: Pos) -> None:
        for key in spec:
            if key not in allowed:
                raise self.owner.fail(f"{self.label}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})", _pos(spec, key, pos))

    def _path(self, text: Any, type_name: str | None, pos: Pos) -> FhirPath:
        if type_name is None:
            raise self.owner.fail(f"{self.label}: a path needs the segment's resource:, or use value: / context:", pos)
        if not isinstance(text, str):
            raise self.owner.fail(f"{self.label}: a path is text, e.g. name[0].family", pos)
        try:
            return compile_fhir_path(text, type_name)
        except PathSyntaxError as exc:
            raise self.owner.fail(f"{self.label}: {exc}", pos) from None

    def _structured(self, spec: dict[str, Any], pos: Pos) -> tuple[_ItemsFn, Callable[[Any, RenderContext], str]]:
        """The items an `each:`/`from:`/`resolve:` spec writes (before resolve:), and one item's escaped repetition."""
        if "each" in spec and "from" in spec:
            raise self.owner.fail(f"{self.label}: each: and from: exclude each other", pos)
        if {"value", "context"} & set(spec):
            raise self.owner.fail(f"{self.label}: value: and context: give one value; use them inside components:", pos)
        items, item_type = self._items(spec, pos)
        resolve = None
        if "resolve" in spec:
            resolve, item_type = self._resolve(spec, item_type, pos)
        elif "as" in spec:
            raise self.owner.fail(f"{self.label}: as: names the type resolve: leads to; there is no resolve:", _pos(spec, "as", pos))
        if "components" in spec:
            render_item = self._components(spec["components"], item_type, _pos(spec, "components", pos))
        else:
            if item_type is not None:
                raise self.owner.fail(f"{self.label}: the path reaches a {item_type}; say which parts go where with components:", pos)
            transform = self._transform(spec, pos)
            write = self.escape

            def render_item(item: Any, ctx: RenderContext) -> str:
                if isinstance(item, (dict, list)):  # an object where text belongs: no value, never its repr
                    return ""
                got = transform(as_text(item))
                return write(got) if got else ""

        if resolve is None:
            return items, render_item
        follow, render_found = resolve, render_item

        def render_resolved(item: Any, ctx: RenderContext) -> str:
            found = follow(item, ctx)
            return render_found(found, ctx) if found is not None else ""

        return items, render_resolved

    def _items(self, spec: dict[str, Any], pos: Pos) -> tuple[_ItemsFn, str | None]:
        key = "each" if "each" in spec else "from" if "from" in spec else None
        if key is None:
            if self.resource_type is None:
                raise self.owner.fail(f"{self.label}: components without from:/each: need the segment's resource:", pos)
            return (lambda node, ctx: [node] if node is not None else []), self.resource_type
        path = self._path(spec[key], self.resource_type, _pos(spec, key, pos))
        if key == "each":
            return (lambda node, ctx: path.all(node) if node is not None else []), path.type_name
        return (lambda node, ctx: path.all(node)[:1] if node is not None else []), path.type_name

    def _resolve(self, spec: dict[str, Any], item_type: str | None, pos: Pos) -> tuple[Callable[[Any, RenderContext], Any], str]:
        """`resolve:` + `as:`: the Bundle entry an item's Reference leads to (None: outside the Bundle, or another type), and that type."""
        ref = self._path(spec["resolve"], item_type, _pos(spec, "resolve", pos))
        if ref.type_name != "Reference":
            raise self.owner.fail(f"{self.label}: resolve: {ref.text} is not a Reference", _pos(spec, "resolve", pos))
        target = spec.get("as")
        if not isinstance(target, str) or not fhir_model.is_resource_type(target):
            raise self.owner.fail(f"{self.label}: resolve: needs as: <the FHIR resource type it points to>", _pos(spec, "as", pos))

        def resolved(item: Any, ctx: RenderContext) -> Any:
            reference = ref.first(item)
            found = ctx.follow(reference)
            return found if found is not None and found.get("resourceType") == target else None

        return resolved, target

    def _components(self, spec: Any, item_type: str | None, pos: Pos) -> Callable[[Any, RenderContext], str]:
        if not isinstance(spec, dict) or not spec:
            raise self.owner.fail(f"{self.label}: components: maps component numbers (1, 4, 4.2) to values", pos)
        count = self.definition.components
        if self.definition.datatype == "varies":  # OBX-5: the datatype is OBX-2's, chosen per message
            count = 99
        if count == 0:
            raise self.owner.fail(f"{self.label} is a {self.definition.datatype} in HL7 {self.owner.version}: it has no components", pos)
        parts: list[tuple[int, int, _ValueFn]] = []
        for key, sub in spec.items():
            kpos = _pos(spec, str(key), pos)
            text = str(key)
            comp, _, subcomp = text.partition(".")
            if not comp.isdigit() or (subcomp and not subcomp.isdigit()) or int(comp) < 1 or (subcomp and int(subcomp) < 1):
                raise self.owner.fail(f"{self.label}: component {text!r} must be a number (4) or number.number (4.2)", kpos)
            if int(comp) > count:
                raise self.owner.fail(f"{self.label} ({self.definition.datatype}) has {count} components in HL7 {self.owner.version}; {self.label}.{comp} does not exist", kpos)
            parts.append((int(comp), int(subcomp or 1), self.value({"from": sub} if isinstance(sub, str) else sub, kpos, item_type)))
        return _assemble(sorted(parts, key=lambda p: (p[0], p[1])))

    def value(self, spec: Any, pos: Pos, type_name: str | None) -> _ValueFn:
        """Compile a single-value spec: exactly one of value/context/from, then fn, table, else."""
        if not isinstance(spec, dict):
            raise self.owner.fail(f"{self.label}: a value is a path or a mapping with value:, context: or from:", pos)
        self._keys(spec, _VALUE_KEYS | ({"required"} if "required" in spec else set()), pos)
        sources = [k for k in ("value", "context", "from") if k in spec]
        if len(sources) != 1:
            raise self.owner.fail(f"{self.label}: give exactly one of value:, context:, from:", pos)
        if spec.get("fn") == "range_text":
            get = self._range(spec, sources[0], pos, type_name)
            spec = _without(spec, ("fn",))
        else:
            get = self._source(spec, sources[0], pos, type_name)
        if "when" in spec:
            get = self._value_when(spec, get, pos, type_name)
        if "up" in spec:
            get = self._up(spec, get, pos, type_name)
        elif "where" in spec:
            raise self.owner.fail(f"{self.label}: where: picks among the resources up: climbs to; give up: too", _pos(spec, "where", pos))
        transform = self._transform(spec, pos)
        fallback = self.value({"from": spec["else"]} if isinstance(spec["else"], str) else spec["else"], _pos(spec, "else", pos), type_name) if "else" in spec else None
        if fallback is None and "fn" not in spec and "table" not in spec:
            return get  # the common case, one call less per value

        def fn(node: Any, ctx: RenderContext) -> str | None:
            got = get(node, ctx)
            got = transform(got) if got else None
            if not got and fallback is not None:
                return fallback(node, ctx)
            return got

        return fn

    def _value_when(self, spec: dict[str, Any], get: _ValueFn, pos: Pos, type_name: str | None) -> _ValueFn:
        """`when:` in a value (a component): read it only when a condition on the item holds, else go on to `else:`.

        Why: one XTN repetition is a phone number (XTN.1/XTN.12) or an e-mail address (XTN.4),
        by the ContactPoint's own `system`; a condition on the segment's resource cannot tell them apart.
        """
        if type_name is None:
            raise self.owner.fail(f"{self.label}: when: needs the item the value is read from", _pos(spec, "when", pos))
        holds = self._condition(spec["when"], _pos(spec, "when", pos), type_name=type_name, example="system=email")

        def guarded(node: Any, ctx: RenderContext) -> str | None:
            return get(node, ctx) if node is not None and holds(node) else None

        return guarded

    def _up(self, spec: dict[str, Any], get: _ValueFn, pos: Pos, type_name: str | None) -> _ValueFn:
        """`up:` (a Reference path) and `where:`: read `from:` in the item, else in the resource it references, and so on up.

        Why: PV1-3 is a point of care, a room and a bed, and the canonical Encounter names the most
        granular Location only (v2-to-FHIR IG PL[Location]): the room is the bed's `partOf`, the ward
        the room's. `where:` picks the one of the right kind (physicalType), so a stay in a room with
        no bed still writes the room as PL.2. A reference outside the Bundle or to another type ends the climb.
        """
        upos = _pos(spec, "up", pos)
        if "from" not in spec:
            raise self.owner.fail(f"{self.label}: up: reads from: in each resource it climbs to", upos)
        if type_name is None or not fhir_model.is_resource_type(type_name):
            raise self.owner.fail(f"{self.label}: up: climbs from a resource (the segment's, or one resolve: leads to), not from {type_name or 'no resource'}", upos)
        ref = self._path(spec["up"], type_name, upos)
        if ref.type_name != "Reference":
            raise self.owner.fail(f"{self.label}: up: {ref.text} is not a Reference", upos)
        where = (self._condition(spec["where"], _pos(spec, "where", pos), key="where", type_name=type_name, example="physicalType.coding.code=ro")
                 if "where" in spec else None)

        def climbed(node: Any, ctx: RenderContext) -> str | None:
            for _ in range(_MAX_UP):
                if node is None:
                    return None
                if where is None or where(node):
                    got = get(node, ctx)
                    if got:
                        return got
                reference = ref.first(node)
                node = ctx.follow(reference)
                if node is not None and node.get("resourceType") != type_name:
                    return None
            return None

        return climbed

    def _source(self, spec: dict[str, Any], key: str, pos: Pos, type_name: str | None) -> _ValueFn:
        raw = spec[key]
        kpos = _pos(spec, key, pos)
        if key == "value":
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise self.owner.fail(f"{self.label}: value: is text (quote codes like \"01\")", kpos)
            const = str(raw)
            return lambda node, ctx: const
        if key == "context":
            if raw not in CONTEXT_NAMES:
                raise self.owner.fail(f"{self.label}: context: {raw!r} is not one of {', '.join(sorted(CONTEXT_NAMES))}", kpos)
            return lambda node, ctx: ctx.values.get(raw)
        texts = raw if isinstance(raw, list) else [raw]
        paths = [self._path(t, type_name, kpos) for t in texts]
        for path in paths:
            if path.type_name is not None:
                raise self.owner.fail(f"{self.label}: {path.text} reaches a {path.type_name}, not a value; name one of its elements", kpos)

        def first(node: Any, ctx: RenderContext) -> str | None:
            if node is None:
                return None
            for path in paths:
                got = path.first(node)
                if got is not None and not isinstance(got, (dict, list)):  # an object where text belongs (a hand-made Bundle) is no value
                    return as_text(got)
            return None

        return first

    def _range(self, spec: dict[str, Any], key: str, pos: Pos, type_name: str | None) -> _ValueFn:
        """`fn: range_text`: `from:` reaches a Range or a reference range, written as one text (OBX-7).

        Why: a reference range made elsewhere (a FHIR client) often has low and high and no text;
        OBX-7 was then empty. The inbound side reads `3.5-5.0`, `>=2` and `<=10` back to low and high.
        """
        fpos = _pos(spec, "fn", pos)
        if key != "from":
            raise self.owner.fail(f"{self.label}: fn: range_text reads from: a path to a Range or a referenceRange", fpos)
        raw = spec["from"]
        kpos = _pos(spec, "from", pos)
        paths = [self._path(t, type_name, kpos) for t in (raw if isinstance(raw, list) else [raw])]
        for path in paths:
            if path.type_name not in _RANGES:
                raise self.owner.fail(f"{self.label}: fn: range_text reads a Range or a referenceRange, and {path.text} is {path.type_name or 'a primitive'}", fpos)

        def first(node: Any, ctx: RenderContext) -> str | None:
            if node is None:
                return None
            for path in paths:
                text = _range_text(path.first(node))
                if text:
                    return text
            return None

        return first

    def _transform(self, spec: dict[str, Any], pos: Pos) -> Callable[[str], str | None]:
        steps: list[Callable[[str], str | None]] = []
        if "fn" in spec:
            name = spec["fn"]
            if name == "hl7_date":
                steps.append(fhir_to_hl7_date)
            elif name == "hl7_ts":
                with_offset = self.owner.with_offset
                steps.append(lambda v: fhir_to_hl7_ts(v, with_offset=with_offset))
            elif name == "hl7_time":
                steps.append(fhir_to_hl7_tm)
            elif name == "lines":
                raise self.owner.fail(f"{self.label}: fn: lines makes repetitions of a whole field; it cannot shape a component or an item", _pos(spec, "fn", pos))
            elif name == "family_name":
                steps.append(_family_name)
            elif name == "given_names":
                steps.append(_given_names)
            elif name == "coding_system_name":
                steps.append(_coding_system_name)
            else:
                raise self.owner.fail(f"{self.label}: fn: {name!r} is not one of {', '.join(FUNCTIONS)}", _pos(spec, "fn", pos))
        if "table" in spec:
            table = self.owner.tables.get(str(spec["table"]))
            if table is None:
                if str(spec["table"]) in self.owner.broken_tables:
                    raise Skip  # the table's own error is reported; one more per field that uses it would bury it
                raise self.owner.fail(f"{self.label}: no table {spec['table']!r} in tables/", _pos(spec, "table", pos))
            label = self.label
            steps.append(lambda code: table.lookup(code, location=label))
        if not steps:
            return lambda v: v
        if len(steps) == 1:
            return steps[0]

        def chain(v: str) -> str | None:
            got: str | None = v
            for step in steps:
                got = step(got) if got else None
            return got

        return chain


def _range_text(element: Any) -> str | None:
    """A Range or reference range as one text: its own `text`, else `low-high`, `>=low` or `<=high` (FHIR's bounds are inclusive)."""
    if not isinstance(element, dict):
        return None
    text = element.get("text")
    if isinstance(text, str) and text.strip():
        return text
    low, high = (_bound(element.get(side)) for side in ("low", "high"))
    if low and high:
        return f"{low}-{high}"
    if low:
        return f">={low}"
    return f"<={high}" if high else None


def _bound(quantity: Any) -> str | None:
    value = quantity.get("value") if isinstance(quantity, dict) else None
    return as_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _family_name(name: str) -> str | None:
    """The last word of a name written given names first ("LISA LEGE" → "LEGE").

    Why: a doctor named without an HPR number is a Reference with a display only, which
    Helsebro writes given names first, family name last (router/mapping/engine.py, _display);
    XCN wants them apart. A family name of two words ("BERG HANSEN") cannot be told from a
    middle name: its first word goes with the given names.
    """
    words = name.split()
    return words[-1] if words else None


def _given_names(name: str) -> str | None:
    """The words of a name before its last ("KARI ANNE NORDMANN" → "KARI ANNE"); see _family_name."""
    words = name.split()
    return " ".join(words[:-1]) or None


_V2_TABLE_URI = re.compile(r"^http://terminology\.hl7\.org/CodeSystem/v2-(\d{4})$")
_LOCAL_CODE_SYSTEM = re.compile(r"^urn:helsebro:local:.*:codesystem:([^:]+)$")


def _coding_system_name(system: str) -> str | None:
    """A Coding.system the inbound side made of a coding-system name (CWE.3) → that name; any other as it is.

    Why: inbound, a name its table does not list becomes a URI (router/mapping/library.py,
    _coding_system): `HL70078` is HL7's v2 table URI, a sender's `L` is
    `urn:helsebro:local:<sender>:codesystem:L`. A receiver of CWE.3 wants the name back, not
    the URI. A system this does not recognise is left to the table after it.
    """
    table = _V2_TABLE_URI.match(system)
    if table:
        return "HL7" + table.group(1)
    local = _LOCAL_CODE_SYSTEM.match(system)
    return local.group(1) if local else system


def _assemble(parts: list[tuple[int, int, _ValueFn]]) -> Callable[[Any, RenderContext], str]:
    """Join component values: `^` between components, `&` between subcomponents, trailing empties dropped."""
    width = parts[-1][0]
    subs = {c: max(s for cc, s, _ in parts if cc == c) for c, _, _ in parts}
    if all(s == 1 for s in subs.values()):
        return _assemble_flat(width, [(c - 1, fn) for c, _, fn in parts])

    def build(item: Any, ctx: RenderContext) -> str:
        got: dict[tuple[int, int], str] = {}
        for comp, sub, fn in parts:
            value = fn(item, ctx)
            if value:
                got[(comp, sub)] = escape(value)
        if not got:
            return ""
        comps = []
        for c in range(1, width + 1):
            if c not in subs:
                comps.append("")
                continue
            values = [got.get((c, s), "") for s in range(1, subs[c] + 1)]
            while values and not values[-1]:
                values.pop()
            comps.append("&".join(values))
        while comps and not comps[-1]:
            comps.pop()
        return "^".join(comps)

    return build


def _assemble_flat(width: int, parts: list[tuple[int, _ValueFn]]) -> Callable[[Any, RenderContext], str]:
    """The same join when no subcomponent is addressed: one list, no lookups."""

    def build(item: Any, ctx: RenderContext) -> str:
        out = [""] * width
        found = False
        for i, fn in parts:
            value = fn(item, ctx)
            if value:
                out[i] = escape(value)
                found = True
        if not found:
            return ""
        while not out[-1]:
            out.pop()
        return "^".join(out)

    return build


def _without(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """*spec* less *keys*, keeping a YMap's positions for the errors that follow."""
    if not any(k in spec for k in keys):
        return spec
    out = YMap((k, v) for k, v in spec.items() if k not in keys)
    if isinstance(spec, YMap):
        out.start, out.key_pos = spec.start, spec.key_pos
    return out


def _empty(node: Any, ctx: RenderContext) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class _Repeated:
    """A spec with `each:`, `from:` + components or `resolve:`: the items it writes, and one item's repetition."""

    each: str  # the `each:` path as written ("" for from: or the node itself): alternatives over one path go item by item
    items: _ItemsFn
    render: Callable[[Any, RenderContext], str]  # one item's escaped repetition, "" when it gives none
    when: Callable[[Any], bool] | None

    def field(self, repeats: bool) -> FieldFn:
        """The field: every item's repetition, or (*repeats* False: the receiver's version has one) the first."""
        items, render, when = self.items, self.render, self.when

        def fn(node: Any, ctx: RenderContext) -> str:
            if when is not None and (node is None or not when(node)):
                return ""
            out = []
            for item in items(node, ctx):
                text = render(item, ctx)
                if text:
                    out.append(text)
                    if not repeats:  # the receiver's version has one: the first wins
                        break
            return "~".join(out)

        return fn


def _per_item(parts: list[_Repeated], repeats: bool) -> FieldFn:
    """Alternatives over the same items: each item's repetition is the first part's (whose `when:` holds) that gives one."""
    items = parts[0].items
    choices = [(p.when, p.render) for p in parts]

    def fn(node: Any, ctx: RenderContext) -> str:
        renders = [render for when, render in choices if when is None or (node is not None and when(node))]
        out = []
        for item in items(node, ctx):
            for render in renders:
                text = render(item, ctx)
                if text:
                    out.append(text)
                    break
            if out and not repeats:
                break
        return "~".join(out)

    return fn


def _when(fn: FieldFn, condition: Callable[[Any], bool]) -> FieldFn:
    def guarded(node: Any, ctx: RenderContext) -> str:
        return fn(node, ctx) if node is not None and condition(node) else ""

    return guarded


def _required(fn: FieldFn, label: str) -> FieldFn:
    def checked(node: Any, ctx: RenderContext) -> str:
        text = fn(node, ctx)
        if not text:
            raise MessageError(f"{label} is required, and the Bundle has no value for it", location=label)
        return text

    return checked
