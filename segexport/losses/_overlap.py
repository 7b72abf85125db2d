"""The machinery shared by the region-overlap losses (Dice, Jaccard, Tversky).

All three compare soft predictions with one-hot targets per class, summed over the batch and the
pixels (SMP's ``dims=(0, 2)``), turn the per-class score into a loss, drop classes without any
true pixel, and average the classes. Only the score and the final aggregation differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InvalidInputError

from ._inputs import (
    as_index_tensor,
    as_weight_tensor,
    binary_target,
    check_class_selection,
    check_mode,
    class_labels,
    multiclass_target,
    same_shape,
)
from .constants import BINARY_MODE, MULTICLASS_MODE

# Scores are summed over the batch (0) and the flattened pixels (2), per class (1).
_SUM_DIMS = (0, 2)


class _OverlapLoss(nn.Module):
    """Base of DiceLoss, JaccardLoss and TverskyLoss; subclasses define :meth:`compute_score`."""

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
        super().__init__()
        self.mode = check_mode(mode)
        if class_weights is not None and mode == BINARY_MODE:
            raise InvalidInputError("class_weights are not supported with mode='binary' (there is one class).")
        if classes is not None:
            if mode == BINARY_MODE:
                raise InvalidInputError("classes (masking classes) is not supported with mode='binary'.")
            classes = as_index_tensor(classes, "classes")
            if classes.numel() == 0:
                raise InvalidInputError("classes is empty; pass at least one class id, or None for all classes.")
        # Plain attributes, not buffers, as in SMP: the loss keeps an empty state_dict.
        self.classes: torch.Tensor | None = classes
        self.from_logits = from_logits
        self.smooth = smooth
        self.eps = eps
        self.log_loss = log_loss
        self.ignore_index = ignore_index
        self.class_weights: torch.Tensor | None = (
            as_weight_tensor(class_weights, "class_weights") if class_weights is not None else None
        )

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) of predictions y_pred (N, C, *S) against targets y_true."""
        y_pred, y_true = self._flatten(y_pred, y_true)
        check_class_selection(self.classes, self.class_weights, y_pred.size(1))
        scores = self.compute_score(y_pred, y_true.type_as(y_pred), smooth=self.smooth, eps=self.eps, dims=_SUM_DIMS)
        loss = -torch.log(scores.clamp_min(self.eps)) if self.log_loss else 1.0 - scores
        # The score is undefined for a class without true pixels in the whole batch; such a class
        # contributes 0 (its prediction gets no gradient from this loss), as in SMP.
        loss = loss * (y_true.sum(_SUM_DIMS) > 0).to(loss.dtype)
        if self.classes is not None:
            loss = loss[self.classes.to(loss.device)]
        return self.aggregate_loss(loss)

    def _flatten(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and one-hot targets, both (N, C, P), with ignored pixels zeroed in both."""
        if self.mode == MULTICLASS_MODE:
            y_true = multiclass_target(y_pred, y_true)
        elif self.mode == BINARY_MODE:
            y_true = binary_target(y_pred, y_true)
        else:
            same_shape(y_pred, y_true, self.mode)
        if self.from_logits:
            # log-then-exp is SMP's choice: it does not saturate to exactly 0/1 for large logits.
            y_pred = y_pred.log_softmax(dim=1).exp() if self.mode == MULTICLASS_MODE else F.logsigmoid(y_pred).exp()

        bs = y_true.size(0)
        if self.mode == MULTICLASS_MODE:
            num_classes = y_pred.size(1)
            labels = class_labels(y_true, num_classes, self.ignore_index).reshape(bs, -1)
            y_pred = y_pred.reshape(bs, num_classes, -1)
            if self.ignore_index is None:
                return y_pred, F.one_hot(labels, num_classes).permute(0, 2, 1)
            keep = (labels != self.ignore_index).unsqueeze(1)
            one_hot = F.one_hot(labels * keep.squeeze(1), num_classes).permute(0, 2, 1)
            return y_pred * keep, one_hot * keep

        channels = 1 if self.mode == BINARY_MODE else y_pred.size(1)
        y_true = y_true.reshape(bs, channels, -1)
        y_pred = y_pred.reshape(bs, channels, -1)
        if self.ignore_index is not None:
            keep = y_true != self.ignore_index
            y_pred = y_pred * keep
            y_true = y_true * keep
        return y_pred, y_true

    def compute_score(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        smooth: float = 0.0,
        eps: float = 1e-7,
        dims: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Per-class overlap score in [0, 1] (1 is a perfect match)."""
        raise NotImplementedError

    def aggregate_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Per-class losses (C,) to a scalar: the mean, or the class_weights-weighted mean."""
        if self.class_weights is None:
            return loss.mean()
        weights = self.class_weights.to(device=loss.device)
        if self.classes is not None:
            weights = weights[self.classes.to(weights.device)]
        return (loss * weights).sum() / weights.sum()
