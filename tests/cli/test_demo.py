"""`helsebro demo` on the bundled examples: a fresh embedded setup, a summary, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HELSEBRO = str(Path(sys.executable).parent / "helsebro")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _demo(tmp_path, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(HELSEBRO_DATA_DIR=str(tmp_path), **extra_env)
    return subprocess.run([HELSEBRO, "demo"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


class TestDemo:
    def test_runs_the_examples_and_summarises(self, tmp_path):
        """Every example is settled; the summary counts them, names each dead letter's reason and lists the patients."""
        files = [p for p in EXAMPLES.rglob("*") if p.suffix in (".hl7", ".er7", ".txt", ".xml")]
        result = _demo(tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout
        messages = int(re.search(r"Messages in:\s+(\d+)", out).group(1))
        applied = int(re.search(r"Applied:\s+(\d+)", out).group(1))
        dead = int(re.search(r"Dead-lettered:\s+(\d+)", out).group(1))
        assert messages >= len(files) and applied + dead == messages
        assert dead >= 1, "the examples include a malformed message"
        assert len(re.findall(r"^  - .*\(stage (convert|apply|internal)", out, re.M)) == dead
        patients = int(re.search(r"Patients in the record: (\d+)", out).group(1))
        assert patients >= 1
        assert len(re.findall(r"^  - Patient/\S+: .+\|.+; encounters: \d+$", out, re.M)) == patients
        assert f"{len(files)}/{len(files)}" in result.stderr  # the progress bar reached the end
        assert (tmp_path / "demo" / "record.sqlite3").exists()

    def test_ignores_broker_and_record_urls_and_starts_fresh(self, tmp_path):
        """The demo always runs embedded, and a second run starts from an empty record."""
        first = _demo(tmp_path, HELSEBRO_BROKER_URL="amqp://nobody:nothing@127.0.0.1:1/%2F", HELSEBRO_RECORD_URL="postgresql://nobody@127.0.0.1:1/none")
        assert first.returncode == 0, first.stderr[-3000:]
        second = _demo(tmp_path)
        assert second.returncode == 0
        assert re.search(r"unchanged: 0", second.stdout)
        assert first.stdout.split("Patients in the record")[1].split("Data in")[0] == second.stdout.split("Patients in the record")[1].split("Data in")[0]


def test_a_demo_that_does_not_settle_says_so_and_exits_1(tmp_path, monkeypatch, capsys):
    """Past its deadline the demo names how far it got and exits 1: a message, not a traceback."""
    import router.cli.demo as demo
    from router.cli import main
    from router.testing import adt_message

    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "a.hl7").write_bytes(adt_message("A01", control_id="D1", fnr="15866112379", local_id="L1", visit="V1"))
    for name in [k for k in os.environ if k.startswith("HELSEBRO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HELSEBRO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(demo, "configure_logging", lambda **kw: None)  # keep this process's logging as it is

    def never(*args, **kwargs):
        raise TimeoutError("all examples settled not met within 120 s")

    monkeypatch.setattr(demo, "wait_until", never)
    assert main(["demo", "--examples", str(examples)]) == 1
    err = capsys.readouterr().err
    assert "of 1 examples settled within 120 s" in err and "Traceback" not in err


class TestDemoShowsNoNationalId:
    """DESIGN §5: an operator view shows patient keys, never a national id; the bundled examples are synthetic and say so."""

    def test_the_bundled_examples_say_they_are_synthetic(self, tmp_path):
        result = _demo(tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(r"^Patients in the record: \d+ \(synthetic people from the bundled examples", result.stdout, re.M), result.stdout

    def test_an_own_folder_shows_patient_keys_not_numbers(self, tmp_path):
        """`--examples DIR` may hold a real extract: its patients are listed by the key `helsebro find --patient-key` takes."""
        from router.pipeline.convert import patient_key_for
        from router.testing import adt_message

        examples = tmp_path / "own"
        examples.mkdir()
        (examples / "a.hl7").write_bytes(adt_message("A01", control_id="D1", fnr="15866112379", local_id="L1", visit="V1"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
        env.update(HELSEBRO_DATA_DIR=str(tmp_path / "data"))
        result = subprocess.run([HELSEBRO, "demo", "--examples", str(examples)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "15866112379" not in result.stdout + result.stderr
        assert "synthetic" not in result.stdout
        key = patient_key_for("urn:oid:2.16.578.1.12.4.1.4.1", "15866112379")
        assert re.search(rf"^  - Patient/\S+: .*urn:oid:2\.16\.578\.1\.12\.4\.1\.4\.1 {key}\b.*; encounters: 1$", result.stdout, re.M), result.stdout
