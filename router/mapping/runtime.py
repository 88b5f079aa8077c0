"""Run compiled rules against a message: build resources, then a transaction Bundle.

Everything here is per message and kept lean: compiled rules are plain
callables, targets are pre-resolved tuples, and references are patched in
one pass over the sites recorded while building.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any
from urllib.parse import quote

from router.errors import InvalidContent
from router.mapping.functions import HELSEBRO_NAMESPACE

Produce = Callable[[Any, "RunContext"], list[Any]]
"""A compiled value source: (scope, context) → values to place at the target."""

Step = Callable[[Any, "RunContext", dict[str, Any]], bool]
"""A whole compiled rule: (scope, context, object) → whether it placed a value."""

Put = Callable[[dict[str, Any], Any, "RunContext"], None]
"""Places one value at a target (see `Target.put`)."""


class Ref:
    """A reference to one resource instance, resolved once every resource exists."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name  # the instance id (a top-level resource's id is its name)

    def __eq__(self, other: object) -> bool:
        # Two resources that point at the same instance are the same resource (identity merges).
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str, ...]:
        return (self.name,)

    def urls(self, ctx: RunContext) -> list[str]:
        """Return the fullUrl(s) this reference resolves to (none: the resource was not produced)."""
        url = ctx.full_urls.get(self.name)
        return [url] if url else []


class IdentityOf:
    """A part of a derived identity: the id of the resource a template parameter names (`ref(patient)` in `fallback:`).

    Why not the patient's fields (PID-3.1): those are whatever the sender lists
    first, which can be an explicit null or a different number from one message
    to the next. The Patient's id is its chosen identity (the national id first),
    so an allergy or result keyed by it stays one resource whatever the order.
    """

    __slots__ = ("param", "text")

    def __init__(self, param: str) -> None:
        self.param = param
        self.text = f"ref({param})"

    def __repr__(self) -> str:
        return self.text


def identity_of(ctx: RunContext, param: str) -> str:
    """The id of the resource *param* is bound to.

    Raises:
        InvalidContent: the message made no such resource. An allergy or a result
            that needs its patient to be told apart is refused without one, rather
            than keyed so that every patient's would be the same resource.
    """
    name = ctx.bindings.get(param, param)
    inst = ctx.env.get(name)
    url = ctx.full_urls.get(inst) if inst is not None else None
    if not url:
        raise MissingIdentity(param)
    return url[9:]  # "urn:uuid:<id>"


class MissingIdentity(InvalidContent):
    """A derived identity's `ref(param)` names a resource this message did not make (engine._identity says which)."""

    def __init__(self, param: str) -> None:
        super().__init__(f"its identity needs its {param}, which this message does not give", location=None)
        self.param = param


class MissingReference(InvalidContent):
    """A required reference names a resource this message did not make (engine.run_mapping says where it would come from)."""

    def __init__(self, reason: str, name: str) -> None:
        super().__init__(reason, location=None)
        self.name = name


class RefList(Ref):
    """References to every instance of a named resource produced inside one parent instance (`refs:`)."""

    __slots__ = ("parent",)

    def __init__(self, parent: str, name: str) -> None:
        super().__init__(name)
        self.parent = parent

    def _key(self) -> tuple[str, ...]:
        return (self.parent, self.name)

    def urls(self, ctx: RunContext) -> list[str]:
        """Return the children's fullUrls, in the order they were produced, each once."""
        out: list[str] = []
        for inst in ctx.children.get((self.parent, self.name), ()):
            url = ctx.full_urls.get(inst)
            if url and url not in out:
                out.append(url)
        return out


class SameRef(Ref):
    """A reference to the instance of a named resource made from one given segment or repetition (`ref:` with `same:`).

    Why: an Encounter lists its diagnoses (DG1[Encounter]) with each one's use and rank; each entry
    must point at the Condition made from its own DG1, not at every Condition or the first. Instances
    of an `each:` over segments are recorded by segment (RunContext.made_from), so this resolves to
    the one made from the same segment, or to nothing when no resource was made from it. So are the
    instances of an `each:` over a field's repetitions, by (segment index, field, repetition): each
    attending doctor (PV1-7) a participant of the stay by the Practitioner made from his own repetition.
    """

    __slots__ = ("segment",)

    def __init__(self, name: str, segment: int | tuple[int, int, int]) -> None:
        super().__init__(name)
        self.segment = segment  # the segment's index in the message, or (segment index, field, repetition)

    def _key(self) -> tuple[str, ...]:
        return (self.name, str(self.segment))

    def urls(self, ctx: RunContext) -> list[str]:
        inst = ctx.made_from.get((self.name, self.segment))
        url = ctx.full_urls.get(inst) if inst is not None else None
        return [url] if url else []

    def shown(self, ctx: RunContext) -> str | None:
        """The name of the instance made without an identifier (`unidentified: display`), or None."""
        inst = ctx.made_from.get((self.name, self.segment))
        return ctx.displays.get(inst) if inst is not None else None


