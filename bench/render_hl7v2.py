"""Benchmark the outbound HL7 v2 renderer on one core: a converted ADT^A01 (or ORU^R01, 20 OBX) Bundle → ER7 bytes.

Prints messages per second and latency percentiles for rendering alone (the
conversion happens once, before timing). No assertions: speed is reported,
never tested. Run: `python bench/render_hl7v2.py [--message adt|oru] [--n 50000] [--version 2.3] [--charset 8859/1]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert import ADT_A01, ORU_R01  # the same messages as bench/convert.py

from adapters.hl7v2.render import Hl7v2Renderer
from router.pipeline.convert import Converter
from router.routing.model import QueueDestination
from router.settings import load_settings

_MESSAGES = {"adt": ("ADT^A01", ADT_A01), "oru": ("ORU^R01 (20 OBX)", ORU_R01)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50000, help="messages to render")
    parser.add_argument("--message", choices=sorted(_MESSAGES), default="adt", help="adt (12-segment ADT^A01) or oru (ORU^R01 with 20 OBX)")
    parser.add_argument("--version", default="2.5.1", help="the destination's HL7 version (MSH-12)")
    parser.add_argument("--charset", default="UNICODE UTF-8", help="the destination's charset (MSH-18)")
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be at least 2: latency percentiles need two timings")
    settings = load_settings(environ={})
    label, text = _MESSAGES[args.message]
    [conv] = Converter(settings).convert(text.encode())
    if not conv.ok:
        raise SystemExit(f"the benchmark message must convert: {conv.error}")
    destination = QueueDestination(kind="queue", queue="bench.adt", format="hl7v2", version=args.version, charset=args.charset)
    renderer = Hl7v2Renderer.for_destination(destination, settings, name="bench")
    for _ in range(1000):  # warm caches
        renderer.render(conv)
    lat: list[float] = []
    start = time.perf_counter()
    for _ in range(args.n):
        t0 = time.perf_counter()
        renderer.render(conv)
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100, method="inclusive")  # exclusive extrapolates past the max
    size = len(renderer.render(conv))
    print(f"render {label} Bundle → HL7 v{args.version} {args.charset} ({size} bytes, one core): {args.n / total:,.0f} msg/s")
    print(f"  latency p50 {q[49] * 1e6:.1f} us   p99 {q[98] * 1e6:.1f} us   max {max(lat) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
