"""The engine: pipeline, mapping interpreter, routing, delivery and operator surfaces."""

import adapters  # noqa: F401  # first: its finder decides between a hot-path module's build and its source (adapters/_compiled.py)