@dataclass(slots=True)
class RunContext:
    """Per-message state: the function context, produced resources, pending references."""

    fn_ctx: Any
    full_urls: dict[str, str] = field(default_factory=dict)  # resource instance id → urn:uuid
    ref_sites: list[tuple[Any, Any, Ref, str]] = field(default_factory=list)  # (container, key, reference, instance holding it)
    env: dict[str, str] = field(default_factory=dict)  # resource name → the instance in view here
    current: str = ""  # the instance being built
    children: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (parent instance, name) → instances
    trace: list[tuple[str, str, str]] | None = None  # (target, rule file:line, source) for --explain
    bindings: dict[str, str] = field(default_factory=dict)  # template parameter → resource name
    trace_prefix: list[str] = field(default_factory=list)  # --explain: the path of the object being built
    untidy: bool = False  # a placed value may hold an empty element: the resource needs `prune`
    displays: dict[str, str] = field(default_factory=dict)  # instance not written for want of an identifier, or written as another's (a shared identity) → its name, for references
    made_from: dict[tuple[str, Any], str] = field(default_factory=dict)  # (resource name, segment index or (segment, field, repetition)) → the instance made from it (SameRef)
    same_at: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)  # (segment, field) → the repetition an `each:` over it is at (_each_rules._held_repetitions)
    held_reads: list[tuple[dict[str, Any], set[Any], set[Any]]] = field(default_factory=list)  # (element, its reads, the message's): counted if it is kept (_each_rules._held_segments)


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

    def setter(self, *, refs: bool) -> Put:
        """Return `put` specialised for this target; *refs* False promises no `Ref` values."""
        if refs:
            return self.put
        if len(self.names) != 1:
            put_any = self.put

            def put_deep(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
                put_any(obj, value, ctx)

            put_deep.plan = ("target", self.names, self.lists)  # type: ignore[attr-defined]  # _codegen.py writes it in line
            return put_deep
        name = self.names[0]
        put = self.put
        if not self.lists[0]:

            def set_one(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
                obj[name] = value

            set_one.plan = ("set", name)  # type: ignore[attr-defined]  # _codegen.py writes it in line
            return set_one

        def append(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
            if isinstance(value, list):
                put(obj, value, ctx)  # a list value extends the list
                return
            items = obj.get(name)
            if items is None:
                obj[name] = [value]
            else:
                items.append(value)

        append.plan = ("target", self.names, self.lists)  # type: ignore[attr-defined]
        return append

    @staticmethod
    def _track(container: Any, key: Any, value: Any, ctx: RunContext) -> None:
        if isinstance(value, Ref):
            ctx.ref_sites.append((container, key, value, ctx.current))


@cache
def _required(fhir_type: str) -> frozenset[str]:
    from router.mapping import fhir_model

    return frozenset(fhir_model.required(fhir_type))


def resolve_refs(ctx: RunContext) -> set[str]:
    """Turn every Ref into Reference(s) to fullUrls, or drop it when nothing was produced.

    Returns the instances where dropping one emptied its container: that is an
    empty element left behind, so those (and only those) need `prune`.
    """
    dropped: set[str] = set()
    in_lists: dict[int, tuple[list[Any], list[tuple[int, Ref, str]]]] = {}
    full_urls, displays = ctx.full_urls, ctx.displays
    for container, key, ref, inst in ctx.ref_sites:
        if type(container) is list:
            in_lists.setdefault(id(container), (container, []))[1].append((key, ref, inst))
            continue
        if container.get(key) is not ref:
            continue  # a later rule replaced this reference before it was resolved
        # Most references name one instance (subject, encounter): Ref.urls, without the call and the list.
        url = full_urls.get(ref.name) if type(ref) is Ref else next(iter(ref.urls(ctx)), None)
        if url:
            # with a name only when the resource was written as another's (engine._unshared)
            container[key] = {"reference": url, "display": shown} if displays and (shown := displays.get(ref.name)) else {"reference": url}
        elif type(ref) is Ref and (shown := ctx.displays.get(ref.name)):
            container[key] = {"display": shown}  # a doctor named without a number: the name, not a record of its own
        elif type(ref) is SameRef and (shown := ref.shown(ctx)):
            container[key] = {"display": shown}  # the same, made from this element's own repetition
        else:
            container.pop(key, None)
            if type(ref) is SameRef:
                # An element about one resource (a diagnosis entry and its use and rank) means nothing
                # without it: the whole element goes, not only its reference.
                container.clear()
            rtype = container.get("resourceType")
            if rtype is not None and key in _required(rtype):
                # Dropping it would leave invalid FHIR (a diagnosis for nobody): the sender hears why instead.
                raise MissingReference(f"{rtype}.{key} is required, but the {ref.name} it refers to is not in this message", ref.name)
            if not container:  # only an emptied container is an empty element
                dropped.add(inst)
    for container, sites in in_lists.values():
        for key, ref, inst in sorted(sites, key=lambda kv: kv[0], reverse=True):  # right to left: indexes stay valid
            urls = ref.urls(ctx)
            if not urls and (shown := ctx.displays.get(ref.name) if type(ref) is Ref else ref.shown(ctx) if type(ref) is SameRef else None):
                container[key : key + 1] = [{"display": shown}]
                continue
            named = displays.get(ref.name) if displays and type(ref) is Ref else None
            container[key : key + 1] = [{"reference": u, "display": named} if named else {"reference": u} for u in urls]
            if not container:
                dropped.add(inst)
    return dropped


_NAMESPACED = hashlib.sha1(HELSEBRO_NAMESPACE.bytes, usedforsecurity=False)
"""SHA-1 fed the namespace: each id copies it, cheaper than a new hash object (OpenSSL looks the digest up anew)."""
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
"""The RFC 4122 variant bits (10xx) set on a UUID's 17th hex digit."""


def resource_id(*parts: str) -> str:
    """Return `functions.uuid5_id(*parts)`, in a fraction of the time.

    uuid.uuid5 builds a UUID object and checks its fields; this copies a SHA-1
    already fed the namespace, takes the digest as hex and writes the version
    digit (5) and the variant digit in place. A test checks the two agree.
    Not cached: the resources built from a value alone are remembered whole
    (engine._one), and the rest (a patient, a stay, a result) rarely repeat.
    """
    h = _NAMESPACED.copy()
    h.update("|".join(parts).encode())
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
"""What `quote(value, safe='')` leaves as it is: most identifier values, so they skip it."""


@lru_cache(maxsize=1024)
def _quote_system(system: str) -> str:
    """Identifier systems are few and repeat in every message: quote each once."""
    return quote(system, safe=":/.")


def identifier_query(system: str, value: str) -> str:
    """The search `identifier=system|value`, quoted, that finds a resource by its identity (and keys its patient: router.logging.patient_key)."""
    safe = (value.isascii() and value.isalnum()) or _UNRESERVED.fullmatch(value)  # most values are digits: no pattern
    return f"identifier={_quote_system(system)}|{value if safe else quote(value, safe='')}"


def conditional_entry(resource_type: str, resource: dict[str, Any], system: str, value: str, *, create_only: bool = False, by_id: bool = False) -> dict[str, Any]:
    """Return a Bundle entry that updates the resource with this identifier, or creates it.

    With *create_only*, the entry creates it only when no resource has the identifier
    (POST with ifNoneExist) and otherwise leaves the stored one untouched. With
    *by_id*, it writes the resource at the id its identity gives (PUT Type/id):
    a merge uses this to retire the old Patient after its identifiers moved to
    the survivor, when a search by identifier would now find the survivor.
    """
    rid = resource_id(resource_type, system, value)
    resource["id"] = rid
    query = identifier_query(system, value)
    if by_id:
        request = {"method": "PUT", "url": f"{resource_type}/{rid}"}
    elif create_only:
        request = {"method": "POST", "url": resource_type, "ifNoneExist": query}
    else:
        request = {"method": "PUT", "url": f"{resource_type}?{query}"}
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource, "request": request}


def has_empty(value: Any) -> bool:
    """Tell whether *value* is, or holds, an empty dict or list (what `prune` removes)."""
    if isinstance(value, dict):
        return not value or any(has_empty(v) for v in value.values())
    if isinstance(value, list):
        return not value or any(has_empty(v) for v in value)
    return False


def prune(obj: Any) -> bool:
    """Drop empty dicts and lists that rules left behind (FHIR forbids empty elements).

    Returns True when *obj* itself ended up empty. One pass, linear in size.
    """
    if isinstance(obj, dict):
        return _prune_dict(obj)
    if isinstance(obj, list):
        return _prune_list(obj)
    return False


def _prune_dict(obj: dict[str, Any]) -> bool:
    empty = None
    for k, v in obj.items():
        if type(v) is str:  # most values: skip the two isinstance checks
            continue
        if (isinstance(v, dict) and _prune_dict(v)) or (isinstance(v, list) and _prune_list(v)):
            if empty is None:
                empty = [k]
            else:
                empty.append(k)
    if empty is not None:
        for k in empty:
            del obj[k]
    return not obj


def _prune_list(obj: list[Any]) -> bool:
    drop = False
    for v in obj:
        if type(v) is not str and ((isinstance(v, dict) and _prune_dict(v)) or (isinstance(v, list) and _prune_list(v))):
            drop = True
    if drop:
        obj[:] = [v for v in obj if not (isinstance(v, (dict, list)) and not v)]
    return not obj
