"""The static checks: ruff and mypy pass over the project, as pyproject.toml configures them.

Why a test: the README's test command is what CI runs, so a lint finding or a type error fails
there like any other test. Both tools come with the `test` extra, pinned (pyproject.toml).
Each run prints the tool's own report on failure.
"""

from __future__ import annotations

import ast
import runpy
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


def _own_nodes(node: ast.AST):
    """The nodes under *node* that run in its frame (not in a nested function, lambda or class)."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            yield child
            yield from _own_nodes(child)


def _jumps_out_of(block: ast.With):
    """The return, break and continue statements that leave *block* (a break inside a loop of its own stays in)."""
    def walk(node: ast.AST, in_loop: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue
            if isinstance(child, ast.Return) or (isinstance(child, ast.Break | ast.Continue) and not in_loop):
                yield child
            yield from walk(child, in_loop or isinstance(child, ast.For | ast.While))
    yield from walk(block, False)


class TestCompiledShapes:
    def test_no_compiled_loop_jumps_out_of_a_with_inside_a_try(self):
        """No hot-path module leaves a `with` inside a `try` inside a `for` loop by return, break or continue.

        Why: compiled by Cython 3, that shape freed the loop's iterator on the jump's path, and the
        loop's next turn (after the `try` caught an exception from the `with`) read it: a worker
        died of SIGSEGV in PostgreSQL's conflict retry, which the pure-Python tests never see.
        """
        hot = runpy.run_path(str(ROOT / "adapters" / "_compiled.py"))["HOT_PATH"]
        found = []
        for path in hot:
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            for loop in (n for n in ast.walk(tree) if isinstance(n, ast.For)):
                for guarded in (n for n in _own_nodes(loop) if isinstance(n, ast.Try) and n.handlers):
                    for block in (n for n in _own_nodes(guarded) if isinstance(n, ast.With)):
                        found += [f"{path}:{jump.lineno}" for jump in _jumps_out_of(block)]
        assert found == [], f"a jump out of a `with` in a `try` in a `for` loop, which Cython 3 miscompiles: {found}"
