"""Mix Transformer encoders and timm encoders (``tu-``): shapes, SMP parity, weights, export-friendliness."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from segexport.arch.encoders import get_encoder, get_pretrained_settings
from segexport.arch.encoders.timm_vit import create_timm_vit_encoder
from segexport.arch.unet import Unet
from segexport.errors import InvalidInputError

SMALL_DECODER = (16, 16, 8, 8, 8)
VIT = "vit_tiny_patch16_224"


def features_of(encoder: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    encoder.eval()
    with torch.no_grad():
        return encoder(x)


def shapes(features: list[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(f.shape) for f in features]


# ---------------------------------------------------------------- Mix Transformer


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_mit_b0_returns_one_feature_per_level_with_an_empty_stride2_level(depth):
    encoder = get_encoder("mit_b0", depth=depth)
    features = features_of(encoder, torch.randn(2, 3, 64, 96))
    expected_channels = [3, 0, 32, 64, 160, 256][: depth + 1]
    assert encoder.out_channels == expected_channels
    assert encoder.output_stride == min(32, 2**depth)
    assert shapes(features) == [(2, c, 64 // 2**i, 96 // 2**i) for i, c in enumerate(expected_channels)]


@pytest.mark.smp
@pytest.mark.parametrize("depth", [5])
def test_mit_b0_loads_smp_weights_strictly_and_matches_its_features(depth):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    reference = smp.encoders.get_encoder("mit_b0", depth=depth, weights=None).eval()
    ours = get_encoder("mit_b0", depth=depth)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    theirs, mine = features_of(reference, x), features_of(ours, x)
    assert shapes(mine) == shapes(theirs)
    for a, b in zip(theirs, mine):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_mit_b0_takes_other_input_channels(in_channels):
    encoder = get_encoder("mit_b0", in_channels=in_channels)
    features = features_of(encoder, torch.randn(1, in_channels, 64, 64))
    assert encoder.out_channels[0] == in_channels
    assert features[-1].shape == (1, 256, 2, 2)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_mit_cannot_be_dilated(output_stride):
    with pytest.raises(InvalidInputError, match="allowed: 32 only"):
        get_encoder("mit_b0", output_stride=output_stride)


@pytest.mark.onnx
@pytest.mark.parametrize("encoder", ["mit_b0", "tu-convnext_atto"])  # both lack a stride-2 feature
def test_exported_unet_graph_of_an_encoder_without_stride_2_has_no_zero_sized_tensor(tmp_path, encoder):
    """The dynamic graph the ONNX target writes (whichever exporter it chose) has no 0-sized tensor TensorRT would reject."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from segexport.targets.base import ExportSpec
    from segexport.targets.onnx import export_onnx

    model = Unet(encoder, encoder_weights=None, decoder_channels=SMALL_DECODER).eval()
    spec = ExportSpec(batch=2, in_channels=3, height=64, width=64, output_names=("mask",), dynamic=True, stride=32)
    export_onnx(model, spec, tmp_path / "model.onnx")
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "model.onnx")))
    values = [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]
    assert len(values) > 100  # shape inference did annotate the graph
    zero_sized = [
        v.name
        for v in values
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in v.type.tensor_type.shape.dim)
    ]
    assert zero_sized == []
    # Dynamic H/W really are dynamic: another size runs and matches eager.
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 96, 128)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- timm universal encoder


