"""Where accuracy is lost: compare every layer of a bundle's graph with the eager model's, on one input.

The bundle's ONNX graph (the artifact of an ONNX bundle; the fp32, fp16 or int8 graph a
TensorRT engine was built from) runs in onnxruntime with each layer's output exposed
as an extra graph output; the eager model, rebuilt from the manifest and prepared as the
export was (BatchNorm folded), runs on the same input with a forward hook on each
matching module. Layers are printed in graph order with their relative error
``||artifact - eager|| / ||eager||``; the first ones over the tolerance are where a
wrong fp32 export breaks, or where int8/fp16 loses what the mask later misses.

A graph layer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) is matched to
the eager module whose weight it holds: the graph's weight (dequantized for int8, cast
from fp16) against each module weight of the same size, as is or transposed, by
cosine similarity. Graph tensor names carry no module names after export and
simplification, and a matching by content survives quantization, fp16 and edits:
an edited weight still resembles its own module's far more than any other.

Graphs run with onnxruntime's basic optimizations only, so Q/DQ nodes are the fake
quantization TensorRT implements and exposing an output changes no fusion.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segexport.errors import InvalidInputError
from segexport.onnx_files import infer_shapes

#: Relative error above which a layer is reported, per precision (``||a - e|| / ||e||``).
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.1}
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Least |cosine| between a graph weight and a module weight to call them the same layer.
MIN_MATCH = 0.5


@dataclass(frozen=True)
class LayerError:
    """One graph layer against its eager module."""

    index: int
    module: str
    node: str
    op: str
    tensor: str
    relative_error: float
    max_abs: float
    exceeds: bool


@dataclass(frozen=True)
class LocateReport:
    """Per-layer errors of a bundle's graph against eager, in graph order."""

    bundle: str
    graph: str
    precision: str
    input: str
    tolerance: float
    layers: list[LayerError]
    graph_layers: int
    unmatched: list[str] = field(default_factory=list)

    @property
    def over_tolerance(self) -> list[LayerError]:
        return [layer for layer in self.layers if layer.exceeds]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "over_tolerance": [asdict(layer) for layer in self.over_tolerance]}


def _constant(name: str, producer: dict[str, Any], inits: dict[str, Any]) -> np.ndarray | None:
    """The float value of ``name`` when it is a constant: an initializer, through DequantizeLinear, QuantizeLinear or Cast."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float32)
    node = producer.get(name)
    if node is None:
        return None
    if node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t).astype(np.float32)
        return None
    if node.op_type in ("Cast", "QuantizeLinear", "Identity"):
        return _constant(node.input[0], producer, inits)
    if node.op_type == "DequantizeLinear":
        q = _constant(node.input[0], producer, inits)
        scale = _constant(node.input[1], producer, inits)
        zero = _constant(node.input[2], producer, inits) if len(node.input) > 2 and node.input[2] else None
        if q is None or scale is None:
            return None
        if producer.get(node.input[0]) is not None and producer[node.input[0]].op_type == "QuantizeLinear":
            return q  # a Q/DQ pair on a float weight: the float weight it came from
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = -1
        zero = 0.0 if zero is None else zero.reshape(shape)
        return (q - zero) * scale.reshape(shape)
    if node.op_type == "Transpose":
        value = _constant(node.input[0], producer, inits)
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        return None if value is None else np.transpose(value, perm)
    return None


def _layer_weight(node: Any, producer: dict[str, Any], inits: dict[str, Any]) -> np.ndarray | None:
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return _constant(node.input[1], producer, inits) if len(node.input) > 1 else None
    for i in (1, 0):  # MatMul: whichever operand is constant
        value = _constant(node.input[i], producer, inits)
        if value is not None:
            return value
    return None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(abs(a @ b) / den) if den > 0 else 0.0


def match_layers(graph: Any, model: Any) -> tuple[dict[str, str], list[str]]:
    """``{graph node name: module path}`` for the graph's layers, and the layers left unmatched (see the module docstring)."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    inits = {t.name: t for t in graph.graph.initializer}
    params: dict[int, list[tuple[str, np.ndarray]]] = {}
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None and getattr(weight, "ndim", 0) >= 2 and path:
            arr = weight.detach().float().numpy()
            params.setdefault(arr.size, []).append((path, arr))
    matched: dict[str, str] = {}
    unmatched: list[str] = []
    for node in graph.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        weight = _layer_weight(node, producer, inits)
        if weight is None:
            continue  # an activation x activation product (attention): no module holds it
        scores = []
        for path, arr in params.get(weight.size, []):
            views = [arr] + ([arr.T] if arr.ndim == 2 else [])
            fits = [v for v in views if v.shape == weight.shape] or ([arr] if arr.ndim != weight.ndim else [])
            scores.append((max((_cosine(v, weight) for v in fits), default=0.0), path))
        scores.sort(reverse=True)
        if scores and scores[0][0] >= MIN_MATCH and (len(scores) == 1 or scores[0][0] - scores[1][0] > 0.05):
            matched[node.name] = scores[0][1]
        else:
            unmatched.append(node.name)
    return matched, unmatched


