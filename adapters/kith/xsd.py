"""Validate KITH XML against the national schema set in HELSEBRO_XSD_DIR.

Owns the catalog lookup (namespace → XSD file, from ``ehelseCatalog.xml``), the
resolver that keeps schema loading inside that folder, and the cache of
compiled schemas. Deciding what a message is belongs to dispatch.py.

Why one compiled schema per *set* of namespaces: ``MsgHead/Document/RefDoc/
Content`` is ``xs:any processContents="strict"``, so a schema compiled from
``MsgHead-v1_2.xsd`` alone rejects every payload ("No matching global element
declaration"). libxml2 does not load schemas named by ``xsi:schemaLocation``
in the instance (and must not: the instance is untrusted), so we compile a
two-line wrapper schema that imports MsgHead *and* the payload namespaces.
Compiling one such set takes 2–10 ms (measured on the Sarepta set); each set
is compiled once per process and kept.

Some national XSDs import ``http://www.kith.no/xmlstds/kith.xsd``,
``http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd`` or relative
paths that do not exist in the archive (``plo/v1.5/felleskomponent1.xsd``).
The resolver maps those by file name to the folder's own copy, preferring
``felleskomponenter/`` and ``w3c/``, and refuses anything it cannot map, so
libxml2 never opens a URL or a file outside the folder.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote, urlparse

from lxml import etree

from adapters.kith.errors import SchemaInvalid, shown
from router.errors import ConfigError, UnknownMessage

__all__ = ["SchemaSet", "schema_set", "validation_status"]

_CATALOG = "ehelseCatalog.xml"
_VERSIONS = "MeldingsVersjoner.xml"
_CATALOG_NS = "{urn:oasis:names:tc:entity:xmlns:xml:catalog}"
_SHARED_FOLDERS = ("felleskomponenter", "w3c")
_XS = "http://www.w3.org/2001/XMLSchema"


class _FolderResolver(etree.Resolver):  # type: ignore[misc]  # lxml is untyped here (pyproject.toml says why)
    """Resolve schema imports to files inside one folder; refuse everything else."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._root = root
        by_name: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(root.rglob("*.xsd")):
            by_name[path.name].append(path)
        self._by_name = dict(by_name)

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        target = self._local(system_url)
        if target is None:
            # An empty document fails the compile with "not a schema document":
            # a refusal that names the file, never a fetch.
            return self.resolve_string("<refused/>", context)
        return self.resolve_filename(str(target), context)

    def _local(self, url: str) -> Path | None:
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path)).resolve()
            if path.is_file() and path.is_relative_to(self._root):
                return path
        name = unquote(parsed.path).rsplit("/", 1)[-1]
        candidates = self._by_name.get(name, [])
        for folder in _SHARED_FOLDERS:
            for path in candidates:
                if path.parent == self._root / folder:
                    return path
        return candidates[0] if len(candidates) == 1 else None


