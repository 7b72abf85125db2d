"""Post-training int8: calibrate activation ranges, then write an explicit Q/DQ ONNX graph.

Quantization is static and explicit (QuantizeLinear/DequantizeLinear in the graph),
the form both TensorRT's ONNX parser and onnxruntime's CPU kernels consume; the Q/DQ
insertion is onnxruntime.quantization's QDQ quantizer, fed with ranges we calibrate
(and cache) ourselves. Two flavours of the same calibration:

``tensorrt``
    What TensorRT's parser accepts in a strongly typed network: int8 activations,
    symmetric (zero point 0), int8 weights, symmetric per output channel, as float
    weights with a Q/DQ pair each, bias left in float.
``onnxruntime``
    What onnxruntime's x86 CPU kernels run fast: uint8 activations with asymmetric
    ranges (a ReLU's output then uses all 256 levels), int8 per-channel weights stored
    as int8, int32 bias. The tensorrt flavour runs no faster than fp32 there (unet-resnet34
    at 512x512: 488 vs 505 ms; this flavour 1.8-2x faster): x86 has no fast s8s8 kernels,
    and onnxruntime's s8→u8 rewrite misses quantizers that feed two consumers, leaving 19
    of 47 convolutions in float.

Both quantize the same op types with the same calibrated ranges, so the cache serves both.
In both, the head (the last convolution's input and everything after it) stays float.

Ranges come from the calibration share of the images only; the graph is then judged on
the held-out share (:mod:`.sources`), and layers it cannot keep its accuracy with stay
in float (:mod:`.fallback`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import ExportError, InvalidInputError, first_line
from segexport.onnx_files import check_onnx, drop_unused_initializers, make_deterministic, save_onnx
from segexport.quiet import quiet_logger, quiet_prints

from .cache import (
    CACHE_FORMAT,
    Ranges,
    cache_key,
    default_cache_path,
    file_sha256,
    load_ranges,
    save_ranges,
)
from .sources import (
    CalibrationConfig,
    CalibrationData,
    load_calibration,
    load_validation,
)

if TYPE_CHECKING:
    from segexport.targets.base import ExportSpec

#: Op types whose inputs/outputs get Q/DQ. Softmax, normalizations, Sigmoid/Tanh gates and
#: elementwise Mul/Div stay in float: their inputs need more than 8 bits (attention logits,
#: variance) and they are cheap next to convolutions and matmuls. Add is left out too: PAN's
#: attention adds operands ranging over 0..2000 and 0..6, which one 8-bit scale cannot hold
#: (mask agreement 0.80 with Add quantized, 0.97 without); residual Adds between quantized
#: tensors still become onnxruntime QLinearAdd (unet-resnet34: same speed, same agreement).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Concat", "MaxPool", "AveragePool", "Resize", "Relu", "Clip")
RUNTIMES = ("onnxruntime", "tensorrt")
#: Batches per calibrator pass: onnxruntime's calibrators keep every intermediate tensor of a
#: pass in memory, so a few batches at a time bounds memory at 512x512.
_BATCHES_PER_PASS = 4


class _Reader:
    """An onnxruntime CalibrationDataReader over a list of input arrays."""

    def __init__(self, name: str, inputs: Sequence[np.ndarray]) -> None:
        self._items: Iterator[np.ndarray] = iter(inputs)
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._items, None)
        return None if x is None else {self._name: x}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[name]


def calibrate(fp32_path: Path, inputs: Sequence[np.ndarray], config: CalibrationConfig) -> Ranges:
    """(min, max) of every tensor around the quantized op types over ``inputs``, by ``config.method``.

    ``entropy`` picks the clipping range that minimises the KL divergence between the
    fp32 and 8-bit histograms (TensorRT's entropy calibrator, 512 bins);
    ``percentile`` clips each side at ``config.percentile``; ``minmax`` keeps the
    extremes.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator

    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    extra: dict[str, Any] = {"symmetric": False}
    if config.method == "entropy":
        extra.update(num_bins=512, num_quantized_bins=128)
    elif config.method == "percentile":
        extra.update(num_bins=2048, percentile=config.percentile)
    big = fp32_path.with_name(fp32_path.name + ".data").exists()
    with tempfile.TemporaryDirectory(prefix="segexport-calib-") as tmp, _quiet_quantizer():
        calibrator = create_calibrator(
            fp32_path,
            list(QUANTIZED_OPS),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(config.method),
            use_external_data_format=big,
            providers=["CPUExecutionProvider"],
            extra_options=extra,
        )
        for start in range(0, len(inputs), _BATCHES_PER_PASS):
            calibrator.collect_data(_Reader(input_name, inputs[start : start + _BATCHES_PER_PASS]))
        data = calibrator.compute_data()
        del calibrator
    ranges: Ranges = {}
    for name in data:
        lo, hi = data[name].range_value
        ranges[name] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    return ranges


def quantize_onnx(fp32_path: Path, out_path: Path, spec: ExportSpec, runtime: str = "onnxruntime") -> dict[str, Any]:
    """Calibrate ``fp32_path`` (or reuse cached ranges), write the Q/DQ graph, and hold it to the held-out budget.

    The graph is judged on the held-out images (:func:`~.sources.load_validation`)
    against the fp32 graph. Short of the budget (:class:`~.fallback.Int8Budget`), the
    fewest most harmful layers are kept in float (:mod:`.fallback`) unless the spec's
    ``int8_fallback`` is ``"off"``; then the graph is written as it is and parity
    reports the shortfall.

    Args:
        fp32_path: the fp32 ONNX graph.
        out_path: where the int8 Q/DQ graph goes.
        spec: the build's spec; its options carry calib, calib_count, calib_method, calib_cache,
            val, val_fraction, val_count, int8_fallback, int8_min_iou, int8_max_float_share, int8_speed_runs.
        runtime: ``"onnxruntime"`` (the ONNX target) or ``"tensorrt"`` (the TensorRT target).

    Returns:
        The manifest's ``calibration`` record: the calibration set, method, cache use, scheme, the
        held-out set and figures, the layers kept in float, and (onnxruntime) the speed against fp32.

    Raises:
        ParityError: the budget cannot hold with int8 left worth having.
    """
    import onnx

    from .fallback import (
        HeldOutJudge,
        Int8Budget,
        keep_fewest_in_float,
        measure_speedup,
    )

    if runtime not in RUNTIMES:
        raise InvalidInputError(f"Unknown quantization runtime {runtime!r}; allowed: {', '.join(RUNTIMES)}.")
    if spec.calibration is None:
        raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
    config = spec.calibration
    budget = Int8Budget.from_spec(spec)
    runs = config.speed_runs
    say = spec.progress or (lambda _msg: None)
    data = load_calibration(spec, config)
    held_out = load_validation(spec, config)
    ranges, cache_info = cached_ranges(fp32_path, data, config, out_path.parent)
    proto = _quantize(fp32_path, ranges, config.method, runtime)
    # TensorRT fuses a decomposed GELU itself; onnxruntime misses it in a Q/DQ graph (fuse_gelu).
    gelus = fuse_gelu(proto) if runtime == "onnxruntime" else 0
    float_outputs = dequantize_outputs(proto)

    mask = "mask" if "mask" in spec.output_names else spec.output_names[0]
    judge = HeldOutJudge(fp32_path, held_out.inputs, mask, budget.mask_threshold, as_written=runtime == "tensorrt", threads=spec.threads)
    before = judge.judge(proto)
    fallback: dict[str, Any] = {"mode": "on" if config.fallback else "off", "budget": budget.describe(), "needed": False}
    after = before
    if not before.holds(budget) and config.fallback:
        say(
            f"int8 on {held_out.images} held-out images: agreement {before.agreement:.4f}, mean IoU {before.mean_iou:.4f}; "
            "measuring each layer's harm to keep the worst in float"
        )
        fp32 = onnx.load(str(fp32_path))
        if gelus:
            fuse_gelu(fp32)  # the layers kept in float are cloned from it: the same Gelu nodes, by name
        result = keep_fewest_in_float(proto, fp32, judge, budget, half=runtime == "tensorrt", before=before)
        proto, after = result.proto, result.after
        say(
            f"kept {len(result.kept_in_float)} of {result.quantized_layers} layers in float "
            f"({result.float_share:.0%} of the multiply-adds): agreement {after.agreement:.4f}, mean IoU {after.mean_iou:.4f}"
        )
        fallback.update(
            needed=True,
            kept_in_float=result.kept_in_float,
            quantized_layers=result.quantized_layers,
            float_share_of_macs=result.float_share,
            graphs_judged=result.graphs_judged,
            most_harmful=result.sensitivity,
            harm_measured_on=[_batch_name(held_out, i) for i in result.ranked_on],
        )
    else:
        fallback["kept_in_float"] = []
    if runtime == "tensorrt":
        check_tensorrt_qdq(proto)

    make_deterministic(proto)
    save_onnx(proto, out_path)
    _check(out_path)
    if runtime == "onnxruntime" and runs:
        speed: dict[str, Any] = measure_speedup(fp32_path, out_path, held_out.inputs[0], runs=runs, threads=spec.threads)
    else:
        speed = {
            "measured": False,
            "why": "timed in onnxruntime for the onnxruntime form only; the TensorRT form's speed is its engine's "
            "(segexport bench on a GPU)" if runs else "int8_speed_runs is 0",
        }
    return {
        **data.describe(),
        "method": config.method,
        **({"percentile": config.percentile} if config.method == "percentile" else {}),
        "cache": cache_info,
        "scheme": {**SCHEMES[runtime], "head": f"float activations ({float_outputs} tensors), int8 weights"},
        "quantized_ops": list(QUANTIZED_OPS),
        "fused_gelu": gelus,
        "validation": {**held_out.describe(), "before_fallback": before.to_dict(), "result": after.to_dict()},
        "fallback": fallback,
        "speed": speed,
    }


def _batch_name(data: CalibrationData, index: int) -> str:
    """The file a held-out batch was read from, when each batch is one file; else its index."""
    return data.files[index] if len(data.files) == len(data.inputs) else f"batch {index}"


#: How each flavour encodes the calibrated ranges (recorded in the manifest).
SCHEMES: dict[str, dict[str, str]] = {
    "tensorrt": {
        "activations": "int8, symmetric (zero point 0), per tensor",
        "weights": "int8, symmetric, per output channel, float weights with a Q/DQ pair",
        "bias": "float",
    },
    "onnxruntime": {
        "activations": "uint8, asymmetric, per tensor",
        "weights": "int8, symmetric, per output channel",
        "bias": "int32",
    },
}


def cached_ranges(fp32_path: Path, data: CalibrationData, config: CalibrationConfig, work_dir: Path) -> tuple[Ranges, dict[str, Any]]:
    """Ranges from the cache when the key matches, else calibrated now and stored."""
    path = config.cache or default_cache_path(work_dir)
    key = cache_key(
        format=CACHE_FORMAT,
        model=file_sha256(fp32_path),
        method=config.method,
        percentile=config.percentile if config.method == "percentile" else None,
        ops=list(QUANTIZED_OPS),
        source=data.source,
        images=[list(pair) for pair in zip(data.files, data.digests)],
        count=data.images,
        preprocessing=data.preprocessing,
    )
    ranges = load_ranges(path, key)
    hit = ranges is not None
    if ranges is None:
        ranges = calibrate(fp32_path, data.inputs, config)
        save_ranges(path, key, ranges, about={"method": config.method, "source": data.source, "images": data.images})
    return ranges, {"file": path.name, "key": key[:16], "hit": hit}


def _quantize(fp32_path: Path, ranges: Ranges, method: str, runtime: str) -> Any:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    tensors = TensorsData(
        _method(method),
        {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()},
    )
    if runtime == "tensorrt":
        activation = QuantType.QInt8
        extra = {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "AddQDQPairToWeight": True,
            "QuantizeBias": False,
            # A linear layer's weight (in, out) is quantized per output column.
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        }
    else:
        activation = QuantType.QUInt8
        extra = {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            # Letting the quantizer fold ReLUs into asymmetric ranges cost unet-resnet34 4% of mask
            # agreement at 512x512 (0.956 vs 0.996); onnxruntime still drops them at load time.
            "QDQKeepRemovableActivations": True,
        }
    import onnx

    # The quantizer runs shape inference on its own copy (in a temporary directory).
    model = onnx.load(str(fp32_path))
    exclude = activation_matmuls(model) if runtime == "onnxruntime" else []
    with _quiet_quantizer():
        quantizer = QDQQuantizer(
            model,
            True,  # per-channel weights
            False,  # no reduce_range: VNNI/AMX CPUs and GPUs do not need 7-bit weights
            QuantType.QInt8,
            activation,
            tensors,
            [],
            exclude,
            list(QUANTIZED_OPS),
            extra,
        )
        try:
            quantizer.quantize_model()
        except Exception as exc:  # the quantizer raises bare Exceptions and ValueErrors
            raise ExportError(f"int8 quantization of {fp32_path.name} failed: {first_line(exc)}") from exc
        quantizer.model.topological_sort()  # the quantizer appends Q/DQ nodes at the end
        return quantizer.model.model


def activation_matmuls(model: Any) -> list[str]:
    """Names of the MatMuls whose operands are both activations (attention's ``q @ k^T`` and ``attn @ v``).

    The onnxruntime form leaves them in float: onnxruntime runs a quantized one as
    QLinearMatMul with a requantization on each side, which on attention's small, batched
    products costs more than the int8 product saves (benchmarks/int8_rewrites.py, 512x512:
    pspnet-mit_b0 1.01x the fp32 speed with them quantized, 1.06x without; linknet-mit_b0
    1.04x and 1.13x). A MatMul against a weight stays quantized.
    """
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not constants.intersection(n.input)]


