"""HL7 escapes reach FHIR as the text the sender meant: in components, and in whole values a function or table takes."""

from __future__ import annotations

import pytest

MSH = "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||{type}|E1|P|2.5.1\r"


def _resources(converter, text, kind):
    [r] = converter.convert(text.encode())
    assert r.ok, r.error
    return [e["resource"] for e in r.bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_text_results_and_notes_are_unescaped(converter):
    """OBX-5 TX read whole by `lines` and NTE-3 give `&`, `^` and line breaks, not `\\T\\`, `\\S\\`, `\\.br\\`."""
    text = MSH.format(type="ORU^R01^ORU_R01") + (
        "PID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000||||||||||||||||||F\r"
        "OBX|1|TX|C3^Z^NLK||A \\T\\ B\\.br\\line two~rep \\S\\ x||||||F\rNTE|1||note \\T\\ y\r"
    )
    [obs] = _resources(converter, text, "Observation")
    assert obs["valueString"] == "A & B\nline two\nrep ^ x"
    assert obs["note"] == [{"text": "note & y"}]


def test_an_escaped_separator_stays_inside_its_component(converter):
    """`\\S\\` in XAD.1 is a `^` inside the street line: the city and postcode stay where they were."""
    text = MSH.format(type="ADT^A01^ADT_A01") + "EVN|A01|20250115101000\rPID|1||15866112379^^^NOR^FNR||N^O||19610615|M|||Gate 2 \\S\\B^^TRONDHEIM^^7014^NOR\r"
    [patient] = _resources(converter, text, "Patient")
    assert patient["address"] == [{"line": ["Gate 2 ^B"], "city": "TRONDHEIM", "postalCode": "7014", "country": "NOR"}]


def _oru(charset: str, value: str) -> bytes:
    """An ORU whose MSH-18 is *charset* ('' for none) and whose one ST result (OBX-5) is *value*, as ASCII bytes."""
    return (
        f"MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E1|P|2.5.1|||AL|NE|NOR|{charset}\r"
        "PID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000||||||||||||||||||F\r"
        f"OBX|1|ST|C3^Z^NLK||{value}||||||F\r"
    ).encode("ascii")


@pytest.mark.parametrize(("charset", "escaped", "read"), [
    ("8859/1", "\\XE6\\", "æ"),
    ("8859/1", "\\XC3A6\\", "Ã¦"),  # two bytes, two letters of ISO 8859-1: never read as UTF-8
    ("8859/15", "\\XA4\\", "€"),
    ("WINDOWS-1252", "\\X80\\", "€"),
    ("UNICODE UTF-8", "\\XC3A6\\", "æ"),
    ("ASCII", "\\X41\\", "A"),
    ("", "\\XC3A6\\", "æ"),  # undeclared: the default (UTF-8) …
    ("", "\\XE6\\", "æ"),  # … else ISO 8859-1, as decode reads undeclared bytes that UTF-8 refuses
])
def test_hex_escapes_are_read_in_the_messages_charset(converter, charset, escaped, read):
    """`\\Xhh\\` is bytes in the charset MSH-18 declares, not UTF-8 whatever it says (review H192)."""
    [r] = converter.convert(_oru(charset, f"Svar {escaped} slutt"))
    assert r.ok, r.error
    [obs] = [e["resource"] for e in r.bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert obs["valueString"] == f"Svar {read} slutt"


@pytest.mark.parametrize(("charset", "escaped"), [("UNICODE UTF-8", "\\XE6\\"), ("ASCII", "\\XE6\\"), ("UNICODE UTF-8", "\\XC3\\")])
def test_a_hex_escape_its_declared_charset_cannot_read_is_refused_at_its_field(converter, charset, escaped):
    """Bytes of a hex escape that are not valid in the declared charset refuse the message at the field, as raw bytes
    that do not fit MSH-18 refuse it at MSH-18; the reason never quotes the value (review H192)."""
    [r] = converter.convert(_oru(charset, f"Svar {escaped}"))
    assert not r.ok
    outcome = r.outcome()["issue"][0]
    assert outcome["location"] == ["OBX-5"] and outcome["code"] == "structure"
    assert "Svar" not in outcome["diagnostics"]


def test_a_sender_default_charset_reads_its_hex_escapes():
    """Without MSH-18, the sender's configured charset reads `\\Xhh\\` as it reads the message's bytes (review H192)."""
    from adapters.hl7v2._tokenizer import unescape
    from adapters.hl7v2.decode import RawMessage, decode

    data = _oru("", "\\XC3A6\\").replace(b"|NOR|\r", b"|NOR\r")
    for senders, read in (({"LAB": "iso-8859-1"}, "Ã¦"), ({}, "æ")):
        message = decode(RawMessage(0, data), sender_charsets=senders).message
        assert unescape(message.first("OBX").field(5), message.delims) == read