class SchemaSet:
    """The national schema folder: catalog, versions and compiled schemas.

    Build it with :func:`schema_set`, which keeps one per folder per process.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._catalog = _read_catalog(self.folder)
        self._versions = _read_versions(self.folder)
        self._resolver = _FolderResolver(self.folder)
        self._compiled: dict[tuple[str, ...], etree.XMLSchema | UnknownMessage] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def knows(self, namespace: str) -> bool:
        """True when the catalog names a schema file for *namespace*."""
        return namespace in self._catalog

    @property
    def namespaces(self) -> frozenset[str]:
        """Every namespace the catalog maps to a schema file."""
        return frozenset(self._catalog)

    def version_of(self, namespace: str) -> tuple[str, str] | None:
        """Return (schema name, version) from MeldingsVersjoner.xml, or None."""
        return self._versions.get(namespace)

    def validate(self, tree: etree._ElementTree | etree._Element, namespaces: tuple[str, ...]) -> None:
        """Validate *tree* against the schemas for *namespaces* (root namespace first).

        Raises:
            UnknownMessage: a namespace has no schema, or its schema does not compile (T10).
            SchemaInvalid: the document does not validate (T02); the location is
                the XPath of the first offending element, the reason names the
                libxml2 error type only, never a value from the message.
        """
        schema, lock = self._schema(namespaces)
        with lock:  # an XMLSchema keeps its error log on the instance
            if schema.validate(tree):
                return
            error = schema.error_log.last_error
        raise SchemaInvalid(
            f"XML does not validate against the national schema ({error.type_name})",
            location=_readable_path(tree, error.path) or f"line {error.line}",
        )

    def _schema(self, namespaces: tuple[str, ...]) -> tuple[etree.XMLSchema, threading.Lock]:
        missing = next((ns for ns in namespaces if ns not in self._catalog), None)
        if missing is not None:
            # Not cached: the namespaces come from the message, and a cache keyed by every one
            # a sender makes up grows without end. Only the catalog's own combinations are kept.
            raise UnknownMessage(f"no national schema for namespace {shown(missing)}")
        compiled = self._compiled.get(namespaces)  # set once, lock first: a hit needs no guard
        if compiled is None:
            with self._guard:
                compiled = self._compiled.get(namespaces)
                if compiled is None:
                    compiled = self._compile(namespaces)
                    self._locks[namespaces] = threading.Lock()
                    self._compiled[namespaces] = compiled
        if isinstance(compiled, UnknownMessage):
            raise UnknownMessage(compiled.reason, location=compiled.location)
        return compiled, self._locks[namespaces]

    def _compile(self, namespaces: tuple[str, ...]) -> etree.XMLSchema | UnknownMessage:
        """Compile the wrapper schema; a failure is cached too, so it costs once."""
        wrapper = etree.Element(f"{{{_XS}}}schema", nsmap={"xs": _XS})
        for ns in dict.fromkeys(namespaces):
            etree.SubElement(wrapper, f"{{{_XS}}}import", namespace=ns, schemaLocation=self._catalog[ns].as_uri())
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        parser.resolvers.add(self._resolver)
        try:
            doc = etree.fromstring(etree.tostring(wrapper), parser, base_url=(self.folder / "wrapper.xsd").as_uri())
            return etree.XMLSchema(doc)
        except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            # The reason reaches the sender (AppRec OT, dead letter): files named within the folder, not by this server's path.
            detail = str(exc).replace(self.folder.as_uri() + "/", "").replace(str(self.folder) + "/", "")
            return UnknownMessage(f"the national schema for {' + '.join(namespaces)} does not compile: {detail}")


def _readable_path(tree: etree._ElementTree | etree._Element, path: str | None) -> str | None:
    """Turn libxml2's ``/*/*[2]/p1:X`` into ``/MsgHead/Document/RefDoc/Content/X`` (local names).

    Only runs for a rejected message; None when the path cannot be resolved.
    """
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    prefixes: dict[str, str] = {}
    for element in root.iter("*"):
        for prefix, uri in element.nsmap.items():
            if prefix:
                prefixes.setdefault(prefix, uri)
    try:
        found = root.xpath(path, namespaces=prefixes) if path else []
    except etree.XPathError:
        return None
    if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], etree._Element):
        return None
    steps = []
    node: etree._Element | None = found[0]
    while node is not None:
        same = list(node.itersiblings(node.tag, preceding=True))
        later = next(node.itersiblings(node.tag), None)
        index = f"[{len(same) + 1}]" if same or later is not None else ""
        steps.append(etree.QName(node).localname + index)
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


@functools.lru_cache(maxsize=4)
def _schema_set(folder: Path) -> SchemaSet:
    return SchemaSet(folder)


def schema_set(folder: Path | None) -> SchemaSet | None:
    """Return the process-wide SchemaSet for *folder*, or None when validation is off.

    Raises:
        ConfigError: the folder has no readable ehelseCatalog.xml.
    """
    if folder is None:
        return None
    return _schema_set(Path(folder).resolve())


def validation_status(folder: Path | None) -> str:
    """Say in one line whether XML validation is on, for startup logs and `helsebro status`."""
    if folder is None:
        return "XML schema validation off: HELSEBRO_XSD_DIR is not set"
    schemas = _schema_set(Path(folder).resolve())
    return f"XML schema validation on: {schemas.folder} ({len(schemas.namespaces)} namespaces in {_CATALOG})"


def _read_catalog(folder: Path) -> dict[str, Path]:
    path = folder / _CATALOG
    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)).getroot()
    except (OSError, etree.XMLSyntaxError) as exc:
        raise ConfigError(f"HELSEBRO_XSD_DIR: cannot read {path}: {exc}") from exc
    # The catalog was written on Windows: "Apprec-v1.1.xsd" names AppRec-v1.1.xsd.
    by_lower = {str(p.relative_to(folder)).lower(): p for p in folder.rglob("*") if p.is_file()}
    out = {}
    for uri in root.iter(f"{_CATALOG_NS}uri"):
        name, target = uri.get("name"), uri.get("uri")
        if name and target:
            path = folder / target
            out[name] = (path if path.is_file() else by_lower.get(target.lower(), path)).resolve()
    for namespace, path in _uncatalogued(folder, set(out)).items():
        out[namespace] = path
    return out


def _uncatalogued(folder: Path, known: set[str]) -> dict[str, Path]:
    """Namespaces the catalog misses but exactly one schema file in the folder declares.

    The national catalog lags the folder it ships with (e-resept M9.12 of
    2014-01-21 has its XSD but no catalog line). Only the first element of each
    file is read; a namespace two files declare (a schema and its includes)
    stays unknown rather than guessed.
    """
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.xsd")):
        try:
            with path.open("rb") as f:  # iterparse left early would keep a file it opened itself
                for _event, element in etree.iterparse(f, events=("start",), resolve_entities=False, no_network=True, load_dtd=False):
                    namespace = element.get("targetNamespace")
                    if namespace and namespace not in known:
                        found.setdefault(namespace, []).append(path.resolve())
                    break
        except (OSError, etree.XMLSyntaxError):
            continue  # not a readable schema: the catalog's own entries still stand
    return {ns: paths[0] for ns, paths in found.items() if len(paths) == 1}


def _read_versions(folder: Path) -> dict[str, tuple[str, str]]:
    path = folder / _VERSIONS
    if not path.is_file():
        return {}
    try:
        root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)).getroot()
    except etree.XMLSyntaxError:
        return {}  # the versions file only refines names; validation works without it
    return {m.get("navnerom", ""): (m.get("navn", ""), m.get("versjon", "")) for m in root.iter("Melding")}
