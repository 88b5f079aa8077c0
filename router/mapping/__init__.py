"""The mapping language: load YAML, check it, compile it to callables, run it.

One interpreter for every source format; a format brings only its path compiler.
"""

from __future__ import annotations

from router.mapping._join import join_bundles
from router.mapping.compiler import Compiler, MessageMapping
from router.mapping.engine import run_mapping
from router.mapping.library import LIBRARY, FnContext
from router.mapping.mapping_set import MappingSet

__all__ = ["LIBRARY", "Compiler", "FnContext", "MappingSet", "MessageMapping", "join_bundles", "run_mapping"]
