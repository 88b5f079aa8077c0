"""The KITH XML branch of conversion: safe read, XSD, envelope checks, then the XML mappings.

Kept beside convert.py, which hands it any delivery that starts with `<`. A
message whose mapping declares `embedded:` (an M9.6 carrying its M1s) has each
carried message decoded and converted here by this same path, then joined into
its Bundle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from adapters.kith import KithEnvelope, decode_embedded, read_message, schema_set
from adapters.kith.errors import shown
from adapters.kith.paths import message_scope, path_compiler, unmapped
from router.contracts import Converted, MessageHeader
from router.errors import InvalidContent, MessageError, NoMapping, UnknownMessage
from router.mapping import MappingSet, join_bundles, run_mapping
from router.mapping._join import Override
from router.mapping.mapping_set import load_namespaces
from router.settings import Settings


class KithConverter:
    """Converts one KITH XML message; owns the XML mappings and the schema set."""

    def __init__(self, settings: Settings, fn_ctx: Any, *, mappings: MappingSet | None = None) -> None:
        """*mappings*, when given, is `<mappings_dir>/kith` compiled already (by `mappings test`'s lint); else it is compiled here."""
        root = settings.mappings_dir / "kith"
        self.prefixes = load_namespaces(root / "namespaces.yaml") if (root / "namespaces.yaml").exists() else {}
        if mappings is None and (root / "messages").is_dir():
            mappings = MappingSet.load(root, path_compiler(self.prefixes))
        self.mappings = mappings
        self.schemas = schema_set(settings.xsd_dir) if settings.xsd_dir else None
        self._fn_ctx = fn_ctx

    def convert_one(self, item: Converted, trace: bool, *, expect: str | None = None, made: dict[str, str] | None = None) -> Any:
        """Fill *item* from its XML; raise the MessageError that makes it fail. Returns the read scope.

        *expect* names the only mapping that may convert it (a message embedded in
        another); *made*, when given, receives its top-level resources' fullUrls.
        """
        item.format = "kith"
        received = read_message(item.raw, schemas=self.schemas)
        env = received.envelope
        item.envelope = env
        her_id = None  # the sender's, asked once: Party.her_id searches its persons and departments
        if env is not None:
            her_id = env.sender.her_id if env.sender else None
            item.control_id = env.msg_id or None
            item.sender = her_id or None
            item.message_type = _shown_type(env.msg_type) or env.payload_root
            item.structure = env.payload_root
            item.header = _header(env, item.message_type)
        if received.error is not None:
            raise received.error
        assert env is not None  # noqa: S101 - read_message returns an envelope when there is no error
        mm = self.mappings.for_sender(her_id).find_xml(env.payload_namespace, env.payload_root) if self.mappings else None
        if mm is None:
            raise NoMapping(f"no mapping for {shown(str(env.payload_root or env.root))} in namespace {shown(str(env.payload_namespace))}", location="/")
        if expect is not None and mm.structure != expect:
            raise UnknownMessage(f"the embedded message is {_shown_type(env.msg_type) or env.payload_root}, where only {expect} may be embedded", location="/MsgHead/MsgInfo/Type")
        root = env.payload.getroottree().getroot() if env.payload is not None else None
        if root is None:
            raise UnknownMessage("the message carries no XML payload to map", location="/MsgHead/Document")
        scope = message_scope(root, self.prefixes)
        carried = self._carried(mm.embedded, scope, trace) if mm.embedded is not None else None
        self._fn_ctx.sender = env.sender.institution_her_id if env.sender else None  # whose the unqualified numbers (an H-nummer) are
        explain: list[tuple[str, str, str]] | None = [] if trace else None
        item.structure = mm.structure
        own: dict[str, str] = {} if made is None else made
        bundle = item.bundle = run_mapping(mm, scope, self._fn_ctx, trace=explain, given=carried.given if carried else None, made=own)
        item.unmapped = unmapped(root, scope.reads, scope.results)
        if carried is not None:
            carried.join_into(bundle, item, mm.embedded.same, own, explain, override=mm.embedded.override)
        if explain is not None:
            bundle["_explain"] = explain
        return scope

    def _carried(self, spec: Any, scope: Any, trace: bool) -> _Carried:
        """Decode and convert every message the elements of `embedded.from` carry, as if each came on its own.

        The same path as a delivery (safe parse, DOCTYPE refused, XSD, envelope
        checks, the sender's mappings), so an M1 gives the same ids embedded as
        sent alone, and the record keeps one MedicationRequest. A refusal names
        the carrying element before the embedded message's own position.
        """
        carried = _Carried()
        for found in spec.path.resolve(scope):
            where = found.location
            inner = Converted(index=0, raw=b"")
            made: dict[str, str] = {}
            try:
                inner.raw = decode_embedded(found.raw, location=where)
                self.convert_one(inner, trace, expect=spec.message, made=made)
            except MessageError as exc:
                _place(exc, where)
                if isinstance(exc, NoMapping):  # the carrier is mapped: its content is refused, never forwarded as received
                    raise UnknownMessage(exc.reason, location=exc.location) from exc
                raise
            bundle = inner.bundle or {"entry": []}
            carried.explain += bundle.pop("_explain", [])
            carried.parts.append((where, bundle))
            carried.unmapped += [f"{where} > {u}" for u in inner.unmapped or ()]
            if spec.same and spec.same in made:
                carried.add_same(spec.same, made[spec.same], where)
        return carried


@dataclass(slots=True)
class _Carried:
    """What the embedded messages of one message gave: their Bundles, and the one resource they must share."""

    parts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (carrying element, Bundle)
    given: dict[str, str] = field(default_factory=dict)  # `same:` name → the fullUrl all of them made
    explain: list[tuple[str, str, str]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)

    def add_same(self, name: str, url: str, where: str) -> None:
        """Refuse a second, different `same:` resource: a prescription list is one patient's (patient safety)."""
        known = self.given.setdefault(name, url)
        if known != url:
            raise InvalidContent(f"the embedded messages name different {name}s; every one must be about the same {name}", location=where)

    def join_into(
        self, bundle: dict[str, Any], item: Converted, name: str | None, own: dict[str, str], explain: list[tuple[str, str, str]] | None,
        *, override: Override | None = None,
    ) -> None:
        """Join the embedded messages' Bundles into the carrying message's, after checking that they share its `same:` resource.

        Raises:
            InvalidContent: the carrying message's own `same:` resource is not theirs
                (an M9.12's Fnr and its M25.1), or two of them write one identity differently.
        """
        if name and name in own and name in self.given and own[name] != self.given[name]:
            where = next(w for w, _ in self.parts)
            raise InvalidContent(f"the embedded message is about another {name} than the message that carries it", location=where)
        join_bundles(bundle, self.parts, override=override)
        item.unmapped += self.unmapped
        if explain is not None:
            explain += self.explain


def _place(exc: MessageError, where: str) -> None:
    """Place the embedded message's refusal in the carrying message: its element first, then its own position.

    The same error, not a new one: its type decides the reply (AppRec T01 for
    XML that is not well-formed or declares a DOCTYPE, T02 for the schema).
    """
    exc.location = f"{where} > {exc.location}" if exc.location and exc.location != where else where
    exc.reason = exc.reason if exc.reason.startswith("the embedded message") else f"the embedded message is refused: {exc.reason}"
    exc.args = (exc.reason,)


_KITH_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
"""MsgInfo/Type (Volven 8279: `DIALOG_HELSEFAGLIG`, `ERM1`, `APPREC`; older Message versions `E`, `H`, `R`, `S`)."""


def _shown_type(msg_type: str) -> str:
    """MsgInfo/Type as logs, the journal and dead letters show it: as sent when it is shaped as a Volven 8279 code, else `?`.

    Why: the type is logged with every message (`delivery_settled`) and journalled, and a
    sender that fills the wrong element puts a name there (DESIGN §5: never patient data),
    as MSH-9 is masked for HL7 v2. Routing and the mapping still read the type as sent.
    """
    return msg_type if not msg_type or _KITH_CODE.fullmatch(msg_type) else "?"


def _header(env: KithEnvelope, message_type: str | None) -> MessageHeader:
    """The MessageHeader of a KITH message: its type, MsgId and GenDate.

    The HL7 party fields (MSH-3 to MSH-6) stay empty: a KITH party is a HER-id,
    which routing reads from the envelope itself. The message code is the
    message type, so routing by `message_code` works as it did without a header.
    """
    return MessageHeader(
        message_code=message_type or "",  # none: a MsgHead without a type and without a payload
        structure=env.payload_root or "",
        control_id=env.msg_id or "",
        sent=(env.gen_date or "").strip() or None,
    )
