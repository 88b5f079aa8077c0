"""Fixture cases of the outbound KITH mappings: mappings/outbound/kith/<Name>.cases/.

Each case is a source message (`*.hl7`, or a KITH `*.xml`) converted by
Helsebro's own Converter, then rendered by adapters.kith.run_kith_outbound_case
(the runner `helsebro mappings test` uses) for a destination named `kommune`
with receiver_her_id 12345. Beside it sits what must come out: `<case>.expected.xml`
(the exact bytes) or `<case>.expected-error.txt` (the refusal's reason). With
../shared present the render also validates against the national XSD.
Set HELSEBRO_UPDATE_CASES=1 to rewrite the expected files from the current mapping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from adapters.kith import find_kith_outbound_cases, load_outbound, run_kith_outbound_case, schema_set

ROOT = Path(__file__).resolve().parents[2]
OUTBOUND = ROOT / "mappings" / "outbound" / "kith"
SKJEMA = ROOT.parent / "shared" / "norsk" / "skjema"
CASES = find_kith_outbound_cases(OUTBOUND)


@pytest.fixture(scope="module")
def convert(converter):
    return lambda data: converter.convert(data)[0]


class TestOutboundCases:
    def test_there_are_cases(self):
        """Every outbound mapping has at least one case, and every case has exactly one expected file."""
        mappings = sorted(OUTBOUND.glob("*.yaml"))
        assert mappings, "no outbound kith mappings found"
        for mapping in mappings:
            assert any(c.mapping == mapping for c in CASES), f"{mapping.name} has no cases"
        for case in CASES:
            assert case.expected_xml.exists() != case.expected_error.exists(), f"{case.name}: one expected file (.expected.xml or .expected-error.txt)"

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_case(self, case, convert):
        """The case renders to exactly its expected bytes, or is refused with exactly its expected reason."""
        schemas = schema_set(SKJEMA) if SKJEMA.is_dir() else None
        res = run_kith_outbound_case(case, convert, schemas=schemas, update=os.environ.get("HELSEBRO_UPDATE_CASES") == "1")
        assert res.passed, res.detail


class TestCaseRunner:
    @pytest.fixture
    def copy(self, tmp_path):
        dst = tmp_path / "outbound" / "kith"
        shutil.copytree(OUTBOUND, dst)
        return {c.name: c for c in find_kith_outbound_cases(dst)}

    def test_changed_bytes_fail_with_a_diff(self, copy, convert):
        """An expected XML that differs from the output fails, showing the differing line on both sides."""
        case = copy["PLO_InnlagtPasient/admission_fnr"]
        case.expected_xml.write_bytes(case.expected_xml.read_bytes().replace(b"<Id>12345</Id>", b"<Id>54321</Id>"))
        res = run_kith_outbound_case(case, convert)
        assert not res.passed
        assert any(ln.startswith("-") and "54321" in ln for ln in res.detail.splitlines())
        assert any(ln.startswith("+") and "12345" in ln for ln in res.detail.splitlines())

    def test_changed_refusal_fails_with_a_diff(self, copy, convert):
        """An expected refusal whose reason differs fails, showing both reasons."""
        case = copy["PLO_InnlagtPasient/no_admission_time"]
        case.expected_error.write_text("some other reason\n", encoding="utf-8")
        res = run_kith_outbound_case(case, convert)
        assert not res.passed and "-some other reason" in res.detail and "+PLO_InnlagtPasient: no value for TidspunktForHendelse" in res.detail

    def test_update_rewrites_and_then_passes(self, copy, convert):
        """With update, a missing expected file is written from the output; the case then passes."""
        case = copy["PLO_InnlagtPasient/admission_fnr"]
        want = case.expected_xml.read_bytes()
        case.expected_xml.unlink()
        assert not run_kith_outbound_case(case, convert).passed
        assert run_kith_outbound_case(case, convert, update=True).passed
        assert case.expected_xml.read_bytes() == want
        assert run_kith_outbound_case(case, convert).passed


class TestDocsExamples:
    def test_yaml_examples_in_the_docs_load(self, tmp_path):
        """Every YAML example in docs/outbound-kith.md passes its own checks: the mapping and the routes.yaml snippet."""
        import re

        from router.routing.model import load_routes

        blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "outbound-kith.md").read_text(encoding="utf-8"), flags=re.S)
        mappings = [b for b in blocks if b.startswith("message:")]
        routes = [b for b in blocks if "destinations:" in b]
        assert mappings and routes, "the docs lost their examples"
        for block in mappings:
            name = re.match(r"message: (\S+)", block).group(1)
            (tmp_path / f"{name}.yaml").write_text(block, encoding="utf-8")
            load_outbound(tmp_path / f"{name}.yaml")
        for block in routes:
            (tmp_path / "routes.yaml").write_text(block, encoding="utf-8")
            assert load_routes(tmp_path / "routes.yaml").destinations["kommune"].format == "kith"

    def test_engine_yaml_example_in_the_docs_validates(self):
        """The `own` snippet of config/engine.yaml in docs/outbound-kith.md passes the settings model."""
        import re

        import yaml

        from router.settings import EngineConfig

        blocks = re.findall(r"```yaml\n# config/engine.yaml\n(.*?)```", (ROOT / "docs" / "outbound-kith.md").read_text(encoding="utf-8"), flags=re.S)
        assert blocks, "the docs lost their engine.yaml example"
        for block in blocks:
            assert EngineConfig.model_validate(yaml.safe_load(block)).own.her_id
