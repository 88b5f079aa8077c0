"""Compile mapping YAML into fast callables, checking everything at load time.

One mapping folder per source format (`mappings/hl7v2/`), with folders by role:
`messages/` (one file per message structure), `segments/` (resource templates),
`datatypes/` (reusable datatype mappings), `tables/` (code lookups). Every
error names file:line:col. Nothing here runs per message except the closures
it returns. What it returns (Rule, Block, Template, ResourceUse, MessageMapping...)
is declared in _forms.py and importable from here; a message mapping's own
compiling is in _messages.py, a rule's in _rules.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.errors import MappingError
from router.mapping import fhir_model
from router.mapping._codegen import generate, generate_condition
from router.mapping._forms import Block, Datatype, MessageMapping, ResourceUse, Rule, Template
from router.mapping._steps import finish
from router.mapping._yaml import Pos, YList, YMap, load_yaml
from router.mapping.conditions import ConditionSyntaxError, Predicate, compile_condition
from router.mapping.library import LIBRARY, call
from router.mapping.runtime import IdentityOf, Ref, RunContext, Target
from router.mapping.tables import Table, load_table

PathCompiler = Callable[[str], Any]
"""The source format's path compiler (HL7 terser, later XPath)."""

_RULE_KEYS = {"target", "from", "each", "value", "fn", "args", "table", "use", "rules", "when", "ref", "refs", "same", "note"}


class _Dependent(MappingError):
    """Lint: a file uses one that failed and is reported already; its own compile stops here, unreported.

    Why: a segment file with a YAML typo was reported once, then again as `no resource template`
    at each of the thirty messages that use it, burying the one line that mattered.
    """


def _dependent(c: Compiler, folder: str, name: str, pos: Pos) -> None:
    """Raise _Dependent when *folder*/*name* is a file lint reported as broken."""
    if (folder, name) in c.broken:
        raise _Dependent(f"uses {folder}/{name}.yaml, which has an error of its own", file=pos[0], line=pos[1], column=pos[2])


def _err(reason: str, pos: Pos) -> MappingError:
    return MappingError(reason, file=pos[0], line=pos[1], column=pos[2])


def _check_keys(node: YMap, allowed: set[str], what: str) -> None:
    for key in node:
        if key not in allowed:
            close = [k for k in sorted(allowed) if k[:2] == key[:2]]
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(sorted(allowed))})"
            raise _err(f"unknown key {key!r} in {what}{hint}", node.pos(key))


def _need(node: YMap, key: str, what: str) -> Any:
    if key not in node:
        raise _err(f"{what} needs {key!r}", node.pos())
    return node[key]


def _value_only_but_refs(block: Block) -> bool:
    """Tell whether *block* reads nothing but its value, its `ref:` lists taken as given.

    Each such rule (a bed's `partOf: ref: [room, ward]`) is judged by a stand-in placing a
    constant under the same condition, and the rules beside its `ref:` by their own block; the
    rest as the generated function judges any block (_codegen._value_only). Only a rule at the
    block's top is stood in for: one nested deeper keeps the block from qualifying.
    """
    steps = []
    for step in block.steps:
        inner = getattr(step, "inner", step)
        stand_in = getattr(inner, "stand_in", None)
        if stand_in is not None:
            extra = getattr(inner, "extra", None)
            if extra is not None and not getattr(getattr(getattr(extra, "__self__", None), "fast", None), "value_only", False):
                return False
            step = finish(stand_in, _no_values, _no_put, getattr(step, "when", None))
        steps.append(step)
    return bool(getattr(generate(tuple(steps)), "value_only", False))


def _no_values(scope: Any, ctx: RunContext) -> list[Any]:
    return []


def _no_put(obj: dict[str, Any], value: Any, ctx: RunContext) -> None:
    return None


_IDENTITY_REF = re.compile(r"ref\(\s*([A-Za-z_][\w-]*)\s*\)")
"""`ref(patient)` in an identity's fallback: the id of the resource the parameter names."""


def _folder_digest(root: Path) -> str:
    """The content hash of every YAML file under *root* but the fixture cases, for provenance.

    A `*.yaml` that cannot be read (a folder of that name, a symlink loop) is hashed by its
    name alone: the file checks report it at its place, and the hash must not end lint or
    loading with a traceback.
    """
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")):
        if ".cases" in path.parent.name:
            continue
        try:
            content = path.read_bytes()
        except OSError:
            content = b"\0unreadable"
        digest.update(str(path.relative_to(root)).encode() + b"\0" + content)
    return digest.hexdigest()[:12]


