"""Hot reload of mappings: watch the mapping folder, swap in a new converter atomically.

A change is picked up between deliveries: the whole mapping set is compiled
anew (every load-time check runs), and only a set that compiles replaces the
running one, by swapping a single reference. A set that fails is refused; the
old one keeps running, and the refusal is logged with file:line:col.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.errors import ConfigError, MappingError

_TICK_NS = 2_000_000_000
"""The coarsest mtime granularity we allow for (FAT: 2 s; ext4, XFS and NFS are finer)."""


def fingerprint(folder: Path, *, racy_since: int | None = None) -> tuple[tuple[str, int, int, bytes], ...]:
    """Return (path, size, mtime_ns, digest) for every mapping file: any edit changes it.

    Size and mtime alone miss an edit that keeps the size (a digit changed) and lands in
    the same mtime tick as the previous look: the file then looks untouched until its next
    edit. So a file whose mtime is at or after *racy_since* (the previous look's wall clock
    less one tick; default: now less one tick) is hashed too, as git does for "racy" files.
    Only files edited around the last look are read; the rest cost one stat.
    """
    since = racy_since if racy_since is not None else time.time_ns() - _TICK_NS
    out = []
    for path in sorted(folder.rglob("*.yaml")):
        try:
            st = path.stat()
            digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest() if st.st_mtime_ns >= since else b""
        except OSError:
            continue  # deleted between listing and stat: the next look sees it gone
        out.append((str(path), st.st_size, st.st_mtime_ns, digest))
    return tuple(out)


def _unhashed_before(seen: tuple[tuple[str, int, int, bytes], ...], since: int) -> tuple[tuple[str, int, int, bytes], ...]:
    """*seen* as a look at *since* takes it: a file hashed last time (it was racy then) but older now is not hashed.

    Compared as it was, that file's digest against today's empty one read as an edit, and every
    edit cost a second, needless rebuild one look later.
    """
    return tuple((p, size, mtime, digest if mtime >= since else b"") for p, size, mtime, digest in seen)


class MappingReloader:
    """Holds the converter in use and replaces it when the mapping files change."""

    def __init__(self, folder: Path, build: Callable[[], Any], *, interval: float, logger: Any, initial: Any | None = None, on_swap: Callable[[], None] | None = None) -> None:
        self._folder = folder
        self._on_swap = on_swap or (lambda: None)  # called after a new set is in use
        self._build = build  # compiles a whole new converter, or raises MappingError
        self._interval = interval
        self._log = logger
        self._looked = time.time_ns()
        self._seen = fingerprint(folder)  # before the build: an edit saved while it compiles is seen at the next look
        self._current = initial if initial is not None else build()
        self._checked = time.monotonic()
        self.reloads = 0
        self.refusals = 0

    def current(self) -> Any:
        """Return the converter to use now, first reloading if the files changed."""
        if self._interval <= 0 or time.monotonic() - self._checked < self._interval:
            return self._current
        self._checked = time.monotonic()
        looked, self._looked = self._looked, time.time_ns()
        since = looked - _TICK_NS
        now = fingerprint(self._folder, racy_since=since)
        if now == _unhashed_before(self._seen, since):
            return self._current
        changed = sorted({p for p, *_ in set(now) ^ set(self._seen)})
        self._seen = now
        try:
            fresh = self._build()
        except MappingError as exc:
            self.refusals += 1
            self._log.error("mappings_reload_refused", file=exc.file, line=exc.line, column=exc.column, error=exc.reason, changed=[Path(p).name for p in changed])
            return self._current
        except (ConfigError, OSError) as exc:
            # Not a lint error but still a set that cannot run (a file gone mid-save, a config check):
            # refuse it like one, rather than let it end the worker that runs the old set well.
            self.refusals += 1
            self._log.error("mappings_reload_refused", file=getattr(exc, "filename", None) or "?", error=type(exc).__name__, changed=[Path(p).name for p in changed])
            return self._current
        self._current = fresh  # one reference swap: a message is mapped by one consistent set
        self.reloads += 1
        self._on_swap()
        self._log.info("mappings_reloaded", changed=[Path(p).name for p in changed])
        return self._current
