"""The protocols the engine's parts meet at: the record, and conversion results.

Adapters implement these; the router depends only on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, get_args

from router.errors import MessageError

FhirJson = dict[str, Any]
"""A FHIR resource as parsed JSON: the one dict allowed on the hot path."""

EntryOutcome = Literal["created", "updated", "unchanged", "deleted"]
"""What applying one Bundle entry did to the record."""

SettledOutcome = Literal["applied", "unchanged", "forwarded", "filtered", "duplicate", "dead_lettered", "receipt"]
"""What became of one message (router.pipeline.settle), as the journal keeps it and find and status show it.
`receipt`: an AppRec answering a message Helsebro sent, journalled under the MsgId it answers; never answered."""
SETTLED_OUTCOMES: tuple[SettledOutcome, ...] = get_args(SettledOutcome)
APPLIED_OUTCOMES: frozenset[str] = frozenset({"applied", "unchanged"})
"""The outcomes of a message the record applied; the others are journalled with a note instead of what it wrote."""


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One Bundle entry after the record applied it."""

    resource_type: str
    id: str
    version: int
    outcome: EntryOutcome


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The record's answer to one transaction Bundle."""

    entries: tuple[AppliedEntry, ...]

    @property
    def changed(self) -> bool:
        """True when any entry created or changed a resource."""
        return any(e.outcome != "unchanged" for e in self.entries)


class JournalFacts(NamedTuple):
    """What the record journals about a message it applies (SqlRecord.apply_batch): safe to show, no patient data.

    '' for a value the message did not give.
    """

    control_id: str
    sender: str
    message_type: str
    patient_key: str  # a hash of the patient's identity (router.pipeline.convert.patient_key_for)
    destinations: str = ""  # the destinations other than the record its routes chose, comma-separated


class Record(Protocol):
    """The shared record: a FHIR store that applies transaction Bundles atomically."""

    def apply(self, bundle: FhirJson) -> ApplyResult:
        """Apply a transaction Bundle all-or-nothing.

        Raises:
            InvalidContent: the Bundle cannot be applied (bad request, unknown reference).
            RecordUnavailable: the database is unreachable or busy; retry later.
        """
        ...

    def read(self, resource_type: str, id: str) -> FhirJson | None:
        """Return the current version, or None when absent or deleted."""
        ...

    def history(self, resource_type: str, id: str) -> list[FhirJson]:
        """Return every version, newest first."""
        ...

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[FhirJson]:
        """Search by `identifier`, `patient`, `subject` or `_id` (FHIR token/reference syntax)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class OutboundCaseResult:
    """The outcome of one outbound mapping case (HL7 v2 or KITH): what `helsebro mappings test` prints."""

    name: str
    passed: bool
    detail: str  # a unified diff, or why the case could not run


@dataclass(slots=True)
class Converted:
    """One message's conversion: a Bundle or an error, plus the ids the journal needs.

    `control_id`, `sender`, `message_type` and `patient_key` are safe to log:
    the patient key is a salted hash, never the identifier itself.
    """

    index: int
    raw: bytes
    control_id: str | None = None
    sender: str | None = None
    message_type: str | None = None
    structure: str | None = None
    patient_key: str | None = None
    bundle: FhirJson | None = None
    error: MessageError | None = None
    unmapped: list[str] = field(default_factory=list)
    header: MessageHeader | None = None
    format: Literal["hl7v2", "kith"] = "hl7v2"
    envelope: Any = None  # KITH: the KithEnvelope, for AppRecs

    @property
    def ok(self) -> bool:
        """True when the message converted to a Bundle."""
        return self.error is None and self.bundle is not None

    def outcome(self) -> FhirJson:
        """Return the OperationOutcome for a failed conversion."""
        err = self.error or MessageError("message produced no Bundle")
        issue: FhirJson = {
            "severity": "error",
            "code": err.issue_code,
            "diagnostics": err.reason,
        }
        if err.location:
            issue["expression"] = [err.location]
            issue["location"] = [err.location]
        return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """Who sent a message, to whom, and what it is: safe to log, needed for replies."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""
    trigger_event: str = ""
    structure: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack_type: str = ""
    """MSH-15, when to send an accept ACK (HL7 table 0155: AL, NE, ER, SU); empty with MSH-16 empty is original mode."""
    application_ack_type: str = ""
    """MSH-16, when to send an application ACK (table 0155)."""
    charset: str = ""
    """The Python codec an HL7 v2 message was read in (MSH-18, else the sender's configured default, else
    UTF-8 or the ISO-8859-1 fallback): its ACK is written in it, so the sender reads its own names back."""
    sent: str | None = None
    """When the sender made the message, as the source wrote it: the HL7 TS of MSH-7.1
    (`20250110083000+0100`) or a KITH GenDate (`2025-01-10T08:30:00`); None when it gives none.

    Kept as text in the source's own syntax so each outbound renderer converts it once,
    by its format's rule, instead of re-reading the raw bytes."""

    @property
    def message_type(self) -> str:
        """MSH-9 as `CODE^EVENT`, e.g. `ADT^A01`."""
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    @property
    def sender(self) -> str:
        """`application@facility`, the sender's name in logs and routing."""
        return f"{self.sending_application}@{self.sending_facility}"
