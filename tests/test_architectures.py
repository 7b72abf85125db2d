"""Every registered architecture builds and runs with each kind of encoder, depth, aux head and channel count.

Cases are generated from the registry, so a new architecture is covered the day it
is registered. Each (architecture, encoder) runs depths 3, 4 and 5, cycling the aux
head and in_channels 1/3/4 across them; a second test crosses aux x in_channels on
resnet34 at the default depth.
"""

from __future__ import annotations

import pytest
import torch
from cases import SIZE, tiny_kwargs

import segexport
from segexport.arch.registry import list_architectures

#: A timm CNN through the universal `tu-` path (RegNet: a family SMP lists) and a transformer.
ENCODERS = {"cnn": "resnet34", "timm": "tu-regnetx_002", "transformer": "mit_b0"}
#: Architectures that need dilation (output stride 8/16), which the Mix Transformer cannot do.
DILATING = {"deeplabv3", "deeplabv3plus", "pan"}
VIT = "tu-vit_tiny_patch16_224"


def encoder_cases() -> list:
    cases = []
    for arch in list_architectures():
        if arch == "dpt":
            cases.append(pytest.param(arch, VIT, 4, id=f"{arch}-vit"))
            continue
        for kind, encoder in ENCODERS.items():
            if kind == "transformer" and arch in DILATING:
                continue
            for depth in (3, 4, 5):
                if kind == "transformer" and arch == "fpn" and depth < 5:
                    continue  # FPN reads the stride-2 level at depth < 5; mit has none (a declared error, tested below)
                cases.append(pytest.param(arch, encoder, depth, id=f"{arch}-{kind}-d{depth}"))
    return cases


def default_depth(arch: str) -> int:
    import inspect

    return inspect.signature(segexport.arch.registry.get_architecture(arch).__init__).parameters["encoder_depth"].default


def build(arch: str, encoder: str, depth: int | None = None, **kwargs):  # type: ignore[no-untyped-def]
    extra = {} if depth is None or arch == "dpt" else {"encoder_depth": depth}
    tiny = tiny_kwargs(segexport.arch.registry.canonical_name(arch), depth)
    return segexport.create_model(arch, encoder, encoder_weights=None, **tiny, **extra, **kwargs).eval()


@pytest.mark.parametrize(("arch", "encoder", "depth"), encoder_cases())
def test_forward_returns_mask_and_optional_label(arch, encoder, depth):
    aux = depth % 2 == 1
    in_channels = {3: 1, 4: 4, 5: 3}[depth]
    model = build(arch, encoder, depth, classes=2, in_channels=in_channels, aux_params={"classes": 3} if aux else None)
    size = SIZE[arch]
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    mask, label = out if aux else (out, None)
    assert mask.shape[:2] == (2, 2) and torch.isfinite(mask).all()
    if depth == default_depth(arch):  # SMP's fixed head upsampling assumes the default depth
        assert mask.shape[2:] == (size, size)
    if aux:
        assert label.shape == (2, 3)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("arch", [a for a in list_architectures() if a != "dpt"])
def test_aux_head_and_in_channels_cross(arch, aux, in_channels):
    model = build(arch, "resnet34", classes=3, in_channels=in_channels, aux_params={"classes": 2, "pooling": "max"} if aux else None)
    size = SIZE[arch]
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, size, size))
    mask = out[0] if aux else out
    assert mask.shape == (1, 3, size, size)
    if aux:
        assert out[1].shape == (1, 2)


@pytest.mark.parametrize("arch", list_architectures())
def test_constructor_keywords_match_smp_defaults(arch):
    smp = pytest.importorskip("segmentation_models_pytorch")
    import inspect

    ours = inspect.signature(segexport.arch.registry.get_architecture(arch).__init__).parameters
    theirs = inspect.signature(getattr(smp, type(build(arch, "resnet18" if arch != "dpt" else VIT)).__name__).__init__).parameters
    for name, param in theirs.items():
        if name in ("self", "kwargs"):
            continue
        assert name in ours, f"{arch} lacks SMP keyword {name}"
        assert ours[name].default == param.default, f"{arch}.{name}: {ours[name].default!r} != SMP {param.default!r}"


@pytest.mark.parametrize(
    ("arch", "kwargs", "fragment"),
    [
        ("unett", {}, "Did you mean 'unet'"),
        ("unet", {"encoder_name": "resnet35"}, "Unknown encoder 'resnet35'"),
        ("unet", {"encoder_depth": 6}, "encoder_depth 6 is out of range"),
        ("unet", {"decoder_channels": (16, 8)}, "needs exactly 5"),
        ("unet", {"classes": 0}, "classes must be an integer >= 1; got 0"),
        ("unet", {"in_channels": 0}, "in_channels must be an integer >= 1; got 0"),
        ("unet", {"decoder_use_norm": "batchnrm"}, "Did you mean 'batchnorm'"),
        ("unet", {"activation": "sigmoidd"}, "Did you mean 'sigmoid'"),
        ("unet", {"decoder_attention_type": "scsee"}, "Did you mean 'scse'"),
        ("unet", {"aux_params": {"classes": 2, "pooling": "mean"}}, "allowed: 'avg', 'max'"),
        ("unet", {"aux_params": {"clases": 2}}, "Did you mean 'classes'"),
        ("deeplabv3", {"encoder_name": "mit_b0"}, "cannot reach output stride 8"),
        ("fpn", {"encoder_name": "mit_b0", "encoder_depth": 3}, "0 channels"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(arch, kwargs, fragment):
    kwargs = {"encoder_name": "resnet18", "encoder_weights": None, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        segexport.create_model(arch, **kwargs)


@pytest.mark.parametrize("arch", ["fpn", "pspnet", "deeplabv3plus"])
def test_indivisible_input_names_the_nearest_sizes(arch):
    model = build(arch, "resnet18")
    stride = model.required_stride
    with pytest.raises(ValueError, match=rf"not divisible by {stride}.*nearest sizes that work: {stride} or {2 * stride}"):
        model(torch.randn(1, 3, stride + 3, stride))


def test_aliases_and_case_insensitive_names():
    assert type(build("UNet++", "resnet18")).__name__ == "UnetPlusPlus"
    assert type(build("DeepLabV3+", "resnet18")).__name__ == "DeepLabV3Plus"
