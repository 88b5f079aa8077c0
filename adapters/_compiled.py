"""The per-message hot path, compiled with Cython at install time, and never a stale build of it.

Why: these modules run for every message (tokenize, header, groups, paths,
the mapping engine, the library functions, the unmapped report). Compiled
from the same source, unchanged, they take a quarter less CPU per ADT
message; nothing else differs, and every test runs against what was built.
`setup.py` reads `HOT_PATH` from this file; with `HELSEBRO_PURE_PYTHON=1` at
install time, or without a C compiler, nothing is compiled and the source runs.

In an editable install the built module sits beside its source, and Python
would import it even after the source changed. The finder installed here
imports the source instead whenever it is newer than the build, so an edit
takes effect at once (at the source's speed) until the next `pip install -e .`.
`HELSEBRO_PURE_PYTHON=1` at run time does the same for every module, builds
or not: the source runs (for profiling with cProfile, or to rule the build out).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

HOT_PATH = (
    "adapters/amqp/_frames.py",
    "adapters/amqp/inbound.py",
    "adapters/amqp/outbound.py",
    "adapters/fhir/_bundle.py",
    "adapters/fhir/_lookups.py",
    "adapters/fhir/_named.py",
    "adapters/fhir/_owners.py",
    "adapters/fhir/_postgres.py",
    "adapters/fhir/_search.py",
    "adapters/fhir/_sqlite.py",
    "adapters/fhir/_store.py",
    "adapters/fhir/_transaction.py",
    "adapters/hl7v2/_group_defs.py",
    "adapters/hl7v2/_tokenizer.py",
    "adapters/hl7v2/ack.py",
    "adapters/hl7v2/decode.py",
    "adapters/hl7v2/groups.py",
    "adapters/hl7v2/paths.py",
    "adapters/kith/_plans.py",
    "adapters/kith/dispatch.py",
    "adapters/kith/envelope.py",
    "adapters/kith/msghead.py",
    "adapters/kith/paths.py",
    "adapters/kith/safe_xml.py",
    "adapters/kith/xsd.py",
    "router/engine.py",
    "router/logging.py",
    "router/mapping/_each_rules.py",
    "router/mapping/_forms.py",
    "router/mapping/_rules.py",
    "router/mapping/_steps.py",
    "router/mapping/compiler.py",
    "router/mapping/conditions.py",
    "router/mapping/engine.py",
    "router/mapping/functions.py",
    "router/mapping/library.py",
    "router/mapping/mapping_set.py",
    "router/mapping/runtime.py",
    "router/mapping/tables.py",
    "router/pipeline/_kith.py",
    "router/pipeline/_reply.py",
    "router/pipeline/convert.py",
    "router/pipeline/settle.py",
    "router/routing/match.py",
    "router/routing/partition.py",
    "schemas/identity.py",
)
"""Source files compiled when the package is installed (paths from the project root)."""

_MODULES = frozenset(path[:-3].replace("/", ".") for path in HOT_PATH)


def stale(source: str, built: str) -> bool:
    """Tell whether the build *built* of *source* is older than the source (an edit since)."""
    try:
        return os.path.getmtime(source) > os.path.getmtime(built)
    except OSError:
        return False


class _FreshSource(importlib.abc.MetaPathFinder):
    """Import a hot-path module from its source when its build is older than the source, or when HELSEBRO_PURE_PYTHON is set."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            return None  # the source is what the usual finders import anyway
        source = origin[: origin.index(".", origin.rindex(os.sep))] + ".py"
        if not os.environ.get("HELSEBRO_PURE_PYTHON") and not stale(source, origin):
            return None  # the build is current: the usual finders import it
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Put the finder first on sys.meta_path, once per process."""
    if not any(isinstance(f, _FreshSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _FreshSource())


def compiled_modules() -> list[str]:
    """Return the hot-path modules this process runs compiled (benches print it)."""
    return sorted(name for name in _MODULES if (mod := sys.modules.get(name)) is not None and not (getattr(mod, "__file__", "") or "").endswith(".py"))


__all__ = ["HOT_PATH", "compiled_modules", "install", "stale"]
