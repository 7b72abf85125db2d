"""Losses: SMP 0.6 parity (values and gradients), defined edge cases, clear input errors."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import segexport
from segexport.errors import InvalidInputError
from segexport.losses import (
    BINARY_MODE,
    MULTICLASS_MODE,
    MULTILABEL_MODE,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    LovaszLoss,
    MCCLoss,
    SoftBCEWithLogitsLoss,
    SoftCrossEntropyLoss,
    TverskyLoss,
)

MODES = [BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE]
IGNORE = 255
TOL = {"atol": 1e-6, "rtol": 1e-6}

# The README section's training-loop example, executed verbatim by test_readme_training_example_runs.
README_EXAMPLE = """\
import torch
import segexport
from segexport.losses import DiceLoss
from segexport.metrics import get_stats, iou_score

model = segexport.Unet("resnet18", encoder_weights=None, classes=3)
loss_fn = DiceLoss(mode="multiclass")  # softmax is applied to the logits inside
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

# A stand-in for a DataLoader: images (N, 3, H, W), masks of class ids (N, H, W).
images = torch.randn(2, 3, 64, 64)
masks = torch.randint(0, 3, (2, 64, 64))

model.train()
for step in range(2):
    logits = model(images)            # (N, 3, H, W)
    loss = loss_fn(logits, masks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

model.eval()
with torch.no_grad():
    pred = model(images).argmax(dim=1)  # (N, H, W) class ids
tp, fp, fn, tn = get_stats(pred, masks, mode="multiclass", num_classes=3)
miou = iou_score(tp, fp, fn, tn, reduction="macro")
print(f"loss {loss.item():.4f}  mIoU {miou.item():.4f}")
"""


def make_inputs(
    mode: str, batch: int = 2, classes: int = 3, size: int = 8, ignore: bool = False, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of the shapes each mode documents; ~20% of pixels ignored on request."""
    gen = torch.Generator().manual_seed(seed)
    if mode == BINARY_MODE:
        logits = torch.randn(batch, 1, size, size, generator=gen)
        target = torch.randint(0, 2, (batch, 1, size, size), generator=gen)
    elif mode == MULTICLASS_MODE:
        logits = torch.randn(batch, classes, size, size, generator=gen)
        target = torch.randint(0, classes, (batch, size, size), generator=gen)
    else:
        logits = torch.randn(batch, classes, size, size, generator=gen)
        target = torch.randint(0, 2, (batch, classes, size, size), generator=gen)
    if ignore:
        target = torch.where(torch.rand(target.shape, generator=gen) < 0.2, IGNORE, target)
    return logits * 2, target


def value_and_grad(loss_fn: Callable[..., torch.Tensor], y_pred: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y_pred = y_pred.clone().requires_grad_(True)
    value = loss_fn(y_pred, y_true)
    value.sum().backward()
    return value.detach(), y_pred.grad


def assert_matches_smp(ours: torch.nn.Module, theirs: torch.nn.Module, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
    value, grad = value_and_grad(ours, y_pred, y_true)
    ref_value, ref_grad = value_and_grad(theirs, y_pred, y_true)
    torch.testing.assert_close(value, ref_value.reshape(value.shape), **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


@pytest.fixture(scope="module")
def smp_losses() -> Any:
    return pytest.importorskip("segmentation_models_pytorch").losses


# --------------------------------------------------------------------------- SMP parity

def _valid_for(mode: str, kwargs: dict[str, Any]) -> bool:
    return mode != BINARY_MODE or not ({"classes", "class_weights"} & set(kwargs))


def _probabilities(mode: str, logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1) if mode == MULTICLASS_MODE else logits.sigmoid()


OVERLAP_CASES: list[dict[str, Any]] = [
    {},
    {"log_loss": True},
    {"smooth": 1.0},
    {"eps": 1e-3, "smooth": 0.5},
    {"from_logits": False},
    {"ignore_index": IGNORE},
    {"classes": [0, 2]},
    {"class_weights": [1.0, 2.0, 0.5]},
    {"classes": [1, 2], "class_weights": [1.0, 2.0, 3.0], "log_loss": True},
]
TVERSKY_EXTRA: list[dict[str, Any]] = [
    {"alpha": 0.3, "beta": 0.7},
    {"alpha": 0.7, "beta": 0.3, "gamma": 0.75},
    {"gamma": 2.0, "ignore_index": IGNORE},
]


OVERLAP_PARAMS = [
    pytest.param(name, kwargs, mode, id=f"{mode}-{name}-{kwargs or 'defaults'}")
    for mode in MODES
    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss")
    for kwargs in OVERLAP_CASES + (TVERSKY_EXTRA if name == "TverskyLoss" else [])
    if _valid_for(mode, kwargs)
]


@pytest.mark.smp
@pytest.mark.parametrize(("name", "kwargs", "mode"), OVERLAP_PARAMS)
def test_overlap_losses_match_smp(smp_losses, name, kwargs, mode):
    y_pred, y_true = make_inputs(mode, ignore="ignore_index" in kwargs)
    if not kwargs.get("from_logits", True):
        y_pred = _probabilities(mode, y_pred)
    ours = getattr(segexport.losses, name)(mode, **kwargs)
    assert_matches_smp(ours, getattr(smp_losses, name)(mode, **kwargs), y_pred, y_true)


@pytest.mark.smp
@pytest.mark.parametrize("name", ["DiceLoss", "JaccardLoss", "TverskyLoss", "FocalLoss", "LovaszLoss"])
@pytest.mark.parametrize("mode", MODES)
def test_batch_of_one_matches_smp(smp_losses, name, mode):
    y_pred, y_true = make_inputs(mode, batch=1, seed=3)
    assert_matches_smp(getattr(segexport.losses, name)(mode), getattr(smp_losses, name)(mode), y_pred, y_true)


@pytest.mark.smp
@pytest.mark.parametrize("name", ["DiceLoss", "JaccardLoss", "TverskyLoss"])
@pytest.mark.parametrize("mode", [BINARY_MODE, MULTILABEL_MODE])
def test_overlap_losses_match_smp_on_soft_targets(smp_losses, name, mode):
    y_pred, _ = make_inputs(mode)
    soft = torch.rand(y_pred.shape, generator=torch.Generator().manual_seed(1))
    assert_matches_smp(getattr(segexport.losses, name)(mode), getattr(smp_losses, name)(mode), y_pred, soft)


FOCAL_CASES: list[dict[str, Any]] = [
    {},
    {"alpha": 0.25},
    {"gamma": 0.0},
    {"gamma": 1.5, "alpha": 0.6, "reduction": "sum"},
    {"reduction": "none"},
    {"reduction": "batchwise_mean"},
    {"normalized": True},
    {"reduced_threshold": 0.5, "reduction": "sum"},
    {"from_logits": False},
    {"from_logits": False, "eps": 1e-4, "alpha": 0.25},
    {"ignore_index": IGNORE},
    {"class_weights": [1.0, 2.0, 0.5]},
    {"class_weights": [3.0, 1.0, 1.0], "ignore_index": IGNORE, "alpha": 0.25},
]


# Multilabel + ignore_index is left out: SMP 0.6 raises IndexError there
# (see test_focal_multilabel_ignore_index_masks_each_channel).
FOCAL_PARAMS = [
    pytest.param(kwargs, mode, id=f"{mode}-{kwargs or 'defaults'}")
    for mode in MODES
    for kwargs in FOCAL_CASES
    if _valid_for(mode, kwargs) and not (mode == MULTILABEL_MODE and "ignore_index" in kwargs)
]


@pytest.mark.smp
@pytest.mark.parametrize(("kwargs", "mode"), FOCAL_PARAMS)
def test_focal_loss_matches_smp(smp_losses, kwargs, mode):
    y_pred, y_true = make_inputs(mode, ignore="ignore_index" in kwargs)
    if not kwargs.get("from_logits", True):
        y_pred = _probabilities(mode, y_pred)
    assert_matches_smp(FocalLoss(mode, **kwargs), smp_losses.FocalLoss(mode, **kwargs), y_pred, y_true)


@pytest.mark.smp
@pytest.mark.parametrize("ignore_index", [None, IGNORE])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_lovasz_loss_matches_smp(smp_losses, mode, per_image, ignore_index):
    y_pred, y_true = make_inputs(mode, ignore=ignore_index is not None, seed=5)
    kwargs = {"per_image": per_image, "ignore_index": ignore_index}
    assert_matches_smp(LovaszLoss(mode, **kwargs), smp_losses.LovaszLoss(mode, **kwargs), y_pred, y_true)


SOFT_BCE_CASES: list[dict[str, Any]] = [
    {},
    {"ignore_index": None},
    {"smooth_factor": 0.1},
    {"reduction": "sum"},
    {"reduction": "none", "smooth_factor": 0.05},
    {"weight": torch.tensor([0.5, 1.0, 2.0]).reshape(1, 3, 1, 1)},
    {"pos_weight": torch.tensor([2.0, 1.0, 0.5]).reshape(1, 3, 1, 1), "ignore_index": -100},
]


@pytest.mark.smp
@pytest.mark.parametrize("kwargs", SOFT_BCE_CASES, ids=lambda kw: str(sorted(kw)) if kw else "defaults")
def test_soft_bce_matches_smp(smp_losses, kwargs):
    y_pred, y_true = make_inputs(MULTILABEL_MODE)
    y_true = y_true.float()
    y_true[0, 0, :2] = -100  # ignored under the default ignore_index
    assert_matches_smp(SoftBCEWithLogitsLoss(**kwargs), smp_losses.SoftBCEWithLogitsLoss(**kwargs), y_pred, y_true)


SOFT_CE_CASES: list[dict[str, Any]] = [
    {"smooth_factor": 0.0},
    {"smooth_factor": 0.1},
    {"smooth_factor": 0.1, "ignore_index": None},
    {"smooth_factor": 0.2, "reduction": "sum"},
    {"smooth_factor": 0.1, "reduction": "none"},
    {"smooth_factor": 0.1, "reduction": "none", "ignore_index": None},
    {"smooth_factor": 0.1, "ignore_index": IGNORE},
]


@pytest.mark.smp
@pytest.mark.parametrize("kwargs", SOFT_CE_CASES, ids=str)
def test_soft_cross_entropy_matches_smp(smp_losses, kwargs):
    ignore = kwargs.get("ignore_index", -100)
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    if ignore is not None:
        y_true[0, :2] = ignore
    assert_matches_smp(SoftCrossEntropyLoss(**kwargs), smp_losses.SoftCrossEntropyLoss(**kwargs), y_pred, y_true)


@pytest.mark.smp
@pytest.mark.parametrize("target_shape", ["N1HW", "NHW"])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_mcc_loss_matches_smp(smp_losses, eps, target_shape):
    y_pred, y_true = make_inputs(BINARY_MODE)
    y_pred = y_pred.sigmoid()
    if target_shape == "NHW":
        y_true = y_true[:, 0]
    assert_matches_smp(MCCLoss(eps=eps), smp_losses.MCCLoss(eps=eps), y_pred, y_true)


SOFTMAX_FOCAL_CASES: list[dict[str, Any]] = [
    {},
    {"gamma": 0.0},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"reduction": "batchwise_mean"},
    {"normalized": True},
    {"reduced_threshold": 0.5},
]


@pytest.mark.smp
@pytest.mark.parametrize("kwargs", SOFTMAX_FOCAL_CASES, ids=lambda kw: str(kw) if kw else "defaults")
def test_softmax_focal_loss_with_logits_matches_smp(kwargs):
    from segmentation_models_pytorch.losses import _functional as theirs

    from segexport.losses import _functional as ours

    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    assert_matches_smp(
        lambda p, t: ours.softmax_focal_loss_with_logits(p, t, **kwargs),
        lambda p, t: theirs.softmax_focal_loss_with_logits(p, t, **kwargs),
        y_pred,
        y_true,
    )


@pytest.mark.smp
@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"width": 2, "curvature": 1.0}], ids=str)
def test_wing_loss_matches_smp(kwargs):
    from segmentation_models_pytorch.losses import _functional as theirs

    from segexport.losses import _functional as ours

    torch.manual_seed(0)
    y_pred, y_true = torch.randn(2, 3, 8, 8) * 6, torch.randn(2, 3, 8, 8) * 6  # errors on both sides of width
    assert_matches_smp(
        lambda p, t: ours.wing_loss(p, t, **kwargs), lambda p, t: theirs.wing_loss(p, t, **kwargs), y_pred, y_true
    )


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (torch.tensor([1, 2]), torch.float32, torch.tensor([1.0, 2.0])),
        ([1, 2, 3], None, torch.tensor([1, 2, 3])),
        ((0.5, 1.5), torch.float64, torch.tensor([0.5, 1.5], dtype=torch.float64)),
    ],
    ids=["tensor", "list", "tuple"],
)
def test_to_tensor_converts_like_smp(value, dtype, expected):
    import numpy as np

    from segexport.losses._functional import to_tensor

    for given in (value, np.asarray(value)) if not isinstance(value, torch.Tensor) else (value,):
        got = to_tensor(given, dtype)
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    with pytest.raises(InvalidInputError, match="to_tensor takes a tensor, NumPy array, list or tuple; got a str"):
        to_tensor("1, 2")


