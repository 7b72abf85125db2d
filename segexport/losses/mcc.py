"""Matthews correlation coefficient loss for binary segmentation."""

from __future__ import annotations

import torch
from torch import nn

from ._inputs import binary_target

__all__ = ["MCCLoss"]


class MCCLoss(nn.Module):
    """1 - MCC of soft predictions (arXiv:2010.13454), binary only (SMP 0.6 compatible).

    The confusion counts are summed over the whole batch, each offset by ``eps`` so that a batch
    with a single class present (an empty mask, or a full one) stays finite.

    Args:
        eps: added to TP, TN, FP and FN.

    Shapes: y_pred holds probabilities (no sigmoid is applied, as in SMP), (N, 1, *S) or (N, *S);
    y_true 0/1, integer or float, the same shape or without/with the singleton channel.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The MCC loss (a scalar)."""
        y_true = binary_target(y_pred, y_true)
        bs = y_true.shape[0]
        y_true = y_true.reshape(bs, 1, -1)
        y_pred = y_pred.reshape(bs, 1, -1)
        tp = torch.sum(y_pred * y_true) + self.eps
        tn = torch.sum((1 - y_pred) * (1 - y_true)) + self.eps
        fp = torch.sum(y_pred * (1 - y_true)) + self.eps
        fn = torch.sum((1 - y_pred) * y_true) + self.eps
        numerator = tp * tn - fp * fn
        denominator = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return 1.0 - numerator / denominator
