"""Append operator actions to the audit log: one JSON line per event, fsynced.

DESIGN §5: the one place where clear text is shown to an operator is behind
authorisation, and the showing is audited. Authorisation is, for now, being
able to run `helsebro` on the engine host as a user who can read the data
directory; the log names that OS user, plus `HELSEBRO_OPERATOR` when set (a
shared service account then still says which person acted). The user is the
process's effective uid looked up in the passwd database, never LOGNAME or USER
(which anyone can set to another's name), and `uid:<n>` when the database has no
entry for it (a container's arbitrary uid): the action is still audited, by number.
Run under sudo, that user is root, and sudo drops `HELSEBRO_OPERATOR` with the rest of the
environment: the line would say only "root". So it also names the person behind it, twice over:
`login_user`, the kernel's login uid (/proc/self/loginuid: set once at login by pam_loginuid,
kept through sudo and su, and not changeable by an unprivileged process), and `sudo_user`,
what sudo put in SUDO_USER, taken only when the process runs as root (anyone can set the
variable, but only root runs as root, and root can write this file anyway). Each is null
when unknown (no login uid in most containers; not under sudo).

The file is `<data_dir>/audit.log`, created mode 0600 (an existing one with a wider mode is
narrowed to it), never opened through a symlink (O_NOFOLLOW), and only ever opened
with O_APPEND: each event is one `write()` of one line followed by `fsync`,
so a crash can cut off at most the line being written, never an earlier one.
Each line holds: `at` (UTC, ISO 8601), `user`, `operator` (or null), `login_user`,
`sudo_user`, `host`,
`action`, `event` ("begin" before the action touches anything, "end" after; "declined", alone,
when the operator answered no to its question),
`action_id` (shared by an action's begin and end lines), and the action's
own fields (queue, ids, counts). It never holds a message body or a value
taken from one.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AuditLog", "operator_identity"]

_FILE_MODE = 0o600
_LOGINUID = Path("/proc/self/loginuid")
_NO_LOGINUID = 0xFFFFFFFF  # (uid_t)-1: no login uid was set (a daemon, most containers)


def operator_identity() -> dict[str, str | None]:
    """Return who is acting: the OS user, `HELSEBRO_OPERATOR` (or None), the login and sudo users (or None) and the host."""
    return {"user": _os_user(), "operator": os.environ.get("HELSEBRO_OPERATOR") or None, "login_user": _login_user(),
            "sudo_user": (os.environ.get("SUDO_USER") or None) if os.geteuid() == 0 else None, "host": socket.gethostname()}


def _os_user() -> str:
    """Return the effective uid's name, or `uid:<n>` when the passwd database has none.

    Not getpass.getuser(): it reads LOGNAME and USER first, so an audit line would name whoever
    the environment claims, and it raises when the uid has no entry, so no action could start.
    """
    return _name(os.geteuid())


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def _login_user() -> str | None:
    """Return the name of the uid the session logged in as (kept through sudo and su), or None where there is none."""
    try:
        uid = int(_LOGINUID.read_text().strip())
    except (OSError, ValueError):  # not Linux, no audit support in the kernel
        return None
    return None if uid == _NO_LOGINUID else _name(uid)


class AuditLog:
    """The append-only audit file of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path  # no I/O here: the first event creates the file

    def begin(self, action: str, **fields: Any) -> str:
        """Write the line that announces *action*, before it touches anything; return its action id.

        Raises:
            OSError: the line could not be written and synced; the caller must not act.
        """
        action_id = uuid.uuid4().hex
        self._append({"action": action, "event": "begin", "action_id": action_id, **fields})
        return action_id

    def end(self, action: str, action_id: str, **fields: Any) -> None:
        """Write the line that records what *action* (begun as *action_id*) did."""
        self._append({"action": action, "event": "end", "action_id": action_id, **fields})

    def declined(self, action: str, **fields: Any) -> None:
        """Write the one line of an *action* the operator was asked about and answered no: nothing was done."""
        self._append({"action": action, "event": "declined", "action_id": uuid.uuid4().hex, **fields})

    def _append(self, fields: dict[str, Any]) -> None:
        line = {"at": datetime.now(UTC).isoformat(), **operator_identity(), **fields}
        data = orjson.dumps(line) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        # O_NOFOLLOW: a symlink planted at audit.log would send the lines into any file the operator can write.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                raise OSError(f"audit log: {self.path} is not a regular file")
            if stat.S_IMODE(found.st_mode) & ~_FILE_MODE:  # an existing file keeps its mode on open: a wider one is narrowed
                os.fchmod(fd, _FILE_MODE)
            written = os.write(fd, data)  # one write per line: O_APPEND keeps concurrent writers' lines whole
            if written != len(data):
                raise OSError(f"audit log: wrote {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(self.path.parent)  # the new file's name must survive a power cut too


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
