"""The KITH-specific refusals that the AppRec table answers separately.

Each is a ``router.errors`` class underneath, so the pipeline treats it by its
branch (every one here is a ``MessageError``: dead-letter, never retry) while
``adapters/kith/apprec.py`` gives it its own Volven 8221 code.

The two patient classes are for the mapping stage, which knows whether the
patient could be identified; they belong in router/errors.py once the router
raises them (an adapter class must not be imported by the router).
"""

from __future__ import annotations

from router.errors import InvalidContent

__all__ = ["InvalidMsgId", "PatientInsufficient", "PatientNotFound", "SchemaInvalid", "shown"]

_SHOWN_MAX = 120


def shown(name: str) -> str:
    """A sender's own name (a namespace, a root element) as a refusal quotes it: cut at 120 characters.

    The reason goes to the AppRec, the dead letter's headers and the log; a namespace of
    a megabyte made each of them a megabyte.
    """
    return name if len(name) <= _SHOWN_MAX else name[:_SHOWN_MAX] + "…"


class SchemaInvalid(InvalidContent):
    """Well-formed XML that breaks its national schema (AppRec T02), e.g. an invalid element or base64."""


class InvalidMsgId(InvalidContent):
    """MsgId is not a UUID (AppRec E10, HIS 80415:2012 §3.3.4)."""


class PatientNotFound(InvalidContent):
    """The patient is not known in the receiving system (AppRec E35)."""


class PatientInsufficient(InvalidContent):
    """The patient is not identified well enough: name with FNR, DNR, FH-nr, or DOB and sex (AppRec E36)."""
