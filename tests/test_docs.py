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


_ARCHITECTURE = ROOT / "docs" / "architecture.md"


def test_the_architecture_names_only_files_and_folders_that_exist():
    """docs/architecture.md is the map of the tree, docs/decisions.md its reasons: a module either names that was moved or renamed fails here."""
    text = _ARCHITECTURE.read_text(encoding="utf-8") + (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:adapters|router|schemas|config|mappings)/[\w/.-]*\w/?)", text))
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names what is not in the tree: {missing}"


def test_the_architecture_says_who_owns_every_room():
    """Each package of adapters/ and router/ has its row in "Who owns what", so a new room is not left off the map."""
    text = _ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    rooms = {f"{p.parent.parent.name}/{p.parent.name}/" for top in ("adapters", "router") for p in (ROOT / top).glob("*/__init__.py")}
    owners = set(re.findall(r"^\| `([\w/]+/)`", table, flags=re.M))
    assert rooms <= owners, f"rooms with no row in docs/architecture.md's Who owns what: {sorted(rooms - owners)}"


def test_the_architecture_is_one_page():
    """The guide asks for one page: the path and who owns what; the reasons live in docs/decisions.md."""
    assert len(_ARCHITECTURE.read_text(encoding="utf-8").splitlines()) <= 160


def test_the_architecture_places_every_module_outside_a_room():
    """A module directly under adapters/ or router/ (settings, logging, errors...) has no room's row to stand in: it needs its own."""
    text = _ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    modules = {f"{top}/{p.name}" for top in ("adapters", "router") for p in (ROOT / top).glob("*.py") if p.name != "__init__.py"}
    placed = {m for m in modules if f"`{m}`" in table}
    assert modules == placed, f"modules with no row in docs/architecture.md's Who owns what: {sorted(modules - placed)}"


def test_every_setting_has_a_row_in_the_readme_and_every_named_one_is_read():
    """Each HELSEBRO_* variable router/settings.py reads has its row in README's settings table; one the docs name is read by the code."""
    from router.settings import _ENV

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| `HELSEBRO_"))
    assert not [v for v in _ENV.values() if f"`{v}`" not in rows], "settings with no row in README's table"
    named = set(re.findall(r"HELSEBRO_[A-Z_]+", readme + "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))))
    code = "".join(p.read_text(encoding="utf-8") for top in ("adapters", "router", "tests") for p in (ROOT / top).rglob("*.py")) + (ROOT / "setup.py").read_text(encoding="utf-8")
    unread = sorted(n for n in named if n not in _ENV.values() and not re.search(rf"environ(?:\.get\(|\[)\s*[\"']{n}[\"']", code))
    assert not unread, f"docs name settings the code never reads: {unread}"


def test_every_setting_a_command_reads_outside_settings_has_a_row_in_the_readme():
    """A HELSEBRO_* variable read under router/ straight from the environment (HELSEBRO_OPERATOR, the audit log's
    operator name) is a setting too: it has its row in README's settings table, as router/settings.py's do (review H168)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| `HELSEBRO_"))
    code = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "router").rglob("*.py"))
    read = set(re.findall(r"environ(?:\.get\(|\[)\s*[\"'](HELSEBRO_[A-Z_]+)[\"']", code))
    assert "HELSEBRO_OPERATOR" in read
    assert not sorted(v for v in read if f"`{v}`" not in rows), "settings read under router/ with no row in README's table"
