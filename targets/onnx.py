"""ONNX target: a checked, simplified, deterministic ONNX graph run by onnxruntime.

Exporter choice, on measured speed and result: the TorchScript-based exporter
(``dynamo=False``) first, the dynamo exporter where it fails or where a dynamic
trace baked a size. The TorchScript-based one used to fail on adaptive pooling
(PSPNet, UPerNet); our export mode pools with size-derived fixed windows, so it
takes every architecture now, and it builds the same simplified graph in less than
half the time. Dynamic graphs are exported from an example with batch 2, because a
batch of 1 lets an exporter specialise the batch dim. The manifest's
``export.exporter`` says which exporter built the graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segexport.devices import DeviceRecord
from segexport.errors import ExportError, InvalidInputError, first_line
from segexport.interrupts import deferred
from segexport.manifest import TensorInfo
from segexport.onnx_files import (
    PROTOBUF_LIMIT,
    check_onnx,
    make_deterministic,
    save_onnx,
)
from segexport.parity import ParityReport
from segexport.quiet import quiet_fds, quiet_prints

from .runners import OnnxRuntimeRunner
from .base import DYNAMIC_DIMS, INPUT_NAME, ExportResult, ExportSpec, TargetOptions, check_precision, judge, tensor_info

MODEL_FILE = "model.onnx"
MIN_OPSET, MAX_OPSET = 17, 23


def check_opset(spec: ExportSpec) -> None:
    """Refuse an opset outside what the exporters and onnxruntime handle here."""
    if not MIN_OPSET <= spec.opset <= MAX_OPSET:
        raise InvalidInputError(f"--opset {spec.opset} is not supported; allowed: {MIN_OPSET}..{MAX_OPSET}.")


def export_onnx(model: Any, spec: ExportSpec, path: Path) -> str:
    """Export ``model`` to ``path`` as a simplified ONNX graph that passes the full checker; returns the exporter used.

    The TorchScript-based exporter goes first: on our models it gives the same graph
    after simplification (116 nodes for unet-resnet34 either way) in less than half
    the time of torch.export's. Where it cannot take a model, or where a dynamic
    graph's trace warns that it turned a size into a constant, the dynamo exporter
    (torch.export) builds the graph instead. Either graph is then judged by parity.
    Ctrl-C waits for the exporters and onnx's bindings to return (:mod:`segexport.interrupts`).
    A graph this process already exported from the same model with the same settings
    (``spec.graphs``) is copied instead: the same bytes, checked when it was made.
    """
    if spec.graphs is not None and (exporter := spec.graphs.fetch(spec, path)) is not None:
        return exporter
    with deferred():
        exporter = "torchscript"
        proto = _export_traced(model, spec, path)
        if proto is None:
            exporter, proto = "dynamo", _export_dynamo(model, spec)
        proto = simplify(proto)
        name_dynamic_dims(proto, spec)
        make_deterministic(proto)
        save_onnx(proto, path)
    check_onnx(path, "The exported graph")
    if spec.graphs is not None:
        spec.graphs.keep(spec, path, exporter)
    return exporter


def _example(spec: ExportSpec) -> Any:
    import torch

    # A batch of 1 lets an exporter specialise the batch dimension: dynamic graphs are traced at batch 2.
    batch = 2 if spec.dynamic and spec.batch == 1 else spec.batch
    return torch.zeros(batch, spec.in_channels, spec.height, spec.width)


def _export_traced(model: Any, spec: ExportSpec, path: Path) -> Any | None:
    """The TorchScript-based exporter's graph, or None where the dynamo exporter must take over."""
    import onnx
    import torch
    from segexport.arch.base import export_mode

    # Output dims follow from the input's by shape inference; name_dynamic_dims names them afterwards.
    dynamic_axes = {INPUT_NAME: dict(DYNAMIC_DIMS)} if spec.dynamic else None
    scratch = path.with_name(path.name + ".traced")
    # _silent_fds: on failure the traced exporter prints its whole IR graph from C++, past sys.stdout.
    with warnings.catch_warnings(record=True) as caught, export_mode(), torch.no_grad(), quiet_prints(), quiet_fds():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                model, (_example(spec),), str(scratch), dynamo=False, input_names=[INPUT_NAME],
                output_names=list(spec.output_names), opset_version=spec.opset, dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )  # fmt: skip
            proto = onnx.load(str(scratch))
        except Exception:  # the traced exporter refuses some ops; torch.export takes those models
            return None
        finally:
            for leftover in (scratch, scratch.with_name(scratch.name + ".data")):
                leftover.unlink(missing_ok=True)
    baked = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if spec.dynamic and baked:
        return None  # a size the trace turned into a constant would break the other shapes
    return proto


