"""Calibration data: images from a folder, prepared exactly as the encoder expects, or seeded noise.

The images are what int8 ranges are computed from and what int8 parity is judged on,
so they go through the same preparation a deployed model sees: decode, resize to the
export size, channel order and value range of the encoder's pretrained settings, then
``(x - mean) / std``.

Order and sampling are deterministic: files are sorted by their path relative to the
folder, and ``count`` of them are taken evenly spaced over that list (a folder sorted
by class or by time is then covered end to end, and the same folder always gives the
same set). Random inputs are used only when asked for with ``calib="random"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import InvalidInputError, closest

if TYPE_CHECKING:
    from segexport.arch.encoders.weights import PretrainedSettings
    from segexport.targets.base import ExportSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
METHODS = ("minmax", "entropy", "percentile")
RANDOM = "random"
DEFAULT_COUNT = 32
DEFAULT_METHOD = "minmax"
#: ITU-R 601-2 luma weights, as Pillow's "L" conversion, for 1-channel models fed colour images.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class CalibrationConfig:
    """The calibration settings of one build, validated.

    Attributes:
        source: a folder of images, or ``"random"``.
        count: how many images (not batches) to use.
        method: ``minmax``, ``entropy`` or ``percentile``.
        cache: the range cache file, or None for the default beside the bundle.
        percentile: the kept percentile for ``percentile``.
    """

    source: str
    count: int = DEFAULT_COUNT
    method: str = DEFAULT_METHOD
    cache: Path | None = None
    percentile: float = 99.99

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM

    @classmethod
    def from_spec(cls, spec: ExportSpec) -> CalibrationConfig:
        """Read and check ``calib``, ``calib_count``, ``calib_method``, ``calib_cache`` from the spec's options."""
        opts = spec.options
        source = opts.get("calib")
        if not source:
            raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
        source = str(source)
        count = opts.get("calib_count")
        count = DEFAULT_COUNT if count is None else count
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidInputError(f"--calib-count must be an integer >= 1; got {count!r}.")
        method = str(opts.get("calib_method") or DEFAULT_METHOD).lower()
        if method not in METHODS:
            raise InvalidInputError(f"Unknown --calib-method {method!r}; allowed: {', '.join(METHODS)}.{closest(method, METHODS)}")
        if source != RANDOM:
            folder = Path(source)
            if not folder.is_dir():
                hint = " (use --calib random for seeded random inputs)" if source.lower() == RANDOM else ""
                raise InvalidInputError(f"--calib {source!r} is not a folder of images nor 'random'{hint}.")
        percentile = float(opts.get("calib_percentile", 99.99))
        if not 50.0 < percentile <= 100.0:
            raise InvalidInputError(f"calib_percentile must be in (50, 100]; got {percentile!r}.")
        cache = opts.get("calib_cache")
        return cls(source=source, count=count, method=method, cache=Path(cache) if cache else None, percentile=percentile)


