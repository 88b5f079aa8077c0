"""Lookup tables (ConceptMaps in YAML): translate a source code, and say what an unmapped one becomes.

    table: hl7-0001
    description: Administrative sex → FHIR AdministrativeGender
    source_system: http://terminology.hl7.org/CodeSystem/v2-0001
    map: {M: male, F: female, O: other, U: unknown, A: other, N: unknown}
    unmapped: {value: unknown}      # or: keep, omit, error, {fn: coding_system}

`keep` returns the code itself (as a Coding with `source_system` when the
table maps to Codings), so an unmapped code is never lost. `{fn: name}` gives
what the library function makes of the value as the rule read it, before the
rule's own `fn:` (which shapes only the key looked up: `fn: upper`): a
coding-system name the table does not list becomes coding_system's URI, in the
same rule that looks it up (the rule applies it: it needs the sender).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from router.errors import InvalidContent, MappingError, NotInTable
from router.mapping import fhir_model
from router.mapping._yaml import Pos, YMap
from router.mapping.library import LIBRARY, Function

Unmapped = Literal["keep", "omit", "error", "value", "fn"]
"""What a table does with a code it does not list."""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Table:
    """A compiled lookup table."""

    name: str
    entries: dict[str, Any]
    unmapped: Unmapped
    default: Any
    source_system: str | None
    codings: bool  # True when the mapped values are Codings (dicts)
    default_pos: Pos | None = None  # where `unmapped: {value: ...}` is written, for lint's errors about that value
    fallback: Function | None = None  # `unmapped: {fn: ...}`: the function the rule gives a value the table lacks (lookup returns None)

    def lookup(self, code: str, location: str | None) -> Any:
        """Translate *code*; None means "leave the element out" (`omit`), or, with `fallback`, "ask it".

        A code padded with spaces (`H `, as HL7 v2 senders pad) is looked up as the code
        it pads: only on a miss, so a listed code costs nothing more.
        """
        hit = self.entries.get(code)
        if hit is None and type(code) is str and (bare := code.strip()) != code:
            hit = self.entries.get(bare)
        if hit is not None:
            return dict(hit) if isinstance(hit, dict) else hit
        if self.unmapped == "value":
            return dict(self.default) if isinstance(self.default, dict) else self.default
        if self.unmapped == "keep":
            if self.codings:
                return self._kept(code, location)
            return code
        if self.unmapped == "error":
            raise NotInTable(f"code is not in table {self.name}", location=location)
        return None

    def _kept(self, code: str, location: str | None) -> dict[str, str] | None:
        """The Coding an unlisted code is kept as: its code a valid FHIR code (padding stripped), or the message refused.

        Coding.code is a FHIR `code` wherever the Coding goes, so a kept code is checked
        here (fhir_model.CODE); the table's own Codings are constants, checked at load.
        """
        try:
            fixed = fhir_model.CODE.fix(code)
        except ValueError as exc:
            raise InvalidContent(f"{exc} (table {self.name} keeps codes it does not list)", location=location) from None
        if fixed is None:
            return None
        return {"system": self.source_system, "code": fixed} if self.source_system else {"code": fixed}


def load_table(doc: YMap) -> Table:
    """Compile a table document.

    Raises:
        MappingError: unknown keys, a missing map, or a bad `unmapped`.
    """
    allowed = {"table", "description", "source_system", "map", "unmapped"}
    for key in doc:
        if key not in allowed:
            p = doc.pos(key)
            raise MappingError(f"unknown key {key!r} in a table (allowed: {', '.join(sorted(allowed))})", file=p[0], line=p[1], column=p[2])
    if not isinstance(doc.get("map"), dict):
        p = doc.pos("map")
        raise MappingError("a table needs map: with code: value pairs", file=p[0], line=p[1], column=p[2])
    raw = doc.get("unmapped", "keep")
    default = None
    fallback = None
    p = doc.pos("unmapped")
    if isinstance(raw, dict) and set(raw) == {"value"}:
        mode: Unmapped = "value"
        default = _plain(raw["value"])
    elif isinstance(raw, dict) and set(raw) == {"fn"}:
        mode = "fn"
        fallback = LIBRARY.get(str(raw["fn"]))
        if fallback is None or fallback.arity != 1:
            why = "is not one" if fallback is None else "takes any number" if fallback.arity < 0 else f"takes {fallback.arity}"
            raise MappingError(f"unmapped: {{fn: {raw['fn']}}} needs a library function of one value, and {raw['fn']!r} {why}", file=p[0], line=p[1], column=p[2])
    elif raw in ("keep", "omit", "error"):
        mode = raw
    else:
        raise MappingError("unmapped must be keep, omit, error, {value: ...} or {fn: <function of one value>}", file=p[0], line=p[1], column=p[2])
    entries = {str(k): _plain(v) for k, v in doc["map"].items()}
    codings = any(isinstance(v, dict) for v in entries.values())
    if fallback is not None and codings:
        raise MappingError("unmapped: {fn: ...} gives text: a table of Codings falls back to keep, omit, error or {value: ...}", file=p[0], line=p[1], column=p[2])
    return Table(str(doc["table"]), entries, mode, default, doc.get("source_system"), codings, doc.pos("unmapped") if mode == "value" else None, fallback)
