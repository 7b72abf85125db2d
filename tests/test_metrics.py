"""Metrics: get_stats and every score under every reduction equal SMP 0.6; edge cases are defined."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch

import segexport.metrics as metrics
from segexport.errors import InvalidInputError
from segexport.metrics import get_stats, iou_score

SCORES = [
    "fbeta_score",
    "f1_score",
    "iou_score",
    "accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "positive_predictive_value",
    "negative_predictive_value",
    "false_negative_rate",
    "false_positive_rate",
    "false_discovery_rate",
    "false_omission_rate",
    "positive_likelihood_ratio",
    "negative_likelihood_ratio",
]
REDUCTIONS = ["micro", "macro", "weighted", "micro-imagewise", "macro-imagewise", "weighted-imagewise", "none", None]
WEIGHTS = [0.2, 0.3, 0.5, 1.0]
TOL = {"atol": 1e-6, "rtol": 1e-6, "equal_nan": True}


@pytest.fixture(scope="module")
def smp_metrics() -> Any:
    return pytest.importorskip("segmentation_models_pytorch").metrics


def random_stats(seed: int = 0, batch: int = 3, classes: int = 4) -> tuple[torch.Tensor, ...]:
    """Counts of 3 images x 4 classes from random multiclass masks, with some 0/0 cells:
    class 3 never occurs in image 0 (neither predicted nor true)."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes - 1, (batch, 6, 6), generator=gen)
    output = torch.where(torch.rand(target.shape, generator=gen) < 0.7, target, torch.randint(0, classes, target.shape, generator=gen))
    output[0] = output[0].clamp_max(classes - 2)
    return get_stats(output, target, "multiclass", num_classes=classes)


def _score_args(name: str, reduction: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"reduction": reduction}
    if reduction is not None and "weighted" in reduction:
        kwargs["class_weights"] = WEIGHTS
    if name == "fbeta_score":
        kwargs["beta"] = 2.0
    return kwargs


# --------------------------------------------------------------------------- get_stats parity

def _stats_cases() -> list[Any]:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 8, 8, generator=gen)
    labels01 = torch.randint(0, 2, (2, 3, 8, 8), generator=gen)
    ids = torch.randint(0, 4, (2, 8, 8), generator=gen)
    pred_ids = torch.randint(0, 4, (2, 8, 8), generator=gen)
    with_ignore = torch.where(torch.rand(ids.shape, generator=gen) < 0.2, 255, ids)
    with_minus_one = torch.where(with_ignore == 255, -1, with_ignore)
    return [
        pytest.param(probs[:, :1], labels01[:, :1], {"mode": "binary", "threshold": 0.5}, id="binary-threshold"),
        pytest.param(labels01[:, :1].flip(0), labels01[:, :1], {"mode": "binary"}, id="binary-int"),
        pytest.param(probs, labels01, {"mode": "multilabel", "threshold": 0.3}, id="multilabel-threshold"),
        pytest.param(labels01.flip(1), labels01, {"mode": "multilabel"}, id="multilabel-int"),
        pytest.param(pred_ids, ids, {"mode": "multiclass", "num_classes": 4}, id="multiclass"),
        pytest.param(pred_ids, with_ignore, {"mode": "multiclass", "num_classes": 4, "ignore_index": 255}, id="multiclass-ignore-255"),
        pytest.param(pred_ids, with_minus_one, {"mode": "multiclass", "num_classes": 4, "ignore_index": -1}, id="multiclass-ignore-minus-1"),
        pytest.param(pred_ids[:1], ids[:1], {"mode": "multiclass", "num_classes": 4}, id="multiclass-batch-of-one"),
        pytest.param(probs[:1], labels01[:1], {"mode": "multilabel", "threshold": 0.5}, id="multilabel-batch-of-one"),
        pytest.param(pred_ids.reshape(2, 64), ids.reshape(2, 64), {"mode": "multiclass", "num_classes": 4}, id="multiclass-1d"),
    ]


@pytest.mark.smp
@pytest.mark.parametrize(("output", "target", "kwargs"), _stats_cases())
def test_get_stats_matches_smp(smp_metrics, output, target, kwargs):
    ours = get_stats(output, target, **kwargs)
    theirs = smp_metrics.get_stats(output, target, **kwargs)
    for mine, ref in zip(ours, theirs):
        assert mine.dtype == torch.int64
        assert torch.equal(mine, ref)


