"""Configure structlog once, with a redaction processor that keeps PHI out of logs.

Components receive a bound logger; they never configure logging themselves.
"""

from __future__ import annotations

import hashlib
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


def phi_hash(value: str) -> str:
    """Return a short, stable, one-way key for *value*, safe to log and to correlate."""
    return "h:" + hashlib.sha256(b"helsebro|" + value.encode("utf-8")).hexdigest()[:16]


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        value = event[key]
        if key in PHI_KEYS and value is not None:
            event[key] = phi_hash(str(value))
        elif isinstance(value, str) and len(value) >= 11:  # a shorter text holds no 11 digits: no regex for it
            event[key] = _ELEVEN_DIGITS.sub("<11-digit id>", value)
    return event


def _json(event: dict[str, Any], **_: Any) -> str:
    """One JSON line, by orjson: the engine logs every settled message, and the standard library's encoder took a
    third of that line's cost. Whatever orjson cannot encode goes to the standard library, as before."""
    try:
        return _orjson_dumps(event, default=repr).decode()
    except TypeError:
        return _stdlib_json.dumps(event, default=repr)


def configure_logging(*, level: str = "info", stream: TextIO | None = None, json: bool = True) -> None:
    """Set up structlog for this process: redaction first, then JSON or console lines."""
    renderer: Any = structlog.processors.JSONRenderer(serializer=_json) if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """Return a logger bound to *name* (the component)."""
    return structlog.get_logger().bind(component=name)
