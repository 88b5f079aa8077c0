"""`helsebro mappings lint|test [PATH...]`: the mapping author's tools.

lint  runs every load-time check and prints `file:line:col: what is wrong`.
test  runs lint, then every fixture case (`X.cases/name.hl7` beside
      `name.expected.json`), printing a readable diff on a mismatch;
      `--update` rewrites the expected outputs after review.
Outbound mappings are linted and tested too: HL7 v2 (mappings/outbound/hl7v2),
whose cases are folders `X.cases/<case>/` with input and expected.hl7, and
KITH XML (mappings/outbound/kith), whose cases are `X.cases/<case>.hl7|.xml`
beside `<case>.expected.xml` or `<case>.expected-error.txt`.
Exit 0 when clean, 1 when anything failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.settings import load_settings

if TYPE_CHECKING:
    from router.errors import MappingError


def register(sub: Any) -> None:
    """Add the `mappings` verb with its `lint` and `test` actions."""
    p = sub.add_parser("mappings", help="lint and test mapping files", description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lint = actions.add_parser("lint", help="run every load-time check")
    lint.add_argument("paths", nargs="*", metavar="PATH", help="mapping folders (default: every folder under the configured mappings/)")
    lint.set_defaults(func=run_lint)
    test = actions.add_parser("test", help="run fixture cases")
    test.add_argument("paths", nargs="*", metavar="PATH", help="mapping folders (default: every folder under the configured mappings/)")
    test.add_argument("--update", action="store_true", help="rewrite the expected outputs from the current mappings")
    test.set_defaults(func=run_test)


def _roots(paths: list[str]) -> list[Path] | None:
    """Map PATHs to mapping roots: a folder with messages/, or the one above a file or .cases folder.

    A folder holding mapping folders (the mappings/ folder itself) stands for each of them. A PATH
    that is none of these is a usage error (None, after saying so), as a missing one is.
    """
    if not paths:
        return _folders_in(load_settings().mappings_dir)
    roots: list[Path] = []
    for text in paths:
        p = Path(text).resolve()
        if not p.exists():
            print(f"helsebro mappings: no such file or folder: {text}", file=sys.stderr)
            return None
        probe = p if p.is_dir() else p.parent
        while not (probe / "messages").is_dir() and not _is_outbound(probe) and probe != probe.parent:
            probe = probe.parent
        found = [probe] if (probe / "messages").is_dir() or _is_outbound(probe) else _folders_in(p) if p.is_dir() else []
        if not found:
            print(f"helsebro mappings: {text} holds no mapping folder (one with messages/, or outbound/hl7v2 or outbound/kith), "
                  "nor is it inside one", file=sys.stderr)
            return None
        roots.extend(root for root in found if root not in roots)
    return roots


def _folders_in(base: Path) -> list[Path]:
    """The mapping folders under a mappings/ folder (hl7v2 and kith with messages/, outbound/hl7v2 and outbound/kith),
    or under its outbound/ folder."""
    inbound = [base / fmt for fmt in ("hl7v2", "kith") if (base / fmt / "messages").is_dir()]
    return inbound + [p for fmt in _OUTBOUND for p in (base / "outbound" / fmt, base / fmt) if _is_outbound(p) and p not in inbound]


_OUTBOUND = ("hl7v2", "kith")
"""The outbound mapping folders, mappings/outbound/<format>."""


def _is_outbound(root: Path) -> bool:
    """An outbound mapping folder: mappings/outbound/hl7v2 or mappings/outbound/kith."""
    return root.name in _OUTBOUND and root.parent.name == "outbound" and root.is_dir()


def _is_xml(root: Path) -> bool:
    return (root / "namespaces.yaml").exists()


def _compilers(root: Path) -> tuple[Any, Any, Any]:
    """The path compiler, structure check and reach check (a path a message structure cannot hold) for a folder's format."""
    if _is_xml(root):
        from adapters.kith.paths import path_compiler
        from router.mapping.mapping_set import load_namespaces

        return path_compiler(load_namespaces(root / "namespaces.yaml")), None, None
    from adapters.hl7v2.paths import compile_path
    from adapters.hl7v2.structure import check_path, check_reach

    return compile_path, check_path, check_reach


