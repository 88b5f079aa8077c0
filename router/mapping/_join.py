"""Join the Bundles of messages carried inside a message into that message's Bundle.

Owns what one transaction does with an identity it meets twice, and the link
from the carrying message's logical references to the resources the carried
messages wrote. Decoding and converting the carried messages is the pipeline's
(router/pipeline/_kith.py); which messages are carried is the mapping's
(`embedded:`, _embedded.py); the PATCH entries of `alone: patch` are built as
`write: patch` builds them (_patch.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from router.errors import InvalidContent
from router.mapping._patch import Patch, patch_entry, patch_value_key
from router.mapping.runtime import resource_id

__all__ = ["Override", "join_bundles"]

_REFERENCE_KEYS = frozenset({"reference", "type", "identifier", "display", "id", "extension"})
"""The elements of a FHIR Reference: a dict with other keys is not one."""


@dataclass(frozen=True, slots=True)
class Override:
    """`embedded.override:` (compiled in _embedded.py): the elements the carrying message's resource of *type* lays over a carried one."""

    type: str
    """The FHIR resource type (MedicationRequest)."""
    elements: tuple[str, ...]
    """Top-level elements taken from the carrying message's resource, where it gives them (status, statusReason)."""
    alone: Literal["keep", "drop", "patch"]
    """What becomes of the carrying message's resource of *type* that no carried message writes: written as it is, not at
    all, or as a PATCH of *elements* onto the stored resource of its identity, skipped when the record has none."""


def join_bundles(bundle: dict[str, Any], parts: list[tuple[str, dict[str, Any]]], *, override: Override | None = None) -> None:
    """Add each part's entries to *bundle*, one entry per fullUrl, then link logical references.

    *parts* are (where the carried message sits, its Bundle), in document order.
    One fullUrl is one type and identity (runtime.conditional_entry), met again when
    two M1s name the same patient and prescriber, or when the list's own parties
    are the M1s' parties:

    - the same resource (its provenance tag aside): one entry;
    - a create of the carrying message and one of a carried message: the carried
      one stays. The carrying message only summarises what it carries whole (an
      M9.12's Reseptinfo beside the M25.1 entry that holds the prescription);
    - two creates (POST ifNoneExist) of carried messages: the first stays, since a
      create of an identity that exists writes nothing, so the second could never apply;
    - an update (PUT) and a create: the update stays; it says what the resource is;
    - two different updates: refused, one transaction cannot say both.

    *override* (`embedded.override:`) then lays the carrying message's named
    elements over the carried resource of its type that it met, and drops, when
    `alone: drop`, the carrying message's resources of that type that met none.

    Raises:
        InvalidContent: two carried messages write different content under one identity.
    """
    entries: list[dict[str, Any]] = bundle["entry"]
    own = {url: e for e in entries if (url := e.get("fullUrl")) is not None}
    at = {url: i for i, e in enumerate(entries) if (url := e.get("fullUrl")) is not None}
    met: dict[str, dict[str, Any]] = {}  # fullUrl → the carrying message's entry that a carried one met
    for where, part in parts:
        for entry in part["entry"]:
            url = entry.get("fullUrl")
            if url is None or url not in at:
                if url is not None:
                    at[url] = len(entries)
                entries.append(entry)
                continue
            if url in own:
                met[url] = own[url]
            kept = entries[at[url]]
            chosen = _pick(kept, entry, carrying=kept is own.get(url))
            if chosen is None:
                rtype = entry["resource"].get("resourceType", "resource")
                raise InvalidContent(f"the embedded message writes a {rtype} that another message in this one writes differently, under the same identity", location=where)
            entries[at[url]] = chosen
    if override is not None:
        _override(entries, own, met, override)
    _link(entries)


def _pick(kept: dict[str, Any], entry: dict[str, Any], *, carrying: bool) -> dict[str, Any] | None:
    """Which of two entries of one identity the transaction writes (join_bundles' rules), or None when neither can stand for both.

    *kept* is already in the Bundle, *entry* a carried message's; *carrying* says
    that *kept* is the carrying message's own.
    """
    if _same(kept["resource"], entry["resource"]):
        return kept
    if _creates(kept) and (carrying or not _creates(entry)):
        return entry
    if _creates(entry):
        return kept
    return None


