"""A worker's counters in Prometheus' text format, served over HTTP by `helsebro run --metrics-port`.

AMQP 0-9-1 shows a queue's depth and consumers and no rates; `helsebro status`
shows what settled lately from the record's journal. A scraper that polls every
worker's counters gets the rest: throughput and error rates per outcome
(`rate(helsebro_messages_settled_total[5m])`), each queued destination's
deliveries, parks and refusals, and how long batches take to settle, without
reading a queue or the record. Everything here is a count or a duration; no
identifier, name or value from a message is ever a label (destination names and
outcomes are the only ones).

The counters are the engine's own (router.engine.EngineStats,
router.delivery.worker.DestinationStats), written by their threads and read
here without a lock: a scrape may see one message more in one counter than in
another, never a torn number. They start at zero with the process, as
Prometheus expects of a counter.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from router.contracts import SETTLED_OUTCOMES
from router.engine import SETTLE_LATENCY_BOUNDS

if TYPE_CHECKING:
    from router.engine import Engine

__all__ = ["MetricsServer", "check_port", "exposition"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ENGINE_COUNTERS = (  # EngineStats field, metric name, help
    ("deliveries", "helsebro_deliveries_total", "Broker deliveries this worker settled (a delivery may hold several messages)."),
    ("batches", "helsebro_batches_total", "Batches this worker settled, each acknowledged at once."),
    ("reconnects", "helsebro_reconnects_total", "Times this worker lost the broker or the record and reconnected."),
    ("intake_forwarded", "helsebro_intake_forwarded_total", "Deliveries the intake moved to a patient partition."),
    ("receipts_refused", "helsebro_apprecs_refused_total",
     "AppRecs received that refuse a message Helsebro sent (status 2 Avvist): alarm on any increase; the log's apprec_refused names them."),
)
_DESTINATION_RESULTS = ("applied", "already_sent", "parked", "dead_lettered", "failures")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(engine: Engine) -> str:
    """Return the worker's counters as one Prometheus text exposition (format 0.0.4)."""
    stats = engine.stats
    lines = ["# HELP helsebro_messages_settled_total Messages this worker settled, by outcome.",
             "# TYPE helsebro_messages_settled_total counter"]
    lines += [f'helsebro_messages_settled_total{{outcome="{o}"}} {stats.settled_count(o)}' for o in SETTLED_OUTCOMES]
    for field, name, text in _ENGINE_COUNTERS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {getattr(stats, field)}"]
    buckets, total = list(stats.latency_buckets), stats.latency_sum  # one copy: the buckets and the count agree
    lines += ["# HELP helsebro_settle_seconds Time from a batch's start to its acknowledgement, per message settled in it.",
              "# TYPE helsebro_settle_seconds histogram"]
    running = 0
    for bound, count in zip((*map(str, SETTLE_LATENCY_BOUNDS), "+Inf"), buckets, strict=True):
        running += count
        lines.append(f'helsebro_settle_seconds_bucket{{le="{bound}"}} {running}')
    lines += [f"helsebro_settle_seconds_sum {total:.6f}", f"helsebro_settle_seconds_count {running}"]
    if engine.destinations:
        lines += ["# HELP helsebro_destination_messages_total Messages each queued destination's worker handled, by result "
                  "(applied: the server accepted it; already_sent: a redelivery its ledger knew; parked: put on the retry "
                  "ladder; dead_lettered: refused or out of retries; failures: attempts that failed for now).",
                  "# TYPE helsebro_destination_messages_total counter"]
        for worker in engine.destinations:
            lines += [f'helsebro_destination_messages_total{{destination="{_label(worker.name)}",result="{r}"}} {getattr(worker.stats, r)}'
                      for r in _DESTINATION_RESULTS]
    lines += ["# HELP helsebro_idle_seconds Seconds since this worker last took a delivery.", "# TYPE helsebro_idle_seconds gauge",
              f"helsebro_idle_seconds {stats.idle_seconds():.3f}"]
    return "\n".join(lines) + "\n"


class _Ipv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    return _Ipv6Server if ":" in host else ThreadingHTTPServer  # `::` or `::1`: http.server binds IPv4 unless told


def check_port(host: str, port: int) -> None:
    """Bind *host*:*port* as MetricsServer would, and let it go at once.

    Why: `run --workers N` starts N processes that bind P + i each; one that cannot
    bind stops alone while the others consume on. The supervisor tries every port
    first, so a port in use stops them all before any takes a message.

    Raises:
        OSError: the address cannot be bound.
        OverflowError: *port* is past 65535.
    """
    _server_class(host)((host, port), BaseHTTPRequestHandler).server_close()


class MetricsServer:
    """Serves `GET /metrics` for one engine on its own daemon thread; anything else is 404."""

    def __init__(self, engine: Engine, *, host: str, port: int) -> None:
        """Bind *host*:*port* now, so a port in use fails before the engine starts.

        Raises:
            OSError: the address cannot be bound.
        """
        source = engine

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = exposition(source).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", _CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass  # a scrape every few seconds is not worth a log line

        self._server = _server_class(host)((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="helsebro-metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one the system chose for 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
