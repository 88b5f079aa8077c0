"""`helsebro convert [--out DIR] [--explain] [--unmapped] PATH...`: stateless conversion to NDJSON.

Contract (scripts rely on it): one JSON document per message, in input order;
a Bundle of type transaction, or an OperationOutcome naming the position.
Exit 0 when every message converted, 1 when any did not, 2 for a usage error.
A folder with no message file converts nothing: it is said on stderr, and exit 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from router.cli._inputs import UsageError, expand
from router.settings import load_settings


def register(sub: Any) -> None:
    """Add the `convert` verb."""
    p = sub.add_parser("convert", help="convert HL7 v2 and KITH XML message files to FHIR R4 (NDJSON)", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="a message file or a folder (searched for *.hl7 *.er7 *.txt *.xml)")
    p.add_argument("--out", metavar="DIR", help="write x/y.hl7 to DIR/x/y.hl7.ndjson instead of standard output")
    p.add_argument("--explain", action="store_true", help="show on stderr which rule (file:line) made each output element, from which source")
    p.add_argument("--unmapped", action="store_true", help="list on stderr every non-empty source field that no rule read")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert every PATH; return the exit code."""
    from router.pipeline.convert import Converter  # loads mappings; keep `helsebro --help` fast

    unreadable: list[Path] = []  # folders that could not be listed: said on stderr by expand, and they fail the run
    try:
        files = expand(args.paths, verb="convert", unreadable=unreadable)
    except UsageError as exc:
        print(f"helsebro convert: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        print(f"helsebro convert: --out {out_dir}: exists and is not a folder", file=sys.stderr)
        return 2
    if out_dir is not None and (clash := _shared_output(files)):
        print(f"helsebro convert: --out {out_dir}: {clash[0]} and {clash[1]} would both be written to {clash[2]}.ndjson", file=sys.stderr)
        return 2
    converter = Converter(load_settings())
    try:
        return max(_convert_all(converter, files, out_dir, args), 1 if unreadable else 0)
    except BrokenPipeError:
        # The reader stopped (`convert DIR | head`): not every message was written, and there is nobody to tell.
        _silence_stdout()
        return 1
    except OSError as exc:  # --out cannot be written (permissions, disk full): what was written stays
        print(f"helsebro convert: cannot write under {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2 if out_dir is not None and not _writable(out_dir) else 1


def _convert_all(converter: Any, files: list[tuple[Path, Path]], out_dir: Path | None, args: argparse.Namespace) -> int:
    failed = 0
    for path, rel in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"helsebro convert: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            failed += 1
            continue
        results = converter.convert(data, trace=args.explain)
        if not results:
            print(f"helsebro convert: {path}: no message found", file=sys.stderr)
            failed += 1
            continue
        lines = []
        for r in results:
            doc: dict[str, Any] = r.bundle if r.ok and r.bundle is not None else r.outcome()
            explain = doc.pop("_explain", None)
            if args.explain and explain:
                _print_explain(sys.stderr, path, r.index, explain)
            if args.unmapped and r.ok:
                print(f"{path}#{r.index + 1}: unmapped: {', '.join(r.unmapped) or '(none)'}", file=sys.stderr)
            failed += 0 if r.ok else 1
            lines.append(orjson.dumps(doc))
        _write(out_dir, rel, lines)
    return 1 if failed else 0


def _shared_output(files: list[tuple[Path, Path]]) -> tuple[Path, Path, Path] | None:
    """Find two different inputs with one relative path (a/m.hl7, b/m.hl7): under --out the second would overwrite the first."""
    seen: dict[Path, Path] = {}
    for path, rel in files:
        first = seen.setdefault(rel, path)
        if first.resolve() != path.resolve():
            return first, path, rel
    return None


def _writable(out_dir: Path) -> bool:
    """Tell whether --out can hold files at all: if not, the option was unusable (a usage error), not one file."""
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit finds no closed pipe to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write(out_dir: Path | None, rel: Path, lines: list[bytes]) -> None:
    payload = b"".join(line + b"\n" for line in lines)
    if out_dir is None:
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    target = out_dir / rel.parent / (rel.name + ".ndjson")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)


def _print_explain(stream: TextIO, path: Path, index: int, explain: list[tuple[str, str, str]]) -> None:
    stream.write(f"{path}#{index + 1}:\n")
    for target, where, source in explain:
        stream.write(f"  {target:<32} <- {source:<28} {where}\n")
