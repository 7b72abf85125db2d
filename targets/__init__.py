"""Export targets: one module per backend, one registry of them.

Targets import their heavy runtimes lazily, so listing them costs nothing.
"""

from __future__ import annotations

import importlib

from segexport.errors import unknown

from .base import ExportResult, ExportSpec, Target

#: name → "module:Class" of the target, imported on first use.
_TARGETS: dict[str, str] = {
    "onnx": "segexport.targets.onnx:OnnxTarget",
    "torchscript": "segexport.targets.torchscript:TorchScriptTarget",
    "aoti": "segexport.targets.aoti:AotiTarget",
    "trt": "segexport.targets.tensorrt:TensorRTTarget",
}


def list_targets() -> list[str]:
    """Names accepted by ``--target``."""
    return sorted(_TARGETS)


def get_target(name: str) -> Target:
    """An instance of the target called ``name``."""
    key = str(name).lower()
    if key not in _TARGETS:
        raise unknown("target", name, _TARGETS)
    module, cls = _TARGETS[key].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["ExportResult", "ExportSpec", "Target", "get_target", "list_targets"]
