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
