"""PAN, DeepLabV3, DeepLabV3+, UPerNet, Segformer and DPT: argument errors, SMP parity, UPerNet's pooled export.

What every architecture shares (registry, export matrix) is tested centrally; this
file holds what is specific to these six.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from segexport.arch.base import export_mode
from segexport.arch.deeplabv3 import DeepLabV3, DeepLabV3Plus
from segexport.arch.dpt import DPT
from segexport.arch.pan import PAN
from segexport.arch.segformer import Segformer
from segexport.arch.upernet import UPerNet
from segexport.errors import InvalidInputError

ARCHS = {
    "pan": PAN,
    "deeplabv3": DeepLabV3,
    "deeplabv3plus": DeepLabV3Plus,
    "upernet": UPerNet,
    "segformer": Segformer,
    "dpt": DPT,
}

#: A ViT small enough for tests: vit_tiny at 64x64 (4x4 patches).
VIT = {"encoder_name": "tu-vit_tiny_patch16_224", "img_size": 64}
TINY_DPT = {"decoder_intermediate_channels": (8, 16, 16, 16), "decoder_fusion_channels": 8}
OMIT = object()  # a case's value that drops the key from the defaults above


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("pan", {"encoder_output_stride": 8}, r"encoder_output_stride 8 .*allowed: 16, 32"),
        ("pan", {"encoder_depth": 2}, r"encoder_depth 2 .*PAN; allowed: 3, 4, 5"),
        ("pan", {"decoder_interpolation": "bilinaer"}, r"'bilinaer'.*Did you mean 'bilinear'"),
        ("pan", {"decoder_channels": 0}, r"decoder_channels must be an integer >= 1; got 0"),
        ("deeplabv3", {"encoder_output_stride": 32}, r"encoder_output_stride 32 .*DeepLabV3; allowed: 8, 16"),
        ("deeplabv3", {"decoder_atrous_rates": (6, 12)}, r"\(6, 12\) must be three integers"),
        ("deeplabv3", {"decoder_atrous_rates": 12}, r"\(12,\) must be three integers"),
        ("deeplabv3", {"decoder_aspp_dropout": 1.5}, r"decoder_aspp_dropout 1.5 must be a probability"),
        ("deeplabv3", {"encoder_depth": 6}, r"encoder_depth 6 .*allowed: 1, 2, 3, 4, 5"),
        ("deeplabv3plus", {"encoder_output_stride": 4}, r"encoder_output_stride 4 .*allowed: 8, 16"),
        ("deeplabv3plus", {"encoder_depth": 2}, r"encoder_depth 2 .*DeepLabV3Plus; allowed: 3, 4, 5"),
        ("deeplabv3plus", {"decoder_channels": 2.5}, r"decoder_channels must be an integer >= 1; got 2.5"),
        ("upernet", {"encoder_depth": 2}, r"encoder_depth 2 .*UPerNet; allowed: 3, 4, 5"),
        ("upernet", {"decoder_use_norm": "batchnrom"}, r"'batchnrom'.*Did you mean 'batchnorm'"),
        ("upernet", {"decoder_channels": -1}, r"decoder_channels must be an integer >= 1; got -1"),
        ("segformer", {"encoder_depth": 1}, r"encoder_depth 1 .*Segformer; allowed: 3, 4, 5"),
        ("segformer", {"decoder_segmentation_channels": "256"}, r"decoder_segmentation_channels .* got '256'"),
        ("segformer", {"classes": 0}, r"classes must be an integer >= 1; got 0"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(arch, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        ARCHS[arch](encoder_name="resnet18", encoder_weights=None, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decoder_readout": "concat"}, r"Unknown decoder_readout 'concat'; allowed: cat, add, ignore"),
        ({"decoder_intermediate_channels": (8, 8)}, r"\(8, 8\) has 2 entries but DPT with encoder_depth=4 needs exactly 4"),
        ({"decoder_fusion_channels": 0}, r"decoder_fusion_channels must be an integer >= 1; got 0"),
        ({"encoder_depth": 0}, r"encoder_depth 0 is out of range for DPT"),
        ({"encoder_depth": 13, **TINY_DPT, "decoder_intermediate_channels": (8,) * 13}, r"exceeds the 12 blocks"),
        ({"encoder_name": "resnet18", "img_size": OMIT}, r"DPT needs a ViT-style encoder.*'resnet18' is a ResNetEncoder"),
        # with ViT keywords (img_size) that the CNN refuses, the message still names the real problem
        ({"encoder_name": "resnet18"}, r"DPT needs a ViT-style encoder.*'resnet18' is a ResNetEncoder"),
        ({"patch_size": 14, "img_size": 56}, r"power-of-two stride .*strides \[14, 14, 14, 14\]"),
    ],
)
def test_dpt_bad_arguments_name_the_value_and_what_is_allowed(kwargs, message):
    args = {k: v for k, v in {**VIT, **TINY_DPT, **kwargs}.items() if v is not OMIT}
    with pytest.raises(InvalidInputError, match=message):
        DPT(encoder_weights=None, **args)


def test_dpt_input_must_fit_the_vit_and_the_deepest_fused_level():
    fixed = DPT(encoder_weights=None, **VIT, **TINY_DPT)
    with pytest.raises(InvalidInputError, match=r"96x96 does not fit .* built for 64x64 only"):
        fixed.check_input_shape(torch.empty(1, 3, 96, 96, device="meta"))
    dynamic = DPT("tu-vit_tiny_patch16_224", encoder_weights=None, dynamic_img_size=True, **TINY_DPT)
    # Patches are 16 pixels, but the fourth feature is reassembled at stride 32.
    assert dynamic.required_stride == 32
    dynamic.check_input_shape(torch.empty(1, 3, 96, 96, device="meta"))
    with pytest.raises(InvalidInputError, match=r"80x80 is not divisible by 32"):
        dynamic.check_input_shape(torch.empty(1, 3, 80, 80, device="meta"))


def test_dpt_without_prefix_tokens_warns_unless_readout_is_ignore():
    no_cls = {**VIT, **TINY_DPT, "class_token": False, "global_pool": "avg"}
    with pytest.warns(UserWarning, match="decoder_readout='ignore' is recommended"):
        DPT(encoder_weights=None, decoder_readout="cat", **no_cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DPT(encoder_weights=None, decoder_readout="ignore", **no_cls)


@pytest.mark.parametrize("arch", ["pan", "deeplabv3", "deeplabv3plus"])
def test_dilated_architectures_refuse_encoders_that_cannot_dilate(arch):
    # mit_b0 declares no dilation support; the error comes from that capability, not from its name.
    with pytest.raises(InvalidInputError, match=r"cannot reach output stride (8|16)"):
        ARCHS[arch](encoder_name="mit_b0", encoder_weights=None)


def test_pan_rejects_inputs_too_small_for_its_pyramid():
    model = PAN("resnet18", encoder_weights=None, decoder_channels=8)
    model.check_input_shape(torch.empty(1, 3, 128, 128, device="meta"))
    with pytest.raises(InvalidInputError, match=r"64x64 is too small for PAN .* at least 128x128"):
        model.check_input_shape(torch.empty(1, 3, 64, 64, device="meta"))


def test_pan_accepts_smps_deprecated_upscale_mode():
    with pytest.warns(DeprecationWarning, match="decoder_interpolation"):
        model = PAN("resnet18", encoder_weights=None, decoder_channels=8, upscale_mode="nearest")
    assert model.decoder.gau1.interpolation_mode == "nearest"


def test_deeplabv3_loads_checkpoints_with_the_old_sequential_decoder_keys():
    source = DeepLabV3("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=8)
    renamed = {"decoder.aspp.": "decoder.0.", "decoder.conv.": "decoder.1.", "decoder.bn.": "decoder.2."}
    old = {}
    for key, value in source.state_dict().items():
        for new, legacy in renamed.items():
            if key.startswith(new):
                key = legacy + key[len(new) :]
        old[key] = value
    assert any(k.startswith("decoder.0.") for k in old)
    target = DeepLabV3("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=8)
    target.load_state_dict(old, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_segformer_skips_levels_the_encoder_does_not_produce():
    cnn = Segformer("resnet18", encoder_weights=None, decoder_segmentation_channels=8)
    transformer = Segformer("mit_b0", encoder_weights=None, decoder_segmentation_channels=8)
    assert len(cnn.decoder.mlp_stage) == 5  # strides 32 .. 2
    assert len(transformer.decoder.mlp_stage) == 4  # strides 32 .. 4: the 0-channel stride-2 level is left out


# --- SMP parity -----------------------------------------------------------------------------------

SMP_NAMES = {
    "pan": "PAN",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "upernet": "UPerNet",
    "segformer": "Segformer",
    "dpt": "DPT",
}

AUX = {"classes": 3, "dropout": 0.2}

#: (architecture, encoder, constructor keywords, input size): small, but every branch of each decoder,
#: with the aux head on in each architecture's first case and off in the others.
PARITY_CASES = [
    ("pan", "resnet18", {"decoder_channels": 8, "aux_params": AUX}, 128),
    ("pan", "resnet18", {"decoder_channels": 8, "encoder_depth": 3, "decoder_interpolation": "nearest"}, 64),
    ("pan", "mit_b0", {"decoder_channels": 8, "encoder_output_stride": 32, "encoder_depth": 3}, 64),
    ("deeplabv3", "resnet18", {"decoder_channels": 16, "aux_params": AUX}, 64),
    ("deeplabv3", "resnet18", {"decoder_channels": 16, "encoder_output_stride": 16, "encoder_depth": 3}, 64),
    ("deeplabv3plus", "resnet18", {"decoder_channels": 16, "aux_params": AUX}, 64),
    ("deeplabv3plus", "resnet18", {"decoder_channels": 16, "encoder_output_stride": 8, "decoder_aspp_separable": False}, 64),
    ("upernet", "resnet18", {"decoder_channels": 16, "aux_params": AUX}, 64),
    ("upernet", "resnet18", {"decoder_channels": 16, "encoder_depth": 3, "decoder_use_norm": False}, 96),
    ("upernet", "mit_b0", {"decoder_channels": 16}, 64),
    ("segformer", "resnet18", {"decoder_segmentation_channels": 16, "aux_params": AUX}, 64),
    ("segformer", "mit_b0", {"decoder_segmentation_channels": 16}, 64),
    ("dpt", "tu-vit_tiny_patch16_224", {"img_size": 64, **TINY_DPT, "aux_params": AUX}, 64),
    ("dpt", "tu-vit_tiny_patch16_224", {"img_size": 64, **TINY_DPT, "decoder_readout": "add"}, 64),
    (
        "dpt",
        "tu-vit_tiny_patch16_224",
        {"img_size": 64, "encoder_depth": 2, "encoder_output_indices": [3, 7], "decoder_intermediate_channels": (8, 8),
         "decoder_fusion_channels": 8, "class_token": False, "global_pool": "avg", "decoder_readout": "ignore"},
        64,
    ),
]


def _randomize_norm_statistics(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and biases, so that parity covers them."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.add_(torch.randn(param.shape, generator=g) * 0.05)


def _assert_smp_parity(ours_cls, smp_cls, size: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
    reference = smp_cls(encoder_weights=None, **kwargs).eval()
    _randomize_norm_statistics(reference)
    ours = ours_cls(encoder_weights=None, **kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert float((a - e).abs().max()) <= 1e-5


@pytest.mark.smp
@pytest.mark.parametrize(
    ("arch", "encoder", "kwargs", "size"),
    PARITY_CASES,
    ids=[f"{a}-{e}-{i}{'-aux' if 'aux_params' in k else ''}" for i, (a, e, k, _) in enumerate(PARITY_CASES)],
)
def test_smp_checkpoint_loads_strictly_and_gives_the_same_outputs(arch, encoder, kwargs, size):
    smp = pytest.importorskip("segmentation_models_pytorch")
    _assert_smp_parity(ARCHS[arch], getattr(smp, SMP_NAMES[arch]), size, encoder_name=encoder, **kwargs)


# --- export ---------------------------------------------------------------------------------------


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path) -> None:  # type: ignore[no-untyped-def]
    dim = torch.export.Dim.DYNAMIC
    with export_mode(), torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, dynamic_shapes=({0: dim, 2: dim, 3: dim},), optimize=True
        )
    program.save(str(path))


@pytest.mark.onnx
def test_upernet_pyramid_pooling_exports_for_every_input_size(tmp_path):
    """The PSP windows depend on the feature size; the graph must recompute them, not bake the example's."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = UPerNet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=8, aux_params={"classes": 2})
    model.eval()
    _export_onnx(model, torch.randn(2, 3, 64, 64), tmp_path / "upernet.onnx")
    session = ort.InferenceSession(str(tmp_path / "upernet.onnx"), providers=["CPUExecutionProvider"])
    # Deepest features 8x8 (the example) and 9x13: windows of 6x6 pooling that overlap unevenly.
    for shape in [(2, 3, 64, 64), (1, 3, 72, 104)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for a, e in zip(actual, expected):
            assert a.shape == tuple(e.shape)
            np.testing.assert_allclose(a, e.numpy(), atol=1e-4, rtol=0)
