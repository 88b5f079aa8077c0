"""Take a whole KITH message out of the base64 text another message carries it in.

Owns the wire side of embedding: an M9.6 Reseptliste carries the complete,
signed M1 prescriptions in `Document/RefDoc/Content/Base64Container` (HIS 3004,
FACTS §4), an M9.12 the M25.1 list of medicines in use in `VarerIBrukB64`.
What is embedded, and which mapping converts it, is the mapping's
(`embedded:`); reading the decoded bytes is `read_message`'s, exactly as for
a message that arrives on its own (safe parse, DOCTYPE refused, XSD).
"""

from __future__ import annotations

import base64
import binascii

from adapters.kith.errors import SchemaInvalid
from router.errors import DecodeError

__all__ = ["decode_embedded"]


def decode_embedded(text: str, *, location: str) -> bytes:
    """Return the message bytes that the base64 *text* at *location* holds.

    Line breaks and spaces inside the base64 are allowed (the national
    examples wrap it); any other character is not.

    Raises:
        SchemaInvalid: the text is not base64 (AppRec T02, as for an attachment).
        DecodeError: it decodes to nothing.
    """
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaInvalid("the embedded message is not valid base64", location=location) from exc
    if not data:
        raise DecodeError("the embedded message is empty", location=location)
    return data
