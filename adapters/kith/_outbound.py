"""Load and check an outbound XML mapping (mappings/outbound/kith/*.yaml) into a compiled element tree.

Owns the outbound language: its keys, their checks at load (every error is
``file:line:col: what is wrong``) and the compiled form. Filling the tree for
one message and wrapping it in a MsgHead is render.py's. The language is
described for mapping authors in docs/outbound-kith.md.

Why this adapter imports ``router.mapping._yaml`` and ``router.mapping.fhir_model``
(STYLE §1 says adapters import only the router's contracts and errors): one
YAML loader with positions serves every mapping (STYLE §3), and FHIR paths are
checked against the same FHIR definitions as the inbound mappings. Both are
used at load only, never per message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.kith._outbound_fns import FUNCTIONS, Getter, PathStep, compile_path, parse_path, text_of
from adapters.kith.envelope import MSGHEAD_NS
from router.errors import MappingError
from router.mapping._yaml import Pos, YList, YMap, load_yaml

__all__ = ["DESTINATION_FIELDS", "OWN_FIELDS", "Node", "OutboundMapping", "ResourceSpec", "Value", "load_outbound"]

DESTINATION_FIELDS = ("name", "queue", "receiver_her_id", "receiver_name")
"""What a path may read from the destination it renders for: ``destination.receiver_her_id`` …"""

OWN_FIELDS = ("organisation_name", "her_id")
"""What a path may read of Helsebro itself (engine.yaml `own`): ``own.her_id`` for MsgHead's Sender."""

_FIXED_ROOTS = {"destination": DESTINATION_FIELDS, "own": OWN_FIELDS}
"""Path roots that are not Bundle resources, with the fields each has."""

_TOP = {"message", "description", "type", "namespaces", "resources", "msghead", "body", "note"}
_RESOURCE = {"type", "required", "ref", "note"}
_MSGHEAD = {"sender", "receiver", "patient", "note"}
_NODE = {"element", "text", "attributes", "children", "when", "each", "as", "where", "first", "required", "note"}
_VALUE = {"from", "fn", "map", "default", "note"}
_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Value:
    """Text for an element or attribute: a constant, or a path read then turned by fn/map/default."""

    read: Callable[[dict[str, Any]], str | None]
    source: str
    """What the value is read from, in words safe to log: ``Encounter.period.start`` or ``constant``."""


@dataclass(frozen=True, slots=True)
class Node:
    """One element of the output tree, as compiled from one YAML node."""

    tag: str
    """Clark name, ``{namespace}Local``."""
    location: str
    """Its place in the message, e.g. ``MsgHead/MsgInfo/Patient/Ident``: for errors, never a value."""
    text: Value | None = None
    attributes: tuple[tuple[str, Value], ...] = ()
    children: tuple[Node, ...] = ()
    when: Getter | None = None
    each: Getter | None = None
    each_as: str = "item"
    where: tuple[tuple[Getter, frozenset[str]], ...] = ()
    first: bool = False
    required: bool = False


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """A named Bundle resource the mapping reads: the first of its type, or the one a reference names."""

    name: str
    type: str
    required: bool
    ref: Getter | None
    ref_source: str = ""


@dataclass(frozen=True, slots=True)
class OutboundMapping:
    """One compiled outbound mapping: what the message is, where its values come from, its element tree."""

    name: str
    file: str
    type_code: str
    type_name: str
    namespaces: tuple[tuple[str, str], ...]
    resources: tuple[ResourceSpec, ...]
    sender: tuple[Node, ...]
    receiver: tuple[Node, ...]
    patient: tuple[Node, ...]
    body: Node
    destination_reads: frozenset[str] = field(default_factory=frozenset)
    """The destination fields the mapping reads (``receiver_her_id`` …), checked when a destination uses it."""

    @property
    def payload_namespace(self) -> str:
        """The namespace of the body's root element: the payload standard's."""
        return self.body.tag[1:].split("}", 1)[0]


def load_outbound(path: Path) -> OutboundMapping:
    """Read and check one outbound mapping file.

    Raises:
        MappingError: with file:line:col, for a YAML error, an unknown or missing key, a wrong
            type, an unknown FHIR element, resource, prefix or function.
    """
    node = load_yaml(path)
    return _Compiler(str(path)).mapping(node, path.stem)


