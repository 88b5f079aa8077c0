"""Tests for the SQLite record's checkpoints (adapters/fhir/_checkpoint.py, _sqlite.py).

Commits leave checkpointing to a background thread; a committed batch must still
survive a killed process, a failing checkpointer must neither lose nor block
commits (it logs), and the write-ahead log must stay bounded either way.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.fhir._checkpoint import WalCheckpointer
from adapters.fhir.record import SqliteRecord
from router.testing import wait_until

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
ENC = "urn:helsebro:local:AHUS:VN"
WAIT = 30.0  # seconds a background effect may take on a loaded machine; never a timing assertion


def admission(i: int) -> dict:
    """A Patient and an Encounter, distinct for each *i*."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:p-{i}", "request": {"method": "PUT", "url": f"Patient?identifier={FNR}|{i:011d}"},
             "resource": {"resourceType": "Patient", "identifier": [{"system": FNR, "value": f"{i:011d}"}], "name": [{"family": "x" * 200}]}},
            {"fullUrl": f"urn:uuid:e-{i}", "request": {"method": "PUT", "url": f"Encounter?identifier={ENC}|V{i}"},
             "resource": {"resourceType": "Encounter", "identifier": [{"system": ENC, "value": f"V{i}"}], "status": "in-progress",
                          "subject": {"reference": f"urn:uuid:p-{i}"}}},
        ],
    }


def apply_batches(record: SqliteRecord, batches: int, *, size: int = 50, after=None) -> None:
    for b in range(batches):
        bundles = [admission(b * size + i) for i in range(size)]
        results = record.apply_batch(bundles, [f"k{b}-{i}" for i in range(size)])
        assert all(not isinstance(r, Exception) for r in results)
        if after is not None:
            after()


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


class TestBackgroundCheckpoint:
    def test_commits_reach_the_database_file(self, tmp_path):
        """A commit lands in the log; the checkpointer copies it into the database file without another commit."""
        path = tmp_path / "r.sqlite3"
        with SqliteRecord(path, checkpoint_interval=0.01) as record:
            before = path.stat().st_size
            apply_batches(record, 1)
            wait_until(lambda: path.stat().st_size > before, WAIT, what="checkpoint into the database file")
            assert record.counts() == {"Encounter": 50, "Patient": 50}

    def test_log_stays_bounded(self, tmp_path):
        """However the checkpointer keeps up, the log file never grows far past the limit."""
        path = tmp_path / "r.sqlite3"
        limit = 256 * 1024
        sizes: list[int] = []
        with SqliteRecord(path, checkpoint_interval=0.01, wal_limit=limit) as record:
            apply_batches(record, 60, after=lambda: sizes.append(wal_size(path)))
            assert record.counts() == {"Encounter": 3000, "Patient": 3000}
        # The limit plus what was committed while a checkpoint ran; a log that never
        # started over would hold all 60 batches (over 40 times the limit).
        assert max(sizes) < 10 * limit

    def test_committed_batch_survives_kill_9(self, tmp_path):
        """A batch whose apply returned is in the record after the process is killed, before any checkpoint."""
        path = tmp_path / "r.sqlite3"
        script = textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
            from pathlib import Path
            from adapters.fhir.record import SqliteRecord
            from tests.adapters.fhir.test_checkpoint import apply_batches
            record = SqliteRecord(Path({str(path)!r}), checkpoint_interval=3600)
            apply_batches(record, 3)
            print("committed", flush=True)
            time.sleep(3600)
        """)
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == b"committed"
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        with SqliteRecord(path) as record:
            assert record.counts() == {"Encounter": 150, "Patient": 150}
            assert record.applied(["k2-49", "k0-0"]) == {"k2-49", "k0-0"}


class TestFailingCheckpointer:
    @pytest.fixture
    def failing(self, monkeypatch):
        def fail(self) -> tuple[int, int, int]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(WalCheckpointer, "checkpoint", fail)

    def test_commits_go_on_and_the_failure_is_logged(self, tmp_path, failing):
        """Every batch still commits; the checkpointer says it failed; the writer bounds the log itself, and says so."""
        path = tmp_path / "r.sqlite3"
        limit = 256 * 1024
        sizes: list[int] = []
        with capture_logs() as logs:
            with SqliteRecord(path, checkpoint_interval=0.01, wal_limit=limit) as record:
                apply_batches(record, 20, after=lambda: sizes.append(wal_size(path)))
                wait_until(lambda: any(e["event"] == "record_checkpoint_failed" for e in logs), WAIT, what="failure logged")
            with SqliteRecord(path) as reopened:
                assert reopened.counts() == {"Encounter": 1000, "Patient": 1000}
        failed = next(e for e in logs if e["event"] == "record_checkpoint_failed")
        assert (failed["log_level"], failed["error"]) == ("warning", "OperationalError")
        assert any(e["event"] == "record_checkpoint_inline" for e in logs)
        assert max(sizes) < 4 * limit  # the limit, plus one batch written past it

    def test_failure_is_logged_once_per_streak(self, tmp_path, failing):
        """A checkpointer that keeps failing does not repeat its warning on every commit."""
        with capture_logs() as logs, SqliteRecord(tmp_path / "r.sqlite3", checkpoint_interval=0.0) as record:
            apply_batches(record, 5, size=5)
            wait_until(lambda: any(e["event"] == "record_checkpoint_failed" for e in logs), WAIT, what="failure logged")
            apply_batches(record, 5, size=5)
        assert [e["event"] for e in logs].count("record_checkpoint_failed") == 1


class TestCheckpointer:
    def test_notify_after_close_does_nothing(self, tmp_path):
        """A closed checkpointer starts no thread again."""
        path = tmp_path / "r.sqlite3"
        SqliteRecord(path).close()
        checkpointer = WalCheckpointer(path, writer_lock=tmp_path / "lock", restart_at=1 << 20)
        checkpointer.close()
        checkpointer.notify()
        assert checkpointer.checkpoint()[0] == 0  # still usable in line
        checkpointer.close()
