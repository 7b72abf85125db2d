"""SMP's native encoder families whose layers differ most, exported to every target with parity.

One representative per family: DPN's dual paths (dpn68), Inception's branches
(inceptionv4, inceptionresnetv2), MobileOne's reparameterised blocks (mobileone_s0),
plain VGG, SE gates, dense concatenations, Xception's separable convs and the
selective-kernel attention of timm-skresnet18. Every one is exported to ONNX; the
three most unusual also to TorchScript, AOTInductor and a TensorRT engine (built with
tensorrt-rtx without a GPU; validated by onnxruntime on the engine's ONNX there, by
the engine itself on a GPU). The decoder is FPN's tiny setting (1x1 laterals: the
cheapest decoder for encoders up to 2048 channels), the input the smallest size that
keeps every feature non-empty. The representatives are required: a family that is
not registered fails here rather than being skipped.
"""

from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch
from cases import tiny_kwargs
from torch import nn

import segexport

#: Encoder → input side (SMP 0.6's padded Inception/Xception stems halve exactly at 64 too).
REPRESENTATIVES: dict[str, int] = {
    "dpn68": 64,
    "inceptionv4": 64,
    "mobileone_s0": 64,
    "vgg11": 64,
    "se_resnet50": 64,
    "densenet121": 64,
    "xception": 64,
    "inceptionresnetv2": 64,
    "timm-skresnet18": 64,
}
#: slow: CI's budget takes one more build per target; the per-family ONNX parity above runs by default.
_MORE_TARGETS = pytest.mark.slow
#: The three with the most unusual layers, exported to every target (the first two by default).
EVERY_TARGET = ("mobileone_s0", "dpn68", pytest.param("inceptionv4", marks=_MORE_TARGETS))
ARCH = "fpn"
TRT_RUNTIMES = [m for m in ("tensorrt", "tensorrt_rtx") if importlib.util.find_spec(m) is not None]


def build(encoder: str, target: str, tmp_path, arch: str = ARCH, **options):  # type: ignore[no-untyped-def]
    size = REPRESENTATIVES[encoder]
    return segexport.build(
        arch, encoder, target=target, height=size, width=size, classes=2,
        arch_args=tiny_kwargs(arch), out=tmp_path / "bundle", **options,
    )  # fmt: skip


def check_parity(bundle, validated_with: str) -> None:  # type: ignore[no-untyped-def]
    parity = bundle.manifest.parity
    assert parity.passed, parity
    assert parity.validated_with.startswith(validated_with), parity.validated_with


@pytest.mark.onnx
# mobileone_s0's ONNX build, parity included, is test_reparameterized_mobileone_exports_one_conv_per_block's.
@pytest.mark.parametrize("encoder", [name for name in REPRESENTATIVES if name != "mobileone_s0"])
def test_onnx_export_passes_parity(encoder, tmp_path):
    bundle = build(encoder, "onnx", tmp_path)
    check_parity(bundle, "onnxruntime")
    onnx.checker.check_model(str(bundle.artifact), full_check=True)


@pytest.mark.torchscript
@pytest.mark.parametrize("encoder", EVERY_TARGET)
def test_torchscript_export_passes_parity(encoder, tmp_path):
    check_parity(build(encoder, "torchscript", tmp_path), "torch.jit.load")


@pytest.mark.aoti
@pytest.mark.parametrize(
    "encoder",
    [
        # slow: minutes of C++ compilation each on 2 cores; the default run compiles unet-resnet34 (conftest.py).
        pytest.param("mobileone_s0", marks=pytest.mark.slow),
        pytest.param("dpn68", marks=pytest.mark.slow),
        pytest.param("inceptionv4", marks=pytest.mark.slow),
    ],
)
def test_aoti_package_passes_parity(encoder, tmp_path):
    check_parity(build(encoder, "aoti", tmp_path), "aoti_load_package")


@pytest.mark.trt
@pytest.mark.skipif(not TRT_RUNTIMES, reason="needs tensorrt or tensorrt-rtx (pip install 'segexport[trt]')")
@pytest.mark.parametrize("encoder", EVERY_TARGET)
def test_tensorrt_engine_builds_and_passes_parity(encoder, tmp_path):
    bundle = build(encoder, "trt", tmp_path)
    check_parity(bundle, "tensorrt" if torch.cuda.is_available() else "onnxruntime-cpu")
    assert (bundle.path / "model.engine").stat().st_size > 0
    assert bundle.manifest.runtime in TRT_RUNTIMES


@pytest.mark.onnx
def test_reparameterized_mobileone_exports_one_conv_per_block(tmp_path):
    """unet-mobileone_s0: each MobileOne block (4 conv branches + scale + skip in eager) is one Conv in the graph."""
    from segexport.arch.encoders.mobileone import MobileOneBlock
    from segexport.arch.registry import create_model

    model = create_model("unet", "mobileone_s0", encoder_weights=None, classes=2, **tiny_kwargs("unet"))
    blocks = sum(isinstance(m, MobileOneBlock) for m in model.encoder.modules())
    eager_encoder_convs = sum(isinstance(m, nn.Conv2d) for m in model.encoder.modules())
    other_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules()) - eager_encoder_convs
    bundle = build("mobileone_s0", "onnx", tmp_path, arch="unet")
    check_parity(bundle, "onnxruntime")  # the fused graph against the eager multi-branch model
    graph = onnx.load(str(bundle.artifact)).graph
    convs = sum(node.op_type == "Conv" for node in graph.node)
    assert blocks == 43 and eager_encoder_convs > 4 * blocks
    assert convs == blocks + other_convs
    assert not [node for node in graph.node if node.op_type == "BatchNormalization"]
