"""``import segexport as smp`` works where ``import segmentation_models_pytorch as smp`` did.

The walks go over SMP's public names (top level, ``encoders``, ``losses``, ``metrics``, model
and encoder attributes) and fail on any segexport lacks unless :data:`ABSENT` declares it
intentionally absent, with the reason. The other tests check SMP's behaviours one by one:
exception types, ignored encoder keywords, deprecated keywords, encoder freezing,
preprocessing, module structure, the ``_is_torch_*`` flags, TorchScript and torch.export.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import subprocess
import sys
import types
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from cases import EXPORT_ENCODER, SIZE, tiny_kwargs
from torch import nn

import segexport
from segexport.arch.base import DEPRECATED_KEYWORDS_REMOVAL
from segexport.arch.registry import get_architecture, list_architectures
from segexport.errors import InputShapeError, InvalidInputError

SMP = "segmentation_models_pytorch"
FLAGS = ("_is_torch_scriptable", "_is_torch_exportable", "_is_torch_compilable")

#: SMP public names segexport leaves out on purpose: ``namespace.name`` or ``Class.attribute`` → why.
ABSENT: dict[str, str] = {
    "datasets": "SMP's OxfordPetDataset downloads a dataset; segexport ships models and exporters, no data.",
    "encoders.encoders": "SMP's raw registry of dicts; segexport's is encoders.ENCODERS (typed EncoderEntry "
    "records), listed by get_encoder_names() / list_encoders().",
    "encoders.efficient_net_encoders": "SMP's family dict under another spelling: segexport's is "
    "encoders.efficientnet.efficientnet_encoders.",
    "encoders.is_equivalent_to_timm_universal": "SMP's test for its deprecated timm- names; segexport maps them "
    "in encoders.renamed.renamed_encoder.",
    "base.hub_mixin": "SMP's huggingface_hub mixin; saving and loading live in segexport.pretrained, and models "
    "have save_pretrained, from_pretrained, push_to_hub and config.",
    "base.initialization": "initialize_decoder / initialize_head live in segexport.arch.base.model.",
    "base.utils": "is_torch_compiling: segexport.arch.base.is_exporting covers compile, export and scripting.",
    "EfficientNetEncoder.extract_features": "the classifier path of the original EfficientNet (through its head "
    "conv); the encoder's forward returns the features.",
    "MixVisionTransformerEncoder.freeze_patch_emb": "a no-op in SMP (sets an attribute, freezes nothing); use "
    "encoder.patch_embed1.requires_grad_(False).",
    "MixVisionTransformerEncoder.get_classifier": "SegFormer's classifier API: the encoder has no head (SMP's "
    "returns an attribute that does not exist).",
    "MixVisionTransformerEncoder.reset_classifier": "SegFormer's classifier API: the encoder has no head.",
    "MixVisionTransformerEncoder.num_classes": "SegFormer's classifier API: the encoder has no head.",
    "MixVisionTransformerEncoder.init_weights": "a no-op in SMP; weights are initialised when the encoder is built.",
    "MixVisionTransformerEncoder.no_weight_decay": "names parameters (pos_embed1..4, cls_token) the Mix "
    "Transformer does not have.",
}

#: One small member per encoder family whose module this suite covers.
ENCODER_FAMILIES = {
    "resnet": "resnet18",
    "mobilenet": "mobilenet_v2",
    "efficientnet": "efficientnet-b0",
    "timm_efficientnet": "timm-efficientnet-b0",
    "mix_transformer": "mit_b0",
    "timm_universal": "tu-resnet18",
}


def _smp() -> Any:
    smp = pytest.importorskip(SMP)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return smp


def _smp_public_names(module: types.ModuleType) -> list[str]:
    """Names SMP defines in ``module`` for users: not private, not modules or objects it imported from elsewhere."""
    names = []
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if isinstance(value, types.ModuleType):
            if not value.__name__.startswith(SMP):
                continue
        elif inspect.isclass(value) or inspect.isroutine(value) or isinstance(value, functools.partial):
            if not (getattr(value, "__module__", None) or "").startswith(SMP):
                continue
        elif type(value).__module__ == "typing":  # Optional, List... imported for annotations
            continue
        names.append(name)
    return names


def _has(ours: object, name: str) -> bool:
    if hasattr(ours, name):
        return True
    is_package = isinstance(ours, types.ModuleType) and hasattr(ours, "__path__")
    return is_package and importlib.util.find_spec(f"{ours.__name__}.{name}") is not None


def _public_attributes(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_") or n in FLAGS} - set(dir(nn.Module()))


def _missing(where: str, wanted: set[str], ours: object) -> list[str]:
    return sorted(n for n in wanted if not _has(ours, n) and f"{where}.{n}" not in ABSENT)


# ---------------------------------------------------------------------------------- public names


@pytest.mark.smp
@pytest.mark.parametrize("namespace", ["", "encoders", "losses", "losses._functional", "metrics", "metrics.functional", "base"])
def test_every_smp_public_name_exists_or_is_declared_absent(namespace):
    theirs = importlib.import_module(SMP + (f".{namespace}" if namespace else ""))
    ours: Any = segexport
    for part in filter(None, namespace.split(".")):
        ours = getattr(ours, part, None) or importlib.import_module(f"{ours.__name__}.{part}")
    prefix = f"{namespace}." if namespace else ""
    missing = [n for n in _smp_public_names(theirs) if not _has(ours, n) and f"{prefix}{n}" not in ABSENT]
    assert not missing, f"segexport.{namespace or ''} lacks SMP's {missing}; add them or declare them in ABSENT"


@pytest.mark.smp
@pytest.mark.parametrize("arch", list_architectures())
def test_models_have_smps_attributes_and_flags(arch):
    smp = _smp()
    cls = get_architecture(arch)
    kwargs = dict(tiny_kwargs(arch), encoder_weights=None)
    theirs = getattr(smp, cls.__name__)(EXPORT_ENCODER[arch], **kwargs)
    ours = cls(EXPORT_ENCODER[arch], **kwargs)
    assert _missing(cls.__name__, _public_attributes(theirs), ours) == []
    assert {f: getattr(ours, f) for f in FLAGS} == {f: getattr(theirs, f) for f in FLAGS}


@pytest.mark.smp
@pytest.mark.parametrize("name", list(ENCODER_FAMILIES.values()), ids=list(ENCODER_FAMILIES))
def test_encoders_have_smps_attributes_and_flags(name):
    smp = _smp()
    theirs = smp.encoders.get_encoder(name, weights=None)
    ours = segexport.get_encoder(name)
    assert _missing(type(ours).__name__, _public_attributes(theirs), ours) == []
    assert {f: getattr(ours, f) for f in FLAGS} == {f: getattr(theirs, f) for f in FLAGS}


@pytest.mark.smp
def test_vit_encoder_has_smps_attributes_and_flags():
    smp = _smp()
    from segexport.arch.encoders.timm_vit import create_timm_vit_encoder

    theirs = smp.encoders.TimmViTEncoder(name="vit_tiny_patch16_224", pretrained=False)
    ours = create_timm_vit_encoder("vit_tiny_patch16_224")
    assert _missing("TimmViTEncoder", _public_attributes(theirs), ours) == []
    assert {f: getattr(ours, f) for f in FLAGS} == {f: getattr(theirs, f) for f in FLAGS}


def test_namespaces_are_reachable_after_one_import_and_torch_stays_unimported():
    """``smp.losses`` / ``smp.metrics`` work without ``import segmentation_models_pytorch.losses`` (a fresh process)."""
    code = (
        "import sys, segexport as smp\n"
        "assert 'torch' not in sys.modules\n"
        "assert smp.losses.DiceLoss and smp.metrics.iou_score and smp.metrics.functional.get_stats\n"
        "assert smp.encoders.get_preprocessing_fn and smp.decoders.unet.Unet is smp.Unet\n"
        "assert smp.base.SegmentationModel and smp.from_pretrained and smp.MODEL_ARCHITECTURES_MAPPING['unet'] is smp.Unet\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------- exception types


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: segexport.create_model("unett", encoder_weights=None), "Unknown architecture 'unett'.*Did you mean 'unet'"),
        (lambda: segexport.get_encoder("resnet35"), "Unknown encoder 'resnet35'.*Did you mean 'resnet"),
        (lambda: segexport.get_encoder("resnet18", weights="imagenet21k"), "Unknown encoder_weights for encoder 'resnet18'"),
    ],
    ids=["architecture", "encoder", "encoder-weights"],
)
def test_unknown_names_raise_a_keyerror_as_smp_with_our_message(call, fragment):
    with pytest.raises(KeyError, match=fragment) as caught:
        call()
    assert isinstance(caught.value, InvalidInputError)
    assert not str(caught.value).startswith("'")  # printed as written, not KeyError's repr


@pytest.mark.parametrize(
    ("arch", "kwargs", "size", "fragment"),
    [
        ("fpn", {}, 67, r"67x67 is not divisible by 32"),
        ("pan", {}, 64, r"64x64 is too small for PAN"),
        ("dpt", {"dynamic_img_size": False}, 64, r"64x64 does not fit DPT's encoder, which is built for 224x224"),
    ],
)
def test_input_size_errors_are_runtime_errors_as_in_smp(arch, kwargs, size, fragment):
    model = segexport.create_model(arch, EXPORT_ENCODER[arch], encoder_weights=None, **{**tiny_kwargs(arch), **kwargs})
    with pytest.raises(RuntimeError, match=fragment) as caught:
        model.check_input_shape(torch.empty(1, 3, size, size, device="meta"))
    assert isinstance(caught.value, InputShapeError) and isinstance(caught.value, ValueError)


# ---------------------------------------------------------------------------------- keywords


def test_native_encoders_ignore_extra_keywords_as_smp_but_say_so():
    with pytest.warns(UserWarning, match=r"'resnet18' ignores the keyword arguments encoder_weights.*'tu-'"):
        encoder = segexport.get_encoder("resnet18", encoder_weights="imagenet")
    assert encoder.out_channels == [3, 64, 64, 128, 256, 512]


#: (architecture, SMP's deprecated keyword, value, the keyword it maps to).
DEPRECATED = [
    ("unet", "decoder_use_batchnorm", False, "decoder_use_norm"),
    ("unetplusplus", "decoder_use_batchnorm", False, "decoder_use_norm"),
    ("manet", "decoder_use_batchnorm", False, "decoder_use_norm"),
    ("linknet", "decoder_use_batchnorm", False, "decoder_use_norm"),
    ("pspnet", "psp_use_batchnorm", False, "decoder_use_norm"),
    ("pan", "upscale_mode", "nearest", "decoder_interpolation"),
]


@pytest.mark.parametrize(("arch", "old", "value", "new"), DEPRECATED, ids=[f"{a}-{o}" for a, o, _, _ in DEPRECATED])
def test_deprecated_smp_keywords_warn_and_map_as_in_smp(arch, old, value, new):
    kwargs = dict(tiny_kwargs(arch), encoder_weights=None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*use {new}=.*removed in segexport"):
        model = segexport.create_model(arch, "resnet18", **kwargs, **{old: value})
    renamed = segexport.create_model(arch, "resnet18", **kwargs, **{new: value})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in renamed.state_dict().items()}
    assert model.config[new] == value and old not in model.config  # saved under the current name
    if importlib.util.find_spec(SMP):
        smp = _smp()
        theirs = getattr(smp, type(model).__name__)("resnet18", **kwargs, **{old: value})
        assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}


def test_deprecated_keyword_shims_are_removed_by_their_version():
    from packaging.version import Version

    assert Version(segexport.__version__) < Version(DEPRECATED_KEYWORDS_REMOVAL), (
        "remove SMP's deprecated keywords (SegmentationModel._renamed_keyword and its callers) in this release"
    )


# ---------------------------------------------------------------------------------- encoder freezing


def _batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_encoder_stops_gradients_and_statistics_until_unfrozen():
    model = segexport.Unet("resnet18", encoder_weights=None, **tiny_kwargs("unet")).train()
    model.freeze_encoder()
    model.train()  # must not wake the frozen encoder's norm layers up
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not any(bn.training for bn in _batchnorms(model.encoder))
    assert all(bn.training for bn in _batchnorms(model.decoder))
    before = model.encoder.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    assert torch.equal(model.encoder.bn1.running_mean, before)
    assert all(p.grad is None for p in model.encoder.parameters())
    model.unfreeze_encoder()
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(bn.training for bn in _batchnorms(model.encoder))


# ---------------------------------------------------------------------------------- preprocessing


IMAGENET = {"input_space": "RGB", "input_range": [0, 1], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_preprocessing_params_are_smps_dict_without_network():
    assert segexport.encoders.get_preprocessing_params("resnet18") == IMAGENET
    advprop = segexport.encoders.get_preprocessing_params("efficientnet-b0", pretrained="advprop")
    assert advprop["mean"] == [0.5, 0.5, 0.5] and advprop["std"] == [0.5, 0.5, 0.5]
    assert segexport.encoders.get_encoder_names() == list(segexport.encoders.ENCODERS)
    with pytest.raises(InvalidInputError, match="Unknown pretrained weights for encoder 'resnet18' 'imagenet21k'"):
        segexport.encoders.get_preprocessing_params("resnet18", pretrained="imagenet21k")


@pytest.mark.smp
def test_timm_preprocessing_params_equal_smps():
    smp = _smp()
    for name in ("tu-resnet18", "tu-convnext_atto"):
        assert segexport.encoders.get_preprocessing_params(name) == smp.encoders.get_preprocessing_params(name)


@pytest.mark.smp
@pytest.mark.parametrize("params", [IMAGENET, {**IMAGENET, "input_space": "BGR"}, {"mean": None, "std": None}])
def test_preprocess_input_equals_smps(params):
    smp = _smp()
    image = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3)).astype(np.float64)
    expected = smp.encoders.preprocess_input(image.copy(), **params)
    np.testing.assert_array_equal(segexport.encoders.preprocess_input(image.copy(), **params), expected)
    if params is IMAGENET:
        np.testing.assert_array_equal(segexport.encoders.get_preprocessing_fn("resnet18")(image.copy()), expected)


# ---------------------------------------------------------------------------------- module structure


@pytest.mark.parametrize(("pooling", "layer"), [("avg", nn.AdaptiveAvgPool2d), ("max", nn.AdaptiveMaxPool2d)])
def test_classification_head_pools_with_smps_layer_types(pooling, layer):
    model = segexport.Unet("resnet18", encoder_weights=None, aux_params={"classes": 2, "pooling": pooling})
    pool = model.classification_head[0]
    assert isinstance(pool, layer) and pool.output_size in (1, (1, 1))
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(pool(x), layer(1)(x), atol=0, rtol=0)


def _structure_cases() -> list:
    cases = [pytest.param(arch, EXPORT_ENCODER[arch], id=f"{arch}-{EXPORT_ENCODER[arch]}") for arch in list_architectures()]
    # Encoders without a stride-2 feature: SMP takes mit_b0 in these, and a tu- transformer in Unet++ (empty nodes).
    cases += [pytest.param(arch, "mit_b0", id=f"{arch}-mit_b0") for arch in ("unet", "manet", "fpn", "pspnet", "upernet", "segformer")]
    cases.append(pytest.param("unetplusplus", "tu-convnext_atto", id="unetplusplus-tu-convnext_atto"))
    return cases


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.smp
@pytest.mark.parametrize(("arch", "encoder"), _structure_cases())
def test_decoder_and_head_modules_have_smps_names_classes_and_attributes(arch, encoder):
    """Code that inspects or patches ``model.decoder...`` (by name, class or attribute) sees SMP's tree."""
    smp = _smp()
    kwargs = dict(tiny_kwargs(arch), encoder_weights=None, aux_params={"classes": 2})
    theirs = dict(getattr(smp, get_architecture(arch).__name__)(encoder, **kwargs).named_modules())
    ours = dict(segexport.create_model(arch, encoder, **kwargs).named_modules())
    outside_encoder = sorted(n for n in theirs if n and not n.startswith("encoder"))
    assert sorted(n for n in ours if n and not n.startswith("encoder")) == outside_encoder
    for name in outside_encoder:
        assert type(ours[name]).__name__ == type(theirs[name]).__name__, name
        for attribute, value in vars(theirs[name]).items():
            if attribute.startswith("_") or attribute == "training":
                continue
            assert hasattr(ours[name], attribute), f"{name}.{attribute}"
            if isinstance(value, (int, float, str, bool, tuple, list, type(None))):
                assert _plain(getattr(ours[name], attribute)) == _plain(value), f"{name}.{attribute}"


