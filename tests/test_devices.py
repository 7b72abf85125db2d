"""The device an artifact was compiled for is recorded, and readers refuse it on another, through the installed command.

A package compiled for one GPU (CUDA kernels for its compute capability) or by one
torch (AOTInductor's library ABI) says so on a machine that lacks them, in one line
with exit 2, before any runtime touches it. Portable artifacts load anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from cases import cli, one_error_line, tiny_kwargs

import segexport
from segexport.devices import DeviceRecord, check_runs_here
from segexport.errors import InvalidInputError
from segexport.manifest import manifest_digest

H200 = DeviceRecord("cuda", "NVIDIA H200", "9.0", "12.8", torch.__version__, compiled=True)
TINY = ["--height", "64", "--width", "64", "--arch-arg", "decoder_channels=(16,16,8,8,8)"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a CUDA GPU says")


def test_a_cpu_build_records_the_device_it_was_validated_on(aoti_unet_bundle):
    device = aoti_unet_bundle.manifest.device
    assert (device.kind, device.compiled, device.torch, device.capability) == ("cpu", True, torch.__version__, None)
    assert json.loads((aoti_unet_bundle.path / "manifest.json").read_text())["device"] == device.to_json()


@pytest.mark.parametrize(
    ("record", "same_torch", "runs"),
    [
        (dataclasses.replace(H200, compiled=False), False, True),  # TorchScript: weights move with map_location
        (DeviceRecord("cpu", "x86_64", None, None, torch.__version__, True), True, True),
        (DeviceRecord("cpu", "x86_64", None, None, "1.13.1", True), True, False),  # an AOTI package of another torch
        (DeviceRecord("cpu", "x86_64", None, None, "1.13.1", False), False, True),  # ONNX
        (None, True, True),  # format 2 bundles carry no record
    ],
)
def test_on_the_cpu_only_a_package_of_another_torch_is_refused(record, same_torch, runs):
    if runs:
        check_runs_here(record, "model", same_torch=same_torch)
    else:
        with pytest.raises(InvalidInputError, match="compiled by torch 1.13.1, which loads in that torch only"):
            check_runs_here(record, "model", same_torch=same_torch)


def test_a_package_for_another_gpu_names_both(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100")
    with pytest.raises(InvalidInputError, match=r"compiled for NVIDIA H200, sm_90; this GPU is NVIDIA A100, sm_80"):
        check_runs_here(H200, "model.pt2", same_torch=True)
    check_runs_here(dataclasses.replace(H200, capability=None), "model.engine")  # --hardware-compat: any GPU


@no_gpu
@pytest.mark.parametrize("command", ["verify", "bench", "inspect"])
def test_a_package_compiled_for_a_gpu_is_refused_on_a_machine_without_one(aoti_unet_bundle, tmp_path, command):
    bundle = tmp_path / "bundle"
    shutil.copytree(aoti_unet_bundle.path, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["device"] = H200.to_json()
    manifest["digest"] = manifest_digest(manifest)  # re-signed: the device check alone must refuse it
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = cli(command, str(bundle))
    if command == "inspect":  # showing a manifest runs nothing
        assert proc.returncode == 0 and "model.pt2" in proc.stdout, proc.stderr
        return
    assert proc.returncode == 2
    one_error_line(proc, "was compiled for a CUDA GPU (NVIDIA H200, sm_90); this machine has none")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--target", "aoti", "--fp16"], "fp16 AOTInductor packages are compiled for a CUDA GPU: add --device cuda"),
        (["--target", "aoti", "--device", "tpu"], "--device 'tpu' is not a device AOTInductor compiles for; allowed: cpu, cuda"),
        (["--target", "onnx", "--device", "cuda"], "'device' is not an option of --target onnx"),
        pytest.param(["--target", "aoti", "--device", "cuda"], "compiles for this machine's GPU, and it has none", marks=no_gpu),
    ],
)
def test_a_device_the_target_cannot_build_for_is_refused_before_any_work(tmp_path, argv, fragment):
    proc = cli("build", "unet", "resnet18", *TINY, *argv, "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    one_error_line(proc, fragment)
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
@pytest.mark.aoti
@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles for the GPU: needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_cuda_package_passes_parity_on_the_gpu_and_records_it(tmp_path: Path, precision):
    bundle = segexport.build("unet", "resnet34", target="aoti", precision=precision, height=64, width=64, classes=2,
                             arch_args=tiny_kwargs("unet"), target_options={"device": "cuda"}, out=tmp_path / "b")  # fmt: skip
    m = bundle.manifest
    assert m.parity.passed and m.parity.validated_with == "aoti_load_package-cuda" + ("-fp16" if precision == "fp16" else "")
    assert (m.device.kind, m.device.compiled) == ("cuda", True)
    assert m.device.capability == "{}.{}".format(*torch.cuda.get_device_capability())
    assert segexport.verify(bundle.path).passed
