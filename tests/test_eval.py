"""``segexport eval``: a bundle's artifact and eager fp32 over a folder of images, with and without ground truth.

One fp32 ONNX bundle (tiny unet-resnet18, 4 classes, built from a saved checkpoint) is
evaluated on the proxy task's validation images (proxy_task.py), at a larger size than
the bundle's so that logits are resized to the masks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cases import tiny_kwargs
from proxy_task import CLASSES, write_proxy_set
from trained_model import cached_bundle

from segexport.errors import InvalidInputError
from segexport.evaluate import confusion, evaluate, format_markdown, ious, miou

pytest.importorskip("skimage", reason="the proxy task's photographs come from scikit-image (a test extra)")
pytestmark = pytest.mark.onnx

COUNT = 5


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    return cached_bundle(
        "unet-resnet18-4-classes", arch="unet", encoder="resnet18", classes=CLASSES, height=64, width=64,
        arch_args=tiny_kwargs("unet"), checkpoint_seed=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_proxy_set(tmp_path_factory.mktemp("proxy"), COUNT, 80, split="val")


def checkpoint_of(bundle) -> str:  # type: ignore[no-untyped-def]
    return str(bundle.path.parent / "weights.pth")


# --------------------------------------------------------------------------- the figures


def test_confusion_counts_give_iou_per_class_and_the_mean_over_present_classes():
    truth = np.array([0, 0, 1, 1, 2, 5])  # 5: outside the classes, not counted
    pred = np.array([0, 1, 1, 1, 0, 0])
    m = confusion(pred, truth, 3)
    assert m.sum() == 5 and m[1, 1] == 2 and m[2, 0] == 1
    assert ious(m) == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert miou(m) == pytest.approx(1 / 3)
    assert ious(confusion(np.zeros(3, int), np.zeros(3, int), 3))[1:] == [None, None]


def test_without_masks_the_fp32_artifact_agrees_with_eager(bundle, proxy):
    images, _ = proxy
    seen = []
    report = evaluate(bundle.path, images, checkpoint=checkpoint_of(bundle), progress=lambda done, total: seen.append((done, total)))
    assert report.images == COUNT and report.ground_truth is None
    assert report.agreement >= 0.999 and report.mean_iou >= 0.99 and report.per_image_mean_iou >= 0.99
    assert seen[-1] == (COUNT, COUNT) and len(seen) == COUNT  # batch 1: one step per image
    assert "| pixel agreement |" in format_markdown(report) and "ground truth" not in format_markdown(report)
    assert json.loads(json.dumps(report.to_dict()))["images"] == COUNT


def test_with_masks_both_models_are_scored_against_the_ground_truth_side_by_side(bundle, proxy):
    images, masks = proxy
    report = evaluate(bundle.path, images, masks, checkpoint=checkpoint_of(bundle))
    gt = report.ground_truth
    assert gt is not None and [c.label for c in gt.classes] == list(range(CLASSES))
    assert sum(c.pixels for c in gt.classes) == COUNT * 80 * 80  # scored at the masks' size
    assert gt.difference == pytest.approx(gt.artifact_miou - gt.eager_miou) and abs(gt.difference) < 0.01
    table = format_markdown(report)
    assert "| mIoU |" in table and "| class 3 IoU" in table
    assert report.to_dict()["ground_truth"]["difference"] == pytest.approx(gt.difference)


def test_masks_equal_to_eager_predictions_give_eager_a_perfect_score_and_ignored_pixels_are_skipped(bundle, proxy, tmp_path):
    import torch
    from PIL import Image

    from segexport.calibration.sources import normalize, read_image, resize
    from segexport.evaluate import bundle_normalization, eager_from_bundle

    images, _ = proxy
    model = eager_from_bundle(bundle, checkpoint_of(bundle))
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted(images.iterdir()):
        x = normalize(resize(read_image(path), 64, 64)[None], bundle_normalization(bundle.manifest))
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1)[0].numpy().astype(np.uint8)
        pred[:4] = 255  # unlabelled rows
        Image.fromarray(pred).save(masks / path.name)
    # Masks at the bundle's size: scored on the logits as they are, no resizing.
    report = evaluate(bundle.path, images, masks, checkpoint=checkpoint_of(bundle))
    assert report.ground_truth.ignored_pixels == COUNT * 4 * 64
    assert report.ground_truth.eager_miou == 1.0


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("no-images-folder", "--images '.*missing' is not a folder of images"),
        ("empty-images-folder", "holds no images; allowed suffixes"),
        ("no-masks-folder", "--masks '.*missing' is not a folder of masks"),
        ("missing-mask", "No mask for image '0000.png'"),
        ("class-out-of-range", "holds class 9; the bundle has classes 0..3"),
        ("no-checkpoint", "was built from the checkpoint 'weights.pth'; pass --checkpoint"),
        ("wrong-checkpoint", "does not reproduce the bundle's reference output 'mask'"),
    ],
)
def test_bad_inputs_are_named(bundle, proxy, tmp_path, case, fragment):
    import torch
    from PIL import Image

    import segexport

    images, masks = proxy
    kwargs: dict = {"checkpoint": checkpoint_of(bundle)}
    masks_arg: Path | None = None
    if case == "no-images-folder":
        images = tmp_path / "missing"
    elif case == "empty-images-folder":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "no-masks-folder":
        masks_arg = tmp_path / "missing"
    elif case in ("missing-mask", "class-out-of-range"):
        masks_arg = tmp_path / "masks"
        shutil.copytree(masks, masks_arg)
        if case == "missing-mask":
            (masks_arg / "0000.png").unlink()
        else:
            Image.fromarray(np.full((80, 80), 9, np.uint8)).save(masks_arg / "0000.png")
    elif case == "no-checkpoint":
        kwargs = {}
    elif case == "wrong-checkpoint":
        torch.manual_seed(2)
        other = segexport.create_model("unet", "resnet18", encoder_weights=None, classes=CLASSES, **tiny_kwargs("unet"))
        kwargs = {"checkpoint": str(tmp_path / "other.pth")}
        torch.save(other.state_dict(), kwargs["checkpoint"])
    with pytest.raises(InvalidInputError, match=fragment):
        evaluate(bundle.path, images, masks_arg, **kwargs)


def test_the_console_script_exits_2_with_one_line_for_a_bad_images_folder(bundle, tmp_path):
    script = Path(sys.executable).with_name("segexport")
    result = subprocess.run(
        [str(script), "eval", str(bundle.path), "--images", str(tmp_path / "nope")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "is not a folder of images" in result.stderr
