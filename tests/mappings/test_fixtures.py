"""Run `helsebro mappings test` over mappings/, the way authors and CI run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestMappingFixtures:
    def test_all_cases_pass_through_the_cli(self):
        """The fixture cases of every shipped mapping pass, run as a subprocess like an author would."""
        proc = subprocess.run([sys.executable, "-m", "router.cli", "mappings", "test"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "PASS ADT_A01/admit_fnr" in proc.stdout
