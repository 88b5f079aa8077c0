"""Library functions the HL7 v2 message mappings use for documents (MDM, ORU ED values): "base64_data", "hex_data", "base64", "mime" with table 0191 codes."""

from __future__ import annotations

import pytest

from router.errors import InvalidContent
from router.mapping.library import LIBRARY, FnContext, call

CTX = FnContext({}, "urn:helsebro:local:{authority}:{type}")


def fn(name: str, *values: str | None):
    return call(LIBRARY[name], CTX, list(values), [f"OBX-5[1].{5 + i}" for i in range(len(values))])


class TestBase64Data:
    def test_valid_base64_comes_back_without_line_breaks(self):
        """ED data wrapped over lines is one base64 string."""
        assert fn("base64_data", "JVBERi0x\nLjQK") == "JVBERi0xLjQK"

    def test_empty_is_absent(self):
        """No data gives nothing, not an empty attachment."""
        assert fn("base64_data", "  ") is None

    @pytest.mark.parametrize("text", ["<Base64 encoded>", "abc", "not*base64=="])
    def test_text_that_is_not_base64_is_refused_at_its_position(self, text):
        """A placeholder or plain text under Base64 never reaches Attachment.data (base64Binary)."""
        with pytest.raises(InvalidContent) as err:
            fn("base64_data", text)
        assert err.value.location == "OBX-5[1].5"


class TestHexData:
    @pytest.mark.parametrize("text", ["255044462D312E340A", "255044462d312e340a", "25 5044 462D\n312E340A"])
    def test_hex_digits_in_any_case_become_base64_of_their_bytes(self, text):
        """ED data declared Hex (table 0299): "%PDF-1.4\\n" as hex digits is its bytes, not the digits' text."""
        assert fn("hex_data", text) == "JVBERi0xLjQK"

    def test_empty_is_absent(self):
        """No data gives nothing, not an empty attachment."""
        assert fn("hex_data", " ") is None

    @pytest.mark.parametrize("text", ["255", "25G0", "0x25", "<Hex encoded>"])
    def test_an_odd_length_or_a_non_hex_character_is_refused_at_its_position(self, text):
        """Text that is not whole bytes of hex digits never reaches Attachment.data."""
        with pytest.raises(InvalidContent) as err:
            fn("hex_data", text)
        assert err.value.location == "OBX-5[1].5"


class TestMime:
    @pytest.mark.parametrize(("kind", "sub", "want"), [("AP", "PDF", "application/pdf"), ("IM", "JPEG", "image/jpeg"), ("TEXT", "RTF", "text/rtf"), ("Application", "pdf", "application/pdf"), ("TX", None, "text/plain")])
    def test_table_0191_codes_become_mime_types(self, kind, sub, want):
        """ED.2 type codes of HL7 table 0191 (AP, IM, TEXT) are MIME top-level types."""
        assert fn("mime", kind, sub) == want


class TestBase64:
    def test_text_becomes_base64_of_its_utf8_bytes(self):
        """MDM text (TX/FT) goes into Attachment.data as base64 of UTF-8: "base64"."""
        assert fn("base64", "Blodtrykk målt") == "QmxvZHRyeWtrIG3DpWx0"
        assert fn("base64", None) is None
