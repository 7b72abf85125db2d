"""Binary cross-entropy on logits with ignore_index and label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._inputs import binary_target, check_reduction

__all__ = ["SoftBCEWithLogitsLoss"]

REDUCTIONS = ("mean", "sum", "none", None)


class SoftBCEWithLogitsLoss(nn.Module):
    """Drop-in for ``nn.BCEWithLogitsLoss`` with ignore_index and label smoothing (SMP 0.6 compatible).

    Args:
        weight: rescaling weight broadcast over the elements (a buffer, as in torch).
        ignore_index: target value whose elements contribute 0; as in SMP they still count in the
            'mean' denominator (the mean is over all elements).
        reduction: 'mean', 'sum', or 'none'/None (element-wise, y_pred's shape).
        smooth_factor: targets become t (1 - s) + (1 - t) s, e.g. s = 0.1 maps 1 -> 0.9, 0 -> 0.1.
        pos_weight: weight of positive examples, broadcast over the classes (a buffer).

    Shapes: y_true has y_pred's shape, or y_pred's without a singleton channel ((N, H, W) for
    (N, 1, H, W)), which SMP 0.6 documents but rejects. Integer targets are converted to y_pred's
    dtype (SMP 0.6 raises RuntimeError on them).
    """

    __constants__ = ["weight", "pos_weight", "reduction", "ignore_index", "smooth_factor"]

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int | None = -100,
        reduction: str | None = "mean",
        smooth_factor: float | None = None,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_reduction(reduction, REDUCTIONS)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.smooth_factor = smooth_factor
        # Buffers follow the module across .to(device); None buffers stay out of the state_dict.
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Element-wise BCE, masked and reduced."""
        y_true = binary_target(y_pred, y_true)
        target = y_true.to(y_pred.dtype)
        if self.smooth_factor is not None:
            target = (1 - target) * self.smooth_factor + target * (1 - self.smooth_factor)
        loss = F.binary_cross_entropy_with_logits(
            y_pred, target, self.weight, pos_weight=self.pos_weight, reduction="none"
        )
        if self.ignore_index is not None:
            loss = loss * (y_true != self.ignore_index).type_as(loss)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
