"""Jaccard (IoU) loss: 1 - soft Jaccard index per class, averaged over the classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._functional import soft_jaccard_score
from ._overlap import _OverlapLoss

__all__ = ["JaccardLoss"]


class JaccardLoss(_OverlapLoss):
    """Jaccard (IoU) loss for binary, multiclass and multilabel segmentation (SMP 0.6 compatible).

    Args:
        mode: 'binary', 'multiclass' or 'multilabel'.
        classes: class ids that contribute to the loss; None for all. Not for binary mode.
        log_loss: loss is -log(iou) instead of 1 - iou.
        from_logits: y_pred holds logits (softmax for multiclass, sigmoid otherwise is applied).
        smooth: added to numerator and denominator of the index.
        ignore_index: target value whose pixels are excluded from both prediction and target.
        eps: lower bound of the denominator (and of the score under log_loss).
        class_weights: one weight per class (also when ``classes`` selects some); the loss is the
            weighted mean over the selected classes. Not for binary mode.

    Shapes, target types and edge cases are those of :class:`~segexport.losses.DiceLoss`: a class
    without true pixels contributes 0, an all-empty or all-ignored batch gives 0.
    """

    def __init__(
        self,
        mode: str,
        classes: Sequence[int] | torch.Tensor | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: int | None = None,
        eps: float = 1e-7,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__(mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights)

    def compute_score(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        smooth: float = 0.0,
        eps: float = 1e-7,
        dims: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Soft Jaccard index per class."""
        return soft_jaccard_score(output, target, smooth, eps, dims)
