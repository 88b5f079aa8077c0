"""The KITH XML branch of conversion: safe read, XSD, envelope checks, then the XML mappings.

Kept beside convert.py, which hands it any delivery that starts with `<`.
"""

from __future__ import annotations

from typing import Any

from adapters.kith import KithEnvelope, read_message, schema_set
from adapters.kith.paths import message_scope, path_compiler, unmapped
from router.contracts import Converted, MessageHeader
from router.errors import UnknownMessage
from router.mapping import MappingSet, run_mapping
from router.mapping.mapping_set import load_namespaces
from router.settings import Settings


class KithConverter:
    """Converts one KITH XML message; owns the XML mappings and the schema set."""

    def __init__(self, settings: Settings, fn_ctx: Any) -> None:
        root = settings.mappings_dir / "kith"
        self.prefixes = load_namespaces(root / "namespaces.yaml") if (root / "namespaces.yaml").exists() else {}
        self.mappings = MappingSet.load(root, path_compiler(self.prefixes)) if (root / "messages").is_dir() else None
        self.schemas = schema_set(settings.xsd_dir) if settings.xsd_dir else None
        self._fn_ctx = fn_ctx

    def convert_one(self, item: Converted, trace: bool) -> Any:
        """Fill *item* from its XML; raise the MessageError that makes it fail. Returns the read scope."""
        item.format = "kith"
        received = read_message(item.raw, schemas=self.schemas)
        env = received.envelope
        item.envelope = env
        her_id = None  # the sender's, asked once: Party.her_id searches its persons and departments
        if env is not None:
            her_id = env.sender.her_id if env.sender else None
            item.control_id = env.msg_id or None
            item.sender = her_id or None
            item.message_type = env.msg_type or env.payload_root
            item.structure = env.payload_root
            item.header = _header(env, item.message_type)
        if received.error is not None:
            raise received.error
        assert env is not None  # noqa: S101 - read_message returns an envelope when there is no error
        mm = self.mappings.for_sender(her_id).find_xml(env.payload_namespace, env.payload_root) if self.mappings else None
        if mm is None:
            raise UnknownMessage(f"no mapping for {env.payload_root or env.root} in namespace {env.payload_namespace}", location="/")
        root = env.payload.getroottree().getroot() if env.payload is not None else None
        if root is None:
            raise UnknownMessage("the message carries no XML payload to map", location="/MsgHead/Document")
        scope = message_scope(root, self.prefixes)
        self._fn_ctx.sender = env.sender.institution_her_id if env.sender else None  # whose the unqualified numbers (an H-nummer) are
        explain: list[tuple[str, str, str]] | None = [] if trace else None
        item.structure = mm.structure
        item.bundle = run_mapping(mm, scope, self._fn_ctx, trace=explain)
        if explain is not None:
            item.bundle["_explain"] = explain
        item.unmapped = unmapped(root, scope.reads, scope.results)
        return scope


def _header(env: KithEnvelope, message_type: str) -> MessageHeader:
    """The MessageHeader of a KITH message: its type, MsgId and GenDate.

    The HL7 party fields (MSH-3 to MSH-6) stay empty: a KITH party is a HER-id,
    which routing reads from the envelope itself. The message code is the
    message type, so routing by `message_code` works as it did without a header.
    """
    return MessageHeader(
        message_code=message_type,
        structure=env.payload_root or "",
        control_id=env.msg_id or "",
        sent=(env.gen_date or "").strip() or None,
    )
