"""HELSEBRO_DATA_DIR that cannot hold Helsebro's data: every verb that needs it says so and exits 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("verb", [["send", "MESSAGE"], ["status"], ["dlq", "list"], ["demo"]], ids=["send", "status", "dlq", "demo"])
def test_a_data_dir_that_is_a_file_is_a_config_error(tmp_path, verb):
    """The embedded broker's folders cannot be made under a file: the verb names the setting and exits 2."""
    taken = tmp_path / "not-a-folder"
    taken.write_text("a file where the data directory should be")
    message = tmp_path / "m.hl7"
    message.write_bytes(b"MSH|^~\\&|X\r")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update({k: v for k, v in os.environ.items() if k == "HELSEBRO_PURE_PYTHON"}, HELSEBRO_DATA_DIR=str(taken))
    args = [str(message) if a == "MESSAGE" else a for a in verb]
    proc = subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    assert "HELSEBRO_DATA_DIR" in proc.stderr and str(taken) in proc.stderr


def _run_with_record(tmp_path, record: str) -> subprocess.CompletedProcess[str]:
    """`helsebro run` with its SQLite record at *record*, a fresh data directory beside it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update({k: v for k, v in os.environ.items() if k == "HELSEBRO_PURE_PYTHON"},
               HELSEBRO_DATA_DIR=str(tmp_path / "data"), HELSEBRO_RECORD_URL=f"sqlite:///{record}")
    return subprocess.run([sys.executable, "-m", "router.cli", "run", "--until-idle", "30"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_run_with_a_record_under_a_file_stops_with_a_config_error(tmp_path):
    """`run` whose SQLite record cannot have its folder stops at once, exit 2, naming it, rather than retrying as if the database were down."""
    taken = tmp_path / "not-a-folder"
    taken.write_text("a file where the record's folder should be")
    proc = _run_with_record(tmp_path, f"{taken}/record.sqlite3")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    assert "HELSEBRO_RECORD_URL" in proc.stderr and str(taken) in proc.stderr
    assert "broker_or_record_unavailable" not in proc.stdout + proc.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no folder can be made")
def test_run_with_a_record_folder_that_cannot_be_made_stops_with_a_config_error(tmp_path):
    """Review H173: a folder mkdir cannot make for another reason than a file in the way (here under /proc:
    ENOENT; a read-only file system: EROFS) ended `run` with a FileNotFoundError traceback, exit 1."""
    proc = _run_with_record(tmp_path, "/proc/helsebro-h173-nonexistent/record.sqlite3")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    assert "HELSEBRO_RECORD_URL" in proc.stderr and "/proc/helsebro-h173-nonexistent" in proc.stderr


def test_run_on_another_applications_database_refuses_and_leaves_it(tmp_path):
    """`run` with HELSEBRO_RECORD_URL naming another application's SQLite file made Helsebro's tables in it. Now it
    stops at once, exit 2, saying the file is not a Helsebro record; the file is left byte for byte, nothing beside it."""
    import sqlite3

    other = tmp_path / "other" / "app.sqlite3"
    other.parent.mkdir()
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update({k: v for k, v in os.environ.items() if k == "HELSEBRO_PURE_PYTHON"},
               HELSEBRO_DATA_DIR=str(tmp_path / "data"), HELSEBRO_RECORD_URL=f"sqlite:///{other}")
    proc = subprocess.run([sys.executable, "-m", "router.cli", "run", "--until-idle", "30"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    assert "not a Helsebro record" in proc.stderr and str(other) in proc.stderr
    assert "broker_or_record_unavailable" not in proc.stdout + proc.stderr
    assert other.read_bytes() == before
    assert sorted(p.name for p in other.parent.iterdir()) == ["app.sqlite3"]
