"""The one exception hierarchy of segexport.

Every error a user can cause derives from :class:`SegexportError`; the CLI turns
it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SegexportError(Exception):
    """Base of every error segexport raises on purpose."""


class InvalidInputError(SegexportError, ValueError):
    """The user asked for something that does not exist or cannot work."""


class ExportError(SegexportError, RuntimeError):
    """A backend could not turn the model into an artifact."""


class ParityError(SegexportError, RuntimeError):
    """The artifact does not reproduce eager PyTorch within tolerance."""


def closest(value: str, allowed: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix naming the nearest allowed value, or ''."""
    match = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown(kind: str, value: object, allowed: Iterable[str]) -> InvalidInputError:
    """The standard 'unknown X' error: names the value, the allowed ones and the closest."""
    allowed = sorted(allowed)
    shown = ", ".join(allowed) if len(allowed) <= 30 else ", ".join(allowed[:30]) + f", ... ({len(allowed)} in all)"
    return InvalidInputError(f"Unknown {kind} {value!r}; allowed: {shown}.{closest(str(value), allowed)}")
