"""Render a converted message as Norwegian XML in a MsgHead (e.g. PLO "melding om innlagt pasient") for one queue destination.

Owns the MsgHead around the payload (MsgInfo: Type, MIGversion, GenDate,
MsgId; Document/RefDoc/Content) and filling an outbound mapping's element
tree (mappings/outbound/kith/, loaded by _outbound.py) from the canonical
Bundle. Publishing the bytes, and dead-lettering a message that cannot be
rendered, belong to router/delivery/forward.py.

Rules (FACTS §1, §3; HIS 80601; HIS 80704:2014 §4.1.1):

- The payload sits in ``Document/RefDoc/Content`` with ``RefDoc/MsgType V="XML"``;
  the patient, sender and receiver sit in MsgHead, as PLO requires.
- Deterministic, so a redelivery forwards an identical copy and a receiver's
  MsgId guard drops it: ``MsgId`` is a UUIDv5 of the source message's sender,
  control id, the mapping and the receiver (two destinations, or two messages
  made from one admission, get different MsgIds, as HIS 80601 wants one per
  message); ``GenDate`` is the source message's own time
  (``MessageHeader.sent``: HL7 MSH-7, or the KITH GenDate), never the clock.
- The sender is Helsebro itself (engine.yaml ``own``, read by the mapping as
  ``own.organisation_name`` and ``own.her_id``); the receiver is the
  destination (``destination.receiver_her_id``, ``destination.receiver_name``).
- Times are written as Europe/Oslo local time without an offset, as the
  national examples do; Helsebro's inbound side reads them back as Oslo time.
  In the hour the clocks go back, which happens twice, the offset is written too.
- With HELSEBRO_XSD_DIR set, every rendered message is validated against the
  national schema (compiled once, when the destination is built); a message
  that does not validate is refused with the schema error's kind and place,
  never a value.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import TYPE_CHECKING, Any

from lxml import etree

from adapters.kith._outbound import Node, OutboundMapping, load_outbound
from adapters.kith._outbound_fns import text_of, xml_datetime
from adapters.kith.envelope import MSGHEAD_NS
from adapters.kith.errors import SchemaInvalid
from adapters.kith.xsd import SchemaSet, schema_set
from router.errors import ConfigError, InvalidContent, UnknownMessage

if TYPE_CHECKING:
    from router.contracts import Converted, FhirJson
    from router.routing.model import QueueDestination
    from router.settings import OwnConfig, Settings

__all__ = ["KithRenderer", "outbound_msg_id"]

_M = f"{{{MSGHEAD_NS}}}"
_MIG = "v1.2 2006-05-24"  # fixed in MsgHead-v1_2.xsd (FACTS §1)
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# Namespace of outbound MsgIds. It never changes: changing it would give a
# redelivered message a new MsgId, and the receiver would import it twice.
_MSGID_NAMESPACE = uuid.UUID("6c1f1d2e-4b7a-5d1e-9a53-0b8e2f6a7c41")
_MAPPING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class KithRenderer:
    """Renders converted messages for one destination with one outbound mapping; built once at engine start."""

    def __init__(
        self,
        mapping: OutboundMapping,
        *,
        destination_name: str,
        receiver_her_id: str | None,
        receiver_name: str | None = None,
        queue: str = "",
        own: OwnConfig | None = None,
        schemas: SchemaSet | None = None,
    ) -> None:
        """Bind *mapping* to a destination and compile the national schema it needs.

        *receiver_name* defaults to *destination_name*; *own* (engine.yaml's `own`
        block) to its defaults, for a renderer built without settings (fixture cases, benches).

        Raises:
            ConfigError: the mapping reads a destination field this destination does not set,
                or the schema set has no (compilable) schema for the mapping's namespaces.
        """
        if own is None:
            from router.settings import OwnConfig  # imported here: the adapter needs the settings model only for its defaults

            own = OwnConfig()
        self._mapping = mapping
        self._own: dict[str, Any] = {"organisation_name": own.organisation_name, "her_id": own.her_id}
        self._destination: dict[str, Any] = {
            "name": destination_name, "queue": queue, "receiver_her_id": receiver_her_id, "receiver_name": receiver_name or destination_name,
        }
        missing = sorted(f for f in mapping.destination_reads if not self._destination.get(f))
        if missing:
            raise ConfigError(f"destination {destination_name}: outbound mapping {mapping.name} writes destination.{missing[0]}; set `{missing[0]}` on the destination")
        self._schemas = schemas
        self._schema_ns = (MSGHEAD_NS, mapping.payload_namespace)
        if schemas is not None:
            _compile_now(schemas, self._schema_ns, mapping.name)

    @classmethod
    def for_destination(cls, destination: QueueDestination, settings: Settings) -> KithRenderer:
        """Load the destination's outbound mapping from HELSEBRO_MAPPINGS_DIR/outbound/kith/<mapping>.yaml.

        Raises:
            MappingError: the mapping file does not load (file:line:col).
            ConfigError: no such mapping, or see ``__init__``.
        """
        name = next((n for n, d in settings.routes.destinations.items() if d is destination or d == destination), "?")
        wanted = destination.mapping or ""
        if not _MAPPING_NAME.fullmatch(wanted):
            raise ConfigError(f"destination {name}: `mapping` must name an outbound mapping file (letters, digits, _ . -)")
        path = settings.mappings_dir / "outbound" / "kith" / f"{wanted}.yaml"
        if not path.is_file():
            raise ConfigError(f"destination {name}: no outbound kith mapping {wanted!r} ({path} does not exist)")
        return cls(
            load_outbound(path),
            destination_name=name,
            receiver_her_id=destination.receiver_her_id,
            receiver_name=destination.receiver_name,
            queue=destination.queue,
            own=settings.engine.own,
            schemas=schema_set(settings.xsd_dir),
        )

    @property
    def mapping(self) -> OutboundMapping:
        """The compiled outbound mapping."""
        return self._mapping

    def render(self, conv: Converted) -> bytes:
        """Return the MsgHead message for *conv*: UTF-8 with an XML declaration, the same bytes every time.

        Raises:
            InvalidContent: a resource or value the mapping requires is missing, or the source
                message has no time; SchemaInvalid when the result breaks the national schema.
                Reasons name elements and FHIR paths, never a value.
        """
        if not conv.bundle:
            raise InvalidContent("the message has no Bundle to render", location="Bundle")
        ctx = self._context(conv.bundle)
        m = self._mapping
        root = etree.Element(f"{_M}MsgHead", nsmap={None: MSGHEAD_NS})
        info = etree.SubElement(root, f"{_M}MsgInfo")
        etree.SubElement(info, f"{_M}Type", V=m.type_code, DN=m.type_name)
        gen_date = _source_time(conv)
        for tag, text in (("MIGversion", _MIG), ("GenDate", gen_date), ("MsgId", self.msg_id(conv))):
            etree.SubElement(info, f"{_M}{tag}").text = text
        for tag, nodes, needed in (("Sender", m.sender, True), ("Receiver", m.receiver, True), ("Patient", m.patient, False)):
            if nodes:
                self._part(info, tag, nodes, ctx, needed=needed)
        ref_doc = etree.SubElement(etree.SubElement(root, f"{_M}Document"), f"{_M}RefDoc")
        etree.SubElement(ref_doc, f"{_M}IssueDate", V=gen_date)
        etree.SubElement(ref_doc, f"{_M}MsgType", V="XML", DN="XML-instans")
        content = etree.SubElement(ref_doc, f"{_M}Content")
        if not _one(content, m.body, ctx, m.name, nsmap=dict(m.namespaces)):
            raise InvalidContent(f"{m.name}: the payload came out empty", location=m.body.location)
        if self._schemas is not None:
            try:
                self._schemas.validate(root, self._schema_ns)
            except SchemaInvalid as exc:
                raise SchemaInvalid(f"the rendered {m.name} message breaks the national schema: {exc.reason}", location=exc.location) from exc
        return _DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)  # type: ignore[no-any-return]

    def _part(self, info: etree._Element, tag: str, nodes: tuple[Node, ...], ctx: dict[str, Any], *, needed: bool) -> None:
        part = etree.SubElement(info, f"{_M}{tag}")
        for node in nodes:
            _emit(part, node, ctx, self._mapping.name)
        if len(part) == 0:
            info.remove(part)
            if needed:
                raise InvalidContent(f"{self._mapping.name}: MsgHead/MsgInfo/{tag} came out empty", location=f"MsgHead/MsgInfo/{tag}")

    def _context(self, bundle: FhirJson) -> dict[str, Any]:
        """Name the Bundle resources the mapping reads: the first of a type, or the one a reference points to."""
        first: dict[str, FhirJson] = {}
        by_ref: dict[str, FhirJson] = {}
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            kind = resource.get("resourceType")
            if isinstance(kind, str):
                first.setdefault(kind, resource)
                if resource.get("id"):
                    by_ref[f"{kind}/{resource['id']}"] = resource
            if isinstance(entry.get("fullUrl"), str):
                by_ref[entry["fullUrl"]] = resource
        ctx: dict[str, Any] = {"destination": self._destination, "own": self._own}
        for spec in self._mapping.resources:
            if spec.ref is None:
                found = first.get(spec.type)
            else:
                ref = spec.ref(ctx)
                found = by_ref.get(ref.get("reference", "")) if isinstance(ref, dict) else None
                found = found if found is not None and found.get("resourceType") == spec.type else None
            if found is None and spec.required:
                via = f" at {spec.ref_source}" if spec.ref_source else ""
                raise InvalidContent(f"the Bundle has no {spec.type}{via}, which outbound mapping {self._mapping.name} needs ({spec.name})", location=f"Bundle.entry.resource({spec.type})")
            ctx[spec.name] = found
        return ctx

    def msg_id(self, conv: Converted) -> str:
        """The MsgId what this renders of *conv* carries: what its receiver's AppRec names in OriginalMsgId/Id."""
        receiver = self._destination["receiver_her_id"] or self._destination["name"]
        if conv.control_id:
            return outbound_msg_id(conv.sender or "", conv.control_id, self._mapping.name, receiver, content=content_digest(conv.raw))
        basis = f"{conv.sender or ''}||{self._mapping.name}|{receiver}|" + hashlib.blake2b(conv.raw, digest_size=16).hexdigest()
        return str(uuid.uuid5(_MSGID_NAMESPACE, basis))


