"""The C++ consumer in examples/cpp: one executable, a LibTorch backend (TorchScript, AOTInductor) and an
OpenVINO backend (ONNX, fp32 and int8), each reproducing the outputs of eager PyTorch.

The build goes to a cache folder (``~/.cache/segexport/cpp-build-...``), so only the
first run on a machine pays for it (about 15 s of compiling on 2 cores), and happens
once per session. Without cmake, make, a C++ compiler, or one of the two runtimes the
tests skip, except on CI (CI=true), where they fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import tiny_kwargs

import segexport
from segexport.parity import compare_outputs, parity_report
from segexport.pipeline import BuildRequest, create_from_request
from segexport.targets.aoti import cache_root

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "cpp"
TOOLS = ("cmake", "make")
ON_CI = os.environ.get("CI", "").lower() == "true"


def _missing_toolchain() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (c++/g++/clang++ or $CXX)")
    return f"the C++ consumer needs {', '.join(missing)}" if missing else None


def _skip_or_fail(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


def _openvino_cmake_dir() -> str | None:
    """The openvino wheel's folder holding OpenVINOConfig.cmake, or None without the wheel."""
    try:
        from openvino.utils import get_cmake_path
    except ImportError:
        return None
    return get_cmake_path() or None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


@pytest.fixture(scope="session")
def consumer() -> Path:
    """The built segexport_infer, from a build folder cached per torch/openvino version and source checkout."""
    missing = _missing_toolchain()
    if missing:
        _skip_or_fail(f"{missing} (apt-get install cmake make g++)")
    openvino_dir = _openvino_cmake_dir()
    key = hashlib.sha256(f"{SOURCE}|{torch.__version__}|{_version('openvino')}|{sys.executable}".encode()).hexdigest()[:12]
    build = cache_root() / f"cpp-build-{key}"
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:  # one build at a time (pytest-xdist, parallel sessions)
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = [
            "cmake", "-S", str(SOURCE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            *([f"-DOpenVINO_DIR={openvino_dir}"] if openvino_dir else []),
            # Compiling LibTorch's headers dominates; the optimiser adds 10% and the test needs no speed.
            "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O0",
        ]  # fmt: skip
        for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(cmd[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return build / "segexport_infer"


def built_with(binary: Path) -> str:
    """The backends line of ``segexport_infer --help``."""
    return next(line for line in run(binary, "--help").stdout.splitlines() if line.startswith("built with:"))


@pytest.fixture(scope="session")
def libtorch_consumer(consumer: Path) -> Path:
    if "LibTorch" not in built_with(consumer):
        _skip_or_fail("segexport_infer was built without LibTorch (TorchConfig.cmake not found)")
    return consumer


@pytest.fixture(scope="session")
def openvino_consumer(consumer: Path) -> Path:
    if "OpenVINO" not in built_with(consumer):
        _skip_or_fail("segexport_infer was built without OpenVINO (pip install openvino: its wheel has the C++ runtime)")
    return consumer


def run(binary: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def check_like_parity(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """atol 1e-4 scaled by max(1, RMS of the reference), as segexport.parity scales it."""
    result = compare_outputs(name, [actual], [expected], atol=1e-4, rtol=0.0)
    assert result.within_tolerance, f"{name}: max abs {result.max_abs:.3g} over scaled atol {1e-4 * result.atol_scale:.3g}"


@pytest.mark.parametrize(
    ("runtimes", "expected"),
    [
        (["openvino"], ["LibTorch backend OFF: TorchConfig.cmake not found", "OpenVINO backend ON (onnx bundles)"]),
        ([], ["LibTorch backend OFF", "OpenVINO backend OFF", "needs at least one runtime: neither LibTorch nor OpenVINO was found"]),
    ],
    ids=["openvino-only", "neither"],
)
def test_each_backend_is_configured_only_where_its_runtime_is_found(tmp_path, runtimes, expected):
    missing = _missing_toolchain()
    if missing:
        _skip_or_fail(missing)
    if "openvino" in runtimes and _openvino_cmake_dir() is None:
        _skip_or_fail("the openvino wheel is not installed")
    hints = [f"-DOpenVINO_DIR={_openvino_cmake_dir()}"] if "openvino" in runtimes else []
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_PREFIX_PATH", "Torch_DIR", "OpenVINO_DIR")}  # only the hints given
    cmd = ["cmake", "-S", str(SOURCE), "-B", str(tmp_path), *hints]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert (done.returncode == 0) == bool(runtimes), done.stderr[-2000:]
    output = " ".join((done.stdout + done.stderr).split())  # CMake wraps long error messages
    for fragment in expected:
        assert fragment in output


def test_torchscript_bundle_output_matches_python_eager(libtorch_consumer, tmp_path):
    options = {"height": 64, "width": 64, "classes": 3, "aux_classes": 4}
    bundle = segexport.build("unet", "resnet34", target="torchscript", out=tmp_path / "bundle", **options)
    x = np.random.default_rng(1234).standard_normal((1, 3, 64, 64)).astype(np.float32)
    x.tofile(tmp_path / "input.f32")

    done = run(libtorch_consumer, bundle.path, tmp_path / "input.f32", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "mask: 1x3x64x64 float32" in done.stdout and "label: 1x4 float32" in done.stdout

    model, _ = create_from_request(BuildRequest(arch="unet", encoder="resnet34", **options))
    with torch.no_grad():
        mask, label = (t.numpy() for t in model(torch.from_numpy(x)))
    check_like_parity(np.fromfile(tmp_path / "out" / "mask.f32", dtype=np.float32).reshape(mask.shape), mask, "mask")
    check_like_parity(np.fromfile(tmp_path / "out" / "label.f32", dtype=np.float32).reshape(label.shape), label, "label")
    assert f"label[0]: class {int(label.argmax())}" in done.stdout
    assert read_png_gray(tmp_path / "out" / "mask.png").tolist() == mask[0].argmax(0).tolist()


@pytest.mark.aoti
def test_aoti_bundle_runs_through_the_package_loader(libtorch_consumer, aoti_unet_bundle, tmp_path):
    x = np.random.default_rng(7).standard_normal((2, 3, 96, 64)).astype(np.float32)
    x.tofile(tmp_path / "input.raw")

    done = run(libtorch_consumer, aoti_unet_bundle.path, tmp_path / "input.raw", tmp_path / "out", "--shape", "2x3x96x64")
    assert done.returncode == 0, done.stderr
    request = BuildRequest(arch="unet", encoder="resnet34", classes=2, aux_classes=3, arch_args=tiny_kwargs("unet"))
    model, _ = create_from_request(request)
    with torch.no_grad():
        mask, label = (t.numpy() for t in model(torch.from_numpy(x)))
    check_like_parity(np.fromfile(tmp_path / "out" / "mask.f32", dtype=np.float32).reshape(mask.shape), mask, "mask")
    check_like_parity(np.fromfile(tmp_path / "out" / "label.f32", dtype=np.float32).reshape(label.shape), label, "label")
    assert (tmp_path / "out" / "mask_0.png").is_file() and (tmp_path / "out" / "mask_1.png").is_file()


# ---- image inputs, through a bundle whose model is the identity ----------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x * 1.0,)


def identity_onnx(input_name: str) -> bytes:
    """An ONNX graph whose output ``mask`` is its input ``input_name`` (any batch and size)."""
    from onnx import TensorProto, helper

    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["mask"])],
        "identity",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.fixture(scope="module")
def identity_models(tmp_path_factory) -> dict[str, Path]:
    """The identity model per target: TorchScript, and ONNX with an input named ``image`` (the manifest's name is used)."""
    folder = tmp_path_factory.mktemp("identity")
    torch.jit.save(torch.jit.trace(Identity(), torch.zeros(1, 3, 8, 8)), str(folder / "model.ts"))
    (folder / "model.onnx").write_bytes(identity_onnx("image"))
    return {"torchscript": folder / "model.ts", "onnx": folder / "model.onnx"}


def identity_bundle(
    root: Path, models: dict[str, Path], *, shape: list, space: str = "RGB", value_range: tuple = (0.0, 1.0), target: str = "torchscript"
) -> Path:
    """A hand-written bundle: just the manifest fields the consumer reads, and the identity model."""
    root.mkdir(parents=True, exist_ok=True)
    artifact = models[target].name
    shutil.copy(models[target], root / artifact)
    manifest = {
        "format_version": 1,
        "target": target,
        "artifact": artifact,
        "arch": "identity",
        "arch_args": {"activation": None},
        "inputs": [{"name": "image" if target == "onnx" else "input", "shape": shape, "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "mask", "shape": shape, "dtype": "float32", "layout": "NCHW"}],
        "normalization": {"mean": list(MEAN), "std": list(STD), "input_space": space, "input_range": list(value_range)},
        "export": {"dynamic": isinstance(shape[2], str), "stride": 1},
        "sha256": {artifact: hashlib.sha256((root / artifact).read_bytes()).hexdigest()},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def png_bytes(samples: np.ndarray, color: int, depth: int, *, filters=(0,), level: int = 6, fixed: bool = False, palette=None) -> bytes:
    """A PNG written sample by sample: each row with the given filter types in turn, then zlib at ``level``."""
    height, width = samples.shape[:2]
    channels = samples.shape[2] if samples.ndim == 3 else 1
    if depth < 8:
        rows = [np.packbits(np.unpackbits(samples[y].astype(np.uint8)[:, None], axis=1)[:, -depth:].ravel()).tobytes()
                for y in range(height)]
    else:
        dtype = ">u2" if depth == 16 else np.uint8
        rows = [samples[y].astype(dtype).tobytes() for y in range(height)]
    bpp = max(1, channels * depth // 8)
    raw, prev = bytearray(), bytes(len(rows[0]))
    for y, row in enumerate(rows):
        kind = filters[y % len(filters)]
        out = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append((x - predictor) % 256)
        raw += bytes([kind]) + out
        prev = row
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_FIXED if fixed else zlib.Z_DEFAULT_STRATEGY)
    data = compressor.compress(bytes(raw)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
    if palette is not None:
        png += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    return png + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png_gray(path: Path) -> np.ndarray:
    """Decode the consumer's own 8-bit gray PNG output (stored deflate blocks) with zlib."""
    data = path.read_bytes()
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:]


RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (12, 16, 3))
GRAY16 = RNG.integers(0, 65536, (12, 16))
RGBA16 = RNG.integers(0, 65536, (12, 16, 4))
INDEX4 = RNG.integers(0, 16, (12, 16))
PALETTE = RNG.integers(0, 256, (16, 3))


def _ppm(pixels: np.ndarray) -> bytes:
    return b"P6\n# written by the test\n16 12\n255\n" + pixels.astype(np.uint8).tobytes()


def _pgm16(pixels: np.ndarray, maxval: int = 1000) -> bytes:
    return b"P5 16 12 %d\n" % maxval + (pixels % (maxval + 1)).astype(">u2").tobytes()


# (file bytes, the RGB pixels the consumer must see, channel order and input range of the bundle)
IMAGE_CASES = {
    "png-rgb8-every-filter-bgr-0-255": (png_bytes(RGB8, 2, 8, filters=(0, 1, 2, 3, 4), level=9), RGB8, "BGR", (0.0, 255.0)),
    "png-gray8-stored-blocks": (png_bytes(RGB8[..., 0], 0, 8, level=0), np.repeat(RGB8[..., :1], 3, 2), "RGB", (0.0, 1.0)),
    "png-rgba16-fixed-huffman": (png_bytes(RGBA16, 6, 16, filters=(4, 3, 1), fixed=True), RGBA16[..., :3] >> 8, "RGB", (0.0, 1.0)),
    "png-palette-4bit": (png_bytes(INDEX4, 3, 4, filters=(1, 2), palette=PALETTE), PALETTE[INDEX4], "RGB", (0.0, 1.0)),
    "ppm-with-comment": (_ppm(RGB8), RGB8, "RGB", (0.0, 1.0)),
    "pgm-16bit": (_pgm16(GRAY16), np.repeat((((GRAY16 % 1001) * 255 + 500) // 1000)[..., None], 3, 2), "RGB", (0.0, 1.0)),
}


# Every format through LibTorch; through OpenVINO the normalization (BGR, 0-255 range) and an RGB file.
IMAGE_RUNS = [pytest.param(case, "torchscript", id=case) for case in IMAGE_CASES] + [
    pytest.param(case, "onnx", id=f"{case}-openvino") for case in ("png-rgb8-every-filter-bgr-0-255", "ppm-with-comment")
]


@pytest.mark.parametrize(("case", "target"), IMAGE_RUNS)
def test_image_inputs_are_decoded_and_normalized_from_the_manifest(request, identity_models, tmp_path, case, target):
    binary = request.getfixturevalue("openvino_consumer" if target == "onnx" else "libtorch_consumer")
    data, rgb, space, value_range = IMAGE_CASES[case]
    shape = ["batch", 3, "height", "width"]
    bundle = identity_bundle(tmp_path / "bundle", identity_models, shape=shape, space=space, value_range=value_range, target=target)
    image = tmp_path / ("input.ppm" if data.startswith(b"P") else "input.png")
    image.write_bytes(data)

    done = run(binary, bundle, image, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    pixels = rgb[..., ::-1] if space == "BGR" else rgb
    lo, hi = value_range
    expected = ((pixels / 255.0 * (hi - lo) + lo) - np.array(MEAN)) / np.array(STD)
    actual = np.fromfile(tmp_path / "out" / "mask.f32", dtype=np.float32).reshape(1, 3, 12, 16)
    np.testing.assert_allclose(actual[0].transpose(1, 2, 0), expected, atol=1e-4 * max(1.0, hi))


ERROR_CASES = {
    "missing-bundle": ("no-such-dir", "input.f32", "is not a segexport bundle: it has no readable manifest.json"),
    "tensorrt-bundle": ("trt", "input.f32", "holds a 'trt' artifact; this program runs torchscript, aoti and onnx bundles"),
    "manifest-not-json": ("broken", "input.f32", "is not valid JSON"),
    "raw-input-of-wrong-size": ("static", "short.f32", "has 12 bytes; a float32 tensor of shape 1x3x8x8 has 768"),
    "image-of-wrong-size": ("static", "image.ppm", "is 1x3x12x16 (NxCxHxW) but the bundle takes 1x3x8x8; resize the input"),
    "missing-input": ("static", "absent.f32", "does not exist"),
    "unreadable-input": ("static", "notes.txt", "not a PNG or binary PPM/PGM, and raw float32 files must end in .f32"),
    "corrupt-png": ("static", "corrupt.png", "cannot read PNG"),
    "raw-input-to-dynamic-bundle-without-shape": ("dynamic", "input.f32", "give the raw input's shape with --shape NxCxHxW"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_bundle_or_input_fails_with_one_line(consumer, identity_models, tmp_path, case):
    bundle_kind, input_name, message = ERROR_CASES[case]
    identity_bundle(tmp_path / "static", identity_models, shape=[1, 3, 8, 8])
    identity_bundle(tmp_path / "dynamic", identity_models, shape=["batch", 3, "height", "width"])
    trt = identity_bundle(tmp_path / "trt", identity_models, shape=[1, 3, 8, 8])
    (trt / "manifest.json").write_text((trt / "manifest.json").read_text().replace('"torchscript"', '"trt"'))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text('{"format_version": 1, "target": ')
    np.zeros((1, 3, 8, 8), np.float32).tofile(tmp_path / "input.f32")
    (tmp_path / "short.f32").write_bytes(b"\0" * 12)
    (tmp_path / "image.ppm").write_bytes(_ppm(RGB8))
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "corrupt.png").write_bytes(png_bytes(RGB8, 2, 8)[:60])

    done = run(consumer, tmp_path / bundle_kind, tmp_path / input_name, tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


# ---- manifests the consumer refuses: paths that leave the bundle, formats it does not know, GPU code ---

OUTSIDE = "../outside/model.ts"  # a real TorchScript file beside the bundle: only the containment check stops it
REFUSALS = {
    "artifact-climbs-out": ({"artifact": OUTSIDE}, "manifest \"artifact\" names '../outside/model.ts', a path outside the bundle"),
    "artifact-is-absolute": ({"artifact": "{outside}/model.ts"}, "/outside/model.ts', a path outside the bundle"),
    "artifact-is-a-symlink-out": ({"symlink": "model.ts"}, "names 'model.ts', a symlink that leads outside the bundle"),
    "sha256-key-climbs-out": ({"sha256": {"model.ts": "0" * 64, OUTSIDE: "0" * 64}}, "a \"sha256\" key names '../outside/model.ts'"),
    "reference-climbs-out": ({"reference": "../outside/reference.npz"}, "\"reference\" names '../outside/reference.npz', a path outside"),
    "unknown-format-version": ({"format_version": 99}, "has format_version 99; this program reads 1, 2, 3"),
    "compiled-for-a-gpu": (
        {"format_version": 3, "device": {"kind": "cuda", "name": "NVIDIA H200", "capability": "9.0", "cuda": "12.8",
                                         "torch": "2.11.0", "compiled": True}},
        "compiled for a CUDA GPU (NVIDIA H200); this program runs artifacts on the CPU",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_manifest_leaving_the_bundle_or_of_unknown_format_is_refused_with_exit_code_2(consumer, identity_models, tmp_path, case):
    change, message = REFUSALS[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(identity_models["torchscript"], outside / "model.ts")
    bundle = identity_bundle(tmp_path / "bundle", identity_models, shape=[1, 3, 8, 8])
    manifest = json.loads((bundle / "manifest.json").read_text())
    if "symlink" in change:
        (bundle / change["symlink"]).unlink()
        (bundle / change["symlink"]).symlink_to(outside / "model.ts")
    else:
        manifest.update({k: v.replace("{outside}", str(outside)) if isinstance(v, str) else v for k, v in change.items()})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.zeros((1, 3, 8, 8), np.float32).tofile(tmp_path / "input.f32")

    done = run(consumer, bundle, tmp_path / "input.f32", tmp_path / "out")
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


# ---- ONNX bundles through OpenVINO, judged on the bundle's own reference inputs --------------------


@pytest.fixture(scope="module")
def onnx_fp32_bundle(tmp_path_factory):
    """unet-resnet34 (tiny decoder), dynamic, with the aux label: its reference holds two input shapes."""
    out = tmp_path_factory.mktemp("onnx-fp32") / "bundle"
    return segexport.build(
        "unet", "resnet34", target="onnx", height=64, width=64, dynamic=True, classes=3, aux_classes=4,
        arch_args=tiny_kwargs("unet"), out=out,
    )  # fmt: skip


@pytest.fixture(scope="module")
def onnx_int8_bundle(tmp_path_factory):
    """The onnxruntime-style Q/DQ graph of a briefly trained unet-resnet34, calibrated and judged on photographs."""
    pytest.importorskip("skimage", reason="calibration photos come from scikit-image (a test extra)")
    from trained_model import cached_checkpoint, write_photos

    folder = tmp_path_factory.mktemp("onnx-int8")
    write_photos(folder / "photos", count=INT8_PHOTOS)
    return segexport.build(
        "unet", "resnet34", target="onnx", precision="int8", calib=str(folder / "photos"), classes=3, height=64, width=64,
        checkpoint=str(cached_checkpoint("unet", "resnet34", tiny_kwargs("unet"))),  # the checkpoint test_calibration trains
        arch_args=tiny_kwargs("unet"), out=folder / "bundle", target_options={"calib_count": INT8_PHOTOS},
    )  # fmt: skip


INT8_PHOTOS = 4  # each is one run of the executable; the bundle's parity was judged on the same ones


@pytest.mark.onnx
@pytest.mark.parametrize("bundle_fixture", ["onnx_fp32_bundle", "onnx_int8_bundle"])
def test_onnx_bundle_in_openvino_reproduces_the_stored_eager_outputs(request, openvino_consumer, tmp_path, bundle_fixture):
    bundle = request.getfixturevalue(bundle_fixture)
    m = bundle.manifest
    stored = m.parity
    names = m.export.output_names
    actual, reference = [], []
    with np.load(bundle.path / m.reference) as ref:
        for i in range(len([k for k in ref.files if k.startswith("input_")])):
            x = ref[f"input_{i}"]
            x.tofile(tmp_path / f"input_{i}.f32")
            done = run(openvino_consumer, bundle.path, tmp_path / f"input_{i}.f32", tmp_path / f"out_{i}", "--shape", "x".join(map(str, x.shape)))
            assert done.returncode == 0, done.stderr
            reference.append({name: ref[f"output_{i}_{name}"] for name in names})
            actual.append({name: np.fromfile(tmp_path / f"out_{i}" / f"{name}.f32", np.float32).reshape(reference[-1][name].shape) for name in names})

    report = parity_report(actual, reference, stored.policy, names, "segexport_infer-openvino", stored.input_shapes)
    assert report.passed, report.summary()
