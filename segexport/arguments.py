"""Parsing of the CLI's ``key=value`` arguments, shared by ``build`` and ``matrix`` (torch-free)."""

from __future__ import annotations

import ast
from typing import Any

from segexport.errors import InvalidInputError


def parse_arch_args(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are Python literals when they parse as one, else strings.

    Only literals are evaluated (``ast.literal_eval``): an argument can never run code.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--arch-arg {item!r} is not of the form key=value (e.g. decoder_channels=[128,64,32,16,8]).")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = raw
        parsed[key.strip()] = value
    return parsed
