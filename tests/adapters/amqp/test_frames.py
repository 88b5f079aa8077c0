"""_frames.py writes the very bytes py-amqp's own frame writer writes for a mandatory basic.publish."""

from __future__ import annotations

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from adapters.amqp._frames import Properties, publish_frames

FRAME_MAX = 4096


class _Capture:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))


class _Conn:
    frame_max = FRAME_MAX
    bytes_sent = 0


def _py_amqp(body: bytes, headers: dict, expiration: int | None) -> bytes:
    transport = _Capture()
    props = {"content_type": "application/octet-stream", "content_encoding": "binary", "delivery_mode": 2, "application_headers": headers, "message_id": "m-1", "app_id": "helsebro-run"}
    if expiration is not None:
        props["expiration"] = str(expiration)
    frame_writer(_Conn(), transport)(1, 7, spec.Basic.Publish, dumps("Bssbb", (0, "helsebro.in", "hl7v2.p3", True, False)), amqp.Message(body, **props))
    return b"".join(transport.out)


@pytest.mark.parametrize("size", [0, 1, FRAME_MAX - 8, FRAME_MAX - 7, 3 * FRAME_MAX + 5])
@pytest.mark.parametrize("expiration", [None, 1500])
def test_same_bytes_as_py_amqp(size, expiration):
    """Empty, small, exactly one frame, one byte over, and several body frames; with and without expiration."""
    body = bytes(i % 251 for i in range(size))
    headers = {"x-helsebro-control-id": "Æ1", "x-helsebro-attempt": 3, "x-flag": True, "x-empty": ""}
    props = Properties(content_type="application/octet-stream", content_encoding="binary", app_id="helsebro-run")
    mine = publish_frames(7, FRAME_MAX, "helsebro.in", "hl7v2.p3", body, props.encode(headers, "m-1", expiration))
    assert mine == _py_amqp(body, headers, expiration)


def test_too_long_a_name_is_refused():
    """A routing key over 255 bytes cannot be encoded: refused, not truncated."""
    props = Properties(content_type="a", content_encoding="b", app_id="c").encode(None, "m", None)
    with pytest.raises(ValueError):
        publish_frames(1, FRAME_MAX, "", "x" * 256, b"", props)