@pytest.mark.smp
@pytest.mark.parametrize("mode", [BINARY_MODE, MULTILABEL_MODE])
def test_focal_multilabel_ignore_index_masks_each_channel(smp_losses, mode):
    """SMP 0.6 raises IndexError for multilabel + ignore_index; here each channel drops its own
    ignored pixels: the loss is the mean of SMP's binary focal loss over the channels."""
    y_pred, y_true = make_inputs(MULTILABEL_MODE, ignore=True)
    ours = FocalLoss(MULTILABEL_MODE, ignore_index=IGNORE, alpha=0.25)(y_pred, y_true)
    binary = smp_losses.FocalLoss(BINARY_MODE, ignore_index=IGNORE, alpha=0.25)
    per_channel = [binary(y_pred[:, c : c + 1], y_true[:, c : c + 1]) for c in range(y_pred.size(1))]
    torch.testing.assert_close(ours, torch.stack(per_channel).mean(), **TOL)


@pytest.mark.smp
def test_soft_cross_entropy_without_smoothing_is_torch_cross_entropy():
    """smooth_factor=None (the default) is plain cross-entropy; SMP 0.6 raises TypeError for it."""
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    torch.testing.assert_close(SoftCrossEntropyLoss()(y_pred, y_true), F.cross_entropy(y_pred, y_true), **TOL)


