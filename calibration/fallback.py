"""Accuracy-budgeted mixed precision: keep the fewest int8-hostile layers in float.

A Q/DQ graph is judged on the held-out images against the fp32 graph: the mask's
class agreement and mean IoU (as the parity report computes them). When that falls
short of the budget, each quantized layer's harm is measured as how much the mask's
*margin use* (:func:`margin_use`) shrinks when that one layer alone is kept in float
(all others int8), and layers are put back in float in order of harm, fewest first,
until the budget holds. A galloping then binary search over "the k most harmful" keeps the number of
graphs judged logarithmic in the number of layers.

Measuring the harm is most of the fallback's time: a graph per layer. It is measured on
the held-out image where the int8 mask disagrees with fp32 most (:data:`SENSITIVITY_IMAGES`),
not on all of them: the ranking only orders the search, and every graph the search
judges against the budget is run on all the held-out images, so a poorer ranking can
keep more layers in float than needed but never passes a graph that misses the budget
(NNCF's accuracy control likewise ranks on a subset). When no allowed number of layers
holds on that ranking, harm is measured again on the next worst images (up to
:data:`SENSITIVITY_REFINE` in all) and the search repeated, so a refusal never rests on
one image's ranking.

A layer kept in float changes nothing upstream of it, so in the TensorRT form (Q/DQ run
as written, onnxruntime's basic optimizations) each layer's graph is cut to the part it
changes (:class:`DownstreamRuns`): the base graph runs once with the tensors those parts
read exposed, and each part runs from them. The form onnxruntime runs with its integer
kernels is measured whole, since exposing a tensor there changes which kernels it fuses
and so the values.

Harm is measured on the mask's margins, not on the logits' relative error, because the
budget counts flipped pixels and the two can disagree by orders of magnitude: PAN's
logits reach 27000 where its class margins are often under 10, so an error of 0.2% of
the logits' energy flips 11% of the pixels, and the layers that shift large, confident
logits most are not the ones that flip the pixels near a class boundary. Ranked by the
relative error, PAN's onnxruntime form was refused (more than 50% of its multiply-adds in
float); ranked by margin use it holds with 4% of them in float.

The budget's mean IoU is the dataset one (intersections and unions summed over all
held-out images, then averaged over the classes present), as segmentation benchmarks
report it and as ``segexport eval`` does. The per-image mean of the parity report is
recorded beside it: it lets a class covering a dozen pixels of one image weigh as much
as a whole other image, so on briefly trained models with scattered small predictions
it falls to 0.85 while 99.8% of the pixels agree.

A *layer* is a Conv, ConvTranspose, Gemm or MatMul that reads a dequantized input, or
a *junction*: any other op that reads a dequantized activation and hands a float tensor
on (PAN's attention product, a Sigmoid gate, a Resize or residual Add that no quantizer
reads after). Keeping a layer in float means it computes from the float weights, bias
and input it had in the fp32 graph: the ops between it and the previous layers (ReLUs,
pooling, concatenations, residual additions) are cloned in float for it, reading the
previous layers' outputs before they are quantized; everything else in the graph is
unchanged. Without junctions, a quantized tensor that only such ops read goes back to
float only with a layer after them, at that layer's multiply-adds: PAN's feature pyramid
ends in a product of two such tensors; that product in float alone takes its TensorRT form
from 0.847 to 0.974 mask agreement. For onnxruntime a kept layer runs in
fp32; for TensorRT a Conv, ConvTranspose, Gemm or MatMul runs in fp16 (a Cast on each
input and back on its output, fp16 weights), which a strongly typed engine runs as
written, unless its weights are beyond fp16's range (:func:`float_type` decides, for the
graph and the manifest alike), and a junction in fp32: it is elementwise and cheap, and its operands can be
beyond fp16's precision (PAN's decoder state reaches 38000, where fp16's step is 32).

Nothing int8 is left worth having when the budget needs more than ``max_float_share``
of the quantized layers' multiply-adds in float: the build then stops with an error
that says so, rather than shipping an "int8" graph that is mostly float.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import ExportError, ParityError
from segexport.onnx_files import drop_unused_initializers, infer_shapes

from .sources import DEFAULT_MAX_FLOAT_SHARE, DEFAULT_MIN_IOU

if TYPE_CHECKING:
    from segexport.targets.base import ExportSpec

#: Ops that are layers where they read int8: what int8 makes fast. Any other op reading an int8 activation is a junction.
LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Held-out images each layer's harm is measured on, those int8 gets most wrong first (the budget is judged on all).
SENSITIVITY_IMAGES = 1
#: When no allowed number of layers holds on that ranking, harm is measured again on up to this many images.
SENSITIVITY_REFINE = 4
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Int8Budget:
    """What int8 must keep on the held-out images.

    Attributes:
        min_agreement: least fraction of mask pixels whose class matches fp32.
        min_mean_iou: least mean IoU between the int8 and fp32 masks (over the whole held-out set).
        mask_threshold: class boundary of a one-channel mask (None: logits, 0).
        max_float_share: most of the quantized layers' multiply-adds the fallback may put back in float.
    """

    min_agreement: float
    min_mean_iou: float = DEFAULT_MIN_IOU
    mask_threshold: float | None = None
    max_float_share: float = DEFAULT_MAX_FLOAT_SHARE

    @classmethod
    def from_spec(cls, spec: ExportSpec) -> Int8Budget:
        """The parity policy's agreement and mask threshold, with the calibration's IoU and float-share limits."""
        policy, config = spec.policy, spec.calibration
        return cls(
            min_agreement=float(policy.min_agreement),
            min_mean_iou=config.min_iou if config else DEFAULT_MIN_IOU,
            mask_threshold=policy.mask_threshold,
            max_float_share=config.max_float_share if config else DEFAULT_MAX_FLOAT_SHARE,
        )

    def describe(self) -> str:
        return f"agreement >= {self.min_agreement:g} and mean IoU >= {self.min_mean_iou:g}"


@dataclass(frozen=True)
class Judgement:
    """One graph's figures on the held-out images against the fp32 graph."""

    agreement: float
    mean_iou: float
    #: Relative squared error of the mask logits: sum((a - e)^2) / sum(e^2).
    error: float
    #: The parity report's mean IoU: per image, then averaged (not part of the budget).
    per_image_mean_iou: float = float("nan")
    #: Per held-out batch, the fraction of mask pixels whose class differs from fp32's.
    disagreement: tuple[float, ...] = ()

    def worst_first(self) -> list[int]:
        """Held-out batch indices, the one with the most disagreeing pixels first (ties: held-out order)."""
        return sorted(range(len(self.disagreement)), key=lambda i: -self.disagreement[i])

    def holds(self, budget: Int8Budget) -> bool:
        return self.agreement >= budget.min_agreement and self.mean_iou >= budget.min_mean_iou

    def to_dict(self) -> dict[str, float]:
        return {
            "agreement": self.agreement,
            "mean_iou": self.mean_iou,
            "per_image_mean_iou": self.per_image_mean_iou,
            "logits_relative_error": self.error,
        }


