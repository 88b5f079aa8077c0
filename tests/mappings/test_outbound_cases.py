"""The outbound HL7 v2 fixture cases (mappings/outbound/hl7v2/*.cases/), run directly and through `helsebro mappings`."""

from __future__ import annotations

import shutil

import pytest

from adapters.hl7v2.outbound_cases import find_outbound_cases, run_outbound_case
from router.cli import main
from router.pipeline.convert import Converter
from router.settings import PROJECT_ROOT, load_settings

ROOT = PROJECT_ROOT / "mappings" / "outbound" / "hl7v2"
CASES = find_outbound_cases(ROOT)


@pytest.fixture(scope="module")
def convert():
    converter = Converter(load_settings(environ={}))
    return lambda data: converter.convert(data)[0]


class TestOutboundCases:
    def test_cases_exist(self):
        """The shipped outbound mapping has fixture cases, among them a v2.3 Latin-1 one."""
        assert len(CASES) >= 4
        assert any("v23" in c.name for c in CASES)

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_case_renders_its_expected_bytes(self, case, convert):
        """Each case's input renders exactly to its expected.hl7."""
        res = run_outbound_case(case, convert)
        assert res.passed, res.detail

    def test_a_changed_expectation_fails_with_a_diff(self, tmp_path, convert):
        """A case whose expected bytes differ fails, showing the differing line."""
        dst = tmp_path / "outbound" / "hl7v2"
        shutil.copytree(ROOT, dst)
        [case] = [c for c in find_outbound_cases(dst) if c.name == "ADT_A01/admit_fnr"]
        expected = case.folder / "expected.hl7"
        expected.write_bytes(expected.read_bytes().replace(b"|M|", b"|F|"))
        res = run_outbound_case(case, convert)
        assert not res.passed
        assert "-PID|" in res.detail and "+PID|" in res.detail


    @pytest.mark.parametrize(
        ("file", "text", "detail"),
        [
            ("case.yaml", 'version: "2.4.9"\n', "HL7 version 2.4.9 is not known"),
            ("input.json", '{"resourceType": "Bundle",', "input.json is not JSON"),
        ],
    )
    def test_a_broken_case_fails_alone(self, tmp_path, convert, file, text, detail):
        """An unknown version in case.yaml or an input.json that is not JSON fails that case with a reason; the run goes on."""
        dst = tmp_path / "outbound" / "hl7v2"
        shutil.copytree(ROOT, dst)
        [case] = [c for c in find_outbound_cases(dst) if c.name == "ADT_A01/update_patient_only_bundle"]
        (case.folder / file).write_text(text, encoding="utf-8")
        res = run_outbound_case(case, convert)
        assert not res.passed
        assert detail in res.detail

class TestOutboundCli:
    def test_mappings_test_runs_outbound_cases(self, capsys):
        """`helsebro mappings test mappings/outbound/hl7v2` runs every outbound case and exits 0."""
        assert main(["mappings", "test", str(ROOT)]) == 0
        out = capsys.readouterr().out
        assert f"{len(CASES)} passed, 0 failed" in out

    def test_lint_reports_outbound_errors(self, tmp_path, capsys):
        """`helsebro mappings lint` on an outbound folder reports an unknown field at file:line and exits 1."""
        dst = tmp_path / "outbound" / "hl7v2"
        shutil.copytree(ROOT, dst)
        path = dst / "ADT_A01.yaml"
        text = path.read_text(encoding="utf-8")
        line = text[: text.index("PID-30:")].count("\n") + 1
        path.write_text(text.replace("PID-30:", "PID-99:"), encoding="utf-8")
        assert main(["mappings", "lint", str(dst)]) == 1
        assert f"ADT_A01.yaml:{line}:7: PID has 39 fields" in capsys.readouterr().err


class TestDocsExamples:
    def test_yaml_examples_in_the_docs_load(self, tmp_path):
        """The routes.yaml and engine.yaml snippets of docs/outbound-hl7v2.md pass their models."""
        import re

        import yaml

        from router.routing.model import load_routes
        from router.settings import EngineConfig

        text = (PROJECT_ROOT / "docs" / "outbound-hl7v2.md").read_text(encoding="utf-8")
        routes = re.findall(r"```yaml\n# config/routes.yaml\n(.*?)```", text, flags=re.S)
        engine = re.findall(r"```yaml\n# config/engine.yaml\n(.*?)```", text, flags=re.S)
        assert routes and engine, "the docs lost their examples"
        for block in routes:
            (tmp_path / "routes.yaml").write_text(block, encoding="utf-8")
            assert load_routes(tmp_path / "routes.yaml").destinations["lab"].receiving_application == "LABSYS"
        for block in engine:
            assert EngineConfig.model_validate(yaml.safe_load(block)).own.application == "HELSEBRO"
