"""Benchmark the outbound KITH renderer on one core: the ADT^A01 of bench/convert.py as PLO "melding om innlagt pasient".

Converts the message once, then renders its Bundle N times with
mappings/outbound/kith/PLO_InnlagtPasient.yaml (tree fill + MsgHead +
serialize), without and, when ../shared/norsk/skjema is present, with national
XSD validation. Prints messages per second and latency percentiles. No
assertions: speed is reported, never tested.

    python bench/render_kith.py [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from adapters.kith import KithRenderer, load_outbound, schema_set
from router.contracts import Converted
from router.pipeline.convert import Converter
from router.settings import PROJECT_ROOT, load_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert import ADT_A01  # the same message bench/convert.py measures

MAPPING = PROJECT_ROOT / "mappings" / "outbound" / "kith" / "PLO_InnlagtPasient.yaml"
SKJEMA = PROJECT_ROOT.parent / "shared" / "norsk" / "skjema"


def _measure(label: str, renderer: KithRenderer, conv: Converted, n: int) -> None:
    for _ in range(min(500, n)):  # warm caches (and the compiled schema)
        renderer.render(conv)
    lat: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        renderer.render(conv)
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100, method="inclusive")  # exclusive extrapolates past the max
    print(f"render PLO_InnlagtPasient ({label}, one core): {n / total:,.0f} msg/s")
    print(f"  latency p50 {q[49] * 1e6:.1f} us   p99 {q[98] * 1e6:.1f} us   max {max(lat) * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000, help="renders per measurement")
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be at least 2: latency percentiles need two timings")
    [conv] = Converter(load_settings(environ={})).convert(ADT_A01.encode())
    mapping = load_outbound(MAPPING)
    plain = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345")
    print(f"one message: {len(plain.render(conv))} bytes")
    _measure("no XSD", plain, conv, args.n)
    if not SKJEMA.is_dir():
        print(f"with XSD: skipped, {SKJEMA} is absent")
        return
    validated = KithRenderer(mapping, destination_name="kommune", receiver_her_id="12345", schemas=schema_set(SKJEMA))
    _measure("with national XSD validation", validated, conv, args.n)


if __name__ == "__main__":
    main()
