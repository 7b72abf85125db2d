"""SENet / SE-ResNet(X) and timm SK-ResNet(X) encoders: the contract, dilation, in_channels, SMP parity, ONNX.

What ``test_smp_native_encoders.py`` already checks (every member at its defaults against
SMP) is not repeated: here are depths, output strides, other input channels, local
weights, whole SMP models, ONNX export, and SENet-154's layout at one block per stage
(the full network is a slow member there).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from cases import tiny_kwargs
from cases import randomize_batchnorm as _randomize_batchnorm

import segexport
from segexport.arch.encoders import get_encoder, get_pretrained_settings, list_encoders
from segexport.arch.encoders.senet import SENetEncoder, senet_encoders
from segexport.arch.encoders.timm_sknet import timm_sknet_encoders
from segexport.errors import InvalidInputError

SENET = ["senet154", "se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d", "se_resnext101_32x4d"]
SKNET = ["timm-skresnet18", "timm-skresnet34", "timm-skresnext50_32x4d"]
#: The cheapest member of each family (SE-ResNeXt-50 is lighter than SE-ResNet-50: grouped 3x3s).
SMALL = ["se_resnext50_32x4d", "timm-skresnet18"]
SIZE = 64
RTOL_OF_RMS = 1e-5
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: SENet-154's stem, bottleneck and 3x3 shortcut projections at one block per stage (4 M weights, not 115 M).
SENET154_ONE_BLOCK = {**senet_encoders["senet154"].params, "layers": [1, 1, 1, 1]}




def _assert_close_to(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Same shapes, and each tensor within 1e-5 of the reference's RMS (1.0 at least)."""
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for got, want in zip(actual, expected, strict=True):
        rms = want.pow(2).mean().sqrt().item()
        assert (got - want).abs().max().item() <= RTOL_OF_RMS * max(rms, 1.0)


def _smp():  # type: ignore[no-untyped-def]
    smp = pytest.importorskip("segmentation_models_pytorch")
    warnings.filterwarnings("ignore", message=".*timm-.*deprecated", category=DeprecationWarning)
    return smp


def test_every_family_member_is_registered():
    assert sorted(senet_encoders) == sorted(SENET)
    assert sorted(timm_sknet_encoders) == sorted(SKNET)
    assert set(SENET + SKNET) <= set(list_encoders())


@pytest.mark.smp
@pytest.mark.parametrize("name", SENET + SKNET)
def test_pretrained_settings_pin_smp_hub_repo_revision_and_imagenet_normalization(name):
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    settings = get_pretrained_settings(name, "imagenet")
    declared = smp_encoders[name]["pretrained_settings"]["imagenet"]
    assert (settings.repo_id, settings.revision) == (declared["repo_id"], declared["revision"])
    assert settings.filename == "model.safetensors"
    # What the hub configs (and the pretrainedmodels / timm weights they were converted from) declare.
    assert (settings.mean, settings.std) == IMAGENET
    assert settings.input_space == "RGB" and settings.input_range == (0.0, 1.0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", SMALL)
def test_forward_returns_depth_plus_one_features_with_declared_channels(name, depth):
    encoder = get_encoder(name, depth=depth).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, SIZE, SIZE))
    assert len(features) == depth + 1 == len(encoder.out_channels)
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [tuple(f.shape[2:]) for f in features] == [(SIZE // 2**i, SIZE // 2**i) for i in range(depth + 1)]
    assert encoder.depth == depth and encoder.output_stride == 2**depth


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", SMALL)
def test_output_stride_stops_downsampling(name, output_stride):
    encoder = get_encoder(name, output_stride=output_stride).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, SIZE, SIZE))
    assert [SIZE // f.shape[-1] for f in features] == [min(2**i, output_stride) for i in range(6)]
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert encoder.output_stride == output_stride


@pytest.mark.torchscript
@pytest.mark.parametrize("name", SMALL)
def test_encoder_compiles_with_torchscript_as_smp_declares(name):
    encoder = get_encoder(name, depth=4).eval()
    assert encoder._is_torch_scriptable
    scripted = torch.jit.script(encoder)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(scripted(x), encoder(x), strict=True))


@pytest.mark.parametrize("output_stride", [4, 2, 64])
@pytest.mark.parametrize("name", SMALL)
def test_output_stride_smp_refuses_is_an_invalid_input(name, output_stride):
    with pytest.raises(InvalidInputError, match=rf"output stride {output_stride}; allowed: 8, 16, 32"):
        get_encoder(name, output_stride=output_stride)


@pytest.mark.parametrize("depth", [0, 6])
def test_depth_outside_one_to_five_is_an_invalid_input(depth):
    with pytest.raises(InvalidInputError, match=rf"encoder_depth {depth} is out of range .* allowed: 1\.\.5"):
        get_encoder("timm-skresnet18", depth=depth)


