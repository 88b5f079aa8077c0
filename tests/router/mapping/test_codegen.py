"""The generated block functions (router/mapping/_codegen.py) do exactly what the compiled closures do.

Every HL7 v2 message at hand (fixture cases, examples, the public corpus when
../shared is present, and a set of edge cases written here) is converted twice:
by mappings loaded with code generation, and by the same mappings loaded
without it. Bundles, errors with their positions, and the unmapped fields must
be the same.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.hl7v2.paths import compile_path
from router.mapping import MappingSet, _codegen
from router.pipeline.convert import Converter
from router.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]

EDGE_CASES = [
    # escapes inside components, an explicit null, repeated fields with empty repetitions, a second PID-3 rep only
    "MSH|^~\\&|PAS|STOLAV|HB|HP|20250110083000||ADT^A01^ADT_A01|E1|P|2.5.1\rEVN|A01|20250110083000\r"
    "PID|1||~15866112379^^^NOR^FNR||N\\S\\ORDMANN^OLA\\T\\X||\"\"|M|||Gate 1\\F\\2^^OSLO||~^NET^Internet^a@b.no\rPV1|1|I|||||||||||||||||V1^^^STOLAV^VN\r",
    # no PV1 (conditions on a missing segment), a non-numeric NM, SN with comparator, ST with repetitions
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E2|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\r"
    "OBR|1|O1|L1|B^Blod^L|||20250115080000||||||||||||||||||F\rOBX|1|NM|C1^X^NLK||see note|g/L|1-2|H~L|||F\r"
    "OBX|2|SN|C2^Y^NLK||<^5|mg/L||||F\rOBX|3|ST|C3^Z^NLK||line one~line two||||||F\rNTE|1||a note\r",
    # non-standard delimiters
    "MSH#*~!&#PAS#STOLAV#HB#HP#20250110083000##ADT*A08*ADT_A01#E3#P#2.4\rPID#1##15866112379*!*!*NOR*FNR##NORDMANN*KARI##19610615#F\r",
    # a DG1 on a transfer, which makes no Condition: the stay's diagnosis entry is dropped, and so are its reads (DG1-6, DG1-15)
    "MSH|^~\\&|PAS|STOLAV|HB|HP|20250110083000||ADT^A02^ADT_A02|E4|P|2.5.1\rEVN|A02|20250110083000\rPID|1||15866112379^^^NOR^FNR\r"
    "PV1|1|I|MED^301^2^STOLAV||||||||||||||||V1^^^STOLAV^VN\rDG1|1||R07.4^Brystsmerter^ICD10|||A|||||||||1\r",
    # codes padded (stripped: a CWE's code, its alternate, a flag kept by table 0078), then codes refused at
    # their position for whitespace inside: a CWE's code, a kept flag, a function's result (fn: mime, args:)
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E5|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000\r"
    "OBX|1|NM| C1 ^X^^L1\t^Alt||5|g/L||ZZ ~ H|||F\rOBX|2|ED|DOC^Doc||^ TEXT^PLAIN ^Base64^aGVp||||||F\r",
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E6|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000\r"
    "OBX|1|NM|C  1^X||5|g/L|||||F\r",
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E7|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000\r"
    "OBX|1|NM|C1^X||5|g/L||Z\tZ|||F\r",
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E8|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^L|||20250115080000\r"
    "OBX|1|ED|DOC^Doc||^TEXT^X  Y^Base64^aGVp||||||F\r",
    # coding-system names the table lists in another case (`sct`), lacks (`WinPath`: coding_system of it as sent), one of blanks
    "MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|E9|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\rOBR|1|O1|L1|B^Blod^sct|||20250115080000\r"
    "OBX|1|NM|C1^X^WinPath^A1^Alt^hl70078||5|g/L|||||F\rOBX|2|NM|C2^Y^ ^A2^Alt^99 lab||5|g/L|||||F\r",
]


def _messages(shared: Path | None) -> list[bytes]:
    out = [m.encode() for m in EDGE_CASES]
    for folder in (ROOT / "mappings" / "hl7v2" / "messages", ROOT / "examples"):
        out += [p.read_bytes() for p in sorted(folder.rglob("*.hl7"))]
    if shared is not None:
        out += [p.read_bytes() for p in sorted((shared / "corpus" / "hl7v2").rglob("*")) if p.is_file() and p.suffix.lower() in (".hl7", ".txt", ".er7")]
    return out


def _converter(enabled: bool, monkeypatch) -> Converter:
    monkeypatch.setattr(_codegen, "ENABLED", enabled)
    settings = load_settings(environ={})
    return Converter(settings, mappings=MappingSet.load(settings.mappings_dir / "hl7v2", compile_path))


def _outcome(converter: Converter, data: bytes) -> list[tuple]:
    return [(r.bundle and orjson.dumps(r.bundle, option=orjson.OPT_SORT_KEYS), r.error and (type(r.error).__name__, r.error.reason, r.error.location), tuple(r.unmapped)) for r in converter.convert(data)]


@pytest.fixture
def both(monkeypatch):
    fast = _converter(True, monkeypatch)
    plain = _converter(False, monkeypatch)
    return fast, plain


def test_generated_functions_exist(both):
    """The ADT_A01 mapping's blocks are generated (else this comparison would compare the closures with themselves)."""
    fast, plain = both
    mm = fast.mappings.for_sender("PAS", "STOLAV").find("ADT", "A01", "ADT_A01")
    uses = [u for use in mm.resources for u in (use, *use.children) if u.template is not None]  # a group (procedures) has none
    assert len(uses) == len(mm.resources) + 3  # the PROCEDURE group's three practitioners and its procedure
    assert all(use.template.block.fast is not None for use in uses)
    whens = [u.when for use in mm.resources for u in (use, *use.children) if u.when is not None]
    assert len(whens) == 5 and {w.__name__ for w in whens} == {"when"}  # each entry's `when:` written out too, the group's included
    plain_uses = plain.mappings.for_sender("PAS", "STOLAV").find("ADT", "A01", "ADT_A01").resources
    assert all(u.template.block.fast is None for use in plain_uses for u in (use, *use.children) if u.template is not None)


