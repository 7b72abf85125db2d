"""Writing and checking ONNX files the same way everywhere: deterministic bytes, external data past protobuf's 2 GB limit.

Shared by the ONNX and TensorRT targets, the fp16 pass and int8 calibration, which
all write graphs; it sits below them so none of them imports another to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segexport.errors import ExportError, first_line
from segexport.interrupts import deferred

#: Protobuf refuses messages of 2 GiB; graphs above this (with 1 MiB headroom) keep their weights beside them.
PROTOBUF_LIMIT = 2**31 - 2**20


def make_deterministic(proto: Any) -> None:
    """Drop exporter metadata (stack traces, file paths) so equal inputs give equal bytes."""
    graph = proto.graph
    for container in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for item in container:
            if hasattr(item, "metadata_props"):
                del item.metadata_props[:]
            if hasattr(item, "doc_string"):
                item.doc_string = ""
    del proto.metadata_props[:]
    proto.doc_string = ""
    proto.producer_name = "segexport"


def save_onnx(proto: Any, path: Path) -> None:
    """Save, switching to the external-data format for graphs over the protobuf limit."""
    import onnx

    if proto.ByteSize() > PROTOBUF_LIMIT:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(proto, str(path))


def check_onnx(path: Path, what: str) -> None:
    """Run onnx's full checker (with shape inference) on the file; ``what`` names the graph in the one-line error."""
    import onnx

    try:
        with deferred():  # onnx's bindings cannot unwind a Ctrl-C raised inside them
            onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises several checker/inference types
        raise ExportError(f"{what} fails onnx.checker: {first_line(exc)}") from exc


def drop_unused_initializers(graph: Any) -> int:
    """Remove the initializers no node and no graph output reads (after a rewrite); returns how many."""
    import onnx

    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = []
    for t in graph.initializer:
        if t.name in used:
            copy = onnx.TensorProto()  # protobuf hands out wrappers into the list being cleared
            copy.CopyFrom(t)
            kept.append(copy)
    dropped = len(graph.initializer) - len(kept)
    if dropped:
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return dropped


def infer_shapes(proto: Any, **options: Any) -> Any:
    """onnx's shape inference, shielded from Ctrl-C like :func:`check_onnx`; raises what onnx raises."""
    import onnx

    with deferred():
        return onnx.shape_inference.infer_shapes(proto, **options)
