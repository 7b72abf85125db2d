"""Checkpoints: safe formats, wrappers and prefixes, clear mismatch errors, SMP checkpoints end to end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import segexport
from segexport.checkpoint import load_checkpoint, read_state_dict

SMALL = {"decoder_channels": (16, 16, 8, 8, 8)}


def small_unet(**kw):  # type: ignore[no-untyped-def]
    return segexport.create_model("unet", "resnet18", encoder_weights=None, **SMALL, **kw).eval()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "state_dict", "model", "lightning-prefixed", "dataparallel"],
)
def test_wrapped_and_prefixed_checkpoints_load(wrap, tmp_path):
    source = small_unet()
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(source.state_dict()), path)
    target = small_unet()
    load_checkpoint(target, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_safetensors_checkpoint_loads(tmp_path):
    source = small_unet()
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    assert set(read_state_dict(path)) == set(source.state_dict())


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"state_dict": small_unet().state_dict(), "obj": object()}, path)
    with pytest.raises(segexport.InvalidInputError, match="weights_only=True"):
        read_state_dict(path)


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(small_unet(aux_params={"classes": 2}).state_dict(), path)
    with pytest.raises(segexport.InvalidInputError, match=r"unexpected keys \(first: classification_head"):
        load_checkpoint(small_unet(), path)
    torch.save(small_unet(classes=4).state_dict(), path)
    with pytest.raises(segexport.InvalidInputError, match="shape mismatches"):
        load_checkpoint(small_unet(), path)


@pytest.mark.smp
@pytest.mark.parametrize("aux", [None, {"classes": 3, "dropout": 0.5}])
def test_smp_checkpoint_gives_an_onnx_model_matching_smp(aux, tmp_path):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(1)
    reference = smp.Unet("resnet18", encoder_weights=None, classes=2, aux_params=aux, **SMALL).eval()
    path = tmp_path / "smp.pth"
    torch.save(reference.state_dict(), path)
    bundle = segexport.build(
        "unet", "resnet18", checkpoint=str(path), classes=2, height=64, width=64, aux_classes=aux and 3,
        arch_args={**SMALL, **({"aux_params": aux} if aux else {})}, out=tmp_path / "b",
    )
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(bundle.artifact), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input": x})
    with torch.no_grad():
        expected = reference(torch.from_numpy(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected) == (2 if aux else 1)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-3)
