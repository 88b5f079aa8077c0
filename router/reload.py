"""Hot reload of mappings and routes: watch the files, swap in a newly built whole atomically.

One class serves both: the engine runs one Reloader on mappings/ (events
`mappings_*`) and one on config/routes.yaml (events `routes_*`), at the same
cadence (`mappings.reload_seconds`). Two instances, not one watcher over both,
so a routes edit does not recompile every mapping (seconds without deliveries),
and a refused routes.yaml does not hold back a good mapping edit.

A change is picked up between deliveries: the whole mapping set is compiled
anew (every load-time check runs), and only a set that compiles replaces the
running one, by swapping a single reference. A set that fails is refused; the
old one keeps running, and the refusal is logged with file:line:col. Any other
error while compiling (a bug in a Python-side check) is refused the same way,
logged by its type and the code line that raised it, never its text.

A change is compiled only once the files held still from one look to the next,
and a set is used only when no file moved while it compiled. Why: an editor's
save in two steps, a file deleted then written again, or a `git pull` caught
halfway can compile cleanly (a message mapping that is missing is no error) and
ran until the next look, dead-lettering and refusing (AR) every message of a
type the half-loaded set lacked.
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
    """Return (path, size, mtime_ns, digest) for every mapping file (or for *folder* itself, when it is not a folder: routes.yaml): any edit changes it.

    Size and mtime alone miss an edit that keeps the size (a digit changed) and lands in
    the same mtime tick as the previous look: the file then looks untouched until its next
    edit. So a file whose mtime is at or after *racy_since* (the previous look's wall clock
    less one tick; default: now less one tick) is hashed too, as git does for "racy" files.
    Only files edited around the last look are read; the rest cost one stat. Fixture cases
    (`*.cases` folders) are left out: no running set reads them, and a case added cost a
    whole rebuild, during which the worker took no delivery.
    """
    since = racy_since if racy_since is not None else time.time_ns() - _TICK_NS
    out = []
    tree = folder.is_dir()
    for path in sorted(folder.rglob("*.yaml")) if tree else [folder]:  # one file: absent, the stat below leaves it out
        if tree and any(part.endswith(".cases") for part in path.relative_to(folder).parts[:-1]):
            continue
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


class Reloader:
    """Holds what is in use (a converter, or the routes) and replaces it when its files change.

    *what* names the log events: `<what>_reloaded`, `<what>_reload_refused`, `<what>_reload_deferred`.
    """

    def __init__(self, folder: Path, build: Callable[[], Any], *, interval: float, logger: Any, initial: Any | None = None,
                 on_swap: Callable[[], None] | None = None, what: str = "mappings") -> None:
        self._folder = folder
        self._what = what
        self._on_swap = on_swap or (lambda: None)  # called after a new set is in use
        self._build = build  # compiles a whole new converter, or raises MappingError
        self._interval = interval
        self._log = logger
        self._looked = time.time_ns()
        self._seen = fingerprint(folder)  # before the build: an edit saved while it compiles is seen at the next look
        self._pending: tuple[tuple[str, int, int, bytes], ...] | None = None  # a change seen once, built when it holds still
        self._current = initial if initial is not None else build()
        self._checked = time.monotonic()
        self.reloads = 0
        self.refusals = 0
        self.failing = False  # the files on disk were refused at the last build: an older set runs (metrics)

    def unseen(self) -> None:
        """Take the files as not yet looked at: the next looks load them as an edit, refused or swapped in as any is.

        For what is in use that was read before this watch began (the routes a start read with the settings): an edit
        saved in between was in the first fingerprint, so it looked like what runs and was never loaded.
        """
        self._seen = ((str(self._folder), -1, -1, b""),)  # no file looks so: it differs from any look, an absent file's too

    @property
    def live(self) -> Any:
        """What is in use (the converter, or the routes), without looking at the files (for a scrape on another thread)."""
        return self._current

    def current(self) -> Any:
        """Return the converter to use now, first reloading if the files changed."""
        if self._interval <= 0 or time.monotonic() - self._checked < self._interval:
            return self._current
        self._checked = time.monotonic()
        looked, self._looked = self._looked, time.time_ns()
        since = looked - _TICK_NS
        now = fingerprint(self._folder, racy_since=since)
        if now == _unhashed_before(self._seen, since):
            self._pending = None  # changed and changed back: nothing to build
            return self._current
        if self._pending is None or now != _unhashed_before(self._pending, since):
            self._pending = now  # still moving (or first seen): build once it is the same at the next look
            return self._current
        self._pending = None
        changed = sorted({p for p, *_ in set(now) ^ set(self._seen)})
        building = self._looked - _TICK_NS  # the next look hashes from here too: the same files, the same digests
        try:
            fresh = self._build()
        except MappingError as exc:
            self._seen = now
            self.refusals += 1
            self.failing = True
            self._log.error(f"{self._what}_reload_refused", file=exc.file, line=exc.line, column=exc.column, error=exc.reason, changed=[Path(p).name for p in changed])
            return self._current
        except (ConfigError, OSError) as exc:
            # Not a lint error but still a set that cannot run (a file gone mid-save, a config check):
            # refuse it like one, rather than let it end the worker that runs the old set well.
            self._seen = now
            self.refusals += 1
            self.failing = True
            # The reason names the file or destination at fault (config text, never a message): without it
            # an outbound mapping deleted under a destination was refused as a bare "ConfigError", file "?".
            self._log.error(f"{self._what}_reload_refused", file=getattr(exc, "filename", None) or "?", error=type(exc).__name__, reason=str(exc), changed=[Path(p).name for p in changed])
            return self._current
        except Exception as exc:  # noqa: BLE001  # a bug in a check, not the set: the worker runs the old set on
            # Refused like a lint error, never raised: raised, it ended the worker whose old set ran well, and every
            # worker that restarted on the same files. Its text may quote anything it read, so only its type and
            # the line of code that raised it are logged.
            self._seen = now
            self.refusals += 1
            self.failing = True
            frame = exc.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            at = f"{Path(frame.tb_frame.f_code.co_filename).name}:{frame.tb_lineno}" if frame is not None else "?"
            self._log.error(f"{self._what}_reload_refused", file="?", error=type(exc).__name__, raised_at=at, changed=[Path(p).name for p in changed])
            return self._current
        after = fingerprint(self._folder, racy_since=building)
        if after != _unhashed_before(now, building):
            # A file moved while the set compiled: it may hold some of the edit and not the rest.
            # Not used; what the files are now is built once it holds still.
            self._pending = after
            self._log.info(f"{self._what}_reload_deferred", changed=[Path(p).name for p in changed], why="files changed while loading")
            return self._current
        self._seen = now
        self._current = fresh  # one reference swap: a message is mapped by one consistent set
        self.reloads += 1
        self.failing = False
        self._on_swap()
        self._log.info(f"{self._what}_reloaded", changed=[Path(p).name for p in changed])
        return self._current
