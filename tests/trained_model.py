"""A briefly trained model and real photographs, for int8 figures that mean something.

Random weights on random noise say little about quantization: activations of a
random network have no structure and its "masks" are noise. Instead, tests and
benchmarks train a model for a few seconds on a synthetic segmentation task and
calibrate/judge int8 on real photographs (scikit-image's bundled samples, no network).

Two tasks (``task=``): ``"luminance"`` (the default, below) and ``"proxy"``
(proxy_task.py: objects cut from photographs pasted onto others, 4 classes), which
judges int8 on boundaries and small objects.

The luminance task: label each pixel dark / mid / bright by the luminance of its blurred
neighbourhood. It needs spatial context (the blur), is learnable in tens of steps,
and on photographs gives structured, multi-class masks whose boundaries int8 can move.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: skimage.data photographs bundled with scikit-image (no download): colour first, then grey.
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
    "motorcycle_left", "motorcycle_right", "camera", "coins", "moon",
)  # fmt: skip
CLASSES = 3
#: Luminance thresholds between dark / mid / bright.
THRESHOLDS = (0.35, 0.6)


def photo(name: str) -> np.ndarray:
    """One bundled skimage photograph as uint8 HxW or HxWx3."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def write_photos(folder: Path, count: int | None = None, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Save the first ``count`` photographs into ``folder``, cycling through ``formats`` (png/jpg/bmp/npy)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(PHOTOS[: count or len(PHOTOS)]):
        suffix = formats[i % len(formats)]
        path = folder / f"{name}.{suffix}"
        arr = photo(name)
        if suffix == "npy":
            np.save(path, arr)
        else:
            Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def synthetic_images(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images in [0, 1] (NCHW float32) and their dark/mid/bright labels (NHW int64).

    Images are smooth random colour fields with grey or coloured texture at three scales,
    plus random noisy rectangles and discs; labels threshold the luminance blurred over
    5x5 pixels.
    """
    import torch
    import torch.nn.functional as F

    # Smooth colour fields, then texture at several scales (photographs are full of it, and a
    # model that never saw texture meets photographs with exploding activations).
    images = F.interpolate(torch.from_numpy(rng.random((n, 3, 6, 6), dtype=np.float32)), size=(size, size), mode="bicubic").numpy()
    for cells in (size // 16, size // 4, size):
        amplitude = rng.uniform(0.0, 0.25, (n, 1, 1, 1)).astype(np.float32)
        grey = rng.random((n, 1, 1, 1)) < 0.5  # grey texture or coloured texture
        field = rng.normal(0.0, 1.0, (n, 3, max(cells, 2), max(cells, 2))).astype(np.float32)
        field = np.where(grey, field[:, :1], field)
        images += amplitude * F.interpolate(torch.from_numpy(field), size=(size, size), mode="bilinear").numpy()
    yy, xx = np.mgrid[0:size, 0:size]
    for img in images:
        for _ in range(int(rng.integers(2, 6))):
            colour = rng.random(3, dtype=np.float32)[:, None]
            cy, cx = rng.integers(0, size, 2)
            r = int(rng.integers(size // 10, size // 3))
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if rng.random() < 0.5 else (abs(yy - cy) < r) & (abs(xx - cx) < r)
            img[:, shape] = colour + rng.normal(0.0, rng.uniform(0.0, 0.15), (3, int(shape.sum()))).astype(np.float32)
    images = np.clip(images, 0.0, 1.0)
    luma = torch.from_numpy(np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), images, axes=([0], [1])))[:, None]
    blurred = F.avg_pool2d(F.pad(luma, (2, 2, 2, 2), mode="replicate"), 5, stride=1)[:, 0].numpy()
    labels = np.digitize(blurred, THRESHOLDS).astype(np.int64)
    return images.astype(np.float32), labels


def train_checkpoint(
    path: Path,
    arch: str,
    encoder: str,
    *,
    arch_args: Mapping[str, Any] | None = None,
    size: int = 64,
    steps: int = 40,
    batch: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    task: str = "luminance",
) -> dict[str, float]:
    """Train ``arch``/``encoder`` on ``task`` and save its state_dict to ``path``.

    ``task`` is ``"luminance"`` (3 classes, :func:`synthetic_images`) or ``"proxy"``
    (:data:`proxy_task.CLASSES` classes, :func:`proxy_task.proxy_images`, train split).
    Inputs are normalized with the encoder's settings, as the calibration images are.
    Returns the final training loss and pixel accuracy on a fresh batch (for the proxy
    task: of its validation split).
    """
    import torch

    import segexport

    settings = segexport.get_pretrained_settings(encoder)
    threads = torch.get_num_threads()
    # One thread: batches this small gain little from more, and on a busy CI runner OpenMP's
    # spin-waiting threads made training five times slower (measured on 2 shared cores).
    torch.set_num_threads(1)
    try:
        return _train(path, arch, encoder, settings, arch_args, size, steps, batch, lr, seed, task)
    finally:
        torch.set_num_threads(threads)


def task_classes(task: str) -> int:
    """The number of classes of a training task."""
    if task == "luminance":
        return CLASSES
    if task == "proxy":
        from proxy_task import CLASSES as PROXY_CLASSES

        return PROXY_CLASSES
    raise ValueError(f"task must be 'luminance' or 'proxy'; got {task!r}")


def _train(
    path: Path,
    arch: str,
    encoder: str,
    settings: Any,
    arch_args: Mapping[str, Any] | None,
    size: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    task: str,
) -> dict[str, float]:
    import torch

    import segexport
    from segexport.calibration.sources import normalize

    classes = task_classes(task)
    if task == "proxy":
        from proxy_task import proxy_images

        def draw(rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
            return proxy_images(rng, n, size, split)
    else:

        def draw(rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
            return synthetic_images(rng, n, size)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = segexport.create_model(arch, encoder, encoder_weights=None, classes=classes, **dict(arch_args or {}))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        images, labels = draw(rng, batch)
        logits = model(torch.from_numpy(normalize(images, settings)))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels = draw(rng, batch, "val")
    with torch.no_grad():
        pred = model(torch.from_numpy(normalize(images, settings))).argmax(1).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return {"loss": float(loss.detach()), "accuracy": float(np.mean(pred == labels))}


_CHECKPOINTS: dict[tuple[Any, ...], Path] = {}


def cached_checkpoint(arch: str, encoder: str, arch_args: Mapping[str, Any] | None = None, **train: Any) -> Path:
    """:func:`train_checkpoint` once per process for the same arguments (a read-only file, reused by test modules)."""
    import atexit
    import shutil
    import tempfile

    key = (arch, encoder, repr(sorted((arch_args or {}).items())), repr(sorted(train.items())))
    if key not in _CHECKPOINTS:
        folder = Path(tempfile.mkdtemp(prefix="segexport-trained-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / f"{arch}-{encoder}.pth"
        train_checkpoint(path, arch, encoder, arch_args=arch_args, **train)
        _CHECKPOINTS[key] = path
    return _CHECKPOINTS[key]


_BUNDLES: dict[str, Any] = {}


def cached_bundle(name: str, **build: Any) -> Any:
    """``segexport.build(**build)`` once per process under ``name`` (into a temporary folder); treat it as read-only.

    Tests that change a bundle copy its folder first. ``checkpoint_seed=N`` first saves
    the randomly initialised model of seed N as the checkpoint the bundle is built from
    (no training: for tests that need a bundle built from a checkpoint, not a good model).
    """
    import atexit
    import shutil
    import tempfile

    import segexport

    if name not in _BUNDLES:
        folder = Path(tempfile.mkdtemp(prefix="segexport-bundle-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        seed = build.pop("checkpoint_seed", None)
        if seed is not None:
            import torch

            torch.manual_seed(seed)
            model = segexport.create_model(
                build["arch"], build["encoder"], encoder_weights=None, classes=build.get("classes", 1), **dict(build.get("arch_args") or {})
            )
            build["checkpoint"] = str(folder / "weights.pth")
            torch.save(model.state_dict(), build["checkpoint"])
        _BUNDLES[name] = segexport.build(build.pop("arch"), build.pop("encoder"), out=folder / "bundle", **build)
    return _BUNDLES[name]
