"""int8 judged on images calibration did not see, and kept accurate by keeping the fewest hostile layers in float.

The split of a calibration folder is a fixed function of each file's name; the fallback
is checked on a graph with one layer known to be int8-hostile (its input has one channel
of ~5000 beside channels of ~2, so one 8-bit scale over that tensor erases the others),
in both Q/DQ forms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segexport.calibration import calibration_inputs, validation_inputs
from segexport.calibration.fallback import (
    DownstreamRuns,
    HeldOutJudge,
    Int8Budget,
    keep_fewest_in_float,
    keep_in_float,
    margin_use,
    quantized_layers,
)
from segexport.calibration.quantize import check_tensorrt_qdq, quantize_onnx
from segexport.calibration.sources import CalibrationConfig, held_out_score, load_calibration, load_validation, split_images
from segexport.errors import InvalidInputError, ParityError
from segexport.targets import ExportSpec

SIZE = 32
#: The node of the int8-hostile layer in :func:`hostile_graph`.
HOSTILE = "b"
#: The junction that reads the int8-hostile tensor in :func:`hostile_product_graph`.
HOSTILE_JUNCTION = "gate_mul"


def spec_for(calib: Path | str, **options: object) -> ExportSpec:
    return ExportSpec(
        batch=1,
        in_channels=3,
        height=SIZE,
        width=SIZE,
        output_names=("mask",),
        precision="int8",
        calibration=CalibrationConfig.from_options({"calib": str(calib), "int8_speed_runs": 1, **options}),
        encoder="resnet34",
    )


def write_two_level_images(folder: Path, count: int = 12, seed: int = 0) -> Path:
    """Grey images of dark ground and bright rectangles: every pixel's class has a wide margin except at edges."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = np.full((SIZE, SIZE), 0.15)
        for _ in range(3):
            y, x = rng.integers(0, SIZE - 8, 2)
            h, w = rng.integers(6, 16, 2)
            img[y : y + h, x : x + w] = 0.85
        Image.fromarray((np.repeat(img[:, :, None], 3, axis=2) * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def _bright_pixels_behind_a_constant() -> dict[str, np.ndarray]:
    """Initializers a.w, a.b, head.w, head.b: Conv a (channel 0 a constant 5000, channels 1-7 the brightness), a head for "bright is class 1"."""
    gains = np.linspace(0.5, 1.5, 7, dtype=np.float32)
    a_w = np.zeros((8, 3, 3, 3), np.float32)
    a_w[1:] = gains[:, None, None, None] / 27.0
    a_b = np.zeros(8, np.float32)
    a_b[0] = 5000.0
    head_w = np.zeros((2, 8, 1, 1), np.float32)
    head_w[1, 1:] = 1.0
    head_b = np.array([0.0, -0.9 * gains.sum()], np.float32)
    return {"a.w": a_w, "a.b": a_b, "head.w": head_w, "head.b": head_b}


def _save_graph(path: Path, name: str, nodes: list[onnx.NodeProto], values: dict[str, np.ndarray]) -> Path:
    """A 1x3xSIZExSIZE → 1x2xSIZExSIZE "mask" graph of ``nodes``, checked and saved to ``path``."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2, SIZE, SIZE])],
        [numpy_helper.from_array(v, k) for k, v in values.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def hostile_graph(path: Path, b_gain: float = 1.0) -> Path:
    """Conv a → ReLU → Conv b (1x1) → ReLU → Conv head: bright pixels are class 1.

    a's channel 0 is a constant 5000 that b ignores (zero weights), so the float graph
    never feels it; quantizing b's input with one scale over 0..5000 rounds the other
    channels (0..2) to zero. Only b is int8-hostile: a's input and the head's are ordinary.
    b multiplies its channels by ``b_gain`` and the head divides them by it again.
    """
    values = _bright_pixels_behind_a_constant()
    values["head.w"] = values["head.w"] / np.float32(b_gain)
    b_w = np.zeros((8, 8, 1, 1), np.float32)
    for c in range(1, 8):
        b_w[c, c] = b_gain
    nodes = [
        helper.make_node("Conv", ["input", "a.w", "a.b"], ["a_out"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a_out"], ["a_relu"], name="a_relu"),
        helper.make_node("Conv", ["a_relu", "b.w"], ["b_out"], name=HOSTILE),
        helper.make_node("Relu", ["b_out"], ["b_relu"], name="b_relu"),
        helper.make_node("Conv", ["b_relu", "head.w", "head.b"], ["mask"], name="head"),
    ]
    return _save_graph(path, "hostile", nodes, {**values, "b.w": b_w})


def hostile_product_graph(path: Path) -> Path:
    """Conv a → ReLU, gated by Conv g (Mul) plus a global term (Add), read by two Convs c1, c2 summed into the head.

    The shape of PAN's feature pyramid attention, ``x * middle + global``. As in
    :func:`hostile_graph`, a's channel 0 is a constant 5000 that the gate zeroes, so
    quantizing a's ReLU output rounds the other channels to zero. Only the Mul reads that
    tensor, and hands a float product on: c1 and c2 (identity on channels 1-3 and 4-7) each
    restore half the signal when kept in float, the Mul (a junction) all of it.
    """
    values = _bright_pixels_behind_a_constant()
    g_b = np.ones(8, np.float32)
    g_b[0] = 0.0
    c1_w, c2_w = np.zeros((8, 8, 1, 1), np.float32), np.zeros((8, 8, 1, 1), np.float32)
    for c in range(1, 8):
        (c1_w if c < 4 else c2_w)[c, c] = 1.0
    values.update({"g.w": np.zeros((8, 3, 1, 1), np.float32), "g.b": g_b, "global": np.zeros((1, 8, 1, 1), np.float32),
                   "c1.w": c1_w, "c2.w": c2_w})  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["input", "a.w", "a.b"], ["a_out"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a_out"], ["a_relu"], name="a_relu"),
        helper.make_node("Conv", ["input", "g.w", "g.b"], ["gate"], name="g"),
        helper.make_node("Mul", ["a_relu", "gate"], ["gated"], name=HOSTILE_JUNCTION),
        helper.make_node("Add", ["gated", "global"], ["attended"], name="attended"),
        helper.make_node("Conv", ["attended", "c1.w"], ["c1_out"], name="c1"),
        helper.make_node("Conv", ["attended", "c2.w"], ["c2_out"], name="c2"),
        helper.make_node("Add", ["c1_out", "c2_out"], ["summed"], name="sum"),
        helper.make_node("Conv", ["summed", "head.w", "head.b"], ["mask"], name="head"),
    ]
    return _save_graph(path, "hostile_product", nodes, values)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_level_images(tmp_path_factory.mktemp("two-level"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile_graph(tmp_path_factory.mktemp("hostile") / "model.onnx")


# --------------------------------------------------------------------------- the split


NAMES = [f"img{i:03d}.png" for i in range(40)]


def test_the_split_is_disjoint_covers_every_image_and_holds_out_about_the_fraction():
    calib, held = split_images(NAMES, 0.25)
    assert set(calib).isdisjoint(held) and sorted(calib + held) == list(range(len(NAMES)))
    assert 4 <= len(held) <= 16  # 40 names at 25%: ten expected
    assert held == [i for i, n in enumerate(NAMES) if held_out_score(n) < 0.25]


def test_the_split_depends_on_each_name_not_on_the_order_or_the_other_files():
    _, held = split_images(NAMES, 0.25)
    held_names = {NAMES[i] for i in held}
    shuffled = list(reversed(NAMES))
    assert {shuffled[i] for i in split_images(shuffled, 0.25)[1]} == held_names
    more = [*NAMES, "new1.png", "new2.png"]
    assert {more[i] for i in split_images(more, 0.25)[1]} - {"new1.png", "new2.png"} == held_names


@pytest.mark.parametrize("names", [["a.png", "b.png"], ["x.png", "y.png", "z.png"]], ids=["two", "three"])
def test_small_folders_keep_an_image_on_each_side(names):
    for fraction in (0.01, 0.99):
        calib, held = split_images(names, fraction)
        assert calib and held and set(calib).isdisjoint(held)


def test_one_image_cannot_be_split():
    with pytest.raises(InvalidInputError, match="at least 2 calibration images; the folder has 1.*--val DIR"):
        split_images(["only.png"])


def test_the_same_folder_gives_the_same_disjoint_sets(images):
    spec = spec_for(images)
    calib, held = load_calibration(spec), load_validation(spec)
    assert set(calib.files).isdisjoint(held.files) and len(calib.files) + len(held.files) == 12
    again = load_validation(spec)
    assert again.files == held.files and again.digest == held.digest
    assert all(np.array_equal(a, b) for a, b in zip(validation_inputs(spec), held.inputs))
    assert len(calibration_inputs(spec)) == calib.images
    record = held.describe()
    assert record["images"] == len(held.files) and record["digest"] == f"sha256:{held.digest}"
    assert calib.describe()["digest"] != record["digest"]


def test_val_folder_is_the_held_out_set_and_calibration_uses_all_of_calib(images, tmp_path):
    val = write_two_level_images(tmp_path / "val", count=3, seed=7)
    spec = spec_for(images, val=str(val))
    assert load_validation(spec).files == ["img00.png", "img01.png", "img02.png"]
    assert load_calibration(spec).images == 12


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"val": "/no/such/folder"}, "--val '/no/such/folder' is not a folder of images"),
        ({"val": "CALIB"}, "is the --calib folder"),
        ({"val": "COPY"}, "calibration also uses \\(same content\\)"),
        ({"val_fraction": 1.0}, "val_fraction must be a number in \\(0, 1\\)"),
        ({"int8_fallback": "maybe"}, "--int8-fallback must be one of on, off"),
        ({"int8_min_iou": 2}, "int8_min_iou must be a number in \\[0, 1\\]"),
    ],
)
def test_bad_held_out_settings_are_named(images, tmp_path, options, fragment):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "same.png").write_bytes((images / "img03.png").read_bytes())
    folders = {"CALIB": str(images), "COPY": str(copy)}
    options = {k: folders.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(InvalidInputError, match=fragment):
        quantize_onnx(Path("unused.onnx"), tmp_path / "q.onnx", spec_for(images, **options))


def test_random_calibration_is_judged_on_other_noise():
    spec = spec_for("random", calib_count=8)
    calib, held = load_calibration(spec), load_validation(spec)
    assert held.images == 2 and not any(np.array_equal(h, c) for h in held.inputs for c in calib.inputs)
    assert spec.calibration.val is None


# --------------------------------------------------------------------------- the fallback


def test_margin_use_counts_a_flipped_pixel_as_one_and_an_eroded_margin_as_its_share():
    fp32 = np.array([[10.0, 6.0, 0.0], [0.0, 1.0, 9.0]]).T.reshape(1, 3, 1, 2)  # pixel 0: class 0 by 4; pixel 1: class 2 by 8
    halved = np.array([[9.0, 7.0, 0.0], [0.0, 1.0, 9.0]]).T.reshape(1, 3, 1, 2)  # pixel 0's lead 4 → 2
    flipped = np.array([[5.0, 6.0, 0.0], [0.0, 1.0, 9.0]]).T.reshape(1, 3, 1, 2)  # pixel 0 now class 1
    assert margin_use([fp32], [fp32], None) == 0.0
    assert margin_use([halved], [fp32], None) == pytest.approx(0.25)  # half of one pixel's margin, over two pixels
    assert margin_use([flipped], [fp32], None) == pytest.approx(0.5)  # capped at 1 for the flipped pixel
    assert margin_use([fp32 + 100.0], [fp32], None) == 0.0  # a shift every class shares moves no boundary
    one = np.array([3.0, -1.0]).reshape(1, 1, 1, 2)
    assert margin_use([np.array([2.0, -3.0]).reshape(1, 1, 1, 2)], [one], None) == pytest.approx(1 / 6)  # 1/3 of pixel 0
    assert margin_use([np.array([3.0, 0.5]).reshape(1, 1, 1, 2)], [one], None) == pytest.approx(0.5)  # pixel 1 flips
    assert margin_use([np.array([3.0, 0.5]).reshape(1, 1, 1, 2)], [one], 1.0) == pytest.approx(0.375)  # threshold 1: 3/4 of 2


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_without_the_fallback_the_hostile_layer_ruins_the_held_out_mask(hostile, images, tmp_path, runtime):
    info = quantize_onnx(hostile, tmp_path / "q.onnx", spec_for(images, int8_fallback="off"), runtime=runtime)
    assert info["fallback"] == {**info["fallback"], "mode": "off", "needed": False, "kept_in_float": []}
    assert info["validation"]["result"]["agreement"] < 0.9


@pytest.mark.parametrize(("runtime", "float_type"), [("onnxruntime", "fp32"), ("tensorrt", "fp16")])
def test_the_fallback_keeps_exactly_the_hostile_layer_in_float(hostile, images, tmp_path, runtime, float_type):
    out = tmp_path / "q.onnx"
    info = quantize_onnx(hostile, out, spec_for(images), runtime=runtime)
    fallback = info["fallback"]
    assert [(k["node"], k["float"]) for k in fallback["kept_in_float"]] == [(HOSTILE, float_type)]
    assert fallback["needed"] and fallback["quantized_layers"] == 4  # a, b, head, and b_relu: a junction into the float head
    assert len(fallback["harm_measured_on"]) == 1 and fallback["harm_measured_on"][0] in info["validation"]["files"]
    assert info["validation"]["before_fallback"]["agreement"] < 0.9
    assert info["validation"]["result"]["agreement"] >= 0.98 and info["validation"]["result"]["mean_iou"] >= 0.95
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    layer = next(n for n in model.graph.node if n.name == HOSTILE)
    assert all(producers[i].op_type != "DequantizeLinear" for i in layer.input if i in producers)  # reads no int8
    assert {n.name for n in model.graph.node if n.op_type in ("Conv",)} >= {"a", "head"}
    assert set(quantized_layers(model)) == {"a", "b_relu", "head"}  # the others stay int8
    if runtime == "tensorrt":
        check_tensorrt_qdq(model)
        assert producers[layer.input[0]].op_type == "Cast"  # fp16 island
    assert info["speed"]["speedup_vs_fp32"] > 0 if runtime == "onnxruntime" else info["speed"]["measured"] is False


def test_a_kept_layer_whose_weights_overflow_fp16_runs_and_is_recorded_in_fp32(images, tmp_path):
    source = hostile_graph(tmp_path / "model.onnx", b_gain=1e5)  # b's weights are beyond fp16's largest, 65504
    info = quantize_onnx(source, tmp_path / "q.onnx", spec_for(images), runtime="tensorrt")
    assert [(k["node"], k["float"]) for k in info["fallback"]["kept_in_float"]] == [(HOSTILE, "fp32")]
    model = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    layer = next(n for n in model.graph.node if n.name == HOSTILE)
    assert producers[layer.input[0]].op_type == "Relu"  # a float copy of a's ReLU, no Cast to fp16
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert weights[layer.input[1]] == TensorProto.FLOAT
    check_tensorrt_qdq(model)


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_a_hostile_tensor_only_an_elementwise_op_reads_is_repaired_by_keeping_that_op_in_float(images, tmp_path, runtime):
    source = hostile_product_graph(tmp_path / "model.onnx")
    before = quantize_onnx(source, tmp_path / "off.onnx", spec_for(images, int8_fallback="off"), runtime=runtime)
    assert before["validation"]["result"]["agreement"] < 0.9
    info = quantize_onnx(source, tmp_path / "q.onnx", spec_for(images), runtime=runtime)
    assert [(k["node"], k["op"], k["float"]) for k in info["fallback"]["kept_in_float"]] == [(HOSTILE_JUNCTION, "Mul", "fp32")]
    assert info["validation"]["result"]["agreement"] >= 0.98 and info["validation"]["result"]["mean_iou"] >= 0.95
    model = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    mul = next(n for n in model.graph.node if n.name == HOSTILE_JUNCTION)
    assert producers[mul.input[0]].op_type == "Relu"  # a float copy of a's ReLU, reading a's output before its quantizer
    assert {"a", "g", "c1", "c2"} <= set(quantized_layers(model))  # the convolutions stay int8


@pytest.fixture(scope="module")
def unet_graphs(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, onnx.ModelProto, ExportSpec]:
    """A tiny U-Net's fp32 graph and its TensorRT-form Q/DQ graph: skip connections cross every cut."""
    import torch
    from cases import TINY

    from segexport.arch.registry import create_model
    from segexport.targets.onnx import export_onnx

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("unet-qdq")
    spec = spec_for(images, int8_fallback="off")
    model = create_model("unet", encoder_name="resnet18", encoder_weights=None, classes=2, **TINY["unet"]).eval()
    export_onnx(model, spec, folder / "model.onnx")
    quantize_onnx(folder / "model.onnx", folder / "q.onnx", spec, runtime="tensorrt")
    return onnx.load(str(folder / "model.onnx")), onnx.load(str(folder / "q.onnx")), spec


def test_a_layers_harm_measured_from_the_part_it_changes_is_its_whole_graphs(unet_graphs, tmp_path):
    fp32, qdq, spec = unet_graphs
    onnx.save(fp32, str(tmp_path / "model.onnx"))
    held = validation_inputs(spec)
    mirrored = held[0][..., ::-1].copy()  # a second batch, measured first: the parts must follow the indices asked for
    judge = HeldOutJudge(tmp_path / "model.onnx", [*held, mirrored], "mask", None, as_written=True)
    layers = quantized_layers(qdq)
    checked = [layers[0], layers[len(layers) // 2], layers[-1]]  # the stem, a layer with skips around it, the head
    with DownstreamRuns(judge, qdq, batches=[len(held), 0]) as runs:
        for name in checked:
            runs.add(name, keep_in_float(qdq, fp32, [name], half=True))
        runs.add("unchanged", qdq)  # nothing differs, so nothing to cut: run whole
        base = runs.start()
        assert base == pytest.approx(judge.error(qdq, [len(held), 0]), rel=1e-6) and runs.error("unchanged") == pytest.approx(base, rel=1e-6)
        for name in checked:
            candidate = keep_in_float(qdq, fp32, [name], half=True)
            part, _feeds = runs.cut(candidate)
            assert len(part.graph.node) < len(candidate.graph.node) or name == layers[0]
            assert runs.error(name) == pytest.approx(judge.error(candidate, [len(held), 0]), rel=1e-6)
    head_part, head_feeds = runs.cut(keep_in_float(qdq, fp32, [layers[-1]], half=True))
    assert len(head_part.graph.node) < 10 and "input" not in head_feeds  # the head's part is the head


@pytest.mark.parametrize("as_written", [False, True], ids=["onnxruntime", "tensorrt"])
def test_layers_are_ranked_on_the_held_out_image_int8_gets_most_wrong_and_judged_on_all(hostile, images, tmp_path, as_written):
    spec = spec_for(images, int8_fallback="off")
    quantize_onnx(hostile, tmp_path / "q.onnx", spec, runtime="tensorrt" if as_written else "onnxruntime")
    qdq, fp32 = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(hostile))
    held = validation_inputs(spec)
    dark = np.broadcast_to(held[0].min(axis=(2, 3), keepdims=True), held[0].shape).copy()  # no bright pixel: nothing to get wrong
    judge = HeldOutJudge(hostile, [dark, *held], "mask", None, as_written=as_written)
    before = judge.judge(qdq)
    assert before.disagreement[0] == 0 and np.mean(before.disagreement) == pytest.approx(1 - before.agreement)
    result = keep_fewest_in_float(qdq, fp32, judge, Int8Budget(min_agreement=0.98), half=as_written, before=before)
    assert result.ranked_on == [int(np.argmax(before.disagreement))]
    assert [k["node"] for k in result.kept_in_float] == [HOSTILE]
    assert result.after == judge.judge(result.proto) and result.after.holds(Int8Budget(min_agreement=0.98))  # on every image


def test_a_ranking_that_finds_nothing_is_measured_again_on_more_images_before_refusing(hostile, images, tmp_path, monkeypatch):
    from segexport.calibration import fallback

    spec = spec_for(images, int8_fallback="off")
    quantize_onnx(hostile, tmp_path / "q.onnx", spec)
    qdq, fp32 = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(hostile))
    held = validation_inputs(spec)
    dark = np.broadcast_to(held[0].min(axis=(2, 3), keepdims=True), held[0].shape).copy()
    judge = HeldOutJudge(hostile, [dark, *held], "mask", None, as_written=False)
    searched, search = [], fallback._search

    def first_finds_nothing(*args, **kwargs):
        searched.append(dict(args[6]))
        return None if len(searched) == 1 else search(*args, **kwargs)

    monkeypatch.setattr(fallback, "_search", first_finds_nothing)
    result = keep_fewest_in_float(qdq, fp32, judge, Int8Budget(min_agreement=0.98), half=False)
    assert len(searched) == 2 and len(result.ranked_on) == min(fallback.SENSITIVITY_REFINE, len(judge.inputs)) > 1
    assert sorted(result.ranked_on) == sorted(result.before.worst_first()[: len(result.ranked_on)])
    assert [k["node"] for k in result.kept_in_float] == [HOSTILE] and result.after.holds(Int8Budget(min_agreement=0.98))


def test_the_fallback_stops_when_nothing_int8_worth_having_is_left(hostile, images, tmp_path):
    with pytest.raises(ParityError, match="unless more than 10% of its multiply-adds stay in float.*nothing int8 worth having"):
        quantize_onnx(hostile, tmp_path / "q.onnx", spec_for(images, int8_max_float_share=0.1))


def test_a_layer_kept_in_float_computes_from_the_unquantized_output_of_the_layer_before(hostile, images, tmp_path):
    import onnxruntime as ort

    spec = spec_for(images, int8_fallback="off")
    quantize_onnx(hostile, tmp_path / "q.onnx", spec)
    qdq, fp32 = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(hostile))
    mixed = keep_in_float(qdq, fp32, [HOSTILE])
    for name in ("a_out", "b_out"):
        mixed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"])
    a_out, b_out = session.run(["a_out", "b_out"], {"input": validation_inputs(spec)[0]})
    weights = numpy_helper.to_array(next(t for t in fp32.graph.initializer if t.name == "b.w"))[:, :, 0, 0]
    np.testing.assert_allclose(b_out, np.einsum("oc,nchw->nohw", weights, np.maximum(a_out, 0)), rtol=1e-5, atol=1e-4)


@pytest.mark.trt
def test_the_tensorrt_form_with_a_layer_kept_in_fp16_builds_an_engine(hostile, images, tmp_path):
    tensorrt = pytest.importorskip("segexport.targets.tensorrt")
    try:
        trt = tensorrt.trt_module()
    except InvalidInputError as exc:
        pytest.skip(f"no TensorRT builder here: {exc}")
    quantize_onnx(hostile, tmp_path / "model.int8.onnx", spec_for(images), runtime="tensorrt")
    settings = tensorrt.BuildSettings(profile=None, workspace_mb=None, timing_cache=None, hardware_compat=False, version_compat=False)
    record = tensorrt.build_engine(tmp_path / "model.int8.onnx", tmp_path / "model.engine", settings, trt)
    assert record["strongly_typed"] and (tmp_path / "model.engine").stat().st_size > 0
