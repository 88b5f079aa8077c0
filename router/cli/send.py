"""`helsebro send PATH...`: publish files to the inbound exchange, one confirmed message per file.

Folders are searched recursively for *.hl7, *.er7, *.txt and *.xml, in sorted
order, skipping hidden files and folders (`._x.hl7`, `.git/`); files are sent in
the order given. Exit 0 when every file was sent, 1 when any failed, 2 for a
usage error (a path that does not exist, cannot be looked at, or is neither a
regular file nor a folder: a FIFO), named as such. A folder with no message file
sends nothing: it is said on stderr, and exit 0; with nothing at all to send, no
connection to the broker is opened.

A file that cannot be read fails alone and the rest are sent. A publish the
broker does not confirm (connection lost, no confirm in time, nack, unroutable)
stops the run there: a file sent after it would reach the engine ahead of it (an
A08 before its A01), so each file after it is named `not sent`, and sending the
failed one and those again keeps the order (a copy the broker did take after all
is settled as a duplicate). The connection is then dropped without the closing
handshake, which a broker that stopped answering would never finish.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adapters.amqp.connection import declare_topology, open_connection
from adapters.amqp.outbound import Publisher
from router.cli._inputs import UsageError, expand
from router.errors import BrokerUnavailable
from router.settings import load_settings

__all__ = ["collect_files", "register"]


def register(subparsers: Any) -> None:
    """Add the `send` verb."""
    parser = subparsers.add_parser("send", help="Publish message files to the inbound queue.", description=__doc__)
    parser.add_argument("paths", nargs="+", metavar="PATH", type=Path, help="A message file, or a folder to search recursively.")
    parser.set_defaults(func=_send)


def collect_files(paths: Iterable[Path], *, verb: str | None = None) -> list[Path]:
    """Expand *paths* in order as every verb does (router/cli/_inputs.py): a file as is, a folder to its message files, sorted.

    Raises:
        UsageError: a path does not exist, cannot be looked at, or is neither a regular file nor a folder;
            its words say which, with the path.
    """
    return [file for file, _rel in expand([str(path) for path in paths], verb=verb)]


def _send(args: argparse.Namespace) -> int:
    try:
        files = collect_files(args.paths, verb="send")
    except UsageError as exc:  # what the PATH is (a FIFO, a folder that denies access), as `convert` says it
        print(f"helsebro send: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    if not files:  # said on stderr by collect_files; no connection: a broker that is down is no failure to send nothing
        print(f"0 sent, 0 failed, {len(files)} files")
        return 0
    sent = failed = 0
    stopped: int | None = None  # the index of the file the broker did not take
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
        publisher = Publisher(conn, settings, app_id="helsebro-send")
        for index, path in enumerate(files):
            try:
                body = path.read_bytes()
            except OSError as exc:  # unreadable, or gone since the folder was searched: this file fails, the rest go
                failed += 1
                print(f"failed {path}: cannot read: {exc.strerror or exc}", flush=True)
                continue
            try:
                publisher.publish_inbound(body)
            except BrokerUnavailable as exc:
                failed += 1
                print(f"failed {path}: {_why(exc)}", flush=True)
                stopped = index
                break
            sent += 1
            print(f"sent {path} ({len(body)} bytes)", flush=True)
        if stopped is None:
            publisher.close()
    except BrokerUnavailable as exc:
        print(f"helsebro send: {exc}", file=sys.stderr)
        return 1
    finally:
        if stopped is None:
            conn.release()
        else:
            conn.collect()  # no closing handshake: the broker may not answer it
    unsent = files[stopped + 1:] if stopped is not None else []
    for path in unsent:
        print(f"not sent {path}")
    if stopped is not None:
        print(f"helsebro send: stopped at {files[stopped]}, which the broker did not take: {len(unsent)} file(s) after it not sent, "
              "to keep the order; send it and them again, in this order", file=sys.stderr)
    print(f"{sent} sent, {failed} failed, " + (f"{len(unsent)} not sent, " if unsent else "") + f"{len(files)} files")
    return 1 if failed else 0


def _why(exc: BrokerUnavailable) -> str:
    """What failed, and the broker's own words when it refused (`message size … is larger than configured max size …`).

    The broker's reply text names limits, queues and exchanges, never the message: it tells
    a file too large to send (split it) from a broker that went away (send it again).
    """
    said = getattr(exc.__cause__, "reply_text", None)
    return f"{exc} ({said})" if said else str(exc)