def _override(entries: list[dict[str, Any]], own: dict[str, dict[str, Any]], met: dict[str, dict[str, Any]], spec: Override) -> None:
    """Lay the carrying message's *spec.elements* over each carried resource of *spec.type* it met; drop or patch the rest if asked.

    Why: the carried message was converted as if sent alone; what the carrying
    message adds is newer (an M9.6's 7408 status: T tilbakekalt over the M1's
    active). An element the carrying resource leaves out stays as carried. The
    carried resource's identity, id and request stay, so the record keeps one
    resource; its provenance tag names both mappings when an element changed.
    With `alone: patch`, a resource of the type that met none becomes a PATCH of
    the elements onto the stored one, skipped when the record has none: an M9.6
    that lists a prescription as withdrawn without carrying its M1 must still
    stop the M1 stored earlier, and lists prescriptions the record never saw.
    """
    for entry in entries:
        url = entry.get("fullUrl")
        ours = met.get(url) if url is not None else None
        if ours is None or entry is ours or entry["resource"].get("resourceType") != spec.type:
            continue
        resource = entry["resource"]
        changed = False
        for name in spec.elements:
            if name in ours["resource"] and resource.get(name) != ours["resource"][name]:
                resource[name] = ours["resource"][name]
                changed = True
        if changed:
            resource["meta"] = _tagged(resource.get("meta"), ours["resource"].get("meta"))
    if spec.alone in ("drop", "patch"):
        alone = [url for url, e in own.items() if url not in met and e["resource"].get("resourceType") == spec.type]  # a list: the Bundle's order may not depend on the hash seed
        patch = Patch(spec.type, _value_keys(spec.type, spec.elements), "skip") if spec.alone == "patch" else None
        patches = [patch_entry(own[url], patch) for url in alone] if patch is not None else []
        gone = set(alone)
        entries[:] = [e for e in entries if e.get("fullUrl") not in gone] + [p for p in patches if p is not None]


def _value_keys(rtype: str, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each element with the key FHIRPath Patch gives its value under (`valueCode` for a code)."""
    from router.mapping import fhir_model

    known = fhir_model.elements(rtype)
    return tuple((n, patch_value_key(known[n])) for n in names)


def _tagged(meta: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, Any]:
    """*meta* with the tags of *other* it lacks: a resource two mappings wrote says so."""
    out = dict(meta or {})
    tags = list(out.get("tag", []))
    tags += [t for t in (other or {}).get("tag", []) if t not in tags]
    if tags:
        out["tag"] = tags
    return out


def _creates(entry: dict[str, Any]) -> bool:
    return entry.get("request", {}).get("method") == "POST"  # type: ignore[no-any-return]


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for meta: each mapping tags what it made with its own name (provenance)."""
    return {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}


def _link(entries: list[dict[str, Any]]) -> None:
    """Give a logical reference (Reference.type and .identifier) to a resource this Bundle writes its Reference.reference.

    Why: the M9.6 list names each prescription by its ReseptId only; once the
    M1s it carries are in the same transaction, the entry can point at the very
    MedicationRequest. The fullUrl is the one that type and identifier give
    (runtime.conditional_entry); a reference whose resource is not in the
    Bundle stays logical.
    """
    urls = {e["fullUrl"] for e in entries if "fullUrl" in e}
    for entry in entries:
        resource = entry.get("resource")
        if resource is not None:
            _link_in(resource, urls)


def _link_in(node: Any, urls: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _link_in(item, urls)
        return
    if not isinstance(node, dict):
        return
    ident, kind = node.get("identifier"), node.get("type")
    if type(kind) is str and isinstance(ident, dict) and "reference" not in node and node.keys() <= _REFERENCE_KEYS:
        system, value = ident.get("system"), ident.get("value")
        if system and value:
            url = f"urn:uuid:{resource_id(kind, system, value)}"
            if url in urls:
                node["reference"] = url
        return
    for value in node.values():
        if not isinstance(value, str):
            _link_in(value, urls)
