"""`helsebro run`: consume the inbound queue and settle every message until stopped.

SIGTERM, SIGINT or SIGHUP stops the loop after the batch in flight is settled
and acked; the exit code is then 0. `--workers N` starts N worker processes
(`--worker-index i --workers N` each), passes the signal on, and starts a
worker that dies unasked again after a backoff (engine.yaml's
`workers.restart_first_seconds`, 1 s unless set, doubling to 30 s; giving up, with the others
stopped and the dead one's exit code, after 5 deaths in a row each within 30 s
of its start; exit 2, a config error, is given up at once); each worker
takes the partitions k with k % N == i first and the others as a standby, so
one RabbitMQ and one PostgreSQL serve them all with per-patient order kept.
Several `helsebro run` processes on several hosts work the same way: give each
its `--worker-index` and the same `--workers`. The loop itself is router/engine.py's.
A worker whose supervisor is gone (`kill -9` of the supervisor) stops as on SIGTERM, so
it never consumes on beside the workers of the next `run`. A worker still running
`--stop-grace` seconds (default 30) after a stop is killed (SIGKILL: its unacked messages
go back to their queue, nothing is lost) and the run exits 1.

`--metrics-port P` serves the worker's counters at http://HOST:P/metrics in
Prometheus' text format (router/ops/metrics.py: messages settled by outcome,
deliveries, batches, reconnects, the time batches take to settle, and each
queued destination's results; worker 0 also the KITH messages whose AppRec
is overdue after `--apprec-overdue`, default 96h, as `status` counts them), on
`--metrics-host` (127.0.0.1 unless given: open it to a scraper on purpose).
With `--workers N`, worker i serves on P + i.
A port that cannot be bound stops the worker before it consumes (exit 1; with
`--workers N` every worker's port is tried before any starts, so none consumes);
a P + N - 1 past 65535 is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from router.cli._args import age, whole_number
from router.engine import Engine
from router.logging import configure_logging, get_logger
from router.ops.apprecs import APPREC_OVERDUE_S
from router.settings import load_settings

__all__ = ["register"]

_RESTART_MAX_SECONDS = 30.0  # the longest restart backoff; the first is engine.yaml's workers.restart_first_seconds
_FAST_CRASH_SECONDS = 30.0  # a worker that dies sooner after its start counts as a fast crash
_FAST_CRASHES = 5  # fast crashes in a row of one worker after which the supervisor gives up
_SUPERVISE_POLL_SECONDS = 0.2
_STOP_GRACE_SECONDS = 30.0  # how long a stopped worker may take to finish its batch before it is killed
_PARENT_POLL_SECONDS = 1.0  # how often a supervised worker checks that its supervisor is still there
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Each stops the run after the batch in flight. SIGHUP too: by default it killed a worker mid-batch, and the
supervisor outright, leaving its workers running on orphaned (a closed terminal or ssh session, a `kill -HUP`)."""