@pytest.mark.smp
def test_get_stats_keeps_smp_argument_order(smp_metrics):
    """Positional calls carry over: (output, target, mode, ignore_index, threshold, num_classes)."""
    output, target = torch.randint(0, 3, (2, 8, 8)), torch.randint(0, 3, (2, 8, 8))
    target[0, 0] = -1
    for mine, ref in zip(get_stats(output, target, "multiclass", -1, None, 3), smp_metrics.get_stats(output, target, "multiclass", -1, None, 3)):
        assert torch.equal(mine, ref)


# --------------------------------------------------------------------------- score parity

@pytest.mark.smp
@pytest.mark.parametrize("reduction", REDUCTIONS, ids=str)
@pytest.mark.parametrize("name", SCORES)
def test_scores_match_smp(smp_metrics, name, reduction):
    tp, fp, fn, tn = random_stats()
    kwargs = _score_args(name, reduction)
    ours = getattr(metrics, name)(tp, fp, fn, tn, **kwargs)
    theirs = getattr(smp_metrics, name)(tp, fp, fn, tn, **kwargs)
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.smp
@pytest.mark.parametrize("zero_division", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("reduction", ["macro", "micro-imagewise", "macro-imagewise", "none"])
@pytest.mark.parametrize("name", ["iou_score", "f1_score", "precision", "recall", "specificity", "positive_likelihood_ratio"])
def test_zero_division_matches_smp(smp_metrics, name, reduction, zero_division):
    tp, fp, fn, tn = random_stats(seed=1)
    ours = getattr(metrics, name)(tp, fp, fn, tn, reduction=reduction, zero_division=zero_division)
    theirs = getattr(smp_metrics, name)(tp, fp, fn, tn, reduction=reduction, zero_division=zero_division)
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.smp
@pytest.mark.parametrize("reduction", ["macro", "macro-imagewise", "weighted", "weighted-imagewise"])
def test_class_weights_match_smp(smp_metrics, reduction):
    """SMP 0.6's arithmetic with weights is kept: normalised weights times scores, then mean or sum."""
    tp, fp, fn, tn = random_stats(seed=2)
    for weights in ([1, 2, 3, 4], [0.0, 1.0, 1.0, 0.0]):
        ours = metrics.iou_score(tp, fp, fn, tn, reduction=reduction, class_weights=weights)
        theirs = smp_metrics.iou_score(tp, fp, fn, tn, reduction=reduction, class_weights=weights)
        torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.smp
def test_zero_division_warn_matches_smp(smp_metrics):
    tp, fp, fn, tn = random_stats()
    with pytest.warns(UserWarning, match="Zero division"):
        ours = metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = smp_metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division="warn")
    torch.testing.assert_close(ours, theirs)
    assert ours[0, 3].item() == 0.0


def test_aliases_are_the_same_functions():
    assert metrics.precision is metrics.positive_predictive_value
    assert metrics.recall is metrics.sensitivity


# --------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("reduction", REDUCTIONS, ids=str)
def test_empty_masks_score_zero_division_in_every_reduction(reduction):
    """Nothing predicted, nothing true: IoU is 0/0 everywhere. SMP 0.6 returns NaN for 'micro';
    here every reduction uses zero_division."""
    empty = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    tp, fp, fn, tn = get_stats(empty, empty, "binary")
    assert tp.sum() == fp.sum() == fn.sum() == 0 and (tn == 64).all()
    kwargs = _score_args("iou_score", reduction)
    kwargs["class_weights"] = [1.0] if "class_weights" in kwargs else None
    for zero_division in (1.0, 0.0):
        score = iou_score(tp, fp, fn, tn, zero_division=zero_division, **kwargs)
        assert torch.all(score == zero_division)


def test_micro_zero_division_warns_like_the_other_reductions():
    empty = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    with pytest.warns(UserWarning, match="Zero division"):
        assert iou_score(*get_stats(empty, empty, "binary"), reduction="micro", zero_division="warn").item() == 0.0