# ---------------------------------------------------------------------------------- TorchScript and torch.export


def test_non_scriptable_architectures_are_the_ones_smp_declares():
    declared = {arch for arch in list_architectures() if not get_architecture(arch)._is_torch_scriptable}
    assert declared == {"unetplusplus", "dpt"}


def _tiny_model(arch: str) -> segexport.arch.base.SegmentationModel:
    torch.manual_seed(0)
    kwargs = dict(tiny_kwargs(arch), encoder_weights=None, classes=2, aux_params={"classes": 3})
    if arch == "dpt":  # a fixed 64x64 ViT exports faster than a dynamic-size one
        kwargs.update(dynamic_img_size=False, img_size=SIZE[arch])
    return segexport.create_model(arch, EXPORT_ENCODER[arch], **kwargs).eval()


@pytest.mark.parametrize("arch", [a for a in list_architectures() if get_architecture(a)._is_torch_scriptable])
def test_scriptable_architectures_script_and_match_eager(arch):
    model = _tiny_model(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's own deprecation notice
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, SIZE[arch], SIZE[arch])
    with torch.no_grad():
        expected, got = model(x), scripted(x)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-6


@pytest.mark.parametrize("arch", list_architectures())
def test_torch_export_matches_eager_within_1e_5(arch):
    """The user's own torch.export (no segexport export mode) records the eager computation."""
    model = _tiny_model(arch)
    x = torch.randn(1, 3, SIZE[arch], SIZE[arch])
    with torch.no_grad():
        program = torch.export.export(model, (x,))
        expected, got = model(x), program.module()(x)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-5
