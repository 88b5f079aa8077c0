"""Expand command-line PATHs into message files, the same way for every verb."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

SUFFIXES = (".hl7", ".er7", ".txt", ".xml")
"""File kinds a folder is searched for."""


class UsageError(Exception):
    """A PATH that does not exist, cannot be read, or is neither a regular file nor a folder.

    A folder that holds no message files is not one: it gives nothing to do, and exit 0,
    so a script that converts a drop folder does not fail when the folder is empty; the
    verb says so on stderr, so a mistyped folder is not mistaken for a quiet success.
    """

    def __init__(self, path: str, problem: str = "no such file or folder") -> None:
        super().__init__(f"{problem}: {path}")
        self.path = path


def expand(paths: list[str], *, verb: str | None = None, unreadable: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """Return (file, path relative to its PATH's folder) pairs, in the order given.

    Folders are searched recursively and sorted, so output order is stable. Hidden files
    and folders met on the way are skipped: macOS leaves binary `._x.hl7` twins on shared
    drives, and `.git/` or `.cache/` hold copies nobody meant to send. A file named as a
    PATH is read whatever its name. With *verb*, a folder that gave no file is said on stderr,
    and so is a folder met on the way that cannot be listed; those are added to *unreadable*,
    so the verb can fail the run: the messages in them were never read.

    Raises:
        UsageError: a PATH does not exist, cannot be read, or is neither a regular file nor a folder.
    """
    out: list[tuple[Path, Path]] = []
    for text in paths:
        p = Path(text)
        mode = _mode(text, p)
        if stat.S_ISDIR(mode):
            missed: list[Path] = []
            files = _search(p, missed)
            for folder in missed:
                if verb:
                    print(f"helsebro {verb}: cannot read folder {folder}: its message files were not read", file=sys.stderr)
                if unreadable is not None:
                    unreadable.append(folder)
            if not files and not missed and verb:  # an unlisted folder was said above
                print(f"helsebro {verb}: {text}: no message files ({' '.join('*' + s for s in SUFFIXES)}), nothing to do", file=sys.stderr)
            out.extend((f, f.relative_to(p)) for f in files)
        elif stat.S_ISREG(mode):
            out.append((p, Path(p.name)))
        else:
            raise UsageError(text, "not a regular file or folder")  # a FIFO or a device: reading it may never end
    return out


def _mode(text: str, p: Path) -> int:
    """The file mode of PATH *p* (symlinks followed).

    Raises:
        UsageError: it does not exist, or it cannot be looked at (a folder on its way denies access):
            named as such, since "no such file" would send the user looking for a typo.
    """
    try:
        return p.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(text) from None
    except OSError as exc:
        raise UsageError(text, f"cannot read ({exc.strerror or exc})") from None


def _search(folder: Path, unreadable: list[Path]) -> list[Path]:
    """The message files under *folder*, sorted; hidden folders are not entered (a `.git` can be large).

    A folder os.walk cannot list goes to *unreadable*: skipped silently, its messages were lost with exit 0.
    """
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=lambda exc: unreadable.append(Path(exc.filename or folder))):  # like rglob: symlinked folders are not followed, symlinked files are
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(root)
        found.extend(here / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in SUFFIXES and (here / n).is_file())
    return sorted(found)
