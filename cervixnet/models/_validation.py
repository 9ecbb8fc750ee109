"""Argument checks shared by the model builders.

Every builder validates all of its arguments before it creates a single layer. Each check raises a
``ValueError`` (``FileNotFoundError`` for a missing weights file) whose message names the argument,
states what was expected and ends with what was received, e.g.
``Received: input_shape=(100, 100, 1)``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path

# Suffixes that ``keras.Model.load_weights`` reads without TensorFlow (Keras 3 native formats).
_WEIGHTS_SUFFIXES = (".weights.h5", ".weights.json", ".keras")


def _is_int(value: object) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_input_shape(
    input_shape: object, divisor: int, rule: str, arg: str = "input_shape"
) -> tuple[int, int, int]:
    """Check a ``(height, width, channels)`` shape and the network's divisibility rule.

    Args:
        input_shape: the value to check.
        divisor: height and width must be multiples of this.
        rule: how the divisor arises, for the message (e.g. ``"2**depth = 16 for depth=4"``).
        arg: the argument name used in messages.

    Returns:
        The shape as a tuple of Python ints.
    """
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not all(_is_int(v) and v > 0 for v in input_shape)
    ):
        raise ValueError(
            f"`{arg}` must be a tuple of 3 positive ints (height, width, channels), "
            f"channels last. Received: {arg}={input_shape!r}"
        )
    shape = tuple(int(v) for v in input_shape)
    height, width, _ = shape
    if height % divisor or width % divisor:
        raise ValueError(
            f"`{arg}` height and width must be divisible by {divisor} ({rule}). "
            f"Received: {arg}={shape!r}"
        )
    return shape


def check_positive_int(value: object, arg: str) -> int:
    """Check that ``value`` is an int >= 1."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    return int(value)


def check_classes(value: object) -> int:
    """Check ``classes``: the number of foreground classes, an int >= 1."""
    return check_positive_int(value, "classes")


def check_int_at_least(value: object, minimum: int, arg: str) -> int:
    """Check that ``value`` is an int >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{arg}` must be an int >= {minimum}. Received: {arg}={value!r}")
    return int(value)


def check_rate(value: object, arg: str) -> float:
    """Check a dropout rate: a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{arg}` must be a float in [0, 1). Received: {arg}={value!r}")
    return float(value)


def check_bool(value: object, arg: str) -> bool:
    """Check that ``value`` is a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{arg}` must be True or False. Received: {arg}={value!r}")
    return value


def check_choice(value: object, choices: Sequence[str], arg: str) -> str:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{arg}` must be one of: {', '.join(repr(c) for c in choices)}. "
            f"Received: {arg}={value!r}"
        )
    return value


def check_positive_ints(
    value: object, arg: str, min_len: int = 0, length: int | None = None
) -> tuple[int, ...]:
    """Check a sequence of positive ints, optionally of an exact length or a minimum length."""
    expected = "a sequence of positive ints"
    if length is not None:
        expected = f"a sequence of exactly {length} positive ints"
    elif min_len:
        expected = f"a sequence of at least {min_len} positive int(s)"
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(_is_int(v) and v > 0 for v in value)
        or len(value) < min_len
        or (length is not None and len(value) != length)
    ):
        raise ValueError(f"`{arg}` must be {expected}. Received: {arg}={value!r}")
    return tuple(int(v) for v in value)


def check_name(value: object, arg: str = "name") -> str:
    """Check a model name: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{arg}` must be a non-empty string. Received: {arg}={value!r}")
    return value


def check_weights(value: object, arg: str = "weights") -> Path | None:
    """Check a weights argument: ``None`` or the path of an existing Keras 3 weights file.

    Raises:
        ValueError: not a path, or a suffix Keras 3 cannot read without TensorFlow.
        FileNotFoundError: the file does not exist.
    """
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ValueError(
            f"`{arg}` must be None (random initialisation) or the path of a local weights file "
            f"({', '.join(_WEIGHTS_SUFFIXES)}); nothing is downloaded. Received: {arg}={value!r}"
        )
    path = Path(value)
    if not str(path).endswith(_WEIGHTS_SUFFIXES):
        raise ValueError(
            f"`{arg}` must be a file ending in one of {', '.join(_WEIGHTS_SUFFIXES)} "
            f"(written by `model.save_weights` or `model.save`). Received: {arg}={str(value)!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"`{arg}` file not found: {str(path)!r}. Received: {arg}={str(value)!r}"
        )
    return path


def load_weights(model: object, path: Path | None) -> None:
    """Load ``path`` into ``model`` if it is not None (the model's layers must match)."""
    if path is not None:
        model.load_weights(path)  # type: ignore[attr-defined]
