"""Build Helsebro: compile the per-message hot path with Cython where a C compiler is at hand.

The modules are listed in adapters/_compiled.py, which also keeps an edited
module from running as its older build. `HELSEBRO_PURE_PYTHON=1` at install
time compiles nothing; so does a machine without a compiler (the extensions
are optional: a failed build leaves the source to run).
"""

from __future__ import annotations

import os
import runpy
import sys

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    if os.environ.get("HELSEBRO_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    hot = runpy.run_path(os.path.join("adapters", "_compiled.py"))["HOT_PATH"]
    # binding: compiled functions stay function objects that carry attributes (the mapping compiler sets .plan on them).
    # annotation_typing off: annotations stay hints, as in Python (lxml hands over str subclasses where `str` is annotated).
    directives = {"language_level": "3", "binding": True, "annotation_typing": False}
    out: list[Extension] = []
    for path in hot:
        module = Extension(path[:-3].replace("/", "."), [path], optional=True)  # optional: a failed C compile leaves the source
        try:
            out += cythonize([module], compiler_directives=directives, quiet=True)
        except Exception as exc:  # noqa: BLE001  # a construct Cython cannot translate: that module runs from its source
            sys.stderr.write(f"setup.py: {module.name} stays pure Python: {exc}\n")
    return out


setup(ext_modules=_extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})  # C compiles side by side
