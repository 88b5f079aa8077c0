"""Benchmark KITH XML conversion on one core: safe parse + XSD validation + envelope checks + map.

Uses a national PLO example from ../shared (skipped with a message when it is
absent): Innleggelsesrapport 1.6 (17.7 kB) unless --example names another
message. The national set has no PLO message of 10 kB; the nearest are
plo/1_6/helseopplysninger_1_6_mottak/Helseopplysninger_Oppdaterte_opplysninger_v1-6_Endring1.xml
(6.5 kB) and plo/1_6/medisinske_opplysninger_1_6_mottak/Medisinske_opplysninger_v1-6_Ny.xml
(14.4 kB). Validation uses the national schema folder: the one named by
HELSEBRO_XSD_DIR, else ../shared/norsk/skjema. Prints messages per second,
latency percentiles and peak memory. No assertions.

After warming up, the bench freezes the garbage collector's view of what
lives as long as the process (compiled mappings, schemas), as the engine does
at start (router.engine.freeze_long_lived, which also collects the young
generation less often): without that, each full collection rescans ~230,000 objects, about 0.3 ms per message on average. --no-freeze
measures without it.

    python bench/convert_xml.py [--n 2000] [--no-xsd] [--no-freeze] [--example PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from router.engine import freeze_long_lived
from router.pipeline.convert import Converter
from router.settings import load_settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
PLO = SHARED / "norsk" / "eksempel" / "plo"
EXAMPLE = PLO / "1_6" / "innleggelsesrapport_1_6_mottak" / "Innleggelsesrapport_v1-6_Ny.xml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--no-xsd", action="store_true", help="measure without XSD validation")
    parser.add_argument("--no-freeze", action="store_true", help="leave the garbage collector as it is (the engine freezes it at start)")
    parser.add_argument(
        "--example", type=Path, default=EXAMPLE,
        help="the KITH XML message to convert; a relative path is looked up under ../shared/norsk/eksempel/plo first",
    )
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be at least 2: latency percentiles need two timings")
    example = args.example if args.example.is_absolute() or not (PLO / args.example).exists() else PLO / args.example
    if not example.exists():
        print(f"skipped: {example} is not there (../shared is needed)")
        sys.exit(0)
    xsd = None if args.no_xsd else os.environ.get("HELSEBRO_XSD_DIR") or str(SHARED / "norsk" / "skjema")
    converter = Converter(load_settings(environ={}, xsd_dir=xsd))
    data = example.read_bytes()
    first = converter.convert(data)[0]
    if not first.ok:
        print(f"the example did not convert: {first.error}")
        sys.exit(1)
    for _ in range(50):
        converter.convert(data)
    if not args.no_freeze:
        freeze_long_lived()  # as a worker does once its mappings load
    tracemalloc.start()
    converter.convert(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lat = []
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.n):
        t0 = time.perf_counter()
        converter.convert(data)
        lat.append(time.perf_counter() - t0)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    q = statistics.quantiles(lat, n=100, method="inclusive")  # exclusive extrapolates past the max
    what = "parse + map" if args.no_xsd else "parse + XSD validation + map"
    if args.no_freeze:
        what += ", collector not frozen"
    name = first.structure or example.stem
    print(f"convert {name} ({len(data) / 1024:.1f} kB, {what}, one core): {args.n / total:,.0f} msg/s")
    print(f"  latency p50 {q[49] * 1e3:.2f} ms   p99 {q[98] * 1e3:.2f} ms   max {max(lat) * 1e3:.2f} ms")
    print(f"  CPU time {cpu / args.n * 1e3:.2f} ms per message = {args.n / cpu:,.0f} msg/s of CPU (on a shared machine this says more than the wall clock)")
    print(f"  peak memory per conversion {peak / 1024:.0f} KiB (tracemalloc)")


if __name__ == "__main__":
    main()
