"""Export mode: a switch model code consults to pick export-friendly layers.

Like timm's ``set_layer_config(exportable=True)``: while a target traces a model,
layers that trace badly (adaptive pooling with data-dependent windows, fused
kernels) take a plain path that every exporter and runtime understands. Eager
results are identical either way; only the recorded graph differs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_EXPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("segexport_exporting", default=False)


@contextlib.contextmanager
def export_mode(enabled: bool = True) -> Iterator[None]:
    """Within this block :func:`is_exporting` is ``enabled``."""
    token = _EXPORTING.set(enabled)
    try:
        yield
    finally:
        _EXPORTING.reset(token)


def is_exporting() -> bool:
    """True inside :func:`export_mode`, while tracing/scripting, or under torch.export."""
    if _EXPORTING.get():
        return True
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler_is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(compiler_is_exporting and compiler_is_exporting())


def in_export_mode() -> bool:
    """True inside :func:`export_mode` only: a segexport target is exporting.

    Layer swaps that change float rounding (plain attention instead of fused
    kernels) key on this, not on :func:`is_exporting`: a user's own
    ``torch.export``/``torch.jit.trace`` of the model then records exactly the
    eager computation, as with SMP.
    """
    return _EXPORTING.get()
