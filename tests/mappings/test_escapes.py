"""HL7 escapes reach FHIR as the text the sender meant: in components, and in whole values a function or table takes."""

from __future__ import annotations

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
