"""The static checks: ruff and mypy pass over the project, as pyproject.toml configures them.

Why a test: the README's test command is what CI runs, so a lint finding or a type error fails
there like any other test. Both tools come with the `test` extra, pinned (pyproject.toml).
Each run prints the tool's own report on failure.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m <tool> ...` from the project root, where pyproject.toml is."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)


def _report(done: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(done.args[2:])}` exited {done.returncode}:\n{done.stdout}{done.stderr}"


class TestStatic:
    def test_ruff_check_passes(self):
        """`ruff check` finds nothing in the project (the rules, and each waiver's reason, are in pyproject.toml)."""
        done = _run("ruff", "check", "--no-fix", ".")
        assert done.returncode == 0, _report(done)

    def test_mypy_passes(self):
        """mypy, strict, finds no error in adapters/, router/, schemas/ and bench/ (the `files` pyproject.toml sets)."""
        try:
            metadata.version("types-PyYAML")
        except metadata.PackageNotFoundError:
            pytest.fail("types-PyYAML is not installed: mypy needs the test extra (pip install -e '.[test]')")
        done = _run("mypy")
        assert done.returncode == 0, _report(done)
