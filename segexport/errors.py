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


class InputShapeError(InvalidInputError, RuntimeError):
    """The input tensor's size does not fit the model.

    Also a ``RuntimeError``, the type SMP raises for it, so ``except RuntimeError``
    written for SMP catches it.
    """


class UnknownNameError(InvalidInputError, KeyError):
    """A registry has no entry of that name (architecture, encoder, encoder weights).

    Also a ``KeyError``, the type SMP raises for it, so ``except KeyError`` written
    for SMP catches it; the message prints as written (KeyError would quote it).
    """

    def __str__(self) -> str:
        return Exception.__str__(self)


class ExportError(SegexportError, RuntimeError):
    """A backend could not turn the model into an artifact."""


class ParityError(SegexportError, RuntimeError):
    """The artifact does not reproduce eager PyTorch within tolerance."""


class OutputError(SegexportError, OSError):
    """The bundle cannot be written where the user asked (full disk, read-only, not a directory)."""


class TamperedBundleError(SegexportError, ValueError):
    """A bundle's files or manifest differ from what ``build`` wrote (hashes, manifest digest, expected digest)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what one-line errors quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def squeeze(text: str, limit: int = 300, ellipsis: str = "…") -> str:
    """``text`` on one line (each run of whitespace one space), cut to ``limit`` characters, ``ellipsis`` marking a cut."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - len(ellipsis)].rstrip() + ellipsis


def closest(value: str, allowed: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix naming the nearest allowed value, or ''."""
    match = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def unknown(kind: str, value: object, allowed: Iterable[str]) -> InvalidInputError:
    """The standard 'unknown X' error: names the value, the allowed ones and the closest."""
    allowed = sorted(allowed)
    shown = ", ".join(allowed) if len(allowed) <= 30 else ", ".join(allowed[:30]) + f", ... ({len(allowed)} in all)"
    return InvalidInputError(f"Unknown {kind} {value!r}; allowed: {shown}.{closest(str(value), allowed)}")
