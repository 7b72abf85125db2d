"""The C++ consumer in examples/cpp: builds against the torch wheel's LibTorch and reproduces eager PyTorch.

The build goes to a cache folder (``~/.cache/segexport/cpp-build-...``), so only the
first run on a machine pays for it (about 15 s of compiling on 2 cores). Without
cmake, make or a C++ compiler the tests skip, except on CI (CI=true), where they fail.
"""

from __future__ import annotations

import fcntl
import hashlib
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
from segexport.parity import compare_outputs
from segexport.pipeline import BuildRequest, create_from_request
from segexport.targets.aoti import cache_root

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "cpp"
TOOLS = ("cmake", "make")


def _missing_toolchain() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (c++/g++/clang++ or $CXX)")
    return f"the C++ consumer needs {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def consumer() -> Path:
    """The built segexport_infer, from a build folder cached per torch version and source checkout."""
    missing = _missing_toolchain()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}; CI must run this test (apt-get install cmake make g++)")
        pytest.skip(missing)
    key = hashlib.sha256(f"{SOURCE}|{torch.__version__}|{sys.executable}".encode()).hexdigest()[:12]
    build = cache_root() / f"cpp-build-{key}"
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:  # one build at a time (pytest-xdist, parallel sessions)
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = [
            "cmake", "-S", str(SOURCE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            # Compiling LibTorch's headers dominates; the optimiser adds 10% and the test needs no speed.
            "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O0",
        ]
        for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(cmd[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return build / "segexport_infer"


def run(binary: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def check_like_parity(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """atol 1e-4 scaled by max(1, RMS of the reference), as segexport.parity scales it."""
    result = compare_outputs(name, [actual], [expected], atol=1e-4, rtol=0.0)
    assert result.within_tolerance, f"{name}: max abs {result.max_abs:.3g} over scaled atol {1e-4 * result.atol_scale:.3g}"


def test_torchscript_bundle_output_matches_python_eager(consumer, tmp_path):
    options = {"height": 64, "width": 64, "classes": 3, "aux_classes": 4}
    bundle = segexport.build("unet", "resnet34", target="torchscript", out=tmp_path / "bundle", **options)
    x = np.random.default_rng(1234).standard_normal((1, 3, 64, 64)).astype(np.float32)
    x.tofile(tmp_path / "input.f32")

    done = run(consumer, bundle.path, tmp_path / "input.f32", tmp_path / "out")
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
def test_aoti_bundle_runs_through_the_package_loader(consumer, aoti_unet_bundle, tmp_path):
    x = np.random.default_rng(7).standard_normal((2, 3, 96, 64)).astype(np.float32)
    x.tofile(tmp_path / "input.raw")

    done = run(consumer, aoti_unet_bundle.path, tmp_path / "input.raw", tmp_path / "out", "--shape", "2x3x96x64")
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


@pytest.fixture(scope="module")
def identity_ts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("identity") / "model.ts"
    torch.jit.save(torch.jit.trace(Identity(), torch.zeros(1, 3, 8, 8)), str(path))
    return path


def identity_bundle(root: Path, model: Path, *, shape: list, space: str = "RGB", value_range: tuple = (0.0, 1.0)) -> Path:
    """A hand-written bundle: just the manifest fields the consumer reads, and the identity model."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, root / "model.ts")
    manifest = {
        "format_version": 1,
        "target": "torchscript",
        "artifact": "model.ts",
        "arch": "identity",
        "arch_args": {"activation": None},
        "inputs": [{"name": "input", "shape": shape, "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "mask", "shape": shape, "dtype": "float32", "layout": "NCHW"}],
        "normalization": {"mean": list(MEAN), "std": list(STD), "input_space": space, "input_range": list(value_range)},
        "export": {"dynamic": isinstance(shape[2], str), "stride": 1},
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


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_inputs_are_decoded_and_normalized_from_the_manifest(consumer, identity_ts, tmp_path, case):
    data, rgb, space, value_range = IMAGE_CASES[case]
    bundle = identity_bundle(tmp_path / "bundle", identity_ts, shape=["batch", 3, "height", "width"], space=space, value_range=value_range)
    image = tmp_path / ("input.ppm" if data.startswith(b"P") else "input.png")
    image.write_bytes(data)

    done = run(consumer, bundle, image, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    pixels = rgb[..., ::-1] if space == "BGR" else rgb
    lo, hi = value_range
    expected = ((pixels / 255.0 * (hi - lo) + lo) - np.array(MEAN)) / np.array(STD)
    actual = np.fromfile(tmp_path / "out" / "mask.f32", dtype=np.float32).reshape(1, 3, 12, 16)
    np.testing.assert_allclose(actual[0].transpose(1, 2, 0), expected, atol=1e-4 * max(1.0, hi))


ERROR_CASES = {
    "missing-bundle": ("no-such-dir", "input.f32", "is not a segexport bundle: it has no readable manifest.json"),
    "onnx-bundle": ("onnx", "input.f32", "holds a 'onnx' artifact; this program runs torchscript and aoti bundles"),
    "manifest-not-json": ("broken", "input.f32", "is not valid JSON"),
    "raw-input-of-wrong-size": ("static", "short.f32", "has 12 bytes; a float32 tensor of shape 1x3x8x8 has 768"),
    "image-of-wrong-size": ("static", "image.ppm", "is 1x3x12x16 (NxCxHxW) but the bundle takes 1x3x8x8; resize the input"),
    "missing-input": ("static", "absent.f32", "does not exist"),
    "unreadable-input": ("static", "notes.txt", "not a PNG or binary PPM/PGM, and raw float32 files must end in .f32"),
    "corrupt-png": ("static", "corrupt.png", "cannot read PNG"),
    "raw-input-to-dynamic-bundle-without-shape": ("dynamic", "input.f32", "give the raw input's shape with --shape NxCxHxW"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_bundle_or_input_fails_with_one_line(consumer, identity_ts, tmp_path, case):
    bundle_kind, input_name, message = ERROR_CASES[case]
    identity_bundle(tmp_path / "static", identity_ts, shape=[1, 3, 8, 8])
    identity_bundle(tmp_path / "dynamic", identity_ts, shape=["batch", 3, "height", "width"])
    onnx = identity_bundle(tmp_path / "onnx", identity_ts, shape=[1, 3, 8, 8])
    (onnx / "manifest.json").write_text((onnx / "manifest.json").read_text().replace('"torchscript"', '"onnx"'))
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
