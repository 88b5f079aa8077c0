"""Per-sender overlays: a sender's folder replaces single mapping files for that sender only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "examples" / "hl7v2" / "02_A01_admit_hansen.hl7").read_bytes().replace(b"|F|||", b"|K|||")


def _gender(capsys, tmp_path: Path, app: bytes) -> str:
    f = tmp_path / f"{app.decode()}.hl7"
    f.write_bytes(BASE.replace(b"MSH|^~\\&|DIPS|", b"MSH|^~\\&|" + app + b"|"))
    assert main(["convert", str(f)]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[0])
    return next(e["resource"]["gender"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")


class TestSenderOverlay:
    def test_overlay_applies_to_its_sender_only(self, capsys, tmp_path):
        """LEGACYPAS's own sex table reads K as female; every other sender keeps the shared table."""
        assert _gender(capsys, tmp_path, b"LEGACYPAS") == "female"
        assert _gender(capsys, tmp_path, b"DIPS") == "unknown"

    def test_a_broken_overlay_is_linted_at_its_line(self, tmp_path, capsys, monkeypatch):
        """An error in a sender overlay is reported with the overlay file's name and line."""
        dst = tmp_path / "mappings"
        shutil.copytree(ROOT / "mappings", dst)
        bad = dst / "hl7v2" / "senders" / "LEGACYPAS" / "tables" / "hl7-0001.yaml"
        bad.write_text(bad.read_text().replace("unmapped: {value: unknown}", "unmapped: sometimes"))
        monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(dst))
        assert main(["mappings", "lint"]) == 1
        err = capsys.readouterr().err
        assert "senders/LEGACYPAS/tables/hl7-0001.yaml:" in err and "unmapped must be" in err
