"""`helsebro send PATH...`: publish files to the inbound exchange, one confirmed message per file.

Folders are searched recursively for *.hl7, *.er7, *.txt and *.xml, in sorted
order; files are sent in the order given. Exit 0 when every file was sent,
1 when any failed, 2 for a usage error (a path that does not exist).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adapters.amqp.connection import declare_topology, open_connection
from adapters.amqp.outbound import Publisher
from router.errors import BrokerUnavailable
from router.settings import load_settings

__all__ = ["collect_files", "register"]

SUFFIXES = (".hl7", ".er7", ".txt", ".xml")


def register(subparsers: Any) -> None:
    """Add the `send` verb."""
    parser = subparsers.add_parser("send", help="Publish message files to the inbound queue.", description=__doc__)
    parser.add_argument("paths", nargs="+", metavar="PATH", type=Path, help="A message file, or a folder to search recursively.")
    parser.set_defaults(func=_send)


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Expand *paths* in order: a file as is, a folder to its message files, sorted.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(str(path))
    return files


def _send(args: argparse.Namespace) -> int:
    try:
        files = collect_files(args.paths)
    except FileNotFoundError as exc:
        print(f"helsebro send: no such file or folder: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    sent = failed = 0
    conn = open_connection(settings)
    try:
        declare_topology(conn, settings)
        publisher = Publisher(conn, settings, app_id="helsebro-send")
        for path in files:
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
                print(f"failed {path}: {exc}", flush=True)
                continue
            sent += 1
            print(f"sent {path} ({len(body)} bytes)", flush=True)
        publisher.close()
    except BrokerUnavailable as exc:
        print(f"helsebro send: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.release()
    print(f"{sent} sent, {failed} failed, {len(files)} files")
    return 1 if failed else 0