class HeldOutJudge:
    """Runs candidate graphs on the held-out inputs and compares their mask with the fp32 graph's.

    Args:
        fp32_path: the fp32 ONNX graph (its outputs are the reference).
        inputs: the held-out batches.
        output: the name of the mask output.
        threshold: class boundary of a one-channel mask.
        as_written: run Q/DQ as fake quantization (the TensorRT form), not onnxruntime's integer kernels.
        threads: onnxruntime intra-op threads (None: its default, every core). The matrix gives each
            worker its share: more threads than that would spin against the other workers.
    """

    def __init__(self, fp32_path: Path, inputs: Sequence[np.ndarray], output: str, threshold: float | None, as_written: bool,
                 threads: int | None = None) -> None:  # fmt: skip
        self.inputs = list(inputs)
        self.output = output
        self.threshold = threshold
        self.as_written = as_written
        self.threads = threads
        self.reference = self.run(Path(fp32_path).read_bytes(), self.inputs, as_written=False)
        self.graphs_judged = 0

    def session(self, model: bytes, *, as_written: bool | None = None) -> Any:
        """An onnxruntime CPU session of ``model`` as the judge runs it (its threads; basic optimizations when as written)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.as_written if as_written is None else as_written:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def run(self, model: bytes, inputs: Sequence[np.ndarray], *, as_written: bool | None = None) -> list[np.ndarray]:
        session = self.session(model, as_written=as_written)
        name = session.get_inputs()[0].name
        return [session.run([self.output], {name: x})[0] for x in inputs]

    def judge(self, proto: Any) -> Judgement:
        """Agreement, mean IoU and logits error of ``proto`` over every held-out batch."""
        from segexport.parity import class_masks, confusion, mean_iou, miou

        actual = self.run(proto.SerializeToString(), self.inputs)
        self.graphs_judged += 1
        masks = [(class_masks(a, self.threshold), class_masks(e, self.threshold)) for a, e in zip(actual, self.reference)]
        classes = max(2, int(self.reference[0].shape[1]) if self.reference[0].ndim == 4 else 2)
        matrices = [confusion(a.ravel(), e.ravel(), classes) for a, e in masks]
        matrix = sum(matrices)
        return Judgement(
            agreement=float(np.trace(matrix) / matrix.sum()),
            mean_iou=miou(matrix),
            error=_relative_error(actual, self.reference),
            per_image_mean_iou=float(np.mean([mean_iou(a, e, self.threshold) for a, e in zip(actual, self.reference)])),
            disagreement=tuple(1.0 - float(np.trace(m) / m.sum()) for m in matrices),
        )

    def error(self, proto: Any, batches: Sequence[int]) -> float:
        """The mask's margin use (:func:`margin_use`) by ``proto`` on the held-out batches with indices ``batches``."""
        actual = self.run(proto.SerializeToString(), [self.inputs[b] for b in batches])
        self.graphs_judged += 1
        return margin_use(actual, [self.reference[b] for b in batches], self.threshold)


