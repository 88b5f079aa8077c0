"""Convert delivered bytes into FHIR transaction Bundles: decode, identify, map.

The one conversion path: `helsebro convert`, the engine and the tests all call
`Converter.convert`. It never raises for bad input; a message that cannot be
converted comes back as a `Converted` with its error and position.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.hl7v2.decode import BatchShortfall, check_batch_counts, check_header, decode, split_messages
from adapters.hl7v2.paths import Scope, compile_path
from router.contracts import Converted, MessageHeader
from router.errors import InvalidContent, MessageError, NoMapping, UnsupportedEvent
from router.logging import phi_hash
from router.mapping import FnContext, MappingSet, run_mapping
from router.mapping.runtime import identifier_query
from router.settings import Settings

_SKIP_UNMAPPED = {("MSH", 1), ("MSH", 2), ("MSH", 7), ("MSH", 9), ("MSH", 10), ("MSH", 11), ("MSH", 12), ("MSH", 15), ("MSH", 16), ("MSH", 18)}
"""MSH fields the engine itself consumes (delimiters, type, control id, version, the ACKs asked for, charset)."""

_SKIP_BY_SEGMENT = {name: frozenset(n for s, n in _SKIP_UNMAPPED if s == name) for name, _ in _SKIP_UNMAPPED}
_NOTHING: frozenset[int] = frozenset()


_HL7_CODE = re.compile(r"[A-Z0-9]{3}")
"""MSH-9.1 (HL7 table 0076) and MSH-9.2 (table 0003): three letters or digits, `ADT`, `A01`, `PC1`."""
_HL7_STRUCTURE = re.compile(r"[A-Z0-9]{3}_[A-Z0-9]{3}")
"""MSH-9.3 (HL7 table 0354): `ADT_A01`."""
_NOT_A_CODE = "?"
_MASKED_NOTE = " (MSH-9 holds text that is not an HL7 code, shown as ?)"


def _shown(value: str, shape: re.Pattern[str]) -> str:
    """One MSH-9 component as logs, the journal and refusals show it: as sent when it is shaped as its HL7 table's codes, else `?`.

    Why: a sender that shifts its MSH fields puts a name or a fødselsnummer in MSH-9, and the message type is
    logged with every message (`delivery_settled`), journalled, and quoted in the ACK and the dead letter's reason
    (DESIGN §5: never patient data). The mapping is still found by the components as sent.
    """
    return value if not value or shape.fullmatch(value) else _NOT_A_CODE


def _shown_type(h: MessageHeader) -> tuple[str, str, str]:
    """MSH-9 as shown: (`CODE^EVENT` as MessageHeader.message_type writes it, the event, the structure)."""
    code, event = _shown(h.message_code, _HL7_CODE), _shown(h.trigger_event, _HL7_CODE)
    return (f"{code}^{event}" if event else code), event, _shown(h.structure, _HL7_STRUCTURE)


_WIDE_XML_STARTS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"<\x00", b"\x00<", b"\x00\x00\x00<")
"""How a UTF-16 or UTF-32 XML document begins: a byte order mark (UTF-32LE's starts like UTF-16LE's), or `<` without one."""


def _is_xml(data: bytes) -> bool:
    """Tell whether *data* is an XML document (a KITH message) rather than HL7 v2.

    UTF-8 and ISO-8859-1 XML starts with `<` after an optional BOM and whitespace; UTF-16 and
    UTF-32 XML (the XML declaration may name them, and safe_xml reads them) start with a BOM or a
    `<` padded with NUL bytes. No HL7 v2 message starts so (MSH, or the MLLP start byte 0x0B), and a
    KITH message taken for HL7 v2 would be answered with an HL7 NAK its sender never reads, not an AppRec.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # A byte order mark says only "UTF-16 or UTF-32": an HL7 v2 file saved as "Unicode" starts so too, and taken
        # for XML it was answered "not well-formed XML". What follows the mark decides (UTF-32 reads as `<` between NULs).
        codec = "utf-16-le" if data[:1] == b"\xff" else "utf-16-be"
        return data[2:64].decode(codec, errors="replace").lstrip(" \t\r\n\x00\ufeff")[:1] == "<"
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<" or data.startswith(_WIDE_XML_STARTS)


