"""Load YAML keeping each node's file, line and column, for errors that point at the line.

One loader serves config/ and mappings/. Mappings become `YMap`/`YList`, which
behave as dict/list and also answer `pos(key)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from router.errors import MappingError


class Pos(tuple[str, int, int]):
    """(file, line, column), 1-based."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self[0]}:{self[1]}:{self[2]}"


class YMap(dict[str, Any]):
    """A mapping node: a dict that remembers where each key and value sit."""

    start: Pos
    key_pos: dict[str, Pos]
    value_pos: dict[str, Pos]

    def pos(self, key: str | None = None) -> Pos:
        """Return the position of *key* (its line), or of the mapping itself."""
        if key is not None and key in self.key_pos:
            return self.key_pos[key]
        return self.start

    def value_at(self, key: str) -> Pos:
        """Return where *key*'s value is written (`prefetch: -1` → the `-1`), else where the key is.

        Why: an error about a value points at the value an operator must change, not at its key's column.
        """
        return getattr(self, "value_pos", {}).get(key) or self.pos(key)


class YList(list[Any]):
    """A sequence node that remembers where it and each item sit."""

    start: Pos
    item_pos: list[Pos]

    def pos(self, index: int | None = None) -> Pos:
        """Return the position of item *index*, or of the list itself."""
        if index is not None and index < len(self.item_pos):
            return self.item_pos[index]
        return self.start


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it: the same nodes and marks, about ten times faster.

Why: every CLI start and every worker loads all mappings; with the pure-Python
parser, reading the YAML was the larger part of a one-message `helsebro convert`.
"""


class _Loader(_Base):  # type: ignore[misc, valid-type]
    filename = "?"

    def _pos(self, node: yaml.Node) -> Pos:
        return Pos((self.filename, node.start_mark.line + 1, node.start_mark.column + 1))

    def construct_yaml_map_pos(self, node: yaml.MappingNode) -> YMap:
        out = YMap()
        out.start = self._pos(node)
        out.key_pos = {}
        out.value_pos = {}
        own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        self.flatten_mapping(node)  # `<<: *anchor`: the anchor's pairs first, each keeping its own position
        merged = len(node.value) - own
        written: set[str] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                # A code as written: YAML 1.1 reads `NO:` as false and `010:` as 8, and str() made them 'False' and '8'.
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
            if i >= merged:  # written in this mapping: a key written here over one merged in is the merge's point
                if key in written:
                    raise MappingError(f"duplicate key {key!r}", file=self.filename, line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1)
                written.add(key)
            out[key] = self.construct_object(value_node, deep=True)
            out.key_pos[key] = self._pos(key_node)
            out.value_pos[key] = self._pos(value_node)
        return out

    def construct_yaml_seq_pos(self, node: yaml.SequenceNode) -> YList:
        out = YList(self.construct_object(child, deep=True) for child in node.value)
        out.start = self._pos(node)
        out.item_pos = [self._pos(child) for child in node.value]
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map_pos)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq_pos)


def load_yaml(path: Path, *, display: str | None = None) -> Any:
    """Parse *path*; raise MappingError with file:line:col on a syntax error."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read: {exc.strerror}", file=name, line=1, column=1) from exc
    return load_yaml_text(_decode(data, name), name)


def _decode(data: bytes, name: str) -> str:
    """Decode a YAML file as UTF-8, or name the line and column of the first byte that is not.

    Why: a file saved as Latin-1 (an author's `ø`) must be a lint error at its place, not a traceback.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1  # characters, as the YAML marks count
        raise MappingError(f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded (save the file as UTF-8)", file=name, line=line, column=column) from None


def load_yaml_text(text: str, name: str) -> Any:
    """Parse YAML text, naming it *name* in positions and errors."""
    try:
        loader = _Loader(text)  # the pure-Python reader checks every character here
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, name) from exc
    loader.filename = name
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise MappingError(f"YAML syntax: {exc.problem or exc.context}", file=name, line=line, column=col) from exc
    except yaml.reader.ReaderError as exc:  # libyaml's reader checks while it parses
        raise _reader_error(exc, text, name) from exc
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, text: str, name: str) -> MappingError:
    """Name the line and column of a character YAML does not allow (a NUL from a half-written save).

    Why: the reader's error is no MarkedYAMLError and carries only an offset; unnamed, it
    escaped lint as a traceback and ended the worker in a hot reload.
    """
    position = min(max(exc.position, 0), len(text))
    before = text[:position]
    line, col = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
    return MappingError(f"YAML syntax: control character 0x{code:02x} is not allowed", file=name, line=line, column=col)


def plain(node: Any) -> Any:
    """Return *node* as plain dicts and lists (what a pydantic model validates)."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def position_of(node: Any, loc: list[Any], *, value: bool = False) -> tuple[str, int, int]:
    """The position of the deepest node along *loc* (a pydantic error's `loc`) that the YAML has.

    Parts the YAML does not have (pydantic's union tags) are skipped. With *value*, a key whose
    value is a scalar is placed at that value (`prefetch: -1` at the `-1`): the error is about
    what is written there. A key holding a block, or a key refused as such, stays at the key.
    """
    best = node.pos() if isinstance(node, (YMap, YList)) else ("?", 1, 1)
    for part in loc:
        if isinstance(node, YMap) and isinstance(part, str) and part in node:
            scalar = value and not isinstance(node[part], (YMap, YList))
            best, node = (node.value_at(part) if scalar else node.pos(part)), node[part]
        elif isinstance(node, YList) and isinstance(part, int) and part < len(node):
            best, node = node.pos(part), node[part]
    return best
