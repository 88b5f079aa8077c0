"""Fixture cases of the outbound KITH mappings: mappings/outbound/kith/<Name>.cases/.

Each case is a source message (`*.hl7`, or a KITH `*.xml`) converted by
Helsebro's own Converter, then rendered for a destination named `kommune` with
receiver_her_id 12345. Beside it sits what must come out: `<case>.expected.xml`
(the exact bytes) or `<case>.expected-error.txt` (the refusal's reason). With
../shared present the render also validates against the national XSD.
Set HELSEBRO_UPDATE_CASES=1 to rewrite the expected files from the current mapping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.kith import KithRenderer, load_outbound, schema_set
from router.errors import MessageError

ROOT = Path(__file__).resolve().parents[2]
OUTBOUND = ROOT / "mappings" / "outbound" / "kith"
SKJEMA = ROOT.parent / "shared" / "norsk" / "skjema"
CASES = sorted(p for p in OUTBOUND.glob("*.cases/*") if p.suffix in (".hl7", ".xml") and ".expected" not in p.name)


def _renderer(mapping: Path) -> KithRenderer:
    schemas = schema_set(SKJEMA) if SKJEMA.is_dir() else None
    return KithRenderer(load_outbound(mapping), destination_name="kommune", receiver_her_id="12345", schemas=schemas)


class TestOutboundCases:
    def test_there_are_cases(self):
        """Every outbound mapping has at least one case, and every case has an expected file."""
        mappings = sorted(OUTBOUND.glob("*.yaml"))
        assert mappings, "no outbound kith mappings found"
        for mapping in mappings:
            assert any(c.parent.name == f"{mapping.stem}.cases" for c in CASES), f"{mapping.name} has no cases"
        for case in CASES:
            expected = [case.with_name(f"{case.stem}.expected.xml"), case.with_name(f"{case.stem}.expected-error.txt")]
            assert sum(p.exists() for p in expected) == 1, f"{case.name}: one expected file (.expected.xml or .expected-error.txt)"

    @pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
    def test_case(self, case, converter):
        """The case renders to exactly its expected bytes, or is refused with exactly its expected reason."""
        renderer = _renderer(OUTBOUND / f"{case.parent.name.removesuffix('.cases')}.yaml")
        [conv] = converter.convert(case.read_bytes())
        assert conv.ok, f"{case.name} does not convert: {conv.error}"
        xml, error = case.with_name(f"{case.stem}.expected.xml"), case.with_name(f"{case.stem}.expected-error.txt")
        try:
            out: bytes | None = renderer.render(conv)
            reason = None
        except MessageError as exc:
            out, reason = None, exc.reason
        if os.environ.get("HELSEBRO_UPDATE_CASES") == "1":
            xml.unlink(missing_ok=True)
            error.unlink(missing_ok=True)
            if out is not None:
                xml.write_bytes(out)
            else:
                error.write_text(f"{reason}\n", encoding="utf-8")
        if xml.exists():
            assert reason is None, f"{case.name} was refused: {reason}"
            assert out == xml.read_bytes()
        else:
            assert out is None, f"{case.name} rendered, but {error.name} expects a refusal"
            assert reason == error.read_text(encoding="utf-8").strip()


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
