"""Serve the shared record over FHIR R4 REST: read, vread, history, search, transaction.

Standard library only (http.server), JSON only. Shaping responses belongs to
_rest_bodies.py; the record itself to record.py. Request logs carry method, path and
status, never query strings or bodies: identifier values there are patient data.
"""

from __future__ import annotations

import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from adapters.fhir._bundle import ID_RE, TYPE_RE
from adapters.fhir._pages import SearchPages
from adapters.fhir._rest_bodies import capability, history_bundle, outcome, searchset, transaction_response
from adapters.fhir._search import SEARCH_PARAMS, Term, rest_terms
from adapters.fhir._store import SqlRecord
from router.contracts import FhirJson
from router.errors import MessageError, MultipleMatches, TransientError
from router.logging import resource_path

__all__ = ["DEFAULT_MAX_CONNECTIONS", "FhirServer", "RecordFactory", "SearchPages", "make_server"]

RecordFactory = Callable[[], SqlRecord]
"""Opens one record connection; the server calls it when its pool is empty."""

BASE = "/fhir"
"""The FHIR base path on the server."""

_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
_MAX_BODY = 32 * 1024 * 1024  # bytes; a transaction Bundle larger than this is refused
_IGNORED = frozenset({"_format", "_pretty"})  # not search parameters: _format is checked by _acceptable
_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "json", "*/*", "application/*"})
"""Accept ranges and _format values a JSON answer satisfies (`application/json+fhir`: DSTU2's name, still sent by clients)."""
_BODY_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
"""Content-Types a transaction may be POSTed with: FHIR JSON under its R4, plain JSON and DSTU2 names."""
DEFAULT_MAX_CONNECTIONS = 64
"""Connections `helsebro serve` serves at once unless engine.yaml's serve.max_connections says otherwise."""
_MAX_REFUSALS = 64  # connections over the cap waiting for their 503; beyond, closed without one
_REFUSE_SECONDS = 1.0  # how long a refused connection may take to send its request's head
_MAX_COUNT = 1000  # matches one page of a search may hold (`_count`)
_DEFAULT_COUNT = 100  # matches a page holds when the search does not say (`_count`)
_MAX_ALTERNATIVES = 100  # combinations of `a,b` values one search may ask for, and values it may hold: its SQL's size
_PAGE_PARAMS = frozenset({"_getpages", "_after", *_IGNORED})  # what a `[base]?_getpages=` link may carry
_ROUTE_SHAPE = re.compile(rf"{BASE}(/metadata|/{TYPE_RE.pattern}(/_search|/{ID_RE.pattern}(/_history(/{ID_RE.pattern})?)?)?)?/?")
"""Paths the request log shows as they are; any other could hold a patient's identifier."""


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: FhirJson
    headers: tuple[tuple[str, str], ...] = ()


class _Pool:
    """Idle record connections, so each request thread borrows one of its own."""

    def __init__(self, factory: RecordFactory) -> None:
        self._factory = factory
        self._idle: list[SqlRecord] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def record(self) -> Iterator[SqlRecord]:
        """Lend a record; one that failed with a transient error is closed, not kept."""
        with self._lock:
            record = self._idle.pop() if self._idle else None
        if record is None:
            record = self._factory()
        try:
            yield record
        except TransientError:
            record.close()
            raise
        except BaseException:
            self._give_back(record)
            raise
        self._give_back(record)

    def _give_back(self, record: SqlRecord) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(record)
                return
        record.close()

    def close(self) -> None:
        """Close every idle record; records still lent are closed when given back."""
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for record in idle:
            record.close()


