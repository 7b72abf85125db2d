"""Cross-entropy with label smoothing and ignore_index."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._functional import label_smoothed_nll_loss
from ._inputs import check_reduction, class_labels, multiclass_target

__all__ = ["SoftCrossEntropyLoss"]

REDUCTIONS = ("mean", "sum", "none", None)


class SoftCrossEntropyLoss(nn.Module):
    """Drop-in for ``nn.CrossEntropyLoss`` with label smoothing (SMP 0.6 compatible).

    Args:
        reduction: 'mean', 'sum', or 'none'/None (per pixel, y_true's shape).
        smooth_factor: label smoothing epsilon: (1 - eps) NLL + eps/C sum_c(-log p_c). None (the
            default) is plain cross-entropy; SMP 0.6 raises TypeError for it.
        ignore_index: class id whose pixels contribute 0. As in SMP they still count in the 'mean'
            denominator, unlike torch's CrossEntropyLoss; an all-ignored batch gives 0.
        dim: class dimension of y_pred.

    Shapes: y_pred (N, C, *S) logits; y_true (N, *S) (or with a singleton class dimension), integer
    class ids or whole-number floats. With ignore_index set, SMP 0.6's 'none' keeps a singleton
    class dimension; here 'none' always has y_true's shape without it.
    """

    __constants__ = ["reduction", "ignore_index", "smooth_factor"]

    def __init__(
        self,
        reduction: str | None = "mean",
        smooth_factor: float | None = None,
        ignore_index: int | None = -100,
        dim: int = 1,
    ) -> None:
        super().__init__()
        check_reduction(reduction, REDUCTIONS)
        self.smooth_factor = smooth_factor
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.dim = dim

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The smoothed cross-entropy."""
        labels = class_labels(multiclass_target(y_pred, y_true, self.dim), y_pred.size(self.dim), self.ignore_index)
        log_prob = F.log_softmax(y_pred, dim=self.dim)
        return label_smoothed_nll_loss(
            log_prob,
            labels,
            epsilon=self.smooth_factor,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            dim=self.dim,
        )
