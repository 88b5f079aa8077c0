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