# --------------------------------------------------------------------------- edge cases

def _every_loss(mode: str, **kwargs: Any) -> list[torch.nn.Module]:
    """Every mode-aware loss, and the binary-only ones in binary mode."""
    losses: list[torch.nn.Module] = [
        DiceLoss(mode, **kwargs),
        JaccardLoss(mode, **kwargs),
        TverskyLoss(mode, gamma=0.75, **kwargs),
        FocalLoss(mode, **kwargs),
        LovaszLoss(mode, **kwargs),
        LovaszLoss(mode, per_image=True, **kwargs),
    ]
    if mode == MULTICLASS_MODE:
        losses.append(SoftCrossEntropyLoss(smooth_factor=0.1, **kwargs))
    else:
        losses.append(SoftBCEWithLogitsLoss(**kwargs))
    if mode == BINARY_MODE and not kwargs:
        losses.append(MCCLoss())
    return losses


def _loss_id(loss: torch.nn.Module) -> str:
    return type(loss).__name__ + ("(per_image)" if getattr(loss, "per_image", False) else "")


@pytest.mark.parametrize("mode", MODES)
def test_empty_masks_give_finite_losses_and_gradients(mode):
    y_pred, y_true = make_inputs(mode)
    y_true = torch.zeros_like(y_true)
    for loss_fn in _every_loss(mode):
        value, grad = value_and_grad(loss_fn, y_pred, y_true)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), _loss_id(loss_fn)