def register(subparsers: Any) -> None:
    """Add the `run` verb."""
    parser = subparsers.add_parser("run", help="Run the engine: consume, convert, apply, forward, reply.", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--until-idle", type=_seconds, metavar="SECONDS", default=None, help="Exit 0 once the inbound queues have been empty for this many seconds (for scripts and tests).")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="Least severe log level to write (JSON lines on stderr).")
    parser.add_argument("--workers", type=whole_number(1, 64), default=1, metavar="N", help="Worker processes to run (default 1). Set broker.partitions to at least N on RabbitMQ, or the extra workers stand by.")
    parser.add_argument("--worker-index", type=int, default=None, metavar="I", help="Run as worker I of --workers (0-based): take partitions k with k %% N == I first.")
    parser.add_argument("--metrics-port", type=whole_number(0, 65535), default=None, metavar="P",
                        help="Serve Prometheus metrics at http://HOST:P/metrics (worker i of --workers N on P + i).")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="Address the metrics listen on (default 127.0.0.1).")
    parser.add_argument("--apprec-overdue", type=age, default=APPREC_OVERDUE_S, metavar="AGE",
                        help="The metrics count a KITH message as overdue when its AppRec has not come AGE after it was sent, "
                             "as `status --apprec-overdue` does: 90s, 15m, 2h, 7d (default 96h).")
    parser.add_argument("--stop-grace", type=_seconds, default=_STOP_GRACE_SECONDS, metavar="SECONDS",
                        help="With --workers N: after a stop, kill a worker still running this many seconds later "
                             "(its unacked messages go back to the queue) and exit 1 (default 30).")
    # Internal: the supervisor's pid, which the workers it starts watch (_stop_when_orphaned); not for people to type
    parser.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:  # NaN too: no idle time is below it, so it stopped at the first empty look
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _run(args: argparse.Namespace) -> int:
    if args.workers > 1 and not load_settings().broker_url:
        print("helsebro run: --workers needs RabbitMQ (HELSEBRO_BROKER_URL): the embedded broker serves the ordered inbound queue to one consumer at a time, so a second worker would only stand by", file=sys.stderr)
        return 2
    if args.metrics_port and args.metrics_port + args.workers - 1 > 65535:  # worker i serves on P + i
        print(f"helsebro run: --metrics-port {args.metrics_port} leaves no port for worker {args.workers - 1} (P + i must be at most 65535)", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker_index is None:
        return _supervise(args)
    if args.worker_index is not None and not 0 <= args.worker_index < args.workers:
        print("helsebro run: --worker-index must be below --workers", file=sys.stderr)
        return 2
    settings = load_settings()
    configure_logging(level=args.log_level, phi_key=settings.phi_key_bytes)
    logger = get_logger("engine")
    if args.worker_index is not None:
        logger = logger.bind(worker=args.worker_index)
    engine = Engine(settings, logger=logger, worker_index=args.worker_index, workers=args.workers, freeze_gc=True)

    def on_signal(signum: int, _frame: Any) -> None:
        engine.stop()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    if args.supervisor_pid is not None:
        _stop_when_orphaned(engine, args.supervisor_pid, logger)
    metrics = None
    if args.metrics_port is not None:
        from router.ops.metrics import MetricsServer, OverdueApprecs

        port = args.metrics_port + (args.worker_index or 0) if args.metrics_port else 0
        # The record's count, not this worker's: one worker counts it, not N (router/ops/metrics.py)
        apprecs = OverdueApprecs(settings, overdue_after=args.apprec_overdue) if not args.worker_index else None
        try:
            metrics = MetricsServer(engine, host=args.metrics_host, port=port, apprecs=apprecs)
        except (OSError, OverflowError) as exc:  # OverflowError: a port past 65535 (socket.bind)
            print(f"helsebro run: cannot serve metrics on {args.metrics_host}:{port}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return 1
        metrics.start()
        logger.info("metrics_serving", host=args.metrics_host, port=metrics.port)
    try:
        engine.run(until_idle=args.until_idle)
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


def _stop_when_orphaned(engine: Engine, supervisor: int, logger: Any) -> None:
    """Stop *engine* as on SIGTERM once its supervisor (pid *supervisor*) is gone; log `supervisor_gone`.

    A supervisor killed with `kill -9` (or by the OOM killer) cannot pass a stop on, and its workers
    consumed on unsupervised, beside the workers of the `run` a service manager then starts. A daemon
    thread compares os.getppid() with the supervisor's pid once a second: an orphan is handed to init
    or a subreaper, so its parent changes. Chosen over Linux's prctl(PR_SET_PDEATHSIG) because that is
    Linux only, fires when the forking *thread* ends rather than the process, loses a death that comes
    before the child calls it (so it needs this check anyway), and its SIGTERM reads in the log as the
    service manager's; the poll is one path on every platform, says why it stopped, and notices within
    a second, also mid-batch (the engine finishes and acks that batch, then exits). The pid comes from
    the supervisor, not from getppid() at start, so a supervisor that died first is noticed too.
    """

    def watch() -> None:
        while not engine.stopping:
            if os.getppid() != supervisor:
                logger.warning("supervisor_gone", supervisor_pid=supervisor)
                engine.stop()
                return
            time.sleep(_PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _supervise(args: argparse.Namespace) -> int:
    """Start the workers, restart one that dies, pass SIGTERM/SIGINT/SIGHUP on, and return the worst exit code.

    A worker that dies unasked (a crash, the OOM killer, `kill -9`) is started again after a
    backoff (engine.yaml's workers.restart_first_seconds, 1 s unless set, doubling to 30 s): the others had taken its partitions as standby, and without
    a restart the run went on one worker short for good, unnoticed. Exit 0 (idle, with
    `--until-idle`) is not restarted; exit 2 (a ConfigError or usage error: it would fail again)
    is given up at once, as below. A worker that dies _FAST_CRASHES times in a row within _FAST_CRASH_SECONDS of
    its start is given up: the others are stopped and the run exits with its code, so the
    service manager sees the failure rather than a crash loop.

    After a stop (a signal, or a worker given up), a worker still running `--stop-grace` seconds
    later is killed (SIGKILL) and logged as `worker_killed`, and the run exits 1: without a limit one
    stuck worker (a hung call) kept the supervisor waiting for ever. Nothing is lost: its unacked
    messages go back to their queue and the record does not apply them twice.
    """
    if args.metrics_port and not _metrics_ports_free(args):
        return 1
    base = [sys.executable, "-m", "router.cli", "run", "--workers", str(args.workers), "--log-level", args.log_level,
            "--supervisor-pid", str(os.getpid())]
    if args.until_idle is not None:
        base += ["--until-idle", str(args.until_idle)]
    if args.metrics_port is not None:
        base += ["--metrics-port", str(args.metrics_port), "--metrics-host", args.metrics_host, "--apprec-overdue", f"{int(args.apprec_overdue)}s"]
    settings = load_settings()
    first_restart = settings.engine.workers.restart_first_seconds
    configure_logging(level=args.log_level, phi_key=settings.phi_key_bytes)
    log = get_logger("supervisor")
    # The handlers go in before the first child starts: a stop while they start is passed to
    # those running, and no further one is started (it would run on, unstopped).
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopped: list[int] = []
    stop_began: list[float] = []  # when the first stop came: the grace runs from there
    killed: set[int] = set()  # workers killed after the grace

    def on_signal(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        if not stop_began:
            stop_began.append(time.monotonic())
        for child in list(children.values()):
            if child.poll() is None:
                child.send_signal(signum)

    def start(i: int) -> None:
        children[i] = subprocess.Popen([*base, "--worker-index", str(i)], env=os.environ.copy())
        began[i] = time.monotonic()
        if stopped:  # a signal that came while it started, before it was in `children`
            on_signal(stopped[0], None)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    began: dict[int, float] = {}
    crashes = dict.fromkeys(range(args.workers), 0)
    due: dict[int, float] = {}  # worker -> when to start it again
    codes: list[int] = []
    given_up: list[int] = []  # the codes of workers that kept dying: a failure even though the others were then stopped
    for i in range(args.workers):
        if stopped:
            break
        start(i)
    while children or (due and not stopped):
        for i, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            del children[i]
            if i in killed:
                continue
            if stopped or code == 0:
                codes.append(code)
                continue
            if code == 2:  # a ConfigError or usage error: it would fail again, and the others ran on one short, unsaid
                log.error("worker_given_up", worker=i, exit_code=code, crashes=1, why="config or usage error: not restarted")
                given_up.append(code)
                on_signal(signal.SIGTERM, None)
                continue
            fast = time.monotonic() - began[i] < _FAST_CRASH_SECONDS
            crashes[i] = crashes[i] + 1 if fast else 1
            if crashes[i] >= _FAST_CRASHES:
                log.error("worker_given_up", worker=i, exit_code=code, crashes=crashes[i], within_s=_FAST_CRASH_SECONDS)
                given_up.append(abs(code) or 1)
                on_signal(signal.SIGTERM, None)
                continue
            delay = min(first_restart * 2 ** (crashes[i] - 1), _RESTART_MAX_SECONDS)
            log.error("worker_died", worker=i, exit_code=code, restart_in_s=delay)
            due[i] = time.monotonic() + delay
        if stop_began and time.monotonic() - stop_began[0] >= args.stop_grace:
            for i, child in children.items():
                if i not in killed and child.poll() is None:
                    child.kill()
                    killed.add(i)
                    log.error("worker_killed", worker=i, pid=child.pid, grace_s=args.stop_grace,
                              why="still running after the stop grace: its unacked messages go back to the queue")
        for i, at in list(due.items()):
            if stopped:
                due.clear()
            elif time.monotonic() >= at:
                del due[i]
                start(i)
                log.info("worker_restarted", worker=i, pid=children[i].pid)
        time.sleep(_SUPERVISE_POLL_SECONDS)
    return max([*given_up, *([1] if killed else []), *(abs(c) for c in codes if not _stopped_as_asked(c, stopped))], default=0)


def _metrics_ports_free(args: argparse.Namespace) -> bool:
    """Try every worker's metrics port before any worker starts; say which one cannot be bound.

    A worker that cannot bind its port stops alone, and the others would consume on, one short.
    """
    from router.ops.metrics import check_port

    for port in range(args.metrics_port, args.metrics_port + args.workers):
        try:
            check_port(args.metrics_host, port)
        except (OSError, OverflowError) as exc:
            print(f"helsebro run: cannot serve metrics on {args.metrics_host}:{port}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return False
    return True


def _stopped_as_asked(code: int, stopped: list[int]) -> bool:
    """True when a worker's exit code is the stop the supervisor passed on, not a failure.

    A worker the signal reaches before its own handlers are in (still starting up) dies of it
    (-SIGTERM), or leaves through main's KeyboardInterrupt (130) on SIGINT: it had taken no work.
    """
    return any(code in (-signum, 128 + signum) for signum in stopped)
