"""What FHIR R4 allows where: element names, cardinality and types, from fhir.resources.

Used when a mapping loads; per message only a primitive's ValueCheck runs, on values
read from the message that do not fit at first sight. fhir.resources 8 ships R4B models,
the nearest to R4 it has; the elements Helsebro maps are the same in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

_TYPE = re.compile(r"abc\.(\w+?)Type\b")
_PRIMITIVE = re.compile(r"(\w+)\([^()]*\)\]")
"""A primitive element's FHIR type as fhir.resources annotates it: `Annotated[str, Code()]`."""


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a FHIR type: its JSON name, whether it repeats, and its type."""

    name: str
    is_list: bool
    type_name: str | None  # a complex or backbone type's model name; None for primitives
    enum: tuple[str, ...] = ()
    primitive: str | None = None  # a primitive's FHIR type, first letter lower case as FHIR writes it ("code", "string", "uri")


class UnknownType(LookupError):
    """Not a FHIR R4 resource or datatype name."""


@cache
def _model(type_name: str) -> Any:
    try:
        return get_fhir_model_class(type_name)
    except (KeyError, ValueError, AttributeError) as exc:
        raise UnknownType(type_name) from exc


@cache
def elements(type_name: str) -> dict[str, Element]:
    """Return the elements of a FHIR type by JSON name.

    Raises:
        UnknownType: *type_name* is not a FHIR resource or datatype.
    """
    model = _model(type_name)
    out: dict[str, Element] = {}
    for field_name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        alias = info.alias or field_name
        text = str(info.annotation)
        m = _TYPE.search(text)
        enum = extra.get("enum_values") or ()
        p = None if m else _PRIMITIVE.search(text)
        primitive = p.group(1)[0].lower() + p.group(1)[1:] if p else None
        out[alias] = Element(alias, "List[" in text, m.group(1) if m else None, tuple(enum), primitive)
    return out


def is_resource_type(type_name: str) -> bool:
    """True when *type_name* names a FHIR resource."""
    try:
        model = _model(type_name)
    except UnknownType:
        return False
    return "resourceType" in model.model_fields or (hasattr(model, "get_resource_type") and type_name[0].isupper() and "DomainResource" in [c.__name__ for c in model.__mro__])


def walk(type_name: str, path: list[str]) -> list[Element]:
    """Resolve a dotted target path inside *type_name*.

    Raises:
        LookupError: with a plain-words reason naming the unknown element.
    """
    out: list[Element] = []
    current = type_name
    for i, part in enumerate(path):
        known = elements(current)
        if part not in known:
            where = ".".join([type_name, *path[:i]])
            close = sorted(k for k in known if k.lower().startswith(part[:3].lower()))[:4]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise LookupError(f"{where} has no element {part!r}{hint}")
        el = known[part]
        out.append(el)
        if i + 1 < len(path):
            if el.type_name is None:
                raise LookupError(f"{'.'.join([type_name, *path[: i + 1]])} is a primitive and has no element {path[i + 1]!r}")
            current = el.type_name
    return out


@cache
def required(type_name: str) -> tuple[str, ...]:
    """Return the JSON names of *type_name*'s elements with minimum cardinality 1."""
    model = _model(type_name)
    names = {model.model_fields[f].alias or f for f, info in model.model_fields.items() if info.is_required() and f != "resource_type"}
    try:
        names |= {model.model_fields[f].alias or f for f, _ext in model.get_required_fields(model.model_construct())}
    except (AttributeError, KeyError, TypeError):
        pass  # a model without primitive requirements
    known = elements(type_name)
    return tuple(sorted(n for n in names if n in known))


