"""Authenticate requests to an external FHIR server: none, a bearer token, or OAuth2.

The config models for the `auth` block live here, beside the code that reads them;
retrying, logging and error translation for the FHIR calls belong to client.py.
Secrets are read from the environment when the client is built and never logged:
the models hold only the variable's name, or a SecretStr that prints as stars.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import quote_plus

import httpx
import orjson
from pydantic import Field, SecretStr, model_validator

from router.config_model import ConfigBase
from router.errors import ConfigError, RecordUnavailable

__all__ = ["AuthConfig", "Authenticator", "BearerAuth", "NoAuth", "OAuth2ClientCredentials", "make_authenticator"]

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what can follow "Bearer " in a header: visible ASCII, no space or newline


_Frozen = ConfigBase
"""The auth blocks refuse text, true and .nan for a number as the rest of routes.yaml does (refresh_margin_seconds)."""


class NoAuth(_Frozen):
    """`auth: {type: none}`: requests carry no credentials (a server inside the trusted network)."""

    type: Literal["none"] = Field(default="none", description="Send no Authorization header.")


class BearerAuth(_Frozen):
    """`auth: {type: bearer}`: every request carries one long-lived bearer token."""

    type: Literal["bearer"] = Field(description="Send `Authorization: Bearer <token>` on every request.")
    token: SecretStr | None = Field(
        default=None, min_length=1, max_length=8192,
        description="The token itself. Prefer token_env: a token written in a config file ends up in backups and version control.",
    )
    token_env: str | None = Field(
        default=None, pattern=_ENV_NAME, max_length=128,
        description="Name of the environment variable holding the token, read once when the client is built.",
        examples=["HELSEBRO_FHIR_TOKEN"],
    )

    @model_validator(mode="after")
    def _one_source(self) -> BearerAuth:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("give exactly one of token and token_env")
        return self


class OAuth2ClientCredentials(_Frozen):
    """`auth: {type: oauth2}`: fetch an access token with the client-credentials grant (RFC 6749 §4.4)."""

    type: Literal["oauth2"] = Field(description="Fetch, cache and refresh an access token from token_url.")
    token_url: str = Field(
        pattern=r"^https?://\S+$", max_length=2048,
        description="The authorization server's token endpoint.",
        examples=["https://auth.example.no/connect/token"],
    )
    client_id: str = Field(min_length=1, max_length=256, description="This engine's client id at the authorization server.", examples=["helsebro"])
    client_secret_env: str = Field(
        pattern=_ENV_NAME, max_length=128,
        description="Name of the environment variable holding the client secret, read once when the client is built.",
        examples=["HELSEBRO_FHIR_CLIENT_SECRET"],
    )
    scope: str | None = Field(
        default=None, max_length=2048,
        description="Space-separated scopes to request; unset, the authorization server's default scopes.",
        examples=["system/*.write system/*.read"],
    )
    client_auth: Literal["basic", "post"] = Field(
        default="basic",
        description="How the client authenticates to the token endpoint: HTTP Basic (every server must accept it) or form fields.",
    )
    refresh_margin_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="Seconds before expires_in at which a cached token is replaced. Larger fetches tokens more often; "
        "smaller risks a token expiring in flight (a 401 then costs one refresh).",
    )


AuthConfig = Annotated[NoAuth | BearerAuth | OAuth2ClientCredentials, Field(discriminator="type")]
"""The `auth` block of a FHIR destination, told apart by its `type` key."""


class Authenticator:
    """Supplies the Authorization header; the base class sends none."""

    refreshable = False
    """True when a 401 may be cured by fetching a new token."""

    def header(self) -> str | None:
        """Return the Authorization header value, or None for none."""
        return None

    def invalidate(self) -> None:
        """Forget any cached token, so the next header() fetches a new one."""


class _Bearer(Authenticator):
    def __init__(self, token: str) -> None:
        """Refuse a token no header can carry, at start, rather than fail every message.

        Raises:
            ConfigError: the token holds a space, a newline (a secret file's last line) or a
                non-ASCII character (a copied typographic quote). httpx raised UnicodeEncodeError
                for the latter on every request, which the worker dead-letters as an internal error.
        """
        if not _TOKEN.fullmatch(token):
            raise ConfigError("auth: the bearer token holds characters a header cannot carry (whitespace or non-ASCII)")
        self._value = f"Bearer {token}"

    def header(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "_Bearer(**********)"


class _OAuth2(Authenticator):
    """Caches one access token until shortly before it expires; fetches under a lock."""

    refreshable = True

    def __init__(self, config: OAuth2ClientCredentials, secret: str, http: Callable[[], httpx.Client], clock: Callable[[], float]) -> None:
        self._config = config
        self._secret = secret
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until = 0.0

    def __repr__(self) -> str:
        return f"_OAuth2(client_id={self._config.client_id!r})"

    def header(self) -> str | None:
        with self._lock:
            if self._token is None or self._clock() >= self._valid_until:
                self._token, lifetime = self._fetch()
                self._valid_until = self._clock() + max(0.0, lifetime - self._config.refresh_margin_seconds)
            return f"Bearer {self._token}"

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        """POST the client-credentials grant; return the token and its lifetime in seconds.

        Every failure is a RecordUnavailable, a refused client included: a wrong secret
        is the destination's problem, not the message's, so messages wait for a fix
        instead of being dead-lettered.
        """
        cfg = self._config
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        headers = {"Accept": "application/json"}
        if cfg.client_auth == "basic":
            # RFC 6749 §2.3.1: id and secret are form-encoded before they are joined for Basic.
            pair = f"{quote_plus(cfg.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form.update(client_id=cfg.client_id, client_secret=self._secret)
        try:
            response = self._http().post(cfg.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise RecordUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise RecordUnavailable(f"token endpoint answered HTTP {response.status_code}")
        try:
            body = orjson.loads(response.content)
            token, lifetime = body["access_token"], float(body.get("expires_in", 300))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordUnavailable("token endpoint answered without an access_token") from exc
        if not isinstance(token, str) or not token:
            raise RecordUnavailable("token endpoint answered without an access_token")
        if not _TOKEN.fullmatch(token):  # else httpx's UnicodeEncodeError: an internal error, dead-lettering the message
            raise RecordUnavailable("token endpoint answered an access_token no header can carry")
        return token, lifetime


def _env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"auth: environment variable {name} ({what}) is not set")
    return value


def make_authenticator(
    config: NoAuth | BearerAuth | OAuth2ClientCredentials,
    http: Callable[[], httpx.Client],
    clock: Callable[[], float] = time.monotonic,
) -> Authenticator:
    """Build the authenticator *config* names, reading its secret from the environment.

    Args:
        http: returns the HTTP client that token requests go through.
        clock: a monotonic clock in seconds, for token expiry.

    Raises:
        ConfigError: the environment variable holding the secret is unset or empty.
    """
    if isinstance(config, BearerAuth):
        if config.token is not None:
            return _Bearer(config.token.get_secret_value())
        return _Bearer(_env(config.token_env or "", "bearer token"))
    if isinstance(config, OAuth2ClientCredentials):
        return _OAuth2(config, _env(config.client_secret_env, "client secret"), http, clock)
    return Authenticator()
