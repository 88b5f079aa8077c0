"""Tests for adapters/fhir/client.py: a FHIR destination, over real HTTP.

The happy path runs against the project's own FHIR server. Faults come from a small
stdlib server that answers from a script and forwards everything else to that server.
Over 400 lines because that fault server (~110 lines) lives here; move it to a shared
test module when a second adapter's tests need it.
"""

from __future__ import annotations

import base64
import http.client
import random
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from adapters.fhir._auth import BearerAuth, NoAuth, OAuth2ClientCredentials
from adapters.fhir.client import FhirClient, FhirClientConfig
from adapters.fhir.record import open_record
from adapters.fhir.rest import make_server
from router.errors import ConfigError, RecordUnavailable, Refused
from router.settings import Settings

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
FNR_VALUE = "01015000232"  # synthetic
PATIENT = "0d9a6c2e-1f3b-4c55-9a51-3f0e2b7c9a01"
ENCOUNTER = "5b1c7e44-8d2a-4f0e-b3a9-6c2d1e0f4a02"
TOKEN = "t0ken-that-must-never-be-logged"

EXAMPLE_YAML = """
base_url: https://fhir.example.no/fhir
auth:
  type: oauth2
  token_url: https://auth.example.no/connect/token
  client_id: helsebro
  client_secret_env: HELSEBRO_FHIR_CLIENT_SECRET
  scope: system/*.write system/*.read
timeout_seconds: 10
max_attempts: 4
backoff_base_seconds: 0.5
backoff_max_seconds: 30
verify_tls: true
"""


def transaction(family="Nordmann", subject=f"urn:uuid:{PATIENT}"):
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{PATIENT}",
                "resource": {"resourceType": "Patient", "id": PATIENT, "identifier": [{"system": FNR, "value": FNR_VALUE}], "name": [{"family": family}]},
                "request": {"method": "PUT", "url": f"Patient?identifier={FNR}|{FNR_VALUE}"},
            },
            {
                "fullUrl": f"urn:uuid:{ENCOUNTER}",
                "resource": {"resourceType": "Encounter", "id": ENCOUNTER, "status": "finished", "subject": {"reference": subject}},
                "request": {"method": "PUT", "url": f"Encounter/{ENCOUNTER}"},
            },
        ],
    }


def outcome(diagnostics, code="invalid"):
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics, "expression": ["Patient.identifier[0]"]}]}


@dataclass
class Canned:
    """One scripted answer: a status, a JSON or raw body, headers; or hang until teardown."""

    status: int = 200
    body: object = field(default_factory=dict)
    headers: tuple = ()
    hang: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


