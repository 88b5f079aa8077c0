"""Write to an external FHIR R4 server: post transaction Bundles, read, search, history.

The client implements router.contracts.Record over HTTP, with retries, backoff and
authentication (_auth.py). Deciding when to retry a whole message belongs to settle.
Retrying a transaction is safe because the engine's Bundles are idempotent: every
entry is a PUT by id or a conditional update, so applying one twice changes nothing.
Logs carry method, path, status, attempt and milliseconds; never a query string
(identifier values there are patient data), a body or a token.
"""

from __future__ import annotations

import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from pydantic import Field, model_validator

from adapters.fhir._auth import AuthConfig, NoAuth, make_authenticator
from adapters.fhir._client_bodies import applied, entry_version, refused, retry_after
from router.config_model import ConfigBase
from router.contracts import ApplyResult, FhirJson
from router.errors import ConfigError, InvalidContent, RecordUnavailable, Refused
from router.logging import resource_path

__all__ = ["FhirClient", "FhirClientConfig"]

_RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
"""408 timeout, 429 too many requests, and 409 conflict: a FHIR server answers 409 when another client
changed the resource while it applied ours (HAPI's concurrent-modification error); the same transaction
a moment later applies. Refused at once, the message was dead-lettered for a race it did not cause. A
409 that lasts (a delete a reference still holds up) ends as any retried failure does, after the attempts."""
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id datatype
_FHIR_JSON = "application/fhir+json"


class FhirClientConfig(ConfigBase):
    """A `destination` block of kind `fhir`: an external FHIR R4 server the engine writes to.

    ConfigBase, as routes.yaml's other blocks: on a plain BaseModel `timeout_seconds: "30"`, `.nan`
    and `true` (one second) loaded, where the retry block beside it refused them.
    """

    base_url: str = Field(
        pattern=r"^https?://[^\s?#]+$", max_length=2048,
        description="The server's FHIR R4 base URL, without a query string; transactions are posted to it.",
        examples=["https://fhir.example.no/fhir"],
    )
    auth: AuthConfig = Field(default_factory=NoAuth, description="How requests authenticate: none, bearer or oauth2.")
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description="Seconds to wait to connect, and then for each read of the answer. Too short retries "
        "transactions a slow server was still applying; too long holds a worker on a dead server.",
    )
    max_attempts: int = Field(
        default=4, ge=1, le=20,
        description="Attempts per call, the first included, before the message is handed back to the engine "
        "to retry later. 1 never retries within a call.",
    )
    backoff_base_seconds: float = Field(
        default=0.5, ge=0, le=60,
        description="Backoff ceiling, in seconds, before the second attempt; it doubles per attempt, and the "
        "wait is drawn uniformly below it (full jitter).",
    )
    backoff_max_seconds: float = Field(
        default=30.0, ge=0, le=600,
        description="Longest wait, in seconds, between two attempts, a server's Retry-After included.",
    )
    max_search_pages: int = Field(
        default=20, ge=1, le=1000,
        description="Pages of a search or history followed through `next` links; later pages are not read "
        "and a warning is logged.",
    )
    verify_tls: bool = Field(default=True, description="Check the server's TLS certificate. Turn off only for a test server.")
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA certificates to trust instead of the system's, for a server with a private CA.",
        examples=["/etc/helsebro/ca/norsk-helsenett.pem"],
    )

    @model_validator(mode="after")
    def _consistent(self) -> FhirClientConfig:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must not be below backoff_base_seconds")
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file has no effect with verify_tls false")
        return self


