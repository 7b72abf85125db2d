"""Writing ONNX files the same way everywhere: deterministic bytes, external data past protobuf's 2 GB limit.

Shared by the ONNX and TensorRT targets, the fp16 pass and int8 calibration, which
all write graphs; it sits below them so none of them imports another to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