def compare_layers(graph: Any, model: Any, x: np.ndarray, tolerance: float) -> tuple[list[LayerError], list[str], int]:
    """Each matched layer's output in ``graph`` (an onnx ModelProto) against its module's in ``model`` on ``x``.

    Returns the per-layer errors in graph order, the unmatched layer nodes, and the number of graph layers.
    """
    import onnx
    import onnxruntime as ort
    import torch

    matched, unmatched = match_layers(graph, model)
    layers = [n for n in graph.graph.node if n.name in matched]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(graph)
    outputs = {o.name for o in exposed.graph.output}
    types = _element_types(exposed)
    for node in layers:
        if node.output[0] not in outputs:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], types.get(node.output[0], onnx.TensorProto.FLOAT), None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [n.output[0] for n in layers]
    values = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))

    modules = dict(model.named_modules())
    calls: dict[str, list[np.ndarray]] = {}
    handles = []
    for path in sorted(set(matched.values())):
        def hook(_module: Any, _args: Any, out: Any, path: str = path) -> None:
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            calls.setdefault(path, []).append(tensor.detach().float().numpy().copy())

        handles.append(modules[path].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()

    used: dict[str, int] = {}
    errors: list[LayerError] = []
    all_layers = [n for n in graph.graph.node if n.op_type in LAYER_OPS]
    for node in layers:
        path = matched[node.name]
        k = used.get(path, 0)
        used[path] = k + 1
        eager = calls.get(path, [])
        actual = np.asarray(values[node.output[0]], dtype=np.float32)
        if k >= len(eager) or eager[k].size != actual.size:
            unmatched.append(node.name)
            continue
        expected = eager[k].reshape(actual.shape)
        diff = actual.astype(np.float64) - expected
        norm = float(np.linalg.norm(expected))
        rel = float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff))
        errors.append(
            LayerError(
                index=all_layers.index(node),
                module=path.removeprefix("model."),
                node=node.name,
                op=node.op_type,
                tensor=node.output[0],
                relative_error=rel,
                max_abs=float(np.abs(diff).max(initial=0.0)),
                exceeds=rel > tolerance,
            )
        )
    return errors, unmatched, len(all_layers)


def _element_types(model: Any) -> dict[str, int]:

    try:
        inferred = infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference raises several types; fall back to float outputs
        return {}
    return {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.output]
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type
    }


def bundle_graph(bundle: Any) -> str:
    """The ONNX graph in a bundle that layers are compared in (see the module docstring)."""
    graph = bundle.manifest.onnx_graph()
    if graph is not None:
        return graph
    raise InvalidInputError(
        f"Locating layers needs an ONNX graph in the bundle (targets onnx, trt); a {bundle.manifest.target} bundle holds none. "
        f"Build the same model with --target onnx (same --fp16/--int8 where offered) and locate there."
    )


def locate(
    bundle_path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    tolerance: float | None = None,
) -> LocateReport:
    """Compare every layer of a bundle's graph with the eager model on one input (see the module docstring).

    Args:
        bundle_path: the bundle directory.
        checkpoint: the weights the bundle was built from (needed when it was built from one).
        image: an image to run on, prepared as the manifest says; default: the bundle's first reference input.
        tolerance: relative error above which a layer is reported; default per precision (:data:`TOLERANCE`).
    """
    import onnx
    import torch

    from segexport.bundle import Bundle
    from segexport.evaluate import bundle_normalization, eager_from_bundle
    from segexport.pipeline import read_reference
    from segexport.prepare import prepare_for_export

    bundle = Bundle.load(bundle_path)
    m = bundle.manifest
    name = bundle_graph(bundle)
    tol = TOLERANCE.get(m.precision, TOLERANCE["fp32"]) if tolerance is None else float(tolerance)
    if not tol > 0:
        raise InvalidInputError(f"--tolerance must be > 0; got {tolerance!r}.")
    exp = m.export
    if image is None:
        inputs, _ = read_reference(bundle.path_of(m.reference or ""), exp.output_names)
        x, described = inputs[0], f"the bundle's reference input 0 ({'x'.join(map(str, inputs[0].shape))})"
    else:
        from segexport.calibration.sources import (
            match_channels,
            normalize,
            read_image,
            resize,
        )

        path = Path(image)
        if not path.is_file():
            raise InvalidInputError(f"--image {str(image)!r} is not a file.")
        pixels = resize(match_channels(read_image(path), m.in_channels, path.name), exp.height, exp.width)
        x = np.repeat(normalize(pixels[None], bundle_normalization(m)), exp.batch, axis=0)
        described = f"{path.name} ({'x'.join(map(str, x.shape))})"
    model = eager_from_bundle(bundle, checkpoint)
    prepared = prepare_for_export(model, torch.from_numpy(x))
    graph = onnx.load(str(bundle.path_of(name)))
    layers, unmatched, total = compare_layers(graph, prepared, x, tol)
    return LocateReport(
        bundle=str(bundle.path),
        graph=name,
        precision=m.precision,
        input=described,
        tolerance=tol,
        layers=layers,
        graph_layers=total,
        unmatched=unmatched,
    )


def format_locate(report: LocateReport, limit: int = 5) -> str:
    """The first ``limit`` layers over tolerance, in graph order, with their error (or the largest, if none is)."""
    head = (
        f"{report.graph} ({report.precision}) against eager fp32 on {report.input}: {len(report.layers)} of "
        f"{report.graph_layers} layers matched to modules; tolerance {report.tolerance:g} (relative error)"
    )

    def line(layer: LayerError) -> str:
        return (
            f"  layer {layer.index} {layer.module} ({layer.op} {layer.node}): relative error {layer.relative_error:.3g}, "
            f"max abs {layer.max_abs:.3g}"
        )

    bad = report.over_tolerance
    if bad:
        lines = [head, f"first layers over tolerance ({len(bad)} in all), in graph order:", *map(line, bad[:limit])]
    else:
        worst = sorted(report.layers, key=lambda layer: -layer.relative_error)[:limit]
        lines = [head, "no layer exceeds the tolerance; the largest errors:", *map(line, worst)]
    return "\n".join(lines)


__all__ = ["LayerError", "LocateReport", "bundle_graph", "compare_layers", "format_locate", "locate", "match_layers"]
