"""Segmentation metrics with SMP 0.6's names and arguments: switch by changing the import.

Compute confusion counts once with :func:`get_stats`, then any score from them::

    tp, fp, fn, tn = get_stats(logits.argmax(1), mask, mode="multiclass", num_classes=3)
    miou = iou_score(tp, fp, fn, tn, reduction="macro")

See :mod:`segexport.metrics.scores` for the reductions and ``zero_division``.
"""

from .scores import (
    accuracy,
    balanced_accuracy,
    f1_score,
    false_discovery_rate,
    false_negative_rate,
    false_omission_rate,
    false_positive_rate,
    fbeta_score,
    iou_score,
    negative_likelihood_ratio,
    negative_predictive_value,
    positive_likelihood_ratio,
    positive_predictive_value,
    precision,
    recall,
    sensitivity,
    specificity,
)
from .stats import get_stats

from . import functional  # SMP's module path: smp.metrics.functional.iou_score

__all__ = [
    "get_stats",
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