class Converter:
    """Holds the compiled mappings; converts any number of messages."""

    def __init__(self, settings: Settings, *, mappings: MappingSet | None = None) -> None:
        self._settings = settings
        self._phi_key = settings.phi_key_bytes
        self.mappings = mappings or MappingSet.load(settings.mappings_dir / "hl7v2", compile_path)
        ids = settings.engine.identifiers
        self._fn_ctx = FnContext(dict(ids.authorities), ids.default_local_system)
        hl7 = settings.engine.hl7v2
        self._charset = hl7.default_charset
        self._sender_charsets = {k: v.charset for k, v in hl7.senders.items() if v.charset}
        self._kith: Any = None
        self._xml_mappings: MappingSet | None = None  # `<mappings_dir>/kith` compiled already (use_xml), else compiled with the KITH converter

    def load_xml(self) -> None:
        """Compile the KITH XML mappings now instead of at the first XML message.

        Why: the engine's hot reload swaps in only a set that compiles. Compiled on first
        use, a broken KITH mapping passed the reload, and every XML message after it
        failed as `internal` while it was compiled again, and refused again, for each one.
        """
        if self._kith is None:
            from router.pipeline._kith import KithConverter

            self._kith = KithConverter(self._settings, self._fn_ctx, mappings=self._xml_mappings)

    def use_xml(self, mappings: MappingSet) -> None:
        """Take *mappings*, compiled from this converter's `<mappings_dir>/kith`, as its KITH XML mappings.

        Why: `mappings test` has compiled the folder to lint it; compiling it again for the cases doubled the work.
        """
        self._xml_mappings = mappings  # taken when the KITH converter is made, at the first XML message as ever

    def convert(self, data: bytes, *, trace: bool = False) -> list[Converted]:
        """Convert every message in *data* (one, several, a batch, MLLP-framed; or one KITH XML message)."""
        if _is_xml(data):
            return [self._convert_xml(data, trace)]
        out: list[Converted] = []
        for raw in split_messages(data):
            item = Converted(index=raw.index, raw=raw.data)
            try:
                self._convert_one(item, trace)
            except MessageError as exc:
                item.error = exc
                item.bundle = None
            out.append(item)
        if (short := check_batch_counts(data)) is not None:
            if not short.messages:
                out = []  # an envelope alone: its shortfall says it all, rather than also "no MSH segment"
            out.append(_batch_shortfall(short, len(out)))
        return out

    def _convert_xml(self, data: bytes, trace: bool) -> Converted:
        item = Converted(index=0, raw=data)
        if self._kith is None:
            from router.pipeline._kith import KithConverter  # lxml and the XML mappings load on first use

            self._kith = KithConverter(self._settings, self._fn_ctx, mappings=self._xml_mappings)
        try:
            self._kith.convert_one(item, trace)
            item.patient_key = _patient_key(item.bundle, self._phi_key) if item.bundle else None
        except MessageError as exc:
            item.error = exc
            item.bundle = None
        return item

    def _convert_one(self, item: Converted, trace: bool) -> None:
        decoded = decode(_Raw(item), default_charset=self._charset, sender_charsets=self._sender_charsets)
        h = decoded.header
        item.header = h
        item.control_id = h.control_id or None
        item.sender = h.sender
        message_type, event, structure = _shown_type(h)
        item.message_type = message_type
        note = _MASKED_NOTE if _NOT_A_CODE in (message_type.split("^") + [structure]) else ""
        check_header(h)  # a version or processing id Helsebro does not take: rejected (AR) before any mapping runs
        mm = self.mappings.for_sender(h.sending_application, h.sending_facility).find(h.message_code, h.trigger_event, h.structure)
        if mm is None:
            raise NoMapping(f"no mapping for message type {message_type or '(empty)'} structure {structure or '(empty)'}{note}", location="MSH-9")
        item.structure = mm.structure
        if mm.events and h.trigger_event and h.trigger_event not in mm.events:
            raise UnsupportedEvent(f"mapping {mm.structure} does not cover event {event}{note}", location="MSH-9.2")
        decoded.message.structure = mm.structure
        if mm.out_of_place:
            _refuse_out_of_place(decoded.message, mm)
        if mm.requires:
            _refuse_missing(decoded.message, mm)
        if mm.once:
            _refuse_repeated(decoded.message, mm)
        scope = Scope(decoded.message)
        self._fn_ctx.sender = _sender_identity(h, decoded.message)  # whose numbers the unqualified local identifiers are
        explain: list[tuple[str, str, str]] | None = [] if trace else None
        item.bundle = run_mapping(mm, scope, self._fn_ctx, trace=explain)
        if explain is not None:
            item.bundle["_explain"] = explain
        item.patient_key = _patient_key(item.bundle, self._phi_key)
        item.unmapped = _unmapped(decoded.message, scope.reads)


class _Raw:
    __slots__ = ("data", "index")

    def __init__(self, item: Converted) -> None:
        self.index = item.index
        self.data = item.raw