def _lint_roots(roots: list[Path], compiled: dict[Path, Any] | None = None) -> int:
    """Lint every root, printing each error; return how many there were.

    *compiled*, when given, receives each clean inbound root's MappingSet, lint's own compile, for the cases to run on.
    """
    from router.errors import MappingError
    from router.mapping.mapping_set import lint_load

    count = 0
    for root in roots:
        if _is_outbound(root):
            for err in _lint_outbound(root):
                print(f"{_shown(err.file, root)}:{err.line}:{err.column}: {err.reason}", file=sys.stderr)
                count += 1
            continue
        try:
            compile_path, check_path, check_reach = _compilers(root)
        except MappingError as exc:
            print(f"{exc.file}:{exc.line}:{exc.column}: {exc.reason}", file=sys.stderr)
            count += 1
            continue
        errors, mappings = lint_load(root, compile_path, check_path=check_path, check_reach=check_reach)
        for err in errors:
            print(f"{err.file}:{err.line}:{err.column}: {err.reason}", file=sys.stderr)
            count += 1
        if compiled is not None and mappings is not None:
            compiled[root] = mappings
    return count


def _shown(file: str, root: Path) -> str:
    """An outbound error's file as inbound lint shows its own (router/mapping/compiler.py, `_show`): relative to
    the folder holding mappings/, so `mappings/outbound/hl7v2/X.yaml` whatever the mapping folder's absolute path."""
    try:
        return str(Path(file).relative_to(root.parents[2]))  # root is mappings/outbound/<format>
    except (ValueError, IndexError):
        return file


def _lint_outbound(root: Path) -> list[MappingError]:
    """The errors of an outbound folder, by its format's own checks (both load only when linted)."""
    if root.name == "kith":
        from adapters.kith import lint_kith_outbound

        return lint_kith_outbound(root)
    from adapters.hl7v2.outbound import lint_outbound

    return lint_outbound(root)


def run_lint(args: argparse.Namespace) -> int:
    """Lint every root; exit 1 on any error."""
    roots = _roots(args.paths)
    if roots is None:
        return 2
    errors = _lint_roots(roots)
    print(f"{errors} error(s) in {len(roots)} mapping folder(s)" if errors else f"ok: {len(roots)} mapping folder(s) clean")
    return 1 if errors else 0


def run_test(args: argparse.Namespace) -> int:
    """Lint, then run every fixture case under the roots."""
    from router.mapping import MappingSet
    from router.mapping.fixtures import find_cases, orphans, run_case
    from router.pipeline.convert import Converter

    roots = _roots(args.paths)
    if roots is None:
        return 2
    compiled: dict[Path, Any] = {}  # lint's compile of each clean inbound root: the cases run on it, not on a second compile
    if _lint_roots(roots, compiled):
        print("lint failed: fix the errors above before running cases", file=sys.stderr)
        return 1
    settings = load_settings()
    converters = _Converters(settings)
    failed = total = 0
    for root in roots:
        if _is_outbound(root):
            run = _test_kith_outbound if root.name == "kith" else _test_outbound
            ran, bad = run(root, converters, update=args.update)
            total, failed = total + ran, failed + bad
            continue
        if _is_xml(root):  # XML mappings load inside the converter, from <mappings_dir>/kith
            conv = converters.get(root.parent)
            if root in compiled and root == root.parent / "kith":
                conv.use_xml(compiled[root])
        elif root in compiled:
            conv = converters.get(settings.mappings_dir, compiled[root])
        else:
            compile_path, check_path, check_reach = _compilers(root)
            conv = converters.get(settings.mappings_dir, MappingSet.load(root, compile_path, check_path=check_path, check_reach=check_reach))

        def convert(data: bytes, conv: Converter = conv) -> list[dict[str, Any]]:
            return [r.bundle if r.ok and r.bundle is not None else r.outcome() for r in conv.convert(data)]

        def show(p: Path, root: Path = root) -> str:
            try:
                return str(p.relative_to(root.parent.parent))
            except ValueError:
                return str(p)

        cases = find_cases(root)
        for stray in orphans(root, cases):
            total, failed = total + 1, failed + 1
            print(f"FAIL {stray.parent.name[: -len('.cases')]}/{stray.name[: -len('.expected.json')]} ({show(stray)}:1)")
            print("expected output with no case file beside it: restore its message file or delete it")
        for source, expected in cases:
            total += 1
            res = run_case(source, expected, convert, update=args.update, display=show)
            if res.passed:
                print(f"PASS {res.name}" + (" (updated)" if args.update else ""))
            else:
                failed += 1
                print(f"FAIL {res.name} ({show(res.source)}:1)")
                print(res.detail.rstrip())
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


