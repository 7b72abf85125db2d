"""Scores computed from confusion counts, with SMP 0.6's reductions over images and classes.

Every score takes ``tp, fp, fn, tn`` as returned by :func:`~segexport.metrics.get_stats`
(int64, shape (N, C)) and these keyword arguments:

reduction
    How counts and scores are aggregated over images (N) and classes (C):

    - ``'micro'``: sum the counts over images and classes, then one score.
    - ``'macro'``: sum the counts over images, score each class, average the classes.
    - ``'weighted'``: as macro, but the class scores are averaged with ``class_weights``.
    - ``'micro-imagewise'``: sum the counts over classes per image, score each image, average.
    - ``'macro-imagewise'``: score each image and class, average classes then images.
    - ``'weighted-imagewise'``: as macro-imagewise with ``class_weights``.
    - ``'none'`` or None: the (N, C) scores.

    With ``class_weights`` the weights are normalised to sum 1 and multiply the class scores;
    'weighted' sums the products, while 'macro' and the imagewise means average them (SMP 0.6's
    arithmetic, kept for identical numbers).
class_weights
    One weight per class; required by the 'weighted' reductions.
zero_division
    The score used where it is 0/0 (e.g. IoU of a class absent from both prediction and target):
    a number, or 'warn' for 0 with a warning. SMP 0.6 applies it to every reduction except
    'micro', which returns NaN on all-empty inputs; here 'micro' gets it too, so an all-empty
    batch scores ``zero_division`` whatever the reduction.

Ratios with a zero denominator but a non-zero numerator stay infinite (the likelihood ratios
when the false positive rate or specificity is 0), as in SMP.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from segexport.errors import InvalidInputError, unknown

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "f1_score",
    "false_discovery_rate",
    "false_negative_rate",
    "false_omission_rate",
    "false_positive_rate",
    "fbeta_score",
    "iou_score",
    "negative_likelihood_ratio",
    "negative_predictive_value",
    "positive_likelihood_ratio",
    "positive_predictive_value",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
]

REDUCTIONS = ("micro", "macro", "weighted", "micro-imagewise", "macro-imagewise", "weighted-imagewise", "none")

Weights = Sequence[float] | torch.Tensor | None
ZeroDivision = str | float

# The score formulas on count tensors; 0/0 yields NaN, replaced afterwards by zero_division.


def _fbeta(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    beta_tp = (1 + beta**2) * tp
    beta_fn = (beta**2) * fn
    return beta_tp / (beta_tp + beta_fn + fp)


def _iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tp / (tp + fp + fn)


def _accuracy(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return (tp + tn) / (tp + fp + fn + tn)


def _sensitivity(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tp / (tp + fn)


def _specificity(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tn / (tn + fp)


def _balanced_accuracy(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return (_sensitivity(tp, fp, fn, tn) + _specificity(tp, fp, fn, tn)) / 2


def _ppv(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tp / (tp + fp)


def _npv(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tn / (tn + fn)


def _fnr(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 1 - _sensitivity(tp, fp, fn, tn)


def _fpr(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 1 - _specificity(tp, fp, fn, tn)


def _fdr(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 1 - _ppv(tp, fp, fn, tn)


def _for(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 1 - _npv(tp, fp, fn, tn)


def _plr(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return _sensitivity(tp, fp, fn, tn) / _fpr(tp, fp, fn, tn)


def _nlr(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return _fnr(tp, fp, fn, tn) / _specificity(tp, fp, fn, tn)


def _fill_zero_division(score: torch.Tensor, zero_division: ZeroDivision) -> torch.Tensor:
    """NaN (from 0/0) becomes zero_division; 'warn' means 0 and a warning."""
    nans = torch.isnan(score)
    if zero_division == "warn":
        if bool(nans.any()):
            warnings.warn("Zero division in metric calculation!", stacklevel=5)
        zero_division = 0.0
    return torch.where(nans, torch.as_tensor(zero_division, dtype=score.dtype, device=score.device), score)


def _check_zero_division(zero_division: ZeroDivision) -> None:
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise InvalidInputError(f"zero_division must be a number or 'warn', got {zero_division!r}.")
    elif not isinstance(zero_division, (int, float)):
        raise InvalidInputError(f"zero_division must be a number or 'warn', got {zero_division!r}.")


def _normalised_weights(class_weights: Weights, num_classes: int, like: torch.Tensor) -> torch.Tensor | float:
    """Class weights summing to 1 on the counts' device; 1.0 when there are none."""
    if class_weights is None:
        return 1.0
    weights = torch.as_tensor(class_weights, dtype=torch.float32).to(like.device).reshape(-1)
    if weights.numel() != num_classes:
        raise InvalidInputError(
            f"class_weights has {weights.numel()} values but the counts have {num_classes} classes; give one per class."
        )
    total = float(weights.sum())
    if total == 0 or not bool(torch.isfinite(weights).all()):
        raise InvalidInputError(f"class_weights must be finite and not sum to 0, got {weights.tolist()}.")
    return weights / total