class FaultServer(ThreadingHTTPServer):
    """Answers from `script` first, serves `/token`, and forwards the rest to `upstream`."""

    def __init__(self, upstream=None):
        super().__init__(("127.0.0.1", 0), _FaultHandler)
        self.upstream = upstream
        self.script = []
        self.seen = []
        self.release = threading.Event()
        self.token_status = 200
        self.token_prefix = "tok-"
        self.expires_in = 3600
        self.tokens = 0

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/fhir"

    def fhir_requests(self):
        return [s for s in self.seen if s.path != "/token"]


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: FaultServer

    def do_GET(self):
        self._handle()

    do_POST = do_GET

    def log_message(self, format, *args):
        """Keep the test output quiet."""

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        srv.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        if self.path == "/token":
            srv.tokens += 1
            token = {"access_token": f"{srv.token_prefix}{srv.tokens}", "token_type": "Bearer", "expires_in": srv.expires_in}
            return self._answer(srv.token_status, orjson.dumps(token), "application/json")
        canned = srv.script.pop(0) if srv.script else None
        if canned is None:
            return self._forward(body)
        if canned.hang:
            srv.release.wait(10)  # the client times out meanwhile; teardown releases us
            self.close_connection = True
            return None
        payload = canned.body if isinstance(canned.body, bytes) else orjson.dumps(canned.body)
        return self._answer(canned.status, payload, "application/fhir+json", canned.headers)

    def _forward(self, body):
        host, port = self.server.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=5)
        try:
            upstream.request(self.command, self.path, body=body or None, headers={"Content-Type": "application/fhir+json"})
            answer = upstream.getresponse()
            self._answer(answer.status, answer.read(), answer.getheader("Content-Type"))
        finally:
            upstream.close()

    def _answer(self, status, payload, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    return thread


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join()


class Ceiling(random.Random):
    """Jitter that always draws the top of its range, so backoff ceilings become visible."""

    def uniform(self, a, b):
        return b


class Log:
    """Collects the client's log events."""

    def __init__(self):
        self.events = []

    def info(self, event, **fields):
        self.events.append((event, fields))

    warning = info


@pytest.fixture
def fhir_server(tmp_path):
    """The project's FHIR server on a free port, over SQLite in tmp_path."""
    settings = Settings(record_url=f"sqlite:///{tmp_path}/record.sqlite3", data_dir=tmp_path / "data")
    server = make_server(lambda: open_record(settings), "127.0.0.1", 0)
    thread = _serve(server)
    yield server
    _stop(server, thread)


@pytest.fixture
def faults(fhir_server):
    """A fault-injecting server in front of the project's FHIR server."""
    server = FaultServer(upstream=fhir_server.server_address[:2])
    thread = _serve(server)
    yield server
    server.release.set()
    _stop(server, thread)


@pytest.fixture
def closed_port():
    """A port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def log():
    return Log()


@pytest.fixture
def make_client(sleeps, log):
    """Build clients the way production does, from the config model; closes them afterwards."""
    made = []

    def make(base_url, *, rng=None, **fields):
        config = FhirClientConfig.model_validate({"base_url": base_url, "backoff_base_seconds": 0.5, "backoff_max_seconds": 4, **fields})
        client = FhirClient(config, sleep=sleeps.append, rng=rng or Ceiling(), log=log)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class TestFhirClientConfig:
    def test_yaml_example(self):
        """The documented YAML destination block validates."""
        config = FhirClientConfig.model_validate(yaml.safe_load(EXAMPLE_YAML))
        assert isinstance(config.auth, OAuth2ClientCredentials) and config.auth.client_auth == "basic"

    @pytest.mark.parametrize("bad", [
        {"base_url": "https://x/fhir", "retries": 3},
        {"base_url": "ftp://x/fhir"},
        {"base_url": "https://x/fhir?_format=json"},
        {"base_url": "https://x/fhir", "max_attempts": 0},
        {"base_url": "https://x/fhir", "backoff_base_seconds": 5, "backoff_max_seconds": 1},
        {"base_url": "https://x/fhir", "verify_tls": False, "ca_file": "/etc/ca.pem"},
        {"base_url": "https://x/fhir", "auth": {"type": "bearer"}},
        {"base_url": "https://x/fhir", "auth": {"type": "bearer", "token": "a", "token_env": "B"}},
        {"base_url": "https://x/fhir", "auth": {"type": "kerberos"}},
    ])
    def test_rejects(self, bad):
        """Unknown keys, out-of-range values and contradictory settings are errors."""
        with pytest.raises(ValidationError):
            FhirClientConfig.model_validate(bad)

    @pytest.mark.parametrize("model", [FhirClientConfig, NoAuth, BearerAuth, OAuth2ClientCredentials])
    def test_fields_documented(self, model: type[BaseModel]):
        """Every field carries a description, and the JSON Schema generates."""
        assert all(f.description for f in model.model_fields.values())
        assert model.model_json_schema()["additionalProperties"] is False

    def test_token_not_printed(self):
        """A literal bearer token never shows in the config's repr."""
        config = FhirClientConfig.model_validate({"base_url": "https://x/fhir", "auth": {"type": "bearer", "token": TOKEN}})
        assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())