@pytest.mark.parametrize("mode", MODES)
def test_overlap_losses_skip_classes_without_true_pixels(mode):
    """A class without true pixels contributes 0: empty masks give exactly 0 with zero gradient
    (in multiclass mode, an all-background mask leaves only class 0 to score)."""
    y_pred, y_true = make_inputs(mode)
    y_true = torch.zeros_like(y_true)
    for loss_fn in (DiceLoss(mode), JaccardLoss(mode), TverskyLoss(mode, gamma=0.5)):
        value, grad = value_and_grad(loss_fn, y_pred, y_true)
        if mode == MULTICLASS_MODE:
            only_background = type(loss_fn)(mode, classes=[0], **({"gamma": 0.5} if isinstance(loss_fn, TverskyLoss) else {}))
            torch.testing.assert_close(value, only_background(y_pred, y_true) / 3 ** (0.5 if isinstance(loss_fn, TverskyLoss) else 1))
        else:
            assert value.item() == 0.0
            assert torch.equal(grad, torch.zeros_like(grad)), type(loss_fn).__name__


@pytest.mark.parametrize("mode", MODES)
def test_all_pixels_ignored_gives_zero_loss_and_gradient(mode):
    """SMP 0.6 gives NaN (FocalLoss) or an empty tensor (multiclass LovaszLoss) here."""
    y_pred, y_true = make_inputs(mode)
    y_true = torch.full_like(y_true, IGNORE)
    for loss_fn in _every_loss(mode, ignore_index=IGNORE):
        value, grad = value_and_grad(loss_fn, y_pred, y_true)
        assert value.shape == () and value.item() == 0.0, _loss_id(loss_fn)
        assert torch.equal(grad, torch.zeros_like(grad)), _loss_id(loss_fn)