class DownstreamRuns:
    """Candidate graphs' margin use (:func:`margin_use`), each run from the part of it that differs from the base graph.

    A candidate (the base Q/DQ graph with a layer kept in float) computes what the base
    graph computes up to that layer. Its *part* is the nodes it changed or added and every
    node downstream of them; the part reads the rest from the base graph's tensors. Each
    candidate is built once: :meth:`add` cuts it and keeps its part on disk. The judge then
    runs the base graph once per measured batch with every part's inputs exposed, keeps
    them on disk too (a file per tensor and batch: memory holds one batch's tensors at a
    time), and runs each part from them. The errors are the whole candidate graphs' up to
    onnxruntime's rounding (within 1e-6 on a tiny U-Net, 0.6% relative on unet-resnet34 at
    512x512, where the cause was not traced further); the graphs the fallback
    finally judges against the budget are always run whole. A candidate whose part cannot
    be cut (an input the base graph does not compute, a tensor of unknown type) is kept and
    run whole.

    Use: :meth:`add` each candidate, :meth:`start` (returns the base graph's error), then
    :meth:`error` of each candidate's key.
    """

    def __init__(self, judge: HeldOutJudge, base: Any, batches: Sequence[int]) -> None:
        import tempfile

        import onnx

        self.judge, self.base, self.batches = judge, base, list(batches)
        self._base_nodes = {n.name: n.SerializeToString() for n in base.graph.node}
        self._graph_inputs = {i.name for i in base.graph.input}
        self._types = {i.name: i.type.tensor_type.elem_type for i in base.graph.input}
        try:
            typed = infer_shapes(base)
        except Exception:  # noqa: BLE001 - shape inference raises several types; untyped tensors are then run whole
            typed = base
        for v in [*typed.graph.value_info, *typed.graph.output]:
            if v.type.tensor_type.elem_type != onnx.TensorProto.UNDEFINED:
                self._types[v.name] = v.type.tensor_type.elem_type
        self._wanted: dict[str, None] = {}
        #: Exposed tensor → its index in the files :meth:`start` wrote.
        self._index: dict[str, int] = {}
        #: Candidate key → its saved graph (a part, or the whole candidate) and the part's feeds (None: whole).
        self._graphs: dict[str, tuple[Path, list[str] | None]] = {}
        self._folder: Path | None = Path(tempfile.mkdtemp(prefix="segexport-downstream-"))

    def __enter__(self) -> DownstreamRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            import shutil

            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def cut(self, candidate: Any) -> tuple[Any, list[str]] | None:
        """The candidate's part as a graph and the base tensors it reads, or None when it cannot be cut."""
        import onnx

        dirty: set[str] = set()
        nodes = []
        for node in candidate.graph.node:
            changed = self._base_nodes.get(node.name) != node.SerializeToString()
            if changed or any(i in dirty for i in node.input):
                nodes.append(node)
                dirty.update(o for o in node.output if o)
        if self.judge.output not in dirty:
            return None
        inits = {t.name: t for t in candidate.graph.initializer}
        feeds = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in dirty and i not in inits))
        if any(f not in self._types for f in feeds):
            return None
        part = onnx.ModelProto()
        part.ir_version = candidate.ir_version
        part.opset_import.extend(candidate.opset_import)
        graph = part.graph
        graph.name = f"{candidate.graph.name}_part"
        graph.node.extend(nodes)
        read = {i for n in nodes for i in n.input}
        graph.initializer.extend(t for name, t in inits.items() if name in read)
        graph.input.extend(onnx.helper.make_tensor_value_info(f, self._types[f], None) for f in feeds)
        graph.output.extend(o for o in candidate.graph.output if o.name == self.judge.output)
        return part, feeds

    def add(self, key: str, candidate: Any) -> None:
        """Cut ``candidate`` and keep its part (or, when it cannot be cut, itself) for :meth:`error` of ``key``."""
        assert self._folder is not None and key not in self._graphs
        path = self._folder / f"graph-{len(self._graphs)}.onnx"
        cut = self.cut(candidate)
        if cut is None:
            path.write_bytes(candidate.SerializeToString())
            self._graphs[key] = (path, None)
            return
        part, feeds = cut
        path.write_bytes(part.SerializeToString())
        self._graphs[key] = (path, feeds)
        self._wanted.update(dict.fromkeys(f for f in feeds if f not in self._graph_inputs))

    def start(self) -> float:
        """Run the base graph on each batch, keep the exposed tensors, and return its margin use."""
        import onnx

        exposed = onnx.ModelProto()
        exposed.CopyFrom(self.base)
        known = {o.name for o in exposed.graph.output}
        names = list(self._wanted)
        exposed.graph.output.extend(onnx.helper.make_tensor_value_info(n, self._types[n], None) for n in names if n not in known)
        session = self.judge.session(exposed.SerializeToString())
        del exposed
        feed = session.get_inputs()[0].name
        masks = []
        for b in self.batches:
            mask, *values = session.run([self.judge.output, *names], {feed: self.judge.inputs[b]})
            masks.append(mask)
            for k, value in enumerate(values):
                np.save(self._path(b, k), value)
        self._index = {n: k for k, n in enumerate(names)}
        self.judge.graphs_judged += 1
        return margin_use(masks, [self.judge.reference[b] for b in self.batches], self.judge.threshold)

    def _path(self, batch: int, index: int) -> Path:
        assert self._folder is not None
        return self._folder / f"{batch}-{index}.npy"

    def error(self, key: str) -> float:
        """The margin use on the batches of the candidate added as ``key``, its part run from the base graph's tensors."""
        path, feeds = self._graphs[key]
        session = self.judge.session(path.read_bytes())
        masks = []
        for b in self.batches:
            x = self.judge.inputs[b]
            if feeds is None:
                masks.append(session.run([self.judge.output], {session.get_inputs()[0].name: x})[0])
            else:
                values = {f: x if f in self._graph_inputs else np.load(self._path(b, self._index[f])) for f in feeds}
                masks.append(session.run([self.judge.output], values)[0])
        self.judge.graphs_judged += 1
        return margin_use(masks, [self.judge.reference[b] for b in self.batches], self.judge.threshold)


