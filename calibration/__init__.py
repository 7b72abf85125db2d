"""int8 calibration: images prepared for the encoder, cached activation ranges, Q/DQ ONNX graphs.

- :mod:`.sources`: the calibration set and the held-out set int8 is judged on (a folder
  of images split by a hash of each file's name, or ``--val``; seeded noise on request).
- :mod:`.fallback`: the layers kept in float so that int8 keeps its accuracy on the held-out set.
- :mod:`.cache`: the range cache, keyed by graph, method and images.
- :mod:`.quantize`: calibration and the Q/DQ graph for onnxruntime or TensorRT.

Importing this package is cheap; numpy, onnx and onnxruntime load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from segexport.targets.base import ExportSpec


def calibration_inputs(spec: ExportSpec) -> list[np.ndarray]:
    """The calibration batches for ``spec`` (each of the spec's input shape): what the ranges come from."""
    from .sources import load_calibration

    return load_calibration(spec).inputs


def validation_inputs(spec: ExportSpec) -> list[np.ndarray]:
    """The held-out batches for ``spec``, disjoint from the calibration batches: what int8 parity is judged on."""
    from .sources import load_validation

    return load_validation(spec).inputs


__all__ = ["calibration_inputs", "validation_inputs"]
