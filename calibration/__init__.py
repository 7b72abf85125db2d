"""int8 calibration: images prepared for the encoder, cached activation ranges, Q/DQ ONNX graphs.

- :mod:`.sources`: the calibration set (a folder of images, or seeded noise on request).
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
    """The calibration batches for ``spec`` (each of the spec's input shape), also used for int8 parity."""
    from .sources import load_calibration

    return load_calibration(spec).inputs


__all__ = ["calibration_inputs"]
