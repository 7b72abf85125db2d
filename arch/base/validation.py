"""Argument checks shared by the architectures: each names the bad value and what is allowed."""

from __future__ import annotations

from segexport.checks import check_int
from segexport.errors import InvalidInputError, closest

INTERPOLATION_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def check_interpolation(mode: str) -> None:
    """decoder_interpolation must be a mode F.interpolate knows for 4D inputs."""
    if mode not in INTERPOLATION_MODES:
        raise InvalidInputError(
            f"Unknown decoder_interpolation {mode!r}; allowed: {', '.join(INTERPOLATION_MODES)}."
            f"{closest(str(mode), INTERPOLATION_MODES)}"
        )


def check_channels(name: str, value: object, multiple_of: int = 1, why: str = "") -> None:
    """A layer width argument must be a positive integer (and a multiple of ``multiple_of``, because ``why``)."""
    if multiple_of == 1 and not why:
        check_int(name, value)
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % multiple_of:
        what = f"a positive multiple of {multiple_of}" if multiple_of > 1 else "an integer >= 1"
        reason = f" ({why})" if why else ""
        raise InvalidInputError(f"{name} must be {what}{reason}; got {value!r}.")


def check_probability(name: str, value: object) -> None:
    """A dropout argument must lie in [0, 1] (nn.Dropout2d would raise a bare ValueError)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InvalidInputError(f"{name} must be a probability in [0, 1]; got {value!r}.")


def check_upsampling(value: object) -> None:
    """The head's upsampling factor must be a number >= 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"upsampling must be a number >= 1 (1 means none); got {value!r}.")