class _Converters:
    """The converters of one `mappings test` run, one per mappings folder and HL7 v2 set, each built once.

    Why: every folder tested built its own Converter, and each compiled mappings/hl7v2 again (a
    KITH or outbound folder too, for the HL7 v2 messages its cases may hold), and the KITH
    mappings again at their first XML case: a test of mappings/ compiled the HL7 v2 set four
    times and the KITH set three, most of the run. A converter keeps nothing from one message to
    the next, so sharing one changes no output.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._made: dict[tuple[Path, Path], Any] = {}

    def get(self, mappings_dir: Path, hl7v2: Any = None) -> Any:
        """The converter reading *mappings_dir* (KITH mappings, outbound) with *hl7v2*, by default the folder's own hl7v2/.

        A set given for the folder's own hl7v2/ is the one later calls share; one from elsewhere gets its own converter.
        """
        from router.pipeline.convert import Converter

        key = (mappings_dir, hl7v2.root if hl7v2 is not None else mappings_dir / "hl7v2")
        if key not in self._made:
            settings = self.settings
            if mappings_dir != settings.mappings_dir:
                settings = settings.model_copy(update={"mappings_dir": mappings_dir})
            self._made[key] = Converter(settings, mappings=hl7v2)
        return self._made[key]


def _test_outbound(root: Path, converters: _Converters, *, update: bool) -> tuple[int, int]:
    """Run the outbound cases under *root*; return (cases run, cases failed)."""
    from adapters.hl7v2.outbound_cases import find_outbound_cases, run_outbound_case

    converter = converters.get(converters.settings.mappings_dir)
    cases = find_outbound_cases(root)
    results = [(run_outbound_case(case, lambda data: converter.convert(data)[0], update=update), str(case.folder)) for case in cases]
    return len(cases), _report_outbound(results, update=update)


def _report_outbound(results: list[tuple[Any, str]], *, update: bool) -> int:
    """Print PASS/FAIL (with the diff) per outbound case; return how many failed."""
    failed = 0
    for res, where in results:
        if res.passed:
            print(f"PASS outbound {res.name}" + (" (updated)" if update else ""))
        else:
            failed += 1
            print(f"FAIL outbound {res.name} ({where})")
            print(res.detail.rstrip())
    return failed


def _test_kith_outbound(root: Path, converters: _Converters, *, update: bool) -> tuple[int, int]:
    """Run the outbound KITH cases under *root* (validated when HELSEBRO_XSD_DIR is set); return (cases run, cases failed)."""
    from adapters.kith import find_kith_outbound_cases, run_kith_outbound_case, schema_set

    converter = converters.get(converters.settings.mappings_dir)
    schemas = schema_set(converters.settings.xsd_dir)
    cases = find_kith_outbound_cases(root)
    results = [(run_kith_outbound_case(case, lambda data: converter.convert(data)[0], schemas=schemas, update=update), f"{case.source}:1") for case in cases]
    return len(cases), _report_outbound(results, update=update)