@pytest.mark.parametrize("mode", [MULTICLASS_MODE, MULTILABEL_MODE])
def test_one_class_works_in_every_loss(mode):
    """C = 1; in multiclass mode softmax is then constant (SMP 0.6's LovaszLoss raises ValueError)."""
    y_pred, y_true = make_inputs(mode, classes=1)
    for loss_fn in _every_loss(mode):
        value, grad = value_and_grad(loss_fn, y_pred, y_true)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), _loss_id(loss_fn)
    if mode == MULTICLASS_MODE:
        assert LovaszLoss(mode)(y_pred, y_true).item() == 0.0  # every pixel is class 0, predicted with p = 1


@pytest.mark.parametrize("mode", MODES)
def test_integer_and_float_targets_give_the_same_loss(mode):
    """Whole-number float targets are accepted everywhere (SMP 0.6 needs int64 for multiclass)."""
    y_pred, y_true = make_inputs(mode, ignore=True)
    for loss_fn in _every_loss(mode, ignore_index=IGNORE):
        as_int, grad_int = value_and_grad(loss_fn, y_pred, y_true)
        as_float, grad_float = value_and_grad(loss_fn, y_pred, y_true.float())
        torch.testing.assert_close(as_int, as_float, msg=_loss_id(loss_fn), **TOL)
        torch.testing.assert_close(grad_int, grad_float, msg=_loss_id(loss_fn), **TOL)


@pytest.mark.parametrize("loss_fn", [DiceLoss(MULTICLASS_MODE), FocalLoss(MULTICLASS_MODE), SoftCrossEntropyLoss()], ids=_loss_id)
def test_fractional_multiclass_targets_are_refused(loss_fn):
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    with pytest.raises(InvalidInputError, match=r"non-integer value \d\.5"):
        loss_fn(y_pred, y_true.float() + 0.5)


