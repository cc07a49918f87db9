"""Numbers for people: the one place the report formats a value."""

from __future__ import annotations

import math


def fmt(value: float | None) -> str:
    """A number for people: 4 significant digits; ``n/a`` for missing or non-finite values."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def fmt_signed(value: float | None) -> str:
    """A difference with its sign (``+0.012``)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.4g}"
