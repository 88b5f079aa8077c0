"""Benchmark `convert` on one core: a typical 12-segment ADT^A01, tokenize + map + serialize.

Prints messages per second, latency percentiles and peak memory. No assertions:
speed is reported, never tested. Run: `python bench/convert.py [--n 20000]`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import tracemalloc

import orjson

from router.pipeline.convert import Converter
from router.settings import load_settings

ADT_A01 = "\r".join(
    [
        "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||ADT^A01^ADT_A01|CTRL-0001|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8",
        "EVN|A01|20250110083000|||9144900^LEGE^LISA",
        "PID|1||15866112379^^^NOR^FNR~4471002^^^STOLAV^PI||NORDMANN^OLA^KRISTIAN||19610615|M|||Storgata 1^^TRONDHEIM^^7011^NOR^H||^PRN^PH^^^^^^^^^+4790000000~^NET^Internet^ola@example.no||NO|G||V25-0001^^^STOLAV^AN",
        "PD1|||FASTLEGEKONTORET^^1234567",
        "NK1|1|NORDMANN^KARI|SPO^Ektefelle|Storgata 1^^TRONDHEIM^^7011^NOR|^PRN^PH^^^^^^^^^+4790000001",
        "NK1|2|NORDMANN^PER|CHD^Barn",
        "PV1|1|I|MED^301^2^STOLAV||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR|||MED||||7|||9144901^DOKTER^DAG^^^^^^HPR^^^^HPR||V25-0001^^^STOLAV^VN|||||||||||||||||||||||||20250110082500",
        "PV2|||^Brystsmerter",
        "OBX|1|NM|8302-2^Height^LN||180|cm",
        "OBX|2|NM|29463-7^Weight^LN||82|kg",
        "AL1|1|DA|^Penicillin",
        "DG1|1||R07.4^Brystsmerter^ICD10|||A",
    ]
) + "\r"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000, help="messages to convert")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print the 25 costliest functions instead")
    args = parser.parse_args()
    converter = Converter(load_settings(environ={}))
    data = ADT_A01.encode()
    assert converter.convert(data)[0].ok, "the benchmark message must convert"  # noqa: S101 - a bench sanity check
    for _ in range(500):  # warm caches
        orjson.dumps(converter.convert(data)[0].bundle)
    if args.profile:
        _profile(converter, data, args.n)
        return
    tracemalloc.start()
    orjson.dumps(converter.convert(data)[0].bundle)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lat: list[float] = []
    start = time.perf_counter()
    for _ in range(args.n):
        t0 = time.perf_counter()
        orjson.dumps(converter.convert(data)[0].bundle)
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100)
    print(f"convert ADT^A01 (12 segments, tokenize + map + serialize, one core): {args.n / total:,.0f} msg/s")
    print(f"  latency p50 {q[49] * 1e6:.1f} us   p99 {q[98] * 1e6:.1f} us   max {max(lat) * 1e6:.1f} us")
    print(f"  peak memory per conversion {peak / 1024:.1f} KiB (tracemalloc)")


def _profile(converter: Converter, data: bytes, n: int) -> None:
    """Print where the time goes; cProfile slows calls down, so read shares, not speeds."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        orjson.dumps(converter.convert(data)[0].bundle)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
