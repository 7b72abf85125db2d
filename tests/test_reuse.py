"""Builds that share a BuildReuse (the matrix's row worker) write what each writes alone, and share only equal work."""

from __future__ import annotations

import numpy as np
import pytest
from cases import TINY

from segexport.bundle import sha256_file
from segexport.pipeline import BuildRequest, request_model_key, run_build
from segexport.digests import sha256_arrays
from segexport.reuse import BuildReuse, GraphStore, model_key
from segexport.targets.base import ExportSpec

ROW = {"arch": "unet", "encoder": "resnet18", "height": 64, "width": 64, "arch_args": TINY["unet"], "force": True}


def build(tmp_path, name: str, reuse: BuildReuse | None = None, **fields):
    return run_build(BuildRequest(**{**ROW, **fields}, out=tmp_path / name), reuse=reuse)


def references(bundle) -> dict[str, np.ndarray]:
    with np.load(bundle.path / "reference.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.onnx
def test_builds_sharing_a_reuse_write_what_they_write_alone(tmp_path):
    alone = build(tmp_path, "alone")
    reuse = BuildReuse()
    try:
        first = build(tmp_path, "first", reuse)
        assert dict(reuse.hits) == {}  # the first build of a model makes everything itself
        int8 = build(tmp_path, "int8", reuse, precision="int8", calib="random")
        assert dict(reuse.hits) == {"model": 1, "onnx graph": 1}  # int8 judges on other inputs: its own reference
        traced = build(tmp_path, "traced", reuse, target="torchscript")
        assert dict(reuse.hits) == {"model": 2, "onnx graph": 1, "reference": 1}
    finally:
        reuse.close()
    graph = sha256_file(alone.path / "model.onnx")
    assert sha256_file(first.path / "model.onnx") == graph == sha256_file(int8.path / "model.fp32.onnx")
    expected = references(alone)
    for bundle in (first, traced):
        got = references(bundle)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)
    assert first.manifest.parity.to_dict()["outputs"] == alone.manifest.parity.to_dict()["outputs"]


@pytest.mark.onnx
def test_a_build_of_another_model_or_shape_shares_nothing(tmp_path):
    reuse = BuildReuse()
    try:
        build(tmp_path, "a", reuse)
        build(tmp_path, "seed", reuse, seed=1)  # another random init is another model
        build(tmp_path, "size", reuse, height=96, width=96, seed=1)  # the same model at another size: only the model
        assert dict(reuse.hits) == {"model": 1}
        kept = reuse.folder()
        assert len(reuse.graphs) == 3 and kept.is_dir()
    finally:
        reuse.close()
    assert not kept.exists()  # the kept graphs go with the worker's reuse


def test_model_key_follows_every_constructor_argument_and_the_weights_file(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"one")
    base = BuildRequest(**ROW, checkpoint=str(weights))
    key = request_model_key(base)
    changed = [
        BuildRequest(**{**ROW, "arch_args": {"decoder_channels": (16, 16, 16, 8, 8)}}, checkpoint=str(weights)),
        BuildRequest(**ROW, checkpoint=str(weights), classes=2),
        BuildRequest(**ROW, checkpoint=str(weights), seed=3),
        BuildRequest(**ROW, checkpoint=None),
        BuildRequest(**{**ROW, "encoder": "resnet34"}, checkpoint=str(weights)),
    ]
    assert len({key, *map(request_model_key, changed)}) == 1 + len(changed)
    assert request_model_key(BuildRequest(**ROW, checkpoint=str(weights), target="trt", precision="int8")) == key
    weights.write_bytes(b"other weights")  # the same path with new contents is another model
    assert request_model_key(base) != key
    assert model_key({"a": 1}) == model_key({"a": 1}) != model_key({"a": 2})


def test_graph_key_follows_the_export_shape_and_opset():
    spec = ExportSpec(batch=1, in_channels=3, height=64, width=64, output_names=("mask",))
    others = [
        ExportSpec(batch=2, in_channels=3, height=64, width=64, output_names=("mask",)),
        ExportSpec(batch=1, in_channels=3, height=64, width=96, output_names=("mask",)),
        ExportSpec(batch=1, in_channels=3, height=64, width=64, output_names=("mask",), opset=17),
        ExportSpec(batch=1, in_channels=3, height=64, width=64, output_names=("mask",), dynamic=True),
        ExportSpec(batch=1, in_channels=3, height=64, width=64, output_names=("mask", "label")),
    ]
    keys = {GraphStore.export_key(spec), *map(GraphStore.export_key, others)}
    assert len(keys) == 1 + len(others)
    assert GraphStore.export_key(ExportSpec(1, 3, 64, 64, ("mask",), precision="int8")) == GraphStore.export_key(spec)


def test_inputs_fingerprint_tells_apart_values_shapes_and_dtypes():
    x = np.zeros((1, 3, 8, 8), np.float32)
    y = x.copy()
    y[0, 0, 0, 0] = 1e-7
    prints = {sha256_arrays([a]) for a in (x, y, x.reshape(1, 3, 4, 16), x.astype(np.float16))}
    assert len(prints) == 4 and sha256_arrays([x]) == sha256_arrays([x.copy()])
