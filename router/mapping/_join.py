"""Join the Bundles of messages carried inside a message into that message's Bundle.

Owns what one transaction does with an identity it meets twice, and the link
from the carrying message's logical references to the resources the carried
messages wrote. Decoding and converting the carried messages is the pipeline's
(router/pipeline/_kith.py); which messages are carried is the mapping's
(`embedded:`, _messages.py).
"""

from __future__ import annotations

from typing import Any

from router.errors import InvalidContent
from router.mapping.runtime import resource_id

__all__ = ["join_bundles"]

_REFERENCE_KEYS = frozenset({"reference", "type", "identifier", "display", "id", "extension"})
"""The elements of a FHIR Reference: a dict with other keys is not one."""


def join_bundles(bundle: dict[str, Any], parts: list[tuple[str, dict[str, Any]]]) -> None:
    """Add each part's entries to *bundle*, one entry per fullUrl, then link logical references.

    *parts* are (where the carried message sits, its Bundle), in document order.
    One fullUrl is one type and identity (runtime.conditional_entry), met again when
    two M1s name the same patient and prescriber, or when the list's own parties
    are the M1s' parties:

    - the same resource (its provenance tag aside): one entry;
    - two creates (POST ifNoneExist): the first stays, since a create of an identity
      that exists writes nothing, so the second could never apply;
    - an update (PUT) and a create: the update stays; it says what the resource is;
    - two different updates: refused, one transaction cannot say both.

    Raises:
        InvalidContent: two carried messages write different content under one identity.
    """
    entries: list[dict[str, Any]] = bundle["entry"]
    at = {e["fullUrl"]: i for i, e in enumerate(entries) if "fullUrl" in e}
    for where, part in parts:
        for entry in part["entry"]:
            url = entry.get("fullUrl")
            if url is None or url not in at:
                if url is not None:
                    at[url] = len(entries)
                entries.append(entry)
                continue
            kept = entries[at[url]]
            if _same(kept["resource"], entry["resource"]) or _creates(entry):
                continue
            if _creates(kept):
                entries[at[url]] = entry
                continue
            rtype = entry["resource"].get("resourceType", "resource")
            raise InvalidContent(f"the embedded message writes a {rtype} that another message in this one writes differently, under the same identity", location=where)
    _link(entries)


def _creates(entry: dict[str, Any]) -> bool:
    return entry.get("request", {}).get("method") == "POST"


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
