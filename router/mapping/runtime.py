"""Run compiled rules against a message: build resources, then a transaction Bundle.

Everything here is per message and kept lean: compiled rules are plain
callables, targets are pre-resolved tuples, and references are patched in
one pass over the sites recorded while building.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

from router.mapping.functions import uuid5_id

Produce = Callable[[Any, "RunContext"], list[Any]]
"""A compiled value source: (scope, context) → values to place at the target."""


class Ref:
    """A reference to a named resource, resolved once every resource exists."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass(slots=True)
class RunContext:
    """Per-message state: the function context, produced resources, pending references."""

    fn_ctx: Any
    full_urls: dict[str, str] = field(default_factory=dict)  # resource name → urn:uuid
    ref_sites: list[tuple[Any, Any, str]] = field(default_factory=list)  # (container, key, name)
    trace: list[tuple[str, str, str]] | None = None  # (target, rule file:line, source) for --explain
    bindings: dict[str, str] = field(default_factory=dict)  # template parameter → resource name


@dataclass(frozen=True, slots=True)
class Target:
    """A target path inside a resource: names and whether each step repeats."""

    names: tuple[str, ...]
    lists: tuple[bool, ...]

    def put(self, obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
        """Place *value*: intermediate lists extend their last item, the final list appends."""
        if len(self.names) == 1 and type(value) is str:  # the common case: a primitive at the top
            name = self.names[0]
            if self.lists[0]:
                items = obj.get(name)
                if items is None:
                    obj[name] = [value]
                else:
                    items.append(value)
            else:
                obj[name] = value
            return
        node = obj
        last = len(self.names) - 1
        for i, (name, is_list) in enumerate(zip(self.names, self.lists)):
            if i == last:
                if is_list:
                    items = node.setdefault(name, [])
                    if isinstance(value, list):
                        for v in value:
                            self._track(items, len(items), v, ctx)
                            items.append(v)
                    else:
                        self._track(items, len(items), value, ctx)
                        items.append(value)
                else:
                    self._track(node, name, value, ctx)
                    node[name] = value
                return
            if is_list:
                items = node.setdefault(name, [])
                if not items:
                    items.append({})
                node = items[-1]
            else:
                node = node.setdefault(name, {})

    @staticmethod
    def _track(container: Any, key: Any, value: Any, ctx: RunContext) -> None:
        if isinstance(value, Ref):
            ctx.ref_sites.append((container, key, value.name))


def resolve_refs(ctx: RunContext) -> None:
    """Turn every Ref into a Reference to the resource's fullUrl, or drop it if absent."""
    drops: list[tuple[Any, Any]] = []
    for container, key, name in ctx.ref_sites:
        url = ctx.full_urls.get(name)
        if url is None:
            drops.append((container, key))
        else:
            container[key] = {"reference": url}
    for container, key in reversed(drops):
        if isinstance(container, list):
            container.pop(key)
        else:
            container.pop(key, None)


def conditional_entry(resource_type: str, resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    """Return a Bundle entry that updates the resource with this identifier, or creates it."""
    rid = uuid5_id(resource_type, system, value)
    resource["id"] = rid
    return {
        "fullUrl": f"urn:uuid:{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource_type}?identifier={quote(system, safe=':/.')}|{quote(value, safe='')}"},
    }


def prune(obj: Any) -> bool:
    """Drop empty dicts and lists that rules left behind (FHIR forbids empty elements).

    Returns True when *obj* itself ended up empty. One pass, linear in size.
    """
    if isinstance(obj, dict):
        empty = [k for k, v in obj.items() if isinstance(v, (dict, list)) and prune(v)]
        for k in empty:
            del obj[k]
        return not obj
    if isinstance(obj, list):
        keep = [v for v in obj if not (isinstance(v, (dict, list)) and prune(v))]
        if len(keep) != len(obj):
            obj[:] = keep
        return not obj
    return False