def _reduce(
    metric_fn: Callable[..., torch.Tensor],
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None,
    class_weights: Weights,
    zero_division: ZeroDivision,
    **metric_kwargs: float,
) -> torch.Tensor:
    """Aggregate counts and scores over images and classes as the reduction says."""
    if reduction is not None and reduction not in REDUCTIONS:
        raise unknown("reduction", reduction, REDUCTIONS)
    if reduction is not None and "weighted" in reduction and class_weights is None:
        raise InvalidInputError(f"reduction={reduction!r} needs class_weights (one weight per class).")
    _check_zero_division(zero_division)
    if not (tp.shape == fp.shape == fn.shape == tn.shape):
        raise InvalidInputError(
            f"tp, fp, fn and tn must have the same shape, got {tuple(tp.shape)}, {tuple(fp.shape)}, "
            f"{tuple(fn.shape)} and {tuple(tn.shape)}."
        )

    def score(*counts: torch.Tensor) -> torch.Tensor:
        return _fill_zero_division(metric_fn(*counts, **metric_kwargs), zero_division)

    if reduction == "micro":
        return score(tp.sum(), fp.sum(), fn.sum(), tn.sum())
    if reduction == "micro-imagewise":
        return score(tp.sum(1), fp.sum(1), fn.sum(1), tn.sum(1)).mean()
    if reduction is None or reduction == "none":
        return score(tp, fp, fn, tn)
    # The remaining reductions weigh classes; weights are ignored by the ones above, as in SMP.
    weights = _normalised_weights(class_weights, tp.shape[-1], tp)
    if reduction == "macro":
        return (score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0)) * weights).mean()
    if reduction == "weighted":
        return (score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0)) * weights).sum()
    return (score(tp, fp, fn, tn).mean(0) * weights).mean()  # macro- and weighted-imagewise


def fbeta_score(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    beta: float = 1.0,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """F-beta score: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP); beta > 1 favours recall."""
    return _reduce(_fbeta, tp, fp, fn, tn, reduction, class_weights, zero_division, beta=beta)


def f1_score(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """F1 score (Dice coefficient): 2 TP / (2 TP + FN + FP)."""
    return _reduce(_fbeta, tp, fp, fn, tn, reduction, class_weights, zero_division, beta=1.0)


def iou_score(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """IoU (Jaccard index): TP / (TP + FP + FN)."""
    return _reduce(_iou, tp, fp, fn, tn, reduction, class_weights, zero_division)


def accuracy(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Accuracy: (TP + TN) / all pixels."""
    return _reduce(_accuracy, tp, fp, fn, tn, reduction, class_weights, zero_division)


def sensitivity(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Sensitivity, recall, true positive rate: TP / (TP + FN)."""
    return _reduce(_sensitivity, tp, fp, fn, tn, reduction, class_weights, zero_division)


def specificity(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Specificity, true negative rate: TN / (TN + FP)."""
    return _reduce(_specificity, tp, fp, fn, tn, reduction, class_weights, zero_division)


def balanced_accuracy(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Balanced accuracy: the mean of sensitivity and specificity."""
    return _reduce(_balanced_accuracy, tp, fp, fn, tn, reduction, class_weights, zero_division)


def positive_predictive_value(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Precision, positive predictive value: TP / (TP + FP)."""
    return _reduce(_ppv, tp, fp, fn, tn, reduction, class_weights, zero_division)


def negative_predictive_value(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Negative predictive value: TN / (TN + FN)."""
    return _reduce(_npv, tp, fp, fn, tn, reduction, class_weights, zero_division)


def false_negative_rate(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Miss rate, false negative rate: 1 - sensitivity."""
    return _reduce(_fnr, tp, fp, fn, tn, reduction, class_weights, zero_division)


def false_positive_rate(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Fall-out, false positive rate: 1 - specificity."""
    return _reduce(_fpr, tp, fp, fn, tn, reduction, class_weights, zero_division)


def false_discovery_rate(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """False discovery rate: 1 - precision."""
    return _reduce(_fdr, tp, fp, fn, tn, reduction, class_weights, zero_division)


def false_omission_rate(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """False omission rate: 1 - negative predictive value."""
    return _reduce(_for, tp, fp, fn, tn, reduction, class_weights, zero_division)


def positive_likelihood_ratio(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Positive likelihood ratio: sensitivity / false positive rate (inf when FPR is 0)."""
    return _reduce(_plr, tp, fp, fn, tn, reduction, class_weights, zero_division)


def negative_likelihood_ratio(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Weights = None,
    zero_division: ZeroDivision = 1.0,
) -> torch.Tensor:
    """Negative likelihood ratio: false negative rate / specificity (inf when specificity is 0)."""
    return _reduce(_nlr, tp, fp, fn, tn, reduction, class_weights, zero_division)


# Aliases, as in SMP: the same functions under their other common names.
precision = positive_predictive_value
recall = sensitivity

_ARGS_DOC = """

    Args:
        tp, fp, fn, tn: int64 counts of shape (N, C), from :func:`~segexport.metrics.get_stats`.
        reduction: 'micro', 'macro', 'weighted', 'micro-imagewise', 'macro-imagewise',
            'weighted-imagewise', or 'none'/None for the (N, C) scores (see the module docstring).
        class_weights: one weight per class, required by the 'weighted' reductions.
        zero_division: value for 0/0, or 'warn' (0 and a warning).

    Returns:
        A scalar tensor, or (N, C) scores for reduction 'none'/None.
    """

for _score in (
    fbeta_score,
    f1_score,
    iou_score,
    accuracy,
    sensitivity,
    specificity,
    balanced_accuracy,
    positive_predictive_value,
    negative_predictive_value,
    false_negative_rate,
    false_positive_rate,
    false_discovery_rate,
    false_omission_rate,
    positive_likelihood_ratio,
    negative_likelihood_ratio,
):
    # One shared Args section instead of fifteen copies (SMP appends its text the same way).
    _score.__doc__ = (_score.__doc__ or "") + _ARGS_DOC
del _score
