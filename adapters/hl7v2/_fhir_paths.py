"""Outbound source paths: dotted FHIR element paths with `[n]` indexes and `[path=value]` filters.

    identifier                        every Identifier
    name[0].given[1]                  the second given name of the first name
    identifier[system=urn:oid:2.16.578.1.12.4.1.4.4].value
    participant[type.coding.code=ATND]

A condition (`where:` of a repeating segment or group, `when:` of a field) is
the inside of such a filter, or a bare path: `clinicalStatus.coding.code=active`,
`status!=entered-in-error`, `valueQuantity` (has a value).

Compiled once into a callable, checked against FHIR R4 (router/mapping/fhir_model.py)
when the mapping loads; per message a path is a few dict lookups. Choosing
which resource a path starts from is the outbound compiler's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from router.mapping import fhir_model

__all__ = ["FhirPath", "PathSyntaxError", "as_text", "compile_fhir_condition", "compile_fhir_path"]

Getter = Callable[[Any], list[Any]]
"""Every value a path reaches from one node, in document order."""


class PathSyntaxError(ValueError):
    """A path that cannot be parsed, or names an element FHIR R4 does not have."""


@dataclass(frozen=True, slots=True)
class FhirPath:
    """A compiled path: its text, every value it reaches (`all`), and the FHIR type it ends in."""

    text: str
    all: Getter
    first: Callable[[Any], Any]  # the first value `all` would give, or None, without building the list
    type_name: str | None  # the complex type reached (e.g. "Reference"), None for a primitive
    is_list: bool  # whether any step may give more than one value


_STEP = re.compile(r"([A-Za-z][A-Za-z0-9_]*)(?:\[([^\]]*)\])?$")
_FILTER = re.compile(r"([A-Za-z][A-Za-z0-9_.]*)\s*(!?=)\s*(.+)$")


def _split(text: str) -> list[str]:
    """Split on dots outside brackets: filter values are often OIDs."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def compile_fhir_path(text: str, type_name: str) -> FhirPath:
    """Compile *text* relative to FHIR type *type_name* (a resource or datatype name).

    Raises:
        PathSyntaxError: bad syntax or an element *type_name* does not have, in plain words.
    """
    if not text or text != text.strip():
        raise PathSyntaxError(f"empty or padded path {text!r}")
    current: str | None = type_name
    steps: list[Callable[[list[Any]], list[Any]]] = []
    is_list = False
    names: list[tuple[str, int | None]] = []
    plain = True
    for i, part in enumerate(_split(text)):
        m = _STEP.match(part)
        if m is None:
            raise PathSyntaxError(f"{text!r}: step {part!r} is not `element`, `element[n]` or `element[path=value]`")
        name, bracket = m.group(1), m.group(2)
        if current is None:
            raise PathSyntaxError(f"{text!r}: {_prefix(text, i)} is a primitive and has no element {name!r}")
        try:
            element = fhir_model.walk(current, [name])[0]
        except LookupError as exc:
            raise PathSyntaxError(f"{text!r}: {exc}") from exc
        select = _bracket(text, bracket, element) if bracket is not None else None
        steps.append(_step(name, select))
        names.append((name, int(bracket) if bracket is not None and bracket.isdigit() else None))
        plain = plain and (bracket is None or bracket.isdigit())
        is_list = is_list or (element.is_list and not (bracket or "").isdigit())
        current = element.type_name
    getter = _chain(steps)
    first = _first_plain(tuple(names)) if plain else _first_of(getter)
    return FhirPath(text, getter, first, current, is_list)


def compile_fhir_condition(text: str, type_name: str) -> Callable[[Any], bool]:
    """Compile a condition on a node of FHIR type *type_name*: `path=value`, `path!=value`, or `path` (has a value).

    Raises:
        PathSyntaxError: bad syntax or an element *type_name* does not have.
    """
    m = _FILTER.match(text)
    if m is None:
        path = compile_fhir_path(text, type_name)
        return lambda node: path.first(node) is not None
    inner = compile_fhir_path(m.group(1), type_name)
    wanted, negate = m.group(3).strip(), m.group(2) == "!="
    return lambda node: any(as_text(v) == wanted for v in inner.all(node)) != negate


def _first_of(getter: Getter) -> Callable[[Any], Any]:
    def first(node: Any) -> Any:
        got = getter(node)
        return got[0] if got else None

    return first


def _first_plain(names: tuple[tuple[str, int | None], ...]) -> Callable[[Any], Any]:
    """Depth first, stopping at the first value: the hot path of a mapping is paths like `name.family` or `coding[0].code`."""
    last = len(names) - 1

    def walk(node: Any, i: int) -> Any:
        name, index = names[i]
        value = node.get(name) if isinstance(node, dict) else None
        if value is None:
            return None
        if index is not None:  # [n] on a repeating element: that one item, or nothing
            value = value[index] if isinstance(value, list) and len(value) > index else None
            if value is None:
                return None
        if i == last:
            return (value[0] if value else None) if isinstance(value, list) else value
        if isinstance(value, list):
            for item in value:
                got = walk(item, i + 1)
                if got is not None:
                    return got
            return None
        return walk(value, i + 1)

    return lambda node: walk(node, 0)


def _prefix(text: str, i: int) -> str:
    return ".".join(_split(text)[:i])


def _bracket(text: str, bracket: str, element: fhir_model.Element) -> Callable[[list[Any]], list[Any]]:
    if bracket.isdigit():
        if not element.is_list:
            raise PathSyntaxError(f"{text!r}: {element.name} does not repeat, so [{bracket}] has nothing to pick")
        n = int(bracket)
        return lambda items: items[n : n + 1]
    m = _FILTER.match(bracket)
    if m is None or element.type_name is None:
        raise PathSyntaxError(f"{text!r}: [{bracket}] is neither an index nor a filter `path=value` on a complex element")
    inner = compile_fhir_path(m.group(1), element.type_name)
    wanted, negate = m.group(3).strip(), m.group(2) == "!="

    def keep(items: list[Any]) -> list[Any]:
        return [it for it in items if (any(as_text(v) == wanted for v in inner.all(it))) != negate]

    return keep


def _step(name: str, select: Callable[[list[Any]], list[Any]] | None) -> Callable[[list[Any]], list[Any]]:
    def step(nodes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            if isinstance(node, dict):
                value = node.get(name)
                if value is None:
                    continue
                if isinstance(value, list):
                    out.extend(value)
                else:
                    out.append(value)
        return select(out) if select is not None and out else out

    return step


def _chain(steps: list[Callable[[list[Any]], list[Any]]]) -> Getter:
    if len(steps) == 1:
        only = steps[0]
        return lambda node: only([node])

    def run(node: Any) -> list[Any]:
        nodes = [node]
        for step in steps:
            nodes = step(nodes)
            if not nodes:
                return nodes
        return nodes

    return run


def as_text(value: Any) -> str:
    """Return a primitive as HL7 text: booleans lower case, as FHIR JSON writes them; decimals without an exponent.

    Why the decimals: a Bundle's decimal is a float, and `str(0.00001)` is `1e-05`, which
    HL7 NM (OBX-5, SN's numbers) does not allow: it has a sign, digits and a point only.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text else text
    return str(value)

