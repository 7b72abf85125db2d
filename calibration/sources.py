"""Calibration data: images from a folder, prepared exactly as the encoder expects, or seeded noise.

The images are what int8 ranges are computed from and what int8 parity is judged on,
so they go through the same preparation a deployed model sees: decode, resize to the
export size, channel order and value range of the encoder's pretrained settings, then
``(x - mean) / std``.

Order and sampling are deterministic: files are sorted by their path relative to the
folder, and ``count`` of them are taken evenly spaced over that list (a folder sorted
by class or by time is then covered end to end, and the same folder always gives the
same set). Random inputs are used only when asked for with ``calib="random"``.

int8 is judged on images calibration did not see. With ``val`` (``--val DIR``) those
are that folder's images and calibration uses the whole ``--calib`` folder; otherwise
``--calib`` is split in two by :func:`split_images`: a file is held out when the
sha256 of its path relative to the folder, read as a fraction of 2**64 from its first
8 bytes, is below ``val_fraction`` (default 0.25). Each file's side depends on its own
name only, so the same folder always gives the same split, adding a file never moves
another, and renaming or reordering the listing changes nothing else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.digests import sha256_file
from segexport.checks import check_fraction, check_int
from segexport.errors import InvalidInputError, closest

if TYPE_CHECKING:
    from segexport.arch.encoders.weights import PretrainedSettings
    from segexport.targets.base import ExportSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
METHODS = ("minmax", "entropy", "percentile")
RANDOM = "random"
DEFAULT_COUNT = 32
DEFAULT_METHOD = "minmax"
#: The share of a --calib folder held out to judge int8 on, and the most held-out images used.
DEFAULT_VAL_FRACTION = 0.25
DEFAULT_VAL_COUNT = 32
FALLBACK_CHOICES = ("on", "off")
#: ITU-R 601-2 luma weights, as Pillow's "L" conversion, for 1-channel models fed colour images.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


#: The int8 options of a build: key → the CLI flag that sets it (Python-only keys name themselves).
CALIBRATION_OPTIONS = {
    "calib": "--calib",
    "calib_count": "--calib-count",
    "calib_method": "--calib-method",
    "calib_cache": "--calib-cache",
    "calib_percentile": "calib_percentile",
    "val": "--val",
    "val_fraction": "val_fraction",
    "val_count": "val_count",
    "int8_fallback": "--int8-fallback",
    "int8_min_iou": "int8_min_iou",
    "int8_max_float_share": "int8_max_float_share",
    "int8_speed_runs": "int8_speed_runs",
}
#: The held-out mean IoU int8 must keep by default (agreement comes from the parity policy).
DEFAULT_MIN_IOU = 0.95
#: Past this share of the quantized multiply-adds in float, int8 is not worth shipping.
DEFAULT_MAX_FLOAT_SHARE = 0.5
#: Timed runs of int8 against fp32 for the manifest's speed record.
DEFAULT_SPEED_RUNS = 5


@dataclass(frozen=True)
class CalibrationConfig:
    """The int8 settings of one build, validated: calibration data, held-out images, accuracy budget.

    Attributes:
        source: a folder of images, or ``"random"``.
        count: how many images (not batches) to calibrate on.
        method: ``minmax``, ``entropy`` or ``percentile``.
        cache: the range cache file, or None for the default beside the bundle.
        percentile: the kept percentile for ``percentile``.
        val: a folder of held-out images to judge int8 on, or None to split ``source``.
        val_fraction: the share of ``source`` held out when ``val`` is None.
        val_count: the most held-out images to judge on (evenly spaced over them).
        fallback: keep the most int8-hostile layers in float until the held-out budget holds.
        min_iou: least mean IoU between int8 and fp32 masks on the held-out set.
        max_float_share: most of the quantized layers' multiply-adds the fallback may put back in float.
        speed_runs: timed runs of int8 against fp32 for the manifest (0: not timed).
    """

    source: str
    count: int = DEFAULT_COUNT
    method: str = DEFAULT_METHOD
    cache: Path | None = None
    percentile: float = 99.99
    val: str | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    val_count: int = DEFAULT_VAL_COUNT
    fallback: bool = True
    min_iou: float = DEFAULT_MIN_IOU
    max_float_share: float = DEFAULT_MAX_FLOAT_SHARE
    speed_runs: int = DEFAULT_SPEED_RUNS

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> CalibrationConfig:
        """Read and check the int8 options (keys of :data:`CALIBRATION_OPTIONS`; None keeps a default)."""
        unknown_keys = sorted(set(opts) - set(CALIBRATION_OPTIONS))
        if unknown_keys:
            raise InvalidInputError(f"Unknown int8 option {unknown_keys[0]!r}; allowed: {', '.join(CALIBRATION_OPTIONS)}.")
        source = opts.get("calib")
        if not source:
            raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
        source = str(source)
        count = check_int("--calib-count", _default(opts, "calib_count", DEFAULT_COUNT))
        method = str(opts.get("calib_method") or DEFAULT_METHOD).lower()
        if method not in METHODS:
            raise InvalidInputError(f"Unknown --calib-method {method!r}; allowed: {', '.join(METHODS)}.{closest(method, METHODS)}")
        if source != RANDOM:
            folder = Path(source)
            if not folder.is_dir():
                hint = " (use --calib random for seeded random inputs)" if source.lower() == RANDOM else ""
                raise InvalidInputError(f"--calib {source!r} is not a folder of images nor 'random'{hint}.")
        percentile = float(_default(opts, "calib_percentile", 99.99))
        if not 50.0 < percentile <= 100.0:
            raise InvalidInputError(f"calib_percentile must be in (50, 100]; got {percentile!r}.")
        cache = opts.get("calib_cache")
        val = opts.get("val")
        if val is not None:
            val = str(val)
            if source == RANDOM:
                raise InvalidInputError(f"--val {val!r} needs --calib DIR: random calibration inputs are judged on held-out noise.")
            if not Path(val).is_dir():
                raise InvalidInputError(f"--val {val!r} is not a folder of images.")
            if Path(val).resolve() == Path(source).resolve():
                raise InvalidInputError(
                    f"--val {val!r} is the --calib folder; give a folder of other images, or drop --val to split --calib."
                )
        fraction = check_fraction("val_fraction", _default(opts, "val_fraction", DEFAULT_VAL_FRACTION), open_ends=True)
        val_count = check_int("val_count", _default(opts, "val_count", DEFAULT_VAL_COUNT))
        fallback = _default(opts, "int8_fallback", "on")
        fallback = {True: "on", False: "off"}.get(fallback, fallback)
        if fallback not in FALLBACK_CHOICES:
            raise InvalidInputError(
                f"--int8-fallback must be one of {', '.join(FALLBACK_CHOICES)}; got {fallback!r}.{closest(str(fallback), FALLBACK_CHOICES)}"
            )
        return cls(
            source=source,
            count=count,
            method=method,
            cache=Path(cache) if cache else None,
            percentile=percentile,
            val=val,
            val_fraction=fraction,
            val_count=val_count,
            fallback=fallback == "on",
            min_iou=check_fraction("int8_min_iou", _default(opts, "int8_min_iou", DEFAULT_MIN_IOU)),
            max_float_share=check_fraction("int8_max_float_share", _default(opts, "int8_max_float_share", DEFAULT_MAX_FLOAT_SHARE)),
            speed_runs=check_int("int8_speed_runs", _default(opts, "int8_speed_runs", DEFAULT_SPEED_RUNS), minimum=0),
        )


def _default(opts: Mapping[str, Any], key: str, default: Any) -> Any:
    value = opts.get(key)
    return default if value is None else value


@dataclass
class CalibrationData:
    """Prepared image batches and where they came from (for the manifest and the cache key).

    Used for both sets of an int8 build: the calibration set and the held-out set.

    Attributes:
        inputs: arrays of the spec's input shape (batch, C, H, W), float32, normalized.
        source: ``"images"`` or ``"random"``.
        images: how many distinct images the batches hold.
        files: the images used, relative to their folder, in order.
        digests: sha256 of each file's bytes, in the same order.
        preprocessing: resize and normalization applied (part of the cache key).
        selection: how the images were chosen (the split rule, or the --val folder).
    """

    inputs: list[np.ndarray]
    source: str
    images: int
    files: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    selection: str = ""

    @property
    def digest(self) -> str:
        """One sha256 over the set: each file's name and content digest, or the noise's bytes."""
        h = hashlib.sha256()
        if self.files:
            for name, digest in zip(self.files, self.digests):
                h.update(f"{name}\0{digest}\n".encode())
        else:
            for x in self.inputs:
                h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the set (no absolute paths)."""
        out: dict[str, Any] = {"source": self.source, "random_inputs": self.source == RANDOM, "images": self.images}
        if self.selection:
            out["selection"] = self.selection
        out["digest"] = f"sha256:{self.digest}"
        if self.files:
            out["files"] = list(self.files)
        out["preprocessing"] = self.preprocessing
        return out