class _Log(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class FhirClient:
    """A Record on a remote FHIR server; thread-safe, one HTTP connection pool per client."""

    def __init__(
        self,
        config: FhirClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        log: _Log | None = None,
    ) -> None:
        """Build the client; no connection is opened until the first call.

        Args:
            transport: an httpx transport to send through (tests, proxies); None for the network.
            sleep: waits between attempts.
            rng: draws the jittered backoff.
            log: a bound structlog logger, or None for silence.

        Raises:
            ConfigError: a secret's environment variable is unset, or ca_file cannot be loaded.
        """
        self._config = config
        self._base = config.base_url.rstrip("/")
        self._origin = httpx.URL(self._base).copy_with(path="/", query=None, fragment=None)
        self._transport = transport
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = log
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._closed = False
        # The one read at construction: a missing CA file must refuse the start,
        # not surface later as a failure of whichever message came first.
        self._tls = self._verify()
        self._auth = make_authenticator(config.auth, self._client)

    # --- the Record protocol -------------------------------------------------

    def apply(self, bundle: FhirJson) -> ApplyResult:
        """Post a transaction Bundle and read what each entry did from the transaction-response.

        A 201 is "created". A 200 is "updated", unless the request was a DELETE
        ("deleted") or the server says it did nothing (HAPI's storage response codes):
        plain FHIR gives no way to tell an update from a write that changed nothing.
        A version that is not a number becomes 0. Reading the response is _client_bodies.py's job.

        Raises:
            Refused: the server rejected the Bundle (4xx); never worth retrying.
            RecordUnavailable: the server is unreachable, failing or overloaded.
        """
        body = self._json(self._send("POST", self._base, content=orjson.dumps(bundle)))
        requests = [e.get("request") or {} for e in bundle.get("entry") or []]
        entries = body.get("entry")
        if body.get("resourceType") != "Bundle" or not isinstance(entries, list) or len(entries) != len(requests):
            raise RecordUnavailable("destination answered a transaction without a matching transaction-response")
        return ApplyResult(tuple(applied(e, r) for e, r in zip(entries, requests, strict=True)))

    def read(self, resource_type: str, id: str) -> FhirJson | None:
        """Return the current version, or None when absent, deleted or not a valid id."""
        if not (_TYPE.fullmatch(resource_type) and _ID.fullmatch(id)):
            return None
        response = self._send("GET", f"{self._base}/{resource_type}/{id}", absent_ok=True)
        return None if response.status_code in (404, 410) else self._json(response)

    def history(self, resource_type: str, id: str) -> list[FhirJson]:
        """Return every version, newest first; a deletion appears as a stub with its versionId."""
        if not (_TYPE.fullmatch(resource_type) and _ID.fullmatch(id)):
            return []
        versions = []
        for entry in self._pages(f"{self._base}/{resource_type}/{id}/_history", None, absent_ok=True):
            resource = entry.get("resource")
            if resource is None:
                meta = {"versionId": entry_version(entry.get("response") or {}, "")}
                resource = {"resourceType": resource_type, "id": id, "meta": meta}
            versions.append(resource)
        return versions

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[FhirJson]:
        """Search *resource_type* and return the matches, following `next` pages up to the bound.

        Raises:
            InvalidContent: *resource_type* is not a resource type name.
            Refused: the server rejected the search (an unknown parameter, say).
            RecordUnavailable: the server is unreachable, failing or overloaded.
        """
        if not _TYPE.fullmatch(resource_type):
            raise InvalidContent("not a FHIR resource type name")
        return [
            e["resource"] for e in self._pages(f"{self._base}/{resource_type}", dict(params))
            if isinstance(e.get("resource"), dict) and (e.get("search") or {}).get("mode", "match") == "match"
        ]

    def check(self) -> None:
        """Fetch the CapabilityStatement once, without retrying.

        Raises:
            RecordUnavailable: the server is unreachable or answers with no R4 CapabilityStatement.
            ConfigError: the server speaks a FHIR version other than R4.
        """
        try:
            body = self._json(self._send("GET", f"{self._base}/metadata", attempts=1))
        except Refused as exc:
            raise RecordUnavailable(f"metadata refused: {exc.reason}") from exc
        if body.get("resourceType") != "CapabilityStatement":
            raise RecordUnavailable("destination's metadata is not a CapabilityStatement")
        if not str(body.get("fhirVersion", "")).startswith("4.0"):
            raise ConfigError(f"destination serves FHIR {body.get('fhirVersion')!r}, not R4 (4.0.x)")

    def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        with self._lock:
            http, self._http, self._closed = self._http, None, True
        if http is not None:
            http.close()
        elif self._transport is not None:
            self._transport.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP ------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise RecordUnavailable("the FHIR client is closed")
            if self._http is None:
                self._http = httpx.Client(
                    transport=self._transport,
                    timeout=httpx.Timeout(self._config.timeout_seconds),
                    verify=self._tls,
                    headers={"Accept": _FHIR_JSON, "User-Agent": "helsebro"},
                    follow_redirects=False,
                )
            return self._http

    def _verify(self) -> ssl.SSLContext | bool:
        if self._config.ca_file is None:
            return self._config.verify_tls
        try:
            return ssl.create_default_context(cafile=str(self._config.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_file {self._config.ca_file}: cannot load: {type(exc).__name__}") from exc

    def _send(
        self, method: str, url: str, *, params: dict[str, str] | None = None, content: bytes | None = None,
        attempts: int | None = None, absent_ok: bool = False,
    ) -> httpx.Response:
        """Send one request with retries; return a 2xx answer (or 404/410 when *absent_ok*)."""
        limit = attempts or self._config.max_attempts
        headers = {"Content-Type": _FHIR_JSON} if content is not None else {}
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            auth = self._auth.header()
            if auth is not None:
                headers["Authorization"] = auth
            started = time.perf_counter()
            try:
                response = self._client().request(method, url, params=params, content=content, headers=headers)
            except httpx.HTTPError as exc:  # transport errors and timeouts; no response came
                self._logged(method, url, None, attempt, started, error=type(exc).__name__)
                failure: BaseException = exc
                reason = f"{type(exc).__name__} talking to the destination"
                delay = self._backoff(attempt)
            else:
                status = response.status_code
                self._logged(method, url, status, attempt, started)
                if 200 <= status < 300 or (absent_ok and status in (404, 410)):
                    return response
                if status == 401 and self._auth.refreshable and not refreshed:
                    refreshed = True  # an expired or revoked token: fetch a new one, once per call
                    self._auth.invalidate()
                    attempt -= 1
                    continue
                if status == 401:
                    # Our credentials are wrong, not the message: hold messages until they are fixed.
                    raise RecordUnavailable("destination refused our credentials (HTTP 401)")
                if status < 400:  # redirects are not followed: a POST must not be replayed elsewhere
                    raise RecordUnavailable(f"destination redirected (HTTP {status}); set base_url to where it points")
                if status < 500 and status not in _RETRY_STATUS:
                    raise refused(response)
                failure = _Status(status)
                reason = f"destination answered HTTP {status}"
                delay = self._retry_after(response, attempt)
            if attempt >= limit:
                raise RecordUnavailable(f"{reason}; gave up after {attempt} attempts") from failure
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform below base * 2**(attempt-1), capped at backoff_max_seconds."""
        cap = min(self._config.backoff_max_seconds, self._config.backoff_base_seconds * 2 ** (attempt - 1))
        return self._rng.uniform(0, cap)

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        """The server's Retry-After, capped; the backoff when it sent none or none the client can read."""
        header = response.headers.get("Retry-After")
        asked = retry_after(header, datetime.now(UTC)) if header is not None else None
        return self._backoff(attempt) if asked is None else min(self._config.backoff_max_seconds, asked)

    def _pages(self, url: str, params: dict[str, str] | None, *, absent_ok: bool = False) -> list[FhirJson]:
        """GET a Bundle and its `next` pages, up to max_search_pages; return all their entries."""
        entries: list[FhirJson] = []
        page_url = url
        for _ in range(self._config.max_search_pages):
            response = self._send("GET", page_url, params=params, absent_ok=absent_ok)
            if response.status_code in (404, 410):
                return entries
            bundle = self._json(response)
            entries.extend(e for e in bundle.get("entry") or [] if isinstance(e, dict))
            links = [ln for ln in bundle.get("link") or [] if isinstance(ln, dict)]
            next_url = next((ln.get("url") for ln in links if ln.get("relation") == "next"), None)
            if not isinstance(next_url, str) or not next_url:
                return entries
            self._same_origin(next_url)
            page_url, params = next_url, None  # a next link carries its own query
        if self._log is not None:
            self._log.warning("fhir_pages_truncated", path=httpx.URL(url).path, pages=self._config.max_search_pages)
        return entries

    def _same_origin(self, url: str) -> None:
        """Refuse to send our credentials to a `next` link on another host."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise RecordUnavailable("destination sent a malformed next link") from exc
        if parsed.copy_with(path="/", query=None, fragment=None) != self._origin:
            raise RecordUnavailable("destination sent a next link to another host; check its public base URL setting")

    def _json(self, response: httpx.Response) -> FhirJson:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise RecordUnavailable(f"destination answered HTTP {response.status_code} without JSON") from exc
        if not isinstance(body, dict):
            raise RecordUnavailable(f"destination answered HTTP {response.status_code} with JSON that is not a resource")
        return body

    def _logged(self, method: str, url: str, status: int | None, attempt: int, started: float, **extra: Any) -> None:
        if self._log is not None:
            ms = round((time.perf_counter() - started) * 1000, 1)
            path = resource_path(httpx.URL(url).path)  # never the query, nor an id: both stand for patient data
            self._log.info("fhir_request", method=method, path=path, status=status, attempt=attempt, ms=ms, **extra)


class _Status(Exception):
    """The cause chained under RecordUnavailable when the server kept answering an error status."""