def test_tu_cnn_returns_input_then_strides_2_to_32():
    encoder = get_encoder("tu-resnet18")
    features = features_of(encoder, torch.randn(2, 3, 64, 64))
    assert encoder.out_channels == [3, 64, 64, 128, 256, 512]
    assert shapes(features) == [(2, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(encoder.out_channels)]
    timm_keys = timm.create_model("resnet18", features_only=True).state_dict()
    # SMP's layout: the timm model under `model.`
    assert set(encoder.state_dict()) == {f"model.{k}" for k in timm_keys}


@pytest.mark.parametrize("depth", [3, 5])
def test_tu_stride4_model_reports_an_empty_stride2_level(depth):
    encoder = get_encoder("tu-convnext_atto", depth=depth)
    features = features_of(encoder, torch.randn(2, 3, 64, 64))
    assert encoder.out_channels == [3, 0, 40, 80, 160, 320][: depth + 1]
    assert shapes(features) == [(2, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(encoder.out_channels)]


def test_tu_channel_last_features_come_back_nchw():
    encoder = get_encoder("tu-mambaout_femto", depth=3)  # timm gives NHWC features for MambaOut
    features = features_of(encoder, torch.randn(1, 3, 64, 64))
    assert encoder.out_channels == [3, 0, 48, 96]
    assert shapes(features) == [(1, 3, 64, 64), (1, 0, 32, 32), (1, 48, 16, 16), (1, 96, 8, 8)]


@pytest.mark.parametrize("name", ["tu-resnet18", "tu-convnext_atto"])
@pytest.mark.parametrize("in_channels", [1, 4])
def test_tu_encoders_take_other_input_channels(name, in_channels):
    encoder = get_encoder(name, in_channels=in_channels, depth=3)
    features = features_of(encoder, torch.randn(1, in_channels, 64, 64))
    assert encoder.out_channels[0] == in_channels
    assert features[0].shape[1] == in_channels


@pytest.mark.parametrize("name", ["tu-resnet18", "tu-regnetx_002"])
def test_tu_output_stride_16_dilates_the_last_stage(name):
    encoder = get_encoder(name, output_stride=16)
    features = features_of(encoder, torch.randn(1, 3, 64, 64))
    assert encoder.output_stride == 16
    assert [64 // f.shape[-1] for f in features] == [1, 2, 4, 8, 16, 16]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("tu-densenet121", {"output_stride": 16}, "cannot reach output stride 16"),
        ("tu-vgg11", {"output_stride": 8}, "cannot reach output stride 8"),
        ("tu-resnet18", {"output_stride": 12}, "allowed: 8, 16, 32"),
        ("tu-resnet18", {"depth": 6}, "allowed: 1..5"),
        ("tu-convnext_atto", {"depth": 1}, "starts at stride 4"),
        ("tu-resnet1", {}, "Unknown timm model 'resnet1'.*Did you mean 'resnet18'"),
        ("tu-resnet18.no_such_tag", {}, "no pretrained tag 'no_such_tag'"),
        ("tu-resnet18", {"weights": "no_such_tag"}, "Unknown encoder_weights.*a1_in1k"),
        ("tu-resnet18", {"weights": "missing/weights.pth"}, "does not exist"),
        ("tu-resnet18", {"in_chans": 4}, "set by segexport itself"),
        ("tu-resnet18", {"no_such_kwarg": 1}, "rejects the given arguments"),
        (f"tu-{VIT}", {}, "ViT-style.*DPT"),
    ],
)
def test_tu_bad_requests_raise_clear_errors(name, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        get_encoder(name, **kwargs)


def test_tu_pretrained_settings_come_from_timm_offline():
    assert get_pretrained_settings("tu-resnet18").normalization() == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_space": "RGB",
        "input_range": [0.0, 1.0],
    }
    vit = get_pretrained_settings(f"tu-{VIT}")
    assert vit.mean == (0.5, 0.5, 0.5) and vit.std == (0.5, 0.5, 0.5)
    assert get_pretrained_settings("tu-resnet18.tv_in1k").extra["tag"] == "tv_in1k"


# ---------------------------------------------------------------- local weights files


@pytest.mark.parametrize(
    ("name", "suffix", "keep_classifier"),
    [
        ("resnet18", ".pth", True),
        ("resnet18", ".safetensors", False),
        ("convnext_atto", ".safetensors", True),  # stride-4 model, classifier under head.fc
        ("mobilenetv3_small_050", ".pth", False),
    ],
)
def test_tu_weights_file_holds_the_timm_models_state_dict(name, suffix, keep_classifier, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(name).eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if not keep_classifier:
        head = source.pretrained_cfg["classifier"]
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    encoder = get_encoder(f"tu-{name}", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.forward_intermediates(x, intermediates_only=True)
    assert torch.equal(features_of(encoder, x)[-1], expected[-1])


def test_tu_weights_file_adapts_the_first_conv_to_other_input_channels(tmp_path):
    source = timm.create_model("resnet18")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    encoder = get_encoder("tu-resnet18", in_channels=1, weights=str(tmp_path / "w.pth"))
    torch.testing.assert_close(encoder.model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda sd: {"not_a_key": torch.zeros(1)}, "is not a state_dict of timm model 'resnet18'"),
        (lambda sd: {k: v for k, v in sd.items() if not k.startswith("layer4.")}, r"missing keys \['layer4"),
        (lambda sd: {**sd, "layer1.0.conv1.weight": torch.zeros(3, 3, 3, 3)}, "size mismatch for layer1.0.conv1"),
    ],
    ids=["foreign", "missing-stage", "wrong-shape"],
)
def test_tu_weights_file_that_does_not_fit_is_refused(corrupt, message, tmp_path):
    torch.save(corrupt(timm.create_model("resnet18").state_dict()), tmp_path / "w.pth")
    with pytest.raises(InvalidInputError, match=message):
        get_encoder("tu-resnet18", weights=str(tmp_path / "w.pth"))


# ---------------------------------------------------------------- ViT encoders (DPT)


def test_vit_encoder_returns_block_features_and_prefix_tokens():
    encoder = create_timm_vit_encoder(VIT, depth=4)
    features, prefix_tokens = features_of(encoder, torch.randn(2, 3, 224, 224))
    assert encoder.output_indices == [2, 5, 8, 11]
    assert encoder.out_channels == [192] * 4 and encoder.output_strides == [16] * 4 and encoder.output_stride == 16
    assert encoder.has_prefix_tokens and encoder.is_fixed_input_size and encoder.input_size == (3, 224, 224)
    assert shapes(features) == [(2, 192, 14, 14)] * 4
    assert shapes(prefix_tokens) == [(2, 1, 192)] * 4


def test_vit_encoder_without_prefix_tokens_returns_none_tokens():
    encoder = create_timm_vit_encoder(VIT, depth=2, class_token=False, global_pool="avg", img_size=32)
    features, prefix_tokens = features_of(encoder, torch.randn(1, 3, 32, 32))
    assert not encoder.has_prefix_tokens
    assert prefix_tokens == [None, None] and len(features) == 2


def test_vit_encoder_with_dynamic_img_size_takes_small_inputs():
    encoder = create_timm_vit_encoder(VIT, depth=2, output_indices=[3, -1], dynamic_img_size=True)
    features, _ = features_of(encoder, torch.randn(1, 3, 64, 96))
    assert not encoder.is_fixed_input_size
    assert shapes(features) == [(1, 192, 4, 6)] * 2


@pytest.mark.smp
def test_vit_encoder_loads_smp_weights_strictly_and_matches_its_outputs():
    pytest.importorskip("segmentation_models_pytorch")
    from segmentation_models_pytorch.encoders.timm_vit import TimmViTEncoder

    torch.manual_seed(0)
    reference = TimmViTEncoder(VIT, pretrained=False, depth=3, output_indices=[1, 6, 11]).eval()
    ours = create_timm_vit_encoder(VIT, depth=3, output_indices=[1, 6, 11])
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    (theirs, their_tokens), (mine, my_tokens) = features_of(reference, x), features_of(ours, x)
    for a, b in zip([*theirs, *their_tokens], [*mine, *my_tokens]):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_vit_encoder_uses_plain_attention_only_while_exporting(monkeypatch):
    from segexport.arch.base import export_mode

    encoder = create_timm_vit_encoder(VIT, depth=2, img_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    eager, _ = features_of(encoder, x)  # timm's fused kernel, as SMP runs it

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("fused attention called while exporting")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
    with export_mode():
        exported, _ = features_of(encoder, x)
    assert all(m.fused_attn for m in encoder.modules() if hasattr(m, "fused_attn"))  # switched back
    for a, b in zip(eager, exported):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_vit_weights_file_loads(tmp_path):
    source = timm.create_model(VIT, img_size=32).eval()
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    weights = str(tmp_path / "vit.pth")
    encoder = create_timm_vit_encoder(VIT, depth=1, output_indices=[-1], weights=weights, img_size=32)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (expected,) = source.forward_intermediates(x, indices=[11], intermediates_only=True)
    torch.testing.assert_close(features_of(encoder, x)[0][0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 13}, "exceeds the 12 blocks"),
        ({"depth": 2, "output_indices": [3]}, "has 1 entries but encoder_depth is 2"),
        ({"depth": 2, "output_indices": [3, 12]}, "out of range.*allowed: -12..11"),
        ({"depth": 2, "output_indices": [8, 3]}, "increasing order"),
        ({"output_stride": 16}, "cannot be dilated"),
    ],
)
def test_vit_encoder_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        create_timm_vit_encoder(VIT, **kwargs)


