"""Locating where accuracy is lost: each graph layer against its eager module, first offenders in graph order.

A wrong fp32 export is made by editing one weight of a bundle's graph; int8 loss is
shown on the graph with one int8-hostile layer of test_int8_accuracy.py.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from cases import tiny_kwargs
from onnx import numpy_helper
from test_int8_accuracy import HOSTILE, hostile_graph, spec_for, write_two_level_images
from torch import nn
from trained_model import cached_bundle

from segexport.bundle import Bundle
from segexport.calibration import validation_inputs
from segexport.calibration.quantize import quantize_onnx
from segexport.errors import InvalidInputError
from segexport.locate import bundle_graph, compare_layers, format_locate, locate
from segexport.manifest import ExportRecord, Manifest, TensorInfo
from segexport.parity import ParityPolicy, ParityReport

#: The conv whose weights the broken bundle gets wrong (its initializer keeps the module's name).
EDITED = "encoder.layer2.0.conv1"


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    # The same bundle as test_eval.py's: built once per process.
    from proxy_task import CLASSES

    return cached_bundle(
        "unet-resnet18-4-classes", arch="unet", encoder="resnet18", classes=CLASSES, height=64, width=64,
        arch_args=tiny_kwargs("unet"), checkpoint_seed=1,
    )  # fmt: skip


def checkpoint_of(bundle) -> str:  # type: ignore[no-untyped-def]
    return str(bundle.path.parent / "weights.pth")


@pytest.mark.onnx
def test_an_intact_fp32_bundle_has_no_layer_over_tolerance_and_every_layer_matched(bundle):
    report = locate(bundle.path, checkpoint=checkpoint_of(bundle))
    assert report.over_tolerance == [] and len(report.layers) == report.graph_layers > 20
    assert report.layers[0].module == "encoder.conv1" and max(layer.relative_error for layer in report.layers) < 1e-4
    assert [layer.index for layer in report.layers] == sorted(layer.index for layer in report.layers)
    assert "no layer exceeds the tolerance" in format_locate(report)


@pytest.mark.onnx
@pytest.mark.parametrize("edit", ["scale", "noise"])
def test_a_wrong_weight_in_an_fp32_graph_is_located_at_its_layer(bundle, tmp_path, edit):
    broken = tmp_path / "bundle"
    shutil.copytree(bundle.path, broken)
    graph = onnx.load(str(broken / "model.onnx"))
    init = next(t for t in graph.graph.initializer if t.name == f"model.{EDITED}.weight")
    weight = numpy_helper.to_array(init)
    rng = np.random.default_rng(0)
    wrong = weight * 1.25 if edit == "scale" else weight + 0.5 * weight.std() * rng.standard_normal(weight.shape).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(wrong.astype(np.float32), init.name))
    onnx.save(graph, str(broken / "model.onnx"))

    report = locate(broken, checkpoint=checkpoint_of(bundle))
    first = report.over_tolerance[0]
    assert first.module == EDITED and first.relative_error > 0.05
    assert all(layer.relative_error < 1e-4 for layer in report.layers if layer.index < first.index)  # all fine before it
    text = format_locate(report, limit=3)
    assert "first layers over tolerance" in text and f"layer {first.index} {EDITED} (Conv" in text.splitlines()[2]


def twin_of(graph_path) -> nn.Module:  # type: ignore[no-untyped-def]
    """The eager twin of test_int8_accuracy's hand-written graph: the same weights in torch modules."""
    fp32 = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(graph_path)).graph.initializer}

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1, bias=False), nn.Conv2d(8, 2, 1)
            with torch.no_grad():
                for name in ("a", "head"):
                    getattr(self, name).weight.copy_(fp32[f"{name}.w"])
                    getattr(self, name).bias.copy_(fp32[f"{name}.b"])
                self.b.weight.copy_(fp32["b.w"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.b(torch.relu(self.a(x)))))

    return Twin().eval()


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_int8_loss_is_located_at_the_hostile_layer(tmp_path, runtime):
    images = write_two_level_images(tmp_path / "images")
    spec = spec_for(images, int8_fallback="off")
    fp32 = hostile_graph(tmp_path / "model.onnx")
    quantize_onnx(fp32, tmp_path / "q.onnx", spec, runtime=runtime)
    layers, unmatched, total = compare_layers(onnx.load(str(tmp_path / "q.onnx")), twin_of(fp32), validation_inputs(spec)[0], 0.1)
    assert (unmatched, total) == ([], 3) and [layer.module for layer in layers] == ["a", "b", "head"]
    assert next(layer.module for layer in layers if layer.exceeds) == HOSTILE and layers[0].relative_error < 0.05


def test_an_fp16_graph_is_matched_through_its_casts_and_stays_within_the_fp16_tolerance(tmp_path):
    from segexport.locate import TOLERANCE
    from segexport.targets.fp16 import convert_to_fp16

    images = write_two_level_images(tmp_path / "images")
    fp32 = hostile_graph(tmp_path / "model.onnx")
    convert_to_fp16(fp32, tmp_path / "model.fp16.onnx")
    x = validation_inputs(spec_for(images))[0]
    layers, unmatched, total = compare_layers(onnx.load(str(tmp_path / "model.fp16.onnx")), twin_of(fp32), x, TOLERANCE["fp16"])
    assert (unmatched, total, [layer.module for layer in layers]) == ([], 3, ["a", "b", "head"])
    assert not any(layer.exceeds for layer in layers) and max(layer.relative_error for layer in layers) > 0  # fp16, not fp32


def manifest_of(target: str, artifact: str, precision: str, details: dict) -> Manifest:
    """The fields of a manifest that choose the graph to locate in; the rest as small as allowed."""
    tensor = TensorInfo.of("input", (1, 3, 32, 32), "float32")
    return Manifest(
        arch="unet", arch_args={}, encoder="resnet18", target=target, precision=precision, artifact=artifact,
        inputs=(tensor,), outputs=(tensor,), in_channels=3,
        export=ExportRecord(1, 32, 32, False, 18, 32, ("mask",), details=details),
        parity=ParityReport("", ParityPolicy.for_build(precision), []),
    )  # fmt: skip


@pytest.mark.parametrize("target", ["torchscript", "aoti"])
def test_bundles_without_an_onnx_graph_are_refused_with_what_to_do(tmp_path, target):
    with pytest.raises(InvalidInputError, match=f"needs an ONNX graph in the bundle \\(targets onnx, trt\\); a {target} bundle"):
        bundle_graph(Bundle(tmp_path, manifest_of(target, "model.pt2", "fp32", {})))


@pytest.mark.parametrize(("precision", "graph"), [("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx"), ("fp32", "model.onnx")])
def test_a_tensorrt_bundle_is_located_in_the_graph_its_engine_was_built_from(tmp_path, precision, graph):
    record = {"tensorrt": {"onnx": graph}}  # every TensorRT build records the graph it parsed
    assert bundle_graph(Bundle(tmp_path, manifest_of("trt", "model.engine", precision, record))) == graph


def test_a_tensorrt_record_without_its_graph_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="needs an ONNX graph in the bundle"):
        bundle_graph(Bundle(tmp_path, manifest_of("trt", "model.engine", "fp16", {"tensorrt": {}})))