@pytest.mark.parametrize("mode", MODES)
def test_double_precision_inputs_work(mode):
    """float64 y_pred works everywhere (SMP 0.6's LovaszLoss raises RuntimeError on it)."""
    y_pred, y_true = make_inputs(mode)
    for loss_fn in _every_loss(mode):
        single = loss_fn(y_pred, y_true)
        double = loss_fn(y_pred.double(), y_true)
        assert double.dtype == torch.float64, _loss_id(loss_fn)
        torch.testing.assert_close(double.float(), single, atol=1e-5, rtol=1e-5)


def test_binary_targets_may_omit_the_channel_dimension():
    y_pred, y_true = make_inputs(BINARY_MODE)
    for loss_fn in [*_every_loss(BINARY_MODE)]:
        torch.testing.assert_close(loss_fn(y_pred, y_true[:, 0]), loss_fn(y_pred, y_true), msg=_loss_id(loss_fn))


def test_multiclass_targets_may_keep_a_singleton_class_dimension():
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    for loss_fn in _every_loss(MULTICLASS_MODE):
        torch.testing.assert_close(loss_fn(y_pred, y_true.unsqueeze(1)), loss_fn(y_pred, y_true), msg=_loss_id(loss_fn))


def test_soft_cross_entropy_none_reduction_has_the_target_shape():
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    y_true[0, 0] = -100
    for ignore_index in (None, -100):
        if ignore_index is None:
            y_true = y_true.clamp_min(0)
        loss = SoftCrossEntropyLoss(reduction="none", smooth_factor=0.1, ignore_index=ignore_index)(y_pred, y_true)
        assert loss.shape == y_true.shape


def test_soft_bce_accepts_integer_targets():
    y_pred, y_true = make_inputs(MULTILABEL_MODE)
    loss_fn = SoftBCEWithLogitsLoss()
    torch.testing.assert_close(loss_fn(y_pred, y_true), F.binary_cross_entropy_with_logits(y_pred, y_true.float()))


def test_lovasz_from_logits_false_warns_that_it_has_no_effect():
    with pytest.warns(UserWarning, match="ignores from_logits=False"):
        loss_fn = LovaszLoss(MULTICLASS_MODE, from_logits=False)
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(loss_fn(y_pred, y_true), LovaszLoss(MULTICLASS_MODE)(y_pred, y_true))


def test_tversky_gamma_below_one_keeps_finite_gradients_at_zero_loss():
    """SMP 0.6: NaN gradients when the averaged loss is 0 and gamma < 1 (0 ** (gamma - 1) = inf)."""
    y_pred, y_true = make_inputs(BINARY_MODE)
    value, grad = value_and_grad(TverskyLoss(BINARY_MODE, gamma=0.5), y_pred, torch.zeros_like(y_true))
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    # Away from 0 the power is applied as usual.
    base = DiceLoss(BINARY_MODE)(y_pred, y_true)
    torch.testing.assert_close(TverskyLoss(BINARY_MODE, gamma=0.5)(y_pred, y_true), base**0.5)


def test_losses_are_modules_with_empty_state_dicts():
    for loss_fn in [*_every_loss(MULTICLASS_MODE), DiceLoss(MULTICLASS_MODE, classes=[0], class_weights=[1, 1, 1])]:
        assert isinstance(loss_fn, torch.nn.Module)
        assert loss_fn.state_dict() == {}, _loss_id(loss_fn)
    assert set(SoftBCEWithLogitsLoss(pos_weight=torch.ones(3)).state_dict()) == {"pos_weight"}


def test_tversky_is_a_dice_loss_with_equal_weights():
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    assert isinstance(TverskyLoss(MULTICLASS_MODE), DiceLoss)
    torch.testing.assert_close(TverskyLoss(MULTICLASS_MODE)(y_pred, y_true), DiceLoss(MULTICLASS_MODE)(y_pred, y_true))


