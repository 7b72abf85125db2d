"""``segexport eval``: a bundle's artifact and eager fp32 PyTorch over a folder of images.

Every image is prepared as the bundle's manifest says (resized to the export size,
the encoder's channel order, value range, mean and std) and run through both the
artifact (in its own runtime) and the eager model rebuilt from the manifest (with
the checkpoint the bundle was built from). Without masks the report is the
artifact's agreement with eager and the mean IoU between their masks; with
ground-truth masks (PNG class ids with the images' stems) it is the mIoU and the
per-class IoU of both against the ground truth, side by side, and their difference.

Images stream one batch at a time and only confusion matrices accumulate, so memory
stays bounded on folders of any size. mIoU is the dataset definition (intersections
and unions summed over all images, then averaged over classes present in either);
``per_image_mean_iou`` is the parity report's (per image, then averaged). Against
ground truth, both models' logits are resized bilinearly to each mask's size first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import InvalidInputError
from segexport.parity import confusion, ious, miou

if TYPE_CHECKING:
    from segexport.manifest import Manifest

#: Mask value that marks pixels without a label (the usual 255 of PNG label maps).
IGNORE_INDEX = 255
MASK_SUFFIX = ".png"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ClassScore:
    """One class against the ground truth: IoU of the artifact, of eager fp32, and their difference."""

    label: int
    pixels: int
    artifact_iou: float | None
    eager_iou: float | None

    @property
    def difference(self) -> float | None:
        if self.artifact_iou is None or self.eager_iou is None:
            return None
        return self.artifact_iou - self.eager_iou


@dataclass(frozen=True)
class GroundTruthScores:
    """mIoU and per-class IoU of the artifact and of eager fp32 against the masks."""

    artifact_miou: float
    eager_miou: float
    artifact_pixel_accuracy: float
    eager_pixel_accuracy: float
    classes: list[ClassScore]
    ignored_pixels: int

    @property
    def difference(self) -> float:
        return self.artifact_miou - self.eager_miou


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` measured."""

    bundle: str
    precision: str
    ran_with: str
    images: int
    agreement: float
    mean_iou: float
    per_image_mean_iou: float
    ground_truth: GroundTruthScores | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("files")
        if self.ground_truth is not None:
            out["ground_truth"]["difference"] = self.ground_truth.difference
            for record, score in zip(out["ground_truth"]["classes"], self.ground_truth.classes):
                record["difference"] = score.difference
        return out


def _image_mean_iou(actual: np.ndarray, expected: np.ndarray, classes: int) -> float:
    return miou(confusion(actual.ravel(), expected.ravel(), classes))


# --------------------------------------------------------------------------- the two models


def eager_from_bundle(bundle: Any, checkpoint: str | os.PathLike[str] | None = None) -> Any:
    """The eager fp32 model a bundle was built from: its manifest's arguments, seed and ``checkpoint``.

    The bundle holds no eager weights; a bundle built from a checkpoint needs that file
    again. The rebuilt model is checked against the bundle's stored eager outputs, so a
    wrong checkpoint is an error here, never a silently wrong comparison.

    Raises:
        InvalidInputError: the checkpoint is missing or is not the one the bundle was built from.
    """
    import torch

    from segexport.pipeline import BuildRequest, create_from_request, read_reference

    m = bundle.manifest
    recorded = m.export.checkpoint
    if recorded and checkpoint is None:
        raise InvalidInputError(
            f"Bundle {str(bundle.path)!r} was built from the checkpoint {recorded!r}; pass --checkpoint with that file "
            "(a bundle does not hold the eager weights)."
        )
    args = {k: v for k, v in dict(m.arch_args).items() if k not in ("encoder_name", "encoder_weights", "classes", "in_channels")}
    request = BuildRequest(
        arch=m.arch,
        encoder=m.encoder,
        checkpoint=None if checkpoint is None else str(checkpoint),
        classes=m.classes if m.classes is not None else BuildRequest.classes,
        in_channels=m.in_channels,
        arch_args=args,
        seed=m.parity.policy.seed,
    )
    model, _ = create_from_request(request)
    names = m.export.output_names
    inputs, reference = read_reference(bundle.path_of(m.reference or ""), names)
    with torch.no_grad():
        out = model(torch.from_numpy(inputs[0]))
    out = out if isinstance(out, (tuple, list)) else (out,)
    for name, got in zip(names, out):
        want = reference[0][name]
        scale = max(1.0, float(np.sqrt(np.mean(np.square(want, dtype=np.float64)))))
        if got.shape != want.shape or not np.allclose(got.numpy(), want, atol=1e-3 * scale, rtol=1e-3):
            given = f"the checkpoint {Path(checkpoint).name!r}" if checkpoint else "no checkpoint (seeded random weights)"
            raise InvalidInputError(
                f"The eager model rebuilt from {str(bundle.path)!r} with {given} does not reproduce the bundle's "
                f"reference output {name!r}; pass --checkpoint with the weights the bundle was built from"
                + (f" ({recorded!r})." if recorded else ".")
            )
    return model


Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