class FhirServer(ThreadingHTTPServer):
    """An HTTP server whose request threads share one pool of record connections."""

    daemon_threads = True  # a stop never waits for an idle keep-alive connection

    def __init__(
        self, address: tuple[str, int], record_factory: RecordFactory, log: Any = None, pages: SearchPages | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.pool = _Pool(record_factory)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)  # one per connection a thread is serving
        self._refusals: queue.Queue[socket.socket] = queue.Queue(_MAX_REFUSALS)
        self._refuser: threading.Thread | None = None
        self.pages = pages if pages is not None else SearchPages()  # searches by POST, for their next pages
        self.log = log
        self.draining = False  # set by drain(): answers close their connections
        self._in_flight = 0  # requests between their headers and the end of their answer
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count one request as being answered while the block runs, for drain()."""
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the requests being answered; return whether none is left.

        Call it once serve_forever has ended (shutdown()): no new connection is taken then, and a
        request already read is answered in full and its connection closed, rather than cut when
        the process exits (its daemon threads die with it). An idle keep-alive connection is not
        waited for.
        """
        with self._idle:
            self.draining = True
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def base_url(self) -> str:
        """The FHIR base URL this server answers on, e.g. http://127.0.0.1:8080/fhir."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{BASE}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread of its own, or refuse it 503 when max_connections are being served.

        Why: a thread per connection with no cap let a burst of connections (or idle keep-alive
        ones, each holding its thread up to _Handler.timeout) exhaust the process's threads and
        memory. A refused connection is answered by one refusing thread, so the threads are
        bounded at max_connections + 2; when even its queue is full, the connection is closed.
        """
        if self._slots.acquire(blocking=False):
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._slots.release()
                raise
            return
        if self.log is not None:
            self.log.warning("fhir_connection_refused", reason="max_connections", max_connections=self.max_connections)
        if self._refuser is None:
            self._refuser = threading.Thread(target=self._refuse_forever, name="helsebro-fhir-refuse", daemon=True)
            self._refuser.start()
        try:
            self._refusals.put_nowait(request)
        except queue.Full:
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then give back its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_forever(self) -> None:
        while True:
            connection = self._refusals.get()
            try:
                _refuse(connection)
            except OSError:
                pass  # the client left first: nothing to tell it
            finally:
                self.shutdown_request(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a connection's failure in one line instead of socketserver's traceback on stderr.

        A client that hangs up before its answer (a timeout, a health check) is routine and
        logged not at all; anything else is logged by its exception's name only, as the
        request handler's own failures are.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError) or self.log is None:
            return
        self.log.error("fhir_connection_failed", error=type(exc).__name__)

    def server_close(self) -> None:
        """Stop listening and close the idle record connections."""
        super().server_close()
        self.pool.close()


def make_server(
    record_factory: RecordFactory, host: str = "127.0.0.1", port: int = 8080, *, log: Any = None, pages: SearchPages | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> FhirServer:
    """Bind a FHIR server to *host*:*port* (0 picks a free port); call serve_forever() to run it.

    Args:
        record_factory: opens a record; called once per concurrent request at most.
        log: a bound structlog logger for request lines, or None for silence.
        pages: where searches by POST are kept for their `next` links; SearchPages() unless given.
        max_connections: connections served at once, each on its thread; one more is answered 503.
    """
    return FhirServer((host, port), record_factory, log, pages, max_connections)


def _refuse(connection: socket.socket) -> None:
    """Answer a connection over the cap 503 with Retry-After, after reading its request's head.

    The head is read first (briefly) so that closing does not reset the connection under the
    client's unread answer; the answer closes the connection.
    """
    deadline = time.monotonic() + _REFUSE_SECONDS  # for the whole connection: a client trickling bytes holds it no longer

    def received() -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        connection.settimeout(left)
        return connection.recv(65536)

    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = received()
            if not chunk:
                return
            head += chunk
    except TimeoutError:
        pass
    payload = orjson.dumps(outcome("transient", "the server is serving as many connections as it may; try again shortly"))
    connection.settimeout(_REFUSE_SECONDS)
    connection.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + _CONTENT_TYPE.encode() + b"\r\nContent-Length: "
        + str(len(payload)).encode() + b"\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + payload
    )
    connection.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + _REFUSE_SECONDS
    try:  # what is left of the request (a body): read, so the close is not a reset
        while received():
            pass
    except OSError:  # TimeoutError among them
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FhirServer
    timeout = 120  # seconds an idle keep-alive connection may hold its thread
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's
    # delayed ACK holds the body back ~40 ms per response.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        """Answer as GET would, without the body (a load balancer's health check)."""
        self._handle("GET", head=True)

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        """Drop http.server's own lines: they would print the query string."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer http.server's own refusals with an OperationOutcome, not its HTML page.

        They are an unknown method (OPTIONS, say: 501), a malformed request line or headers
        too long; a FHIR client reads the body as JSON. The diagnostics are the status's
        phrase only: the request line may hold a query string's identifier values.
        """
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        code_ = "not-supported" if code in (HTTPStatus.NOT_IMPLEMENTED, HTTPStatus.METHOD_NOT_ALLOWED) else "structure"
        payload = orjson.dumps(outcome(code_, phrase))
        self.send_response(code)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _handle(self, method: str, *, head: bool = False) -> None:
        with self.server.in_flight():
            self._answer(method, head=head)

    def _answer(self, method: str, *, head: bool) -> None:
        url = urlsplit(self.path)
        if method not in ("GET", "POST"):
            self.close_connection = True  # its body, if any, is never read
        try:
            body = self._body() if method == "POST" else b""
            if not _acceptable(self.headers.get_all("Accept") or (), url.query):
                raise _Reject(_Response(406, outcome("not-supported", "this server answers application/fhir+json only")))
            response = _route(
                self.server.pool, method, url.path.rstrip("/"), url.query, body, self._base(), self.headers.get("Content-Type", ""),
                pages=self.server.pages, lenient=_lenient(self.headers.get_all("Prefer") or ()),
            )
        except _Reject as reject:
            response = reject.response
        except Exception as exc:  # noqa: BLE001  # the HTTP edge: every request gets an OperationOutcome, never a traceback
            if self.server.log is not None:
                self.server.log.error("fhir_request_failed", method=self.command, path=_logged(url.path), error=type(exc).__name__)
            response = _Response(500, outcome("exception", "internal error"))
        if response.status == 200 and _not_modified(self.headers.get("If-None-Match"), response.headers):
            response = _Response(304, {}, response.headers)  # FHIR's conditional read: the client's copy is current
        payload = orjson.dumps(response.body) if response.status != 304 else b""
        if self.server.log is not None:  # before the answer, so whoever got the answer can already see the line
            self.server.log.info("fhir_request", method=self.command, path=_logged(url.path), status=response.status)
        self.send_response(response.status)
        if response.status != 304:  # a 304 has no body, so neither its type nor its length
            self.send_header("Content-Type", _CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.server.draining:  # stopping: this connection's next request would find nobody
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if not head and payload:
            self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):  # chunked: unframed for Content-Length, its chunks would read as the next request
            self.close_connection = True
            raise _Reject(_Response(411, outcome("structure", "send the body with a Content-Length, not chunked")))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True  # the unread body cannot be skipped safely
            raise _Reject(_Response(413 if length > 0 else 400, outcome("too-costly" if length > 0 else "structure", "bad request body length")))
        return self.rfile.read(length)

    def _base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}{BASE}" if host else self.server.base_url


