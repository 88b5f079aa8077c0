"""Library functions added for the KITH referral/result mappings."""

from __future__ import annotations

import base64

from router.mapping.library import LIBRARY, FnContext, call

CTX = FnContext({}, "urn:helsebro:local:{authority}:{type}")


class TestBase64:
    def test_text_becomes_base64_of_its_utf8(self):
        """Norwegian letters survive: the attachment decodes to the same text."""
        out = call(LIBRARY["base64"], CTX, ["Forløp: går bra"], [None])
        assert out == base64.b64encode("Forløp: går bra".encode()).decode()
        assert base64.b64decode(out).decode("utf-8") == "Forløp: går bra"

    def test_empty_is_absent(self):
        """No text gives no value, so no empty Attachment.data is written."""
        assert call(LIBRARY["base64"], CTX, [None], [None]) is None
        assert call(LIBRARY["base64"], CTX, [""], [None]) is None
