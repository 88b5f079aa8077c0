"""All compiled mappings of one folder, and how a message finds its own.

A MappingSet is built whole and never changed; a reload builds a new one and
swaps a single reference, so a message is always mapped by one consistent set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.errors import MappingError
from router.mapping._yaml import YMap, load_yaml
from router.mapping.compiler import Compiler, MessageMapping


@dataclass(frozen=True, slots=True)
class MappingSet:
    """Message mappings by structure, and the event → structure defaults."""

    root: Path
    messages: dict[str, MessageMapping]
    structures: dict[str, str]
    compiler: Compiler
    senders: dict[str, MappingSet] = field(default_factory=dict)

    @classmethod
    def load(
        cls, root: Path, compile_path: Callable[[str], Any], *, check_path: Callable[[Any], str | None] | None = None,
        check_reach: Callable[[Any, tuple[str, ...]], str | None] | None = None, overlay: Path | None = None,
    ) -> MappingSet:
        """Compile every mapping under *root* (e.g. `mappings/hl7v2`), and each sender's overlay.

        A sender overlay is a folder `senders/<KEY>/` holding any of `messages/`,
        `segments/`, `datatypes/`, `tables/`: its files replace the base files of
        the same name for messages from that sender (MSH-3 or MSH-4 namespace, or
        the sender's HER-id), without copying the rest.

        Raises:
            MappingError: any file fails its checks; the error names file:line:col.
        """
        compiler = Compiler(root, compile_path, check_path=check_path, check_reach=check_reach, overlay=overlay)
        messages = compiler.load()
        table = root / "structures.yaml"
        structures = cls._structures(table, compiler, messages) if table.exists() else {}
        senders: dict[str, MappingSet] = {}
        if overlay is None and (root / "senders").is_dir():
            for folder in sorted(p for p in (root / "senders").iterdir() if p.is_dir()):
                senders[folder.name] = cls.load(root, compile_path, check_path=check_path, check_reach=check_reach, overlay=folder)
        return cls(root, messages, structures, compiler, senders)

    def for_sender(self, *keys: str | None) -> MappingSet:
        """Return the overlay set of the first key with one (application, facility, HER-id), else this set."""
        for key in keys:
            if key and key in self.senders:
                return self.senders[key]
        return self

    @staticmethod
    def _structures(table: Path, compiler: Compiler, messages: dict[str, MessageMapping]) -> dict[str, str]:
        doc = load_yaml(table, display=compiler._show(table))
        if not isinstance(doc, YMap) or not isinstance(doc.get("structures"), dict):
            raise MappingError("structures.yaml needs a structures: mapping", file=compiler._show(table), line=1, column=1)
        structures = {str(k).upper(): str(v) for k, v in doc["structures"].items()}
        for key, value in structures.items():
            if value not in messages:
                pos = doc["structures"].pos(key)
                raise MappingError(f"{key} points at {value}, but messages/{value}.yaml does not exist", file=pos[0], line=pos[1], column=pos[2])
            _check_event_covered(key, messages[value], doc["structures"].pos(key))
        return structures

    def find_xml(self, namespace: str | None, root: str | None) -> MessageMapping | None:
        """Pick the XML mapping whose `match:` names the payload namespace (or, failing that, its root element)."""
        for mm in self.messages.values():
            if namespace and namespace in mm.match:
                return mm
        for mm in self.messages.values():
            if root and root in mm.match:
                return mm
        return None

    def find(self, code: str, event: str, structure: str) -> MessageMapping | None:
        """Pick the mapping for a message: by MSH-9.3, else by event, else CODE_EVENT."""
        if structure and structure in self.messages:
            return self.messages[structure]
        by_event = self.structures.get(f"{code}^{event}")
        if by_event:
            return self.messages.get(by_event)
        return self.messages.get(f"{code}_{event}")


def lint(
    root: Path, compile_path: Callable[[str], Any], *, check_path: Callable[[Any], str | None] | None = None,
    check_reach: Callable[[Any, tuple[str, ...]], str | None] | None = None,
) -> list[MappingError]:
    """Run every load-time check on *root* and return all errors (empty when clean).

    *check_reach* says why a path reads nothing in the message structures that use it (HL7 v2: an OBR in an ADT).
    """
    return lint_load(root, compile_path, check_path=check_path, check_reach=check_reach)[0]


def lint_load(
    root: Path, compile_path: Callable[[str], Any], *, check_path: Callable[[Any], str | None] | None = None,
    check_reach: Callable[[Any, tuple[str, ...]], str | None] | None = None,
) -> tuple[list[MappingError], MappingSet | None]:
    """`lint`, and, when *root* is clean, the MappingSet its compiles make (what `MappingSet.load` returns), else None.

    Why: `mappings test` linted a folder, then compiled it all again (each sender overlay too) to run
    its cases: half the run. A clean lint compile is the load's compile: with no error, collecting
    them changed nothing it made. Where the two could differ (structures.yaml naming a message file
    whose structure has another name: lint counts the file, load does not), no set is returned and
    the caller loads as before.
    """
    if not (root / "messages").is_dir():
        return [MappingError("not a mapping folder: it has no messages/ folder", file=str(root), line=1, column=1)], None
    errors: list[MappingError] = []
    overlays = [None, *sorted(p for p in (root / "senders").iterdir() if p.is_dir())] if (root / "senders").is_dir() else [None]
    made: list[tuple[Path | None, Compiler, dict[str, MessageMapping], dict[str, str]]] = []
    same = True  # lint's checks and the load's agree on every overlay
    for overlay in overlays:
        compiler = Compiler(root, compile_path, check_path=check_path, check_reach=check_reach, errors=[], overlay=overlay)
        try:
            messages = compiler.load()
            structures: dict[str, str] = {}
            table = root / "structures.yaml"
            if table.exists():
                present = _present(compiler, messages)
                structures = MappingSet._structures(table, compiler, present)
                same = same and present.keys() == messages.keys()
            made.append((overlay, compiler, messages, structures))
        except MappingError as exc:
            compiler.errors.append(exc)  # type: ignore[union-attr]  # set above
        errors.extend(e for e in compiler.errors or [] if str(e) not in {str(x) for x in errors})
    if errors or not same or len(made) != len(overlays):
        return errors, None
    sets = []
    for overlay, compiler, messages, structures in made:
        compiler.errors = None  # as `MappingSet.load` leaves it: a compile through it raises
        sets.append((overlay, MappingSet(root, messages, structures, compiler)))
    base = sets[0][1]
    base.senders.update({overlay.name: one for overlay, one in sets[1:] if overlay is not None})
    return errors, base


def _check_event_covered(key: str, mm: MessageMapping | None, pos: tuple[str, int, int]) -> None:
    """Refuse a structures.yaml entry whose event the mapping it points at leaves out of its `events:`.

    Why: the converter refuses a message whose event the mapping does not list (UnsupportedEvent),
    so the entry would route every such message to a refusal; lint said the folder was clean.
    A mapping with no `events:` covers every event, and one that failed to compile (None) has
    been reported already.
    """
    event = key.split("^", 1)[1] if "^" in key else ""
    if mm is None or not mm.events or not event or event in mm.events:
        return
    listed = ", ".join(mm.events)
    raise MappingError(
        f"{key} points at {mm.structure}, but its events: [{listed}] leave out {event}, so every {key} would be refused: "
        f"add {event} to its events, or point {key} at a mapping that lists it",
        file=pos[0],
        line=pos[1],
        column=pos[2],
    )


def _present(compiler: Compiler, messages: dict[str, MessageMapping]) -> dict[str, Any]:
    """The compiled messages, plus those whose file exists but failed (lint has reported it already).

    Why: structures.yaml pointing at a broken ADT_A02 must not also say messages/ADT_A02.yaml does not exist.
    """
    return {path.stem: None for path in compiler._files("messages")} | messages


def load_namespaces(path: Path) -> dict[str, tuple[str, ...]]:
    """Read an XML mapping folder's `namespaces.yaml`: prefix → one or more namespace URIs.

    Raises:
        MappingError: the file is missing or malformed.
    """
    doc = load_yaml(path)
    if not isinstance(doc, YMap) or not isinstance(doc.get("namespaces"), dict):
        raise MappingError("namespaces.yaml needs a namespaces: mapping of prefix to URI(s)", file=str(path), line=1, column=1)
    out: dict[str, tuple[str, ...]] = {}
    for prefix, uris in doc["namespaces"].items():
        values = uris if isinstance(uris, list) else [uris]
        if not values or not all(isinstance(u, str) and u for u in values):
            pos = doc["namespaces"].pos(prefix)
            raise MappingError(f"prefix {prefix!r} needs a namespace URI or a list of them", file=pos[0], line=pos[1], column=pos[2])
        out[str(prefix)] = tuple(values)
    return out
