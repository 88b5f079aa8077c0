"""Every command the operators' runbook shows is one the CLI accepts: a renamed flag fails here, not on call."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from router.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
_PLACEHOLDERS = {"ID": "0123abcd", "ID...": "0123abcd"}


def _commands(doc: Path) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.split("  #")[0].split("<<<")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("helsebro ")]


@pytest.mark.parametrize("command", _commands(ROOT / "docs" / "operations.md"))
def test_the_runbook_commands_parse(command):
    argv = [_PLACEHOLDERS.get(word, word) for word in shlex.split(command)[1:]]
    args = build_parser().parse_args(argv)  # argparse exits 2 on a flag or verb the CLI does not have
    assert callable(args.func)


def test_the_runbook_shows_every_operator_verb():
    verbs = {c.split()[1] for c in _commands(ROOT / "docs" / "operations.md")}
    assert verbs >= {"status", "find", "dlq"}
