"""DenseNet, Inception-ResNet-v2, Inception-v4 and Xception encoders, beyond the shared SMP test.

``test_smp_native_encoders.py`` checks every member at full depth against SMP 0.6;
this module checks one member per family for what that test does not: shallower
depths, the refused output strides, ``in_channels != 3``, the pretrained settings
(SMP 0.6 names only hub repos, whose config.json holds the normalization), a whole
SMP ``Unet`` checkpoint, TorchScript, and ONNX export parity.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from cases import tiny_kwargs
from cases import randomize_batchnorm as _randomize_batchnorm

import segexport
from segexport.arch.deeplabv3 import DeepLabV3
from segexport.arch.encoders import get_encoder, get_pretrained_settings, list_encoders
from segexport.arch.encoders.densenet import densenet_encoders
from segexport.arch.encoders.inceptionresnetv2 import inceptionresnetv2_encoders
from segexport.arch.encoders.inceptionv4 import inceptionv4_encoders
from segexport.arch.encoders.xception import xception_encoders
from segexport.arch.unet import Unet
from segexport.errors import InvalidInputError

#: The smallest member of each family.
SMALL = ["densenet121", "xception", "inceptionv4", "inceptionresnetv2"]
SIZE = 64
RTOL_OF_RMS = 1e-5
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inputs scaled to [-1, 1]


def _smp():  # type: ignore[no-untyped-def]
    return pytest.importorskip("segmentation_models_pytorch")




def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    rms = want.pow(2).mean().sqrt().item()
    assert (got - want).abs().max().item() <= RTOL_OF_RMS * max(rms, 1.0)


@pytest.mark.parametrize(
    "family, names",
    [
        (densenet_encoders, ["densenet121", "densenet169", "densenet201", "densenet161"]),
        (inceptionresnetv2_encoders, ["inceptionresnetv2"]),
        (inceptionv4_encoders, ["inceptionv4"]),
        (xception_encoders, ["xception"]),
    ],
    ids=["densenet", "inceptionresnetv2", "inceptionv4", "xception"],
)
def test_every_family_member_is_registered(family, names):
    assert sorted(family) == sorted(names)
    assert set(names) <= set(list_encoders())


@pytest.mark.smp
@pytest.mark.parametrize(
    "name, weights, hub_name, normalization",
    [
        *((f"densenet{n}", "imagenet", "imagenet", IMAGENET) for n in (121, 169, 201, 161)),
        *((name, "imagenet", "imagenet", INCEPTION) for name in ("inceptionresnetv2", "inceptionv4", "xception")),
        ("inceptionresnetv2", "imagenet+background", "imagenet-background", INCEPTION),
        ("inceptionv4", "imagenet+background", "imagenet-background", INCEPTION),
    ],
)
def test_pretrained_settings_name_smps_hub_repo_and_the_weights_normalization(name, weights, hub_name, normalization):
    """Repo and revision as SMP 0.6 pins them; mean/std of the original weights (torchvision's, or Inception's 0.5)."""
    smp_encoders = _smp().encoders.encoders
    settings = get_pretrained_settings(name, weights)
    theirs = smp_encoders[name]["pretrained_settings"][weights]
    assert settings.repo_id == theirs["repo_id"] == f"smp-hub/{name}.{hub_name}"
    assert settings.revision == theirs["revision"]
    assert (settings.mean, settings.std) == normalization
    assert settings.input_range == (0.0, 1.0) and settings.input_space == "RGB"


#: Depths below 5 to check per family: every one where a build is cheap; the shallowest and the
#: deepest cut for the two Inception nets (several seconds of CPU to build each).
SHALLOW = {"densenet121": (1, 2, 3, 4), "xception": (1, 2, 3, 4), "inceptionv4": (1, 4), "inceptionresnetv2": (1, 4)}


@pytest.mark.smp
@pytest.mark.parametrize("name", SMALL)
def test_shallower_depths_give_smps_first_features(name):
    """Depth d returns SMP's first d + 1 features (full depth is the shared test's)."""
    smp = _smp()
    reference = smp.encoders.get_encoder(name, weights=None).eval()
    _randomize_batchnorm(reference)
    # 56 is odd at stride 8 (7): the next level is ceil(7 / 2) after Inception/Xception's padded
    # pools and floor(7 / 2) after DenseNet's average pools, as SMP has them.
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        expected = reference(x)
    for depth in SHALLOW[name]:
        ours = get_encoder(name, depth=depth).eval()
        ours.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            features = ours(x)
        assert len(features) == depth + 1, depth
        assert [f.shape[1] for f in features] == ours.out_channels == list(reference.out_channels[: depth + 1])
        assert [f.shape for f in features] == [f.shape for f in expected[: depth + 1]]
        assert ours.depth == depth and ours.output_stride == 2**depth
        for got, want in zip(features, expected, strict=False):
            _assert_close(got, want)


@pytest.mark.torchscript
@pytest.mark.parametrize(
    "name",
    [
        "xception",  # the quickest of the four to compile runs by default
        *(pytest.param(name, marks=pytest.mark.slow) for name in ("densenet121", "inceptionv4", "inceptionresnetv2")),
    ],
)
def test_encoder_compiles_with_torchscript_as_smp_declares(name):
    """SMP declares these encoders scriptable; scripted, they give the eager features at a shallow depth too."""
    encoder = get_encoder(name, depth=3).eval()
    assert encoder._is_torch_scriptable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.10+
        scripted = torch.jit.script(encoder)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(scripted(x), encoder(x), strict=True))


@pytest.mark.smp
@pytest.mark.parametrize(
    "name, output_stride",
    [("densenet121", 16), ("densenet121", 8), ("xception", 16), ("inceptionv4", 16), ("inceptionresnetv2", 8)],
)
def test_dilation_is_refused_as_in_smp(name, output_stride):
    """These four families downsample with pools, which dilation cannot replace; SMP refuses too."""
    with pytest.raises(ValueError, match="not support dilated mode"):
        _smp().encoders.get_encoder(name, weights=None, output_stride=output_stride)
    with pytest.raises(InvalidInputError, match=f"cannot reach output stride {output_stride}; allowed: 32"):
        get_encoder(name, output_stride=output_stride)


def test_deeplabv3_refuses_densenet_at_its_default_output_stride():
    with pytest.raises(InvalidInputError, match="DenseNetEncoder cannot reach output stride 8"):
        DeepLabV3("densenet121", encoder_weights=None)


@pytest.mark.smp
@pytest.mark.parametrize(
    "name, in_channels",
    # in_channels != 3 in every case: the first conv SMP patches must be ours too, or the strict load fails.
    [("densenet121", 4), ("xception", 1), ("inceptionv4", 4), ("inceptionresnetv2", 1)],
)
def test_smp_unet_checkpoint_loads_strictly_and_gives_same_mask(name, in_channels):
    smp = _smp()
    kwargs = {"encoder_weights": None, "in_channels": in_channels, "classes": 2, **tiny_kwargs("unet")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = smp.Unet(name, **kwargs).eval()
    _randomize_batchnorm(reference)
    ours = Unet(name, **kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert ours.encoder.out_channels == list(reference.encoder.out_channels)
    assert ours.encoder.out_channels[0] == in_channels
    x = torch.randn(1, in_channels, SIZE, SIZE)
    with torch.no_grad():
        _assert_close(ours(x), reference(x))


def test_one_channel_input_sums_the_pretrained_first_conv(tmp_path):
    """With weights, a 1-channel encoder sees a gray image as the 3-channel one sees it replicated."""
    rgb = get_encoder("densenet121").eval()
    _randomize_batchnorm(rgb)
    path = tmp_path / "weights.pth"
    torch.save(rgb.state_dict(), path)
    gray = get_encoder("densenet121", in_channels=1, weights=str(path)).eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        for got, want in zip(gray(x)[1:], rgb(x.expand(-1, 3, -1, -1))[1:], strict=True):
            _assert_close(got, want)
    assert gray.in_channels == 1 and gray.out_channels[0] == 1


@pytest.mark.parametrize(
    "name, classifier",
    [
        ("densenet121", {"classifier.weight": (1000, 1024), "classifier.bias": (1000,)}),
        ("xception", {"fc.weight": (1000, 2048), "fc.bias": (1000,)}),
        ("inceptionv4", {"last_linear.weight": (1001, 1536), "last_linear.bias": (1001,)}),
    ],
)
def test_local_imagenet_checkpoint_loads_ignoring_its_classifier(name, classifier, tmp_path):
    """An ImageNet checkpoint of the encoder, classifier included, loads into the encoder."""
    from safetensors.torch import save_file

    source = get_encoder(name).eval()
    _randomize_batchnorm(source, seed=1)
    state_dict = {k: v.contiguous() for k, v in source.state_dict().items()}
    state_dict.update({key: torch.zeros(shape) for key, shape in classifier.items()})
    path = tmp_path / "encoder.safetensors"
    save_file(state_dict, str(path))
    loaded = get_encoder(name, weights=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x), source(x), strict=True))


#: 30-210 MB graphs: 30-45 s of CPU each to export and check (minutes on a shared 2-core runner).
_ONNX_SLOW = pytest.mark.slow


@pytest.mark.onnx
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("xception", marks=_ONNX_SLOW),  # slow: tests/test_export_native_encoders.py runs this family's ONNX parity by default
        pytest.param("densenet121", marks=_ONNX_SLOW),
        pytest.param("inceptionv4", marks=_ONNX_SLOW),
        pytest.param("inceptionresnetv2", marks=_ONNX_SLOW),
    ],
)
def test_unet_exports_to_onnx_with_parity(name, tmp_path):
    bundle = segexport.build(
        "unet", name, target="onnx", height=SIZE, width=SIZE, arch_args=tiny_kwargs("unet"), out=tmp_path / "bundle"
    )
    parity = bundle.manifest.parity
    assert parity.passed
    assert bundle.manifest.normalization["mean"] == list(get_pretrained_settings(name).mean)  # 0.5 for xception