class TestFhirClient:
    def test_apply(self, fhir_server, make_client):
        """A transaction posts to the base and maps 201 to created and 200 to updated or deleted."""
        client = make_client(fhir_server.base_url)
        first = client.apply(transaction())
        again = client.apply(transaction(family="Hansen"))
        gone = client.apply({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": f"Encounter/{ENCOUNTER}"}}]})
        assert [(e.resource_type, e.id, e.version, e.outcome) for e in first.entries] == [("Patient", PATIENT, 1, "created"), ("Encounter", ENCOUNTER, 1, "created")]
        assert [(e.version, e.outcome) for e in again.entries] == [(2, "updated"), (1, "updated")]
        assert [(e.version, e.outcome) for e in gone.entries] == [(2, "deleted")]

    def test_read_history_search(self, fhir_server, make_client):
        """read, history and search return what the server holds; absent reads are None."""
        client = make_client(fhir_server.base_url)
        client.apply(transaction())
        client.apply(transaction(family="Hansen"))
        assert client.read("Patient", PATIENT)["name"] == [{"family": "Hansen"}]
        assert client.read("Patient", "absent") is None and client.read("Patient", "../metadata") is None
        assert [v["meta"]["versionId"] for v in client.history("Patient", PATIENT)] == ["2", "1"]
        assert client.history("Patient", "absent") == []
        assert [p["id"] for p in client.search("Patient", {"identifier": f"{FNR}|{FNR_VALUE}"})] == [PATIENT]
        assert [e["id"] for e in client.search("Encounter", {"subject": f"Patient/{PATIENT}"})] == [ENCOUNTER]

    def test_check(self, fhir_server, make_client, closed_port, sleeps):
        """check() passes on a live R4 server and raises RecordUnavailable, without retrying, when it is down."""
        make_client(fhir_server.base_url).check()
        with pytest.raises(RecordUnavailable):
            make_client(f"http://127.0.0.1:{closed_port}/fhir").check()
        assert sleeps == []

    def test_check_other_version(self, faults, make_client):
        """check() refuses a server that speaks another FHIR version."""
        faults.script.append(Canned(body={"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2"}))
        with pytest.raises(ConfigError):
            make_client(faults.base_url).check()

    def test_retry_after_503(self, faults, make_client, sleeps):
        """503 with Retry-After: 0 is retried after exactly that wait, then succeeds."""
        faults.script += [Canned(503, outcome("busy", "transient"), (("Retry-After", "0"),))] * 2
        result = make_client(faults.base_url).apply(transaction())
        assert [e.outcome for e in result.entries] == ["created", "created"]
        assert sleeps == [0.0, 0.0] and len(faults.fhir_requests()) == 3

    def test_retry_after_429(self, faults, make_client, sleeps):
        """429 waits for Retry-After seconds, capped at backoff_max_seconds."""
        faults.script += [Canned(429, headers=(("Retry-After", "3"),)), Canned(429, headers=(("Retry-After", "9999"),))]
        make_client(faults.base_url).apply(transaction())
        assert sleeps == [3.0, 4.0]

    def test_a_conflict_is_retried(self, faults, make_client, sleeps):
        """409 (another client changed the resource meanwhile) is retried like a 503, not refused at once."""
        faults.script.append(Canned(409, outcome("version conflict", "conflict")))
        result = make_client(faults.base_url).apply(transaction())
        assert [e.outcome for e in result.entries] == ["created", "created"]
        assert len(sleeps) == 1 and len(faults.fhir_requests()) == 2

    def test_retry_after_date(self, faults, make_client, sleeps):
        """Retry-After given as an HTTP-date waits until that moment."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
        faults.script.append(Canned(503, headers=(("Retry-After", when),)))
        make_client(faults.base_url, backoff_max_seconds=60).apply(transaction())
        assert len(sleeps) == 1 and 25 < sleeps[0] <= 30

    @pytest.mark.parametrize("value", ["soon", "-5", "1.5", "\u00b2"])
    def test_retry_after_unreadable(self, faults, make_client, sleeps, value):
        """A Retry-After the client cannot read falls back to the backoff: not a retry at once, not an error.

        "\u00b2" (a latin-1 byte a server may send) passes str.isdigit but not float(): it raised ValueError,
        which the destination worker dead-letters as an internal error instead of retrying the 503.
        """
        faults.script.append(Canned(503, headers=(("Retry-After", value),)))
        make_client(faults.base_url).apply(transaction())
        assert sleeps == [0.5] and len(faults.fhir_requests()) == 2

    def test_backoff_grows(self, make_client, closed_port, sleeps):
        """A refused connection is retried with a doubling ceiling, capped, then RecordUnavailable from httpx's error."""
        client = make_client(f"http://127.0.0.1:{closed_port}/fhir", max_attempts=5, backoff_max_seconds=1.5)
        with pytest.raises(RecordUnavailable) as caught:
            client.apply(transaction())
        assert sleeps == [0.5, 1.0, 1.5, 1.5]
        assert isinstance(caught.value.__cause__, httpx.ConnectError)

    def test_jitter(self, make_client, closed_port, sleeps):
        """With real jitter each wait is drawn between 0 and its ceiling."""
        client = make_client(f"http://127.0.0.1:{closed_port}/fhir", max_attempts=4, rng=random.Random(7))
        with pytest.raises(RecordUnavailable):
            client.read("Patient", PATIENT)
        assert len(sleeps) == 3 and all(0 <= d <= cap for d, cap in zip(sleeps, [0.5, 1.0, 2.0]))

    def test_5xx_exhausted(self, faults, make_client, sleeps):
        """A server that keeps failing raises RecordUnavailable after max_attempts."""
        faults.script += [Canned(500, outcome("boom", "exception"))] * 3
        with pytest.raises(RecordUnavailable, match="HTTP 500"):
            make_client(faults.base_url, max_attempts=3).apply(transaction())
        assert sleeps == [0.5, 1.0] and len(faults.fhir_requests()) == 3

    def test_timeout(self, faults, make_client, sleeps):
        """A server slower than timeout_seconds is retried, then RecordUnavailable."""
        faults.script += [Canned(hang=True)] * 3
        with pytest.raises(RecordUnavailable, match="Timeout"):
            make_client(faults.base_url, timeout_seconds=0.1, max_attempts=3).apply(transaction())
        assert len(sleeps) == 2 and len(faults.fhir_requests()) == 3

    def test_refused(self, faults, make_client, sleeps):
        """A 400 is Refused at once: the reason is the status and issue code only; the server's words, which may
        quote the patient, are the detail (fnr masked, cut short), which only the dead letter keeps."""
        faults.script.append(Canned(400, outcome(f"Patient Ola Nordmann: identifier {FNR_VALUE} is not valid. " + "x" * 400)))
        with pytest.raises(Refused) as caught:
            make_client(faults.base_url).apply(transaction())
        reason, detail = caught.value.reason, caught.value.detail
        assert reason == "destination refused with HTTP 400: invalid"
        assert detail is not None and detail.startswith("Patient Ola Nordmann: identifier *********** is not valid")
        assert len(detail) <= 200 and FNR_VALUE not in detail and caught.value.location == "Patient.identifier[0]"
        assert sleeps == [] and len(faults.fhir_requests()) == 1

    def test_refused_keeps_no_free_text_in_code_or_location(self, faults, make_client, sleeps):
        """A server that puts words in the issue code or a value in the expression gets neither into the reason or location."""
        bad = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "Ola Nordmann is unknown",
                                                              "expression": [f"Patient.identifier.where(value='{FNR_VALUE}')"]}]}
        faults.script.append(Canned(422, bad))
        with pytest.raises(Refused) as caught:
            make_client(faults.base_url).apply(transaction())
        assert caught.value.reason == "destination refused with HTTP 422" and caught.value.location is None

    def test_refused_by_record(self, fhir_server, make_client):
        """The project's server refusing a dangling reference becomes Refused without the request body."""
        with pytest.raises(Refused) as caught:
            make_client(fhir_server.base_url).apply(transaction(subject="urn:uuid:00000000-0000-4000-8000-000000000000"))
        assert "HTTP 400" in caught.value.reason and FNR_VALUE not in caught.value.reason and "Nordmann" not in caught.value.reason

    def test_redirect(self, faults, make_client, sleeps):
        """A redirect is not followed and not retried: the base URL is wrong, not the message."""
        faults.script.append(Canned(301, headers=(("Location", "https://fhir.example.no/fhir"),)))
        with pytest.raises(RecordUnavailable, match="redirected"):
            make_client(faults.base_url).apply(transaction())
        assert sleeps == [] and len(faults.fhir_requests()) == 1

    def test_not_json(self, faults, make_client):
        """A 200 that is not JSON (a proxy's HTML page) is RecordUnavailable."""
        faults.script.append(Canned(200, b"<html>gateway</html>"))
        with pytest.raises(RecordUnavailable, match="without JSON"):
            make_client(faults.base_url).apply(transaction())

    def test_response_mismatch(self, faults, make_client):
        """A transaction-response with the wrong number of entries is RecordUnavailable."""
        faults.script.append(Canned(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": []}))
        with pytest.raises(RecordUnavailable, match="transaction-response"):
            make_client(faults.base_url).apply(transaction())

    def test_hapi_unchanged(self, faults, make_client):
        """A 200 whose outcome carries HAPI's no-change code maps to unchanged; a bare ETag gives the version."""
        said = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "details": {"coding": [{"code": "SUCCESSFUL_UPDATE_NO_CHANGE"}]}}]}
        entries = [{"response": {"status": "200 OK", "location": f"{faults.base_url}/Patient/{PATIENT}", "etag": "3", "outcome": said}},
                   {"response": {"status": "200", "location": f"Encounter/{ENCOUNTER}/_history/4"}}]
        faults.script.append(Canned(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}))
        result = make_client(faults.base_url).apply(transaction())
        assert [(e.resource_type, e.version, e.outcome) for e in result.entries] == [("Patient", 3, "unchanged"), ("Encounter", 4, "updated")]
        assert faults.fhir_requests()[0].headers["Content-Type"] == "application/fhir+json"

    def test_entry_refused_reason_holds_no_server_text(self, faults, make_client):
        """A refused transaction entry's reason (logged by the worker) carries its status code, never the server's words in its place."""
        entries = [{"response": {"status": "Ola Nordmann er ukjent"}}, {"response": {"status": "201 Created"}}]
        faults.script.append(Canned(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}))
        with pytest.raises(Refused) as caught:
            make_client(faults.base_url).apply(transaction())
        assert caught.value.reason == "destination refused a transaction entry with HTTP (no status code)"
        faults.script.append(Canned(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": {"status": "422 Unprocessable"}}] * 2}))
        with pytest.raises(Refused, match=r"HTTP 422$"):
            make_client(faults.base_url).apply(transaction())

    def test_search_pages(self, faults, make_client, log):
        """search follows next links up to max_search_pages and logs when it stops early."""
        def page(n):
            entry = [{"resource": {"resourceType": "Patient", "id": f"p{n}"}, "search": {"mode": "match"}},
                     {"resource": {"resourceType": "Organization", "id": f"o{n}"}, "search": {"mode": "include"}}]
            return Canned(200, {"resourceType": "Bundle", "type": "searchset", "entry": entry, "link": [{"relation": "next", "url": f"{faults.base_url}?page={n + 1}"}]})
        faults.script += [page(n) for n in range(5)]
        found = make_client(faults.base_url, max_search_pages=3).search("Patient", {"identifier": f"{FNR}|{FNR_VALUE}"})
        assert [p["id"] for p in found] == ["p0", "p1", "p2"]
        assert [s.path for s in faults.fhir_requests()][1:] == ["/fhir?page=1", "/fhir?page=2"]
        assert ("fhir_pages_truncated", {"path": "/fhir/Patient", "pages": 3}) in log.events

    def test_next_elsewhere(self, faults, make_client):
        """A next link to another host is not followed, so credentials stay with the destination."""
        faults.script.append(Canned(200, {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": "https://elsewhere.example/fhir?page=2"}]}))
        with pytest.raises(RecordUnavailable, match="another host"):
            make_client(faults.base_url).search("Patient", {})

    def test_logs_without_phi(self, fhir_server, make_client, log):
        """fhir_request lines carry method, path, status, attempt and ms, never the query string."""
        client = make_client(fhir_server.base_url)
        client.search("Patient", {"identifier": f"{FNR}|{FNR_VALUE}"})
        event, fields = log.events[-1]
        assert event == "fhir_request" and set(fields) == {"method", "path", "status", "attempt", "ms"}
        assert (fields["method"], fields["path"], fields["status"], fields["attempt"]) == ("GET", "/fhir/Patient", 200, 1)
        assert FNR_VALUE not in repr(log.events)

    def test_logs_without_resource_ids(self, fhir_server, make_client, log):
        """A read's line shows `Patient/{id}`: the id is derived from the patient's fødselsnummer."""
        client = make_client(fhir_server.base_url)
        client.apply(transaction())
        client.read("Patient", PATIENT)
        assert log.events[-1][1]["path"] == "/fhir/Patient/{id}"
        assert PATIENT not in repr(log.events)

    def test_closed(self, fhir_server, make_client):
        """A closed client refuses further calls with RecordUnavailable."""
        client = make_client(fhir_server.base_url)
        client.close()
        with pytest.raises(RecordUnavailable):
            client.read("Patient", PATIENT)

    def test_ca_file_missing(self, tmp_path):
        """A ca_file that cannot be loaded refuses construction with ConfigError."""
        config = FhirClientConfig(base_url="https://fhir.example.no/fhir", ca_file=tmp_path / "absent.pem")
        with pytest.raises(ConfigError):
            FhirClient(config)


class TestBearerAuth:
    def test_token(self, faults, make_client, log):
        """A literal token reaches the server as a Bearer header and never the logs."""
        make_client(faults.base_url, auth={"type": "bearer", "token": TOKEN}).apply(transaction())
        assert faults.fhir_requests()[0].headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in repr(log.events)

    def test_token_env(self, faults, make_client, monkeypatch):
        """token_env reads the token from the environment when the client is built."""
        monkeypatch.setenv("HELSEBRO_TEST_TOKEN", TOKEN)
        make_client(faults.base_url, auth={"type": "bearer", "token_env": "HELSEBRO_TEST_TOKEN"}).read("Patient", PATIENT)
        assert faults.fhir_requests()[0].headers["Authorization"] == f"Bearer {TOKEN}"

    def test_token_env_unset(self, make_client, monkeypatch):
        """An unset token_env refuses construction with ConfigError."""
        monkeypatch.delenv("HELSEBRO_TEST_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="HELSEBRO_TEST_TOKEN"):
            make_client("https://fhir.example.no/fhir", auth={"type": "bearer", "token_env": "HELSEBRO_TEST_TOKEN"})

    @pytest.mark.parametrize("token", ["\u201ct0ken\u201d", "t\u00f8ken", "t0ken\n", "t0 ken"])
    def test_token_no_header_can_carry(self, make_client, monkeypatch, token):
        """A token with a typographic quote, a non-ASCII letter or whitespace refuses construction with ConfigError.

        Before, a non-ASCII one raised UnicodeEncodeError from every call, which the destination worker
        dead-letters as an internal error: every message lost to the DLQ for a config mistake.
        """
        monkeypatch.setenv("HELSEBRO_TEST_TOKEN", token)
        with pytest.raises(ConfigError, match="header") as caught:
            make_client("https://fhir.example.no/fhir", auth={"type": "bearer", "token_env": "HELSEBRO_TEST_TOKEN"})
        assert token not in str(caught.value)

    def test_unauthorized(self, faults, make_client, sleeps):
        """A 401 with a fixed token is RecordUnavailable at once: the credentials, not the message, are wrong."""
        faults.script.append(Canned(401, outcome("no", "login")))
        with pytest.raises(RecordUnavailable, match="401"):
            make_client(faults.base_url, auth={"type": "bearer", "token": TOKEN}).apply(transaction())
        assert sleeps == [] and len(faults.fhir_requests()) == 1


class TestOAuth2ClientCredentials:
    @pytest.fixture
    def oauth(self, faults, make_client, monkeypatch):
        """Build a client whose token endpoint is the fault server's /token."""
        monkeypatch.setenv("HELSEBRO_TEST_SECRET", "s3cret")

        def make(**auth):
            block = {"type": "oauth2", "token_url": f"http://127.0.0.1:{faults.server_address[1]}/token", "client_id": "helsebro",
                     "client_secret_env": "HELSEBRO_TEST_SECRET", "scope": "system/*.write", **auth}
            return make_client(faults.base_url, auth=block)
        return make

    def test_cached(self, faults, oauth):
        """One token serves several calls, fetched with Basic client auth and the scope."""
        client = oauth()
        client.check()
        client.apply(transaction())
        client.read("Patient", PATIENT)
        token_requests = [s for s in faults.seen if s.path == "/token"]
        assert faults.tokens == 1 and {s.headers["Authorization"] for s in faults.fhir_requests()} == {"Bearer tok-1"}
        assert token_requests[0].headers["Authorization"] == "Basic " + base64.b64encode(b"helsebro:s3cret").decode()
        assert parse_qs(token_requests[0].body.decode()) == {"grant_type": ["client_credentials"], "scope": ["system/*.write"]}

    def test_client_auth_post(self, faults, oauth):
        """client_auth post sends the id and secret as form fields instead of Basic."""
        oauth(client_auth="post").read("Patient", PATIENT)
        token = next(s for s in faults.seen if s.path == "/token")
        assert "Authorization" not in token.headers and parse_qs(token.body.decode())["client_secret"] == ["s3cret"]

    def test_expiry(self, faults, oauth):
        """A token within refresh_margin_seconds of expires_in is replaced before the next call."""
        faults.expires_in = 10
        client = oauth(refresh_margin_seconds=30)
        client.read("Patient", PATIENT)
        client.read("Patient", PATIENT)
        assert faults.tokens == 2

    def test_refresh_on_401(self, faults, oauth, sleeps):
        """A 401 fetches a new token once and retries at once; a second 401 is RecordUnavailable."""
        client = oauth()
        faults.script.append(Canned(401))
        assert [e.outcome for e in client.apply(transaction()).entries] == ["created", "created"]
        assert faults.tokens == 2 and faults.fhir_requests()[-1].headers["Authorization"] == "Bearer tok-2"
        faults.script += [Canned(401), Canned(401)]
        with pytest.raises(RecordUnavailable, match="401"):
            client.read("Patient", PATIENT)
        assert faults.tokens == 3 and sleeps == []

    def test_token_refused(self, faults, oauth):
        """A token endpoint that refuses the client is RecordUnavailable, and no FHIR request is sent."""
        faults.token_status = 401
        with pytest.raises(RecordUnavailable, match="token endpoint"):
            oauth().apply(transaction())
        assert faults.fhir_requests() == []

    def test_token_no_header_can_carry(self, faults, oauth):
        """An access_token with a non-ASCII character is RecordUnavailable (messages wait), never UnicodeEncodeError."""
        faults.token_prefix = "t\u00f8k-"
        with pytest.raises(RecordUnavailable, match="token endpoint"):
            oauth().apply(transaction())
        assert faults.fhir_requests() == []

    def test_secret_unset(self, faults, oauth, monkeypatch):
        """An unset client_secret_env refuses construction with ConfigError."""
        monkeypatch.delenv("HELSEBRO_TEST_SECRET")
        with pytest.raises(ConfigError, match="HELSEBRO_TEST_SECRET"):
            oauth()