@cache
def required_choices(type_name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Return *type_name*'s choice elements with minimum cardinality 1, each as (`medication[x]`, its JSON names).

    `required` cannot list them: no one of `medicationCodeableConcept` and
    `medicationReference` is required, but one of them is (MedicationRequest.medication[x], 1..1).
    """
    model = _model(type_name)
    try:
        choices = model.get_one_of_many_fields(model.model_construct())
    except (AttributeError, TypeError):
        return ()  # a model without choice elements
    out = []
    for prefix, names in sorted(choices.items()):
        extra = model.model_fields[names[0]].json_schema_extra
        if isinstance(extra, dict) and extra.get("one_of_many_required") is True:
            out.append((f"{prefix}[x]", tuple(names)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ValueCheck:
    """The syntax FHIR gives a primitive type, and what a value read from a message is made to fit it.

    Why: a sender pads (`ABC ` in a fixed-width HL7 v2 field); FHIR's `code` forbids
    whitespace at either end and any inside but single spaces, and a Bundle holding one is
    not valid FHIR. Surrounding whitespace is no part of the value, so it is stripped;
    anything else is refused, the sender told where (the engine adds the position).
    """

    type_name: str
    pattern: re.Pattern[str]
    printable_fits: bool = False  # a value of printable characters and no space is of the type (a `code`): no match needed

    def fits(self, value: str) -> bool:
        """Tell whether *value* is of the type as it stands: the hot path's test, the pattern only when the quick one cannot tell."""
        return (self.printable_fits and value.isprintable() and " " not in value) or self.pattern.fullmatch(value) is not None

    def fix(self, value: str) -> str | None:
        """Return *value* stripped, or None when nothing is left.

        Raises:
            ValueError: it is still not of the type; the reason holds no part of the value.
        """
        stripped = value.strip()
        if not stripped:
            return None
        if self.pattern.fullmatch(stripped) is None:
            raise ValueError(f"not a valid FHIR {self.type_name}: whitespace inside it other than single spaces")
        return stripped


CODE = ValueCheck("code", re.compile(r"[^\s]+( [^\s]+)*"), printable_fits=True)
"""FHIR R4 `code`: no whitespace at either end, single spaces inside (the spec's regex; fhir.resources allows any one whitespace).

Printable with no space, a value holds no whitespace at all (str.isprintable counts the space as the one printable
whitespace), so it is a code: most codes are told so without the pattern."""

_CHECKS = {"code": CODE}
"""The primitive types whose values are checked: a constant at load, a value from the message as it is placed."""


def value_check(element: Element) -> ValueCheck | None:
    """The check for values placed in *element*, or None when its type has none."""
    return _CHECKS.get(element.primitive or "")


def invalid_constant(element: Element, value: Any) -> str | None:
    """Say why the constant *value* (from `value:` or a table) cannot stand in *element*, or None when it can.

    A structure is checked element by element by its FHIR type (a Coding's `code`).
    """
    if isinstance(value, dict):
        if element.type_name is None:
            return None  # a structure for a primitive: the callers' own check says so
        known = elements(element.type_name)
        for name, inner in value.items():
            el = known.get(name)
            if el is None:  # a misspelt key (`sytem:`) would be written out as it stands, and FHIR refuses the resource
                return f"{element.type_name} has no element {name!r}"
            for item in inner if isinstance(inner, list) else [inner]:
                why = invalid_constant(el, item)
                if why is not None:
                    return f"{name}: {why}"
        return None
    if element.type_name is None and element.primitive is not None and value is not None and not _holds(element.primitive, value):
        # YAML reads `NO`, `yes`, `0123` or `2025-01-10` unquoted as a boolean, a number or a date, not the text written
        return f"{value!r} is not a FHIR {element.primitive} (YAML read it as a {type(value).__name__}: quote it)"
    check = value_check(element)
    if check is not None and isinstance(value, str) and not check.fits(value):
        return f"{value!r} is not a valid FHIR {check.type_name} (no whitespace at either end, single spaces inside)"
    return None


_NUMBERS = {"integer": (int,), "positiveInt": (int,), "unsignedInt": (int,), "integer64": (int,), "decimal": (int, float)}
"""The primitives a YAML number stands for; every other primitive with a known type is text (booleans have none here)."""


def _holds(primitive: str, value: Any) -> bool:
    """Whether the YAML constant *value* is of the JSON kind FHIR's *primitive* is written as."""
    kinds = _NUMBERS.get(primitive, (str,))
    return isinstance(value, kinds) and not isinstance(value, bool)