@dataclass(slots=True)
class Compiler:
    """Compiles one format's mapping folder; keeps what it compiled for reuse."""

    root: Path
    compile_path: PathCompiler
    display_root: Path | None = None
    tables: dict[str, Table] = field(default_factory=dict)
    datatypes: dict[str, Datatype] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    _raw: dict[tuple[str, str], tuple[YMap, str]] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)
    _params: tuple[str, ...] = ()  # parameters of the template being compiled; refs must name one
    _earlier: set[str] = field(default_factory=set)  # its parameters a rule resolves when it runs (_rules._first_made)
    _iterating: tuple[tuple[str, int], ...] = ()  # (segment, field) whose repetitions the enclosing `each:` rules iterate (`same: PV1-7`)
    _same_fields: list[tuple[str, tuple[str, int | None], Pos]] = field(default_factory=list)  # the template's `same: PV1-7` and `same: DG1` rules (_each_rules.compile_same_ref)
    check_path: Callable[[Any], str | None] | None = None  # the format's structure check (unknown fields)
    check_reach: Callable[[Any, tuple[str, ...]], str | None] | None = None  # the format's check that a message structure can hold what a path reads
    _structure: str | None = None  # the message mapping being compiled: its own paths are checked against its structure at once
    _reads: list[tuple[Any, Pos]] | None = None  # the template being compiled: its paths, checked once every message using it is known
    _template_reads: dict[str, list[tuple[Any, Pos]]] = field(default_factory=dict)
    errors: list[MappingError] | None = None  # set to collect every error (lint) instead of stopping
    overlay: Path | None = None  # a sender's folder whose files replace the base files of the same name
    broken: set[tuple[str, str]] = field(default_factory=set)  # lint: (folder, name) of files reported as failed; their users are not

    # -- loading -------------------------------------------------------
    def load(self) -> dict[str, MessageMapping]:
        """Compile every file; return the message mappings by structure.

        With `errors` set, each file is compiled on its own and its first error is
        collected, so lint reports every broken file at once.
        """
        for folder in ("tables", "datatypes", "segments"):
            for path in self._files(folder):
                self._guard(self._register, folder, path)
                if (folder, path.stem) not in self._raw:
                    self.broken.add((folder, path.stem))
        for (folder, name), (doc, _) in self._raw.items():
            if folder == "tables":
                self._guard(self._table, name, doc)
                if name not in self.tables:
                    self.broken.add(("tables", name))
        for (folder, name) in list(self._raw):
            pos = self._raw[(folder, name)][0].pos()
            if folder == "datatypes":
                self._guard(self.datatype, name, pos)
            elif folder == "segments":
                self._guard(self.template, name, pos)
        out: dict[str, MessageMapping] = {}
        failed = False
        for path in self._files("messages"):
            mm = self._guard(self._message, path)
            if mm is not None:
                out[mm.structure] = mm
            failed = failed or mm is None
        if not failed:  # a message that failed hides which templates it uses: their reach is checked once it compiles
            for exc in _unreached(self, out):
                if self.errors is None:
                    raise exc
                self._collect(exc)
        from router.mapping._embedded import check_embedded  # split for size

        for mm in list(out.values()):
            if mm.embedded is not None and self._guard(check_embedded, mm, out) is None and self.errors is not None:
                del out[mm.structure]  # lint: reported; the message is not served half-checked
        # Provenance names the whole folder's content: a change to a shared
        # datatype or table changes what every message mapping produces.
        sha = _folder_digest(self.root)
        for mm in out.values():
            mm.sha = sha
        return out

    def _files(self, folder: str) -> list[Path]:
        """The YAML files of *folder*: the base's, each replaced by the overlay's file of the same name."""
        files = {p.name: p for p in sorted((self.root / folder).glob("*.yaml"))}
        if self.overlay is not None:
            files.update({p.name: p for p in sorted((self.overlay / folder).glob("*.yaml"))})
        return [files[name] for name in sorted(files)]

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.errors is None:
            return fn(*args)
        try:
            return fn(*args)
        except MappingError as exc:
            self._collect(exc)
            self._busy.clear()
            return None

    def _collect(self, exc: MappingError) -> None:
        if isinstance(exc, _Dependent):
            return  # the file it depends on is reported: one error, not one more per file that uses it
        if self.errors is not None and not any(str(e) == str(exc) for e in self.errors):
            self.errors.append(exc)

    def _register(self, folder: str, path: Path) -> None:
        doc = self._doc(path)
        key = {"tables": "table", "datatypes": "datatype", "segments": "resource"}[folder]
        name = _need(doc, key, f"a file in {folder}/")
        if path.stem != name:
            raise _err(f"{key} {name!r} must live in a file named {name}.yaml", doc.pos(key))
        self._raw[(folder, str(name))] = (doc, self._show(path))

    def _table(self, name: str, doc: YMap) -> None:
        self.tables[name] = load_table(doc)

    def _show(self, path: Path) -> str:
        base = self.display_root or self.root.parent.parent
        try:
            return str(path.relative_to(base))
        except ValueError:
            return str(path)

    def _doc(self, path: Path) -> YMap:
        doc = load_yaml(path, display=self._show(path))
        if not isinstance(doc, YMap):
            raise MappingError("a mapping file must be a YAML mapping", file=self._show(path), line=1, column=1)
        return doc

    # -- named parts, compiled on first use ----------------------------
    def datatype(self, name: str, pos: Pos) -> Datatype:
        """Return the compiled datatype mapping *name* (e.g. `CX.Identifier`)."""
        if name in self.datatypes:
            return self.datatypes[name]
        if ("datatypes", name) not in self._raw:
            _dependent(self, "datatypes", name, pos)
            raise _err(f"no datatype mapping {name!r} (looked for datatypes/{name}.yaml)", pos)
        if name in self._busy:
            raise _err(f"datatype mapping {name!r} uses itself", pos)
        self._busy.add(name)
        saved, self._params = self._params, ()  # datatypes take no resource parameters
        reach = self._structure, self._reads
        self._structure, self._reads = None, None  # a datatype reads inside its value, wherever it is used
        doc, _ = self._raw[("datatypes", name)]
        try:
            _check_keys(doc, {"datatype", "source", "target", "description", "rules"}, "a datatype mapping")
            fhir_type = str(_need(doc, "target", "a datatype mapping"))
            try:
                fhir_model.elements(fhir_type)
            except fhir_model.UnknownType:
                raise _err(f"{fhir_type!r} is not a FHIR R4 type", doc.pos("target")) from None
            dt = Datatype(name, fhir_type, self.block(_need(doc, "rules", "a datatype mapping"), fhir_type, doc.pos("rules")))
        except MappingError as exc:
            if self.errors is None:
                raise
            # Lint goes on: users of a broken datatype are checked against a stand-in.
            self._collect(exc)
            dt = Datatype(name, str(doc.get("target", "")), Block([]))
        finally:
            self._busy.discard(name)
            self._params = saved
            self._structure, self._reads = reach
        self.datatypes[name] = dt
        return dt

    def template(self, name: str, pos: Pos) -> Template:
        """Return the compiled resource template *name* (e.g. `PID.Patient`)."""
        if name in self.templates:
            return self.templates[name]
        if ("segments", name) not in self._raw:
            _dependent(self, "segments", name, pos)
            raise _err(f"no resource template {name!r} (looked for segments/{name}.yaml)", pos)
        doc, _ = self._raw[("segments", name)]
        saved = self._structure
        self._structure, self._reads = None, []
        try:
            return self._template(name, doc)
        except MappingError as exc:
            if self.errors is None:
                raise
            self._collect(exc)
            params = tuple(str(p) for p in (doc.get("params") or []))
            tpl = Template(name, str(doc.get("type", "")), params, (), (), Block([]), doc.pos())
            self.templates[name] = tpl
            return tpl
        finally:
            self._template_reads[name] = self._reads
            self._structure, self._reads = saved, None

    def _template(self, name: str, doc: YMap) -> Template:
        _check_keys(doc, {"resource", "type", "description", "params", "identity", "rules"}, "a resource template")
        fhir_type = str(_need(doc, "type", "a resource template"))
        if not fhir_model.is_resource_type(fhir_type):
            raise _err(f"{fhir_type!r} is not a FHIR R4 resource type", doc.pos("type"))
        if doc.get("params") is not None and not isinstance(doc["params"], list):
            # a string here was read as its characters, and each use of the parameter was refused at its own line
            raise _err("params: must be a list of parameter names ([patient, encounter])", doc.pos("params"))
        params = tuple(str(p) for p in (doc.get("params") or []))
        self._params = params
        prefer: tuple[str, ...] = ()
        fallback: tuple[Any, ...] = ()
        tiers: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
        unidentified = None
        shared_systems: tuple[str, ...] = ()
        ident = doc.get("identity")
        if ident is not None:
            if not isinstance(ident, YMap):
                raise _err("identity must be a mapping with prefer: and/or fallback:", doc.pos("identity"))
            _check_keys(ident, {"prefer", "fallback", "unidentified", "shared"}, "identity")
            listed = ident.get("prefer")
            if listed is not None and not isinstance(listed, YList):
                # a string here was read as its characters: no identifier system is one letter, so none was preferred
                raise _err("prefer: must be a list of identifier systems, most wanted first", ident.pos("prefer"))
            prefer = tuple(str(s) for s in listed or [])
            unidentified = ident.get("unidentified")
            if unidentified is not None and unidentified != "display":
                raise _err("unidentified: display is the only choice (not written; references to it carry its name)", ident.pos("unidentified"))
            if unidentified is not None and ident.get("fallback"):
                raise _err("unidentified: and fallback: exclude each other: a fallback always identifies it", ident.pos("unidentified"))
            shared = ident.get("shared")
            if shared is not None and not isinstance(shared, YList):
                raise _err("shared: must be a list of identifier systems", ident.pos("shared"))
            if shared and ident.get("fallback"):
                raise _err("shared: and fallback: exclude each other: both key the resource by a derived identity", ident.pos("shared"))
            shared_systems = tuple(str(s) for s in shared or [])
            items = ident.get("fallback")
            if items is not None and not isinstance(items, YList):
                raise _err("fallback: must be a list: of paths, or of alternatives with when: and paths:", ident.pos("fallback"))
            if items and any(isinstance(item, YMap) for item in items):
                tiers = self._tiers(items)
                fallback = tuple(p for _, paths in tiers for p in paths)
            elif items:
                fallback = tuple(self._part(str(p), items.pos(i)) for i, p in enumerate(items))
        self._earlier = set()
        self._same_fields = []
        block = self.block(_need(doc, "rules", "a resource template"), fhir_type, doc.pos("rules"))
        tpl = Template(name, fhir_type, params, prefer, fallback, block, doc.pos(), self._required(fhir_type, block, doc), tiers, unidentified, tuple(sorted(self._earlier)))
        tpl.shared = shared_systems
        tpl.value_only_refs = bool(self._earlier) and _value_only_but_refs(block)
        tpl.same_fields = tuple(self._same_fields)
        self.templates[name] = tpl
        return tpl

    def _tiers(self, items: Any) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
        """`fallback:` as alternatives, `- {when: <condition>, paths: [...]}`, the last without `when:`.

        What tells two resources apart can depend on what the message gives: a
        result with an order number is its order's test line; one without needs
        its patient and time. The first alternative whose condition holds is hashed.
        """
        out: list[tuple[Any, tuple[Any, ...]]] = []
        for i, item in enumerate(items):
            if not isinstance(item, YMap):
                raise _err("fallback: either lists paths, or lists alternatives ({when:, paths:}): not both", items.pos(i))
            _check_keys(item, {"when", "paths", "note"}, "a fallback alternative")
            paths = item.get("paths")
            if not isinstance(paths, YList) or not paths:
                raise _err("a fallback alternative needs paths: [one or more paths]", item.pos())
            when = self._when(item)
            last = i == len(items) - 1
            if (when is None) != last:
                raise _err("every fallback alternative but the last needs when:, and the last has none (it answers when no other does)", item.pos())
            if when is not None:
                when = generate_condition(when) or when
            out.append((when, tuple(self._part(str(p), paths.pos(j)) for j, p in enumerate(paths))))
        return tuple(out)

    def _required(self, fhir_type: str, block: Block, doc: YMap) -> tuple[tuple[str | tuple[str, ...], str], ...]:
        """Pair each element FHIR requires with the source of the first rule that writes it.

        A template with no rule for a required element cannot make a valid
        resource: that is a load-time error, not a surprise per message.
        """
        out: list[tuple[str | tuple[str, ...], str]] = []
        for element in fhir_model.required(fhir_type):
            rules = [r for r in block.rules if r.target.names[0] == element]
            if not rules:
                raise _err(f"{fhir_type}.{element} is required (min 1) but no rule writes it", doc.pos("rules"))
            out.append((element, rules[0].source))
        for label, names in fhir_model.required_choices(fhir_type):
            # A choice element (medication[x], 1..1) is there when any of its types is: the engine tests the names.
            rules = [r for r in block.rules if r.target.names[0] in names]
            if not rules:
                raise _err(f"{fhir_type}.{label} is required (min 1) but no rule writes any of {', '.join(names)}", doc.pos("rules"))
            out.append((names, rules[0].source))
        return tuple(out)

    # -- messages ------------------------------------------------------
    def _message(self, path: Path) -> MessageMapping:
        from router.mapping._messages import compile_message  # split for size

        return compile_message(self, path)

    # -- rules ---------------------------------------------------------
    def _part(self, text: str, pos: Pos) -> Any:
        """One part of an identity's fallback: a path, or `ref(param)`, the id of the resource a parameter names."""
        m = _IDENTITY_REF.fullmatch(text.strip())
        if m is None:
            return self._path(text, pos)
        param = m.group(1)
        if param not in self._params:
            raise _err(f"{text}: {param!r} is not a parameter of this template (params: {', '.join(self._params) or 'none'})", pos)
        return IdentityOf(param)

    def _path(self, text: Any, pos: Pos) -> Any:
        try:
            path = self.compile_path(str(text))
        except ValueError as exc:
            raise _err(str(exc), pos) from None
        if self.check_path is not None:
            problem = self.check_path(path)
            if problem:
                raise _err(problem, pos)
        problem = self._reach(path, pos)
        if problem:
            raise _err(problem, pos)
        return path

    def _reach(self, path: Any, pos: Pos) -> str | None:
        """Say why *path*, in the message mapping being compiled, never reads anything; in a template, note it for `_unreached`."""
        if self.check_reach is None:
            return None
        if self._structure is not None:
            problem = self.check_reach(path, (self._structure,))
            return f"{problem}: this rule never reads anything" if problem else None
        if self._reads is not None:
            self._reads.append((path, pos))
        return None

    def _when(self, node: YMap) -> Predicate | None:
        if "when" not in node:
            return None
        try:
            pos = node.pos("when")
            return compile_condition(node["when"], lambda text: self._checked_path(text, pos))
        except ConditionSyntaxError as exc:
            raise _err(f"bad condition: {exc}", node.pos("when")) from None

    def _checked_path(self, text: str, pos: Pos) -> Any:
        """A condition's path, checked against the format's structures as a rule's `from:` is.

        Why: `when: AL9 valued` (a typo) or `PV1-99` never holds, so what it guards was silently never made.
        """
        path = self.compile_path(text)
        problem = (self.check_path(path) if self.check_path is not None else None) or self._reach(path, pos)
        if problem:
            raise ValueError(problem)
        return path

    def block(self, rules: Any, fhir_type: str, pos: Pos) -> Block:
        """Compile a list of rules that builds one *fhir_type* object."""
        if not isinstance(rules, YList):
            raise _err("rules must be a list", pos)
        out = []
        for i, node in enumerate(rules):
            if not isinstance(node, YMap):
                raise _err("a rule must be a mapping with target:", rules.pos(i))
            out.append(self.rule(node, fhir_type))
        return Block(out)

    def rule(self, node: YMap, fhir_type: str) -> Rule:
        """Compile one rule."""
        from router.mapping._rules import compile_rule  # split for size; see _rules.py

        return compile_rule(self, node, fhir_type)

    def target(self, node: YMap, fhir_type: str) -> tuple[Target, list[fhir_model.Element]]:
        """Check a rule's target path against the FHIR definitions."""
        text = str(_need(node, "target", "a rule"))
        try:
            els = fhir_model.walk(fhir_type, text.split("."))
        except LookupError as exc:
            raise _err(str(exc), node.pos("target")) from None
        return Target(tuple(e.name for e in els), tuple(e.is_list for e in els)), els


def _unreached(c: Compiler, messages: dict[str, MessageMapping]) -> list[MappingError]:
    """One error per template path that no message structure using the template can hold (an OBR in a template only ADTs use).

    Why: such a rule passed lint and made nothing at run time, without a word. A template no
    message uses is left alone: nothing says where it will be read.
    """
    from router.mapping._message_checks import walk_uses

    if c.check_reach is None:
        return []
    used_by: dict[str, set[str]] = {}
    for mm in messages.values():
        for use in walk_uses(mm.resources):
            if use.template is not None:
                used_by.setdefault(use.template.name, set()).add(mm.structure)
    out: list[MappingError] = []
    for name, reads in c._template_reads.items():
        structures = tuple(sorted(used_by.get(name, ())))
        for path, pos in reads if structures else ():
            problem = c.check_reach(path, structures)
            if problem:
                out.append(_err(f"{problem}: this rule never reads anything", pos))
    return out


__all__ = ["LIBRARY", "Block", "Compiler", "Datatype", "MessageMapping", "Pos", "Ref", "ResourceUse", "Rule", "RunContext", "Template", "call"]
