"""What FHIR R4 allows where: element names, cardinality and types, from fhir.resources.

Used when a mapping loads, never per message. fhir.resources 8 ships R4B models,
the nearest to R4 it has; the elements Helsebro maps are the same in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

_TYPE = re.compile(r"abc\.(\w+?)Type\b")
_PRIMITIVES = {"str", "bool", "int", "Decimal", "date", "datetime", "time", "float"}


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a FHIR type: its JSON name, whether it repeats, and its type."""

    name: str
    is_list: bool
    type_name: str | None  # a complex or backbone type's model name; None for primitives
    enum: tuple[str, ...] = ()


class UnknownType(LookupError):
    """Not a FHIR R4 resource or datatype name."""


@lru_cache(maxsize=None)
def _model(type_name: str) -> Any:
    try:
        return get_fhir_model_class(type_name)
    except (KeyError, ValueError, AttributeError) as exc:
        raise UnknownType(type_name) from exc


@lru_cache(maxsize=None)
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
        out[alias] = Element(alias, "List[" in text, m.group(1) if m else None, tuple(enum))
    return out


def is_resource_type(type_name: str) -> bool:
    """True when *type_name* names a FHIR resource."""
    try:
        model = _model(type_name)
    except UnknownType:
        return False
    return "resourceType" in model.model_fields or hasattr(model, "get_resource_type") and type_name[0].isupper() and "DomainResource" in [c.__name__ for c in model.__mro__]


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


@lru_cache(maxsize=None)
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


@lru_cache(maxsize=None)
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