# ---------------------------------------------------------------- every SMP encoder family through tu-

# One small timm member per family SMP documents; inception needs inputs >= 75 px (unpadded convs).
FAMILIES = [
    ("resnet", "resnet18", 64),
    ("resnext", "resnext26ts", 64),
    ("resnest", "resnest14d", 64),
    ("res2net", "res2net50_14w_8s", 64),
    ("res2next", "res2next50", 64),
    ("regnetx", "regnetx_002", 64),
    ("regnety", "regnety_002", 64),
    ("gernet", "gernet_s", 64),
    ("senet", "legacy_seresnet18", 64),
    ("skresnet", "skresnet18", 64),
    ("skresnext", "skresnext50_32x4d", 64),
    ("densenet", "densenet121", 64),
    ("inception", "inception_v3", 96),
    ("inceptionv4", "inception_v4", 96),
    ("inceptionresnetv2", "inception_resnet_v2", 96),
    ("efficientnet", "efficientnet_lite0", 64),
    ("efficientnet-tf-same-padding", "tf_efficientnet_lite0", 64),
    ("mobilenetv2", "mobilenetv2_035", 64),
    ("mobilenetv3", "mobilenetv3_small_050", 64),
    ("dpn", "dpn48b", 64),
    ("vgg", "vgg11", 64),
]