def outbound_msg_id(sender: str, control_id: str, mapping: str, receiver: str, *, content: str = "") -> str:
    """The MsgId Helsebro gives what it renders with *mapping* for *receiver* (its HER-id, else the destination's name)
    from a source message with a control id: what that receiver's AppRec names in OriginalMsgId/Id (`helsebro find`).

    *content*: the source's content_digest, so the id follows its bytes as forward ids do
    (router.delivery.forward.forward_id): a redelivery keeps its MsgId, while a sender reusing a
    control id for new content gets a new one, which the receiver would otherwise drop as a
    duplicate (FACTS §2: same MsgId, not processed again). Without it, the id messages rendered
    before session 25 carry, which their AppRecs still name.
    """
    basis = f"{sender}|{control_id}|{mapping}|{receiver}" + (f"|{content}" if content else "")
    return str(uuid.uuid5(_MSGID_NAMESPACE, basis))


def content_digest(raw: bytes) -> str:
    """The hash of a source message's bytes its MsgId carries: router.delivery.forward.content_digest, which the
    record's journal key keeps too (adapters import no router module beyond the contracts, so it is spelt here)."""
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def _emit(parent: etree._Element, node: Node, ctx: dict[str, Any], mapping: str) -> None:
    """Write *node* under *parent*: once, once per item of `each`, or not at all when `when` finds nothing."""
    if node.when is not None and not _present(node.when(ctx)):
        return
    if node.each is None:
        _one(parent, node, ctx, mapping)
        return
    written = 0
    for item in node.each(ctx):
        scoped = {**ctx, node.each_as: item}
        if all(text_of(read(scoped)) in allowed for read, allowed in node.where):
            written += _one(parent, node, scoped, mapping)
            if node.first and written:
                break
    if node.required and not written:
        raise InvalidContent(f"{mapping}: nothing to write as {node.location.rsplit('/', 1)[-1]}", location=node.location)


