"""Expand command-line PATHs into message files, the same way for every verb."""

from __future__ import annotations

from pathlib import Path

SUFFIXES = (".hl7", ".er7", ".txt", ".xml")
"""File kinds a folder is searched for."""


class UsageError(Exception):
    """A PATH that does not exist.

    A folder that holds no message files is not one: it gives nothing to do, and exit 0,
    so a script that converts a drop folder does not fail when the folder is empty.
    """


def expand(paths: list[str]) -> list[tuple[Path, Path]]:
    """Return (file, path relative to its PATH's folder) pairs, in the order given.

    Folders are searched recursively and sorted, so output order is stable.

    Raises:
        UsageError: a PATH does not exist.
    """
    out: list[tuple[Path, Path]] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            out.extend((f, f.relative_to(p)) for f in files)
        elif p.is_file():
            out.append((p, Path(p.name)))
        else:
            raise UsageError(f"no such file or folder: {text}")
    return out
