"""Argument types the verbs share, so one flag means one thing in every verb."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from *low* up to *high* (no bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        if value < low:
            raise argparse.ArgumentTypeError("must not be negative" if low == 0 else f"must be at least {low}")
        return value

    return parse


positive = whole_number(1)
"""A whole number of at least 1 (a --limit, a --scan-limit)."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def age(text: str) -> float:
    """An argparse type: an age such as 90s, 15m, 2h or 7d, in seconds."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError("must be a whole number of s, m, h or d, such as 90s, 15m, 2h or 7d")
    return float(int(number) * _UNITS[unit])


def age_text(seconds: float) -> str:
    """An age as a person reads it, the inverse of `age`: 96 h, 15 m, 90 s (the largest unit it is a whole number of; days from a week)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0 and not (unit == "d" and seconds < 7 * 86400):
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"
