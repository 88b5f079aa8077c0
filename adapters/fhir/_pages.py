"""Hold the parameters of searches made by POST, so their next pages' links name an opaque id.

Why: a client searches by `POST [type]/_search` to keep a fødselsnummer out of URLs, which
proxies and access logs keep; a `next` link repeating the form would put it into the URL the
client follows. As HAPI FHIR does, the link names `_getpages=<id>` instead, and the server
keeps the search here. The map is in this process's memory: bounded (searches and characters,
the oldest forgotten first), expiring, and unknown to any other `helsebro serve` process, where
the id answers 410 like an expired one.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["SearchPages"]

_TTL = 600.0  # seconds a search is kept after its last page was asked for
_LIMIT = 10_000  # searches kept at once
_MAX_CHARS = 16 * 1024 * 1024  # characters of parameters kept at once (a form may be large)


class SearchPages:
    """A bounded, expiring map from unguessable page ids to (resource type, search parameters)."""

    def __init__(self, ttl: float = _TTL, limit: int = _LIMIT, max_chars: int = _MAX_CHARS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._limit = limit
        self._max_chars = max_chars
        self._clock = clock
        self._kept: OrderedDict[str, tuple[float, str, str]] = OrderedDict()  # least recently used first
        self._chars = 0
        self._lock = threading.Lock()

    def keep(self, type_: str, query: str) -> str:
        """Keep a search (its *query* without `_after`) and return the new id its links name."""
        page_id = secrets.token_urlsafe(24)  # 192 random bits: not guessable, not derived from the values
        with self._lock:
            self._kept[page_id] = (self._clock(), type_, query)
            self._chars += len(query)
            while self._kept and (len(self._kept) > self._limit or self._chars > self._max_chars or self._expired(next(iter(self._kept)))):
                self._drop(next(iter(self._kept)))
        return page_id

    def find(self, page_id: str) -> tuple[str, str] | None:
        """Return the search *page_id* names, or None when it is unknown or expired; finding it renews it."""
        with self._lock:
            if page_id not in self._kept:
                return None
            if self._expired(page_id):
                self._drop(page_id)
                return None
            _, type_, query = self._kept[page_id]
            self._kept[page_id] = (self._clock(), type_, query)
            self._kept.move_to_end(page_id)
            return type_, query

    def _expired(self, page_id: str) -> bool:
        return self._clock() - self._kept[page_id][0] > self._ttl

    def _drop(self, page_id: str) -> None:
        self._chars -= len(self._kept.pop(page_id)[2])
