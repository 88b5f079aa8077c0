"""Tests for router/cli/serve.py: the `helsebro serve` verb, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from router.cli import build_parser
from router.cli.serve import run

ROOT = Path(__file__).resolve().parents[2]
_MAIN = "import sys; from router.cli import main; sys.exit(main())"


def _start(tmp_path, *args, record_url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env["HELSEBRO_DATA_DIR"] = str(tmp_path / "data")
    if record_url:
        env["HELSEBRO_RECORD_URL"] = record_url
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, "serve", *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _events(proc):
    """Yield the JSON log events the process writes to stderr, as they come."""
    for line in proc.stderr:
        if line.startswith("{"):
            yield json.loads(line)


@pytest.fixture
def served(tmp_path):
    """A `helsebro serve --port 0` process and the base URL it reported."""
    proc = _start(tmp_path, "--port", "0")
    try:
        events = _events(proc)
        serving = next(e for e in events if e["event"] in ("fhir_serving", "fhir_record_unavailable"))
        yield proc, serving["base_url"], events
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()


class TestServe:
    def test_defaults(self):
        """`serve` listens on 127.0.0.1:8080 unless told otherwise."""
        args = build_parser().parse_args(["serve"])
        assert (args.host, args.port, args.func) == ("127.0.0.1", 8080, run)

    def test_options(self):
        """--host and --port are parsed."""
        args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9001"])
        assert (args.host, args.port) == ("0.0.0.0", 9001)

    @pytest.mark.parametrize("port", ["70000", "-1", "x"])
    def test_a_port_out_of_range_is_a_usage_error(self, port, capsys):
        """`--port 70000` ended in socket.bind's OverflowError traceback; it is a usage error (exit 2)."""
        with pytest.raises(SystemExit) as stopped:
            build_parser().parse_args(["serve", "--port", port])
        assert stopped.value.code == 2 and "--port" in capsys.readouterr().err

    def test_serves_until_sigterm(self, served):
        """The process answers FHIR requests and exits 0 on SIGTERM."""
        proc, base_url, events = served
        with httpx.Client(base_url=base_url) as http:
            assert http.get("/metadata").json()["fhirVersion"] == "4.0.1"
            assert http.get("/Patient/absent").status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "fhir_stopped" in [e["event"] for e in events]

    def test_sigterm_finishes_a_request_in_flight(self, served):
        """Review H122: SIGTERM ended the process while a request was being answered, so the client
        got a reset connection and never learnt whether its transaction was stored. The server now
        stops taking connections, answers the request it is reading, then exits 0."""
        proc, base_url, events = served
        host, port = base_url.split("//")[1].split("/")[0].split(":")
        body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}},
        ]}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(b"POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            time.sleep(0.5)  # the server is reading the body
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until it takes no more connections (the stop has begun)
                try:
                    socket.create_connection((host, int(port)), timeout=5).close()
                except OSError:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("still taking connections 10 s after SIGTERM")
            time.sleep(0.3)  # long enough for an exit to have cut the request, as it did
            conn.sendall(body[10:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
        assert b'"201 Created"' in answer
        assert proc.wait(timeout=30) == 0
        assert "fhir_stopped" in [e["event"] for e in events]

    @pytest.mark.parametrize("attempt", range(4))
    def test_sigterm_while_clients_connect_still_stops(self, served, attempt):
        """A stop that lands while a new connection is being handed to a thread is not lost.

        It used to be: the handler raised an exception, which socketserver's dispatch of the
        connection caught as a request error, and the server served on (about one stop in
        twenty under this load); four attempts make a regression show.
        """
        proc, base_url, events = served
        done = threading.Event()

        def connect_again_and_again() -> None:
            while not done.is_set():
                try:
                    httpx.get(f"{base_url}/metadata", timeout=2)
                except httpx.HTTPError:
                    pass  # refused once the server stops listening

        clients = [threading.Thread(target=connect_again_and_again) for _ in range(3)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            done.set()
            for client in clients:
                client.join()
        assert code == 0
        assert "fhir_stopped" in [e["event"] for e in events]

    def test_a_server_that_stops_serving_by_itself_exits_1(self, tmp_path, monkeypatch, capsys):
        """Review H87: serve_forever ending in an error (its thread dies) is no clean stop: the process must not exit 0
        with `fhir_stopped` as if told to, or a supervisor that restarts on failure leaves the record unserved."""
        from adapters.fhir.rest import FhirServer
        from router.cli import main

        def broken(self):  # called by serve_forever's loop: as a failing select() would, it ends serve_forever
            raise OSError(9, "Bad file descriptor")

        for name in [k for k in os.environ if k.startswith("HELSEBRO_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HELSEBRO_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setattr(FhirServer, "service_actions", broken)
        assert main(["serve", "--port", "0"]) == 1
        assert "fhir_serve_failed" in capsys.readouterr().err

    def test_sigint_stops_cleanly(self, served):
        """SIGINT stops the server with exit code 0, too."""
        proc, _, _ = served
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0

    def test_unreachable_record_exits_1(self, tmp_path):
        """An unusable record is reported at start with exit code 1."""
        proc = _start(tmp_path, "--port", "0", record_url="postgresql://postgres@127.0.0.1:1/test")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "fhir_record_unavailable" in err

    def test_busy_port_exits_1(self, tmp_path):
        """A port already in use is reported with exit code 1."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            proc = _start(tmp_path, "--port", str(taken.getsockname()[1]))
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "fhir_listen_failed" in err


class TestServeConnectionCapReviewH190:
    """Found by review (H190): `serve` started a thread per connection with no cap."""

    def test_connections_over_the_cap_are_answered_503_with_retry_after(self, tmp_path):
        """A burst of connections (or idle keep-alive ones) each took a thread, without bound: enough of them
        exhausted the process. engine.yaml's serve.max_connections bounds them; one more gets 503 with
        Retry-After, and once a connection closes the next is served again."""
        config = tmp_path / "config"
        config.mkdir()
        (config / "engine.yaml").write_text("serve:\n  max_connections: 2\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
        env |= {"HELSEBRO_DATA_DIR": str(tmp_path / "data"), "HELSEBRO_CONFIG_DIR": str(config)}
        proc = subprocess.Popen([sys.executable, "-c", _MAIN, "serve", "--port", "0"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            serving = next(e for e in _events(proc) if e["event"] in ("fhir_serving", "fhir_record_unavailable", "config_invalid"))
            assert serving["event"] == "fhir_serving", serving
            port = serving["port"]

            def ask(sock):
                sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                    next(line.split(b":")[1] for line in answer.split(b"\r\n") if line.lower().startswith(b"content-length"))
                ):
                    chunk = sock.recv(65536)
                    assert chunk, answer
                    answer += chunk
                return answer

            held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
            for sock in held:  # each a kept-alive connection, holding its thread
                assert ask(sock).startswith(b"HTTP/1.1 200 ")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                refused = ask(extra)
            assert refused.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in refused and b"OperationOutcome" in refused
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:  # the closed connection's thread gives its slot back as it ends
                with socket.create_connection(("127.0.0.1", port), timeout=10) as again:
                    if ask(again).startswith(b"HTTP/1.1 200 "):
                        break
                assert time.monotonic() < deadline, "no connection served after one closed"
                time.sleep(0.05)
            for sock in held:
                sock.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stderr.close()
