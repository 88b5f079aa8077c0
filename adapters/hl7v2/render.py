"""Render a converted message as HL7 v2 (ER7) for a legacy queue destination (`format: hl7v2`).

Owns MSH (time, type, control id, version, charset), the choice of outbound
mapping per message and the encoding to bytes. What goes in the other
segments is the outbound mapping's (outbound.py, mappings/outbound/hl7v2/);
publishing and dead-lettering are router/delivery/'s.

The output is a pure function of the source message: MSH-7 is the source's
own time (MessageHeader.sent: its MSH-7, or a KITH message's GenDate), MSH-10
a hash of the source and the destination, so a redelivery renders identical
bytes. MSH-3/MSH-4 name Helsebro (engine.yaml `own`), MSH-5/MSH-6 the receiver
(the destination's `receiving_application`/`receiving_facility`). A character
the destination charset cannot carry becomes `?` (docs/outbound-hl7v2.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.hl7v2._er7 import CHARSETS, DEFAULT_CHARSET, escape, fhir_to_hl7_ts, hl7_ts_to_ts, keeps_offset
from adapters.hl7v2._versions import version_defs
from adapters.hl7v2.outbound import OutboundMapping, RenderContext, load_outbound, load_tables
from router.errors import ConfigError, MessageError, UnknownMessage

if TYPE_CHECKING:
    from router.contracts import Converted
    from router.routing.model import QueueDestination
    from router.settings import OwnConfig, Settings

__all__ = ["DEFAULT_VERSION", "Hl7v2Renderer"]

DEFAULT_VERSION = "2.5.1"
"""The HL7 version of a destination that names none."""

_ENCODING = "^~\\&"


class Hl7v2Renderer:
    """Renders converted messages for one queue destination: its outbound mapping(s), version and charset."""

    def __init__(
        self,
        destination: str,
        mappings: list[OutboundMapping],
        *,
        version: str,
        charset: str,
        named: bool,
        own: OwnConfig | None = None,
        receiving_application: str | None = None,
        receiving_facility: str | None = None,
    ) -> None:
        """Use *mappings* (compiled for *version*); *named* means the destination chose one mapping for every message.

        *own* names Helsebro in MSH-3/MSH-4 (unset: engine.yaml's defaults); MSH-5 is
        *receiving_application*, else the destination's name, and MSH-6 *receiving_facility*.
        """
        if own is None:
            from router.settings import OwnConfig  # the defaults, for a renderer built without settings (fixture cases, benches)

            own = OwnConfig()
        self._destination = destination
        self._application = escape(own.application)
        self._facility = escape(own.facility) if own.facility is not None else None
        self._receiving_application = escape(receiving_application or destination)
        self._receiving_facility = escape(receiving_facility or "")
        self._mappings = {m.name: m for m in mappings}
        self._by_event = {f"{m.message_code}^{e}": m for m in reversed(mappings) for e in m.events}
        self._named = mappings[0] if named else None
        self._version = version
        self._charset = charset
        self._codec = CHARSETS[charset]
        self._with_offset = keeps_offset(version)
        self._msg_components = version_defs(version).fields_of("MSH")[8].components

    @classmethod
    def for_destination(cls, destination: QueueDestination, settings: Settings, *, name: str | None = None) -> Hl7v2Renderer:
        """Load the destination's outbound mapping (or all of them) and check it against the destination's version.

        Raises:
            MappingError: an outbound mapping fails its checks (file:line:col).
            ConfigError: an unknown version, charset or mapping name.
        """
        version = destination.version or DEFAULT_VERSION
        charset = destination.charset or DEFAULT_CHARSET
        if charset not in CHARSETS:
            raise ConfigError(f"hl7v2 destination {destination.queue}: charset {charset!r} is not one of {', '.join(CHARSETS)}")
        try:
            version_defs(version)
        except LookupError as exc:
            raise ConfigError(f"hl7v2 destination {destination.queue}: {exc}") from exc
        root = settings.mappings_dir / "outbound" / "hl7v2"
        files = _mapping_files(root, destination.mapping, destination.queue)
        tables = load_tables(root)
        mappings = [load_outbound(f, version, tables=tables, display=_show(f, settings.mappings_dir)) for f in files]
        label = name or _destination_name(destination, settings)
        return cls(
            label, mappings, version=version, charset=charset, named=destination.mapping is not None, own=settings.engine.own,
            receiving_application=destination.receiving_application, receiving_facility=destination.receiving_facility,
        )

    def render(self, conv: Converted) -> bytes:
        """Return *conv* as one ER7 message, segments ended by CR, in the destination's charset.

        Raises:
            MessageError: no Bundle, no mapping for the message's event, or a required resource or value is missing.
        """
        bundle = conv.bundle
        if bundle is None:
            raise MessageError("the message has no Bundle to render")
        header = conv.header
        code = header.message_code if header is not None else ""
        event = header.trigger_event if header is not None else ""
        mapping = self._pick(code, event, conv.structure or (header.structure if header is not None else ""))
        ctx = self._context(conv, bundle, event)
        lines = [self._msh(mapping, event, ctx, conv.raw)]
        for part in mapping.segments:
            part.emit(None, ctx, lines, None)
        return ("\r".join(lines) + "\r").encode(self._codec, errors="replace")

    def _pick(self, code: str, event: str, structure: str) -> OutboundMapping:
        if self._named is not None:
            if event not in self._named.events:
                raise UnknownMessage(f"outbound mapping {self._named.name} does not serve event {event or '(none)'}", location="MSH-9.2")
            return self._named
        found = self._mappings.get(structure)
        if found is not None and event in found.events:
            return found
        found = self._by_event.get(f"{code}^{event}")
        if found is None:
            raise UnknownMessage(f"no outbound hl7v2 mapping serves {code or '(none)'}^{event or '(none)'}", location="MSH-9")
        return found

    def _context(self, conv: Converted, bundle: dict[str, Any], event: str) -> RenderContext:
        by_type: dict[str, list[Any]] = {}
        by_ref: dict[str, Any] = {}
        for entry in _entries(bundle):
            resource = entry.get("resource")
            if resource is None:  # a DELETE: nothing to write
                continue
            rtype, url, rid = _shape(resource, entry)
            by_type.setdefault(rtype, []).append(resource)  # Bundle order: `each: <type>` repeats in it
            if url is not None:
                by_ref[url] = resource
            if rid is not None:
                by_ref[f"{rtype}/{rid}"] = resource
        h = conv.header
        values = {
            "event": event,
            "sent": self._sent(conv),
            "destination": self._destination,
            "control_id": conv.control_id or "",
        }
        if h is not None:
            values.update(
                message_code=h.message_code, structure=h.structure, processing_id=h.processing_id,
                sending_application=h.sending_application, sending_facility=h.sending_facility,
                receiving_application=h.receiving_application, receiving_facility=h.receiving_facility,
            )
        return RenderContext(by_type, by_ref, values)

    def _sent(self, conv: Converted) -> str:
        """The source's own time (MessageHeader.sent) as HL7 TS: an HL7 source's MSH-7, a KITH source's GenDate, else ''."""
        sent = (conv.header.sent if conv.header is not None else None) or ""
        if conv.format == "kith":
            return fhir_to_hl7_ts(sent, with_offset=self._with_offset)
        return hl7_ts_to_ts(sent, with_offset=self._with_offset)

    def _msh(self, mapping: OutboundMapping, event: str, ctx: RenderContext, raw: bytes) -> str:
        msg_type = [mapping.message_code, event]
        if self._msg_components >= 3:  # v2.3 has no structure component
            msg_type.append(mapping.events[event])
        fields = [""] * 19
        fields[3] = self._application
        fields[4] = self._facility if self._facility is not None else escape(ctx.values.get("sending_facility", ""))
        fields[5] = self._receiving_application
        fields[6] = self._receiving_facility
        fields[7] = ctx.values["sent"]
        fields[9] = "^".join(escape(p) for p in msg_type)
        fields[10] = self._control_id(ctx, raw)
        fields[11] = "P"
        fields[12] = self._version
        fields[18] = self._charset
        for n, fn in mapping.msh:
            if n >= len(fields):
                fields.extend([""] * (n + 1 - len(fields)))
            fields[n] = fn(None, ctx)
        while len(fields) > 19 and not fields[-1]:
            fields.pop()
        return "MSH|" + _ENCODING + "|" + "|".join(fields[3:])

    def _control_id(self, ctx: RenderContext, raw: bytes) -> str:
        """20 hex digits (MSH-10 is ST(20)) from the destination, the source's sender and control id, and its bytes.

        The same source always gives the same id, so a receiver drops a
        redelivered copy; the bytes are in so that a sender reusing a control
        id for a different message does not have it dropped as a repeat.
        """
        v = ctx.values
        digest = hashlib.blake2b(raw, digest_size=16)
        digest.update("|".join((self._destination, v.get("sending_application", ""), v.get("sending_facility", ""), v["control_id"])).encode("utf-8"))
        return digest.hexdigest()[:20]


def _entries(bundle: Any) -> list[dict[str, Any]]:
    """The Bundle's entries, each an object; a Bundle of another shape is refused.

    Why: a hand-made Bundle (a test message, another system's) reaches the renderer
    unchecked; an entry that is a list raised AttributeError, which is no refusal the
    forwarder dead-letters for this destination but a failure of the whole delivery.
    """
    entries = bundle.get("entry", []) if isinstance(bundle, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MessageError("the Bundle is malformed: entry must be a list of objects", location="Bundle.entry")
    return entries


def _shape(resource: Any, entry: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """A resource's type, its entry's fullUrl and its id, each text; an entry of another shape is refused (see _entries)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise MessageError("the Bundle is malformed: an entry's resource must be an object with a resourceType", location="Bundle.entry.resource")
    url, rid = entry.get("fullUrl"), resource.get("id")
    if not isinstance(url, (str, type(None))) or not isinstance(rid, (str, type(None))):
        raise MessageError("the Bundle is malformed: an entry's fullUrl and its resource's id must be text", location="Bundle.entry")
    return resource["resourceType"], url, rid


def _mapping_files(root: Path, name: str | None, queue: str) -> list[Path]:
    if name is not None:
        file = root / f"{name}.yaml"
        if not file.is_file():
            raise ConfigError(f"hl7v2 destination {queue}: no outbound mapping {name!r} ({file} does not exist)")
        return [file]
    files = sorted(root.glob("*.yaml"))
    if not files:
        raise ConfigError(f"hl7v2 destination {queue}: no outbound mappings in {root}")
    return files


def _destination_name(destination: QueueDestination, settings: Settings) -> str:
    for name, dest in settings.routes.destinations.items():
        if dest is destination:
            return name
    return destination.queue


def _show(path: Path, mappings_dir: Path) -> str:
    try:
        return str(Path("mappings") / path.relative_to(mappings_dir))
    except ValueError:
        return str(path)