@pytest.mark.parametrize(
    ("timm_name", "size"),
    [pytest.param(n, s, id=f) for f, n, s in FAMILIES],
)
def test_every_smp_encoder_family_builds_a_unet_through_tu(timm_name, size):
    model = Unet(f"tu-{timm_name}", encoder_weights=None, decoder_channels=SMALL_DECODER, classes=2).eval()
    channels = model.encoder.out_channels
    assert len(channels) == 6 and channels[0] == 3 and all(c > 0 for c in channels)
    with torch.no_grad():
        mask = model(torch.randn(1, 3, size, size))
    assert mask.shape == (1, 2, size, size)
    assert torch.isfinite(mask).all()


# ---------------------------------------------------------------- SMP checkpoints with tu- encoders


@pytest.mark.smp
@pytest.mark.parametrize(
    ("encoder", "kwargs"),
    [
        ("tu-resnet18", {}),
        ("tu-convnext_atto", {}),
        ("tu-regnetx_002", {"output_stride": 16}),
        ("tu-resnet18", {"in_channels": 4, "encoder_depth": 4, "decoder_channels": SMALL_DECODER[:4]}),
    ],
    ids=["cnn", "stride4", "dilated", "4ch-depth4"],
)
def test_smp_unet_checkpoint_with_tu_encoder_loads_strictly_with_equal_outputs(encoder, kwargs, tmp_path):
    smp = pytest.importorskip("segmentation_models_pytorch")
    kwargs = {"decoder_channels": SMALL_DECODER, **kwargs}
    torch.manual_seed(0)
    reference = smp.Unet(encoder, encoder_weights=None, classes=3, **kwargs).eval()
    torch.save(reference.state_dict(), tmp_path / "smp.pth")
    ours = Unet(encoder, encoder_weights=None, classes=3, **kwargs).eval()
    ours.load_state_dict(torch.load(tmp_path / "smp.pth", weights_only=True), strict=True)
    x = torch.randn(2, kwargs.get("in_channels", 3), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)
