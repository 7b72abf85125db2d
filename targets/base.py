"""The contract every target meets: export, validate, describe.

A target turns a prepared (eval, BN-folded, fused-heads) model into files in a
directory, checks those files in their own runtime against eager references, and
describes itself for the manifest. The pipeline never branches on target names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from segexport.errors import InvalidInputError
from segexport.devices import DeviceRecord
from segexport.manifest import TensorInfo
from segexport.parity import ParityPolicy, parity_report

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from segexport.calibration.sources import CalibrationConfig
    from segexport.parity import ParityReport
    from segexport.reuse import GraphStore

#: The graph input's name in every artifact, and the axes a dynamic graph leaves free.
INPUT_NAME = "input"
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}


@dataclass(frozen=True)
class TargetOptions:
    """A target's own build options: each target subclasses this with its fields (ONNX and
    TorchScript have none). Field metadata ``flag`` names the CLI flag in error messages."""

    @classmethod
    def allowed(cls) -> dict[str, str]:
        """Each option's key and the CLI flag that sets it."""
        return {f.name: f.metadata.get("flag", f.name) for f in dataclasses.fields(cls)}

    @classmethod
    def parse(cls, given: Mapping[str, Any], target: str) -> TargetOptions:
        """The record for ``given`` (None values keep the defaults); an unknown key fails, naming those allowed."""
        allowed = cls.allowed()
        for key, value in given.items():
            if value is not None and key not in allowed:
                takes = ", ".join(f"{k} ({f})" if f != k else k for k, f in allowed.items()) or "none"
                raise InvalidInputError(f"{key!r} is not an option of --target {target}; its options: {takes}.")
        return cls(**{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class ExportSpec:
    """Everything a target needs to know about the graph to produce."""

    batch: int
    in_channels: int
    height: int
    width: int
    output_names: tuple[str, ...]
    dynamic: bool = False
    precision: str = "fp32"
    opset: int = 18
    #: H and W must stay multiples of this in dynamic graphs (the model's required stride).
    stride: int = 1
    #: The target's own options (its ``Options`` record: TensorRT's profile shapes, workspace, ...).
    options: TargetOptions = field(default_factory=TargetOptions)
    #: int8 only: the calibration and held-out images and the accuracy budget.
    calibration: CalibrationConfig | None = None
    #: How validation judges the artifact (the precision's defaults when None).
    parity: ParityPolicy | None = None
    #: Seed of random calibration inputs (parity inputs use the policy's seed).
    seed: int = 0
    #: The encoder's name: its pretrained normalization prepares calibration images.
    encoder: str | None = None
    #: onnxruntime intra-op threads for validation and int8 timing (None: onnxruntime's default).
    threads: int | None = None
    #: Where long steps (an AOTI compile, the int8 fallback) report progress.
    progress: Callable[[str], None] | None = field(default=None, compare=False)
    #: ONNX graphs already exported from this model in this process (:mod:`segexport.reuse`), or None.
    graphs: GraphStore | None = field(default=None, compare=False)

    @property
    def policy(self) -> ParityPolicy:
        return self.parity if self.parity is not None else ParityPolicy.for_build(self.precision)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    def parity_shapes(self) -> list[tuple[int, int, int, int]]:
        """Input shapes parity runs: the export shape, plus another batch and size when dynamic."""
        shapes = [self.input_shape]
        if self.dynamic:
            step = max(self.stride, 1)
            shapes.append((self.batch + 1, self.in_channels, self.height + step, self.width + 2 * step))
        return shapes


@dataclass
class ExportResult:
    """What a target wrote: the main artifact and every other file, relative to the output dir."""

    artifact: str
    files: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    #: The target's own record for the manifest's ``export`` block.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The device the artifact was built and validated on (the manifest's ``device``).
    device: DeviceRecord | None = None


#: Runs the eager model on numpy inputs and returns one array per output name.
Reference = Callable[["np.ndarray"], dict[str, "np.ndarray"]]


class Target(Protocol):
    """One backend: ONNX, TorchScript, TensorRT, AOTInductor."""

    name: str
    precisions: tuple[str, ...]
    #: The record its ``ExportSpec.options`` holds.
    Options: ClassVar[type[TargetOptions]]

    def check(self, spec: ExportSpec) -> None:
        """Raise InvalidInputError before any work when ``spec`` cannot be built here."""

    def export(self, model: nn.Module, spec: ExportSpec, out_dir: Path) -> ExportResult:
        """Write the artifact for ``model`` into ``out_dir``."""

    def validate(
        self, out_dir: Path, result: ExportResult, spec: ExportSpec, inputs: Sequence[np.ndarray], reference: Sequence[dict[str, np.ndarray]]
    ) -> ParityReport:
        """Run the artifact in its runtime on ``inputs`` and compare with ``reference``."""

    def describe(self) -> dict[str, Any]:
        """Runtime name and versions for the manifest."""


def check_precision(target: Target, spec: ExportSpec) -> None:
    """Refuse a precision the target does not build, naming those it does."""
    if spec.precision not in target.precisions:
        raise InvalidInputError(
            f"Precision {spec.precision!r} is not available for target {target.name}; allowed: {', '.join(target.precisions)}."
        )


def tensor_info(name: str, shape: Sequence[int | str], dtype: str) -> TensorInfo:
    """A manifest entry for one input or output."""
    return TensorInfo.of(name, shape, dtype)


def judge(
    spec: ExportSpec,
    actual: Sequence[dict[str, np.ndarray]],
    reference: Sequence[dict[str, np.ndarray]],
    validated_with: str,
    inputs: Sequence[np.ndarray],
) -> ParityReport:
    """The parity report of a target's outputs under the spec's policy (every target validates through this)."""
    return parity_report(actual, reference, spec.policy, spec.output_names, validated_with, [x.shape for x in inputs])


def trace_example_shape(spec: ExportSpec) -> tuple[int, int, int, int]:
    """The example input's shape: the export shape, with batch 2 for dynamic graphs.

    Tracing records sizes through ``aten::size`` either way, but a batch of 1 lets
    model code that tests ``x.shape[0] == 1`` take a branch the trace would keep.
    """
    batch = 2 if spec.dynamic and spec.batch == 1 else spec.batch
    return (batch, spec.in_channels, spec.height, spec.width)


def io_entries(module: Any, spec: ExportSpec, device: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Manifest entries for the input and outputs, from one run at the export shape.

    Dynamic dims are named as in the ONNX target: batch on every output, height and
    width on 4D outputs.
    """
    import torch

    with torch.no_grad():
        outputs = module(torch.zeros(spec.input_shape, device=device))

    def shape(dims: Sequence[int]) -> list[int | str]:
        named: list[int | str] = list(dims)
        if spec.dynamic:
            for axis, label in DYNAMIC_DIMS.items():
                if axis < len(named) and (len(named) == 4 or axis == 0):
                    named[axis] = label
        return named

    inputs = [tensor_info(INPUT_NAME, shape(spec.input_shape), "float32")]
    outs = [tensor_info(name, shape(o.shape), str(o.dtype).removeprefix("torch.")) for name, o in zip(spec.output_names, outputs)]
    return inputs, outs


def half_precision_module(model: Any) -> Any:
    """A float16 copy of ``model``, wrapped so that the graph takes and returns float32 (fp16 TorchScript and AOTI).

    Every consumer then reads the same manifest inputs whatever the precision inside.
    """
    import copy

    import torch
    from torch import nn

    class HalfPrecision(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = self.model(x.to(torch.float16))
            return tuple(o.float() if o.is_floating_point() else o for o in outputs)

    return HalfPrecision(copy.deepcopy(model).half()).eval()
