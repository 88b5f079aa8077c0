"""The compiled forms of a mapping: what the compiler builds and the engine runs.

A message mapping (MessageMapping) lists the resources it makes (ResourceUse), each by
a resource template (Template) whose rules (Rule) build the resource as one Block;
a datatype mapping (Datatype) is a Block that other rules reuse. Compiled once, at
load; only their closures run per message (Block.build is the hot path).

Split from compiler.py, which builds them from the YAML; importable from there too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.mapping._codegen import generate, generate_condition, generate_values
from router.mapping._patch import Patch
from router.mapping._steps import reader
from router.mapping._yaml import Pos
from router.mapping.conditions import Predicate
from router.mapping.runtime import IdentityOf, Produce, RunContext, Step, Target, identity_of

_MEMO_KEYS = itertools.count(1)
"""Numbers the resource uses whose resources the engine may remember (ResourceUse.memo)."""


@dataclass(slots=True)
class Rule:
    """A compiled rule: where it writes, when it applies, what it produces."""

    target: Target
    when: Predicate | None
    produce: Produce
    where: str  # file:line, for --explain and provenance
    source: str  # the source the author wrote, for --explain
    step: Step  # when, produce and put fused into one call: what Block.build runs
    source_path: Any = None  # the compiled `from`/`each` path, so --explain can name the position read


@dataclass(slots=True)
class Block:
    """An ordered list of rules that builds one object."""

    rules: list[Rule]
    steps: tuple[Step, ...] = field(init=False, repr=False)
    fast: Callable[..., dict[str, Any]] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.steps = tuple(rule.step for rule in self.rules)
        self.fast = generate(self.steps)  # the same steps written out as one function (_codegen.py)

    def build(self, scope: Any, ctx: RunContext, obj: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run every rule in order into *obj* (a new object by default).

        The hot path; the loop without --explain's trace is kept apart so it
        does nothing but call each rule's step.
        """
        if obj is None:
            obj = {}
        trace = ctx.trace
        if trace is None:
            if self.fast is not None:
                return self.fast(scope, ctx, obj)
            for step in self.steps:
                step(scope, ctx, obj)
            return obj
        prefix = ctx.trace_prefix
        for rule in self.rules:
            target = ".".join(rule.target.names)
            prefix.append(target)  # rules of nested blocks report their full path
            try:
                placed = rule.step(scope, ctx, obj)
            finally:
                prefix.pop()
            if placed:
                trace.append((".".join([*prefix, target]), rule.where, _positions(rule, scope)))
        return obj


def _positions(rule: Rule, scope: Any) -> str:
    """Name the positions a rule read (`PID-3[2].1`), or what the author wrote when there are none."""
    if rule.source_path is None:
        return rule.source
    try:
        locations = [item.location for item in rule.source_path.resolve(scope)]
    except Exception:  # noqa: BLE001 - --explain only: fall back to the text rather than fail the explanation
        return rule.source
    return ", ".join(dict.fromkeys(loc for loc in locations if loc)) or rule.source


@dataclass(slots=True)
class Datatype:
    """A reusable mapping from one source datatype to one FHIR type (e.g. CX → Identifier)."""

    name: str
    fhir_type: str
    block: Block


