"""The edges: wire protocols and message formats, in and out."""

from adapters import _compiled

_compiled.install()  # an edited hot-path module runs from its source, not from an older build
