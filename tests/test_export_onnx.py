"""The ONNX target: every architecture exports, passes parity, and writes a complete bundle."""

from __future__ import annotations

import json

import onnx
import pytest
from cases import EXPORT_ENCODER, SIZE, export_cases, tiny_kwargs

import segexport

pytestmark = pytest.mark.onnx


def build_tiny(arch: str, tmp_path, **options):  # type: ignore[no-untyped-def]
    size = options.pop("size", SIZE[arch])
    return segexport.build(
        arch,
        options.pop("encoder", EXPORT_ENCODER[arch]),
        height=size,
        width=size,
        arch_args=tiny_kwargs(arch),
        out=tmp_path / "bundle",
        **options,
    )


@pytest.mark.parametrize(("arch", "dynamic", "aux"), export_cases())
def test_every_architecture_exports_with_parity(arch, dynamic, aux, tmp_path):
    bundle = build_tiny(arch, tmp_path, dynamic=dynamic, aux_classes=3 if aux else None, classes=2)
    parity = bundle.manifest.parity
    assert parity.passed
    assert [o.name for o in parity.outputs] == (["mask", "label"] if aux else ["mask"])
    assert len(parity.input_shapes) == (2 if dynamic else 1)
    graph = onnx.load(str(bundle.artifact))
    onnx.checker.check_model(graph, full_check=True)
    input_dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    size = SIZE[arch]
    assert input_dims == (["batch", 3, "height", "width"] if dynamic else [1, 3, size, size])


def test_bundle_manifest_has_every_documented_field(tmp_path):
    bundle = build_tiny("unet", tmp_path, aux_classes=2)
    m = json.loads((bundle.path / "manifest.json").read_text())
    for key in (
        "format_version", "segexport_version", "versions", "arch", "arch_args", "encoder", "classes", "in_channels",
        "target", "precision", "artifact", "inputs", "outputs", "normalization", "parity", "sha256", "created",
    ):
        assert key in m, key
    assert m["arch_args"]["decoder_attention_type"] is None  # defaults recorded too
    assert m["arch_args"]["aux_params"] == {"classes": 2}
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    assert set(m["sha256"]) == {"model.onnx", "reference.npz"}
    assert m["outputs"][0]["layout"] == "NCHW" and m["outputs"][1]["name"] == "label"
    assert set(m["normalization"]) == {"mean", "std", "input_space", "input_range"}


def test_same_inputs_give_byte_identical_model(tmp_path):
    first = build_tiny("fpn", tmp_path / "a")
    second = build_tiny("fpn", tmp_path / "b")
    assert first.artifact.read_bytes() == second.artifact.read_bytes()


def test_verify_detects_a_modified_file(tmp_path):
    bundle = build_tiny("unet", tmp_path)
    assert segexport.verify(bundle.path).passed
    with open(bundle.artifact, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    result = segexport.verify(bundle.path)
    assert not result.passed and result.bad_files == ["model.onnx"]


def test_failed_parity_leaves_no_bundle_but_a_report(tmp_path):
    with pytest.raises(segexport.ParityError, match="report kept in"):
        build_tiny("unet", tmp_path, atol=0.0, rtol=0.0)
    assert not (tmp_path / "bundle").exists()
    report = json.loads((tmp_path / "bundle.failed" / "report.json").read_text())
    assert report["passed"] is False
    assert not list(tmp_path.glob(".bundle*"))  # no staging directory left behind


def test_existing_output_needs_force(tmp_path):
    build_tiny("unet", tmp_path)
    with pytest.raises(segexport.InvalidInputError, match="--force"):
        build_tiny("unet", tmp_path)
    assert build_tiny("unet", tmp_path, force=True).manifest.parity.passed


def test_activation_is_part_of_the_graph(tmp_path):
    """The exported graph itself ends in the sigmoid: its mask is a probability for any input, however large."""
    import numpy as np
    import onnxruntime as ort

    bundle = build_tiny("unet", tmp_path, activation="sigmoid")
    graph = onnx.load(str(bundle.artifact)).graph
    producer = next(n for n in graph.node if "mask" in n.output)
    assert producer.op_type == "Sigmoid"
    session = ort.InferenceSession(str(bundle.artifact), providers=["CPUExecutionProvider"])
    x = 100 * np.random.default_rng(0).standard_normal((1, 3, SIZE["unet"], SIZE["unet"])).astype(np.float32)
    (mask,) = session.run(["mask"], {"input": x})
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.std() > 0
