"""The strict base for YAML settings models: unknown keys refused, frozen, and a number only when written as one.

engine.yaml (router/settings.py), routes.yaml (router/routing/model.py) and the
FHIR server blocks inside it (adapters/fhir/client.py, _auth.py) all build on
ConfigBase, so one setting is never stricter than its neighbour. Placing an error
at its file:line:col is the loaders' job. This module imports only pydantic, as
router/errors.py imports nothing: adapters may use it without an import cycle.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["ConfigBase", "Quoted", "config_message"]


class ConfigBase(BaseModel):
    """A block of engine.yaml or routes.yaml: unknown keys refused, frozen once loaded, and no true/false for a number.

    Pydantic takes `true` for an int or float field as 1: `window_seconds: true`
    loaded as a one-second duplicate window. YAML's booleans are never a number here.
    """

    # .nan and .inf are no setting's value: refused as "a finite number", not by a bound (`.nan` was
    # "less than or equal to 600", which sent the author looking at the bound, not the value).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_or_text_for_a_number(cls, data: Any) -> Any:
        # A model validator, as a field one may not run before a union's discriminator; the
        # boolean goes on as its YAML word, and text ("10") as Quoted, which the number field then
        # refuses at its own place. Pydantic took "10" for 10: a quoted number loaded as written.
        if not isinstance(data, dict):
            return data
        fixed = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            numeric = _numeric(field.annotation) if field is not None else None
            if numeric == "value" and isinstance(value, bool):
                fixed[name] = str(value).lower()
            elif numeric == "value" and isinstance(value, str):
                fixed[name] = Quoted(value)
            elif numeric == "items" and isinstance(value, list | tuple):
                fixed[name] = [Quoted(v) if isinstance(v, str) else v for v in value]
        return fixed


class Quoted:
    """Text where a number belongs (`prefetch: "10"`): the number field refuses it, and `config_message` says why."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


def config_message(error: Any) -> str:
    """The words for one pydantic error of engine.yaml or routes.yaml: pydantic's, or why quoted text is no number."""
    given = error.get("input")
    if isinstance(given, Quoted):
        return f"{given.text!r} is text, not a number: write the number without quotes"
    return str(error["msg"])


def _numeric(annotation: Any) -> Literal["value", "items"] | None:
    """"value" for a number field (int or float, perhaps optional or Annotated), "items" for a tuple of numbers."""
    kinds = {annotation, *get_args(annotation)}
    if bool not in kinds and kinds & {int, float}:
        return "value"
    if get_origin(annotation) is tuple and any(_numeric(a) == "value" for a in get_args(annotation) if a is not Ellipsis):
        return "items"
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    return None
