"""A proxy segmentation task closer to real data: objects cut from photographs, pasted onto other photographs.

Each image is a crop of a background photograph with three to seven objects pasted on
it. An object is an irregular blob (a thresholded smooth random field inside an
ellipse) filled with a crop of one of three object photographs; its class is the
photograph it was cut from (1 chelsea's fur, 2 the sky and structure of rocket, 3
the stained tissue of immunohistochemistry), background is class 0. Objects range from a few pixels to half
the image, overlap, and cut across the background's own edges, so a model has to
tell textures apart and place boundaries; int8 is then judged on boundaries and small
objects, not on luminance bands (the task of trained_model.py, still used where it
serves).

The photographs are scikit-image's bundled samples (no download). ``train`` crops
come from the left 60% of every photograph and ``val`` crops from the right 40%, so
the validation set shows pixels the model was never trained on.

    python tests/proxy_task.py DIR [--count 64 --size 256 --split val]

writes ``DIR/images/NNNN.png`` and ``DIR/masks/NNNN.png`` (class ids).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

#: Object classes 1..3, each cut from one photograph.
OBJECTS = ("chelsea", "rocket", "immunohistochemistry")
BACKGROUNDS = (
    "astronaut", "coffee", "hubble_deep_field", "retina", "motorcycle_left", "motorcycle_right", "camera", "coins", "moon",
)  # fmt: skip
CLASSES = 1 + len(OBJECTS)
SPLITS = ("train", "val")
#: The share of each photograph's width the train split crops from (val takes the rest).
TRAIN_SHARE = 0.6


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """The photograph as a read-only HxWx3 uint8 array (grey ones repeated to three channels)."""
    from trained_model import photo

    arr = photo(name)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = np.ascontiguousarray(arr[:, :, :3])
    arr.flags.writeable = False
    return arr


def _region(name: str, split: str) -> np.ndarray:
    arr = _photo(name)
    cut = int(arr.shape[1] * TRAIN_SHARE)
    return arr[:, :cut] if split == "train" else arr[:, cut:]


def _crop(rng: np.random.Generator, name: str, split: str, height: int, width: int) -> np.ndarray:
    """A random crop of the split's region of ``name``, zoomed by 0.5-2x, resized to height x width, as float in [0, 1]."""
    from PIL import Image

    region = _region(name, split)
    zoom = float(rng.uniform(0.5, 2.0))
    ch = int(np.clip(round(height * zoom), 2, region.shape[0]))
    cw = int(np.clip(round(width * zoom), 2, region.shape[1]))
    y = int(rng.integers(0, region.shape[0] - ch + 1))
    x = int(rng.integers(0, region.shape[1] - cw + 1))
    patch = Image.fromarray(region[y : y + ch, x : x + cw]).resize((width, height), Image.BILINEAR)
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # mild colour jitter: a class is more than one exact colour
    return np.clip(np.asarray(patch, dtype=np.float32) / 255.0 * gain, 0.0, 1.0)


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An irregular filled shape in a height x width box: a smooth random field thresholded inside an ellipse."""
    from PIL import Image

    coarse = rng.normal(0.0, 1.0, (5, 5)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = ((yy + 0.5) / height * 2 - 1) ** 2 + ((xx + 0.5) / width * 2 - 1) ** 2
    shape = (1.0 - r2) + 0.4 * field > 0.0
    if not shape.any():
        shape[height // 2, width // 2] = True
    return shape


def proxy_images(rng: np.random.Generator, n: int, size: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images in [0, 1] (NCHW float32) of ``size`` x ``size`` and their class masks (NHW int64)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.zeros((n, size, size), np.int64)
    for k in range(n):
        canvas = _crop(rng, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], split, size, size)
        label = labels[k]
        for _ in range(int(rng.integers(3, 8))):
            cls = int(rng.integers(1, CLASSES))
            # Log-uniform sizes: as many small objects (a few pixels) as large ones (most of the image).
            h, w = (max(3, int(size * np.exp(rng.uniform(np.log(0.1), np.log(0.7))))) for _ in range(2))
            y, x = int(rng.integers(-h // 3, size - 2 * h // 3)), int(rng.integers(-w // 3, size - 2 * w // 3))
            shape = _blob(rng, h, w)
            texture = _crop(rng, OBJECTS[cls - 1], split, h, w)
            ys, xs = slice(max(y, 0), min(y + h, size)), slice(max(x, 0), min(x + w, size))
            inside = shape[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
            canvas[ys, xs][inside] = texture[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x][inside]
            label[ys, xs][inside] = cls
        images[k] = canvas.transpose(2, 0, 1)
    return images, labels


def write_proxy_set(folder: Path, count: int, size: int, split: str = "val", seed: int = 1) -> tuple[Path, Path]:
    """Write ``count`` images and their masks as PNGs with the same stems; returns (images dir, masks dir)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image_dir, mask_dir = Path(folder) / "images", Path(folder) / "masks"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, 16):  # a few at a time: bounded memory for large sets
        images, labels = proxy_images(rng, min(16, count - start), size, split)
        for i, (img, lab) in enumerate(zip(images, labels)):
            stem = f"{start + i:04d}"
            Image.fromarray((img.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(image_dir / f"{stem}.png")
            Image.fromarray(lab.astype(np.uint8)).save(mask_dir / f"{stem}.png")
    return image_dir, mask_dir


def main() -> None:
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    images, masks = write_proxy_set(args.folder, args.count, args.size, args.split, args.seed)
    print(f"{args.count} images in {images}, masks in {masks}")


if __name__ == "__main__":
    main()
