"""Count the CPU instructions one conversion costs: a figure a busy machine cannot move.

On the shared development machine wall clock and even CPU time swing 2-8x with
the neighbours' load (steal time), so two builds measured an hour apart cannot be
compared. Valgrind's cachegrind counts instructions instead, the same from run to
run once Python's hash seed is fixed. Each figure is (count for N+100 messages -
count for N) / 100, so start-up and mapping load cancel out. The stream is the one
`bench/convert.py` converts (a distinct patient per message), the garbage
collector is frozen as a worker freezes it, and the hot path is whatever is
installed (compiled with Cython unless HELSEBRO_PURE_PYTHON=1).

Run: `python bench/instructions.py [--message adt oru plo ...] [--example PATH] [--no-xsd] [--mappings DIR]`.
With `--mappings` a mapping author measures a variant of the mapping folder (a rule taken out, or
written another way) against the shipped one.
Needs valgrind (`apt-get install valgrind`); without it, says so and exits 0.
Prints no speed: instructions per message, to compare builds (for instance a
`git worktree` of another commit, run with PYTHONPATH pointing at it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLO = ROOT.parent / "shared" / "norsk" / "eksempel" / "plo"
EXAMPLES = {
    "plo": PLO / "1_6" / "helseopplysninger_1_6_mottak" / "Helseopplysninger_Oppdaterte_opplysninger_v1-6_Endring1.xml",
    "plo-large": PLO / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml",
}
"""The KITH messages measured: 6.5 kB (the nearest the national set has to the issue's 10 kB) and 17.7 kB."""

_CHILD = """
import gc, sys
sys.path.insert(0, {bench!r})
from router.pipeline.convert import Converter
from router.settings import load_settings
kind, n = {kind!r}, {n}
environ = {{"HELSEBRO_MAPPINGS_DIR": {mappings!r}}} if {mappings!r} else {{}}
if kind in ("adt", "oru"):
    from convert import MESSAGES, stream
    feed = stream(MESSAGES[kind][1], 200)
    converter = Converter(load_settings(environ=environ))
else:
    feed = [open({example!r}, "rb").read()]
    converter = Converter(load_settings(environ=environ, xsd_dir={xsd!r}))
import orjson
for data in feed[:2]:
    result = converter.convert(data)[0]
    assert result.ok, result.error
gc.collect()
gc.freeze()
for k in range(n):
    result = converter.convert(feed[k % len(feed)])[0]
    orjson.dumps(result.bundle)
"""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count(kind: str, n: int, example: Path | None, xsd: str | None, mappings: Path | None = None) -> int:
    """Instructions valgrind counts for a process that converts *n* messages of *kind*."""
    code = _CHILD.format(bench=str(ROOT / "bench"), kind=kind, n=n, example=str(example) if example else "", xsd=xsd,
                         mappings=str(mappings) if mappings else "")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable, "-c", code],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )
    found = _REFS.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        sys.exit(f"{kind}: the measured process failed:\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--message", nargs="+", choices=["adt", "oru", "plo", "plo-large"], default=["adt", "oru", "plo"])
    parser.add_argument("--example", type=Path, help="measure this KITH XML message instead of the plo examples")
    parser.add_argument("--no-xsd", action="store_true", help="KITH: without XSD validation")
    parser.add_argument("--mappings", type=Path, help="convert with this mapping folder (a variant of mappings/ to compare) instead of the shipped one")
    parser.add_argument("--base", type=int, default=20, help="messages in the shorter run (its count is subtracted)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (apt-get install valgrind)")
        return
    xsd = None if args.no_xsd else os.environ.get("HELSEBRO_XSD_DIR") or str(ROOT.parent / "shared" / "norsk" / "skjema")
    kinds = ["plo"] if args.example else args.message
    for kind in kinds:
        example = args.example or EXAMPLES.get(kind)
        if example is not None and not example.exists():
            print(f"{kind}: skipped, {example} is not there (../shared is needed)")
            continue
        per = (count(kind, args.base + 100, example, xsd, args.mappings) - count(kind, args.base, example, xsd, args.mappings)) / 100
        if example is None:  # HL7 v2: the bench's own messages
            what = {"adt": "ADT^A01, 12 segments", "oru": "ORU^R01, 20 OBX"}[kind]
        else:  # KITH XML: a national example
            what = f"{example.name}, {example.stat().st_size / 1024:.1f} kB, {'no XSD' if args.no_xsd else 'with XSD'}"
        print(f"{kind} ({what}): {per / 1e6:.3f} M instructions per message")


if __name__ == "__main__":
    main()
