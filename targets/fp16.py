"""Mixed fp16 ONNX graphs: the fp16 build for strongly typed TensorRT (no FP16 builder flag there).

TensorRT 10's strongly typed mode, TensorRT 11 and TensorRT-RTX run every layer in
the type the graph gives it, so half precision is a property of the ONNX graph. This
pass rewrites an fp32 graph so that:

- the graph's inputs and outputs stay fp32 (callers feed and read float32);
- convolutions, matmuls, activations, elementwise arithmetic, pooling, resizing and
  data movement on the data path run in fp16, with fp16 weights;
- operations where fp16 loses accuracy stay fp32: reductions (means over a whole
  feature map, global pooling), softmax, normalization statistics (Layer/Group/
  Instance/BatchNorm), Pow/Sqrt/Exp/Log/Reciprocal, and everything computed from
  shapes (Resize scales and sizes, interpolation arithmetic), plus any op not listed in
  :data:`FP16_OPS`;
- a Cast sits wherever the two meet, one per tensor and direction.

Only tensors on the data path (computed from the graph input through float tensors)
are converted; a float computed from ``Shape`` stays fp32, which keeps Resize sizes
exact. The result runs in onnxruntime on CPU (it computes unsupported fp16 kernels
in fp32 between casts, rounding at the same places) and parses in TensorRT.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segexport.errors import ExportError
from segexport.onnx_files import (
    PROTOBUF_LIMIT,
    check_onnx,
    drop_unused_initializers,
    infer_shapes,
    make_deterministic,
    save_onnx,
)

#: Ops that run in fp16 when they consume the data path.
FP16_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "MatMul", "Gemm",
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
        "Mish", "Gelu", "Erf",
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Clip", "Where",
        "MaxPool", "AveragePool",
        "Concat", "Split", "Slice", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Tile",
        "Pad", "Gather", "Identity", "DepthToSpace", "SpaceToDepth",
        "Resize", "Upsample",
    }
)  # fmt: skip
#: Inputs of fp16 ops that keep their own type: Resize's roi and scales are float32 by definition.
_KEEP_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({1, 2, 3}), "Upsample": frozenset({1})}
#: Ops that read any element type, so an fp16 tensor feeds them without a cast back.
_ANY_TYPE = frozenset({"Shape", "Size", "Cast", "CastLike"})
_FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """Write the mixed-fp16 version of ``src`` to ``dst``; returns counts for the manifest."""
    import onnx

    model = onnx.load(str(src))
    stats = to_fp16(model)
    make_deterministic(model)
    save_onnx(model, dst)
    check_onnx(dst, f"The fp16 graph {dst.name}")
    return stats


def to_fp16(model: Any) -> dict[str, Any]:
    """Rewrite ``model`` (an onnx.ModelProto) in place to mixed fp16; see the module docstring.

    Returns:
        ``{"fp16_nodes": n, "fp32_nodes": {op type: count}, "casts": n}``: what stayed fp32 and why to look.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ExportError("fp16 conversion does not handle control flow (If/Loop/Scan nodes) in the graph.")
    types = _element_types(model)
    inits = {t.name: t for t in graph.initializer}
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    # 1. The data path: float tensors computed from the graph's float inputs through float tensors.
    data_path = {v.name for v in graph.input if types.get(v.name) == FLOAT and v.name not in inits}
    for node in graph.node:
        if any(i in data_path for i in node.input if i):
            data_path.update(o for o in node.output if types.get(o) == FLOAT)

    # 2. Which nodes run in fp16.
    def convertible(node: Any) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type not in FP16_OPS:
            return False
        if not any(i in data_path for i in node.input if i):
            return False
        keep = _KEEP_INPUTS.get(node.op_type, frozenset())
        for k, name in enumerate(node.input):
            if not name or k in keep:
                continue
            if name not in types:
                return False  # unknown type: leave the node alone rather than guess
            if name in inits and types[name] == FLOAT and _max_abs(inits[name]) > _FP16_MAX:
                return False  # weights fp16 cannot hold
        return all(o in types for o in node.output if o)

    # Protobuf hands out a new wrapper per access, so nodes are tracked by position, not identity.
    originals = list(graph.node)
    half_nodes = {k for k, n in enumerate(originals) if convertible(n)}
    half_tensors = {o for k in half_nodes for o in originals[k].output if o and types.get(o) == FLOAT}

    # Graph outputs keep fp32: an fp16 producer writes "<name>_fp16" and a Cast restores "<name>".
    output_casts = []
    for out in graph.output:
        if out.name in half_tensors:
            renamed = _fresh(out.name + "_fp16", types)
            types[renamed] = HALF
            for n in originals:
                for seq in (n.input, n.output):
                    for k, name in enumerate(seq):
                        if name == out.name:
                            seq[k] = renamed
            half_tensors.discard(out.name)
            half_tensors.add(renamed)
            output_casts.append(helper.make_node("Cast", [renamed], [out.name], to=FLOAT, name=f"{out.name}_to_fp32"))

    # 3. Rewrite: fp16 copies of weights, casts at the borders.
    to_half: dict[str, str] = {}
    to_full: dict[str, str] = {}
    new_inits: list[Any] = []
    nodes: list[Any] = []
    casts = len(output_casts)
    for index, node in enumerate(originals):
        if index in half_nodes:
            keep = _KEEP_INPUTS.get(node.op_type, frozenset())
            for k, name in enumerate(node.input):
                if not name or k in keep or types.get(name) != FLOAT or name in half_tensors:
                    continue
                if name not in to_half:
                    to_half[name] = _fresh(name + "_fp16", types)
                    types[to_half[name]] = HALF
                    if name in inits:
                        arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                        new_inits.append(numpy_helper.from_array(arr, to_half[name]))
                    else:
                        nodes.append(helper.make_node("Cast", [name], [to_half[name]], to=HALF, name=f"{to_half[name]}_cast"))
                        casts += 1
                node.input[k] = to_half[name]
            for o in node.output:
                if o in half_tensors:
                    types[o] = HALF
        elif node.op_type not in _ANY_TYPE:
            for k, name in enumerate(node.input):
                if name in half_tensors:
                    if name not in to_full:
                        to_full[name] = _fresh(name + "_fp32", types)
                        types[to_full[name]] = FLOAT
                        nodes.append(helper.make_node("Cast", [name], [to_full[name]], to=FLOAT, name=f"{to_full[name]}_cast"))
                        casts += 1
                    node.input[k] = to_full[name]
        nodes.append(node)
    nodes.extend(output_casts)

    fp32_ops: dict[str, int] = {}
    cast_back = set(to_full.values())
    for index, n in enumerate(originals):
        if index not in half_nodes and n.op_type not in _ANY_TYPE and any(i in data_path or i in cast_back for i in n.input):
            fp32_ops[n.op_type] = fp32_ops.get(n.op_type, 0) + 1

    # Detached copies first: clearing the repeated field would invalidate the wrappers.
    rebuilt = []
    for n in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        rebuilt.append(copy)
    del graph.node[:]
    graph.node.extend(rebuilt)

    graph.initializer.extend(new_inits)
    drop_unused_initializers(graph)
    _refresh_value_info(model, types)
    return {"fp16_nodes": len(half_nodes), "fp32_data_path_nodes": dict(sorted(fp32_ops.items())), "casts": casts}


def _element_types(model: Any) -> dict[str, int]:
    """Element type of every tensor name: inputs, initializers, Constant outputs and inferred values."""

    graph = model.graph
    inferred = graph
    if model.ByteSize() < PROTOBUF_LIMIT:
        inferred = infer_shapes(model).graph
    types: dict[str, int] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _refresh_value_info(model: Any, types: dict[str, int]) -> None:
    """Point stored intermediate types at the new element types (shapes are unchanged)."""
    for value in model.graph.value_info:
        if value.name in types and value.type.HasField("tensor_type"):
            value.type.tensor_type.elem_type = types[value.name]


def _max_abs(init: Any) -> float:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(init)
    return float(np.abs(arr).max()) if arr.size else 0.0


def _fresh(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate
