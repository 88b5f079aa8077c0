"""`helsebro run --metrics-port`: a worker's counters in Prometheus' text format, scraped over HTTP as a monitoring system does."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from router.testing import adt_message, delete_queues, isolated_settings, publish, run_engine_in_thread, settings_env, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
HELSEBRO = [str(Path(sys.executable).parent / "helsebro")]
GOOD_FNR = "15866112379"  # synthetic (Tenor, month + 80)
BAD_FNR = "15866112378"  # fails its check digits
SAMPLE = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$')


def _env(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], ""


def _samples(text: str) -> dict[str, float]:
    """Every sample line as 'name{labels}' → value; every line is a comment or a well-formed sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[f"{m[1]}{{{m[2]}}}" if m[2] else m[1]] = float(m[3])
    return out


class _Worker:
    """`helsebro run ARGS` as a subprocess for a `with` block; leaving it sends SIGTERM and keeps the exit code and stderr
    (the process is killed if it will not stop). Only for short runs: stderr is read when it ends."""

    def __init__(self, settings, *args: str) -> None:
        self.proc = subprocess.Popen([*HELSEBRO, "run", *args], env=_env(settings), stderr=subprocess.PIPE, text=True)
        self.code: int | None = None
        self.stderr = ""

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.proc.send_signal(signal.SIGTERM)
            _, self.stderr = self.proc.communicate(timeout=60)
            self.code = self.proc.returncode
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _up(port: int) -> bool:
    try:
        return _scrape(port)[0] == 200
    except OSError:
        return False


class TestMetrics:
    def test_a_scrape_counts_what_the_worker_settled(self, broker_settings):
        """Three admissions, one of them twice, and one with a bad fødselsnummer: the counters say 3 applied, 1 duplicate,
        1 dead-lettered, the latency histogram holds all 5, no number from a message is in the page; any other path is 404;
        SIGTERM stops the worker with exit 0 and frees the port."""
        settings, port = broker_settings, _free_port()
        first = adt_message("A01", control_id="X1", fnr=GOOD_FNR, local_id="L1", visit="V1")
        with _Worker(settings, "--metrics-port", str(port)) as worker:
            wait_until(lambda: _up(port), 60, what="metrics served")
            publish(settings, [first, adt_message("A01", control_id="X2", fnr=GOOD_FNR, local_id="L1", visit="V2"), first,
                               adt_message("A01", control_id="X3", fnr=GOOD_FNR, local_id="L1", visit="V3"),
                               adt_message("A01", control_id="X4", fnr=BAD_FNR, local_id="L4", visit="V4")])
            wait_until(lambda: _samples(_scrape(port)[2]).get("helsebro_settle_seconds_count") == 5, 60, what="five settled")
            status, content_type, text = _scrape(port)
            assert (_scrape(port, "/")[0], _scrape(port, "/metricsx")[0]) == (404, 404)
        stderr = worker.stderr
        assert worker.code == 0, stderr[-2000:]
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        samples = _samples(text)
        settled = {o: samples[f'helsebro_messages_settled_total{{outcome="{o}"}}'] for o in
                   ("applied", "unchanged", "duplicate", "filtered", "forwarded", "dead_lettered")}
        assert settled == {"applied": 3, "unchanged": 0, "duplicate": 1, "filtered": 0, "forwarded": 0, "dead_lettered": 1}
        buckets = [v for k, v in samples.items() if k.startswith("helsebro_settle_seconds_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == samples["helsebro_settle_seconds_count"] == 5
        assert 'helsebro_settle_seconds_bucket{le="+Inf"}' in samples and samples["helsebro_settle_seconds_sum"] > 0
        assert samples["helsebro_deliveries_total"] >= 5 and samples["helsebro_batches_total"] >= 1
        assert "# TYPE helsebro_messages_settled_total counter" in text and "# TYPE helsebro_settle_seconds histogram" in text
        assert GOOD_FNR not in text and BAD_FNR not in text and "NORDMANN" not in text
        assert '"metrics_serving"' in stderr
        assert not _up(port)

    def test_a_port_in_use_stops_the_worker_before_it_consumes(self, broker_settings):
        """Another process holds the port: exit 1 with one line saying so, and nothing is taken off the queue."""
        settings = broker_settings
        publish(settings, [adt_message("A01", control_id="Y1", fnr=GOOD_FNR, local_id="L1", visit="V1")])
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = subprocess.run([*HELSEBRO, "run", "--metrics-port", str(port), "--until-idle", "0.5"], env=_env(settings),
                                    capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert f"helsebro run: cannot serve metrics on 127.0.0.1:{port}:" in result.stderr and "Traceback" not in result.stderr
        result = subprocess.run([*HELSEBRO, "run", "--until-idle", "0.5"], env=_env(settings), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and '"outcome":"applied"' in result.stderr  # it was still there to take

    def test_an_ipv6_address_is_served(self, tmp_path):
        """--metrics-host ::1 serves over IPv6 (http.server binds IPv4 only unless told)."""
        if not socket.has_ipv6:
            pytest.skip("this machine has no IPv6")
        settings, port = isolated_settings(tmp_path), _free_port()
        def scraped() -> bool:
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as r:
                    return r.status == 200 and "helsebro_messages_settled_total" in r.read().decode()
            except OSError:
                return False

        with _Worker(settings, "--metrics-port", str(port), "--metrics-host", "::1") as worker:
            wait_until(scraped, 60, what="metrics served on ::1")
        assert worker.code == 0, worker.stderr[-2000:]

    @pytest.mark.parametrize("port", ["-1", "65536", "http"])
    def test_a_port_that_is_no_port_is_a_usage_error(self, port, tmp_path):
        settings = isolated_settings(tmp_path)
        result = subprocess.run([*HELSEBRO, "run", "--metrics-port", port], env=_env(settings), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--metrics-port" in result.stderr

    @pytest.mark.integration
    def test_each_worker_serves_its_own_counters(self, tmp_path):
        """`run --workers 2 --metrics-port P`: worker 0 on P, worker 1 on P + 1; together they count every message once."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4})
        port = _free_port()
        try:
            with subprocess.Popen([*HELSEBRO, "run", "--workers", "2", "--metrics-port", str(port)], env=_env(settings),
                                  stderr=subprocess.DEVNULL) as proc:
                try:
                    wait_until(lambda: _up(port) and _up(port + 1), 60, what="both workers' metrics")
                    publish(settings, [adt_message("A01", control_id=f"W{i}", fnr=GOOD_FNR, local_id="L1", visit=f"V{i}") for i in range(8)])

                    def applied() -> float:
                        return sum(_samples(_scrape(p)[2])['helsebro_messages_settled_total{outcome="applied"}'] for p in (port, port + 1))

                    wait_until(lambda: applied() == 8, 60, what="eight applied across the workers")
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
            assert proc.returncode == 0
        finally:
            delete_queues(settings)


class TestDestinationCounters:
    def test_a_queued_destinations_results_are_labelled_by_its_name(self, with_destination, scripted_fhir):
        """The external server takes the first Bundle and refuses the second: its counters say 1 applied, 1 dead-lettered."""
        from router.ops.metrics import exposition

        server = scripted_fhir(take=1)
        publish(with_destination, [adt_message("A01", control_id=f"D{n}", fnr=GOOD_FNR, local_id="L1", visit=f"V{n}") for n in (1, 2)])
        handle = run_engine_in_thread(with_destination, destination_clients={"ekstern": server})
        try:
            wait_until(lambda: handle.engine.destinations[0].stats.dead_lettered == 1, 60, what="the second refused")
            samples = _samples(exposition(handle.engine))
        finally:
            handle.stop()
        results = {r: samples[f'helsebro_destination_messages_total{{destination="ekstern",result="{r}"}}']
                   for r in ("applied", "already_sent", "parked", "dead_lettered", "failures")}
        assert results == {"applied": 1, "already_sent": 0, "parked": 0, "dead_lettered": 1, "failures": 0}


def _request(port: int, method: str, path: str = "/metrics") -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class TestEndpoint:
    """The HTTP side of a scrape, as a scraper, a probe or a load balancer's health check meets it (review H123)."""

    @pytest.fixture
    def served(self, tmp_path):
        from router.engine import Engine
        from router.ops.metrics import MetricsServer

        server = MetricsServer(Engine(isolated_settings(tmp_path)), host="127.0.0.1", port=0)
        server.start()
        try:
            yield server.port
        finally:
            server.stop()

    def test_head_is_get_without_a_body(self, served):
        """A probe's HEAD /metrics: 200 with GET's headers and no body (it was 501 Unsupported method)."""
        status, headers, body = _request(served, "HEAD")
        assert (status, body) == (200, b"")
        assert headers["content-type"].startswith("text/plain; version=0.0.4") and int(headers["content-length"]) > 0

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
    def test_another_method_is_405_and_says_which_are_allowed(self, served, method):
        """Anything but GET and HEAD: 405 Method Not Allowed with `Allow: GET, HEAD` (it was 501 Unsupported method)."""
        status, headers, _ = _request(served, method)
        assert status == 405 and headers["allow"] == "GET, HEAD"

    def test_another_path_is_404_whatever_the_method(self, served):
        assert _request(served, "GET", "/")[0] == _request(served, "HEAD", "/other")[0] == 404

    def test_a_scraper_that_hangs_up_leaves_no_traceback_in_the_log(self, tmp_path):
        """A scrape cut short (a scraper's timeout, a probe closing at once) must not print a Python traceback into the
        worker's stderr, which holds its JSON log lines: every line stays one JSON document."""
        import json
        import struct
        import time

        settings, port = isolated_settings(tmp_path), _free_port()
        with _Worker(settings, "--metrics-port", str(port)) as worker:
            wait_until(lambda: _up(port), 60, what="metrics served")
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                s.close()
            time.sleep(0.5)
            assert _up(port)  # still serving
        assert worker.code == 0
        assert "Traceback" not in worker.stderr and "Exception occurred" not in worker.stderr, worker.stderr[-2000:]
        for line in worker.stderr.splitlines():
            json.loads(line)


KITH_ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "kommune": {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
    },
    "routes": [{"name": "admissions", "to": ["record", "kommune"]}],
}


class _Quiet:
    def __getattr__(self, _name):
        return lambda *_a, **_k: self


class TestApprecsOverdue:
    """helsebro_apprecs_overdue: the KITH messages `status` counts as having no AppRec after --apprec-overdue (review H123)."""

    def test_the_gauge_counts_what_status_counts(self, exported, capsys):
        """K1 and K2 rendered as PLO for kommune; kommune answers K1 only. Once both are 1 s old the gauge says 1 for
        kommune, the same number `status --apprec-overdue 1s` shows; nothing from a message is in the page."""
        import json
        import time

        from adapters.kith import build_apprecs, read_message
        from router.cli import main
        from router.ops.metrics import MetricsServer, OverdueApprecs
        from router.testing import drain_queue

        settings = exported(None, routes=KITH_ROUTES)
        publish(settings, [adt_message("A01", control_id=f"K{n}", fnr=GOOD_FNR, local_id="L1", visit=f"V{n}", admitted="20240301101500")
                           for n in (1, 2)])
        handle = run_engine_in_thread(settings, logger=_Quiet())
        try:
            wait_until(lambda: handle.stats.messages == 2, 60, what="two admissions settled")
            plo = {h["x-helsebro-control-id"]: body for h, body in drain_queue(settings, settings.routes.destinations["kommune"].queue)}
            [apprec] = build_apprecs(read_message(plo["K1"]).envelope, error=None)  # what kommune sends back: OK
            publish(settings, [apprec.xml])
            wait_until(lambda: handle.stats.receipts == 1, 60, what="K1's AppRec settled")
            time.sleep(1.1)
            watch = OverdueApprecs(settings, overdue_after=1.0, every=0.2)
            server = MetricsServer(handle.engine, host="127.0.0.1", port=0, apprecs=watch)
            server.start()
            try:
                gauge = 'helsebro_apprecs_overdue{destination="kommune"}'
                wait_until(lambda: _samples(_scrape(server.port)[2]).get(gauge) is not None, 30, what="the overdue count")
                text = _scrape(server.port)[2]
            finally:
                server.stop()
        finally:
            handle.stop()
        assert "# TYPE helsebro_apprecs_overdue gauge" in text
        capsys.readouterr()
        assert main(["status", "--json", "--interval", "0", "--apprec-overdue", "1s"]) == 0
        [kommune] = json.loads(capsys.readouterr().out)["apprecs"]
        assert _samples(text)[gauge] == kommune["overdue"] == 1
        assert GOOD_FNR not in text and "K2" not in text

    def test_a_worker_serves_it_for_each_kith_destination(self, exported):
        """`run --metrics-port P` with a KITH destination: the gauge is there from the start (0: nothing is 96 h old);
        `--apprec-overdue` takes status's ages and refuses what is none (exit 2)."""
        settings, port = exported(None, routes=KITH_ROUTES), _free_port()
        gauge = 'helsebro_apprecs_overdue{destination="kommune"}'
        with _Worker(settings, "--metrics-port", str(port), "--apprec-overdue", "24h") as worker:
            wait_until(lambda: _up(port) and gauge in _samples(_scrape(port)[2]), 60, what="the overdue gauge")
            assert _samples(_scrape(port)[2])[gauge] == 0
        assert worker.code == 0, worker.stderr[-2000:]
        result = subprocess.run([*HELSEBRO, "run", "--apprec-overdue", "0s"], env=_env(settings), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--apprec-overdue" in result.stderr


class TestApprecsUnmatched:
    """An AppRec answering nothing Helsebro sent had a note and a log line but no figure (review H168)."""

    def test_status_and_the_metric_count_the_apprecs_that_answer_nothing_sent(self, exported, capsys):
        """kommune answers K1's PLO, and sends an AppRec for a MsgId Helsebro never gave, twice (a redelivery): `status`
        counts one unmatched AppRec in the last hour and 24 h (JSON `apprecs_unmatched`, table `APPRECS UNMATCHED`), and
        a scrape of /metrics says `helsebro_apprecs_unmatched_total 1`; the AppRec that answers K1 is in neither."""
        import json

        from router.cli import main
        from router.ops.metrics import MetricsServer
        from router.testing import apprec_answers, drain_queue

        settings = exported(None, routes=KITH_ROUTES)
        publish(settings, [adt_message("A01", control_id="K1", fnr=GOOD_FNR, local_id="L1", visit="V1", admitted="20240301101500")])
        handle = run_engine_in_thread(settings, logger=_Quiet())
        try:
            wait_until(lambda: handle.stats.messages == 1, 60, what="the admission settled")
            [(_h, plo)] = drain_queue(settings, settings.routes.destinations["kommune"].queue)
            _sent_id, _never_given, matched, stranger = apprec_answers(plo)
            publish(settings, [matched, stranger, stranger])
            wait_until(lambda: handle.stats.receipts == 3, 60, what="the AppRecs settled")
            server = MetricsServer(handle.engine, host="127.0.0.1", port=0)
            server.start()
            try:
                status, _type, text = _scrape(server.port)
            finally:
                server.stop()
        finally:
            handle.stop()
        assert status == 200
        assert "# TYPE helsebro_apprecs_unmatched_total counter" in text
        assert _samples(text)["helsebro_apprecs_unmatched_total"] == 1
        capsys.readouterr()
        assert main(["status", "--json", "--interval", "0"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["apprecs_unmatched"] == {"last_hour": 1, "last_24h": 1}
        assert doc["apprecs_refused"] == {"last_hour": 0, "last_24h": 0}  # the existing key, unchanged
        assert main(["status", "--interval", "0"]) == 0
        [line] = [row for row in capsys.readouterr().out.splitlines() if row.startswith("APPRECS UNMATCHED")]
        assert line.split()[2:4] == ["1", "1"] and "apprec_unmatched" in line