#: The first opset with a Gelu operator.
GELU_OPSET = 20
_SQRT_HALF = float(np.sqrt(0.5))


def fuse_gelu(proto: Any) -> int:
    """Rewrite each exact GELU an exporter decomposed, ``0.5 * x * (1 + erf(x / sqrt(2)))``, as one Gelu node.

    The products may come in either order the two exporters write: ``(x * (1 + erf)) * 0.5``
    (TorchScript-based) or ``x * (0.5 * (1 + erf))`` (dynamo); the scaling may be a Div by
    sqrt(2) or, as graph optimizers rewrite it, a Mul by 1/sqrt(2).

    onnxruntime fuses that pattern itself in a float graph, but in a Q/DQ graph it first
    gives each consumer of a dequantized tensor its own DequantizeLinear, so the Div and
    the Mul that read ``x`` no longer read the same tensor and the fusion misses: MiT's
    Mix-FFN then runs five elementwise ops per GELU (benchmarks/int8_rewrites.py, 512x512:
    pspnet-mit_b0's int8 graph 0.97x the fp32 speed decomposed, 1.01x fused). The Gelu node takes the Erf node's name
    with ``Erf`` replaced by ``Gelu`` and writes the last Mul's output tensor, so names
    stay the same in an fp32 and a Q/DQ graph rewritten alike. The graph's default-domain
    opset is raised to :data:`GELU_OPSET` when a GELU is fused (opsets 19 and 20 only
    added types and attributes with the old behaviour as default). Returns the number fused.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    nodes = list(graph.node)
    consts = {t.name: t for t in graph.initializer}
    for n in nodes:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    readers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for i in n.input:
            readers.setdefault(i, []).append(k)
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> float | None:
        if name not in consts:
            return None
        value = numpy_helper.to_array(consts[name])
        return float(value) if value.size == 1 else None

    def other(node: Any, name: str) -> str | None:
        """The input of a binary ``node`` that is not ``name``."""
        ins = list(node.input)
        if len(ins) != 2 or name not in ins:
            return None
        return ins[1] if ins[0] == name else ins[0]

    def near(name: str | None, value: float) -> bool:
        got = scalar(name) if name is not None else None
        return got is not None and abs(got - value) <= 1e-6 * max(1.0, abs(value))

    def sole_reader(name: str, op: str) -> int | None:
        users = readers.get(name, [])
        if len(users) != 1 or name in outputs or nodes[users[0]].op_type != op:
            return None
        return users[0]

    def multiplies(k: int, operand: str, value: float) -> bool:
        """Whether node ``k`` is a Mul of ``operand`` by the constant ``value``."""
        return nodes[k].op_type == "Mul" and near(other(nodes[k], operand), value)

    fused: dict[int, Any] = {}  # the last node of each pattern -> the Gelu that replaces it
    drop: set[int] = set()
    for e, erf in enumerate(nodes):
        if erf.op_type != "Erf" or erf.input[0] not in producer:
            continue
        pre = producer[erf.input[0]]
        scale = nodes[pre]
        if scale.op_type == "Div" and near(scale.input[1], float(np.sqrt(2.0))):
            x = scale.input[0]
        elif scale.op_type == "Mul" and (near(scale.input[1], _SQRT_HALF) or near(scale.input[0], _SQRT_HALF)):
            x = scale.input[0] if near(scale.input[1], _SQRT_HALF) else scale.input[1]
        else:
            continue
        if len(readers.get(erf.input[0], [])) != 1 or erf.input[0] in outputs:
            continue
        add = sole_reader(erf.output[0], "Add")
        if add is None or not near(other(nodes[add], erf.output[0]), 1.0):
            continue
        product = sole_reader(nodes[add].output[0], "Mul")
        if product is None:
            continue
        partner = other(nodes[product], nodes[add].output[0])
        pattern = [pre, e, add, product]
        if partner == x:  # (x * (1 + erf)) * 0.5
            last = sole_reader(nodes[product].output[0], "Mul")
            if last is None or not multiplies(last, nodes[product].output[0], 0.5):
                continue
            pattern.append(last)
        elif near(partner, 0.5):  # x * (0.5 * (1 + erf)), the dynamo exporter's order
            last = sole_reader(nodes[product].output[0], "Mul")
            if last is None or other(nodes[last], nodes[product].output[0]) != x:
                continue
            pattern.append(last)
        else:
            continue
        if drop & set(pattern):
            continue
        name = erf.name[: -len("Erf")] + "Gelu" if erf.name.endswith("Erf") else f"{erf.name}_Gelu"
        fused[last] = helper.make_node("Gelu", [x], [nodes[last].output[0]], name=name)
        drop.update(pattern)
    if not fused:
        return 0
    rebuilt = []
    for k, n in enumerate(nodes):
        if k in fused:
            rebuilt.append(fused[k])
        elif k not in drop:
            copy = type(n)()
            copy.CopyFrom(n)
            rebuilt.append(copy)
    # Each Gelu sits where the pattern's last node was: after x's producer, before every reader.
    used = {i for n in rebuilt for i in n.input} | outputs
    del graph.node[:]
    graph.node.extend(n for n in rebuilt if n.op_type != "Constant" or n.output[0] in used)
    drop_unused_initializers(graph)
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < GELU_OPSET:
            opset.version = GELU_OPSET
    return len(fused)


#: Ops that compute a head's logits.
_HEAD_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Ops between the last convolution/matmul and a graph output that only move or squash values.
_TAIL_OPS = frozenset(
    {"Resize", "Upsample", "Relu", "Sigmoid", "Softmax", "LogSoftmax", "Identity", "Reshape", "Transpose", "Squeeze",
     "Unsqueeze", "Flatten", "Concat", "Slice", "ArgMax", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool"}
)  # fmt: skip


def dequantize_outputs(proto: Any) -> int:
    """Keep the head in float: no Q/DQ from the input of each output's last convolution (or matmul) on.

    The quantizer also quantizes the logits and whatever resizes them to the output;
    8 bits over the logits' range flips the argmax wherever two classes are close. The
    head's weights stay int8. Returns the number of tensors put back in float.
    """
    nodes = list(proto.graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    inits = {t.name for t in proto.graph.initializer}
    tensors: set[str] = set()
    stack = [o.name for o in proto.graph.output]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        node = nodes[producer[name]]
        if node.op_type == "DequantizeLinear":
            q = producer.get(node.input[0])
            if q is not None and nodes[q].op_type == "QuantizeLinear":
                tensors.add(nodes[q].input[0])
                stack.append(nodes[q].input[0])
        elif node.op_type in _TAIL_OPS:
            stack.extend(i for i in node.input if i)
        elif node.op_type in _HEAD_OPS:
            # The head's input too: the classic "last layer in higher precision" of PTQ. Its
            # weights stay int8; quantizing its input alone cost PAN 5% of mask agreement.
            for i in node.input:
                q = producer.get(i)
                if q is not None and nodes[q].op_type == "DequantizeLinear" and nodes[q].input[0] in producer:
                    source = producer[nodes[q].input[0]]
                    if nodes[source].op_type == "QuantizeLinear" and nodes[source].input[0] not in inits:
                        tensors.add(nodes[source].input[0])
    return dequantize_tensors(proto, tensors)


def dequantize_tensors(proto: Any, tensors: Iterable[str]) -> int:
    """Remove the Q/DQ pairs on ``tensors`` (float tensor names): their consumers read the float tensor again.

    Returns the number of tensors put back in float.
    """
    tensors = set(tensors)
    graph = proto.graph
    nodes = list(graph.node)  # positions, not wrappers, identify nodes (protobuf hands out new wrappers)
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for i in n.input:
            consumers.setdefault(i, []).append(k)
    drop: set[int] = set()
    renames: dict[str, str] = {}
    done = set()
    for k, n in enumerate(nodes):
        if n.op_type != "QuantizeLinear" or n.input[0] not in tensors:
            continue
        users = consumers.get(n.output[0], [])
        if not users or any(nodes[u].op_type != "DequantizeLinear" for u in users):
            continue  # a Q read by anything but DQs is not a plain fake-quant pair: leave it
        drop.add(k)
        for u in users:
            drop.add(u)
            renames[nodes[u].output[0]] = n.input[0]
        done.add(n.input[0])
    if not drop:
        return 0
    outputs = {o.name for o in graph.output}
    # A removed DQ that produced a graph output: its float source takes the output's name.
    keep_name = {renames[o]: o for o in outputs if o in renames}
    kept = []
    for k, n in enumerate(nodes):
        if k in drop:
            continue
        copy = type(n)()
        copy.CopyFrom(n)
        for i, name in enumerate(copy.input):
            target = renames.get(name, name)
            copy.input[i] = keep_name.get(target, target)
        for i, name in enumerate(copy.output):
            copy.output[i] = keep_name.get(name, name)
        kept.append(copy)
    del graph.node[:]
    graph.node.extend(kept)
    drop_unused_initializers(graph)
    return len(done)


def check_tensorrt_qdq(proto: Any) -> None:
    """Raise ExportError unless every Q/DQ is what TensorRT takes: int8, zero point 0, positive scales."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(node.input[1])
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            raise ExportError(f"{node.op_type} {node.name!r} has a non-constant scale; TensorRT needs initializers.")
        if not np.all(numpy_helper.to_array(scale) > 0):
            raise ExportError(f"{node.op_type} {node.name!r} has a scale <= 0; TensorRT needs positive scales.")
        if zero is not None and (zero.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zero) != 0)):
            raise ExportError(f"{node.op_type} {node.name!r} has a non-zero or non-int8 zero point; TensorRT needs symmetric int8.")


def _check(path: Path) -> None:
    check_onnx(path, f"The int8 graph {path.name}")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization prints progress and logs advice on the root logger; keep the CLI clean."""
    with quiet_logger(), quiet_prints(stderr=False):
        yield