def artifact_runner(bundle: Any, device: str = "cpu", threads: int | None = None) -> tuple[Infer, str, Callable[[], None]]:
    """A callable running the bundle's artifact, a description of what runs it, and a closer.

    A TensorRT bundle without a CUDA GPU runs the graph its engine was built from in
    onnxruntime on the CPU (Q/DQ as written for int8), as its validation does there.
    """
    from segexport.targets.runners import OnnxRuntimeRunner, Runner, runner_for

    m = bundle.manifest
    runner: Runner
    described = None
    if m.target == "trt":
        import torch

        if not torch.cuda.is_available():
            source = m.onnx_graph()
            if source is None:
                raise InvalidInputError(f"Bundle {str(bundle.path)!r}: its TensorRT record names no ONNX graph to run without a GPU.")
            runner = OnnxRuntimeRunner(bundle.path_of(source), threads=threads, as_written=m.precision == "int8")
            described = f"onnxruntime-cpu ({source}; no CUDA GPU for the engine)"
    if described is None:
        runner = runner_for(bundle.path, m, device=device, threads=threads)
        described = f"{runner.runtime} ({m.artifact}, {device})"
    runner.__enter__()
    return runner.infer, described, lambda: runner.__exit__(None, None, None)


# --------------------------------------------------------------------------- images


def bundle_normalization(manifest: Manifest) -> Any:
    """The input preparation a bundle's manifest records, as encoder settings (for ``normalize``)."""
    from segexport.arch.encoders.weights import PretrainedSettings

    n = manifest.normalization
    if n is None:
        raise InvalidInputError("The bundle's manifest records no input normalization; rebuild it with this segexport.")
    return PretrainedSettings(mean=tuple(n["mean"]), std=tuple(n["std"]), input_space=n["input_space"], input_range=tuple(n["input_range"]))


def _read_mask(path: Path, image_name: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InvalidInputError(f"No mask for image {image_name!r}: expected {str(path)!r} (PNG class ids with the image's stem).")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise InvalidInputError(f"Mask {str(path)!r} has mode {img.mode}; give single-channel PNG class ids (mode L, P or I).")
            arr = np.asarray(img).astype(np.int64)
    except InvalidInputError:
        raise
    except Exception as exc:  # Pillow raises many types for unreadable files
        raise InvalidInputError(f"Cannot read mask {str(path)!r}: {exc}") from exc
    return arr


def _batches(paths: Sequence[Path], batch: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), batch):
        yield list(paths[start : start + batch])


