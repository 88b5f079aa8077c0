"""Fixture cases and lint of outbound KITH mappings: a source message beside the exact XML (or refusal) it must give.

    mappings/outbound/kith/PLO_InnlagtPasient.cases/admission_fnr.hl7                 a source message (or a KITH *.xml)
                                                    admission_fnr.expected.xml        the rendered bytes, or
                                                    no_time.expected-error.txt        the refusal's reason

`helsebro mappings lint|test` and tests/mappings run these the same way.
Every case renders for one fixed destination (`CASE_DESTINATION`, HER-id
`CASE_RECEIVER_HER_ID`) with the `own` defaults of router/settings.py, so an
expected file does not change with a deployment's engine.yaml or routes.yaml.
Converting the source is the caller's (the engine's Converter), so this module
needs no pipeline.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.kith._outbound import load_outbound
from router.contracts import OutboundCaseResult as KithOutboundCaseResult  # one result type for both formats' cases
from router.errors import ConfigError, MappingError, MessageError

if TYPE_CHECKING:
    from adapters.kith.xsd import SchemaSet
    from router.contracts import Converted

__all__ = [
    "CASE_DESTINATION",
    "CASE_RECEIVER_HER_ID",
    "KithOutboundCase",
    "KithOutboundCaseResult",
    "find_kith_outbound_cases",
    "lint_kith_outbound",
    "run_kith_outbound_case",
]

CASE_DESTINATION = "kommune"
"""The destination name every case renders for (also the receiver's name: cases set no receiver_name)."""

CASE_RECEIVER_HER_ID = "12345"
"""The receiver HER-id every case renders for."""

_SOURCES = (".hl7", ".xml")


@dataclass(frozen=True, slots=True)
class KithOutboundCase:
    """One source message and the mapping it exercises; the expected files sit beside the source."""

    name: str
    source: Path
    mapping: Path

    @property
    def expected_xml(self) -> Path:
        """`<case>.expected.xml`: the exact bytes the source must render to."""
        return self.source.with_name(f"{self.source.stem}.expected.xml")

    @property
    def expected_error(self) -> Path:
        """`<case>.expected-error.txt`: the reason the source must be refused with."""
        return self.source.with_name(f"{self.source.stem}.expected-error.txt")


def find_kith_outbound_cases(root: Path) -> list[KithOutboundCase]:
    """Return every case under *root*'s `<MAPPING>.cases/` folders, sorted."""
    out = []
    for cases in sorted(p for p in root.glob("*.cases") if p.is_dir()):
        mapping = root / (cases.name[: -len(".cases")] + ".yaml")
        for source in sorted(p for p in cases.iterdir() if p.suffix in _SOURCES and ".expected" not in p.name):
            out.append(KithOutboundCase(f"{mapping.stem}/{source.stem}", source, mapping))
    return out


def lint_kith_outbound(root: Path) -> list[MappingError]:
    """Run every load-time check on the outbound mappings under *root*; return the errors, the first of each file."""
    errors: list[MappingError] = []
    for file in sorted(root.glob("*.yaml")):
        try:
            load_outbound(file)
        except MappingError as exc:  # the compiler stops at a file's first error
            errors.append(exc)
    return errors


def run_kith_outbound_case(
    case: KithOutboundCase,
    convert: Callable[[bytes], Converted],
    *,
    schemas: SchemaSet | None = None,
    update: bool = False,
) -> KithOutboundCaseResult:
    """Render the case's source with its mapping and compare with (or, with *update*, rewrite) its expected file.

    *convert* turns a source message into a Converted (the engine's Converter);
    *schemas*, when given, validates each rendered message against the national XSD.
    """
    from adapters.kith.render import KithRenderer  # render imports this package's compiler too

    try:
        renderer = KithRenderer(
            load_outbound(case.mapping), destination_name=CASE_DESTINATION, receiver_her_id=CASE_RECEIVER_HER_ID,
            queue=CASE_DESTINATION, schemas=schemas,
        )
    except (MappingError, ConfigError) as exc:
        return KithOutboundCaseResult(case.name, False, str(exc))
    conv = convert(case.source.read_bytes())
    if not conv.ok:
        return KithOutboundCaseResult(case.name, False, f"the source does not convert: {conv.error.reason if conv.error else 'no Bundle'}")
    try:
        out: bytes | None = renderer.render(conv)
        reason = None
    except MessageError as exc:
        out, reason = None, exc.reason
    if update:
        return _update(case, out, reason)
    return _compare(case, out, reason)


def _update(case: KithOutboundCase, out: bytes | None, reason: str | None) -> KithOutboundCaseResult:
    case.expected_xml.unlink(missing_ok=True)
    case.expected_error.unlink(missing_ok=True)
    if out is not None:
        case.expected_xml.write_bytes(out)
    else:
        case.expected_error.write_text(f"{reason}\n", encoding="utf-8")
    return KithOutboundCaseResult(case.name, True, "updated")


def _compare(case: KithOutboundCase, out: bytes | None, reason: str | None) -> KithOutboundCaseResult:
    xml, error = case.expected_xml, case.expected_error
    if xml.exists() == error.exists():
        which = "both" if xml.exists() else "neither"
        return KithOutboundCaseResult(case.name, False, f"{which} of {xml.name} and {error.name} exist: review the output and run with --update")
    if xml.exists():
        want = xml.read_bytes()
        got = out if out is not None else f"(refused: {reason})\n".encode()
        shown = str(xml)
    else:
        want = (error.read_text(encoding="utf-8").strip() + "\n").encode("utf-8")
        got = f"{reason}\n".encode() if reason is not None else b"(rendered a message instead of refusing it)\n"
        shown = str(error)
    if want == got:
        return KithOutboundCaseResult(case.name, True, "")
    lines = [b.decode("utf-8", "replace").splitlines(keepends=True) for b in (want, got)]
    diff = difflib.unified_diff(lines[0], lines[1], fromfile=shown, tofile="actual output", n=1)
    return KithOutboundCaseResult(case.name, False, "".join(diff) or "the bytes differ (line ends or encoding)")
