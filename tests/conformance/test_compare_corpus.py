"""bench/compare_corpus.py runs on a small subset and prints its agreement table (the numbers are not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("compare_corpus", ROOT / "bench" / "compare_corpus.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class TestCompareCorpus:
    @pytest.mark.corpus
    def test_prints_the_table_for_a_subset(self, shared_dir, capsys):
        """Five messages with expected outputs give a header, a row per type and a total row."""
        code = _module().main(["--shared", str(shared_dir), "--limit", "5", "--type", "ADT"])
        out = capsys.readouterr().out.splitlines()
        assert code == 0
        assert out[0].split()[:4] == ["type", "msgs", "ok", "pid"]
        assert "group" in out[0].split()
        assert out[-1].startswith("all")
        rows = [line for line in out[2:-2] if line.strip()]
        assert rows and all(row.startswith("ADT_") for row in rows)
        assert sum(int(row.split()[1]) for row in rows) == 5

    @pytest.mark.corpus
    def test_facts_read_both_bundle_shapes(self):
        """Microsoft's Type/id references and Google's urn:uuid fullUrls both resolve report results."""
        m = _module()
        obs = {"resourceType": "Observation", "id": "o1", "code": {"coding": [{"code": "718-7"}]}, "status": "final", "valueQuantity": {"value": 12.5, "unit": "g/dL"}}
        for ref in ("Observation/o1", "urn:uuid:o1"):
            report = {"resourceType": "DiagnosticReport", "code": {"coding": [{"code": "CBC"}]}, "result": [{"reference": ref}]}
            facts = m.facts({"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:o1", "resource": obs}, {"resource": report}]})
            assert facts["group"] == {"CBC": frozenset({"718-7"})}
            assert facts["obs"]["718-7"] == ("12.5", "g/dL", "final")