def test_all_pixels_ignored_count_nothing():
    target = torch.full((2, 8, 8), 255)
    tp, fp, fn, tn = get_stats(torch.randint(0, 3, (2, 8, 8)), target, "multiclass", ignore_index=255, num_classes=3)
    for counts in (tp, fp, fn, tn):
        assert counts.shape == (2, 3) and not counts.any()
    assert (iou_score(tp, fp, fn, tn, reduction="macro") == 1.0).all()


def test_one_class_with_ignored_pixels_is_counted_exactly():
    """num_classes=1: SMP 0.6's histc counts ignored pixels as true positives and returns tn < 0."""
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0] = -1
    tp, fp, fn, tn = get_stats(torch.zeros(1, 4, 4, dtype=torch.long), target, "multiclass", ignore_index=-1, num_classes=1)
    assert (tp.item(), fp.item(), fn.item(), tn.item()) == (12, 0, 0, 0)


def test_multiclass_counts_add_up_per_image():
    output, target = torch.randint(0, 5, (2, 7, 9)), torch.randint(0, 5, (2, 7, 9))
    tp, fp, fn, tn = get_stats(output, target, "multiclass", num_classes=5)
    assert ((tp + fp + fn + tn) == 63).all()
    assert torch.equal(tp.sum(1), (output == target).reshape(2, -1).sum(1))


def test_per_class_thresholds():
    """A sequence threshold cuts each class at its own value (SMP 0.6 raises TypeError)."""
    probs = torch.tensor([0.4, 0.6]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2, dtype=torch.long)
    tp, *_ = get_stats(probs, target, "multilabel", threshold=[0.5, 0.5])
    assert tp.tolist() == [[0, 4]]
    tp, *_ = get_stats(probs, target, "multilabel", threshold=[0.3, 0.7])
    assert tp.tolist() == [[4, 0]]


def test_integer_and_float_targets_give_the_same_stats():
    """Whole-number float targets are accepted (SMP 0.6 rejects every float target)."""
    output, target = torch.randint(0, 3, (2, 8, 8)), torch.randint(0, 3, (2, 8, 8))
    for mine, ref in zip(get_stats(output, target.float(), "multiclass", num_classes=3), get_stats(output, target, "multiclass", num_classes=3)):
        assert torch.equal(mine, ref)
    probs, labels = torch.rand(2, 2, 8, 8), torch.randint(0, 2, (2, 2, 8, 8))
    for mine, ref in zip(get_stats(probs, labels.float(), "multilabel", threshold=0.5), get_stats(probs, labels, "multilabel", threshold=0.5)):
        assert torch.equal(mine, ref)


def test_stats_are_ordinary_tensors():
    """SMP 0.6 returns inference-mode tensors, which refuse in-place updates outside inference mode."""
    tp, fp, fn, tn = get_stats(torch.randint(0, 3, (1, 4, 4)), torch.randint(0, 3, (1, 4, 4)), "multiclass", num_classes=3)
    assert not tp.is_inference()
    tp += fp  # accumulating over batches works


def test_likelihood_ratio_is_infinite_without_false_positives():
    tp, fp, fn, tn = (torch.tensor([[v]]) for v in (5, 0, 1, 10))
    assert metrics.positive_likelihood_ratio(tp, fp, fn, tn, reduction="micro").item() == float("inf")


# --------------------------------------------------------------------------- input errors

def ids(*shape: int, fill: int = 0) -> torch.Tensor:
    return torch.full(shape, fill, dtype=torch.long)


