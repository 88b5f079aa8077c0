"""Tests for adapters/kith/__init__.py: the public surface."""

from __future__ import annotations

import adapters.kith as kith


class TestPublicSurface:
    def test_all_exists(self):
        """Every name in __all__ exists in the package."""
        assert all(hasattr(kith, name) for name in kith.__all__)

    def test_all_sorted_and_unique(self):
        """__all__ lists each name once."""
        assert len(set(kith.__all__)) == len(kith.__all__)