def test_constants_are_smp_strings():
    assert (BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE) == ("binary", "multiclass", "multilabel")


# --------------------------------------------------------------------------- input errors

SHAPE_ERRORS = [
    (lambda: DiceLoss(BINARY_MODE), (2, 1, 8, 8), (2, 8, 9), r"y_pred \(2, 1, 8, 8\) and y_true \(2, 8, 9\)"),
    (lambda: DiceLoss(MULTICLASS_MODE), (2, 3, 8, 8), (2, 3, 8, 8), r"y_true \(2, 3, 8, 8\).*shape \(2, 8, 8\)"),
    (lambda: JaccardLoss(MULTILABEL_MODE), (2, 3, 8, 8), (2, 2, 8, 8), r"y_pred \(2, 3, 8, 8\) and y_true \(2, 2, 8, 8\)"),
    (lambda: TverskyLoss(MULTICLASS_MODE), (2, 3, 8, 8), (1, 8, 8), r"y_true \(1, 8, 8\)"),
    (lambda: FocalLoss(BINARY_MODE), (2, 1, 8, 8), (2, 1, 4, 4), r"y_true \(2, 1, 4, 4\)"),
    (lambda: FocalLoss(MULTILABEL_MODE), (2, 3, 8, 8), (2, 8, 8), r"y_pred \(2, 3, 8, 8\) and y_true \(2, 8, 8\)"),
    (lambda: LovaszLoss(BINARY_MODE), (2, 1, 8, 8), (2, 1, 8, 4), r"y_true \(2, 1, 8, 4\)"),
    (lambda: LovaszLoss(MULTICLASS_MODE), (2, 3, 8, 8), (2, 8, 4), r"y_true \(2, 8, 4\)"),
    (lambda: SoftBCEWithLogitsLoss(), (2, 3, 8, 8), (2, 8, 8), r"y_pred \(2, 3, 8, 8\) and y_true \(2, 8, 8\)"),
    (lambda: SoftCrossEntropyLoss(), (2, 3, 8, 8), (2, 3, 8), r"y_true \(2, 3, 8\)"),
    (lambda: MCCLoss(), (2, 1, 8, 8), (2, 2, 8, 8), r"y_pred \(2, 1, 8, 8\) and y_true \(2, 2, 8, 8\)"),
]


