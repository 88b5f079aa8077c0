"""The single-core benches run with their smallest options and print latency figures that can be true.

Why: a bench's figures are read, never asserted on time, so a wrong one goes unseen. With a few
timings, `statistics.quantiles`' default (exclusive) method extrapolated past the slowest one and
printed a p99 above the max; with one timing it raised instead of saying what --n needs.
These run each bench as a script, as the README does, and check only how the figures relate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_UNIT = {"us": 1e-6, "ms": 1e-3}
_LATENCY = re.compile(r"p50 ([\d.]+) (us|ms)\s+p99 ([\d.]+) (us|ms)\s+max ([\d.]+) (us|ms)")

# (script, smallest options besides --n): each converts or renders a handful of messages
BENCHES = [
    pytest.param("convert.py", ["--patients", "1"], id="convert"),
    pytest.param("convert_xml.py", ["--no-xsd"], id="convert_xml", marks=pytest.mark.corpus),  # a PLO example from ../shared
    pytest.param("render_hl7v2.py", [], id="render_hl7v2"),
    pytest.param("render_kith.py", [], id="render_kith"),
]


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, not an installed one
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(("script", "options"), BENCHES)
def test_percentiles_stay_within_the_timings(script, options, request):
    """Three timings: every latency line gives p50 ≤ p99 ≤ max (the slowest timing), never a figure past it."""
    if script == "convert_xml.py":
        request.getfixturevalue("shared_dir")  # skips, saying why, without ../shared
    done = _bench(script, "--n", "3", *options)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "latency" in line]
    assert lines, f"{script} printed no latency line:\n{done.stdout}"
    for line in lines:
        found = _LATENCY.search(line)
        assert found, f"{script}: a latency line without p50, p99 and max: {line!r}"
        p50, p99, top = (float(found.group(i)) * _UNIT[found.group(i + 1)] for i in (1, 3, 5))
        assert p50 <= p99 <= top, f"{script}: {line.strip()}"


@pytest.mark.parametrize(("script", "options"), BENCHES)
def test_one_message_is_a_usage_error(script, options):
    """--n 1 cannot give percentiles: the bench says so and exits 2 (argparse's usage error), with no traceback."""
    done = _bench(script, "--n", "1", *options)
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "--n" in done.stderr


def test_the_record_bench_names_why_a_message_did_not_convert(monkeypatch):
    """bench/record.py stopped on a refused message with `conv.outcome`, a method, so it printed `<bound method ...>`
    instead of why (review H168); it now gives the refusal's reason and position, never the message's content."""
    import importlib.util

    from router.testing import adt_message

    spec = importlib.util.spec_from_file_location("bench_record_under_test", ROOT / "bench" / "record.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bad_fnr = "15866112378"  # fails its check digits
    monkeypatch.setattr(bench, "_messages", lambda *_a: [adt_message("A01", control_id="B1", fnr=bad_fnr, local_id="L1", visit="V1")])
    with pytest.raises(SystemExit) as stop:
        bench._prepared(1, 0.0, 100, 0)
    said = str(stop.value.code)
    assert "bound method" not in said and said.startswith("bench message did not convert: "), said
    assert "PID-3" in said and bad_fnr not in said, said


def test_the_floor_bench_compares_its_output_with_the_engines():
    """bench/floor.py times a hand-written ADT^A01 conversion beside the engine's: it says whether the two outputs are
    the same bytes (the figures compare like with like only then) and prints both rates."""
    done = _bench("floor.py", "--n", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    first, *rates = done.stdout.splitlines()
    assert "outputs byte-identical" in first or "outputs DIFFERENT" in first, first
    assert [line.split()[0] for line in rates[:2]] == ["floor", "engine"] and all("msg/s" in line for line in rates[:2])


def test_the_instruction_count_converts_with_the_mapping_folder_it_is_given(tmp_path):
    """bench/instructions.py --mappings DIR measures a variant of the mappings: the measured process must load DIR.

    The child read `load_settings(environ={})`, so a variant folder passed as HELSEBRO_MAPPINGS_DIR was
    silently ignored and two variants measured the same instructions. Run here without valgrind.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_instructions_under_test", ROOT / "bench" / "instructions.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def child(mappings: Path | str) -> subprocess.CompletedProcess[str]:
        code = bench._CHILD.format(bench=str(ROOT / "bench"), kind="adt", n=1, example="", xsd=None, mappings=str(mappings))
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)

    assert child("").returncode == 0
    (tmp_path / "hl7v2").mkdir()  # a mapping folder that maps nothing: the ADT^A01 cannot convert
    refused = child(tmp_path)
    assert refused.returncode != 0
    assert "AssertionError" in refused.stderr
