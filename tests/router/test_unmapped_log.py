"""The engine records, per message, which source fields no rule read (names only, never values)."""

from __future__ import annotations

import json

import structlog

from router.logging import configure_logging
from router.testing import adt_message, isolated_settings, publish, run_engine_in_thread, wait_until

FNR = "15866112379"


class TestUnmappedRecorded:
    def test_delivery_log_names_unread_fields(self, tmp_path, capsys):
        """A Z-segment nobody maps shows up in the delivery's log line as ZPD-2, without its value."""
        configure_logging(level="info")
        settings = isolated_settings(tmp_path)
        handle = run_engine_in_thread(settings)
        try:
            body = adt_message("A01", control_id="U1", fnr=FNR, local_id="L1", visit="V1") + b"ZPD|1|secret-local-flag\r"
            publish(settings, [body])
            wait_until(lambda: handle.stats.applied == 1, timeout=30, what="applied")
        finally:
            handle.stop()
            structlog.reset_defaults()  # the logger above wrote to this test's captured stderr
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        [settled] = [ln for ln in lines if ln.get("event") == "delivery_settled" and ln.get("control_id") == "U1"]
        assert "ZPD-2" in settled["unmapped_fields"] and settled["unmapped"] >= 1
        assert "secret-local-flag" not in json.dumps(lines)