MC3 = {"mode": "multiclass", "num_classes": 3}
GET_STATS_ERRORS = [
    pytest.param(ids(2, 1, 8, 8), ids(2, 8, 8), {"mode": "binary"}, r"output \(2, 1, 8, 8\) and target \(2, 8, 8\)", id="binary-shapes"),
    pytest.param(ids(2, 8, 8), ids(2, 8, 9), MC3, r"\(2, 8, 8\) and target \(2, 8, 9\)", id="multiclass-shapes"),
    pytest.param(torch.zeros(2, 1, 8, 8), ids(2, 1, 8, 8), {"mode": "binary"}, r"give a threshold", id="float-no-threshold"),
    pytest.param(torch.zeros(2, 8, 8), ids(2, 8, 8), MC3, r"argmax", id="float-multiclass-output"),
    pytest.param(ids(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5), {"mode": "binary"}, r"integer labels, found 0\.5", id="fractional-target"),
    pytest.param(ids(2, 4, 4), ids(2, 4, 4), {**MC3, "mode": "multiclas"}, r"Did you mean 'multiclass'", id="mode"),
    pytest.param(ids(2, 4, 4), ids(2, 4, 4), {"mode": "multiclass"}, r"needs num_classes", id="num-classes"),
    pytest.param(ids(2, 4, 4), ids(2, 4, 4), {**MC3, "ignore_index": 0}, r"ignore_index=0 is a class id", id="ignore-is-a-class"),
    pytest.param(ids(2, 4, 4), ids(2, 4, 4), {**MC3, "threshold": 0.5}, r"threshold is not supported", id="threshold-multiclass"),
    pytest.param(ids(2, 1, 4, 4), ids(2, 1, 4, 4), {"mode": "binary", "ignore_index": 255}, r"only supported in multiclass", id="ignore-binary"),
    pytest.param(ids(2, 4, 4, fill=3), ids(2, 4, 4), MC3, r"output holds the class id 3", id="output-out-of-range"),
    pytest.param(ids(2, 4, 4), ids(2, 4, 4, fill=7), {**MC3, "ignore_index": 255}, r"target holds the class id 7", id="target-out-of-range"),
    pytest.param(torch.rand(2, 3, 4, 4), ids(2, 3, 4, 4), {"mode": "multilabel", "threshold": [0.5, 0.5]}, r"threshold has 2 values", id="threshold-length"),
]


@pytest.mark.parametrize(("output", "target", "kwargs", "message"), GET_STATS_ERRORS)
def test_get_stats_rejects_bad_input(output, target, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        get_stats(output, target, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduction": "mikro"}, r"Unknown reduction 'mikro'.*Did you mean 'micro'"),
        ({"reduction": "weighted"}, r"needs class_weights"),
        ({"reduction": "macro", "class_weights": [1.0, 2.0]}, r"class_weights has 2 values but the counts have 4 classes"),
        ({"reduction": "weighted", "class_weights": [0, 0, 0, 0]}, r"not sum to 0"),
        ({"reduction": "macro", "zero_division": "nan"}, r"zero_division must be a number or 'warn'"),
    ],
)
def test_scores_reject_bad_arguments(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        iou_score(*random_stats(), **kwargs)


def test_mismatched_count_shapes_are_refused():
    tp, fp, fn, tn = random_stats()
    with pytest.raises(InvalidInputError, match=r"same shape, got \(3, 4\), \(3, 3\)"):
        iou_score(tp, fp[:, :3], fn, tn)


# --------------------------------------------------------------------------- devices

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["binary", "multilabel", "multiclass"])
def test_cuda_tensors_give_the_cpu_result_on_the_gpu(mode):
    if mode == "multiclass":
        output, target = torch.randint(0, 3, (2, 8, 8)), torch.randint(0, 3, (2, 8, 8))
        target[0, 0] = 255
        kwargs: dict[str, Any] = {"num_classes": 3, "ignore_index": 255}
    else:
        channels = 1 if mode == "binary" else 3
        output, target = torch.rand(2, channels, 8, 8), torch.randint(0, 2, (2, channels, 8, 8))
        kwargs = {"threshold": [0.5] * channels}
    cpu = get_stats(output, target, mode, **kwargs)
    gpu = get_stats(output.cuda(), target.cuda(), mode, **kwargs)
    for mine, ref in zip(gpu, cpu):
        assert mine.is_cuda and torch.equal(mine.cpu(), ref)
    for reduction in ("micro", "macro", "weighted", "none"):
        weights = [1.0] * cpu[0].shape[1]
        on_gpu = iou_score(*gpu, reduction=reduction, class_weights=weights)
        assert on_gpu.is_cuda
        torch.testing.assert_close(on_gpu.cpu(), iou_score(*cpu, reduction=reduction, class_weights=weights))


@pytest.mark.smp
@pytest.mark.parametrize("name", ["get_stats", *SCORES])
def test_function_arguments_are_smp_arguments(smp_metrics, name):
    """Same names, order and defaults: code switches by changing the import."""

    def arguments(fn: Any) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert arguments(getattr(metrics, name)) == arguments(getattr(smp_metrics, name))
