"""Fixture cases of outbound HL7 v2 mappings: a source message beside the exact HL7 v2 it must render to.

    mappings/outbound/hl7v2/ADT_A01.cases/admit/input.hl7      an inbound message (converted by the engine)
                                                 input.json     or a transaction Bundle (case.yaml names its type)
                                                 case.yaml      optional: version, charset, destination, message_type
                                                 expected.hl7   the rendered bytes, CR written as LF for review

`helsebro mappings test` and tests/mappings run them the same way. The
expected file is compared as bytes (in the case's charset), so an encoding or
escaping change fails a case as surely as a moved field.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from adapters.hl7v2._er7 import CHARSETS, DEFAULT_CHARSET
from adapters.hl7v2._versions import version_defs
from adapters.hl7v2.outbound import load_outbound, load_tables
from router.contracts import Converted, MessageHeader, OutboundCaseResult
from router.errors import MappingError, MessageError
from router.mapping._yaml import YMap, load_yaml

__all__ = ["OutboundCase", "OutboundCaseResult", "find_outbound_cases", "run_outbound_case"]

_CASE_KEYS = {"version", "charset", "destination", "message_type", "note"}


@dataclass(frozen=True, slots=True)
class OutboundCase:
    """One case folder and the mapping it exercises."""

    name: str
    folder: Path
    mapping: Path


def find_outbound_cases(root: Path) -> list[OutboundCase]:
    """Return every case under *root*'s `<MAPPING>.cases/<case>/` folders, sorted."""
    out = []
    for cases in sorted(root.glob("*.cases")):
        mapping = root / (cases.name[: -len(".cases")] + ".yaml")
        for folder in sorted(p for p in cases.iterdir() if p.is_dir()):
            out.append(OutboundCase(f"{mapping.stem}/{folder.name}", folder, mapping))
    return out


def run_outbound_case(case: OutboundCase, convert: Callable[[bytes], Converted], *, update: bool = False) -> OutboundCaseResult:
    """Render the case's input with its mapping and compare with (or, with *update*, rewrite) expected.hl7.

    *convert* turns an inbound message into a Converted (the engine's Converter).
    """
    from adapters.hl7v2.render import DEFAULT_VERSION, Hl7v2Renderer  # render imports the compiler this module also uses

    try:
        options = _options(case.folder / "case.yaml")
        version = str(options.get("version", DEFAULT_VERSION))
        charset = str(options.get("charset", DEFAULT_CHARSET))
        if charset not in CHARSETS:
            return OutboundCaseResult(case.name, False, f"case.yaml: charset {charset!r} is not one of {', '.join(CHARSETS)}")
        try:
            version_defs(version)
        except LookupError as exc:  # a typo in case.yaml fails its case, not the whole run
            return OutboundCaseResult(case.name, False, f"case.yaml: {exc}")
        mapping = load_outbound(case.mapping, version, tables=load_tables(case.mapping.parent))
        renderer = Hl7v2Renderer(str(options.get("destination", "legacy")), [mapping], version=version, charset=charset, named=True)
        conv = _input(case.folder, options, convert)
        actual = renderer.render(conv).replace(b"\r", b"\n")
    except (MappingError, MessageError) as exc:
        return OutboundCaseResult(case.name, False, str(exc))
    expected = case.folder / "expected.hl7"
    if update:
        expected.write_bytes(actual)
        return OutboundCaseResult(case.name, True, "updated")
    if not expected.exists():
        return OutboundCaseResult(case.name, False, f"no {expected}; review the output and run with --update")
    want = expected.read_bytes()
    if want == actual:
        return OutboundCaseResult(case.name, True, "")
    codec = CHARSETS[charset]
    diff = difflib.unified_diff(want.decode(codec, "replace").splitlines(keepends=True), actual.decode(codec, "replace").splitlines(keepends=True), fromfile=str(expected), tofile="actual output", n=1)
    return OutboundCaseResult(case.name, False, "".join(diff) or "the bytes differ (charset or line ends)")


def _options(file: Path) -> dict[str, Any]:
    if not file.exists():
        return {}
    doc = load_yaml(file)
    if not isinstance(doc, YMap):
        raise MappingError("case.yaml is a mapping", file=str(file), line=1, column=1)
    for key in doc:
        if key not in _CASE_KEYS:
            pos = doc.pos(key)
            raise MappingError(f"unknown key {key!r} (allowed: {', '.join(sorted(_CASE_KEYS))})", file=pos[0], line=pos[1], column=pos[2])
    return dict(doc)


def _input(folder: Path, options: dict[str, Any], convert: Callable[[bytes], Converted]) -> Converted:
    hl7 = folder / "input.hl7"
    if hl7.exists():
        conv = convert(hl7.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
        if conv.error is not None:
            raise conv.error
        return conv
    source = folder / "input.json"
    if not source.exists():
        raise MessageError(f"{folder.name}: no input.hl7 or input.json")
    code, _, event = str(options.get("message_type", "")).partition("^")
    header = MessageHeader(message_code=code, trigger_event=event, control_id=folder.name)
    raw = source.read_bytes()
    try:
        bundle = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # a broken input fails its case, not the whole run
        raise MessageError(f"{folder.name}/input.json is not JSON: {exc}") from None
    return Converted(index=0, raw=raw, control_id=folder.name, bundle=bundle, header=header)
