"""Focal loss: cross-entropy down-weighted on well-classified pixels."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from segexport.errors import InvalidInputError

from ._functional import focal_loss_with_logits
from ._inputs import (
    as_weight_tensor,
    binary_target,
    check_class_selection,
    check_mode,
    check_reduction,
    class_labels,
    multiclass_target,
    same_shape,
)
from .constants import BINARY_MODE, MULTICLASS_MODE

__all__ = ["FocalLoss"]

REDUCTIONS = ("mean", "sum", "batchwise_mean", "none", None)


class FocalLoss(nn.Module):
    """Focal loss (arXiv:1708.02002) for binary, multiclass and multilabel segmentation (SMP 0.6).

    Every mode uses the sigmoid (binary) focal loss: multiclass mode computes it per class on
    one-vs-rest targets ``y_true == c`` and averages the classes, exactly as SMP 0.6 does.

    Args:
        mode: 'binary', 'multiclass' or 'multilabel'.
        alpha: weight of positives (1 - alpha for negatives); None for no weighting.
        gamma: focusing power (must be a number; 0 gives binary cross-entropy).
        ignore_index: target value whose pixels are removed before the loss.
        from_logits: y_pred holds logits; if False it holds probabilities, clamped to
            [eps, 1 - eps] and mapped to logits (multiclass: to log-probabilities, as SMP does).
        eps: clamp of probabilities when ``from_logits`` is False.
        reduction: 'mean', 'sum', 'batchwise_mean', or 'none'/None. In multiclass and multilabel
            modes the per-class results are then averaged, so 'none' also ends in a scalar (SMP's
            behaviour); in binary mode 'none' returns the per-pixel losses of the kept pixels.
        normalized: normalized focal loss (arXiv:1909.07829).
        reduced_threshold: reduced focal loss (arXiv:1903.01347); pair it with reduction='sum'.
        class_weights: one weight per class for the class average. Not for binary mode.

    Edge cases: when every pixel is ignored the 'mean' loss is 0 with a zero gradient (SMP 0.6
    returns NaN); multilabel mode with ignore_index masks each channel by its own target (SMP 0.6
    raises IndexError). Multiclass targets may be integer or whole-number floats.
    """

    def __init__(
        self,
        mode: str,
        alpha: float | None = None,
        gamma: float | None = 2.0,
        ignore_index: int | None = None,
        from_logits: bool = True,
        eps: float = 1e-7,
        reduction: str | None = "mean",
        normalized: bool = False,
        reduced_threshold: float | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        check_reduction(reduction, REDUCTIONS)
        if class_weights is not None and mode == BINARY_MODE:
            raise InvalidInputError("class_weights are not supported with mode='binary' (there is one class).")
        if gamma is None:
            # SMP's signature allows None but then fails on pow(None); a number is required.
            raise InvalidInputError("gamma must be a number (2.0 is the usual focal loss, 0 plain cross-entropy).")
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.eps = eps
        self.focal_loss_fn = partial(
            focal_loss_with_logits,
            alpha=alpha,
            gamma=gamma,
            reduced_threshold=reduced_threshold,
            reduction=reduction,
            normalized=normalized,
        )
        self.class_weights: torch.Tensor | None = (
            as_weight_tensor(class_weights, "class_weights") if class_weights is not None else None
        )

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The focal loss of y_pred (N, C, *S) against y_true (see the class docstring for shapes)."""
        if self.mode == BINARY_MODE:
            y_true = binary_target(y_pred, y_true)
        elif self.mode == MULTICLASS_MODE:
            y_true = class_labels(multiclass_target(y_pred, y_true), y_pred.size(1), self.ignore_index)
        else:
            same_shape(y_pred, y_true, self.mode)

        if not self.from_logits:
            y_pred = torch.clamp(y_pred, self.eps, 1 - self.eps)
            y_pred = torch.log(y_pred) if self.mode == MULTICLASS_MODE else torch.log(y_pred / (1 - y_pred))

        if self.mode == BINARY_MODE:
            y_true = y_true.reshape(-1)
            y_pred = y_pred.reshape(-1)
            if self.ignore_index is not None:
                keep = y_true != self.ignore_index
                y_pred = y_pred[keep]
                y_true = y_true[keep]
            return self.focal_loss_fn(y_pred, y_true)

        num_classes = y_pred.size(1)
        check_class_selection(None, self.class_weights, num_classes)
        keep = y_true != self.ignore_index if self.ignore_index is not None else None
        class_losses = []
        for cls in range(num_classes):
            if self.mode == MULTICLASS_MODE:
                cls_true = (y_true == cls).long()
                cls_keep = keep
            else:
                cls_true = y_true[:, cls, ...]
                cls_keep = keep[:, cls, ...] if keep is not None else None
            cls_pred = y_pred[:, cls, ...]
            if cls_keep is not None:
                cls_true = cls_true[cls_keep]
                cls_pred = cls_pred[cls_keep]
            class_losses.append(_class_scalar(self.focal_loss_fn(cls_pred, cls_true)))
        stacked = torch.stack(class_losses)
        if self.class_weights is None:
            return stacked.mean()
        weights = self.class_weights.to(device=stacked.device)
        return (stacked * weights).sum() / weights.sum()


def _class_scalar(loss: torch.Tensor) -> torch.Tensor:
    """One number per class: per-pixel results (reduction 'none') are averaged over the pixels.

    SMP stacks the per-pixel vectors and averages everything, which is the same mean when every
    class keeps the same pixels; averaging per class first also covers multilabel channels that
    keep different pixels, and lets class_weights act on classes (SMP fails to broadcast them).
    """
    if loss.dim() == 0:
        return loss
    return loss.mean() if loss.numel() else loss.sum() * 0.0