class _Reject(Exception):
    """The request is refused before routing (its body is too large or unframed)."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _route(
    pool: _Pool, method: str, path: str, query: str, body: bytes, base: str, content_type: str = "", *,
    pages: SearchPages | None = None, lenient: bool = False,
) -> _Response:
    if path != BASE and not path.startswith(BASE + "/"):
        return _Response(404, outcome("not-found", "not a FHIR endpoint"))
    parts = path[len(BASE) + 1:].split("/") if path != BASE else []
    if method == "GET" and parts == ["metadata"]:
        return _Response(200, capability(base))
    if method == "POST" and not parts:
        # None given is taken as JSON (curl -d, old clients); one naming another format (XML, text) is refused,
        # as a search by POST refuses a body that is not a form: parsed as JSON it was applied all the same.
        if content_type and content_type.split(";")[0].strip().lower() not in _BODY_TYPES:
            return _Response(415, outcome("not-supported", "a transaction is POSTed as application/fhir+json"))
        return _transaction(pool, body)
    if method == "POST" and len(parts) == 2 and parts[1] == "_search":
        # FHIR: a server that searches by GET SHALL search by POST of a form too (a client keeps
        # identifiers out of URLs, and so out of proxies' logs); its parameters join the URL's.
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return _Response(415, outcome("not-supported", "a search by POST sends application/x-www-form-urlencoded"))
        try:
            form = body.decode()
        except UnicodeDecodeError:
            return _Response(400, outcome("structure", "the search form is not UTF-8"))
        method, parts, query = "GET", parts[:1], "&".join(q for q in (query, form) if q)
        search = _Search(pages) if pages is not None else None
    elif method == "GET" and not parts and pages is not None and "_getpages" in (names := [n for n, _ in parse_qsl(query, keep_blank_values=True)]):
        if not set(names) <= _PAGE_PARAMS or names.count("_getpages") > 1:
            return _Response(400, outcome("not-supported", "a _getpages link takes _after only"))
        page_id = dict(parse_qsl(query, keep_blank_values=True))["_getpages"]
        found = pages.find(page_id)
        if found is None:  # HAPI answers the same: the search is this process's, and for a while only
            return _Response(410, outcome("not-found", "the search this page belongs to is unknown or has expired; search again"))
        parts = [found[0]]
        after = [(n, v) for n, v in parse_qsl(query, keep_blank_values=True) if n == "_after"]
        query, search = "&".join(q for q in (found[1], urlencode(after)) if q), _Search(pages, page_id)
    else:
        search = None
    if method != "GET":  # HTTP: a 405 names what the path does take
        allow = "POST" if not parts or parts[1:] == ["_search"] else "GET, HEAD"
        return _Response(405, outcome("not-supported", "unsupported interaction"), (("Allow", allow),))
    if not parts or not TYPE_RE.fullmatch(parts[0]):
        return _Response(404, outcome("not-found", "unknown path"))
    if len(parts) > 1 and not ID_RE.fullmatch(parts[1]):
        return _Response(404, outcome("not-found", "malformed id"))
    try:
        with pool.record() as record:
            return _read_route(record, parts, query, base, lenient, search)
    except MessageError as exc:
        return _Response(400, outcome(exc.issue_code, exc.reason))
    except TransientError:
        return _Response(503, outcome("transient", "record unavailable"), (("Retry-After", "1"),))


def _read_route(record: SqlRecord, parts: list[str], query: str, base: str, lenient: bool = False, hidden: _Search | None = None) -> _Response:
    if len(parts) == 1:
        return _search(record, parts[0], query, base, lenient, hidden)
    type_, id_ = parts[0], parts[1]
    if len(parts) == 2:
        return _read(record, type_, id_)
    if parts[2] != "_history" or len(parts) > 4:
        return _Response(404, outcome("not-found", "unknown path"))
    versions = record.versions(type_, id_)
    if not versions:
        return _Response(404, outcome("not-found", "resource not found"))
    if len(parts) == 3:
        return _Response(200, history_bundle(type_, id_, versions, base))
    found = next((v for v in versions if str(v.version) == parts[3]), None)
    if found is None:
        return _Response(404, outcome("not-found", "version not found"))
    if found.deleted:
        return _Response(410, outcome("deleted", "version is a deletion"))
    return _Response(200, found.resource, _etag(found.resource))


def _read(record: SqlRecord, type_: str, id_: str) -> _Response:
    resource = record.read(type_, id_)
    if resource is not None:
        return _Response(200, resource, _etag(resource))
    if record.versions(type_, id_):
        return _Response(410, outcome("deleted", "resource is deleted"))
    return _Response(404, outcome("not-found", "resource not found"))


@dataclass(frozen=True, slots=True)
class _Search:
    """A search whose links must not name its values: made by POST, or a page of one (*page_id*)."""

    pages: SearchPages
    page_id: str | None = None


def _search(record: SqlRecord, type_: str, query: str, base: str, lenient: bool = False, hidden: _Search | None = None) -> _Response:
    """Search, one page at a time: a parameter's `a,b` values are ORed, parameters ANDed, matches in id order.

    A page holds `_count` matches (_DEFAULT_COUNT when not asked, never more than _MAX_COUNT),
    so a search that matches the whole record reads one page of it, not every body. A page's
    `next` link names the last id shown (`_after`), so a page never repeats or skips a match
    that is still there; `total` counts every match. *lenient* (the client's `Prefer:
    handling=lenient`) drops parameters the record does not know instead of refusing the search;
    the links then show only the parameters used, as FHIR asks, so a next page is not refused.

    A *hidden* search (made by POST, whose form keeps identifiers out of URLs) has links that name
    none of its values: `self` is `[type]/_search` (a page of it: its own `_getpages` URL) and `next`
    is `[base]?_getpages=<id>&_after=<last id>`, the id naming the parameters kept in SearchPages.
    """
    params: list[tuple[str, list[Term]]] = []
    paging: dict[str, str] = {}
    pairs = parse_qsl(query, keep_blank_values=True)
    if lenient:
        used = [(n, v) for n, v in pairs if n in SEARCH_PARAMS or n in _IGNORED or n in ("_count", "_after")]
        query, pairs = (query if len(used) == len(pairs) else urlencode(used, safe="|,:/")), used
    for name, value in pairs:
        if name in _IGNORED:
            continue
        if "\x00" in name or "\x00" in value:  # PostgreSQL refuses it as a value; no stored value holds one
            return _Response(400, outcome("value", "a search parameter holds a NUL character"))
        if name in ("_count", "_after"):
            if name in paging:
                return _Response(400, outcome("not-supported", "repeated search parameter"))
            paging[name] = value
        else:
            params.append((name, rest_terms(name, value)))
    count_text, after = paging.get("_count"), paging.get("_after")
    count = _DEFAULT_COUNT if count_text is None else int(count_text) if count_text.isdigit() else -1
    if not 0 <= count <= _MAX_COUNT:
        return _Response(400, outcome("value", f"_count must be a whole number from 0 to {_MAX_COUNT}"))
    combinations = 1
    for _, terms in params:
        combinations *= len(terms)
    if combinations > _MAX_ALTERNATIVES:
        return _Response(400, outcome("too-costly", f"more than {_MAX_ALTERNATIVES} combinations of comma-separated values"))
    if sum(len(terms) for _, terms in params) > _MAX_ALTERNATIVES:  # a parameter repeated (ANDed) thousands of times
        return _Response(400, outcome("too-costly", f"more than {_MAX_ALTERNATIVES} search values"))
    total, page = record.search_page(type_, params, after=after, limit=count + 1 if count else 0)  # one more: is there a next page?
    if hidden is None:
        links = [("self", f"{base}/{type_}" + (f"?{query}" if query else ""))]
    elif hidden.page_id is None:
        links = [("self", f"{base}/{type_}/_search")]
    else:
        shown = [("_getpages", hidden.page_id)] + ([("_after", after)] if after is not None else [])
        links = [("self", f"{base}?{urlencode(shown)}")]
    if len(page) > count:
        page = page[:count]
        kept = [(n, v) for n, v in pairs if n != "_after"]
        last = ("_after", str(page[-1]["id"]))
        if hidden is None:
            links.append(("next", f"{base}/{type_}?{urlencode([*kept, last], safe='|,:/')}"))
        else:
            page_id = hidden.page_id or hidden.pages.keep(type_, urlencode(kept, safe="|,:/"))
            links.append(("next", f"{base}?{urlencode([('_getpages', page_id), last])}"))
    return _Response(200, searchset(page, base, total=total, links=links))


def _transaction(pool: _Pool, body: bytes) -> _Response:
    try:
        bundle = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _Response(400, outcome("structure", "body is not JSON"))
    try:
        with pool.record() as record:
            result = record.apply(bundle)
    except RecursionError:  # orjson takes 1024 levels, the record's walks of the Bundle fewer: the client's error, not ours
        return _Response(400, outcome("structure", "body nests too deeply"))
    except MultipleMatches as exc:  # FHIR: a conditional create, update or patch that matches several is 412
        return _Response(412, outcome("multiple-matches", exc.reason, exc.location))
    except MessageError as exc:
        return _Response(400, outcome(exc.issue_code, exc.reason, exc.location))
    except TransientError:
        return _Response(503, outcome("transient", "record unavailable"), (("Retry-After", "1"),))
    return _Response(200, transaction_response(result))


def _acceptable(accept: Iterable[str], query: str) -> bool:
    """Return whether a JSON answer is one the client takes: `_format`, when given, decides; else Accept does.

    Why: this face writes JSON only; a client that asked for XML alone got JSON and failed parsing
    it. It gets 406 now. No Accept header, or a range with `*`, takes JSON.
    """
    formats = [v.strip().lower() for n, v in parse_qsl(query, keep_blank_values=True) if n == "_format"]
    if formats:
        return all(f.split(";")[0].strip() in _JSON_TYPES for f in formats)
    ranges = [r for header in accept for r in header.split(",") if r.strip()]
    if not ranges:
        return True
    for range_ in ranges:
        media, *params = (p.strip().lower() for p in range_.split(";"))
        weights = [p.partition("=")[2] for p in params if p.partition("=")[0].strip() == "q"]
        try:
            refused = bool(weights) and float(weights[0]) <= 0
        except ValueError:
            refused = False
        if media in _JSON_TYPES and not refused:
            return True
    return False


def _lenient(prefer: Iterable[str]) -> bool:
    """Return whether the Prefer headers ask for `handling=lenient` (FHIR R4 §3.1.1.5.6); strict otherwise."""
    return any(p.strip().lower().replace(" ", "") == "handling=lenient" for header in prefer for p in header.split(","))


def _not_modified(if_none_match: str | None, headers: tuple[tuple[str, str], ...]) -> bool:
    """Return whether *if_none_match* names the answer's ETag (weak comparison, RFC 9110 §13.1.2) or is `*`.

    Only a read and a vread carry an ETag; a search answers in full whatever the header says.
    """
    etag = next((v for n, v in headers if n == "ETag"), None)
    if not if_none_match or etag is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def _logged(path: str) -> str:
    """Return *path* for the request log when it has the shape of a FHIR route, else its base and `…`.

    The query string is never logged (its identifiers are patient data); a path that routes
    nowhere may hold one all the same (an escaped `?`, a `;`), so it is not logged either.
    """
    return resource_path(path) if _ROUTE_SHAPE.fullmatch(path) else BASE + "/…"


def _etag(resource: FhirJson) -> tuple[tuple[str, str], ...]:
    """Return a read's ETag (its version) and Last-Modified (its meta.lastUpdated), as FHIR's read answers them."""
    meta = resource.get("meta", {})
    headers = []
    if meta.get("versionId"):
        headers.append(("ETag", f'W/"{meta["versionId"]}"'))
    try:
        updated = datetime.fromisoformat(str(meta.get("lastUpdated")).replace("Z", "+00:00"))
    except ValueError:
        return tuple(headers)
    if updated.tzinfo is not None:
        headers.append(("Last-Modified", format_datetime(updated.astimezone(UTC), usegmt=True)))
    return tuple(headers)
