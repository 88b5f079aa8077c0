"""`helsebro apprec FILE`: print the AppRec(s) the engine would send for one KITH XML message.

Runs what the engine runs before it writes: safe parse, XSD validation when
HELSEBRO_XSD_DIR is set, envelope checks, and the mapping (a message no mapping
serves, or whose content it refuses, is answered as the engine answers it). What
the record itself might refuse later is not known here. Prints one AppRec per recipient on
standard output, each preceded by a comment line
``<!-- to HER-id 59, role PRIM, AppRec 1.1, status 1 -->``; the reason of a
rejection goes to standard error. Exit 0 when every AppRec is positive (or the
message is itself an AppRec the engine takes as a receipt, and gets none), 1 when
they are negative (or the message is an AppRec the engine dead-letters), 2 for a
usage error (no such file, one that is no regular file, bad settings, a file
that is not XML: the engine answers that as HL7 v2, with an ACK).

The verb reaches the KITH adapter directly: it is a composition root, like
convert reaching the HL7 v2 adapter through router/pipeline/convert.py.
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path
from typing import Any

from router.settings import load_settings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the `apprec` verb."""
    p = sub.add_parser("apprec", help="print the AppRec(s) Helsebro would send for a KITH XML message", description=__doc__.split("\n\n")[0])
    p.add_argument("file", metavar="FILE", help="one KITH XML message (MsgHead, Message or AppRec)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and print the AppRecs for FILE; return the exit code."""
    from adapters.kith import build_apprecs, schema_set, validation_status
    from adapters.kith.apprec import read_receipt, receipt_error
    from router.errors import NoMapping
    from router.pipeline.convert import Converter

    path = Path(args.file)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device: reading it may never end
            print(f"helsebro apprec: {path}: not a regular file", file=sys.stderr)
            return 2
        data = path.read_bytes()
    except OSError as exc:  # strerror is None for an error raised with a message only: print "None" never
        print(f"helsebro apprec: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    if schema_set(settings.xsd_dir) is None:
        print(f"helsebro apprec: {validation_status(None)}", file=sys.stderr)
    # The engine's own path: read, validate, then map. A message no mapping serves (T10) or whose
    # content the mapping refuses gets the AppRec the engine sends, not only what the envelope says.
    received = Converter(settings).convert(data)[0]
    if received.format != "kith":
        # The engine answers only XML with AppRecs; these bytes it reads as HL7 v2 and answers with an HL7 ACK.
        print(f"helsebro apprec: {path} is not KITH XML: the engine reads it as HL7 v2 and answers with an HL7 ACK, not an AppRec", file=sys.stderr)
        return 2
    error = received.error
    if received.envelope is not None and received.envelope.kind == "AppRec" and isinstance(error, NoMapping):
        # An AppRec answers a message; it is not one to map, and is never answered. The engine takes it as a
        # receipt, or dead-letters one that names no original: say that, and exit 1 as for any refusal.
        error = receipt_error(read_receipt(received.envelope))
    apprecs = build_apprecs(received.envelope, error=error)
    if error is not None:
        where = f" at {error.location}" if error.location else ""
        code = apprecs[0].error_code if apprecs else "-"
        after = "" if apprecs else " (the engine dead-letters it)"
        print(f"helsebro apprec: {path}: {code}: {error.reason}{where}{after}", file=sys.stderr)
    if not apprecs:
        print("<!-- no AppRec: the message is itself an AppRec, and an AppRec is never answered -->")
        return 0 if error is None else 1
    out = sys.stdout
    for apprec in apprecs:
        status = "1" if apprec.positive else f"2 {apprec.error_code}"
        out.write(f"<!-- to HER-id {apprec.recipient_her_id or 'unknown'}, role {apprec.role}, AppRec {apprec.version}, status {status} -->\n")
        out.write(apprec.xml.decode("utf-8"))
    out.flush()
    return 0 if all(a.positive for a in apprecs) else 1
