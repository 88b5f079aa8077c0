"""The edges: wire protocols and message formats, in and out."""
