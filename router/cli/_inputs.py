"""Expand command-line PATHs into message files, the same way for every verb."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SUFFIXES = (".hl7", ".er7", ".txt", ".xml")
"""File kinds a folder is searched for."""


class UsageError(Exception):
    """A PATH that does not exist.

    A folder that holds no message files is not one: it gives nothing to do, and exit 0,
    so a script that converts a drop folder does not fail when the folder is empty; the
    verb says so on stderr, so a mistyped folder is not mistaken for a quiet success.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"no such file or folder: {path}")
        self.path = path


def expand(paths: list[str], *, verb: str | None = None) -> list[tuple[Path, Path]]:
    """Return (file, path relative to its PATH's folder) pairs, in the order given.

    Folders are searched recursively and sorted, so output order is stable. Hidden files
    and folders met on the way are skipped: macOS leaves binary `._x.hl7` twins on shared
    drives, and `.git/` or `.cache/` hold copies nobody meant to send. A file named as a
    PATH is read whatever its name. With *verb*, a folder that gave no file is said on stderr.

    Raises:
        UsageError: a PATH does not exist.
    """
    out: list[tuple[Path, Path]] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            files = _search(p)
            if not files and verb:
                print(f"helsebro {verb}: {text}: no message files ({' '.join('*' + s for s in SUFFIXES)}), nothing to do", file=sys.stderr)
            out.extend((f, f.relative_to(p)) for f in files)
        elif p.is_file():
            out.append((p, Path(p.name)))
        else:
            raise UsageError(text)
    return out


def _search(folder: Path) -> list[Path]:
    """The message files under *folder*, sorted; hidden folders are not entered (a `.git` can be large)."""
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):  # like rglob: symlinked folders are not followed, symlinked files are
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(root)
        found.extend(here / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in SUFFIXES and (here / n).is_file())
    return sorted(found)
