"""Shared fixtures: where ../shared is, and settings built the way production builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference folder beside the checkout; tests that need it skip without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared (the reference corpus) is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def converter():
    """A Converter over the project's own mappings and config."""
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    return Converter(load_settings(environ={}))


@pytest.fixture
def mapping_copy(tmp_path: Path) -> Path:
    """A copy of the project's mappings/ to break on purpose (lint and load-time refusals)."""
    import shutil

    dst = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", dst)
    return dst


RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
"""The real broker the integration tests use (CI starts it; a test fails, never skips, without it)."""


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def broker_settings(request, tmp_path):
    """Settings with unique queue names, on the embedded transport and on the real RabbitMQ; queues deleted after."""
    from router.testing import delete_queues, isolated_settings

    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None)
    yield s
    if s.broker_url:
        delete_queues(s)


@pytest.fixture
def engine(tmp_path):
    """An engine in a thread on the embedded broker and SQLite record: (settings, handle); stopped after."""
    from router.testing import isolated_settings, run_engine_in_thread

    settings = isolated_settings(tmp_path)
    handle = run_engine_in_thread(settings)
    try:
        yield settings, handle
    finally:
        handle.stop()
