"""Checks of user-given numbers, each failing with one line that names the value and what is allowed."""

from __future__ import annotations

from typing import Any

from segexport.errors import InvalidInputError


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``; ``name`` is the flag or argument in the error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return value


def check_fraction(name: str, value: Any, *, open_ends: bool = False) -> float:
    """``value`` as a float if it is a number in [0, 1] ((0, 1) with ``open_ends``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and (0.0 < value < 1.0 if open_ends else 0.0 <= value <= 1.0)
    if not inside:
        raise InvalidInputError(f"{name} must be a number in {'(0, 1)' if open_ends else '[0, 1]'}; got {value!r}.")
    return float(value)
