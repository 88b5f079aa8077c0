"""`helsebro demo`: the whole engine on the embedded defaults, on the bundled examples, in under a minute.

It wipes `<HELSEBRO_DATA_DIR or .helsebro>/demo`, starts the engine in a
thread on the embedded broker and the SQLite record, sends examples/ (one
file per message, like `helsebro send`), waits until each delivery is
settled, stops the engine and prints what became of them: applied,
dead-lettered with the reason from the dead-letter headers, and the patients
now in the record. The bundled examples are synthetic people: the summary says so
and shows their identifiers in clear. A folder of one's own (`--examples DIR`)
may hold a real extract, so its patients are shown by the key each identifier is
found under (`helsebro find --patient-key`), never by their number (DESIGN §5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from router.cli.send import collect_files
from router.errors import ConfigError
from router.logging import configure_logging
from router.settings import PROJECT_ROOT, Settings, load_settings
from router.testing import drain_queue, publish, run_engine_in_thread, wait_until

__all__ = ["register"]

_DEADLINE_SECONDS = 120.0
_BAR = 30


def register(subparsers: Any) -> None:
    """Add the `demo` verb."""
    parser = subparsers.add_parser("demo", help="Run the engine on the bundled examples and show the result.", description=__doc__)
    parser.add_argument("--examples", type=Path, default=PROJECT_ROOT / "examples", metavar="DIR", help="Folder of example messages (default: the bundled examples/).")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    files = collect_files([args.examples]) if args.examples.is_dir() else []
    if not files:
        print(f"helsebro demo: no example messages under {args.examples}", file=sys.stderr)
        return 2
    settings = _fresh_settings()
    configure_logging(level="warning", phi_key=settings.phi_key_bytes)  # the demo's own output is the summary below
    print(f"helsebro demo: embedded broker and SQLite record in {settings.data_dir}", file=sys.stderr)
    handle = run_engine_in_thread(settings)
    try:
        publish(settings, (f.read_bytes() for f in files), app_id="helsebro-demo")
        wait_until(lambda: not handle.thread.is_alive() or _progress(handle.stats.deliveries, len(files), sys.stderr), _DEADLINE_SECONDS, interval=0.1, what="all examples settled")
    except TimeoutError:
        # Say what went wrong and exit 1, rather than a traceback after the wait.
        print(f"\nhelsebro demo: {handle.stats.deliveries} of {len(files)} examples settled within {_DEADLINE_SECONDS:.0f} s", file=sys.stderr)
        handle.stop()
        return 1
    finally:
        if handle.thread.is_alive():
            handle.stop()
    if handle.errors:  # the engine ended early: do not wait out the deadline for deliveries that never come
        print(f"\nhelsebro demo: the engine stopped: {type(handle.errors[0]).__name__}: {handle.errors[0]}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    _summary(settings, handle.stats, len(files), sys.stdout, synthetic=_is_bundled(args.examples))
    return 0


def _is_bundled(examples: Path) -> bool:
    """True when *examples* is the bundled, synthetic examples/ folder or one inside it."""
    bundled = (PROJECT_ROOT / "examples").resolve()
    where = examples.resolve()
    return where == bundled or bundled in where.parents


def _fresh_settings() -> Settings:
    """Settings for a wiped demo folder, ignoring any broker or record URL in the environment."""
    environ = {k: v for k, v in os.environ.items() if k not in ("HELSEBRO_BROKER_URL", "HELSEBRO_RECORD_URL")}
    base = Path(environ.get("HELSEBRO_DATA_DIR") or ".helsebro")
    demo_dir = base / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    try:
        demo_dir.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"HELSEBRO_DATA_DIR {base}: cannot hold the demo: {exc.strerror or exc}") from exc
    return load_settings(environ=environ, data_dir=str(demo_dir))


def _progress(done: int, total: int, out: TextIO) -> bool:
    filled = _BAR * min(done, total) // max(total, 1)
    out.write(f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total}")
    out.flush()
    return done >= total


def _summary(settings: Settings, stats: Any, files: int, out: TextIO, *, synthetic: bool) -> None:
    from adapters.fhir.record import open_record
    from router.pipeline.convert import patient_key_for

    dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
    print(f"Messages in:    {stats.messages} (from {files} files)", file=out)
    print(f"Applied:        {stats.applied} (unchanged: {stats.unchanged})", file=out)
    print(f"Dead-lettered:  {stats.dead_lettered}", file=out)
    for headers, _body in dead:
        control = headers.get("x-helsebro-control-id") or "?"
        where = headers.get("x-helsebro-location") or "-"
        print(f"  - {control}: {headers.get('x-helsebro-reason')} (stage {headers.get('x-helsebro-stage')}, at {where})", file=out)
    record = open_record(settings)
    try:
        patients = record.search("Patient", {})
        note = " (synthetic people from the bundled examples: identifiers in clear)" if synthetic else " (by patient key: `helsebro find --patient-key`)"
        print(f"Patients in the record: {len(patients)}{note}", file=out)
        for patient in patients:
            identifiers = patient.get("identifier", [])
            if synthetic:
                ids = ", ".join(f"{i.get('system', '')}|{i.get('value', '')}" for i in identifiers)
            else:
                ids = ", ".join(f"{i.get('system', '')} {patient_key_for(i.get('system', ''), i.get('value', ''), settings.phi_key_bytes)}" for i in identifiers)
            encounters = len(record.search("Encounter", {"subject": f"Patient/{patient['id']}"}))
            print(f"  - Patient/{patient['id']}: {ids}; encounters: {encounters}", file=out)
    finally:
        record.close()
    print(f"Data in {settings.data_dir} (wiped at the next demo).", file=out)
