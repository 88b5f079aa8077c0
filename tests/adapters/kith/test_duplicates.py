"""Tests for adapters/kith/duplicates.py: a repeated MsgId gets no second AppRec."""

from __future__ import annotations

import pytest


class TestSeenStoreDuplicateGuard:
    """The engine's guard: (MsgId, recipient) pairs kept in the store of settled message ids."""

    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
    def store(self, request, tmp_path):
        from adapters.fhir.record import PostgresRecord, SqliteRecord

        if request.param == "sqlite":
            rec = SqliteRecord(tmp_path / "seen.sqlite3")
        else:
            import uuid

            rec = PostgresRecord(f"postgresql://postgres@127.0.0.1:5432/test?schema=kithdup_{uuid.uuid4().hex[:8]}")
        yield rec
        rec.close()

    def test_remembers_per_recipient(self, store):
        """A pair is new once; the same MsgId to another recipient is new again; contains() never records."""
        from adapters.kith.duplicates import SeenStoreDuplicateGuard

        g = SeenStoreDuplicateGuard(store)
        assert not g.contains("m1", recipient="111")
        assert not g.contains("m1", recipient="111")  # peeking does not record
        assert g.seen_before("m1", recipient="111") is False
        assert g.contains("m1", recipient="111")
        assert g.seen_before("m1", recipient="111") is True
        assert g.seen_before("m1", recipient="222") is False

    def test_two_guards_on_one_store_agree(self, store):
        """Two workers' guards over one store see each other's answers."""
        from adapters.kith.duplicates import SeenStoreDuplicateGuard

        SeenStoreDuplicateGuard(store).seen_before("m2", recipient="111")
        assert SeenStoreDuplicateGuard(store).contains("m2", recipient="111")
