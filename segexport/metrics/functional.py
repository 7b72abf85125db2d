"""SMP's module path ``metrics.functional``: the functions of :mod:`segexport.metrics` under that name.

``smp.metrics.functional.iou_score`` keeps working after ``import segexport as smp``; the
functions themselves live in :mod:`.stats` (confusion counts) and :mod:`.scores` (the scores).
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
