"""DPN and VGG encoders beyond the shared SMP feature check: depths, output stride, in_channels, whole models, ONNX.

``test_smp_native_encoders.py`` compares every member's depth-5 features with SMP's;
this module checks, on the smallest member of each family (dpn68, vgg11), what that
test does not: other depths, dilation (DPN) and its refusal (VGG), in_channels != 3
the way SMP patches the first conv, SMP's pretrained settings, Unet against smp.Unet
with the same state_dict, and an ONNX bundle that passes parity.
"""

from __future__ import annotations

import copy

import pytest
import torch
from cases import randomize_batchnorm as _randomize_batchnorm
from cases import tiny_kwargs
from segexport.arch.encoders import get_encoder, get_pretrained_settings
from segexport.arch.encoders.dpn import DPN_MEAN, DPN_STD, dpn_encoders
from segexport.arch.encoders.vgg import vgg_encoders
from segexport.arch.encoders.weights import IMAGENET_MEAN, IMAGENET_STD
from segexport.arch.unet import Unet
from torch import nn

import segexport
from segexport.errors import InvalidInputError

SMALL = ["dpn68", "vgg11"]
#: Encoder-only checks run at 32x32 (the stride-32 feature is 1x1): DPN's grouped convs are slow on CPU.
SIZE = 32
#: Whole models run at the size the other model tests use.
MODEL_SIZE = 64
RTOL_OF_RMS = 1e-5




def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        rms = w.pow(2).mean().sqrt().item()
        assert (g - w).abs().max().item() <= RTOL_OF_RMS * max(rms, 1.0)


def _smp():  # type: ignore[no-untyped-def]
    return pytest.importorskip("segmentation_models_pytorch")


# --- pretrained settings ---------------------------------------------------------------------------------------

#: SMP 0.6's weight names; DPN keeps the MXNet models' normalization (mean 124,117,104 of 255; scale 0.0167).
WEIGHTS = {"dpn68": "imagenet", "dpn68b": "imagenet+5k", "dpn92": "imagenet+5k", "dpn98": "imagenet",
           "dpn107": "imagenet+5k", "dpn131": "imagenet"} | {name: "imagenet" for name in vgg_encoders}  # fmt: skip


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_pretrained_settings_name_smp_hub_repo_and_normalization(name):
    weights = WEIGHTS[name]
    entry = (dpn_encoders | vgg_encoders)[name]
    assert list(entry.pretrained) == [weights]
    settings = get_pretrained_settings(name, weights)
    assert settings.repo_id == f"smp-hub/{name}.{weights.replace('+', '-')}"
    assert settings.revision is not None and len(settings.revision) == 40
    expected = (DPN_MEAN, DPN_STD) if name.startswith("dpn") else (IMAGENET_MEAN, IMAGENET_STD)
    assert (settings.mean, settings.std) == expected
    assert settings.input_space == "RGB" and settings.input_range == (0.0, 1.0)


def test_dpn_normalization_is_the_mxnet_one():
    assert [round(m * 255) for m in DPN_MEAN] == [124, 117, 104]
    assert DPN_STD[0] * 255 * 0.0167 == pytest.approx(1.0)


# --- depth ---------------------------------------------------------------------------------------------------

