"""Generated from SMP itself: every native encoder SMP 0.6 has, segexport has, with SMP's weights and outputs.

The list comes from ``smp.encoders.get_encoder_names()``, so the day SMP adds a native
encoder we lack, ``test_every_smp_native_encoder_is_registered`` fails. Each encoder is
built with random weights in SMP, its state_dict loaded strictly into ours, and the
features compared at a tiny input (the cheapest check that covers the key layout and
every layer; the decoders are compared with SMP in test_smp_compat.py).
"""

from __future__ import annotations

import warnings

import pytest
from cases import randomize_batchnorm as _randomize_batchnorm
import torch

from segexport.arch.encoders import get_encoder, get_pretrained_settings, list_encoders

smp = pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.smp

#: The larger members: seconds each to build twice at random init (CI's budget); every family's smaller members
#: (the same blocks, fewer or wider) run by default.
SLOW = {
    "senet154", "se_resnet101", "se_resnet152", "se_resnext101_32x4d",
    "dpn92", "dpn98", "dpn107", "dpn131",
    "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "densenet161", "densenet169", "densenet201",
    "resnet101", "resnet152", "resnext101_32x4d", "resnext101_32x8d", "resnext101_32x16d", "resnext101_32x32d",
    "resnext101_32x48d",
    "efficientnet-b3", "efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7",
    "timm-efficientnet-b4", "timm-efficientnet-b5", "timm-efficientnet-b6", "timm-efficientnet-b7",
    "timm-efficientnet-b8", "timm-efficientnet-l2", "timm-tf_efficientnet_lite2", "timm-tf_efficientnet_lite3",
    "timm-tf_efficientnet_lite4",
    "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mobileone_s2", "mobileone_s3", "mobileone_s4", "timm-skresnext50_32x4d",
}  # fmt: skip
#: Families whose stem needs a larger input than 64 to keep every feature non-empty (none so far).
SIZE: dict[str, int] = {}
RTOL_OF_RMS = 1e-5


def smp_encoder_names() -> list[str]:
    return list(smp.encoders.get_encoder_names())


def _params() -> list:
    return [pytest.param(n, id=n, marks=pytest.mark.slow(reason="a larger member of a family whose smaller members run") if n in SLOW else ()) for n in smp_encoder_names()]




def test_every_smp_native_encoder_is_registered():
    missing = sorted(set(smp_encoder_names()) - set(list_encoders()))
    assert not missing, f"SMP has native encoders segexport lacks: {missing}"


@pytest.mark.parametrize("name", _params())
def test_smp_encoder_state_dict_loads_strictly_and_gives_same_features(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(0)
        reference = smp.encoders.get_encoder(name, weights=None).eval()
    _randomize_batchnorm(reference)
    ours = get_encoder(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    size = SIZE.get(name.split("_")[0].split("-")[0], 64)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert list(ours.out_channels) == list(reference.out_channels)
    assert [f.shape for f in actual] == [f.shape for f in expected]
    for got, want in zip(actual, expected, strict=True):
        if want.numel():
            rms = want.pow(2).mean().sqrt().item()
            assert (got - want).abs().max().item() <= RTOL_OF_RMS * max(rms, 1.0)


@pytest.mark.parametrize("name", smp_encoder_names())  # cheap: no model is built
def test_pretrained_settings_follow_smp(name):
    """mean/std, input space and range as SMP's first registered weights declare them (BGR / 0-255 families too)."""
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    settings = smp_encoders[name]["pretrained_settings"]
    if not settings:
        pytest.skip(f"SMP declares no pretrained weights for {name}")
    weights, theirs = next(iter(settings.items()))
    ours = get_pretrained_settings(name, weights)
    assert list(ours.mean) == pytest.approx(list(theirs.get("mean", ours.mean)))
    assert list(ours.std) == pytest.approx(list(theirs.get("std", ours.std)))
    assert ours.input_space == theirs.get("input_space", "RGB")
    assert list(ours.input_range) == pytest.approx(list(theirs.get("input_range", [0, 1])))