def _one(parent: etree._Element, node: Node, ctx: dict[str, Any], mapping: str, nsmap: dict[str, str] | None = None) -> int:
    """Write one element; leave it out when it ends up empty. Return how many were written (0 or 1).

    Values are read before the element is made, so a leaf left out costs no lxml call.
    """
    text = node.text.read(ctx) if node.text is not None else None
    attrs = {name: v for name, value in node.attributes if (v := value.read(ctx)) is not None}
    if (node.text is not None and text is None) or (text is None and not attrs and not node.children):
        if node.required:
            raise InvalidContent(f"{mapping}: no value for {node.location.rsplit('/', 1)[-1]}{_sources(node)}", location=node.location)
        return 0
    try:
        element = etree.SubElement(parent, node.tag, attrs, nsmap=nsmap)
        element.text = text
    except ValueError as exc:  # lxml refuses control characters: say where, never what
        raise InvalidContent(f"{mapping}: a value for {node.location} holds characters XML cannot carry", location=node.location) from exc
    return _children(element, node, ctx, mapping)


def _children(element: etree._Element, node: Node, ctx: dict[str, Any], mapping: str) -> int:
    """Write *node*'s children under *element*; drop an element left with nothing at all."""
    for child in node.children:
        _emit(element, child, ctx, mapping)
    if node.children and element.text is None and not element.attrib and len(element) == 0:
        if node.required:
            raise InvalidContent(f"{mapping}: no value for {node.location.rsplit('/', 1)[-1]}", location=node.location)
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
        return 0
    return 1


