"""int8 calibration: image sources and preparation, sampling, methods, the range cache, Q/DQ graphs.

Figures that matter are measured on a briefly trained model and real photographs
(tests/trained_model.py), never on random weights and noise.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cases import tiny_kwargs
from onnx import numpy_helper
from segexport.arch.encoders.weights import PretrainedSettings
from segexport.calibration import calibration_inputs
from segexport.calibration import quantize as quantize_module
from segexport.calibration.fallback import keep_in_float
from segexport.calibration.quantize import GELU_OPSET, activation_matmuls, fuse_gelu, quantize_onnx
from segexport.calibration.sources import (
    CalibrationConfig,
    evenly_spaced,
    list_images,
    load_calibration,
    normalize,
    read_image,
)
from segexport.targets import ExportSpec
from segexport.targets.onnx import export_onnx
from segexport.targets.runners import OnnxRuntimeRunner
from torch import nn
from trained_model import cached_checkpoint, write_photos

import segexport
from segexport.errors import InvalidInputError

pytest.importorskip("skimage", reason="calibration photos come from scikit-image (a test extra)")


def spec_for(calib: str | Path | None, size: int = 32, batch: int = 1, in_channels: int = 3, **options: object) -> ExportSpec:
    return ExportSpec(
        batch=batch,
        in_channels=in_channels,
        height=size,
        width=size,
        output_names=("mask",),
        precision="int8",
        # The graphs' form is what these tests check; the fallback that changes it has its own (test_int8_accuracy.py).
        calibration=None if calib is None else CalibrationConfig.from_options(
            {"calib": str(calib), "int8_fallback": "off", "int8_speed_runs": 1, **options}
        ),
        encoder="resnet34",
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, formats=("png", "jpg", "bmp", "npy"))
    return folder


class TinyNet(nn.Module):
    """Conv-BN-ReLU twice and a 1x1 head: a graph with weights, biases, ReLUs and a residual Add."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        y = torch.relu(self.a(x))
        return (self.head(torch.relu(self.b(y)) + y),)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    export_onnx(TinyNet().eval(), dataclasses.replace(spec_for(None), dynamic=True), path)  # any input size
    return path