@dataclass(slots=True)
class Template:
    """A resource template: how one resource is built, and what makes two of them the same."""

    name: str
    fhir_type: str
    params: tuple[str, ...]
    prefer: tuple[str, ...]  # identifier systems, most trusted first
    fallback: tuple[Any, ...]  # paths hashed into an identity when no identifier is mapped
    block: Block
    pos: Pos
    required: tuple[tuple[str | tuple[str, ...], str], ...] = ()  # (element with min 1, or a choice's names, and the source its first rule reads)
    tiers: tuple[tuple[Any, tuple[Any, ...]], ...] = ()  # (condition or None, paths): fallback alternatives, the first that holds
    unidentified: str | None = None  # "display": without an identifier it is not written, and references to it carry its name
    earlier: tuple[str, ...] = ()  # parameters a `ref:` list or a `ref:` with `rules:` reads when it runs: made before this one
    value_only_refs: bool = False  # reads nothing but its value once those references are given (_message_checks._remember_refs)
    same_fields: tuple[tuple[str, tuple[str, int | None], Pos], ...] = ()  # (parameter, (segment, field or None), where) of each `same: PV1-7` or `same: DG1`: checked against the message (_message_checks._check_same_fields)
    shared: tuple[str, ...] = ()  # identifier systems that name a body several resources belong to (an organisasjonsnummer): see engine._unshared
    fallback_values: Callable[[Any, RunContext], list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tiers:
            self.fallback_values = _values_of(self.fallback)
            return
        tiers = tuple((when, _values_of(paths)) for when, paths in self.tiers)

        def fallback_values(scope: Any, ctx: RunContext) -> list[str]:
            for when, values in tiers:
                if when is None or when(scope):
                    return values(scope, ctx)
            return []

        self.fallback_values = fallback_values


def _values_of(paths: tuple[Any, ...]) -> Callable[[Any, RunContext], list[str]]:
    """A function giving the first value of each of *paths*, '' where none (see generate_values): generated, else through their readers."""
    readers = tuple(_part_reader(p) for p in paths)
    return generate_values(paths) or (lambda scope, ctx: [v if (v := read(scope, ctx)) is not None else "" for read in readers])


def _part_reader(part: Any) -> Callable[[Any, RunContext], str | None]:
    if type(part) is IdentityOf:
        return lambda scope, ctx: identity_of(ctx, part.param)
    read = reader(part)
    return lambda scope, ctx: read(scope)


@dataclass(slots=True)
class ResourceUse:
    """One resource a message mapping produces; or, without a template, a group whose resources are made once per instance."""

    name: str
    template: Template | None  # None: `each:` a segment group, only its `resources:` (ORU's PATIENT_RESULT)
    when: Predicate | None
    source: Any | None  # a path whose first value the template reads (value-based templates)
    bindings: dict[str, str]
    pos: Pos
    each: Any | None = None  # a path of groups, segments or values: one resource per item
    children: list[ResourceUse] = field(default_factory=list)  # produced inside each instance
    write: str = "update"  # "update": PUT on identity (the message is the truth); "create": only if absent; "by-id"; "reidentify"; "patch"
    patch: Patch | None = None  # with write "patch": the elements the engine's PATCH entry changes (_patch.py)
    explicit: frozenset[str] = frozenset()  # parameters bound with `with:` (must name produced resources)
    read_source: Callable[[Any], Any] | None = field(default=None, init=False, repr=False)  # reads `source`'s first value
    memo: int | None = field(default=None, init=False, repr=False)  # set: the engine builds it once per value (engine._one)

    def __post_init__(self) -> None:
        if self.when is not None:
            self.when = generate_condition(self.when) or self.when  # asked once per scope: written out, no memo
        if self.source is not None:
            self.read_source = reader(self.source)  # what source.resolve(scope)[0].raw gives, without the Items
            tpl = self.template
            assert tpl is not None  # noqa: S101 - a group (no template) takes no from: (_messages._group refuses it)
            if not tpl.fallback and getattr(tpl.block.fast, "value_only", False):
                self.memo = next(_MEMO_KEYS)  # unique in the process: a reloaded mapping never reads an older one's memo


@dataclass(slots=True)
class MessageMapping:
    """The compiled mapping for one message structure."""

    structure: str
    events: tuple[str, ...]
    resources: list[ResourceUse]
    file: str
    sha: str
    match: tuple[str, ...] = ()  # XML: the payload namespaces (or root names) this mapping converts
    document: tuple[Any, ...] = ()  # (identity paths, replaces-condition or None): see _messages.py
    owned_types: tuple[str, ...] = ()  # resource types the document owns (written with `update`)
    out_of_place: frozenset[str] = frozenset()  # segments refused where the structure has no place for them (an OBX with no OBR)
    requires: tuple[str, ...] = ()  # segments a message must carry, else it is refused naming the first missing (PID)
    once: tuple[str, ...] = ()  # segments the mapping applies once: a message with a second is refused at it (MRG[2])
    embedded: Any = None  # _embedded.Embedded: whole messages carried base64-encoded inside this one (M9.6's M1s)