def _sources(node: Node) -> str:
    """Say where a required element's values come from (FHIR paths, never values), for its refusal."""
    values = ([node.text] if node.text is not None else []) + [v for _n, v in node.attributes]
    paths = sorted({v.source for v in values if v.source != "constant"})
    return f" (from {', '.join(paths)})" if paths else ""


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _source_time(conv: Converted) -> str:
    """The source message's own time (MessageHeader.sent) as an xs:dateTime in Oslo local time: KITH GenDate, or HL7 MSH-7."""
    sent = (conv.header.sent if conv.header is not None else None) or ""
    if conv.format == "kith":
        where = "GenDate"
    else:
        sent, where = _hl7_time(sent), "MSH-7"
    moment = xml_datetime(sent) if sent else None
    if moment is None:
        raise InvalidContent(f"the source message has no readable message time ({where}) for MsgInfo/GenDate", location=where)
    return moment if "T" in moment else _at_midnight(moment)


def _at_midnight(date: str) -> str:
    """Pad a date of year, month or day precision to an xs:dateTime at 00:00."""
    parts = date.split("-") + ["01", "01"]
    return f"{parts[0]}-{parts[1]}-{parts[2]}T00:00:00"


def _hl7_time(stamp: str) -> str:
    """An HL7 TS (MSH-7) as FHIR dateTime text; "" when it is empty or not a timestamp."""
    from router.mapping.functions import hl7_datetime_to_fhir  # the inbound side's HL7 time rule, Oslo by name

    stamp = stamp.strip()
    if not stamp:
        return ""
    try:
        return hl7_datetime_to_fhir(stamp) or ""
    except ValueError:
        return ""


def _compile_now(schemas: SchemaSet, namespaces: tuple[str, str], mapping: str) -> None:
    """Compile and cache the schema for *namespaces* now, so the first message does not pay for it.

    SchemaSet compiles on first use; validating an empty MsgHead is that first
    use (it fails, as it must). A namespace without a schema fails the start.
    """
    try:
        schemas.validate(etree.Element(f"{_M}MsgHead"), namespaces)
    except SchemaInvalid:
        return
    except UnknownMessage as exc:
        raise ConfigError(f"outbound mapping {mapping}: {exc.reason}") from exc
