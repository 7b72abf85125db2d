"""The TorchScript target: every architecture traces, passes parity after torch.jit.load, and stays device-portable."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from cases import EXPORT_ENCODER, SIZE, export_cases, tiny_kwargs

import segexport
from segexport.targets import ExportSpec, get_target
from segexport.targets.runners import load_torchscript
from segexport.targets.torchscript import baked_devices

pytestmark = pytest.mark.torchscript


def build_tiny(arch: str, tmp_path, **options):  # type: ignore[no-untyped-def]
    size = options.pop("size", SIZE[arch])
    return segexport.build(
        arch,
        options.pop("encoder", EXPORT_ENCODER[arch]),
        target="torchscript",
        height=size,
        width=size,
        arch_args=tiny_kwargs(arch),
        out=tmp_path / "bundle",
        **options,
    )


@pytest.mark.parametrize(("arch", "dynamic", "aux"), export_cases())
def test_every_architecture_traces_with_parity(arch, dynamic, aux, tmp_path):
    bundle = build_tiny(arch, tmp_path, dynamic=dynamic, aux_classes=3 if aux else None, classes=2)
    m = bundle.manifest
    assert m.parity.passed
    assert m.parity.validated_with == "torch.jit.load-cpu"
    assert [o.name for o in m.parity.outputs] == (["mask", "label"] if aux else ["mask"])
    assert len(m.parity.input_shapes) == (2 if dynamic else 1)
    size = SIZE[arch]
    assert m.inputs[0].shape == (("batch", 3, "height", "width") if dynamic else (1, 3, size, size))
    assert set(m.sha256) == {"model.ts", "reference.npz"}
    assert baked_devices(load_torchscript(bundle.artifact).graph) == []


def test_graph_that_hard_codes_a_device_is_refused(tmp_path):
    class CreatesOnCpu(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x + torch.arange(x.shape[-1]),)  # arange's device defaults to the tracing device

    spec = ExportSpec(batch=1, in_channels=3, height=8, width=8, output_names=("mask",))
    with pytest.raises(segexport.ExportError, match=r"hard-codes a device.*cpu used by aten::arange"):
        get_target("torchscript").export(CreatesOnCpu(), spec, tmp_path)


def test_tensors_created_from_the_input_are_accepted(tmp_path):
    class CreatesLikeInput(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x + torch.zeros_like(x) + x.new_ones(x.shape[-1]),)

    spec = ExportSpec(batch=1, in_channels=3, height=8, width=8, output_names=("mask",), dynamic=True)
    result = get_target("torchscript").export(CreatesLikeInput(), spec, tmp_path)
    assert result.outputs[0].shape == ("batch", 3, "height", "width")


def test_fp16_without_gpu_is_refused_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: fp16 builds there")
    with pytest.raises(segexport.InvalidInputError, match="fp16 TorchScript .* CUDA GPU"):
        build_tiny("unet", tmp_path, precision="fp16")
    assert not (tmp_path / "bundle").exists()


def test_int8_is_refused_with_the_allowed_precisions(tmp_path):
    with pytest.raises(segexport.InvalidInputError, match="allowed: fp32, fp16"):
        build_tiny("unet", tmp_path, precision="int8", calib="random")


def test_verify_reruns_parity_through_torch_jit_load(tmp_path):
    bundle = build_tiny("unet", tmp_path, dynamic=True)
    result = segexport.verify(bundle.path)
    assert result.passed and result.report.validated_with == "torch.jit.load-cpu"


def test_optimize_for_inference_after_loading_keeps_parity(tmp_path):
    # The documented way to get MKLDNN kernels: optimise on the deployment machine, after loading.
    bundle = build_tiny("unet", tmp_path)
    with np.load(bundle.path / "reference.npz") as ref:
        x, expected = ref["input_0"], ref["output_0_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.optimize_for_inference(load_torchscript(bundle.artifact))
    with torch.inference_mode():
        actual = module(torch.from_numpy(x))[0].numpy()
    scale = max(1.0, float(np.sqrt(np.mean(expected.astype(np.float64) ** 2))))
    np.testing.assert_allclose(actual, expected, atol=1e-4 * scale, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_traced_module_runs_on_cuda(tmp_path):
    bundle = build_tiny("unet", tmp_path, aux_classes=2)
    with np.load(bundle.path / "reference.npz") as ref:
        x, expected = ref["input_0"], ref["output_0_mask"]
    module = load_torchscript(bundle.artifact, "cuda")
    with torch.inference_mode():
        actual = module(torch.from_numpy(x).cuda())[0].cpu().numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max())), rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_gpu_passes_on_mask_agreement(tmp_path):
    bundle = build_tiny("unet", tmp_path, precision="fp16", classes=3, dynamic=True)
    m = bundle.manifest
    assert m.parity.passed and m.parity.validated_with == "torch.jit.load-cuda-fp16"
    assert m.inputs[0].dtype == "float32" and m.export.details["compute_dtype"] == "float16"