def _batch_shortfall(short: BatchShortfall, index: int) -> Converted:
    """One more result for a batch whose BTS-1/FTS-1 count disagrees with what arrived: its messages stand, the loss is reported.

    Its bytes are the batch's envelope segments only, so its dead letter holds no message and a replay of it refuses again.
    """
    return Converted(index=index, raw=short.envelope, control_id=short.control_id, error=short.error)


def _sender_identity(h: Any, message: Any) -> str | None:
    """Whose the numbers that name no assigning authority are: MSH-4.1, MSH-4.2, else MSH-3.1, MSH-3.2; None when all are empty.

    Why MSH-3 after MSH-4: a sender that leaves MSH-4 empty is known by its application alone, as the
    journal and the duplicate guard know it (`application@`). Before, its numbers went under
    `urn:helsebro:local:unknown:…`, which every such sender shared: two systems' patient 123456 were
    one Patient. With no name at all, library._local_system refuses such a number rather than share one.
    """
    return _named(h.sending_facility) or _universal_id(message, 4) or _named(h.sending_application) or _universal_id(message, 3)


def _named(value: str) -> str | None:
    """*value* when it names someone: not empty, blank nor HL7's explicit null `""` (each of those named every such sender)."""
    return value if value.strip() and value != '""' else None


def _universal_id(message: Any, index: int) -> str | None:
    """MSH-<index>.2, an HD's universal id, for a header that gives no MSH-<index>.1."""
    fields = message.segments[0].fields
    parts = fields[index].split(message.delims.component) if len(fields) > index else []
    return _named(parts[1]) if len(parts) > 1 else None


def _refuse_out_of_place(message: Any, mm: Any) -> None:
    """Refuse a segment the mapping names where the structure has no place for it (an OBX before any OBR)."""
    for seg in message.root().misplaced:
        if seg.name in mm.out_of_place:
            raise InvalidContent(f"{seg.label} stands where {mm.structure} has no place for it (a result needs its order, an OBR, before it), so no rule could map it", location=seg.label)


def _refuse_missing(message: Any, mm: Any) -> None:
    """Refuse a message that lacks a segment its mapping requires (an ADT with no PID): else it is acknowledged having said nothing."""
    for name in mm.requires:
        if not message.by_name.get(name):
            raise InvalidContent(f"{mm.structure} needs a {name} segment, and this message has none", location=name)


def _refuse_repeated(message: Any, mm: Any) -> None:
    """Refuse a message with a second segment its mapping applies once (an A45's MRG[2]): else that part is acknowledged and never applied."""
    for name in mm.once:
        found = message.by_name.get(name) or []
        if len(found) > 1:
            extra = found[1]
            raise InvalidContent(
                f"{mm.structure} applies one {name} per message, and this message has {len(found)}: {extra.label} would not be applied; send each as its own message",
                location=extra.label,
            )


def patient_key_for(system: str, value: str, phi_key: bytes | None = None) -> str:
    """The key a patient's messages are logged, dead-lettered and journalled under: a hash of their identity's search.

    One key per identity, whether a message updates the Patient (`PUT Patient?identifier=…`,
    an ADT) or creates it only when missing (`ifNoneExist: identifier=…`, a lab result), so an
    operator finds all of a patient's messages by one key (`helsebro find --patient`). *phi_key*:
    Settings.phi_key_bytes (HELSEBRO_PHI_KEY), see router.logging.phi_hash.
    """
    return phi_hash(identifier_query(system, value), phi_key)


def _patient_key(bundle: dict[str, Any], phi_key: bytes | None) -> str | None:
    for entry in bundle.get("entry", []):
        if entry.get("resource", {}).get("resourceType") == "Patient":
            request = entry["request"]
            url = request["url"]
            return phi_hash(request.get("ifNoneExist") or url.partition("?")[2] or url, phi_key)  # the query patient_key_for() hashes
    return None


def _unmapped(message: Any, reads: set[tuple[int, int]]) -> list[str]:
    """Name every non-empty field that no rule read, e.g. `PID-19`, `ZPD[1]-2`.

    Only valued fields are looked up in *reads*: most fields of a segment are empty.
    """
    out: list[str] = []
    for seg in message.segments:
        index = seg.index
        skip = _SKIP_BY_SEGMENT.get(seg.name, _NOTHING)
        valued = [n for n, value in enumerate(seg.fields) if value and value != '""' and n and n not in skip and (index, n) not in reads]
        if valued:
            label = seg.label
            out += [f"{label}-{n}" for n in valued]
    return out