@dataclass
class CalibrationData:
    """Prepared calibration batches and where they came from (for the manifest and the cache key).

    Attributes:
        inputs: arrays of the spec's input shape (batch, C, H, W), float32, normalized.
        source: ``"images"`` or ``"random"``.
        images: how many distinct images the batches hold.
        files: the images used, relative to the folder, in order.
        digests: sha256 of each file's bytes, in the same order.
        preprocessing: resize and normalization applied (part of the cache key).
    """

    inputs: list[np.ndarray]
    source: str
    images: int
    files: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the calibration set (no absolute paths)."""
        out: dict[str, Any] = {"source": self.source, "random_inputs": self.source == RANDOM, "images": self.images}
        if self.files:
            out["files"] = list(self.files)
        out["preprocessing"] = self.preprocessing
        return out


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted by relative path."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def evenly_spaced(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    n = len(items)
    if count >= n:
        return list(items)
    return [items[(i * n) // count] for i in range(count)]


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` to an HxWxC float32 array in [0, 1] (C is 1 or 3, or the .npy's own channels).

    ``.npy`` files hold HxW or HxWxC pixel arrays: uint8 (0-255), uint16 (0-65535) or
    float already in [0, 1].
    """
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(img, dtype=np.uint16 if img.mode.startswith("I;16") else np.int32)
                elif img.mode in ("L", "1"):
                    arr = np.asarray(img.convert("L"))
                else:
                    arr = np.asarray(img.convert("RGB"))  # drops alpha, expands palettes
    except Exception as exc:  # Pillow and numpy raise many types for unreadable files
        raise InvalidInputError(f"Cannot read calibration image {str(path)!r}: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"Calibration image {str(path)!r} has shape {arr.shape}; expected HxW or HxWxC.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise InvalidInputError(f"Calibration image {str(path)!r} has dtype {arr.dtype}; allowed: uint8, uint16, float.")


def match_channels(image: np.ndarray, in_channels: int, name: str) -> np.ndarray:
    """Convert an HxWxC image to the model's channel count (grey → RGB, RGB → grey, RGBA → RGB)."""
    c = image.shape[2]
    if c == in_channels:
        return image
    if in_channels == 3 and c == 1:
        return np.repeat(image, 3, axis=2)
    if in_channels == 3 and c == 4:
        return image[:, :, :3]
    if in_channels == 1 and c in (3, 4):
        return (image[:, :, :3] @ _LUMA)[:, :, None]
    raise InvalidInputError(
        f"Calibration image {name!r} has {c} channels; the model takes {in_channels}. "
        f"Give .npy arrays of shape HxWx{in_channels} for models with {in_channels} input channels."
    )


def normalize(images: np.ndarray, settings: PretrainedSettings) -> np.ndarray:
    """NCHW images in [0, 1] → the encoder's input: channel order, value range, ``(x - mean) / std``.

    Follows SMP's ``preprocess_input``: BGR encoders get the channels reversed, a
    [0, 255] input range scales the values (mean and std are then in that range too).
    With other channel counts than the settings' three, one channel uses the average
    mean/std and more channels repeat them cyclically.
    """
    x = images.astype(np.float32, copy=True)
    c = x.shape[1]
    if settings.input_space.upper() == "BGR" and c == 3:
        x = x[:, ::-1]
    low, high = settings.input_range
    x = low + x * (high - low)
    mean, std = np.asarray(settings.mean, dtype=np.float32), np.asarray(settings.std, dtype=np.float32)
    if c != len(mean):
        mean, std = (mean.mean(keepdims=True), std.mean(keepdims=True)) if c == 1 else (np.resize(mean, c), np.resize(std, c))
    return np.ascontiguousarray((x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1), dtype=np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC → CxHxW at the export size: bilinear, antialiased when shrinking (torchvision's default)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    if t.shape[-2:] != (height, width):
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp_(0.0, 1.0).numpy()


def batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split NCHW images into arrays of exactly ``batch``; the last one is filled from the start."""
    n = images.shape[0]
    out = []
    for start in range(0, n, batch):
        idx = [(start + i) % n for i in range(batch)]
        out.append(np.ascontiguousarray(images[idx]))
    return out


def load_calibration(spec: ExportSpec, config: CalibrationConfig | None = None) -> CalibrationData:
    """The calibration batches for ``spec``: the folder's images prepared for the encoder, or seeded noise."""
    config = config or CalibrationConfig.from_spec(spec)
    c, h, w = spec.in_channels, spec.height, spec.width
    if config.is_random:
        rng = np.random.default_rng(int(spec.options.get("seed", 0)))
        images = rng.standard_normal((config.count, c, h, w)).astype(np.float32)
        prep = {"height": h, "width": w, "in_channels": c, "seed": int(spec.options.get("seed", 0)), "batch": spec.batch}
        return CalibrationData(inputs=batches(images, spec.batch), source=RANDOM, images=config.count, preprocessing=prep)

    from segexport.arch.encoders import get_pretrained_settings

    folder = Path(config.source)
    found = list_images(folder)
    if not found:
        raise InvalidInputError(
            f"--calib {str(folder)!r} holds no images; allowed suffixes: {', '.join(IMAGE_SUFFIXES)}."
        )
    chosen = evenly_spaced(found, config.count)
    settings = get_pretrained_settings(spec.options["encoder"])
    names = [p.relative_to(folder).as_posix() for p in chosen]
    prepared = np.stack(
        [resize(match_channels(read_image(p), c, name), h, w) for p, name in zip(chosen, names)]
    )
    prep = {
        "resize": "bilinear, antialiased, to the export size",
        "height": h,
        "width": w,
        "in_channels": c,
        "batch": spec.batch,
        **settings.normalization(),
    }
    return CalibrationData(
        inputs=batches(normalize(prepared, settings), spec.batch),
        source="images",
        images=len(chosen),
        files=names,
        digests=[_sha256(p) for p in chosen],
        preprocessing=prep,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