@pytest.mark.parametrize(("make", "pred_shape", "true_shape", "message"), SHAPE_ERRORS, ids=lambda v: v if isinstance(v, str) else None)
def test_mismatched_shapes_raise_naming_both_shapes(make, pred_shape, true_shape, message):
    with pytest.raises(InvalidInputError, match=message):
        make()(torch.randn(pred_shape), torch.zeros(true_shape, dtype=torch.long))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DiceLoss("multiclas"), r"Unknown loss mode 'multiclas'.*Did you mean 'multiclass'"),
        (lambda: FocalLoss("binary", reduction="avg"), r"Unknown reduction 'avg'"),
        (lambda: SoftCrossEntropyLoss(reduction="mena"), r"Did you mean 'mean'"),
        (lambda: DiceLoss(BINARY_MODE, classes=[0]), r"classes .* not supported with mode='binary'"),
        (lambda: JaccardLoss(BINARY_MODE, class_weights=[1.0]), r"class_weights are not supported with mode='binary'"),
        (lambda: FocalLoss(BINARY_MODE, class_weights=[1.0]), r"class_weights are not supported with mode='binary'"),
        (lambda: DiceLoss(MULTICLASS_MODE, classes=[]), r"classes is empty"),
        (lambda: DiceLoss(MULTICLASS_MODE, class_weights=[1.0, -1.0, 1.0]), r"non-negative"),
        (lambda: FocalLoss(MULTICLASS_MODE, gamma=None), r"gamma must be a number"),
    ],
)
def test_bad_arguments_raise_at_construction(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


@pytest.mark.parametrize(
    ("loss_fn", "message"),
    [
        (DiceLoss(MULTICLASS_MODE, classes=[0, 3]), r"classes \[0, 3\] do not fit the 3 channels"),
        (DiceLoss(MULTICLASS_MODE, class_weights=[1.0, 2.0]), r"class_weights has 2 values but y_pred has 3 classes"),
        (FocalLoss(MULTILABEL_MODE, class_weights=[1.0, 2.0]), r"class_weights has 2 values"),
        (JaccardLoss(MULTICLASS_MODE, classes=[1], class_weights=[1.0, 0.0, 1.0]), r"sum to 0"),
    ],
    ids=["classes", "weights-length", "focal-weights", "zero-weights"],
)
def test_class_selection_is_checked_against_the_channels(loss_fn, message):
    y_pred, y_true = make_inputs(loss_fn.mode)
    with pytest.raises(InvalidInputError, match=message):
        loss_fn(y_pred, y_true)


@pytest.mark.parametrize(
    "loss_fn",
    [DiceLoss(MULTICLASS_MODE), FocalLoss(MULTICLASS_MODE), LovaszLoss(MULTICLASS_MODE), SoftCrossEntropyLoss()],
    ids=_loss_id,
)
@pytest.mark.parametrize("bad", [3, 255, -2])
def test_out_of_range_class_ids_raise(loss_fn, bad):
    y_pred, y_true = make_inputs(MULTICLASS_MODE)
    y_true[1, 2, 3] = bad
    with pytest.raises(InvalidInputError, match=rf"class id {bad}, outside the 3 classes"):
        loss_fn(y_pred, y_true)


# --------------------------------------------------------------------------- devices and usage

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_tensors_give_the_cpu_result(mode):
    y_pred, y_true = make_inputs(mode, ignore=True)
    kwargs: dict[str, Any] = {"ignore_index": IGNORE}
    if mode != BINARY_MODE:
        kwargs["class_weights"] = [1.0, 2.0, 0.5]
    cases = [
        DiceLoss(mode, **kwargs),
        JaccardLoss(mode, **kwargs),
        TverskyLoss(mode, gamma=0.75, **kwargs),
        FocalLoss(mode, **kwargs),
        LovaszLoss(mode, per_image=True, ignore_index=IGNORE),
        SoftCrossEntropyLoss(ignore_index=IGNORE, smooth_factor=0.1) if mode == MULTICLASS_MODE else SoftBCEWithLogitsLoss(ignore_index=IGNORE),
    ]
    for loss_fn in cases:
        cpu_value, cpu_grad = value_and_grad(loss_fn, y_pred, y_true)
        cuda_value, cuda_grad = value_and_grad(loss_fn.cuda(), y_pred.cuda(), y_true.cuda())
        assert cuda_value.is_cuda and cuda_grad.is_cuda
        torch.testing.assert_close(cuda_value.cpu(), cpu_value, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cuda_grad.cpu(), cpu_grad, atol=1e-5, rtol=1e-5)


def test_readme_training_example_runs(capsys):
    torch.manual_seed(0)
    namespace: dict[str, Any] = {}
    # One thread: this model is small, and on a busy 2-core runner OpenMP threads waiting on each
    # other made it ten times slower than single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(README_EXAMPLE, "README example", "exec"), namespace)  # noqa: S102 - the documented snippet
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(namespace["loss"].item())
    assert 0.0 <= namespace["miou"].item() <= 1.0
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.smp
@pytest.mark.parametrize(
    "name",
    ["DiceLoss", "JaccardLoss", "TverskyLoss", "FocalLoss", "LovaszLoss", "MCCLoss", "SoftBCEWithLogitsLoss", "SoftCrossEntropyLoss"],
)
def test_constructor_arguments_are_smp_arguments(smp_losses, name):
    """Same names, order and defaults: code switches by changing the import."""

    def arguments(cls: type) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert arguments(getattr(segexport.losses, name)) == arguments(getattr(smp_losses, name))
