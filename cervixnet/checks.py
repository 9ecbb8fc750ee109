"""Argument checks shared across the library; each error names the argument and what it got.

NumPy only. Messages read ``\\`threshold\\` must be a number in [0, 1]. Received:
threshold=1.5``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _real(name: str, value: Any, expected: str) -> float:
    """``value`` as a float (a number or NumPy scalar; not a bool or a string), or ValueError."""
    if not isinstance(value, bool | str | bytes):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1], or ValueError."""
    number = _real(name, value, "a number in [0, 1]")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return number


def open_unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in (0, 1), e.g. a confidence level, or ValueError."""
    number = _real(name, value, "a number in (0, 1)")
    if not 0.0 < number < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1). Received: {name}={value!r}")
    return number


def finite_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0, or ValueError."""
    number = _real(name, value, "a finite number > 0")
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (Python or NumPy integer, not a bool), or ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)
