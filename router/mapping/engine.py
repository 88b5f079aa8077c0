"""Run a compiled message mapping: resources in order, identities, then a transaction Bundle."""

from __future__ import annotations

from typing import Any

from router.errors import InvalidContent
from router.mapping.compiler import MessageMapping, ResourceUse
from router.mapping.functions import uuid5_id
from router.mapping.runtime import RunContext, conditional_entry, prune, resolve_refs

FALLBACK_SYSTEM = "urn:helsebro:identity"
"""System of the identifier Helsebro derives when a source carries none (documented in docs/mapping-language.md)."""


def _identity(use: ResourceUse, resource: dict[str, Any], scope: Any) -> tuple[str, str]:
    idents = [i for i in resource.get("identifier", []) if i.get("system") and i.get("value")]
    tpl = use.template
    for system in tpl.prefer:
        for ident in idents:
            if ident["system"] == system:
                return ident["system"], ident["value"]
    if idents:
        return idents[0]["system"], idents[0]["value"]
    if tpl.fallback:
        parts = [it.raw for p in tpl.fallback for it in p.resolve(scope)[:1]]
        if parts:
            value = uuid5_id(tpl.fhir_type, *parts)
            resource.setdefault("identifier", []).append({"system": FALLBACK_SYSTEM, "value": value})
            return FALLBACK_SYSTEM, value
    raise InvalidContent(f"{use.name} ({tpl.fhir_type}) has no identifier to make it unique", location=None)


def run_mapping(mm: MessageMapping, scope: Any, fn_ctx: Any, *, trace: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """Build the transaction Bundle for one message.

    Raises:
        MessageError: a value is invalid (e.g. a national id that fails its check digits).
    """
    ctx = RunContext(fn_ctx, trace=trace)
    entries: list[dict[str, Any]] = []
    untidy: list[bool] = []  # per entry: may hold an empty element (see RunContext.untidy)
    seen: set[str] = set()
    for use in mm.resources:
        if use.when is not None and not use.when(scope):
            continue
        inner = scope
        if use.source is not None:
            items = use.source.resolve(scope)
            if not items:
                continue
            inner = scope.child(value=items[0].raw, value_loc=items[0].location)
        ctx.bindings = use.bindings
        resource: dict[str, Any] = {"resourceType": use.template.fhir_type}
        ctx.untidy = False
        use.template.block.build(inner, ctx, resource)
        if len(resource) == 1:
            continue
        system, value = _identity(use, resource, inner)
        entry = conditional_entry(use.template.fhir_type, resource, system, value)
        ctx.full_urls[use.name] = entry["fullUrl"]
        if entry["fullUrl"] in seen:
            continue  # the same business identity twice (e.g. attending = admitting): one entry
        seen.add(entry["fullUrl"])
        entries.append(entry)
        untidy.append(ctx.untidy)
    dropped = resolve_refs(ctx)
    for entry, flagged in zip(entries, untidy):
        if flagged or dropped:  # the rest cannot hold an empty element: skip the walk
            prune(entry["resource"])
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"tag": [{"system": "urn:helsebro:mapping", "code": f"{mm.structure}@{mm.sha}", "display": mm.file}]},
        "entry": entries,
    }
