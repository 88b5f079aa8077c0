"""Every error Helsebro raises on purpose.

HelsebroError
├── ConfigError          refuse to start, or refuse the reload
│   └── MappingError     a mapping fails lint; carries file:line:col
├── MessageError         this message cannot succeed: dead-letter, never retry
│   ├── DecodeError      not a message (charset, delimiters, XML, framing)
│   ├── UnknownMessage   no mapping for this structure or sender
│   │   ├── NoMapping    read, but no mapping serves it: a passthrough route may still forward it
│   │   │   └── UnsupportedEvent  its structure is mapped, its trigger event (MSH-9.2) is not
│   │   ├── UnsupportedVersion       an HL7 version (MSH-12) Helsebro does not read
│   │   └── UnsupportedProcessingId  a processing id (MSH-11) outside HL7 table 0103
│   ├── InvalidContent   well formed but wrong (check digit, XSD, required element)
│   │   ├── InvalidNationalId  a number declared a national id is not one
│   │   ├── RequiredMissing    an element the mapping requires gives no value
│   │   └── NotInTable         a code a table that refuses unlisted codes does not list
│   └── Refused          a destination rejected it for good
└── TransientError       the world is wrong for now: retry with backoff
    ├── BrokerUnavailable
    └── RecordUnavailable

The branch decides what happens next; callers decide by type, never by text.
"""

from __future__ import annotations


class HelsebroError(Exception):
    """Base of every error raised on purpose."""


class ConfigError(HelsebroError):
    """Settings or config files are wrong: refuse to start or to reload."""


class MappingError(ConfigError):
    """A mapping file fails its load-time checks."""

    def __init__(self, reason: str, *, file: str = "?", line: int = 0, column: int = 0) -> None:
        super().__init__(f"{file}:{line}:{column}: {reason}")
        self.reason = reason
        self.file = file
        self.line = line
        self.column = column


class MessageError(HelsebroError):
    """The message cannot succeed as sent."""

    #: OperationOutcome.issue.code for this kind of failure.
    issue_code = "processing"

    def __init__(self, reason: str, *, location: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason  # for a human; never a value from the message
        self.location = location  # "PID-3[1].1", an XPath, or None


class DecodeError(MessageError):
    """The bytes are not a message: charset, delimiters, framing, XML."""

    issue_code = "structure"


class UnknownMessage(MessageError):
    """No mapping handles this message structure or sender."""

    issue_code = "not-supported"


class NoMapping(UnknownMessage):
    """The message was read (header, sender, type), but no mapping serves its structure or event.

    It has no Bundle, so it can reach no destination that needs one; routes whose every
    destination takes the original bytes (passthrough) still forward it (router.routing.match).
    """


class UnsupportedEvent(NoMapping):
    """A mapping serves the message's structure, but not its trigger event (MSH-9.2).

    Its own class because HL7 table 0357 has a code for it (201 "Unsupported event code"), which
    the ACK's ERR-3 gives rather than 200 "Unsupported message type": the sender then knows
    the type is taken and only that event is not.
    """


class UnsupportedVersion(UnknownMessage):
    """The message is in an HL7 v2 version (MSH-12) Helsebro does not read.

    Its own class because HL7 table 0357 has a code for it (203 "Unsupported version id"),
    which the ACK's ERR-3 gives; HL7 v2.5 §2.9.2 rejects it (AR, or CR in enhanced mode).
    """


class UnsupportedProcessingId(UnknownMessage):
    """The message's processing id (MSH-11.1) is none of HL7 table 0103's D, P and T.

    Its own class because HL7 table 0357 has a code for it (202 "Unsupported processing id").
    """


class InvalidContent(MessageError):
    """Well formed, but a value is wrong (check digit, required element)."""

    issue_code = "value"


class MultipleMatches(InvalidContent):
    """A conditional entry's search finds several resources, so which one it means is unknown.

    The REST face answers it 412 Precondition Failed, as FHIR's conditional create,
    update and patch say; elsewhere it is refused as any invalid content is.
    """


class UnstorableContent(InvalidContent):
    """The record's database refused a value it was given to store: a NUL character, an index entry over its size.

    A batch's write fails whole and does not say which Bundle held the value, so the
    record applies that batch's Bundles one at a time to find it (SqlRecord.apply_batch);
    the one that fails alone is refused, the others apply. Before this class such a
    refusal read as an outage, retried for ever: one message stopped its partition.
    """


class InvalidNationalId(InvalidContent):
    """A number declared a fødselsnummer, D-nummer or FH-nummer fails its check digits or date.

    Its own class because a KITH sender is told so by its own AppRec code when the
    number is the patient's (8221 E31), not by the catch-all X99; `location` says whose.
    """


class RequiredMissing(InvalidContent):
    """An element the mapping must write (FHIR minimum 1) gets no value from the field that feeds it.

    Its own class because HL7 table 0357 has a code for it (101 "Required field missing"), which
    the ACK's ERR-3 gives rather than 102 "Data type error": the field is empty, not malformed.
    """


class NotInTable(InvalidContent):
    """A code is not in the table that translates it, and that table refuses codes it does not list (`unmapped: error`).

    Its own class because HL7 table 0357 has a code for it (103 "Table value not found"), which
    the ACK's ERR-3 gives rather than 102 "Data type error".
    """


class Refused(MessageError):
    """A destination rejected the message for good.

    `detail` is what the destination said (its OperationOutcome diagnostics):
    it may quote the message's values, names included, so it goes into the dead
    letter's OperationOutcome, inside the record's walls, and never into a log,
    a reason or `helsebro status`; `helsebro dlq show` prints it only with
    `--body`, asked and audited.
    """

    issue_code = "business-rule"

    def __init__(self, reason: str, *, location: str | None = None, detail: str | None = None) -> None:
        super().__init__(reason, location=location)
        self.detail = detail


class TransientError(HelsebroError):
    """The world is wrong for now: retry with backoff."""


class BrokerUnavailable(TransientError):
    """The broker cannot be reached or refused a publish."""


class RecordUnavailable(TransientError):
    """The record's database cannot be reached or is busy."""