def test_a_report_writes_out_its_loop_over_result_groups(both):
    """A report's `each: OBSERVATION` (its presentedForm) is a loop in generated code, not the closure behind it."""
    fast, plain = both
    assert ".groups(scope)" in fast.mappings.compiler.templates["OBR.DiagnosticReport"].block.fast.source
    assert plain.mappings.compiler.templates["OBR.DiagnosticReport"].block.fast is None


def test_a_stays_diagnoses_hold_their_reads_in_generated_code(both):
    """The stay's `each: DG1` (entries kept only with their Condition) is a loop in generated code that holds each entry's reads."""
    fast, _ = both
    source = fast.mappings.compiler.templates["PV1.Encounter"].block.fast.source
    assert "._segments(scope)" in source and "ctx.held_reads.append(" in source


def test_same_output_with_and_without_generated_code(both, request):
    """Every message gives the same Bundle, error and unmapped list both ways."""
    fast, plain = both
    shared = ROOT.parent / "shared"
    messages = _messages(shared if (shared / "corpus" / "hl7v2").is_dir() else None)
    differing = [i for i, data in enumerate(messages) if _outcome(fast, data) != _outcome(plain, data)]
    assert not differing, f"{len(differing)} of {len(messages)} messages differ, first: message {differing[0]}"
    assert len(messages) > len(EDGE_CASES)


def test_conditions_differing_inside_quotes_are_not_shared():
    """Two conditions that differ only in spaces inside a quoted value get their own answers in generated code."""
    from adapters.hl7v2._tokenizer import tokenize
    from adapters.hl7v2.paths import Scope
    from router.mapping import _steps
    from router.mapping.conditions import compile_condition
    from router.mapping.runtime import RunContext, Target

    message = tokenize("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||123||Doe  Jr^John\r")

    def rule(name, condition):
        put = Target((name,), (False,)).setter(refs=False)
        return _steps.finish(_steps.constant(True, put), None, put, compile_condition(condition, compile_path))

    steps = (rule("two", "PID-5.1 = 'Doe  Jr'"), rule("one", "PID-5.1 = 'Doe Jr'"))
    by_closures: dict = {}
    for step in steps:
        step(Scope(message), RunContext(None), by_closures)
    generated = _codegen.generate(steps)
    assert generated is not None
    assert generated(Scope(message), RunContext(None), {}) == by_closures == {"two": True}


def _kith_converter(enabled: bool, monkeypatch, first: bytes) -> Converter:
    """A converter whose KITH mappings are loaded now, with code generation on or off."""
    monkeypatch.setattr(_codegen, "ENABLED", enabled)
    converter = Converter(load_settings(environ={}))
    converter.convert(first)  # the XML mappings load on the first XML message
    return converter


def test_kith_messages_same_output_with_and_without_generated_code(monkeypatch):
    """Every national example gives the same Bundle, error and unmapped list both ways (XML blocks read through their paths' readers)."""
    examples = ROOT.parent / "shared" / "norsk" / "eksempel"
    if not examples.is_dir():
        pytest.skip("../shared/norsk/eksempel is not here: the national example messages are third-party files")
    messages = [p.read_bytes() for p in sorted(examples.rglob("*")) if p.is_file() and p.suffix.lower() == ".xml"]
    fast = _kith_converter(True, monkeypatch, messages[0])
    plain = _kith_converter(False, monkeypatch, messages[0])
    assert any(use.template.block.fast is not None for mm in fast._kith.mappings.messages.values() for use in mm.resources)
    assert all(use.template.block.fast is None for mm in plain._kith.mappings.messages.values() for use in mm.resources)
    differing = [i for i, data in enumerate(messages) if _outcome(fast, data) != _outcome(plain, data)]
    assert not differing, f"{len(differing)} of {len(messages)} messages differ, first: message {differing[0]}"
