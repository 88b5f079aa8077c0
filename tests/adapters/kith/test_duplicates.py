"""Tests for adapters/kith/duplicates.py: a repeated MsgId gets no second AppRec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.kith.apprec import build_apprecs
from adapters.kith.dispatch import read_message
from adapters.kith.duplicates import DuplicateGuardConfig, SqliteDuplicateGuard, unanswered
from router.errors import DecodeError, RecordUnavailable

from .conftest import PLO_16

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
STATUS = "Dialogmelding/Dialogmelding-v1-1/Status_paa_henvisning-InnkaltEtterViderehenvisning.xml"


@pytest.fixture
def guard(tmp_path):
    """A guard in a fresh data directory, with a 30-day window."""
    g = SqliteDuplicateGuard.in_data_dir(tmp_path)
    yield g
    g.close()


class TestSqliteDuplicateGuard:
    def test_first_then_repeat(self, guard):
        """The first sighting is new; the second, within the window, is a duplicate."""
        assert not guard.seen_before("m1", now=T0)
        assert guard.seen_before("m1", now=T0 + timedelta(days=1))

    def test_recipients_apart(self, guard):
        """The same MsgId for another recipient is not a duplicate (HITS 1168 §5.4)."""
        assert not guard.seen_before("m1", recipient="5078", now=T0)
        assert not guard.seen_before("m1", recipient="8605", now=T0)
        assert guard.seen_before("m1", recipient="5078", now=T0)

    def test_window_expires(self, tmp_path):
        """After the window a MsgId is forgotten and counts as new again."""
        g = SqliteDuplicateGuard(tmp_path / "g.sqlite3", window_days=2)
        assert not g.seen_before("m1", now=T0)
        assert not g.seen_before("m1", now=T0 + timedelta(days=3))
        assert g.seen_before("m1", now=T0 + timedelta(days=4))
        g.close()

    def test_survives_restart(self, tmp_path):
        """What one guard recorded, a new guard on the same file knows."""
        first = SqliteDuplicateGuard.in_data_dir(tmp_path)
        first.seen_before("m1", now=T0)
        first.close()
        second = SqliteDuplicateGuard.in_data_dir(tmp_path)
        assert second.seen_before("m1", now=T0)
        second.close()

    def test_no_io_on_construction(self, tmp_path):
        """Constructing the guard creates no file; first use does."""
        SqliteDuplicateGuard.in_data_dir(tmp_path / "data")
        assert not (tmp_path / "data").exists()

    def test_unwritable(self, tmp_path):
        """A file that cannot be opened is RecordUnavailable, a transient error."""
        (tmp_path / "blocker").write_text("x")
        g = SqliteDuplicateGuard(tmp_path / "blocker" / "g.sqlite3")
        with pytest.raises(RecordUnavailable):
            g.seen_before("m1")

    def test_config(self):
        """The config model has a 30-day default and refuses unknown keys and zero days."""
        assert DuplicateGuardConfig().window_days == 30
        with pytest.raises(ValueError):
            DuplicateGuardConfig(window_days=0)
        with pytest.raises(ValueError):
            DuplicateGuardConfig(windows=3)


class TestUnanswered:
    def test_repeat_gets_no_apprec(self, guard, example):
        """A message received again gets no second AppRec."""
        envelope = read_message(example(PLO_16)).envelope
        assert len(unanswered(guard, build_apprecs(envelope, error=None), now=T0)) == 1
        assert unanswered(guard, build_apprecs(envelope, error=None), now=T0) == []

    def test_each_recipient_once(self, guard, example):
        """Every recipient of one message answers once, and only once."""
        envelope = read_message(example(STATUS)).envelope
        assert [a.role for a in unanswered(guard, build_apprecs(envelope, error=None), now=T0)] == ["PRIM", "COP"]
        assert unanswered(guard, build_apprecs(envelope, error=None), now=T0) == []

    def test_unreadable_always_answered(self, guard):
        """An AppRec with no original MsgId is always kept: nothing identifies a repeat."""
        for _ in range(2):
            assert len(unanswered(guard, build_apprecs(None, error=DecodeError("x")), now=T0)) == 1


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
