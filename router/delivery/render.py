"""Render a converted message in a queue destination's own format: the bytes a legacy system reads.

The Forwarder (forward.py) holds one renderer per queue destination, built when
the engine starts, so an outbound mapping that does not load stops the start
with its file:line:col rather than failing message by message. A renderer is a
pure function of the converted message: the same message renders to the same
bytes, so a redelivery forwards an identical copy (the fault suite checks it).

Formats:
- passthrough: the message's own bytes, never re-encoded: the one message as it was cut
  from its delivery (MLLP framing, a BOM and the FHS/BHS batch lines left out, line
  ends made CR as HL7 v2 has them);
- fhir-json: the canonical transaction Bundle;
- hl7v2: an HL7 v2 message built from the Bundle by an outbound mapping
  (adapters/hl7v2/render.py, mappings/outbound/hl7v2/), in the destination's
  version and charset;
- kith: a Norwegian XML message in a MsgHead built from the Bundle by an
  outbound mapping (adapters/kith/render.py, mappings/outbound/kith/),
  validated against the national XSD when one is configured.

A renderer raises MessageError when this message cannot be rendered (a
required value is missing); the Forwarder dead-letters it for that destination
alone, with stage `render`, and the other destinations go on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import orjson

if TYPE_CHECKING:
    from router.contracts import Converted
    from router.routing.model import QueueDestination
    from router.settings import Settings

__all__ = ["Renderer", "renderer_for"]


class Renderer(Protocol):
    """Turns a converted message into the bytes one destination reads."""

    def render(self, conv: Converted) -> bytes:
        """Return the message in the destination's format.

        Raises:
            MessageError: this message cannot be rendered; the reason names what is missing, never a value.
        """
        ...


class _Passthrough:
    def render(self, conv: Converted) -> bytes:
        return conv.raw


class _FhirJson:
    def render(self, conv: Converted) -> bytes:
        return orjson.dumps(conv.bundle)


def renderer_for(destination: QueueDestination, settings: Settings) -> Renderer:
    """Return the renderer for *destination*, loading and checking its outbound mapping.

    Raises:
        MappingError: the outbound mapping does not load (file:line:col).
        ConfigError: the destination names a mapping, version or charset that does not exist.
    """
    if destination.format == "passthrough":
        return _Passthrough()
    if destination.format == "fhir-json":
        return _FhirJson()
    if destination.format == "hl7v2":
        from adapters.hl7v2.render import Hl7v2Renderer

        return Hl7v2Renderer.for_destination(destination, settings)
    from adapters.kith.render import KithRenderer

    return KithRenderer.for_destination(destination, settings)
