"""The compiled hot path (adapters/_compiled.py): built from the listed sources, never run stale."""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path

import pytest

import router.mapping
import router.pipeline.convert  # loads the hot path
from adapters import _compiled

ROOT = Path(__file__).resolve().parents[2]


def test_every_listed_source_exists_and_is_a_module_the_finder_knows() -> None:
    for path in _compiled.HOT_PATH:
        assert (ROOT / path).is_file(), path
        assert path[:-3].replace("/", ".") in _compiled._MODULES


def test_stale_compares_the_source_with_its_build(tmp_path: Path) -> None:
    source, built = tmp_path / "m.py", tmp_path / "m.so"
    source.write_text("x = 1\n")
    built.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(built, (2_000, 2_000))
    assert not _compiled.stale(str(source), str(built))
    os.utime(source, (3_000, 3_000))  # edited after the build
    assert _compiled.stale(str(source), str(built))
    assert not _compiled.stale(str(tmp_path / "gone.py"), str(built))


def _built_engine() -> str:
    spec = importlib.machinery.PathFinder.find_spec("router.mapping.engine", router.mapping.__path__)
    if spec is None or not spec.origin or spec.origin.endswith(".py"):
        pytest.skip("the hot path is not compiled in this install (HELSEBRO_PURE_PYTHON=1, or no C compiler)")
    return spec.origin


def test_a_current_build_is_left_to_the_usual_import() -> None:
    _built_engine()
    finder = _compiled._FreshSource()
    if _compiled.stale(str(ROOT / "router/mapping/engine.py"), _built_engine()):
        pytest.skip("router/mapping/engine.py was edited since the build: the source runs (what the next test checks)")
    assert finder.find_spec("router.mapping.engine", router.mapping.__path__) is None
    assert "router.mapping.engine" in _compiled.compiled_modules()


def test_an_edited_source_is_imported_instead_of_its_older_build(monkeypatch: pytest.MonkeyPatch) -> None:
    _built_engine()
    monkeypatch.setattr(_compiled, "stale", lambda source, built: True)
    spec = _compiled._FreshSource().find_spec("router.mapping.engine", router.mapping.__path__)
    assert spec is not None and spec.origin == str(ROOT / "router" / "mapping" / "engine.py")


def test_the_finder_is_installed_once_and_ignores_other_modules() -> None:
    _compiled.install()
    _compiled.install()
    assert sum(isinstance(f, _compiled._FreshSource) for f in sys.meta_path) == 1
    assert _compiled._FreshSource().find_spec("router.cli", None) is None


def test_pure_python_at_run_time_imports_every_source_though_built() -> None:
    """HELSEBRO_PURE_PYTHON=1 in a process's environment runs the hot path from source, builds or not."""
    import subprocess

    code = "import router.pipeline.convert, adapters._compiled as c; print(len(c.compiled_modules()))"
    env = {**os.environ, "HELSEBRO_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    env.pop("HELSEBRO_PURE_PYTHON")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    _built_engine()  # skips here when this install has no build: nothing to tell apart
    assert int(out.stdout) > 0
