"""KITH XML at the edge: safe parsing, national XSDs, MsgHead/Message/AppRec envelopes, AppRec replies.

Words: *MsgHead* is the national envelope ("hodemelding", HIS 80601); *AppRec*
the application receipt ("applikasjonskvittering", HIS 80415); *HER-id* a
party's id in NHN's Adresseregisteret. Mapping payloads to FHIR is the router's
job; it receives ``KithEnvelope.payload``. Outbound, ``KithRenderer`` builds a
MsgHead message from a Bundle with an outbound mapping (mappings/outbound/kith/);
``lint_kith_outbound`` and ``run_kith_outbound_case`` check those mappings and
their fixture cases for ``helsebro mappings lint|test``.
"""

from __future__ import annotations

from adapters.kith._outbound import OutboundMapping, load_outbound
from adapters.kith.apprec import APPREC_ERROR_FOR, AppRecMessage, AppRecVersion, apprec_error_for, apprec_version_for, build_apprecs
from adapters.kith.dispatch import Received, check_envelope, read_envelope, read_message, salvage
from adapters.kith.duplicates import DuplicateGuard, SeenStoreDuplicateGuard
from adapters.kith.embedded import decode_embedded
from adapters.kith.envelope import APPREC_NS, MSGHEAD_NS, Attachment, ConversationRef, Ident, KithEnvelope, Party, Person, payload_standard
from adapters.kith.errors import InvalidMsgId, PatientInsufficient, PatientNotFound, SchemaInvalid
from adapters.kith.outbound_cases import (
    CASE_DESTINATION,
    CASE_RECEIVER_HER_ID,
    KithOutboundCase,
    KithOutboundCaseResult,
    find_kith_outbound_cases,
    lint_kith_outbound,
    run_kith_outbound_case,
)
from adapters.kith.render import KithRenderer
from adapters.kith.safe_xml import DEFAULT_LIMITS, ForbiddenDoctype, XmlLimits, parse_xml
from adapters.kith.xsd import SchemaSet, schema_set, validation_status

__all__ = [
    "APPREC_ERROR_FOR",
    "APPREC_NS",
    "CASE_DESTINATION",
    "CASE_RECEIVER_HER_ID",
    "DEFAULT_LIMITS",
    "MSGHEAD_NS",
    "AppRecMessage",
    "AppRecVersion",
    "Attachment",
    "ConversationRef",
    "DuplicateGuard",
    "ForbiddenDoctype",
    "Ident",
    "InvalidMsgId",
    "KithEnvelope",
    "KithOutboundCase",
    "KithOutboundCaseResult",
    "KithRenderer",
    "OutboundMapping",
    "Party",
    "PatientInsufficient",
    "PatientNotFound",
    "Person",
    "Received",
    "SchemaInvalid",
    "SchemaSet",
    "SeenStoreDuplicateGuard",
    "XmlLimits",
    "apprec_error_for",
    "apprec_version_for",
    "build_apprecs",
    "check_envelope",
    "decode_embedded",
    "find_kith_outbound_cases",
    "lint_kith_outbound",
    "load_outbound",
    "parse_xml",
    "payload_standard",
    "read_envelope",
    "read_message",
    "run_kith_outbound_case",
    "salvage",
    "schema_set",
    "validation_status",
]
