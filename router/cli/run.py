"""`helsebro run`: consume the inbound queue and settle every message until stopped.

SIGTERM or SIGINT stops the loop after the delivery in flight is settled and
acked; the exit code is then 0. The loop itself is router/engine.py's.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from router.engine import Engine
from router.logging import configure_logging, get_logger
from router.settings import load_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `run` verb."""
    parser = subparsers.add_parser("run", help="Run the engine: consume, convert, apply, reply.", description=__doc__)
    parser.add_argument("--until-idle", type=_seconds, metavar="SECONDS", default=None, help="Exit 0 once the inbound queue has been empty for this many seconds (for scripts and tests).")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="Least severe log level to write (JSON lines on stderr).")
    parser.set_defaults(func=_run)


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _run(args: argparse.Namespace) -> int:
    configure_logging(level=args.log_level)
    settings = load_settings()
    engine = Engine(settings, logger=get_logger("engine"))

    def on_signal(signum: int, _frame: Any) -> None:
        engine.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine.run(until_idle=args.until_idle)
    return 0
