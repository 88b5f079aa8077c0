"""Load-time checks that a rule does what it reads as: sources that go together, and table values that fit their element.

Split from _rules.py, which compiles a rule; these only refuse, with file:line:col.
"""

from __future__ import annotations

from typing import Any

from router.mapping import fhir_model
from router.mapping._yaml import YMap
from router.mapping.tables import Table


def check_args(node: YMap, sources: list[str]) -> None:
    """Refuse what `fn:` with `args:` would silently leave out: a table, a datatype mapping, another source.

    Why: the function's result is the rule's value as it stands. A table translates a code read
    from one position, and a refusal by it (`unmapped: error`) names that position; a result
    made of several has none to name. No shipped mapping combines them, so the author is told
    what to write instead rather than given a rule that does something other than it reads.
    """
    from router.mapping.compiler import _err

    if "fn" not in node:
        raise _err("args: goes with fn: (a function of several paths)", node.pos("args"))
    if sources or "rules" in node:
        other = sources[0] if sources else "rules"
        raise _err(f"args: with fn: is the rule's source; {other}: is another: write one of them", node.pos(other))
    if "table" in node:
        raise _err(
            "table: is not applied to fn: with args: (a table translates a code read from one position): "
            "translate it in a rule of its own (from: <path> with table:), or leave table: out",
            node.pos("table"),
        )
    if "use" in node:
        raise _err("use: builds from one value read with from: or each:, not from fn: with args: (a text): leave use: out", node.pos("use"))


def check_table(node: YMap, table: Table, leaf: fhir_model.Element, target_text: str) -> None:
    """Check every value *table* may give (its map, and its `unmapped: {value: …}`) against the target *leaf*.

    The unmapped value is reported where the table writes it: it is given for every code
    the table does not list, so a wrong one is as wrong as a wrong entry, only rarer to see.
    """
    from router.mapping.compiler import _err

    if not table.codings and leaf.type_name is not None:
        raise _err(f"table {table.name} gives plain codes, but {target_text} is {leaf.type_name}", node.pos("table"))
    if table.codings and leaf.type_name is None:
        raise _err(f"table {table.name} gives structures, but {target_text} is a primitive", node.pos("table"))
    for value in table.entries.values():
        why = _table_value(value, leaf, target_text)
        if why is not None:
            raise _err(f"table {table.name} {why}", node.pos("table"))
    if table.unmapped == "value":
        why = _table_value(table.default, leaf, target_text)
        if why is not None:
            rule = node.pos("table")
            raise _err(f"table {table.name}'s unmapped: {{value: …}} {why} (table: at {rule[0]}:{rule[1]})", table.default_pos or rule)


def _table_value(value: Any, leaf: fhir_model.Element, target_text: str) -> str | None:
    """Why one value of a table cannot be placed in *leaf* (a plain code or a Coding), or None."""
    if leaf.type_name is None:
        if isinstance(value, dict):
            return f"gives a structure, but {target_text} is a primitive"
        if leaf.enum and "+" not in leaf.enum and isinstance(value, str) and value not in leaf.enum:  # "+": child codes fhir.resources does not list
            return f"maps to {value!r}, which {target_text} does not allow ({', '.join(leaf.enum)})"
        why = fhir_model.invalid_constant(leaf, value)
        return None if why is None else f"gives a value {target_text} cannot hold: {why}"
    if not isinstance(value, dict):
        return f"gives (a plain value), but {target_text} is {leaf.type_name}"
    if leaf.type_name not in ("Coding", "CodeableConcept"):
        known = fhir_model.elements(leaf.type_name)
        bad = [k for k in value if k not in known]
        if bad:
            return f"gives {bad[0]}, which {leaf.type_name} ({target_text}) does not have"
    as_coding = _CODING if leaf.type_name == "CodeableConcept" else leaf  # a Coding becomes the concept's coding
    why = fhir_model.invalid_constant(as_coding, value)
    return None if why is None else f"gives a value {target_text} cannot hold: {why}"


_CODING = fhir_model.Element("coding", False, "Coding")
"""What a Coding-valued table's value is checked as when it feeds a CodeableConcept."""
