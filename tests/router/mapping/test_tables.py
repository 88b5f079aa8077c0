"""Tests for router/mapping/tables.py: a table's `unmapped: {fn: …}` gives a code it lacks to a library function.

tables/coding-systems.yaml falls back to coding_system: one rule (`fn: upper`, `table:`)
gives a listed coding-system name the table's URI and any other name, as sent, coding_system's.
Synthetic people only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.paths import compile_path
from router.errors import MappingError
from router.mapping import MappingSet
from router.mapping.library import LIBRARY, Function
from router.pipeline.convert import Converter
from router.settings import load_settings
from router.testing import edit_text

LOCAL = "urn:helsebro:local:STOLAV:codesystem:"

# OBX-3 with a coding system named in lower case (`sct`: SNOMED CT), by a mixed-case local name the
# table lacks (`WinPath`, OBX-3's alternate coding: CWE.6), by an HL7 table it lists (`HL70078`); no name at all
ORU = (
    b"MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101000||ORU^R01^ORU_R01|T1|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\r"
    b"OBR|1|O1|L1|B^Blod^L|||20250115080000\r"
    b"OBX|1|NM|C1^X^sct^A1^Alt^WinPath||5|g/L|||||F\rOBX|2|NM|C2^Y^HL70078||5|g/L|||||F\rOBX|3|NM|C3^Z||5|g/L|||||F\r"
)





def _codings(mappings: Path | None, *, trace: bool) -> list[list[dict]]:
    """Each Observation's code.coding, converted by the generated code (trace False) or the interpreted rules (--explain)."""
    environ = {"HELSEBRO_MAPPINGS_DIR": str(mappings)} if mappings is not None else {}
    [item] = Converter(load_settings(environ=environ)).convert(ORU, trace=trace)
    assert item.ok, item.error
    return [e["resource"]["code"]["coding"] for e in item.bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


class TestFunctionFallback:
    @pytest.mark.parametrize("trace", [False, True], ids=["generated", "explain"])
    def test_a_listed_name_gets_the_table_uri_any_other_the_function_of_it_as_sent(self, trace):
        """`sct` is SNOMED CT (looked up upper-cased), `HL70078` the table's; `WinPath`, not listed, coding_system's of the name as sent."""
        assert _codings(None, trace=trace) == [
            [{"code": "C1", "display": "X", "system": "http://snomed.info/sct"}, {"code": "A1", "display": "Alt", "system": LOCAL + "WinPath"}],
            [{"code": "C2", "display": "Y", "system": "http://terminology.hl7.org/CodeSystem/v2-0078"}],
            [{"code": "C3", "display": "Z"}],
        ]

    @pytest.mark.parametrize("trace", [False, True], ids=["generated", "explain"])
    def test_a_rule_without_fn_gives_the_function_the_value_it_looked_up(self, mapping_copy, trace):
        """Without `fn: upper`, `sct` is not listed: coding_system makes it the sender's own system, `SCT` still SNOMED CT."""
        edit_text(mapping_copy / "hl7v2" / "datatypes" / "CWE.CodeableConcept.yaml", "        from: CWE.3\n        fn: upper\n", "        from: CWE.3\n")
        first, *_ = _codings(mapping_copy, trace=trace)
        assert [c["system"] for c in first] == [LOCAL + "sct", LOCAL + "WinPath"]

    def test_the_function_runs_only_on_a_miss(self, monkeypatch):
        """The generated code calls coding_system only for a name the table lacks: OBR-4's `L` and `WinPath`, never `sct` or `HL70078`."""
        calls: list = []
        real = LIBRARY["coding_system"]
        counted = Function(real.name, real.arity, lambda ctx, v: calls.append(list(v.values)) or real.call(ctx, v), real.doc)
        monkeypatch.setitem(LIBRARY, "coding_system", counted)  # looked up when the table loads
        _codings(None, trace=False)
        assert calls == [["L"], ["WinPath"]]

    @pytest.mark.parametrize(
        ("table", "old", "new", "says"),
        [
            ("coding-systems", "unmapped: {fn: coding_system}", "unmapped: {fn: coding_sytem}", "needs a library function of one value, and 'coding_sytem' is not one"),
            ("coding-systems", "unmapped: {fn: coding_system}", "unmapped: {fn: join}", "needs a library function of one value, and 'join' takes any number"),
            ("hl7-0004", "unmapped: keep", "unmapped: {fn: coding_system}", "a table of Codings falls back to keep, omit, error or {value: ...}"),
        ],
        ids=["unknown-function", "not-one-value", "codings"],
    )
    def test_a_fallback_that_cannot_work_is_refused_at_unmapped(self, mapping_copy, table, old, new, says):
        """An unknown function, one not of one value, or a fallback for a table of Codings: refused at the table's unmapped: line."""
        line = edit_text(mapping_copy / "hl7v2" / "tables" / f"{table}.yaml", old, new)
        with pytest.raises(MappingError) as err:
            MappingSet.load(mapping_copy / "hl7v2", compile_path)
        assert says in err.value.reason
        assert err.value.file.endswith(f"tables/{table}.yaml") and err.value.line == line

    @pytest.mark.parametrize("trace", [False, True], ids=["generated", "explain"])
    def test_the_function_result_is_fitted_like_a_value_read(self, mapping_copy, trace):
        """A fallback's result for a `code` (gender) is fitted as a value read from the message: `X  Y` is refused at PID-8."""
        edit_text(mapping_copy / "hl7v2" / "tables" / "hl7-0001.yaml", "unmapped: {value: unknown}", "unmapped: {fn: trim}")
        adt = (b"MSH|^~\\&|PAS|STOLAV|HB|HP|20250110083000||ADT^A01^ADT_A01|T2|P|2.5.1\rEVN|A01|20250110083000\r"
               b"PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|X  Y\r")
        [item] = Converter(load_settings(environ={"HELSEBRO_MAPPINGS_DIR": str(mapping_copy)})).convert(adt, trace=trace)
        assert not item.ok and item.error.location == "PID-8[1].1" and "not a valid FHIR code" in item.error.reason