def evaluate(
    bundle_path: str | os.PathLike[str],
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str] | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: Progress | None = None,
) -> EvalReport:
    """Run the artifact and eager fp32 over every image in ``images`` (see the module docstring).

    Args:
        bundle_path: the bundle directory.
        images: a folder of images (png, jpg, bmp, npy; searched recursively).
        masks: a folder of PNG class-id masks with the images' relative paths and stems, or None.
        checkpoint: the weights the bundle was built from (needed when it was built from one).
        device: where the artifact runs (cpu or cuda); eager runs on the CPU.
        threads: CPU threads for the artifact's runtime.
        ignore_index: mask value of unlabelled pixels.
        progress: called with (images done, images in all) after each batch.

    Raises:
        InvalidInputError: a bad folder, image or mask, or a checkpoint that does not match the bundle.
    """
    import torch
    import torch.nn.functional as F

    from segexport.bundle import Bundle
    from segexport.calibration.sources import IMAGE_SUFFIXES, list_images, match_channels, normalize, read_image, resize
    from segexport.parity import class_masks

    folder = Path(images)
    if not folder.is_dir():
        raise InvalidInputError(f"--images {str(images)!r} is not a folder of images.")
    mask_folder = None if masks is None else Path(masks)
    if mask_folder is not None and not mask_folder.is_dir():
        raise InvalidInputError(f"--masks {str(masks)!r} is not a folder of masks.")
    paths = list_images(folder)
    if not paths:
        raise InvalidInputError(f"--images {str(images)!r} holds no images; allowed suffixes: {', '.join(IMAGE_SUFFIXES)}.")
    bundle = Bundle.load(bundle_path)
    m = bundle.manifest
    exp = m.export
    if "mask" not in exp.output_names:
        raise InvalidInputError(f"Bundle {str(bundle.path)!r} has no 'mask' output to evaluate; it has {list(exp.output_names)}.")
    height, width, batch, channels = exp.height, exp.width, exp.batch, m.in_channels
    threshold = m.parity.policy.mask_threshold
    classes = max(2, int(m.classes or 1))  # one channel: background / foreground
    settings = bundle_normalization(m)
    model = eager_from_bundle(bundle, checkpoint)
    run, ran_with, close = artifact_runner(bundle, device, threads)

    vs_eager = np.zeros((classes, classes), np.int64)
    vs_truth = {"artifact": np.zeros((classes, classes), np.int64), "eager": np.zeros((classes, classes), np.int64)}
    per_image: list[float] = []
    ignored = 0
    names: list[str] = []
    done = 0
    try:
        for group in _batches(paths, batch):
            rel = [p.relative_to(folder).as_posix() for p in group]
            prepared = np.stack([resize(match_channels(read_image(p), channels, r), height, width) for p, r in zip(group, rel)])
            x = normalize(prepared, settings)
            real = len(group)
            if real < batch:  # a static bundle takes exactly its batch: fill with the first image
                x = np.concatenate([x, np.repeat(x[:1], batch - real, axis=0)])
            with torch.no_grad():
                eager_out = model(torch.from_numpy(x))
            eager_logits = (eager_out[0] if isinstance(eager_out, (tuple, list)) else eager_out).numpy()[:real]
            artifact_logits = np.asarray(run(x)["mask"], dtype=np.float32)[:real]
            a_cls, e_cls = class_masks(artifact_logits, threshold), class_masks(eager_logits, threshold)
            for i, name in enumerate(rel):
                vs_eager += confusion(a_cls[i].ravel(), e_cls[i].ravel(), classes)
                per_image.append(_image_mean_iou(a_cls[i], e_cls[i], classes))
                if mask_folder is not None:
                    truth = _read_mask((mask_folder / name).with_suffix(MASK_SUFFIX), name)
                    bad = (truth != ignore_index) & ((truth < 0) | (truth >= classes))
                    if bad.any():
                        raise InvalidInputError(
                            f"Mask for {name!r} holds class {int(truth[bad][0])}; the bundle has classes 0..{classes - 1} "
                            f"({ignore_index} marks unlabelled pixels)."
                        )
                    keep = truth != ignore_index
                    ignored += int((~keep).sum())
                    for key, logits in (("artifact", artifact_logits[i]), ("eager", eager_logits[i])):
                        if logits.shape[-2:] != truth.shape:
                            t = torch.from_numpy(np.ascontiguousarray(logits))[None]
                            logits = F.interpolate(t, size=truth.shape, mode="bilinear", align_corners=False)[0].numpy()
                        predicted = class_masks(logits[None], threshold)[0]
                        vs_truth[key] += confusion(predicted[keep], truth[keep], classes)
                names.append(name)
            done += real
            if progress is not None:
                progress(done, len(paths))
    finally:
        close()

    truth_scores = None
    if mask_folder is not None:
        art, eag = ious(vs_truth["artifact"]), ious(vs_truth["eager"])
        pixels = vs_truth["eager"].sum(1)
        truth_scores = GroundTruthScores(
            artifact_miou=miou(vs_truth["artifact"]),
            eager_miou=miou(vs_truth["eager"]),
            artifact_pixel_accuracy=float(np.trace(vs_truth["artifact"]) / max(1, vs_truth["artifact"].sum())),
            eager_pixel_accuracy=float(np.trace(vs_truth["eager"]) / max(1, vs_truth["eager"].sum())),
            classes=[ClassScore(label=c, pixels=int(pixels[c]), artifact_iou=art[c], eager_iou=eag[c]) for c in range(classes)],
            ignored_pixels=ignored,
        )
    return EvalReport(
        bundle=str(bundle.path),
        precision=m.precision,
        ran_with=ran_with,
        images=len(names),
        agreement=float(np.trace(vs_eager) / max(1, vs_eager.sum())),
        mean_iou=miou(vs_eager),
        per_image_mean_iou=float(np.mean(per_image)),
        ground_truth=truth_scores,
        files=names,
    )


def format_markdown(report: EvalReport) -> str:
    """The report as Markdown tables: agreement with eager, then (with masks) the scores against ground truth."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"{report.bundle} ({report.precision}, {report.ran_with}) on {report.images} images",
        "",
        "| against eager fp32 | value |",
        "|---|---|",
        f"| pixel agreement | {report.agreement:.4%} |",
        f"| mean IoU (dataset) | {report.mean_iou:.4f} |",
        f"| mean IoU (per image) | {report.per_image_mean_iou:.4f} |",
    ]
    gt = report.ground_truth
    if gt is not None:
        lines += [
            "",
            f"| against ground truth | {report.precision} artifact | eager fp32 | difference |",
            "|---|---|---|---|",
            f"| mIoU | {gt.artifact_miou:.4f} | {gt.eager_miou:.4f} | {gt.difference:+.4f} |",
            f"| pixel accuracy | {gt.artifact_pixel_accuracy:.4f} | {gt.eager_pixel_accuracy:.4f} | "
            f"{gt.artifact_pixel_accuracy - gt.eager_pixel_accuracy:+.4f} |",
        ]
        for c in gt.classes:
            diff = "-" if c.difference is None else f"{c.difference:+.4f}"
            lines.append(f"| class {c.label} IoU ({c.pixels} px) | {pct(c.artifact_iou)} | {pct(c.eager_iou)} | {diff} |")
        if gt.ignored_pixels:
            lines.append(f"\n{gt.ignored_pixels} unlabelled pixels ignored.")
    return "\n".join(lines)