def _export_dynamo(model: Any, spec: ExportSpec) -> Any:
    import torch
    from segexport.arch.base import export_mode

    dynamic_shapes = None
    if spec.dynamic:
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({axis: dim for axis in DYNAMIC_DIMS},)
    with warnings.catch_warnings(), export_mode(), torch.no_grad(), quiet_prints():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (_example(spec),),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(spec.output_names),
                opset_version=spec.opset,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many internal types
            raise ExportError(f"torch.onnx.export failed: {first_line(exc)}") from exc
    return program.model_proto


def simplify(proto: Any) -> Any:
    """Fold constants and fuse patterns with onnxslim.

    onnxslim over onnxsim: it is pure Python (no build on new Pythons), keeps
    symbolic dims intact and handles >2 GB graphs; on our models both give the
    same node counts, and onnxslim is faster.
    """
    import onnxslim

    if proto.ByteSize() > PROTOBUF_LIMIT:
        return proto
    with warnings.catch_warnings(), quiet_prints():
        warnings.simplefilter("ignore")
        return onnxslim.slim(proto)


def name_dynamic_dims(proto: Any, spec: ExportSpec) -> None:
    """Give dynamic dims readable names (batch, height, width) on graph inputs and 4D outputs."""
    if not spec.dynamic:
        return
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, label in DYNAMIC_DIMS.items():
            if axis < len(dims) and (len(dims) == 4 or axis == 0) and not dims[axis].HasField("dim_value"):
                dims[axis].dim_param = label


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Manifest entries for the graph's inputs and outputs, symbolic dims by name."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dtypes = {1: "float32", 10: "float16", 7: "int64", 3: "int8", 2: "uint8"}

    def entries(values: Any) -> list[TensorInfo]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out.append(tensor_info(v.name, shape, dtypes.get(t.elem_type, str(t.elem_type))))
        return out

    return entries(model.graph.input), entries(model.graph.output)


class OnnxTarget:
    """``--target onnx``: model.onnx validated in onnxruntime on CPU."""

    name = "onnx"
    precisions = ("fp32", "int8")
    Options = TargetOptions

    def check(self, spec: ExportSpec) -> None:
        check_opset(spec)
        check_precision(self, spec)

    def export(self, model: Any, spec: ExportSpec, out_dir: Path) -> ExportResult:
        path = out_dir / MODEL_FILE
        extra: dict[str, Any] = {"exporter": export_onnx(model, spec, path)}
        files = [MODEL_FILE]
        if spec.precision == "int8":
            from segexport.calibration.quantize import quantize_onnx

            fp32_path = out_dir / "model.fp32.onnx"
            path.rename(fp32_path)
            # The record: both image sets with their digests, and the layers kept in float.
            extra["calibration"] = quantize_onnx(fp32_path, path, spec)
            files.append(fp32_path.name)
        if (out_dir / (MODEL_FILE + ".data")).exists():
            files.append(MODEL_FILE + ".data")
        inputs, outputs = onnx_io(path)
        device = DeviceRecord.current("cpu", compiled=False)  # validated there; the graph itself runs anywhere
        return ExportResult(artifact=MODEL_FILE, files=files, inputs=inputs, outputs=outputs, extra=extra, device=device)

    def validate(
        self,
        out_dir: Path,
        result: ExportResult,
        spec: ExportSpec,
        inputs: Sequence[np.ndarray],
        reference: Sequence[dict[str, np.ndarray]],
    ) -> ParityReport:
        actual = OnnxRuntimeRunner(out_dir / result.artifact, threads=spec.threads).run(inputs)
        return judge(spec, actual, reference, "onnxruntime-cpu", inputs)

    def describe(self) -> dict[str, Any]:
        import onnx
        import onnxruntime

        return {"runtime": "onnxruntime", "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}}
