"""Encode one AMQP 0-9-1 basic.publish (method, content header, body frames) as bytes, without py-amqp's per-publish work.

Why: py-amqp's `basic_publish` reads the socket before every publish (it
drains events with a zero timeout when the broker announced
`connection.blocked`, which RabbitMQ always does: two `settimeout` calls and
a `recv` per message), and builds its frames through generic serialisers.
For a pipelined publisher that writes a batch's frames in one syscall
(outbound.py), that was about half of all publishing time. The frames here
are the same bytes py-amqp writes (tests/adapters/amqp/test_frames.py
compares them); the header table still goes through py-amqp's own table
serialiser, so value types are encoded exactly as before.

Nothing here does I/O or knows a queue name: outbound.py decides what to
publish and when to write.
"""

from __future__ import annotations

from collections.abc import Mapping
from struct import Struct
from typing import Any

from amqp.serialization import dumps

__all__ = ["Properties", "publish_frames"]

_FRAME_END = b"\xce"
_FRAME_HEAD = Struct(">BHI")  # type, channel, size
_METHOD_HEAD = b"\x00\x3c\x00\x28\x00\x00"  # class 60 (basic), method 40 (publish), reserved short 0
_HEADER_HEAD = Struct(">HHQ")  # class 60, weight 0, body size
_FRAME_OVERHEAD = 8  # type, channel, size, frame end
_MANDATORY = b"\x01"  # bits: mandatory=1, immediate=0

# Property flag bits of basic's content header (AMQP 0-9-1 §4.2.6.1, in py-amqp's order).
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS, _DELIVERY_MODE = 1 << 15, 1 << 14, 1 << 13, 1 << 12
_EXPIRATION, _MESSAGE_ID, _APP_ID = 1 << 8, 1 << 7, 1 << 3


def _shortstr(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("AMQP short string longer than 255 bytes")
    return bytes((len(raw),)) + raw


class Properties:
    """The content-header properties every Helsebro publish carries, with the constant part encoded once."""

    __slots__ = ("_app_id", "_prefix")

    def __init__(self, *, content_type: str, content_encoding: str, app_id: str) -> None:
        self._prefix = _shortstr(content_type) + _shortstr(content_encoding)
        self._app_id = _shortstr(app_id)

    def encode(self, headers: Mapping[str, Any] | None, message_id: str, expiration_ms: int | None) -> bytes:
        """Return the property flags and the property list: type, encoding, headers, persistent, [expiration], id, app."""
        flags = _CONTENT_TYPE | _CONTENT_ENCODING | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID | _APP_ID
        expiration = b""
        if expiration_ms is not None:
            flags |= _EXPIRATION
            expiration = _shortstr(str(expiration_ms))
        table = dumps("F", (dict(headers or {}),))
        return b"".join((flags.to_bytes(2, "big"), self._prefix, table, b"\x02", expiration, _shortstr(message_id), self._app_id))


def publish_frames(channel: int, frame_max: int, exchange: str, routing_key: str, body: bytes, properties: bytes) -> bytes:
    """Return the frames of one mandatory basic.publish of *body* on *channel*, bodies split at *frame_max*."""
    method = b"".join((_METHOD_HEAD, _shortstr(exchange), _shortstr(routing_key), _MANDATORY))
    header = _HEADER_HEAD.pack(60, 0, len(body)) + properties
    parts = [_FRAME_HEAD.pack(1, channel, len(method)), method, _FRAME_END, _FRAME_HEAD.pack(2, channel, len(header)), header, _FRAME_END]
    chunk = frame_max - _FRAME_OVERHEAD
    for start in range(0, len(body), chunk):
        piece = body[start:start + chunk]
        parts += (_FRAME_HEAD.pack(3, channel, len(piece)), piece, _FRAME_END)
    return b"".join(parts)