def held_out_score(name: str) -> float:
    """Where ``name`` (a path relative to its folder) falls in [0, 1): the first 8 bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_images(names: Sequence[str], fraction: float = DEFAULT_VAL_FRACTION) -> tuple[list[int], list[int]]:
    """Split ``names`` into (calibration, held-out) index lists by each name's hash (see the module docstring).

    A name is held out when :func:`held_out_score` is below ``fraction``. Small folders
    where the rule leaves a side empty give that side the name nearest the cut, so both
    sides always hold at least one image. Order within each side follows ``names``.

    Raises:
        InvalidInputError: fewer than two names (nothing to hold out).
    """
    if len(names) < 2:
        raise InvalidInputError(
            f"Holding out images to judge int8 needs at least 2 calibration images; the folder has {len(names)}. "
            "Add images, or pass --val DIR with images of the same kind."
        )
    scores = [held_out_score(n) for n in names]
    held = {i for i, s in enumerate(scores) if s < fraction}
    if not held:
        held = {min(range(len(names)), key=scores.__getitem__)}
    elif len(held) == len(names):
        held.discard(max(range(len(names)), key=scores.__getitem__))
    return [i for i in range(len(names)) if i not in held], sorted(held)


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


def _config_of(spec: ExportSpec) -> CalibrationConfig:
    if spec.calibration is None:
        raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
    return spec.calibration


def load_calibration(spec: ExportSpec, config: CalibrationConfig | None = None) -> CalibrationData:
    """The calibration batches for ``spec``: its share of the folder prepared for the encoder, or seeded noise."""
    config = config or _config_of(spec)
    if config.is_random:
        seed = spec.seed
        return _random_set(spec, config.count, seed, "seeded standard normal noise")
    folder = Path(config.source)
    names = _image_names(folder, "--calib")
    if config.val is None:
        names = [names[i] for i in split_images(names, config.val_fraction)[0]]
        rule = f"the {1 - config.val_fraction:.0%} of --calib not held out (sha256 of each file's path)"
    else:
        rule = "all of --calib (judged on --val)"
    chosen = evenly_spaced(names, config.count)
    return _image_set(spec, folder, chosen, f"{rule}; {len(chosen)} of {len(names)} evenly spaced")


def load_validation(spec: ExportSpec, config: CalibrationConfig | None = None) -> CalibrationData:
    """The held-out batches int8 is judged on: the --val folder, or the part of --calib that calibration does not use.

    With ``--calib random`` they are seeded noise from another seed than the calibration noise.

    Raises:
        InvalidInputError: an image of --val is also in the calibration set (same content).
    """
    config = config or _config_of(spec)
    if config.is_random:
        seed = spec.seed + 1
        count = min(config.val_count, max(1, round(config.count * config.val_fraction)))
        return _random_set(spec, count, seed, f"seeded standard normal noise (seed {seed}, not the calibration seed)")
    if config.val is None:
        folder = Path(config.source)
        names = _image_names(folder, "--calib")
        names = [names[i] for i in split_images(names, config.val_fraction)[1]]
        rule = f"held out of --calib: sha256 of each file's path below {config.val_fraction:g}"
    else:
        folder = Path(config.val)
        names = _image_names(folder, "--val")
        rule = "--val"
    chosen = evenly_spaced(names, config.val_count)
    data = _image_set(spec, folder, chosen, f"{rule}; {len(chosen)} of {len(names)} evenly spaced")
    if config.val is not None:
        calib = load_calibration(spec, config)
        shared = sorted(set(data.digests) & set(calib.digests))
        if shared:
            same = [n for n, d in zip(data.files, data.digests) if d in shared]
            raise InvalidInputError(
                f"--val holds {len(same)} image(s) that calibration also uses (same content), e.g. {same[0]!r}; "
                "int8 must be judged on images it was not calibrated on."
            )
    return data


def _image_names(folder: Path, flag: str) -> list[str]:
    found = list_images(folder)
    if not found:
        raise InvalidInputError(f"{flag} {str(folder)!r} holds no images; allowed suffixes: {', '.join(IMAGE_SUFFIXES)}.")
    return [p.relative_to(folder).as_posix() for p in found]


def _random_set(spec: ExportSpec, count: int, seed: int, selection: str) -> CalibrationData:
    c, h, w = spec.in_channels, spec.height, spec.width
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, c, h, w)).astype(np.float32)
    prep = {"height": h, "width": w, "in_channels": c, "seed": seed, "batch": spec.batch}
    return CalibrationData(inputs=batches(images, spec.batch), source=RANDOM, images=count, preprocessing=prep, selection=selection)


def _image_set(spec: ExportSpec, folder: Path, names: Sequence[str], selection: str) -> CalibrationData:
    from segexport.arch.encoders import get_pretrained_settings

    c, h, w = spec.in_channels, spec.height, spec.width
    if spec.encoder is None:
        raise InvalidInputError("Calibration images need the encoder's name (its normalization): the spec has none.")
    settings = get_pretrained_settings(spec.encoder)
    paths = [folder / name for name in names]
    prepared = np.stack([resize(match_channels(read_image(p), c, name), h, w) for p, name in zip(paths, names)])
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
        images=len(names),
        files=list(names),
        digests=[sha256_file(p) for p in paths],
        preprocessing=prep,
        selection=selection,
    )