def margin_use(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], threshold: float | None) -> float:
    """How much of each pixel's class margin the error uses, capped at 1, averaged over the pixels.

    A pixel's margin is how far the fp32 logits put its class ahead: its logit minus the
    runner-up's (one channel: the distance to the threshold). The candidate's error uses
    the share of it that the candidate's lead of that class has lost; 1 is a flipped pixel.
    So the figure is the disagreement, plus partial credit for the pixels an error has
    brought near a flip: it counts what the budget counts, yet it changes smoothly enough
    for one layer's harm to show, where the disagreement of one layer kept in float moves
    by a handful of pixels.
    """
    used, pixels = 0.0, 0
    for a, e in zip(actual, expected):
        a, e = a.astype(np.float64), e.astype(np.float64)
        if e.ndim < 2 or e.shape[1] == 1:
            boundary = 0.0 if threshold is None else threshold
            side = np.where(e > boundary, 1.0, -1.0)
            margin, lead = (e - boundary) * side, (a - boundary) * side
        else:
            top = e.argmax(axis=1)[:, None]
            others = np.arange(e.shape[1]).reshape(1, -1, *([1] * (e.ndim - 2))) != top
            margin = np.take_along_axis(e, top, 1) - np.where(others, e, -np.inf).max(axis=1, keepdims=True)
            lead = np.take_along_axis(a, top, 1) - np.where(others, a, -np.inf).max(axis=1, keepdims=True)
        share = np.clip((margin - lead) / np.maximum(margin, np.finfo(np.float64).tiny), 0.0, 1.0)
        used += float(share.sum())
        pixels += share.size
    return used / pixels if pixels else 0.0


