"""Hot reload of mappings: watch the mapping folder, swap in a new converter atomically.

A change is picked up between deliveries: the whole mapping set is compiled
anew (every load-time check runs), and only a set that compiles replaces the
running one, by swapping a single reference. A set that fails is refused; the
old one keeps running, and the refusal is logged with file:line:col.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.errors import MappingError


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Return (path, size, mtime_ns) for every mapping file: any edit changes it."""
    out = []
    for path in sorted(folder.rglob("*.yaml")):
        try:
            st = path.stat()
        except OSError:
            continue  # deleted between listing and stat: the next look sees it gone
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


class MappingReloader:
    """Holds the converter in use and replaces it when the mapping files change."""

    def __init__(self, folder: Path, build: Callable[[], Any], *, interval: float, logger: Any, initial: Any | None = None, on_swap: Callable[[], None] | None = None) -> None:
        self._folder = folder
        self._on_swap = on_swap or (lambda: None)  # called after a new set is in use
        self._build = build  # compiles a whole new converter, or raises MappingError
        self._interval = interval
        self._log = logger
        self._current = initial if initial is not None else build()
        self._seen = fingerprint(folder)
        self._checked = time.monotonic()
        self.reloads = 0
        self.refusals = 0

    def current(self) -> Any:
        """Return the converter to use now, first reloading if the files changed."""
        if self._interval <= 0 or time.monotonic() - self._checked < self._interval:
            return self._current
        self._checked = time.monotonic()
        now = fingerprint(self._folder)
        if now == self._seen:
            return self._current
        changed = sorted({p for p, *_ in set(now) ^ set(self._seen)})
        self._seen = now
        try:
            fresh = self._build()
        except MappingError as exc:
            self.refusals += 1
            self._log.error("mappings_reload_refused", file=exc.file, line=exc.line, column=exc.column, error=exc.reason, changed=[Path(p).name for p in changed])
            return self._current
        self._current = fresh  # one reference swap: a message is mapped by one consistent set
        self.reloads += 1
        self._on_swap()
        self._log.info("mappings_reloaded", changed=[Path(p).name for p in changed])
        return self._current
