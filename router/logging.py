"""Configure structlog once, with a redaction processor that keeps PHI out of logs.

Components receive a bound logger; they never configure logging themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import json as _stdlib_json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from orjson import dumps as _orjson_dumps

#: Keys whose values are patient data. Their values are hashed before rendering.
PHI_KEYS = frozenset({"fnr", "dnr", "national_id", "patient_id", "name", "family", "given", "birth_date", "body", "raw", "address", "phone"})

# Eleven digits in a row look like a fødselsnummer, D-nummer or FH-nummer:
# mask them wherever they appear, so an error text that quotes one is still safe.
_ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")


_RESOURCE_ID = re.compile(r"/([A-Z][A-Za-z]{1,63})/[A-Za-z0-9\-.]{1,64}(?=/|$)")


def resource_path(path: str) -> str:
    """A FHIR request path as a log line may show it: `/fhir/Patient/{id}/_history/2`.

    A resource's id is derived from its business identity without a secret
    (router.mapping.runtime.resource_id), so a Patient's id stands for its
    fødselsnummer: anyone with the logs could find the number by hashing
    every one. The type, the route and the version stay.
    """
    return _RESOURCE_ID.sub(r"/\1/{id}", path)


def phi_hash(value: str, key: bytes | None = None) -> str:
    """Return a short, stable, one-way key for *value*, safe to log and to correlate.

    With *key* (the secret HELSEBRO_PHI_KEY, Settings.phi_key_bytes) it is an HMAC:
    without the secret nobody can tell which number a key stands for. Without it,
    a plain hash: national ids are few enough (some hundred million) that anyone
    with a key can find its number by hashing every one; `helsebro status` says so.
    """
    if key:
        return "h:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
    return "h:" + hashlib.sha256(b"helsebro|" + value.encode("utf-8")).hexdigest()[:16]


def _redactor(phi_key: bytes | None) -> Any:
    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            value = event[key]
            if key in PHI_KEYS and value is not None:
                event[key] = phi_hash(str(value), phi_key)
            elif isinstance(value, str) and len(value) >= 11:  # a shorter text holds no 11 digits: no regex for it
                event[key] = _ELEVEN_DIGITS.sub("<11-digit id>", value)
        return event

    return redact


def _json(event: dict[str, Any], **_: Any) -> str:
    """One JSON line, by orjson: the engine logs every settled message, and the standard library's encoder took a
    third of that line's cost. Whatever orjson cannot encode goes to the standard library, as before."""
    try:
        return _orjson_dumps(event, default=repr).decode()
    except TypeError:
        return _stdlib_json.dumps(event, default=repr)


def configure_logging(*, level: str = "info", stream: TextIO | None = None, json: bool = True, phi_key: bytes | None = None) -> None:
    """Set up structlog for this process: redaction first (PHI fields hashed with *phi_key*, see phi_hash), then JSON or console lines."""
    renderer: Any = structlog.processors.JSONRenderer(serializer=_json) if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redactor(phi_key),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """Return a logger bound to *name* (the component)."""
    return structlog.get_logger().bind(component=name)
