"""TorchScript target: a traced, frozen, device-portable ``model.ts`` run by torch.jit / LibTorch.

Tracing over scripting: the prepared model is a plain feed-forward graph (the
shared forward has no data-dependent control flow, and export mode swaps the
layers whose eager path depends on Python-side sizes), so ``torch.jit.trace``
records every op with shapes taken from the input and the graph stays valid for
other batches and sizes. Nothing needs ``torch.jit.script``; if an architecture
ever branches on tensor values, the fix belongs in its model code.

Optimisation: the module is frozen (weights become constants, conv/add/mul
folding, dropout removed) but ``torch.jit.optimize_for_inference`` is *not*
applied before saving: it rewrites convolutions to MKLDNN layouts of the build
machine, ties the graph to the CPU, and its result cannot be loaded back
(``torch.jit.load`` fails with "required keyword attribute 'value' is
undefined"). Call it after loading, on the deployment machine, when running on
the CPU (``torch.jit.optimize_for_inference(torch.jit.load(...))`` or
``torch::jit::optimize_for_inference`` in C++).

TorchScript is deprecated upstream (torch >= 2.5 warns on every call); it still
works on the torch versions segexport supports, and the deprecation warnings are
silenced here because they say nothing about the artifact.

fp16: the weights and arithmetic are half precision but the graph takes and
returns float32 (it casts at both ends), so every consumer reads the same
manifest inputs. fp16 is traced and validated on a CUDA GPU: half-precision
convolutions on the CPU are slow and not what such an artifact is for.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segexport.devices import DeviceRecord
from segexport.errors import ExportError, InvalidInputError, first_line
from segexport.parity import ParityReport

from .runners import TorchScriptRunner
from .base import ExportResult, ExportSpec, TargetOptions, check_precision, half_precision_module, io_entries, judge, trace_example_shape

MODEL_FILE = "model.ts"
#: precision → the device the artifact is traced and validated on
PRECISION_DEVICE = {"fp32": "cpu", "fp16": "cuda"}


def trace_torchscript(model: Any, spec: ExportSpec, device: str = "cpu") -> tuple[Any, list[str]]:
    """Trace ``model`` in export mode and freeze it; returns the module and the tracer's warnings.

    The tracer's warnings (a tensor converted to a Python number, ...) mark places
    where a size may have been baked into the graph; they are returned so the
    manifest can show them, and parity at a second size (``--dynamic``) decides.
    """
    import torch

    from segexport.arch.base import export_mode

    module = half_precision_module(model) if spec.precision == "fp16" else model
    module = module.to(device).eval()
    example = torch.zeros(trace_example_shape(spec), device=device)
    with export_mode(), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's deprecation notices
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
        except Exception as exc:  # the tracer raises many internal types
            raise ExportError(f"torch.jit.trace failed: {first_line(exc)}") from exc
    notes = sorted({first_line(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)})
    return frozen, notes


def baked_devices(graph: Any) -> list[str]:
    """Device constants in ``graph`` (nested blocks included), each with the ops that use it.

    A traced ``torch.zeros(..., device=x.device)`` or ``.to(x.device)`` records the
    tracing device as a constant: the saved module would then create tensors on that
    device wherever it runs. Weights are not affected (``map_location`` moves them).
    """
    import torch

    found = []
    for node in graph.findAllNodes("prim::Constant"):
        value = node.output()
        if isinstance(value.type(), torch._C.DeviceObjType):
            users = sorted({use.user.kind() for use in value.uses()})
            where = node.scopeName() or (node.sourceRange().splitlines() or [""])[0]
            found.append(f"{value.toIValue()} used by {', '.join(users) or 'nothing'}{f' at {where}' if where else ''}")
    return found


def save_torchscript(module: Any, path: Path) -> None:
    """``torch.jit.save`` without the deprecation notice."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.save(module, str(path))


class TorchScriptTarget:
    """``--target torchscript``: model.ts, traced and frozen, validated by loading it back with torch.jit.load."""

    name = "torchscript"
    precisions = ("fp32", "fp16")
    Options = TargetOptions

    def check(self, spec: ExportSpec) -> None:
        check_precision(self, spec)
        if spec.precision == "fp16":
            _require_cuda()

    def export(self, model: Any, spec: ExportSpec, out_dir: Path) -> ExportResult:
        device = PRECISION_DEVICE[spec.precision]
        module, notes = trace_torchscript(model, spec, device)
        baked = baked_devices(module.graph)
        if baked:
            raise ExportError(
                "The traced graph hard-codes a device, so model.ts would not run elsewhere: "
                + "; ".join(baked)
                + ". Create tensors from the input (x.new_zeros, torch.zeros_like) in the model code."
            )
        path = out_dir / MODEL_FILE
        save_torchscript(module, path)
        inputs, outputs = io_entries(module, spec, device)
        extra: dict[str, Any] = {
            "traced_on": device,
            "compute_dtype": "float16" if spec.precision == "fp16" else "float32",
            "frozen": True,
        }
        if notes:
            extra["tracer_warnings"] = notes
        record = DeviceRecord.current(device, compiled=False)  # weights move with map_location: it loads anywhere
        return ExportResult(artifact=MODEL_FILE, files=[MODEL_FILE], inputs=inputs, outputs=outputs, extra=extra, device=record)

    def validate(
        self,
        out_dir: Path,
        result: ExportResult,
        spec: ExportSpec,
        inputs: Sequence[np.ndarray],
        reference: Sequence[dict[str, np.ndarray]],
    ) -> ParityReport:
        if spec.precision == "fp16":
            _require_cuda()
        device = PRECISION_DEVICE.get(spec.precision, "cpu")
        actual = TorchScriptRunner(out_dir / result.artifact, spec.output_names, device=device).run(inputs)
        validated_with = f"torch.jit.load-{device}" + ("-fp16" if spec.precision == "fp16" else "")
        return judge(spec, actual, reference, validated_with, inputs)

    def describe(self) -> dict[str, Any]:
        # The runtime is LibTorch of the same torch version, which the manifest already records.
        return {"runtime": "torchscript", "versions": {}}


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise InvalidInputError(
            "fp16 TorchScript is traced and validated on a CUDA GPU, and none is available on this machine; "
            "build fp32 (drop --fp16) here, or build on a machine with a GPU."
        )