@pytest.mark.smp
@pytest.mark.parametrize(
    "name, output_stride",
    # SENet-154 dilates its 3x3 shortcut projections too; SK paths lose their own dilation 2 as in SMP.
    [("senet154-one-block", 8), ("senet154-one-block", 32), ("se_resnext50_32x4d", 16), ("timm-skresnet18", 8)],
)
def test_dilated_and_one_block_layouts_match_smp(name, output_stride):
    smp = _smp()
    torch.manual_seed(0)
    if name == "senet154-one-block":
        from segmentation_models_pytorch.encoders.senet import senet_encoders as smp_senet

        params = {**smp_senet["senet154"]["params"], "layers": [1, 1, 1, 1]}
        reference = smp_senet["senet154"]["encoder"](**params)
        ours = SENetEncoder(**SENET154_ONE_BLOCK)
        if output_stride != 32:
            reference.make_dilated(output_stride)
            ours.make_dilated(output_stride)
    else:
        reference = smp.encoders.get_encoder(name, weights=None, output_stride=output_stride)
        ours = get_encoder(name, output_stride=output_stride)
    reference.eval()
    _randomize_batchnorm(reference)
    ours.eval().load_state_dict(reference.state_dict(), strict=True)
    # 66 is not a multiple of 32: the stem's ceil-mode pooling must round as SMP's does.
    for size in (SIZE, 66):
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            _assert_close_to(ours(x), reference(x))


@pytest.mark.smp
# 1 and 4 channels take the same path (a re-initialised first conv); one each keeps the test short.
@pytest.mark.parametrize("name, in_channels", [("se_resnext50_32x4d", 4), ("timm-skresnet18", 1)])
def test_other_input_channels_patch_the_first_conv_as_smp_does(name, in_channels):
    smp = _smp()
    reference = smp.encoders.get_encoder(name, in_channels=in_channels, weights=None).eval()
    _randomize_batchnorm(reference)
    ours = get_encoder(name, in_channels=in_channels).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, in_channels, SIZE, SIZE)
    with torch.no_grad():
        _assert_close_to(ours(x), reference(x))
    assert ours.in_channels == in_channels
    assert ours.out_channels == reference.out_channels and ours.out_channels[0] == in_channels


@pytest.mark.parametrize("name", SMALL)
def test_one_channel_input_sums_pretrained_first_conv(name, tmp_path):
    """With weights, a 1-channel encoder sees a gray image as the 3-channel one sees it replicated."""
    rgb = get_encoder(name).eval()
    _randomize_batchnorm(rgb)
    path = tmp_path / "weights.pth"
    torch.save(rgb.state_dict(), path)
    gray = get_encoder(name, in_channels=1, weights=str(path)).eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        got, want = gray(x)[1:], rgb(x.expand(-1, 3, -1, -1))[1:]
    _assert_close_to(got, want)  # the summed kernel only reorders float additions


def test_weights_load_from_local_safetensors_ignoring_timms_classifier(tmp_path):
    """SK-ResNet files converted from timm may keep ``fc``; SMP drops it, so do we."""
    from safetensors.torch import save_file

    name = "timm-skresnet18"
    source = get_encoder(name).eval()
    _randomize_batchnorm(source, seed=1)
    state_dict = {k: v.contiguous() for k, v in source.state_dict().items()}
    state_dict.update({"fc.weight": torch.zeros(10, source.out_channels[-1]), "fc.bias": torch.zeros(10)})
    path = tmp_path / "encoder.safetensors"
    save_file(state_dict, str(path))
    loaded = get_encoder(name, weights=str(path)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x), source(x), strict=True))


@pytest.mark.smp
@pytest.mark.parametrize("name", SMALL)
def test_smp_unet_checkpoint_loads_strictly_and_gives_same_mask(name):
    smp = _smp()
    kwargs = dict(tiny_kwargs("unet"), encoder_weights=None, classes=2, aux_params={"classes": 3})
    torch.manual_seed(0)
    theirs = smp.Unet(name, **kwargs).eval()
    _randomize_batchnorm(theirs)
    ours = segexport.create_model("unet", name, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        _assert_close_to(list(ours(x)), list(theirs(x)))


@pytest.mark.onnx
@pytest.mark.slow  # slow: tests/test_export_native_encoders.py runs this family's ONNX parity by default
@pytest.mark.parametrize("name", SMALL)
def test_onnx_export_passes_parity_and_records_imagenet_normalization(name, tmp_path):
    # FPN: the lightest decoder that still reads all five features (PSPNet stops at depth 3).
    bundle = segexport.build(
        "fpn", name, target="onnx", height=SIZE, width=SIZE, arch_args=tiny_kwargs("fpn"), out=tmp_path / "bundle"
    )
    assert bundle.manifest.parity.passed
    mean, std = IMAGENET
    assert bundle.manifest.normalization == {
        "mean": list(mean), "std": list(std), "input_space": "RGB", "input_range": [0.0, 1.0]
    }
