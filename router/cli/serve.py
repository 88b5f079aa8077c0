"""The `helsebro serve` verb: serve the shared record over FHIR R4 REST until stopped.

SIGINT and SIGTERM stop it cleanly (exit 0): it stops taking connections, finishes the requests
it is answering (up to 20 s), then exits. Serving that fails by itself exits 1.
The record is the one the settings name (HELSEBRO_RECORD_URL, or SQLite under
HELSEBRO_DATA_DIR). It serves at most engine.yaml's `serve.max_connections` connections at once (64
unless set); one more is answered 503 with Retry-After.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from adapters.fhir.record import open_record
from adapters.fhir.rest import make_server
from router.cli._args import whole_number
from router.errors import RecordUnavailable
from router.logging import configure_logging, get_logger
from router.settings import load_settings

_DRAIN_SECONDS = 20.0
"""How long a stop waits for the requests being answered: under the 30 s a supervisor (systemd,
Kubernetes) gives between SIGTERM and SIGKILL."""


def register(subparsers: Any) -> None:
    """Add the `serve` verb."""
    parser = subparsers.add_parser("serve", help="Serve the shared record over FHIR REST.", description=__doc__)
    parser.add_argument("--port", type=whole_number(0, 65535), default=8080, help="TCP port to listen on; 0 picks a free one (default 8080).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return 0, or 1 when the record or port is unusable or serving fails."""
    settings = load_settings()
    configure_logging(phi_key=settings.phi_key_bytes)
    log = get_logger("fhir.rest")
    try:
        open_record(settings).close()  # fail now, not at the first request
        server = make_server(
            lambda: open_record(settings), args.host, args.port, log=log, max_connections=settings.engine.serve.max_connections,
        )
    except RecordUnavailable as exc:
        log.error("fhir_record_unavailable", reason=str(exc))
        return 1
    except OSError as exc:
        log.error("fhir_listen_failed", host=args.host, port=args.port, reason=exc.strerror)
        return 1

    # The handlers only note the signal: an exception raised from a handler can land inside
    # socketserver's dispatch of a new connection, whose `except Exception` swallows it and
    # serves on (SIGTERM lost while a client connects); and a handler that takes a lock (an
    # Event's) deadlocks when the signal lands while the main thread holds that lock. The server
    # runs on its own thread; the main thread, which receives the signals, watches both.
    stopping: list[int] = []
    failed: list[Exception] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    def serve() -> None:
        try:
            server.serve_forever()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread, which exits 1
            failed.append(exc)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    host, port = server.server_address[:2]
    serving = threading.Thread(target=serve, name="helsebro-fhir-serve", daemon=True)
    serving.start()
    try:
        # Announced after the handlers are in place: a signal sent as soon as the line is
        # read (a test, a supervisor) must find them, not end the process with 130 or 143.
        log.info("fhir_serving", host=str(host), port=port, base_url=server.base_url)
        while not stopping and serving.is_alive():
            serving.join(0.2)  # a signal's handler runs in between; no lock is held that it needs
    finally:
        server.shutdown()  # returns at once when serve_forever already ended
        serving.join()
        server.socket.close()  # stop listening: a new client is refused at once, not left to time out
        if not server.drain(_DRAIN_SECONDS):
            log.warning("fhir_requests_cut", after_seconds=_DRAIN_SECONDS)
        server.server_close()
        for sig, handler in previous.items():  # only now: a second Ctrl-C must not break the close
            signal.signal(sig, handler)
    if failed:  # serve_forever ended by itself: no clean stop, so a supervisor restarts it
        log.error("fhir_serve_failed", reason=f"{type(failed[0]).__name__}: {failed[0]}")
        return 1
    log.info("fhir_stopped")
    return 0