class _Compiler:
    """Turns the YAML nodes of one file into a compiled mapping, failing at the first error."""

    def __init__(self, file: str) -> None:
        self._file = file
        self._prefixes: dict[str, str] = {}
        self._destination_reads: set[str] = set()

    def _fail(self, pos: Pos, reason: str) -> MappingError:
        return MappingError(reason, file=pos[0], line=pos[1], column=pos[2])

    def _keys(self, node: Any, allowed: set[str], what: str, *, required: tuple[str, ...] = ()) -> YMap:
        if not isinstance(node, YMap):
            pos = node.pos() if isinstance(node, YList) else Pos((self._file, 1, 1))
            raise self._fail(pos, f"{what} must be a mapping of keys")
        for key in node:
            if key not in allowed:
                raise self._fail(node.pos(key), f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in node:
                raise self._fail(node.pos(), f"{what} needs `{key}`")
        return node

    def _map(self, node: Any, what: str) -> YMap:
        """A mapping whose keys are the author's own (prefixes, names, attributes): no key list to check."""
        if not isinstance(node, YMap):
            pos = node.pos() if isinstance(node, YList) else Pos((self._file, 1, 1))
            raise self._fail(pos, f"{what} must be a mapping of keys")
        return node

    def _string(self, node: YMap, key: str, what: str) -> str:
        value = node[key]
        if not isinstance(value, str) or not value.strip():
            raise self._fail(node.pos(key), f"{what}.{key} must be a non-empty string")
        return value

    def mapping(self, node: Any, stem: str) -> OutboundMapping:
        top = self._keys(node, _TOP, "the outbound mapping", required=("message", "type", "namespaces", "resources", "msghead", "body"))
        name = self._string(top, "message", "the mapping")
        if name != stem:
            raise self._fail(top.pos("message"), f"message {name!r} must be the file's name ({stem!r}): destinations name mappings by file")
        kind = self._keys(top["type"], {"V", "DN"}, "type", required=("V", "DN"))
        type_code, type_name = self._string(kind, "V", "type"), self._string(kind, "DN", "type")
        namespaces = self._map(top["namespaces"], "namespaces")
        for prefix in namespaces:
            if not _NCNAME.fullmatch(prefix) or not isinstance(namespaces[prefix], str):
                raise self._fail(namespaces.pos(prefix), f"namespace {prefix!r}: a prefix (a plain name) and a namespace URI")
        self._prefixes = dict(namespaces)
        scope, resources = self._resources(top["resources"])
        head = self._keys(top["msghead"], _MSGHEAD, "msghead", required=("sender", "receiver"))
        sender = self._nodes(head["sender"], scope, "MsgHead/MsgInfo/Sender", in_msghead=True, pos=head.pos("sender"))
        receiver = self._nodes(head["receiver"], scope, "MsgHead/MsgInfo/Receiver", in_msghead=True, pos=head.pos("receiver"))
        patient = self._nodes(head["patient"], scope, "MsgHead/MsgInfo/Patient", in_msghead=True, pos=head.pos("patient")) if "patient" in head else ()
        body = self._node(top["body"], scope, "MsgHead/Document/RefDoc/Content", in_msghead=False)
        if body.each is not None or body.when is not None:
            raise self._fail(top.pos("body"), "the body's root element is always written: no `each` or `when` on it")
        return OutboundMapping(
            name=name, file=self._file, type_code=type_code, type_name=type_name,
            namespaces=tuple(self._prefixes.items()), resources=resources,
            sender=sender, receiver=receiver, patient=patient, body=body,
            destination_reads=frozenset(self._destination_reads),
        )

    def _resources(self, node: Any) -> tuple[dict[str, str], tuple[ResourceSpec, ...]]:
        from router.mapping import fhir_model  # loads the FHIR definitions: load time only

        resources = self._map(node, "resources")
        scope: dict[str, str] = {root: root for root in _FIXED_ROOTS}
        out = []
        for name, spec_node in resources.items():
            if not _NAME.fullmatch(name) or name in scope:
                raise self._fail(resources.pos(name), f"resource name {name!r}: lower case letters, digits and _, not `destination` or `own`, each once")
            spec = self._keys(spec_node, _RESOURCE, f"resource {name}", required=("type",))
            kind = self._string(spec, "type", f"resource {name}")
            if not fhir_model.is_resource_type(kind):
                raise self._fail(spec.pos("type"), f"resource {name}: {kind!r} is not a FHIR R4 resource type")
            required = spec.get("required", False)
            if not isinstance(required, bool):
                raise self._fail(spec.pos("required"), f"resource {name}: required must be true or false")
            ref: Getter | None = None
            ref_source = ""
            if "ref" in spec:
                steps, last_type, ref_source = self._path(spec["ref"], spec.pos("ref"), "ref", scope)
                if last_type != "Reference":
                    raise self._fail(spec.pos("ref"), f"resource {name}: ref must end at a Reference, not at {last_type or 'a primitive'}")
                ref = compile_path(steps)
            scope[name] = kind
            out.append(ResourceSpec(name, kind, required, ref, ref_source))
        return scope, tuple(out)

    def _path(self, text: Any, pos: Pos, key: str, scope: dict[str, str]) -> tuple[tuple[PathStep, ...], str | None, str]:
        """Check the path *text* (at *pos*, under *key*); return its steps, the FHIR type it ends at (None: a primitive) and its words."""
        from router.mapping import fhir_model

        steps = parse_path(text) if isinstance(text, str) else None
        if steps is None:
            raise self._fail(pos, f"{key}: {text!r} is not a dotted path like encounter.period.start")
        root = steps[0].name
        if root not in scope:
            raise self._fail(pos, f"{key}: unknown name {root!r}; declare it under `resources` (known: {', '.join(sorted(scope))})")
        kind = scope[root]
        if kind in _FIXED_ROOTS:
            fields = _FIXED_ROOTS[kind]
            if len(steps) != 2 or steps[1].name not in fields or any(s.index is not None for s in steps):
                raise self._fail(pos, f"{key}: {kind} has {', '.join(fields)}")
            if kind == "destination":
                self._destination_reads.add(steps[1].name)
            return steps, None, f"{kind}.{steps[1].name}"
        words = ".".join([kind, *(s.name for s in steps[1:])])
        if len(steps) == 1:
            return steps, kind, words
        try:
            elements = fhir_model.walk(kind, [s.name for s in steps[1:]])
        except LookupError as exc:
            raise self._fail(pos, f"{key}: {exc.args[0] if exc.args else exc}") from exc
        return steps, elements[-1].type_name, words

    def _nodes(self, node: Any, scope: dict[str, str], parent: str, *, in_msghead: bool, pos: Pos) -> tuple[Node, ...]:
        if not isinstance(node, YList) or not node:
            raise self._fail(node.pos() if isinstance(node, YMap) else pos, f"{parent}: a list of elements")
        return tuple(self._node(child, scope, parent, in_msghead=in_msghead) for child in node)

    def _node(self, node: Any, scope: dict[str, str], parent: str, *, in_msghead: bool) -> Node:
        spec = self._keys(node, _NODE, "an element", required=("element",))
        tag, local = self._tag(spec, in_msghead=in_msghead)
        location = f"{parent}/{local}"
        each: Getter | None = None
        each_as = "item"
        where: tuple[tuple[Getter, frozenset[str]], ...] = ()
        if "each" in spec:
            steps, item_type, _words = self._path(spec["each"], spec.pos("each"), "each", scope)
            if item_type is None:
                raise self._fail(spec.pos("each"), f"each: {spec['each']} is a primitive; `each` walks repeating complex elements")
            each = compile_path(steps, whole_list=True)
            each_as = self._as(spec, scope)
            scope = {**scope, each_as: item_type}
            where = self._where(spec, scope, each_as)
        elif "as" in spec or "where" in spec or "first" in spec:
            key = next(k for k in ("as", "where", "first") if k in spec)
            raise self._fail(spec.pos(key), f"{key} belongs with `each`")
        first = self._flag(spec, "first")
        when = compile_path(self._path(spec["when"], spec.pos("when"), "when", scope)[0]) if "when" in spec else None
        text = self._value(spec, "text", scope) if "text" in spec else None
        attributes = self._attributes(spec, scope) if "attributes" in spec else ()
        children = self._nodes(spec["children"], scope, location, in_msghead=in_msghead, pos=spec.pos("children")) if "children" in spec else ()
        if text is not None and children:
            raise self._fail(spec.pos("text"), f"{local}: an element has text or children, not both")
        if text is None and not attributes and not children:
            raise self._fail(spec.pos("element"), f"{local}: give it text, attributes or children")
        return Node(tag, location, text, attributes, children, when, each, each_as, where, first, self._flag(spec, "required"))

    def _tag(self, spec: YMap, *, in_msghead: bool) -> tuple[str, str]:
        name = self._string(spec, "element", "element")
        prefix, _, local = name.rpartition(":")
        if not _NCNAME.fullmatch(local) or (prefix and not _NCNAME.fullmatch(prefix)):
            raise self._fail(spec.pos("element"), f"{name!r} is not an element name")
        if not prefix:
            if not in_msghead:
                raise self._fail(spec.pos("element"), f"{name!r}: body elements need a prefix from `namespaces` (e.g. po:{local})")
            return f"{{{MSGHEAD_NS}}}{local}", local
        if prefix not in self._prefixes:
            raise self._fail(spec.pos("element"), f"{name!r}: prefix {prefix!r} is not declared under `namespaces`")
        return f"{{{self._prefixes[prefix]}}}{local}", local

    def _as(self, spec: YMap, scope: dict[str, str]) -> str:
        name = spec.get("as", "item")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in scope:
            raise self._fail(spec.pos("as") if "as" in spec else spec.pos("each"), f"as: {name!r} must be a new lower-case name (it names each item)")
        return name

    def _where(self, spec: YMap, scope: dict[str, str], item: str) -> tuple[tuple[Getter, frozenset[str]], ...]:
        if "where" not in spec:
            return ()
        where = self._map(spec["where"], "where")
        out = []
        for key, allowed in where.items():
            steps, last_type, _ = self._path(f"{item}.{key}", where.pos(key), "where", scope)
            if last_type is not None:
                raise self._fail(where.pos(key), f"where: {key} is a {last_type}; compare a primitive element")
            values = allowed if isinstance(allowed, YList) else [allowed]
            if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise self._fail(where.pos(key), f"where: {key} takes a value or a list of values")
            out.append((compile_path(steps), frozenset(str(v) for v in values)))
        return tuple(out)

    def _flag(self, spec: YMap, key: str) -> bool:
        value = spec.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(spec.pos(key), f"{key} must be true or false")
        return value

    def _attributes(self, spec: YMap, scope: dict[str, str]) -> tuple[tuple[str, Value], ...]:
        attrs = self._map(spec["attributes"], "attributes")
        for name in attrs:
            if not _NCNAME.fullmatch(name):
                raise self._fail(attrs.pos(name), f"{name!r} is not an attribute name")
        return tuple((name, self._value(attrs, name, scope)) for name in attrs)

    def _value(self, node: YMap, key: str, scope: dict[str, str]) -> Value:
        raw = node[key]
        if isinstance(raw, (str, int, float, bool)):
            constant = text_of(raw)
            if constant is None:
                raise self._fail(node.pos(key), f"{key}: an empty constant; leave the {key} out instead")
            return Value(lambda _ctx, c=constant: c, "constant")  # type: ignore[misc]  # mypy cannot type a lambda whose defaults bind values
        spec = self._keys(raw, _VALUE, key, required=("from",))
        steps, last_type, words = self._path(spec["from"], spec.pos("from"), "from", scope)
        if last_type is not None:
            raise self._fail(spec.pos("from"), f"from: {words} is a {last_type}; name one of its elements")
        getter = compile_path(steps)
        fn = self._fn(spec)
        table = self._table(spec)
        default = text_of(spec["default"]) if "default" in spec else None
        return Value(_reader(getter, fn, table, default), words)

    def _fn(self, spec: YMap) -> Callable[[str], str | None] | None:
        if "fn" not in spec:
            return None
        name = spec["fn"]
        if name not in FUNCTIONS:
            raise self._fail(spec.pos("fn"), f"fn: unknown function {name!r} (known: {', '.join(sorted(FUNCTIONS))})")
        return FUNCTIONS[name]

    def _table(self, spec: YMap) -> dict[str, str] | None:
        if "map" not in spec:
            return None
        table = self._map(spec["map"], "map")
        out = {}
        for source, target in table.items():
            text = text_of(target)
            if text is None:
                raise self._fail(table.pos(source), f"map: {source!r} needs a value")
            out[str(source)] = text
        return out


def _reader(getter: Getter, fn: Callable[[str], str | None] | None, table: dict[str, str] | None, default: str | None) -> Callable[[dict[str, Any]], str | None]:
    """Compose read → fn → map → default into one closure, decided once at load."""

    def read(ctx: dict[str, Any]) -> str | None:
        value = text_of(getter(ctx))
        if value is not None and fn is not None:
            value = fn(value)
        if value is not None and table is not None:
            value = table.get(value)
        return default if value is None else value

    return read
