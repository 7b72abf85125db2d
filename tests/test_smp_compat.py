"""SMP 0.6 checkpoints load strictly into every architecture and give the same outputs (<= 1e-5)."""

from __future__ import annotations

import pytest
import torch
from cases import SIZE, tiny_kwargs

import segexport
from segexport.arch.registry import get_architecture, list_architectures

smp = pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.smp

#: architecture → encoders to compare with (SMP refuses mit_b0 by name for some; dilating ones cannot take it).
ENCODERS: dict[str, list[str]] = {arch: ["resnet18"] for arch in list_architectures()}
for arch in ("unet", "manet", "fpn", "pspnet", "upernet", "segformer"):
    ENCODERS[arch].append("mit_b0")
ENCODERS["dpt"] = ["tu-vit_tiny_patch16_224"]


def cases() -> list:
    return [
        pytest.param(arch, encoder, aux, id=f"{arch}-{encoder}-{'aux' if aux else 'mask'}")
        for arch in list_architectures()
        for encoder in ENCODERS[arch]
        for aux in (False, True)
    ]


@pytest.mark.parametrize(("arch", "encoder", "aux"), cases())
def test_smp_checkpoint_loads_strict_and_matches(arch, encoder, aux):
    kwargs = dict(tiny_kwargs(arch), encoder_weights=None, classes=3, aux_params={"classes": 4, "dropout": 0.3} if aux else None)
    torch.manual_seed(0)
    theirs = getattr(smp, get_architecture(arch).__name__)(encoder, **kwargs).eval()
    ours = segexport.create_model(arch, encoder, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, SIZE[arch], SIZE[arch])
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-5
