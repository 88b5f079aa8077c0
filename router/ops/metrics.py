"""A worker's counters in Prometheus' text format, served over HTTP by `helsebro run --metrics-port`.

AMQP 0-9-1 shows a queue's depth and consumers and no rates; `helsebro status`
shows what settled lately from the record's journal. A scraper that polls every
worker's counters gets the rest: throughput and error rates per outcome
(`rate(helsebro_messages_settled_total[5m])`), each queued destination's
deliveries, parks and refusals, how long batches take to settle, and which
mapping version it runs and whether an edit was refused, without reading a
queue or the record. Everything here is a count or a duration; no identifier,
name or value from a message is ever a label (destination names, outcomes,
formats and mapping versions are the only ones).

The counters are the engine's own (router.engine.EngineStats,
router.delivery.worker.DestinationStats), written by their threads and read
here without a lock: a scrape may see one message more in one counter than in
another, never a torn number. They start at zero with the process, as
Prometheus expects of a counter.

One figure is the record's, not a counter: `helsebro_apprecs_overdue`, per KITH
destination the messages sent at least --apprec-overdue ago without an AppRec,
as `helsebro status` counts them (router/ops/apprecs.py). OverdueApprecs
counts it on a thread of its own every minute, so a scrape never waits on the
record; only one worker of `run --workers N` counts it (worker 0), so N workers
do not read the journal N times. It reads the journal only, never the
dead-letter queue (see router/ops/apprecs.py), so a message applied but
dead-lettered at render may be counted where status, reading that queue, does not.

The HTTP side answers GET and HEAD on /metrics, 404 elsewhere, 405 to another
method, and says nothing when a scraper hangs up mid-answer (a timeout): the
worker's stderr holds its JSON log lines, and a traceback there is no log line.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from router.contracts import SETTLED_OUTCOMES
from router.engine import SETTLE_LATENCY_BOUNDS
from router.logging import get_logger
from router.ops.apprecs import APPREC_OVERDUE_S, OverdueCount, overdue_apprecs

if TYPE_CHECKING:
    from router.engine import Engine
    from router.settings import Settings

__all__ = ["MetricsServer", "OverdueApprecs", "check_port", "exposition"]

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ENGINE_COUNTERS = (  # EngineStats field, metric name, help
    ("deliveries", "helsebro_deliveries_total", "Broker deliveries this worker settled (a delivery may hold several messages)."),
    ("batches", "helsebro_batches_total", "Batches this worker settled, each acknowledged at once."),
    ("reconnects", "helsebro_reconnects_total", "Outages of the broker or the record this worker met, each counted once however many tries it took to reach it again."),
    ("intake_forwarded", "helsebro_intake_forwarded_total", "Deliveries the intake moved to a patient partition."),
    ("receipts_refused", "helsebro_apprecs_refused_total",
     "AppRecs received that refuse a message Helsebro sent (status 2 Avvist): alarm on any increase; the log's apprec_refused names them."),
    ("receipts_unmatched", "helsebro_apprecs_unmatched_total",
     "AppRecs received that answer nothing Helsebro sent (no KITH message it published in the last 14 days has that MsgId): "
     "misrouted or forged; the log's apprec_unmatched names them."),
)
_RETRY_SECONDS = 5.0  # the next count, when the record could not be read
_DESTINATION_RESULTS = ("applied", "already_sent", "parked", "dead_lettered", "failures")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class OverdueApprecs:
    """Counts the overdue AppRecs (router/ops/apprecs.py) every *every* seconds on a daemon thread; a scrape reads the last count."""

    def __init__(self, settings: Settings, *, overdue_after: float = APPREC_OVERDUE_S, every: float = 60.0) -> None:
        self._settings = settings
        self.overdue_after = overdue_after
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="helsebro-apprecs-overdue", daemon=True)
        self.counts: list[OverdueCount] = []  # replaced whole by each count: a scrape reads one list or the next

    def count(self) -> None:
        """Count now (the record away: each destination's count is None, and the gauge leaves it out)."""
        self.counts = overdue_apprecs(self._settings, self.overdue_after)

    def start(self) -> None:
        if self._settings.routes.rendered_kith():  # nothing to count otherwise: no thread
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.count()
            unknown = any(c.overdue is None for c in self.counts)  # the record away, or not made yet at a first start
            self._stop.wait(min(self._every, _RETRY_SECONDS) if unknown else self._every)


def exposition(engine: Engine, apprecs: OverdueApprecs | None = None) -> str:
    """Return the worker's counters, and *apprecs*' last count, as one Prometheus text exposition (format 0.0.4)."""
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
    lines += _mappings(engine)
    lines += _routes(engine)
    lines += ["# HELP helsebro_idle_seconds Seconds since this worker last took a delivery.", "# TYPE helsebro_idle_seconds gauge",
              f"helsebro_idle_seconds {stats.idle_seconds():.3f}"]
    if apprecs is not None:
        lines += _overdue(apprecs)
    return "\n".join(lines) + "\n"


def _mappings(engine: Engine) -> list[str]:
    """The hot reload's counters and the mapping version this worker converts with; none for a caller's fixed converter.

    Why: a refused edit was in the log only, and each worker of `run --workers N` reloads on its own;
    a scrape now says, per worker, which version runs and whether the files on disk are refused.
    """
    reloader = engine.mappings
    if not hasattr(reloader, "refusals"):
        return []
    lines = ["# HELP helsebro_mapping_reloads_total Mapping edits this worker loaded while running (hot reload).",
             "# TYPE helsebro_mapping_reloads_total counter", f"helsebro_mapping_reloads_total {reloader.reloads}",
             "# HELP helsebro_mapping_reload_refusals_total Mapping edits this worker refused (the log's mappings_reload_refused "
             "names file:line); the set before kept running.",
             "# TYPE helsebro_mapping_reload_refusals_total counter", f"helsebro_mapping_reload_refusals_total {reloader.refusals}",
             "# HELP helsebro_mapping_reload_failing 1 while the mapping files on disk are refused and this worker runs the set before them.",
             "# TYPE helsebro_mapping_reload_failing gauge", f"helsebro_mapping_reload_failing {int(reloader.failing)}"]
    versions: dict[str, str] = getattr(reloader.live, "versions", dict)()
    if versions:
        lines += ["# HELP helsebro_mappings_info The mapping version this worker converts with, by format: the hash its Bundles "
                  "carry in meta.tag (urn:helsebro:mapping, structure@hash).", "# TYPE helsebro_mappings_info gauge"]
        lines += [f'helsebro_mappings_info{{format="{f}",version="{_label(v)}"}} 1' for f, v in sorted(versions.items())]
    return lines


def _routes(engine: Engine) -> list[str]:
    """The routes' hot reload counters, beside the mappings': a refused routes.yaml (a restart it needs, a `when:` that
    does not compile) leaves the old routes running, which the log alone said."""
    reloader = engine.routes
    if not hasattr(reloader, "refusals"):
        return []
    return ["# HELP helsebro_routes_reloads_total routes.yaml edits this worker loaded while running (hot reload).",
            "# TYPE helsebro_routes_reloads_total counter", f"helsebro_routes_reloads_total {reloader.reloads}",
            "# HELP helsebro_routes_reload_refusals_total routes.yaml edits this worker refused (the log's routes_reload_refused "
            "says why: file:line:col, or what needs a restart).",
            "# TYPE helsebro_routes_reload_refusals_total counter", f"helsebro_routes_reload_refusals_total {reloader.refusals}",
            "# HELP helsebro_routes_reload_failing 1 while routes.yaml on disk is refused and this worker runs the routes before it.",
            "# TYPE helsebro_routes_reload_failing gauge", f"helsebro_routes_reload_failing {int(reloader.failing)}"]


def _overdue(apprecs: OverdueApprecs) -> list[str]:
    lines = [f"# HELP helsebro_apprecs_overdue KITH messages sent to each destination at least {apprecs.overdue_after:g} s ago whose "
             "receiver has sent no AppRec yet, as `helsebro status` counts them (dead-letter queues not read: one dead-lettered "
             "at render may be counted); counted every minute, by worker 0 only; absent while the record cannot be read.",
             "# TYPE helsebro_apprecs_overdue gauge"]
    lines += [f'helsebro_apprecs_overdue{{destination="{_label(c.destination)}"}} {c.overdue}' for c in apprecs.counts if c.overdue is not None]
    return lines


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hangs up mid-answer (its timeout) is not worth a word; anything else is one log line, no traceback.

        socketserver's own prints a traceback to stderr, which holds the worker's JSON log lines.
        """
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            get_logger("metrics").warning("metrics_request_failed", error=type(error).__name__)


class _Ipv6Server(_Server):
    address_family = socket.AF_INET6


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    return _Ipv6Server if ":" in host else _Server  # `::` or `::1`: http.server binds IPv4 unless told


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
    """Serves `GET /metrics` (and HEAD) for one engine on its own daemon thread; another path is 404, another method 405."""

    def __init__(self, engine: Engine, *, host: str, port: int, apprecs: OverdueApprecs | None = None) -> None:
        """Bind *host*:*port* now, so a port in use fails before the engine starts; *apprecs* adds the overdue AppRecs.

        Raises:
            OSError: the address cannot be bound.
        """
        source = engine
        self._apprecs = apprecs

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                self._answer(body=True)

            def do_HEAD(self) -> None:  # a probe's check: GET's headers, no body
                self._answer(body=False)

            def _answer(self, *, body: bool) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                page = exposition(source, apprecs).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", _CONTENT_TYPE)
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                if body:
                    self.wfile.write(page)

            def _refuse(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                self.send_response(405, "Method Not Allowed")
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

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
        if self._apprecs is not None:
            self._apprecs.start()

    def stop(self) -> None:
        if self._apprecs is not None:
            self._apprecs.stop()
        self._server.shutdown()
        self._server.server_close()