class TinyAttention(nn.Module):
    """A patch embedding, one self-attention and one GELU MLP over its tokens, a 1x1 head: MiT's block in small."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.qkv = nn.Linear(8, 24)
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        y = self.embed(x)
        b, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        t = t + torch.softmax(q @ k.transpose(1, 2) * c**-0.5, dim=-1) @ v
        t = t + self.fc2(self.act(self.fc1(t)))
        y = t.transpose(1, 2).reshape(b, c, h, w)
        return (nn.functional.interpolate(self.head(y), scale_factor=4.0, mode="bilinear"),)


@pytest.fixture(scope="module")
def attention_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("attention") / "model.onnx"
    export_onnx(TinyAttention().eval(), spec_for(None), path)
    return path


# --------------------------------------------------------------------------- sources


def test_images_are_listed_recursively_in_sorted_order_without_hidden_files(tmp_path):
    for name in ("b.png", "a.jpg", "sub/c.bmp", "sub/.hidden.png", ".git/x.png", "notes.txt", "Z.npy"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["Z.npy", "a.jpg", "b.png", "sub/c.bmp"]


@pytest.mark.parametrize(("n", "count", "expected"), [(10, 3, [0, 3, 6]), (4, 4, [0, 1, 2, 3]), (3, 8, [0, 1, 2]), (5, 1, [0])])
def test_sampling_is_evenly_spaced_and_deterministic(n, count, expected):
    assert evenly_spaced(list(range(n)), count) == expected


def test_the_same_folder_always_gives_the_same_batches(photos):
    first = load_calibration(spec_for(photos, calib_count=5))
    second = load_calibration(spec_for(photos, calib_count=5))
    assert first.files == second.files and len(first.files) == 5
    assert all(np.array_equal(a, b) for a, b in zip(first.inputs, second.inputs))
    assert first.describe()["random_inputs"] is False


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "npy"])
def test_every_supported_format_reads_to_unit_range(tmp_path, suffix):
    path = write_photos(tmp_path, count=1, formats=(suffix,))[0]
    image = read_image(path)
    assert image.shape[2] == 3 and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05


@pytest.mark.parametrize(
    ("array", "expected_max"),
    [(np.full((4, 4), 255, np.uint8), 1.0), (np.full((4, 4, 3), 65535, np.uint16), 1.0), (np.full((4, 4, 1), 0.5, np.float32), 0.5)],
    ids=["uint8-grey", "uint16-rgb", "float"],
)
def test_npy_arrays_are_pixel_values_by_dtype(tmp_path, array, expected_max):
    np.save(tmp_path / "x.npy", array)
    assert read_image(tmp_path / "x.npy").max() == pytest.approx(expected_max)


def test_preparation_follows_the_encoder_settings(tmp_path):
    rgb = np.zeros((1, 3, 2, 2), np.float32)
    rgb[:, 0] = 1.0  # pure red
    imagenet = normalize(rgb, PretrainedSettings())
    assert imagenet[0, :, 0, 0] == pytest.approx([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225], rel=1e-6)
    caffe = PretrainedSettings(mean=(103.9, 116.8, 123.7), std=(1.0, 1.0, 1.0), input_space="BGR", input_range=(0, 255))
    assert normalize(rgb, caffe)[0, :, 0, 0] == pytest.approx([0 - 103.9, 0 - 116.8, 255 - 123.7], rel=1e-6)


def test_images_are_resized_and_normalized_for_the_model(photos):
    batches = calibration_inputs(spec_for(photos, size=48, calib_count=3))
    assert [b.shape for b in batches] == [(1, 3, 48, 48)] * 3
    x = np.concatenate(batches)
    # ImageNet normalization of real photos: roughly zero mean, unit spread, within the [0, 1] image bounds.
    assert -2.2 < x.min() and x.max() < 2.7 and abs(float(x.mean())) < 1.0


def test_grey_and_colour_images_match_the_model_channels(photos):
    assert calibration_inputs(spec_for(photos, in_channels=1, calib_count=2))[0].shape == (1, 1, 32, 32)
    with pytest.raises(InvalidInputError, match="has 3 channels; the model takes 4"):
        calibration_inputs(spec_for(photos, in_channels=4, calib_count=1))


def test_batches_are_filled_from_the_start(photos):
    batches = calibration_inputs(spec_for(photos, batch=2, calib_count=3))
    assert [b.shape[0] for b in batches] == [2, 2]
    assert np.array_equal(batches[1][1], batches[0][0])


def test_random_inputs_only_on_request_and_flagged():
    data = load_calibration(spec_for("random", calib_count=4))
    assert data.describe()["random_inputs"] is True and data.images == 4 and len(data.inputs) == 4
    again = load_calibration(spec_for("random", calib_count=4))
    assert all(np.array_equal(a, b) for a, b in zip(data.inputs, again.inputs))


@pytest.mark.parametrize(
    ("calib", "options", "fragment"),
    [
        (None, {}, "int8 needs calibration data"),
        ("/no/such/folder", {}, "is not a folder of images nor 'random'"),
        ("Random", {}, "use --calib random"),
        ("PHOTOS", {"calib_method": "minmaxx"}, "Did you mean 'minmax'"),
        ("PHOTOS", {"calib_method": "kl"}, "allowed: minmax, entropy, percentile"),
        ("PHOTOS", {"calib_count": 0}, "--calib-count must be an integer >= 1; got 0"),
        ("PHOTOS", {"calib_percentile": 20.0}, "calib_percentile must be in"),
        ("EMPTY", {}, "holds no images; allowed suffixes: .png"),
        ("BROKEN", {}, "Cannot read calibration image"),
    ],
)
def test_bad_calibration_settings_are_named(photos, tmp_path, calib, options, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    for name in ("x.png", "y.png"):  # two: one is held out, the other is calibrated on
        (tmp_path / "broken" / name).write_bytes(b"not a png")
    folders = {"PHOTOS": photos, "EMPTY": tmp_path / "empty", "BROKEN": tmp_path / "broken"}
    with pytest.raises(InvalidInputError, match=fragment):
        load_calibration(spec_for(folders.get(calib, calib), **options))


# --------------------------------------------------------------------------- quantization


def qdq_inits(path: Path) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_tensorrt_graph_is_symmetric_int8_with_a_qdq_pair_per_weight_and_float_bias(tiny_onnx, photos, tmp_path):
    out = tmp_path / "model.int8.onnx"
    info = quantize_onnx(tiny_onnx, out, spec_for(photos, calib_count=4), runtime="tensorrt")
    model, inits = qdq_inits(out)
    producers = {o: n for n in model.graph.node for o in n.output}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weight_dq = producers[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear" and producers[weight_dq.input[0]].op_type == "QuantizeLinear"
        assert inits[weight_dq.input[1]].shape == (inits[producers[weight_dq.input[0]].input[0]].shape[0],)  # per channel
        assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32  # bias stays float
    assert info["scheme"]["activations"].startswith("int8, symmetric")


def test_onnxruntime_graph_uses_uint8_activations(tiny_onnx, photos, tmp_path):
    out = tmp_path / "model.onnx"
    quantize_onnx(tiny_onnx, out, spec_for(photos, calib_count=4))
    model, inits = qdq_inits(out)
    activation_zps = {inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert activation_zps == {np.dtype(np.uint8)}
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_inputs = [producers[n.input[1]].input[0] for n in model.graph.node if n.op_type == "Conv"]
    assert len(weight_inputs) == 3 and all(inits[w].dtype == np.int8 for w in weight_inputs)  # stored as int8


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_onnxruntime_graph_runs_each_gelu_as_one_node_and_attention_products_in_float(attention_onnx, photos, tmp_path, monkeypatch):
    out, unfused = tmp_path / "model.onnx", tmp_path / "unfused.onnx"
    spec = spec_for(photos, calib_count=4)
    info = quantize_onnx(attention_onnx, out, spec)
    with monkeypatch.context() as patch:
        patch.setattr(quantize_module, "fuse_gelu", lambda proto: 0)
        quantize_onnx(attention_onnx, unfused, spec)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert info["fused_gelu"] == ops.count("Gelu") == 1 and "Erf" not in ops
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {GELU_OPSET}
    products = activation_matmuls(onnx.load(str(attention_onnx)))
    assert len(products) == 2  # q @ k^T and attn @ v; the Linear layers' MatMuls have weights
    producers = _producers(model)
    for node in (n for n in model.graph.node if n.name in products):
        assert all(producers[i].op_type != "DequantizeLinear" for i in node.input if i in producers)
    # The same int8 graph with the GELU written out: the fusion changes the ops, not the values.
    inputs = calibration_inputs(spec)
    ref = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(unfused).run(inputs)])
    got = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(out).run(inputs)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_tensorrt_graph_keeps_gelu_as_exported_and_quantizes_attention(attention_onnx, photos, tmp_path):
    out = tmp_path / "model.onnx"
    info = quantize_onnx(attention_onnx, out, spec_for(photos, calib_count=4), runtime="tensorrt")
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert info["fused_gelu"] == 0 and "Gelu" not in ops and "Erf" in ops
    producers = _producers(model)
    for node in (n for n in model.graph.node if n.name in activation_matmuls(onnx.load(str(attention_onnx)))):
        assert all(producers[i].op_type == "DequantizeLinear" for i in node.input)


def test_a_layer_after_a_fused_gelu_is_kept_in_float_from_the_fused_fp32_graph(attention_onnx, photos, tmp_path):
    out = tmp_path / "model.onnx"
    spec = spec_for(photos, calib_count=4)
    quantize_onnx(attention_onnx, out, spec)
    proto, fp32 = onnx.load(str(out)), onnx.load(str(attention_onnx))
    assert fuse_gelu(fp32) == 1
    # fc2: the first layer downstream of the Gelu (through its Q/DQ pair and a Reshape).
    tensors, fc2 = [next(n for n in proto.graph.node if n.op_type == "Gelu").output[0]], None
    while fc2 is None:
        readers = [n for n in proto.graph.node if tensors[-1] in n.input]
        fc2 = next((n for n in readers if n.op_type in ("Gemm", "MatMul")), None)
        tensors.append(readers[0].output[0])
    kept = keep_in_float(proto, fp32, [fc2.name])
    # fc2 now reads, through float ops only, a float Gelu cloned from the fp32 graph; the int8 one is gone.
    kept_producers = _producers(kept)
    source = kept_producers[next(n for n in kept.graph.node if n.name == fc2.name).input[0]]
    while source.op_type != "Gelu":
        assert source.op_type not in ("QuantizeLinear", "DequantizeLinear")
        source = kept_producers[source.input[0]]
    assert [n.op_type for n in kept.graph.node].count("Gelu") == 1
    read = {i for n in kept.graph.node for i in n.input} | {o.name for o in kept.graph.output}
    assert all(any(o in read for o in n.output) for n in kept.graph.node)
    onnx.checker.check_model(kept, full_check=True)
    path = tmp_path / "kept.onnx"
    onnx.save(kept, str(path))
    # Only fc2 changed: the output stays that of the int8 graph, up to fc2's own quantization error.
    inputs = calibration_inputs(spec)
    ref = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(out).run(inputs)])
    got = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(path).run(inputs)])
    assert _cosine(ref, got) > 0.99


def test_openvino_reads_the_fused_gelu_as_onnxruntime_does(attention_onnx, photos, tmp_path):
    """The C++ route for ONNX bundles (examples/cpp) is OpenVINO: it must take opset 20's Gelu."""
    ov = pytest.importorskip("openvino")
    fused = onnx.load(str(attention_onnx))
    assert fuse_gelu(fused) == 1
    path = tmp_path / "fused.onnx"
    onnx.save(fused, str(path))
    inputs = calibration_inputs(spec_for(photos, calib_count=2))
    expected = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(attention_onnx).run(inputs)])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU")
    got = np.concatenate([compiled(x)[0] for x in inputs])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _gelu_graph(order: str, *, add: float = 1.0, erf_is_output: bool = False) -> onnx.ModelProto:
    """x -> GELU written out in one of the exporters' orders -> y, in a float graph of opset 18."""
    from onnx import TensorProto, helper

    consts = {"sqrt2": np.float32(np.sqrt(2.0)), "rsqrt2": np.float32(np.sqrt(0.5)), "one": np.float32(add), "half": np.float32(0.5)}
    inits = [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()]
    scale = helper.make_node("Mul", ["x", "rsqrt2"], ["s"], name="act/Mul_0") if order == "rsqrt2" else helper.make_node(
        "Div", ["x", "sqrt2"], ["s"], name="act/Div")
    nodes = [scale, helper.make_node("Erf", ["s"], ["e"], name="act/Erf"), helper.make_node("Add", ["e", "one"], ["a"], name="act/Add")]
    if order in ("torchscript", "rsqrt2"):  # (x * (1 + erf)) * 0.5
        nodes += [helper.make_node("Mul", ["x", "a"], ["p"], name="act/Mul"), helper.make_node("Mul", ["p", "half"], ["y"], name="act/Mul_1")]
    else:  # dynamo: x * (0.5 * (1 + erf))
        nodes += [helper.make_node("Mul", ["half", "a"], ["p"], name="act/Mul"), helper.make_node("Mul", ["x", "p"], ["y"], name="act/Mul_1")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])]
    if erf_is_output:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 5]))
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("order", ["torchscript", "dynamo", "rsqrt2"])
def test_fuse_gelu_rewrites_every_exported_order_as_one_exact_gelu(order):
    import onnxruntime as ort

    model = _gelu_graph(order)
    x = np.linspace(-6, 6, 10, dtype=np.float32).reshape(2, 5)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert fuse_gelu(model) == 1
    assert [(n.op_type, n.name, list(n.input), list(n.output)) for n in model.graph.node] == [("Gelu", "act/Gelu", ["x"], ["y"])]
    assert not model.graph.initializer and model.opset_import[0].version == GELU_OPSET
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("change", "options"), [("not erf + 1", {"add": 2.0}), ("erf read elsewhere", {"erf_is_output": True})])
def test_fuse_gelu_leaves_lookalikes_alone(change, options):
    model = _gelu_graph("torchscript", **options)
    before = model.SerializeToString()
    assert fuse_gelu(model) == 0
    assert model.SerializeToString() == before


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_method_gives_a_runnable_graph_close_to_fp32(tiny_onnx, photos, tmp_path, method):
    spec = spec_for(photos, calib_count=6, calib_method=method)
    info = quantize_onnx(tiny_onnx, tmp_path / "q.onnx", spec, runtime="tensorrt")
    assert info["method"] == method
    inputs = calibration_inputs(spec)
    ref = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(tiny_onnx).run(inputs)])
    got = np.concatenate([r["mask"] for r in OnnxRuntimeRunner(tmp_path / "q.onnx").run(inputs)])
    cosine = float(np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosine > 0.99


def test_clipping_methods_narrow_the_ranges(tiny_onnx, photos):
    spec = spec_for(photos, calib_count=6)
    inputs = calibration_inputs(spec)
    ranges = {m: quantize_module.calibrate(tiny_onnx, inputs, CalibrationConfig(str(photos), method=m, percentile=99.0)) for m in ("minmax", "percentile")}
    widths = {m: sum(hi - lo for lo, hi in r.values()) for m, r in ranges.items()}
    assert set(ranges["minmax"]) == set(ranges["percentile"])
    assert widths["percentile"] < widths["minmax"]


def test_ranges_are_cached_and_rebuilds_skip_calibration(tiny_onnx, photos, tmp_path, monkeypatch):
    cache = tmp_path / "ranges.json"
    spec = spec_for(photos, calib_count=4, calib_cache=str(cache))
    first = quantize_onnx(tiny_onnx, tmp_path / "a.onnx", spec, runtime="tensorrt")
    assert first["cache"]["hit"] is False and cache.is_file()

    def no_calibration(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated although the cache holds these ranges")

    monkeypatch.setattr(quantize_module, "calibrate", no_calibration)
    second = quantize_onnx(tiny_onnx, tmp_path / "b.onnx", spec, runtime="tensorrt")
    assert second["cache"] == {**first["cache"], "hit": True}
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # The onnxruntime flavour reuses the same ranges.
    assert quantize_onnx(tiny_onnx, tmp_path / "c.onnx", spec)["cache"]["hit"] is True


@pytest.mark.parametrize(
    "change",
    [{"calib_count": 3}, {"calib_method": "entropy"}, {"size": 48}, {"images": "one more"}],
    ids=["count", "method", "size", "image-list"],
)
def test_cache_key_changes_with_what_the_ranges_depend_on(tiny_onnx, photos, tmp_path, change):
    cache = tmp_path / "ranges.json"
    quantize_onnx(tiny_onnx, tmp_path / "a.onnx", spec_for(photos, calib_count=4, calib_cache=str(cache)))
    folder = photos
    if change.pop("images", None):
        folder = tmp_path / "more"
        folder.mkdir()
        for p in list_images(photos)[:3]:
            (folder / p.name).write_bytes(p.read_bytes())
        (folder / "zz.npy").write_bytes((photos / "moon.npy").read_bytes())
    options = {"calib_count": 4, "calib_cache": str(cache), **change}
    size = options.pop("size", 32)
    info = quantize_onnx(tiny_onnx, tmp_path / "b.onnx", spec_for(folder, size=size, **options))
    assert info["cache"]["hit"] is False
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_default_cache_sits_beside_the_bundle(tiny_onnx, photos, tmp_path):
    staging = tmp_path / ".my-bundle.ab12_x.tmp"
    staging.mkdir()
    quantize_onnx(tiny_onnx, staging / "model.onnx", spec_for(photos, calib_count=2))
    assert (tmp_path / "my-bundle.calib.json").is_file()


def test_a_foreign_cache_file_is_refused(tiny_onnx, photos, tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text('{"something": "else"}')
    with pytest.raises(InvalidInputError, match="is not a segexport calibration cache"):
        quantize_onnx(tiny_onnx, tmp_path / "q.onnx", spec_for(photos, calib_count=2, calib_cache=str(cache)))


# --------------------------------------------------------------------------- end to end


@pytest.mark.onnx
def test_onnx_int8_bundle_of_a_trained_unet_agrees_with_fp32_on_photographs(photos, tmp_path):
    checkpoint = cached_checkpoint("unet", "resnet34", tiny_kwargs("unet"))
    bundle = segexport.build(
        "unet",
        "resnet34",
        target="onnx",
        precision="int8",
        calib=str(photos),
        checkpoint=str(checkpoint),
        classes=3,
        height=64,
        width=64,
        arch_args=tiny_kwargs("unet"),
        out=tmp_path / "bundle",
        target_options={"calib_count": 12},
    )
    mask = bundle.manifest.parity.outputs[0]
    record = bundle.manifest.export.details["calibration"]
    assert bundle.manifest.parity.passed
    # Judged on the photographs calibration did not use: 12 split into the two sets, recorded with their digests.
    assert len(bundle.manifest.parity.input_shapes) == record["validation"]["images"] == 12 - record["images"]
    assert set(record["files"]).isdisjoint(record["validation"]["files"])
    assert record["digest"].startswith("sha256:") and record["validation"]["digest"].startswith("sha256:")
    assert mask.agreement >= 0.98 and mask.mean_iou >= 0.9
    assert {"model.onnx", "model.fp32.onnx"} <= set(bundle.manifest.sha256)
    assert (tmp_path / "bundle.calib.json").is_file()


def test_int8_that_cannot_keep_its_budget_says_what_to_try(tmp_path):
    # An unreachable budget (mean IoU 1.0 with no layer allowed back in float) on noise and random weights.
    options = {"calib_count": 4, "int8_min_iou": 1.0, "int8_max_float_share": 0.0}
    with pytest.raises(segexport.ParityError, match="nothing int8 worth having is left. Deploy fp16.*--calib-method percentile"):
        segexport.build(
            "linknet", "resnet18", precision="int8", calib="random", height=64, width=64, classes=3, out=tmp_path / "bundle",
            target_options=options,
        )  # three classes: a one-class mask of random weights can be one class everywhere, which int8 keeps exactly
    assert not (tmp_path / "bundle").exists()
