"""Mapping fixture cases: a message file beside its expected FHIR output.

    mappings/hl7v2/messages/ADT_A01.cases/admit.hl7
    mappings/hl7v2/messages/ADT_A01.cases/admit.expected.json

The expected file holds a JSON list, one document per message in the case
file, exactly as `helsebro convert` writes them. Outputs are also validated
with fhir.resources here: full validation belongs to tests, not the hot path.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CASE_SUFFIXES = (".hl7", ".er7", ".txt", ".xml")


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one fixture case."""

    name: str
    source: Path
    expected: Path
    passed: bool
    detail: str  # a unified diff, or why the case could not run


EXPECTED_SUFFIX = ".expected.json"


def find_cases(root: Path) -> list[tuple[Path, Path]]:
    """Return (message file, expected file) pairs under *root*'s `*.cases/` folders.

    Only files are cases: a folder named `x.hl7` is not a message to convert.
    """
    out = []
    for folder in sorted(p for p in root.rglob("*.cases") if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in CASE_SUFFIXES and f.is_file():
                out.append((f, f.with_name(f.stem + EXPECTED_SUFFIX)))
    return out


def orphans(root: Path, cases: list[tuple[Path, Path]]) -> list[Path]:
    """The expected outputs under *root* that no case file produces.

    Why: an expected file whose message was renamed or deleted is never compared, so a
    fixture the author believes runs would pass silently; the test run names it instead.
    """
    wanted = {expected for _, expected in cases}
    found = (p for folder in sorted(root.rglob("*.cases")) if folder.is_dir() for p in sorted(folder.glob("*" + EXPECTED_SUFFIX)))
    return [p for p in found if p not in wanted]


def render(docs: list[dict[str, Any]]) -> str:
    """Serialise outputs the one way expected files are written: stable and diffable.

    The provenance tag's content hash is blanked: it changes with every edit to
    the folder, and a case should fail only when the output itself changes. Its
    display names the mapping file under the folder that holds the mappings, and
    that folder's own name is read as `mappings`: a tree copied under another
    name (an author's working copy) passes the same cases.
    """
    for doc in docs:
        metas = [doc.get("meta", {})] + [e.get("resource", {}).get("meta", {}) for e in doc.get("entry", [])]
        for meta in metas:
            for tag in meta.get("tag", []):
                if tag.get("system") == "urn:helsebro:mapping" and "@" in tag.get("code", ""):
                    tag["code"] = tag["code"].split("@")[0] + "@<content-hash>"
                    display = tag.get("display")
                    if isinstance(display, str) and "/" in display:
                        tag["display"] = "mappings/" + display.split("/", 1)[1]
    return json.dumps(docs, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _validate(docs: list[dict[str, Any]]) -> str | None:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.operationoutcome import OperationOutcome
    from pydantic import ValidationError

    for i, doc in enumerate(docs, 1):
        model = Bundle if doc.get("resourceType") == "Bundle" else OperationOutcome
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            return f"message {i}: not valid FHIR R4 {model.__name__}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    return None


def run_case(source: Path, expected: Path, convert: Callable[[bytes], list[dict[str, Any]]], *, update: bool, display: Callable[[Path], str]) -> CaseResult:
    """Convert *source*, validate, and compare with (or, with *update*, rewrite) *expected*."""
    name = f"{source.parent.name[: -len('.cases')]}/{source.stem}"
    try:
        data = source.read_bytes()
    except OSError as exc:
        return CaseResult(name, source, expected, False, f"cannot read {display(source)}: {exc.strerror}")
    docs = convert(data)
    problem = _validate(docs)
    if problem:
        return CaseResult(name, source, expected, False, problem)
    actual = render(docs)
    if update:
        expected.write_text(actual, encoding="utf-8")
        return CaseResult(name, source, expected, True, "updated")
    if not expected.exists():
        return CaseResult(name, source, expected, False, f"no expected output {display(expected)}; review the output and run with --update")
    try:
        want = expected.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        return CaseResult(name, source, expected, False, f"cannot read {display(expected)}: {why}; review the output and run with --update")
    if want == actual:
        return CaseResult(name, source, expected, True, "")
    diff = difflib.unified_diff(want.splitlines(keepends=True), actual.splitlines(keepends=True), fromfile=display(expected), tofile="actual output", n=2)
    return CaseResult(name, source, expected, False, "".join(diff))