def _relative_error(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    num = sum(float(np.sum((a.astype(np.float64) - e) ** 2)) for a, e in zip(actual, expected))
    den = sum(float(np.sum(e.astype(np.float64) ** 2)) for e in expected)
    return num / den if den > 0 else num


def quantized_layers(proto: Any) -> list[str]:
    """Names of the layers that read a dequantized input, junctions included (module docstring), in graph order."""
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    inits = {t.name for t in proto.graph.initializer}
    dq_outputs = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    activations = {
        o for o in dq_outputs
        if (q := producer.get(producer[o].input[0])) is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits
    }  # fmt: skip
    read_as_float = {i for n in nodes if n.op_type != "QuantizeLinear" for i in n.input} | {o.name for o in proto.graph.output}

    def is_layer(node: Any) -> bool:
        if node.op_type in LAYER_OPS:
            return any(i in dq_outputs for i in node.input)
        return (
            node.op_type not in _QDQ
            and any(i in activations for i in node.input)
            and any(o in read_as_float for o in node.output)
        )

    names = [n.name for n in nodes if is_layer(n)]
    if len(set(names)) != len(names):
        raise ExportError("The Q/DQ graph has layers without unique node names; the fallback needs them to name layers.")
    return names


def layer_macs(fp32: Any, input_shape: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    """Multiply-adds of each named layer at ``input_shape`` (shape inference on a static copy of the fp32 graph).

    A junction counts one operation per output element. A layer whose output shape cannot be
    inferred counts its weight's size once per output pixel it could have, i.e. its weight's
    element count: a lower bound, never zero.
    """
    import onnx
    from onnx import numpy_helper

    static = onnx.ModelProto()
    static.CopyFrom(fp32)
    dims = static.graph.input[0].type.tensor_type.shape.dim
    for d, size in zip(dims, input_shape):
        d.Clear()
        d.dim_value = int(size)
    try:
        inferred = infer_shapes(static, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference raises several types; fall back to weight sizes
        inferred = static
    shapes: dict[str, list[int]] = {}
    for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = [d.dim_value for d in t.shape.dim]
    inits = {t.name: t for t in fp32.graph.initializer}
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    nodes = {n.name: n for n in fp32.graph.node}
    macs: dict[str, float] = {}
    for name in names:
        node = nodes.get(name)
        if node is None:
            macs[name] = 1.0
            continue
        out = shapes.get(node.output[0])
        weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
        a = shapes.get(node.input[0])
        if node.op_type not in LAYER_OPS:  # a junction: one operation per output element
            value = float(np.prod(out)) if out else 1.0
        elif node.op_type == "Conv" and out and weight:
            value = float(np.prod(out)) * float(np.prod(weight[1:]))
        elif node.op_type == "ConvTranspose" and a and weight:
            value = float(np.prod(a)) * float(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul") and out and a:
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            k = a[0] if trans_a and len(a) == 2 else a[-1]
            value = float(np.prod(out)) * float(k)
        elif node.input[1] in inits:
            value = float(numpy_helper.to_array(inits[node.input[1]]).size)
        else:
            value = 1.0
        macs[name] = max(value, 1.0)
    return macs


def keep_in_float(proto: Any, fp32: Any, names: Sequence[str], *, half: bool = False) -> Any:
    """A copy of the Q/DQ graph ``proto`` in which the layers ``names`` compute in float (see the module docstring).

    Args:
        proto: the Q/DQ graph.
        fp32: the fp32 graph it was quantized from (same node and tensor names).
        names: layer node names.
        half: run the kept layers in fp16 (the TensorRT form) instead of fp32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    fp32_producer = {o: n for n in fp32.graph.node for o in n.output}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    inits = {t.name for t in graph.initializer}
    produced = {o for n in graph.node for o in n.output}
    taken = set(produced) | inits | graph_inputs
    clones: dict[str, str] = {}
    added: list[Any] = []

    def fresh(name: str) -> str:
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        return candidate

    def float_value(name: str) -> str:
        """The name of a tensor holding fp32 tensor ``name`` as a float layer should read it."""
        if not name or name in graph_inputs:
            return name
        if name in clones:
            return clones[name]
        if name in fp32_inits:
            if name in inits:
                return name
            copy = TensorProto()
            copy.CopyFrom(fp32_inits[name])
            # The quantizer may have given a DequantizeLinear output the float weight's name (int32 bias).
            copy.name = fresh(f"{name}_float") if name in produced else name
            taken.add(copy.name)
            graph.initializer.append(copy)
            inits.add(copy.name)
            clones[name] = copy.name
            return copy.name
        node = fp32_producer.get(name)
        if node is None:
            raise ExportError(f"Cannot keep a layer in float: its input {name!r} is not in the fp32 graph.")
        if node.op_type in LAYER_OPS and name in produced:
            return name  # a layer's own output, before its quantizer: what a float consumer reads
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        clone.name = fresh(f"{node.name}_float")
        for k, i in enumerate(node.input):
            clone.input[k] = float_value(i)
        for k, o in enumerate(node.output):
            if o:
                clones[o] = clone.output[k] = fresh(f"{o}_float")
        added.append(clone)
        return clones[name]

    wanted = set(names)
    missing = sorted(wanted - {n.name for n in graph.node})
    if missing:
        raise ExportError(f"Cannot keep {missing[0]!r} in float: no such node in the Q/DQ graph.")
    rebuilt = []
    for node in graph.node:
        if node.name not in wanted:
            rebuilt.append(node)
            continue
        source = fp32_nodes[node.name]
        layer = onnx.NodeProto()
        layer.CopyFrom(node)
        for k, i in enumerate(source.input):
            layer.input[k] = float_value(i)
        rebuilt.extend(added)
        added.clear()
        if float_type(source, fp32.graph, half=half) == "fp16":
            rebuilt.extend(_to_half(layer, graph, fresh, helper, numpy_helper, TensorProto))
        else:
            rebuilt.append(layer)
    copies = []
    for n in rebuilt:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(_topological(copies, graph_inputs | inits))
    _prune(graph)
    return out


def float_type(layer: Any, fp32_graph: Any, *, half: bool) -> str:
    """What a unit kept in float computes in: "fp16" for a layer of the TensorRT form whose weights fit fp16, else "fp32".

    Args:
        layer: the unit's node in the fp32 graph.
        fp32_graph: the fp32 graph (its initializers are the float weights).
        half: the kept layers run in fp16 where they can (TensorRT) rather than fp32 (onnxruntime).
    """
    if not half or layer.op_type not in LAYER_OPS:
        return "fp32"  # a junction is elementwise and cheap, and its operands can be beyond fp16's precision
    from onnx import numpy_helper

    weights = {i for i in layer.input if i}
    for t in fp32_graph.initializer:
        if t.name in weights:
            arr = numpy_helper.to_array(t)
            if arr.dtype == np.float32 and arr.size and float(np.abs(arr).max()) > _FP16_MAX:
                return "fp32"
    return "fp16"


def _to_half(layer: Any, graph: Any, fresh: Callable[[str], str], helper: Any, numpy_helper: Any, TensorProto: Any) -> list[Any]:
    """``layer`` in fp16: Casts on its activation inputs, fp16 copies of its weights, a Cast back on each output."""
    inits = {t.name: t for t in graph.initializer}
    before: list[Any] = []
    for k, name in enumerate(layer.input):
        if not name:
            continue
        half_name = fresh(f"{name}_fp16")
        if name in inits:
            arr = numpy_helper.to_array(inits[name])
            if arr.dtype != np.float32:
                continue
            graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
        else:
            before.append(helper.make_node("Cast", [name], [half_name], to=TensorProto.FLOAT16, name=fresh(f"{half_name}_cast")))
        layer.input[k] = half_name
    after: list[Any] = []
    for k, name in enumerate(layer.output):
        half_name = fresh(f"{name}_fp16")
        layer.output[k] = half_name
        after.append(helper.make_node("Cast", [half_name], [name], to=TensorProto.FLOAT, name=fresh(f"{name}_to_fp32")))
    return [*before, layer, *after]


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` in an order where each runs after its inputs' producers; stable where the order was already right."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    order: list[Any] = []
    state = [0] * len(nodes)  # 0 new, 1 in progress, 2 placed
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            k, expanded = stack.pop()
            if state[k] == 2:
                continue
            if expanded:
                state[k] = 2
                order.append(nodes[k])
                continue
            if state[k] == 1:
                raise ExportError("The graph has a cycle after keeping layers in float.")
            state[k] = 1
            stack.append((k, True))
            for i in reversed(nodes[k].input):
                p = producer.get(i)
                if i and i not in available and p is not None and state[p] != 2:
                    stack.append((p, False))
    return order


def _prune(graph: Any) -> None:
    """Drop the nodes nothing reads any more (the Q/DQ pairs and float ops a kept layer no longer reads), then initializers."""
    import onnx

    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        copies = []
        for n in keep:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copies.append(copy)
        del graph.node[:]
        graph.node.extend(copies)
    drop_unused_initializers(graph)


@dataclass
class FallbackResult:
    """What the fallback chose and why: the graph, the layers kept in float, and the figures."""

    proto: Any
    kept_in_float: list[dict[str, Any]]
    quantized_layers: int
    float_share: float
    before: Judgement
    after: Judgement
    graphs_judged: int
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    #: Indices of the held-out batches the layers' harm was measured on.
    ranked_on: list[int] = field(default_factory=list)


def keep_fewest_in_float(
    proto: Any,
    fp32: Any,
    judge: HeldOutJudge,
    budget: Int8Budget,
    *,
    half: bool,
    before: Judgement | None = None,
    sensitivity_images: int = SENSITIVITY_IMAGES,
) -> FallbackResult:
    """Keep the fewest, most harmful layers of ``proto`` in float so that ``budget`` holds on the held-out set.

    Args:
        proto: the Q/DQ graph that falls short.
        fp32: its fp32 graph.
        judge: the held-out judge.
        budget: what must hold.
        half: kept layers run in fp16 (TensorRT) rather than fp32 (onnxruntime).
        before: ``proto``'s judgement, when already known.
        sensitivity_images: how many held-out batches each layer's harm is measured on, those
            ``before`` disagrees on most first (the budget is always judged on all of them).

    Raises:
        ParityError: the budget needs more than ``budget.max_float_share`` of the multiply-adds in float.
    """
    before = before or judge.judge(proto)
    layers = quantized_layers(proto)
    if not layers:
        raise ParityError(f"int8 misses {budget.describe()} on the held-out images and has no quantized layer to keep in float.")
    macs = layer_macs(fp32, judge.inputs[0].shape, layers)
    total = sum(macs.values())
    if min(macs.values()) / total > budget.max_float_share:
        raise ParityError(_out_of_budget(budget, judge, 0, len(layers), before))
    worst = before.worst_first() or list(range(len(judge.inputs)))
    first = max(1, sensitivity_images)
    ranked_on = worst[:first]
    base, errors = _layer_errors(proto, fp32, judge, layers, ranked_on, half=half)
    harm = {n: base - errors[n] for n in layers}
    tried: dict[int, tuple[Judgement, Any]] = {}
    search = _search(proto, fp32, judge, budget, layers, macs, harm, tried, half=half)
    rest = worst[first:SENSITIVITY_REFINE]
    if search is None and rest:  # never refuse on the cheap ranking: measure on more images, search again
        base_rest, errors_rest = _layer_errors(proto, fp32, judge, layers, rest, half=half)
        weights = (len(ranked_on), len(rest))  # margin use is a mean over pixels, and the batches are one shape
        base = _pooled((base, base_rest), weights)
        errors = {n: _pooled((errors[n], errors_rest[n]), weights) for n in layers}
        ranked_on = ranked_on + rest
        harm = {n: base - errors[n] for n in layers}
        search = _search(proto, fp32, judge, budget, layers, macs, harm, tried, half=half)
    if search is None:
        best = max(tried.items(), key=lambda kv: (kv[1][0].agreement, kv[1][0].mean_iou), default=(0, (before, None)))
        raise ParityError(_out_of_budget(budget, judge, best[0], len(layers), best[1][0]))
    order, high, share = search
    after, graph = tried[high]
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    kept = [
        {"node": n, "op": _op(proto, n), "float": float_type(fp32_nodes[n], fp32.graph, half=half), "harm": harm[n],
         "macs_share": macs[n] / total}
        for n in order[:high]
    ]  # fmt: skip
    ranked = [{"node": n, "harm": harm[n]} for n in order[: max(high, 10)]]
    return FallbackResult(
        proto=graph,
        kept_in_float=kept,
        quantized_layers=len(layers),
        float_share=float(share[high - 1]),
        before=before,
        after=after,
        graphs_judged=judge.graphs_judged,
        sensitivity=ranked,
        ranked_on=ranked_on,
    )


def _layer_errors(proto: Any, fp32: Any, judge: HeldOutJudge, layers: Sequence[str], images: Sequence[int], *,
                  half: bool) -> tuple[float, dict[str, float]]:  # fmt: skip
    """The base graph's margin use on ``images`` and each layer's with that layer alone kept in float."""
    if judge.as_written:
        with DownstreamRuns(judge, proto, images) as runs:
            for name in layers:
                runs.add(name, keep_in_float(proto, fp32, [name], half=half))
            base = runs.start()
            return base, {name: runs.error(name) for name in layers}
    base = judge.error(proto, images)
    return base, {name: judge.error(keep_in_float(proto, fp32, [name], half=half), images) for name in layers}


def _search(proto: Any, fp32: Any, judge: HeldOutJudge, budget: Int8Budget, layers: Sequence[str], macs: dict[str, float],
            harm: dict[str, float], tried: dict[int, tuple[Judgement, Any]], *, half: bool) -> tuple[list[str], int, np.ndarray] | None:  # fmt: skip
    """The fewest of the most harmful layers whose float copy holds ``budget`` on every held-out image.

    Returns the order of harm, how many of its first layers to keep, and the cumulative
    multiply-add share along it; None when no allowed number holds. Each judged graph is
    put in ``tried`` by its count (the last search's, when searched again).
    """
    order = sorted(layers, key=lambda n: -harm[n])  # stable: graph order among equals
    share = np.cumsum([macs[n] for n in order]) / sum(macs.values())
    cap = int(np.searchsorted(share, budget.max_float_share, side="right"))  # most layers allowed in float

    def holds(k: int) -> bool:
        candidate = keep_in_float(proto, fp32, order[:k], half=half)
        tried[k] = (judge.judge(candidate), candidate)
        return tried[k][0].holds(budget)

    low, high, k = 0, None, 1
    while k <= cap:
        if holds(k):
            high = k
            break
        low, k = k, k * 2
    if high is None and cap > low and holds(cap):
        high = cap
    if high is None:
        return None
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid
    return order, high, share


def _pooled(errors: Sequence[float], weights: Sequence[float]) -> float:
    """The margin use over the union of image sets, from each set's margin use and size."""
    total = sum(weights)
    return sum(e * w for e, w in zip(errors, weights)) / total if total > 0 else sum(errors)


def _out_of_budget(budget: Int8Budget, judge: HeldOutJudge, kept: int, layers: int, best: Judgement) -> str:
    return (
        f"int8 cannot keep {budget.describe()} on the {sum(len(x) for x in judge.inputs)} held-out images "
        f"unless more than {budget.max_float_share:.0%} of its multiply-adds stay in float "
        f"(best with {kept} of {layers} layers in float: agreement {best.agreement:.4f}, mean IoU {best.mean_iou:.4f}); "
        "nothing int8 worth having is left. Deploy fp16 (--target trt --fp16) or fp32, or calibrate on more images "
        "of the deployment domain (--calib-method percentile or entropy)."
    )


def _op(proto: Any, name: str) -> str:
    return next(n.op_type for n in proto.graph.node if n.name == name)


def measure_speedup(fp32_path: Path, int8_path: Path, x: np.ndarray, runs: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Median latency of the int8 and fp32 graphs in onnxruntime on ``x``, timed in alternating rounds.

    Both sessions use onnxruntime's full optimizations (its integer kernels for the
    int8 graph), as a deployment would; the ratio is computed within the one run.
    """
    import onnxruntime as ort

    def session(path: Path) -> Callable[[], Any]:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x}
        return lambda: s.run(None, feed)

    calls = {"fp32": session(fp32_path), "int8": session(int8_path)}
    for call in calls.values():
        call()  # first runs allocate and pick kernels
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(runs):
        for name in list(calls)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    fp32_ms, int8_ms = (statistics.median(times[n]) * 1e3 for n in ("fp32", "int8"))
    return {
        "measured_with": f"onnxruntime {ort.__version__} CPU, full optimizations",
        "input_shape": list(x.shape),
        "runs": runs,
        "threads": threads or "onnxruntime default",
        "fp32_ms": fp32_ms,
        "int8_ms": int8_ms,
        "speedup_vs_fp32": fp32_ms / int8_ms,
    }
