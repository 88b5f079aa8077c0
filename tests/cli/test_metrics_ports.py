"""`run --workers N --metrics-port P` where P + i is no port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.testing import isolated_settings, settings_env

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
HELSEBRO = [str(Path(sys.executable).parent / "helsebro")]


def _env(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    return env


@pytest.mark.integration
@pytest.mark.parametrize("args", [["--worker-index", "1"], []])
def test_a_worker_port_past_65535_is_a_usage_error_not_a_traceback(tmp_path, args):
    """Worker 1 of 2 with --metrics-port 65535 would serve on 65536: socket.bind raises OverflowError, which is no OSError,
    so the worker died with a traceback (the supervisor then ran on with one worker short). Said up front, exit 2."""
    settings = isolated_settings(tmp_path, broker_url=RABBIT)
    result = subprocess.run([*HELSEBRO, "run", "--workers", "2", *args, "--metrics-port", "65535", "--until-idle", "0.5"],
                            env=_env(settings), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.returncode == 2 and "--metrics-port" in result.stderr


@pytest.mark.integration
def test_a_workers_port_in_use_stops_them_all_before_any_consumes(tmp_path):
    """`run --workers 2 --metrics-port P` with P + 1 held by another process: worker 1 alone failed to bind, worker 0
    consumed on (the supervisor with it, one worker short, while the error scrolled by). The supervisor now tries every
    port first: exit 1 with one line naming P + 1, and nothing is taken off the queue."""
    import socket

    from router.testing import adt_message, delete_queues, publish, queue_depth

    settings = isolated_settings(tmp_path, broker_url=RABBIT)
    try:
        publish(settings, [adt_message("A01", control_id="Z1", fnr="15866112379", local_id="L1", visit="V1")])
        with socket.socket() as free, socket.socket() as taken:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
            free.close()
            try:
                taken.bind(("127.0.0.1", port + 1))
            except OSError:
                pytest.skip("the port after a free one is in use here")
            taken.listen()
            result = subprocess.run([*HELSEBRO, "run", "--workers", "2", "--metrics-port", str(port), "--until-idle", "0.5"],
                                    env=_env(settings), capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr[-1500:]
        assert result.returncode == 1 and f"helsebro run: cannot serve metrics on 127.0.0.1:{port + 1}:" in result.stderr
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 1
    finally:
        delete_queues(settings)
