"""UnetPlusPlus, MAnet, Linknet, FPN, PSPNet: argument errors, encoder levels with 0 channels,
SMP parity (state_dict and outputs), and PSPNet's pyramid pooling in an exported graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segexport.arch.base import export_mode
from segexport.arch.encoders import ENCODERS, EncoderEntry
from segexport.arch.fpn import FPN
from segexport.arch.linknet import Linknet
from segexport.arch.manet import MAnet
from segexport.arch.pspnet import PSPNet
from segexport.arch.unetplusplus import UnetPlusPlus
from segexport.errors import InvalidInputError

ARCHS: dict[str, type[nn.Module]] = {
    "unetplusplus": UnetPlusPlus,
    "manet": MAnet,
    "linknet": Linknet,
    "fpn": FPN,
    "pspnet": PSPNet,
}


def build(arch: str, encoder: str = "resnet18", **kwargs: Any) -> nn.Module:
    return ARCHS[arch](encoder_name=encoder, encoder_weights=None, **kwargs)


# --- argument validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("unetplusplus", {"encoder_depth": 6}, r"encoder_depth 6 is out of range for UnetPlusPlus; allowed: 3, 4, 5"),
        ("unetplusplus", {"decoder_channels": (16, 8)}, r"has 2 entries but UnetPlusPlus with encoder_depth=5 needs exactly 5"),
        ("unetplusplus", {"decoder_attention_type": "scsa"}, r"Unknown decoder_attention_type 'scsa'.*Did you mean 'scse'"),
        ("unetplusplus", {"decoder_interpolation": "linear"}, r"Unknown decoder_interpolation 'linear'; allowed: nearest"),
        ("unetplusplus", {"decoder_use_norm": "groupnorm"}, r"Unknown decoder_use_norm 'groupnorm'"),
        ("manet", {"encoder_depth": 2, "decoder_channels": (8, 8)}, r"encoder_depth 2 is out of range for MAnet"),
        ("manet", {"encoder_depth": 4}, r"decoder_channels \(256, 128, 64, 32, 16\) has 5 entries but MAnet"),
        ("manet", {"decoder_pab_channels": 0}, r"decoder_pab_channels must be an integer >= 1; got 0"),
        ("manet", {"decoder_interpolation": "bilinear2"}, r"Unknown decoder_interpolation 'bilinear2'.*'bilinear'"),
        ("linknet", {"encoder_depth": 1}, r"encoder_depth 1 is out of range for Linknet; allowed: 3, 4, 5"),
        ("linknet", {"classes": 0}, r"classes must be an integer >= 1; got 0"),
        ("fpn", {"encoder_depth": 2}, r"encoder_depth 2 is out of range for FPN"),
        ("fpn", {"decoder_merge_policy": "concat"}, r"Unknown decoder_merge_policy 'concat'; allowed: add, cat"),
        ("fpn", {"decoder_segmentation_channels": 48}, r"decoder_segmentation_channels must be a positive multiple of 32"),
        ("fpn", {"decoder_pyramid_channels": 0}, r"decoder_pyramid_channels must be an integer >= 1; got 0"),
        ("fpn", {"decoder_dropout": 1.5}, r"decoder_dropout must be a probability in \[0, 1\]; got 1.5"),
        ("fpn", {"upsampling": 0}, r"upsampling must be a number >= 1"),
        ("pspnet", {"encoder_depth": 6}, r"encoder_depth 6 is out of range for PSPNet; allowed: 3, 4, 5"),
        ("pspnet", {"psp_out_channels": -1}, r"psp_out_channels must be an integer >= 1; got -1"),
        ("pspnet", {"psp_dropout": -0.1}, r"psp_dropout must be a probability in \[0, 1\]; got -0.1"),
        ("pspnet", {"upsampling": None}, r"upsampling must be a number >= 1 \(1 means none\); got None"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(arch, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        build(arch, **kwargs)


# --- encoders with missing levels (0 channels), decided from out_channels ---------------------


class HoledEncoder(nn.Module):
    """A user-registered encoder that has no feature (0 channels) at some levels, like transformers.

    With ``strict=True`` it returns None for those levels instead of an empty tensor,
    so a decoder that touches them in any way fails.
    """

    def __init__(self, channels: list[int], depth: int = 5, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict
        self._channels = list(channels[: depth + 1])
        self.depth = depth
        self.output_stride = 2**depth
        self.convs = nn.ModuleList(nn.Conv2d(3, max(c, 1), 1) for c in self._channels[1:])

    @property
    def out_channels(self) -> list[int]:
        return self._channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for level, (c, conv) in enumerate(zip(self._channels[1:], self.convs), start=1):
            pooled = F.avg_pool2d(x, 2**level)
            features.append(conv(pooled) if c else None if self.strict else pooled[:, :0])
        return features


@pytest.fixture
def holed(monkeypatch):  # type: ignore[no-untyped-def]
    """Register encoder 'holed' with the given channels for this test only."""

    def register(channels: list[int], strict: bool = False) -> str:
        monkeypatch.setitem(ENCODERS, "holed", EncoderEntry(HoledEncoder, {"channels": channels, "strict": strict}))
        return "holed"

    return register


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("unetplusplus", {"decoder_channels": (16, 16, 16, 16, 16), "decoder_attention_type": "scse"}),
        ("manet", {"decoder_channels": (16, 16, 8, 8, 8), "decoder_pab_channels": 4}),
        ("linknet", {}),
        ("fpn", {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32}),
        ("pspnet", {"psp_out_channels": 8}),
    ],
)
def test_encoder_without_a_stride2_feature_is_never_read(holed, arch, kwargs):
    model = build(arch, holed([3, 0, 16, 16, 32, 32], strict=True), **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # Nothing in the decoder is sized for the missing level.
    assert all(p.numel() > 0 for p in model.decoder.parameters())


@pytest.mark.parametrize(
    ("arch", "channels", "kwargs", "message"),
    [
        ("unetplusplus", [3, 16, 0, 16, 32, 32], {}, r"encoder 'holed': it has no features \(0 channels\) at level\(s\) \[2\]"),
        ("fpn", [3, 0, 16, 16, 32], {"encoder_depth": 4}, r"reads feature levels 1..4 .* level\(s\) \[1\]; use encoder_depth >= 5"),
        ("pspnet", [3, 16, 16, 2], {}, r"deepest feature has 2 channels and the pyramid needs at least 4"),
    ],
)
def test_encoder_missing_a_level_the_decoder_needs_is_refused(holed, arch, channels, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        build(arch, holed(channels), **kwargs)


def test_pspnet_treats_empty_aux_params_as_no_aux_head():
    # SMP's PSPNet tests ``if aux_params:``; an empty dict gives no classification head.
    assert build("pspnet", psp_out_channels=8, aux_params={}).classification_head is None


# --- SMP parity ------------------------------------------------------------------------------

#: Small settings per architecture, run for each (encoder, aux_params) of ENCODER_AUX.
PARITY_BASE: dict[str, dict[str, Any]] = {
    "unetplusplus": {"decoder_channels": (32, 16, 16, 16, 16), "decoder_attention_type": "scse"},
    "manet": {"decoder_channels": (32, 16, 16, 8, 8), "decoder_pab_channels": 8},
    "linknet": {},
    "fpn": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "pspnet": {"psp_out_channels": 32},
}
AUX = {"classes": 3, "dropout": 0.5}
#: Other depths and options, once each: (id, arch, kwargs, encoder, aux_params).
PARITY_VARIANTS: list[tuple[str, str, dict[str, Any], str, dict[str, Any] | None]] = [
    ("depth3-bilinear", "unetplusplus", {"encoder_depth": 3, "decoder_channels": (16, 8, 8), "decoder_interpolation": "bilinear"}, "resnet18", None),
    ("depth4-scse", "unetplusplus", {"encoder_depth": 4, "decoder_channels": (64, 32, 32, 16), "decoder_attention_type": "scse"}, "mit_b0", AUX),
    # A timm transformer-style encoder (0 channels at stride 2) that SMP accepts without an alias.
    ("timm-transformer-style", "unetplusplus", {"decoder_channels": (32, 16, 16, 8, 8)}, "tu-convnext_atto", None),
    ("depth3-bicubic-nonorm", "manet", {"encoder_depth": 3, "decoder_channels": (32, 16, 8), "decoder_interpolation": "bicubic", "decoder_use_norm": False}, "resnet18", AUX),
    ("depth4-nonorm", "linknet", {"encoder_depth": 4, "decoder_use_norm": False}, "mit_b0", None),
    ("depth4-cat", "fpn", {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "encoder_depth": 4, "upsampling": 2}, "resnet18", AUX),
    # Depth 3: the finest pyramid level is the input itself and the output 4x the input (as SMP).
    ("depth3", "fpn", {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32, "encoder_depth": 3}, "resnet18", None),
    ("depth5-nonorm", "pspnet", {"encoder_depth": 5, "psp_out_channels": 16, "upsampling": 32, "decoder_use_norm": False}, "mit_b0", AUX),
]
#: With the aux head both outputs are compared, so for mit_b0 that case covers the mask path too.
ENCODER_AUX = [("resnet18", None), ("resnet18", AUX), ("mit_b0", AUX)]
PARITY_CASES = [
    pytest.param(arch, kwargs, encoder, aux, id=f"{arch}-{encoder}-{'aux' if aux else 'mask'}")
    for arch, kwargs in PARITY_BASE.items()
    for encoder, aux in ENCODER_AUX
] + [
    pytest.param(arch, kwargs, encoder, aux, id=f"{arch}-{encoder}-{name}") for name, arch, kwargs, encoder, aux in PARITY_VARIANTS
]
#: Architectures whose SMP 0.6 constructor refuses ``mit_b*`` by name although its decoder handles them.
SMP_REFUSES_MIT_BY_NAME = {"unetplusplus", "linknet"}
SMP_CLASS = {"unetplusplus": "UnetPlusPlus", "manet": "MAnet", "linknet": "Linknet", "fpn": "FPN", "pspnet": "PSPNet"}


def encoder_available(name: str) -> bool:
    if name.startswith("tu-"):
        try:
            from segexport.arch.encoders import timm_universal  # noqa: F401
        except ImportError:
            return False
        return True
    return name in ENCODERS


@pytest.mark.smp
@pytest.mark.parametrize(("arch", "kwargs", "encoder", "aux"), PARITY_CASES)
def test_smp_state_dict_loads_strictly_and_gives_smp_outputs(arch, kwargs, encoder, aux, monkeypatch):
    smp = pytest.importorskip("segmentation_models_pytorch")
    if not encoder_available(encoder):
        pytest.skip(f"encoder {encoder} is not available yet")
    smp_encoder = encoder
    if encoder.startswith("mit_b") and arch in SMP_REFUSES_MIT_BY_NAME:
        # The same network under a name SMP's check does not catch.
        smp_encoder = f"alias-{encoder}"
        monkeypatch.setitem(smp.encoders.encoders, smp_encoder, smp.encoders.encoders[encoder])
    torch.manual_seed(0)
    reference = getattr(smp, SMP_CLASS[arch])(smp_encoder, encoder_weights=None, classes=2, aux_params=aux, **kwargs).eval()
    ours = build(arch, encoder, classes=2, aux_params=aux, **kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected) == (2 if aux else 1)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


# --- export ------------------------------------------------------------------------------------


@pytest.mark.onnx
def test_pspnet_exported_graph_pools_right_at_other_sizes(holed):
    """Pyramid bins 3 and 6 do not divide most sizes: the graph must derive windows from its input."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    # A tiny encoder keeps the export fast; the pyramid is what is under test.
    model = build("pspnet", holed([3, 8, 8, 16]), psp_out_channels=8, classes=2).eval()
    dim = torch.export.Dim.DYNAMIC
    with export_mode(), torch.no_grad():
        program = torch.onnx.export(
            model, (torch.randn(2, 3, 64, 64),), dynamo=True, dynamic_shapes=({0: dim, 2: dim, 3: dim},), verbose=False
        )
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    # Stride-8 features of 8x8 and 12x17: bins 3 and 6 divide neither 8 nor 17, so windows overlap.
    for shape in [(1, 3, 64, 64), (2, 3, 96, 136)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {name: x.numpy()})
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
