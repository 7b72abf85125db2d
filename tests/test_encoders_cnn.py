"""Native CNN encoder families: MobileNetV2, EfficientNet (lukemelas port), timm EfficientNet/Lite.

Each family is checked on its smallest member for the encoder contract (features,
channels, strides, in_channels, dilation, local weights) and against SMP 0.6 for
state_dict compatibility and identical outputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from cases import randomize_batchnorm as _randomize_batchnorm
from segexport.arch.encoders import get_encoder, get_pretrained_settings, list_encoders
from segexport.arch.encoders.efficientnet import efficientnet_encoders
from segexport.arch.encoders.mobilenet import mobilenet_encoders
from segexport.arch.encoders.timm_efficientnet import timm_efficientnet_encoders
from segexport.arch.unet import Unet
from torch import nn

#: The smallest member of each family.
SMALL = ["mobilenet_v2", "efficientnet-b0", "timm-efficientnet-b0", "timm-tf_efficientnet_lite0"]
#: A key of the classifier each family's ImageNet checkpoints carry (SMP's hub files keep it).
CLASSIFIER_KEY = {
    "mobilenet_v2": "classifier.1.weight",
    "efficientnet-b0": "_fc.weight",
    "timm-efficientnet-b0": "classifier.weight",
    "timm-tf_efficientnet_lite0": "classifier.weight",
}
SIZE = 64
ATOL = 1e-5




def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _smp():  # type: ignore[no-untyped-def]
    smp = pytest.importorskip("segmentation_models_pytorch")
    warnings.filterwarnings("ignore", message=".*timm-.*deprecated", category=DeprecationWarning)
    return smp


@pytest.mark.parametrize(
    "family, names",
    [
        (mobilenet_encoders, ["mobilenet_v2"]),
        (efficientnet_encoders, [f"efficientnet-b{i}" for i in range(8)]),
        (
            timm_efficientnet_encoders,
            [f"timm-efficientnet-b{i}" for i in range(9)]
            + ["timm-efficientnet-l2"]
            + [f"timm-tf_efficientnet_lite{i}" for i in range(5)],
        ),
    ],
    ids=["mobilenet", "efficientnet", "timm_efficientnet"],
)
def test_every_family_member_is_registered(family, names):
    assert sorted(family) == sorted(names)
    assert set(names) <= set(list_encoders())


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inputs scaled to [-1, 1]


@pytest.mark.parametrize(
    "name, weights, normalization",
    [
        ("mobilenet_v2", "imagenet", IMAGENET),
        ("efficientnet-b3", "imagenet", IMAGENET),
        ("efficientnet-b3", "advprop", INCEPTION),
        ("timm-efficientnet-b5", "imagenet", IMAGENET),
        ("timm-efficientnet-b5", "advprop", INCEPTION),
        ("timm-efficientnet-b5", "noisy-student", IMAGENET),
        ("timm-efficientnet-l2", "noisy-student-475", IMAGENET),
        ("timm-tf_efficientnet_lite2", "imagenet", INCEPTION),
    ],
)
def test_pretrained_settings_name_smp_hub_repo_and_normalization(name, weights, normalization):
    settings = get_pretrained_settings(name, weights)
    assert settings.repo_id == f"smp-hub/{name}.{weights}"
    assert settings.revision is not None and len(settings.revision) == 40
    assert (settings.mean, settings.std) == normalization
    assert settings.input_range == (0.0, 1.0) and settings.input_space == "RGB"


@pytest.mark.parametrize("depth", [1, 3, 4, 5])
@pytest.mark.parametrize("name", SMALL)
def test_forward_returns_depth_plus_one_features_with_declared_channels(name, depth):
    encoder = get_encoder(name, depth=depth).eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, SIZE, SIZE))
    assert len(features) == depth + 1 == len(encoder.out_channels)
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [f.shape[2:] for f in features] == [(SIZE // 2**i, SIZE // 2**i) for i in range(depth + 1)]
    assert encoder.depth == depth and encoder.output_stride == 2**depth


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", SMALL)
def test_output_stride_stops_downsampling(name, output_stride):
    encoder = get_encoder(name, output_stride=output_stride).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, SIZE, SIZE))
    strides = [SIZE // f.shape[-1] for f in features]
    assert strides == [min(2**i, output_stride) for i in range(6)]
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert encoder.output_stride == output_stride


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
        diff = _max_diff(gray(x)[1:], rgb(x.expand(-1, 3, -1, -1))[1:])
    assert gray.in_channels == 1 and gray.out_channels[0] == 1
    assert diff <= 1e-4  # the summed kernel reorders float additions


@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("name", SMALL)
def test_in_channels_changes_first_conv_and_first_feature(name, in_channels):
    encoder = get_encoder(name, in_channels=in_channels).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, in_channels, SIZE, SIZE))
    assert encoder.in_channels == in_channels
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert encoder.out_channels[0] == in_channels


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name", SMALL)
def test_weights_load_from_local_file_ignoring_the_classifier(name, suffix, tmp_path):
    source = get_encoder(name).eval()
    _randomize_batchnorm(source, seed=1)
    state_dict = {k: v.contiguous() for k, v in source.state_dict().items()}
    state_dict[CLASSIFIER_KEY[name]] = torch.zeros(10, 8)  # as in a full ImageNet checkpoint
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, str(path))
    else:
        torch.save(state_dict, path)
    loaded = get_encoder(name, weights=str(path)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert _max_diff(loaded(x), source(x)) == 0.0


@pytest.mark.parametrize("name", ["efficientnet-b0", "timm-efficientnet-b0"])
def test_stochastic_depth_only_in_training(name):
    encoder = get_encoder(name)
    encoder.train()
    for m in encoder.modules():  # keep BN deterministic so only drop-connect differs
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        first = encoder(x)[-1]
        torch.manual_seed(1)
        second = encoder(x)[-1]
        encoder.eval()
        assert not torch.equal(first, second)
        assert torch.equal(encoder(x)[-1], encoder(x)[-1])


@pytest.mark.smp
@pytest.mark.parametrize(
    "name, output_stride",
    # Dilation replaces EfficientNet's fixed TF-"same" pads: checked on that family.
    [*((name, 32) for name in SMALL), ("efficientnet-b0", 16), ("timm-efficientnet-b0", 8)],
)
def test_smp_encoder_weights_load_strictly_and_give_same_features(name, output_stride):
    smp = _smp()
    reference = smp.encoders.get_encoder(name, weights=None, output_stride=output_stride).eval()
    _randomize_batchnorm(reference)
    ours = get_encoder(name, output_stride=output_stride).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    # 66 is not a multiple of 32: the TF-"same" padding and floor/ceil behaviour must match too.
    for size in (SIZE, 66):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected, actual = reference(x), ours(x)
        assert [f.shape for f in actual] == [f.shape for f in expected]
        assert _max_diff(actual, expected) <= ATOL
    assert ours.out_channels == list(reference.out_channels)


@pytest.mark.smp
@pytest.mark.parametrize("name", SMALL)
def test_smp_unet_checkpoint_loads_and_gives_same_output(name):
    smp = _smp()
    reference = smp.Unet(name, encoder_weights=None, decoder_channels=(32, 16, 16, 8, 8), classes=2).eval()
    _randomize_batchnorm(reference)
    ours = Unet(name, encoder_weights=None, decoder_channels=(32, 16, 16, 8, 8), classes=2).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= ATOL
