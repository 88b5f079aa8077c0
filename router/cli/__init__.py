"""The `helsebro` command: one module per verb, each with `register(subparsers)`.

Exit codes are a contract: 0 success, 1 the work found a problem, 2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from router.errors import ConfigError

# Each module defines register(subparsers) that adds its verb and sets `func`.
_VERBS = (
    "router.cli.convert",
    "router.cli.send",
    "router.cli.run",
    "router.cli.serve",
    "router.cli.demo",
    "router.cli.mappings",
    "router.cli.apprec",
    "router.cli.status",
    "router.cli.dlq",
    "router.cli.find",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every verb that is installed."""
    parser = argparse.ArgumentParser(prog="helsebro", description="Integration engine for Norwegian health services.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for dotted in _VERBS:
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            if exc.name == dotted:  # that verb is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"helsebro: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
