"""Benchmark `convert` on one core: a typical 12-segment ADT^A01, or an ORU^R01 with 20 OBX; tokenize + map + serialize.

Prints messages per second, latency percentiles and peak memory. No assertions:
speed is reported, never tested. Run: `python bench/convert.py [--message adt|oru] [--n 20000] [--patients 2000 | --same] [--no-freeze]`.
After warming up, the garbage collector is tuned as a worker tunes it (router.engine.freeze_long_lived).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import tracemalloc

import orjson

from adapters._compiled import compiled_modules
from router.engine import freeze_long_lived
from router.pipeline.convert import Converter
from router.settings import load_settings
from schemas.identity import first_valid_fnr

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


_ORU_TESTS = [
    ("NPU02319", "Hemoglobin;B", "134", "g/L", "134-170"),
    ("NPU01960", "Leukocytter;B", "6.2", "10*9/L", "3.5-10.0"),
    ("NPU03568", "Trombocytter;B", "245", "10*9/L", "145-390"),
    ("NPU01961", "Erytrocytter;B", "4.6", "10*12/L", "4.25-5.70"),
    ("NPU01370", "Erytrocytter vol.fr.;B", "0.42", "1", "0.40-0.50"),
    ("NPU01944", "MCV;Ery", "90", "fL", "82-98"),
    ("NPU02508", "MCH;Ery", "29", "pg", "27-33"),
    ("NPU03429", "Natrium;P", "140", "mmol/L", "137-145"),
    ("NPU03230", "Kalium;P", "4.1", "mmol/L", "3.5-4.4"),
    ("NPU01459", "Kreatinin;P", "82", "umol/L", "60-105"),
    ("NPU19748", "CRP;P", "<5", "mg/L", "<5"),
    ("NPU02192", "Glukose;P", "5.4", "mmol/L", "4.0-6.0"),
    ("NPU19763", "ALAT;P", "28", "U/L", "10-70"),
    ("NPU19654", "ASAT;P", "24", "U/L", "15-45"),
    ("NPU01567", "Kolesterol;P", "4.8", "mmol/L", "2.9-6.1"),
    ("NPU04094", "LDL-kolesterol;P", "2.9", "mmol/L", "<3.0"),
    ("NPU01566", "HDL-kolesterol;P", "1.3", "mmol/L", ">1.0"),
    ("NPU04998", "Triglyserid;P", "1.2", "mmol/L", "0.45-2.60"),
    ("NPU27300", "HbA1c;B", "38", "mmol/mol", "<42"),
    ("NPU03577", "TSH;P", "1.9", "mU/L", "0.5-3.6"),
]

ORU_R01 = "\r".join(
    [
        "MSH|^~\\&|LAB|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250115101000||ORU^R01^ORU_R01|LAB-0001|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8",
        "PID|1||15866112379^^^NOR^FNR~4471002^^^STOLAV^PI||NORDMANN^OLA^K||19610615|M",
        "PV1|1|I|MED^301^2^STOLAV||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR||||||||||||V25-0001^^^STOLAV^VN",
        "ORC|RE|ORD-1^DIPS|LAB-1^LABSYS",
        "OBR|1|ORD-1^DIPS|LAB-1^LABSYS|BLODPRV^Blodprøver^L|||20250115080000|||||||||9144900^LEGE^LISA^^^^^^HPR^^^^HPR||||||20250115101000||LAB|F",
    ]
    + [
        f"OBX|{i}|{'SN' if v.startswith('<') else 'NM'}|{code}^{name}^NLK||{('<^' + v[1:]) if v.startswith('<') else v}|{unit}|{rng}|{'H' if i == 11 else 'N'}|||F|||20250115080000"
        for i, (code, name, v, unit, rng) in enumerate(_ORU_TESTS, start=1)
    ]
) + "\r"

MESSAGES = {"adt": ("ADT^A01 (12 segments", ADT_A01), "oru": ("ORU^R01 (25 segments, 20 OBX", ORU_R01)}


def stream(text: str, n: int) -> list[bytes]:
    """*n* variants of *text*, one per patient, as a feed carries them.

    Each has its own synthetic fødselsnummer (valid check digits, month + 80),
    hospital patient number, visit number, order numbers and control id, so a cache keyed on
    patient data (ids, dates) answers no more often than it would in production;
    the sender, its practitioners and codes stay the same, as they do in a feed.
    """
    out = []
    for k in range(n):
        day, month, year2 = 1 + k % 28, 1 + (k // 28) % 12, 30 + (k // 336) % 60
        fnr = first_valid_fnr(day, month, year2, k % 400, synthetic=True)
        variant = (
            text.replace("15866112379", fnr)
            .replace("4471002", f"{4471002 + k}")
            .replace("V25-0001", f"V25-{k:06d}")
            .replace("CTRL-0001", f"CTRL-{k:06d}")
            .replace("LAB-0001", f"LAB-{k:06d}")
            .replace("ORD-1^", f"ORD-{k + 1}^")
            .replace("LAB-1^", f"LAB-{k + 1}^")
            .replace("19610615", f"19{year2:02d}{month:02d}{day:02d}")
        )
        out.append(variant.encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000, help="messages to convert")
    parser.add_argument("--message", choices=sorted(MESSAGES), default="adt", help="the message to convert: adt (ADT^A01) or oru (ORU^R01 with 20 OBX)")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print the 25 costliest functions instead")
    parser.add_argument("--patients", type=int, default=2000, help="distinct patients in the stream (each message is one of them, in turn)")
    parser.add_argument("--same", action="store_true", help="convert one message over and over (how sessions before 4 measured)")
    parser.add_argument("--no-freeze", action="store_true", help="leave the garbage collector as it is (the engine tunes it once its mappings load)")
    args = parser.parse_args()
    if args.n < 2:
        parser.error("--n must be at least 2: latency percentiles need two timings")
    converter = Converter(load_settings(environ={}))
    label, text = MESSAGES[args.message]
    feed = [text.encode()] if args.same else stream(text, max(args.patients, 1))
    for data in feed:
        assert converter.convert(data)[0].ok, "every benchmark message must convert"  # noqa: S101 - a bench sanity check
    for k in range(500):  # warm caches
        orjson.dumps(converter.convert(feed[k % len(feed)])[0].bundle)
    if not args.no_freeze:
        freeze_long_lived()  # as a worker does once its mappings load (router/engine.py)
    if args.profile:
        _profile(converter, feed[0], args.n)
        return
    tracemalloc.start()
    orjson.dumps(converter.convert(feed[0])[0].bundle)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lat: list[float] = []
    m = len(feed)
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(args.n):
        data = feed[k % m]
        t0 = time.perf_counter()
        orjson.dumps(converter.convert(data)[0].bundle)
        lat.append(time.perf_counter() - t0)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    q = statistics.quantiles(lat, n=100, method="inclusive")  # exclusive extrapolates past the max
    who = "one message repeated" if args.same else f"{m:,} patients in turn"
    print(f"convert {label}, tokenize + map + serialize, one core, {who}): {args.n / total:,.0f} msg/s")
    # CPU time is what this process spent: on a shared machine it says more than the wall clock.
    print(f"  CPU time {cpu / args.n * 1e6:.1f} us per message = {args.n / cpu:,.0f} msg/s of CPU")
    print(f"  latency p50 {q[49] * 1e6:.1f} us   p99 {q[98] * 1e6:.1f} us   max {max(lat) * 1e6:.1f} us")
    print(f"  peak memory per conversion {peak / 1024:.1f} KiB (tracemalloc)")
    print(f"  garbage collector: {'as Python leaves it' if args.no_freeze else 'tuned as in the engine (freeze_long_lived)'}")
    built = compiled_modules()
    print(f"  hot path: {f'compiled with Cython ({len(built)} modules)' if built else 'pure Python'}")


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
