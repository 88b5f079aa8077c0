"""The audit log: one fsynced JSON line per event, appended, naming who, when and what."""

from __future__ import annotations

import json
import os
import pwd
import stat
from datetime import datetime

from router.ops.audit import AuditLog, operator_identity


class TestAuditLog:
    def test_begin_and_end_share_an_action_id(self, tmp_path):
        """An action writes a begin line and an end line with the same action id and its own fields."""
        log = AuditLog(tmp_path / "data" / "audit.log")
        action_id = log.begin("purge", queue="q", ids=["a", "b"], count=2)
        log.end("purge", action_id, queue="q", done=["a", "b"], count=2)
        begin, end = [json.loads(line) for line in log.path.read_text().splitlines()]
        assert (begin["event"], end["event"]) == ("begin", "end")
        assert begin["action_id"] == end["action_id"] == action_id
        assert begin["ids"] == ["a", "b"] and end["done"] == ["a", "b"]
        assert begin["action"] == end["action"] == "purge"

    def test_names_who_and_when(self, tmp_path, monkeypatch):
        """Each line carries the OS user, HELSEBRO_OPERATOR, the host and a UTC timestamp."""
        monkeypatch.setenv("HELSEBRO_OPERATOR", "kari.nordmann")
        log = AuditLog(tmp_path / "audit.log")
        log.begin("replay", ids=["x"], count=1)
        line = json.loads(log.path.read_text())
        assert line["user"] == pwd.getpwuid(os.geteuid()).pw_name
        assert line["operator"] == "kari.nordmann"
        assert line["host"] == operator_identity()["host"]
        assert datetime.fromisoformat(line["at"]).utcoffset().total_seconds() == 0

    def test_operator_is_null_without_the_variable(self, tmp_path, monkeypatch):
        """Without HELSEBRO_OPERATOR the operator field is null, not an empty string."""
        monkeypatch.delenv("HELSEBRO_OPERATOR", raising=False)
        log = AuditLog(tmp_path / "audit.log")
        log.begin("show_body", ids=["x"], count=1)
        assert json.loads(log.path.read_text())["operator"] is None

    def test_appends_and_keeps_earlier_lines(self, tmp_path):
        """A second log object on the same file appends after what is there."""
        path = tmp_path / "audit.log"
        path.write_text('{"earlier": true}\n')
        AuditLog(path).begin("purge", ids=[], count=0)
        AuditLog(path).begin("purge", ids=[], count=0)
        lines = path.read_text().splitlines()
        assert lines[0] == '{"earlier": true}'
        assert len(lines) == 3

    def test_new_file_is_private(self, tmp_path):
        """A new audit file is readable and writable by its owner only."""
        log = AuditLog(tmp_path / "audit.log")
        log.begin("purge", ids=[], count=0)
        assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


class TestAuditLogFileReviewH190:
    """Found by review (H190): the file an audit line goes to."""

    def test_an_existing_wider_file_is_made_private(self, tmp_path):
        """An audit.log already there with mode 0644 (restored from a backup, made by hand) kept it: every
        local user could read who looked at which patient. Writing to it narrows it to 0600."""
        path = tmp_path / "audit.log"
        path.write_text("")
        path.chmod(0o644)
        AuditLog(path).begin("replay", ids=["x"], count=1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_a_symlink_planted_as_the_log_is_not_followed(self, tmp_path):
        """A symlink at audit.log was followed: a user who could write the data directory sent the lines
        into any file the operator can write (and an operator's `purge` appended JSON to it). Refused now."""
        target = tmp_path / "elsewhere"
        target.write_text("kept\n")
        (tmp_path / "audit.log").symlink_to(target)
        try:
            AuditLog(tmp_path / "audit.log").begin("replay", ids=["x"], count=1)
        except OSError:
            pass
        else:
            raise AssertionError("an audit line was written through a symlink")
        assert target.read_text() == "kept\n"