# Depth 5 is compared with SMP in test_smp_native_encoders.py; 1 (stem only) and 4 (the last stage
# before the final BN-ReLU) bound the loop in between.
@pytest.mark.parametrize("depth", [1, 4])
@pytest.mark.parametrize("name", SMALL)
def test_shallower_encoder_returns_the_first_features_of_the_full_one(name, depth):
    """Same state_dict at every depth (SMP keeps all layers), features a prefix of depth 5's."""
    full = get_encoder(name).eval()
    _randomize_batchnorm(full)
    shallow = get_encoder(name, depth=depth).eval()
    shallow.load_state_dict(full.state_dict(), strict=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        features, expected = shallow(x), full(x)[: depth + 1]
    assert len(features) == depth + 1 == len(shallow.out_channels)
    assert shallow.out_channels == full.out_channels[: depth + 1]
    assert [f.shape[1] for f in features] == shallow.out_channels
    assert [f.shape[-1] for f in features] == [SIZE // 2**i for i in range(depth + 1)]
    assert shallow.output_stride == 2**depth
    _assert_close(features, expected)


@pytest.mark.parametrize(
    ("name", "first_channels"),
    # SMP's VGG does not return the input: its first feature is the full-resolution 64-channel activation.
    [("dpn68", 3), ("vgg11", 64)],
)
def test_first_feature_is_what_smp_returns(name, first_channels):
    encoder = get_encoder(name, depth=1).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        first = encoder(x)[0]
    assert first.shape == (1, first_channels, SIZE, SIZE)
    assert torch.equal(first, x) == (first_channels == 3)


# --- output stride -------------------------------------------------------------------------------------------

@pytest.mark.smp
@pytest.mark.parametrize("output_stride", [16, 8])
def test_dpn_output_stride_matches_smp(output_stride):
    smp = _smp()
    reference = smp.encoders.get_encoder("dpn68", weights=None, output_stride=output_stride).eval()
    _randomize_batchnorm(reference)
    ours = get_encoder("dpn68", output_stride=output_stride).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        features, expected = ours(x), reference(x)
    assert [SIZE // f.shape[-1] for f in features] == [min(2**i, output_stride) for i in range(6)]
    assert ours.output_stride == output_stride
    _assert_close(features, expected)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("vgg11", {"output_stride": 16}, r"output stride 16; allowed: 32 only \(VGG downsamples with max pooling"),
        ("vgg11", {"output_stride": 8}, r"output stride 8; allowed: 32 only"),
        ("dpn68", {"output_stride": 4}, r"output stride 4; allowed: 8, 16, 32"),
        ("dpn68", {"depth": 6}, r"encoder_depth 6 is out of range for encoder 'dpn68'; allowed: 1\.\.5"),
        ("vgg11", {"depth": 0}, r"encoder_depth 0 is out of range for encoder 'vgg11'; allowed: 1\.\.5"),
    ],
)
def test_unsupported_settings_are_refused(name, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        get_encoder(name, **kwargs)


def test_vgg_refuses_dilation_in_an_architecture_that_needs_it():
    with pytest.raises(InvalidInputError, match="VGG downsamples with max pooling"):
        segexport.create_model("deeplabv3plus", "vgg11", encoder_weights=None, decoder_channels=32)


# --- in_channels ---------------------------------------------------------------------------------------------

@pytest.mark.smp
@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("name", SMALL)
def test_in_channels_with_weights_patch_the_first_conv_as_smp_does(name, in_channels, tmp_path):
    """Reference: our RGB encoder with the weights, patched by SMP's own ``set_in_channels``."""
    smp = _smp()
    rgb = get_encoder(name).eval()
    _randomize_batchnorm(rgb)
    path = tmp_path / "encoder.pth"
    torch.save(rgb.state_dict(), path)
    reference = copy.deepcopy(rgb)
    smp.encoders._base.EncoderMixin.set_in_channels(reference, in_channels, pretrained=True)
    ours = get_encoder(name, in_channels=in_channels, weights=str(path)).eval()
    x = torch.randn(1, in_channels, SIZE, SIZE)
    with torch.no_grad():
        features, expected = ours(x), reference(x)
    assert ours.in_channels == in_channels
    assert ours.out_channels == reference.out_channels == [f.shape[1] for f in features]
    assert ours.out_channels[0] == (in_channels if name.startswith("dpn") else 64)
    _assert_close(features, expected)


@pytest.mark.parametrize("name", SMALL)
def test_in_channels_without_weights_reinitialises_the_first_conv(name):
    encoder = get_encoder(name, in_channels=2).eval()
    first_conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.shape[1] == 2 and first_conv.in_channels == 2
    with torch.no_grad():
        features = encoder(torch.randn(1, 2, SIZE, SIZE))
    assert [f.shape[1] for f in features] == encoder.out_channels


# --- local weights -------------------------------------------------------------------------------------------

#: A classifier key each family's ImageNet checkpoints carry next to the encoder's.
CLASSIFIER = {"vgg11": "classifier.0.weight", "dpn68": "last_linear.weight"}


@pytest.mark.parametrize(
    "name",
    [
        "dpn68",
        "vgg11",
    ],
)
def test_weights_load_from_local_file_ignoring_the_classifier(name, tmp_path):
    source = get_encoder(name).eval()
    _randomize_batchnorm(source, seed=1)
    state_dict = dict(source.state_dict())
    state_dict[CLASSIFIER[name]] = torch.zeros(10, 8)
    path = tmp_path / "encoder.pth"
    torch.save(state_dict, path)
    loaded = get_encoder(name, weights=str(path)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x), source(x), strict=True))


# --- whole models --------------------------------------------------------------------------------------------

@pytest.mark.smp
@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus"])
@pytest.mark.parametrize("name", SMALL)
def test_unets_load_an_smp_state_dict_and_give_the_same_mask(name, arch):
    """SMP adds the U-Nets' center block for ``vgg*`` encoders by name; the default does the same, so they load."""
    smp = _smp()
    kwargs = dict(tiny_kwargs(arch.lower()), encoder_weights=None, classes=3)
    torch.manual_seed(0)
    theirs = getattr(smp, arch)(name, **kwargs).eval()
    _randomize_batchnorm(theirs)
    ours = segexport.create_model(arch.lower(), name, **kwargs).eval()
    assert isinstance(ours.decoder.center, nn.Identity) == (not name.startswith("vgg"))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, MODEL_SIZE, MODEL_SIZE)
    with torch.no_grad():
        _assert_close([ours(x)], [theirs(x)])


@pytest.mark.parametrize("requested", [True, False])
def test_an_explicit_center_block_argument_overrides_the_vgg_rule(requested):
    model = Unet("vgg11", encoder_weights=None, **tiny_kwargs("unet"), decoder_add_center_block=requested)
    assert isinstance(model.decoder.center, nn.Identity) == (not requested)


#: (encoder, depth) exported. dpn68 at depth 3 has every kind of dual-path block (projecting, downsampling,
#: plain) and their ReLU(concat) features; the full depth adds only more of the same blocks and triples the export.
ONNX_CASES = [
    # slow: tests/test_export_native_encoders.py runs this family's ONNX parity by default
    pytest.param("dpn68", 3, id="dpn68-depth3", marks=pytest.mark.slow),
    pytest.param("dpn68", 5, id="dpn68-depth5", marks=pytest.mark.slow),
    pytest.param("vgg11", 5, id="vgg11-depth5", marks=pytest.mark.slow),
]


@pytest.mark.onnx
@pytest.mark.parametrize(("name", "depth"), ONNX_CASES)
def test_onnx_bundle_passes_parity(name, depth, tmp_path):
    """DPN's dual-path tuples and channel splits, VGG's full-resolution first feature, through the ONNX target."""
    arch_args = dict(tiny_kwargs("unet", depth=depth), encoder_depth=depth)
    bundle = segexport.build(
        "unet", name, target="onnx", height=MODEL_SIZE, width=MODEL_SIZE, arch_args=arch_args, classes=2,
        out=tmp_path / "bundle",
    )  # fmt: skip
    assert bundle.manifest.parity.passed
    assert bundle.manifest.normalization["mean"] == pytest.approx(list(get_pretrained_settings(name).mean))
