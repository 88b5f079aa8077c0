"""Shared fixtures: where ../shared is, and settings built the way production builds them."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# The suite runs in parallel (pytest-xdist, `-n auto` in pyproject.toml), and so may a second run on
# the same machine: the tests that use the real broker share it, except the fault suite, which
# restarts it and so holds it alone. File locks, so every process on the machine agrees.
_LOCKS = Path(tempfile.gettempdir())
_MOST_WORKERS = 4  # the broker and the database are shared: more workers wait on them rather than go faster
# Run first what takes longest and holds the broker alone, then what never touches the broker, so
# the other workers have work while the fault suite runs; each folder keeps its own order.
_FOLDER_ORDER = ("faults", "conformance", "mappings", "schemas", "test_static.py", "adapters", "router", "cli", "integration")


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per CPU, at most _MOST_WORKERS."""
    return max(1, min(os.cpu_count() or 1, _MOST_WORKERS))


_FIGURES: list[tuple[str, str]] = []  # (test id, JSON) that tests recorded as the property `figures`


def pytest_runtest_logreport(report) -> None:
    """Collect the figures a test recorded (record_property("figures", …)): on the controller, also from xdist workers."""
    if report.when == "call":
        _FIGURES.extend((report.nodeid, value) for name, value in report.user_properties if name == "figures")


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the recorded figures (the fault suite's: sent, applied, dead-lettered, duplicates, faults, lost)."""
    for nodeid, figures in _FIGURES:
        terminalreporter.write_line(f"figures of {nodeid}: {figures}")


def pytest_collection_modifyitems(config, items) -> None:
    def folder(item) -> int:
        parts = Path(str(item.path)).relative_to(ROOT / "tests").parts
        return _FOLDER_ORDER.index(parts[0]) if parts and parts[0] in _FOLDER_ORDER else len(_FOLDER_ORDER)

    items.sort(key=folder)  # stable: the order within a folder stays


@contextmanager
def _broker_turn(alone: bool) -> Iterator[None]:
    """Hold the broker shared, or alone; a test waiting to hold it alone stops new sharers from coming in first."""
    gate = os.open(_LOCKS / "helsebro-tests-broker.gate", os.O_RDWR | os.O_CREAT, 0o666)
    lock = os.open(_LOCKS / "helsebro-tests-broker.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        os.close(lock)  # closing releases the lock
        os.close(gate)


@pytest.fixture(autouse=True)
def _broker(request) -> Iterator[None]:
    """Tests marked `integration` share RabbitMQ; one marked `restarts_broker` holds it alone."""
    alone = request.node.get_closest_marker("restarts_broker") is not None
    if not alone and request.node.get_closest_marker("integration") is None:
        yield
        return
    with _broker_turn(alone):
        yield


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults.

    A test that runs a verb in process (`main(["status"])`) configures structlog to write to the
    stream capsys lent it; that stream is closed when the test ends, and the next test's first log
    line from a module's own logger (the embedded broker's, the record's) raised ValueError there.
    """
    yield
    structlog.reset_defaults()


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


_TAGGED_APPRECS = re.compile(r"^helsebro\.reply\.apprec\.[0-9a-f]{10}\.")


def pytest_sessionfinish(session) -> None:
    """Delete the AppRec queues the tests left on RabbitMQ (on the controller, once).

    isolated_settings tags the AppRec prefix per test, but a queue per receiver
    HER-id is declared only when an AppRec goes there, so no test knows all of
    its own to delete: they are found here by their tagged names. Best effort:
    without rabbitmqctl (a broker elsewhere) nothing is deleted.
    """
    if hasattr(session.config, "workerinput") or shutil.which("rabbitmqctl") is None:
        return
    try:
        # Alone: a test of another run on this machine may still be sending AppRecs to its own.
        with _broker_turn(alone=True):
            _delete_tagged_apprecs()
    except Exception as exc:  # noqa: BLE001 - best effort: a hook that raises turns a green run's exit code to 1
        print(f"tests/conftest.py: leftover AppRec queues not deleted: {exc!r}", file=sys.stderr)


def _delete_tagged_apprecs() -> None:
    """Delete the queues named like a test's tagged AppRec queue (the broker may be down, or slow: callers catch)."""
    from kombu import Connection

    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60, check=False)
    leftovers = [name for name in listed.stdout.split() if _TAGGED_APPRECS.match(name)]
    if not leftovers:
        return
    with Connection(RABBIT, connect_timeout=10) as conn:
        channel = conn.channel()
        for name in leftovers:
            channel.queue_delete(name)
