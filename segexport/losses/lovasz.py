"""Lovász losses (arXiv:1705.08790): a convex surrogate that optimises the Jaccard index directly.

Binary and multilabel modes use the Lovász hinge on logits; multiclass mode uses Lovász-Softmax
over the classes present in the target. Values and gradients match SMP 0.6 (Berman's reference
implementation) for the same inputs.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._inputs import binary_target, check_mode, class_labels, multiclass_target, same_shape
from .constants import BINARY_MODE, MULTICLASS_MODE

__all__ = ["LovaszLoss"]


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted descending.

    The Jaccard loss of the top-k pixels, differenced along k (Alg. 1 of the paper).
    """
    gts = gt_sorted.sum()
    gt = gt_sorted.float()
    intersection = gts - gt.cumsum(0)
    union = gts + (1 - gt).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary Lovász hinge of flat logits against flat 0/1 labels; 0 with zero gradient when empty."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels.float() - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    # SMP dots with a float32 gradient and fails on float64 logits; cast to the errors' dtype.
    grad = _lovasz_grad(labels[perm]).to(errors_sorted.dtype)
    return torch.dot(F.relu(errors_sorted), grad)


def _softmax_flat(probas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász-Softmax of probabilities (P, C) against labels (P,), averaged over present classes."""
    if probas.numel() == 0:
        # Only ignored pixels: a scalar 0 that still backpropagates (SMP returns an empty tensor).
        return probas.sum() * 0.0
    num_classes = probas.size(1)
    present = torch.bincount(labels, minlength=num_classes)[:num_classes] > 0
    losses = []
    for cls in torch.nonzero(present).flatten().tolist():
        fg = (labels == cls).type_as(probas)
        errors = (fg - probas[:, cls]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm]).to(errors_sorted.dtype)))
    return torch.stack(losses).mean()


class LovaszLoss(nn.Module):
    """Lovász loss for binary, multiclass and multilabel segmentation (SMP 0.6 compatible).

    Args:
        mode: 'binary', 'multiclass' or 'multilabel'.
        per_image: compute the loss per image and average, instead of over the whole batch.
        ignore_index: target value whose pixels are removed before the loss.
        from_logits: accepted for SMP compatibility and, as in SMP 0.6, without effect: binary and
            multilabel modes always take logits, multiclass mode always applies softmax. Passing
            False warns.

    Shapes: y_pred (N, C, *S); y_true (N, *S) class ids for multiclass (or (N, 1, *S)),
    (N, C, *S) for multilabel, (N, *S) or (N, 1, *S) for binary. Multilabel mode is a binary
    hinge over all channels together, as in SMP.

    Edge cases: an image or batch with every pixel ignored contributes 0 (with gradient 0; SMP 0.6
    returns an empty tensor in multiclass mode); multiclass with a single class works (softmax is
    then constant, SMP 0.6 raises ValueError); float64 inputs work (SMP 0.6 raises RuntimeError).
    """

    def __init__(
        self,
        mode: str,
        per_image: bool = False,
        ignore_index: int | None = None,
        from_logits: bool = True,
    ) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.ignore_index = ignore_index
        self.per_image = per_image
        if not from_logits:
            warnings.warn(
                "LovaszLoss ignores from_logits=False, like SMP 0.6: binary/multilabel modes expect "
                "logits and multiclass mode applies softmax to y_pred.",
                UserWarning,
                stacklevel=2,
            )
        self.from_logits = from_logits

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The Lovász loss (a scalar)."""
        if self.mode == MULTICLASS_MODE:
            labels = class_labels(multiclass_target(y_pred, y_true), y_pred.size(1), self.ignore_index)
            probas = y_pred.softmax(dim=1)
            if self.per_image:
                per_image = [self._softmax(p.unsqueeze(0), t.unsqueeze(0)) for p, t in zip(probas, labels)]
                return torch.stack(per_image).mean()
            return self._softmax(probas, labels)

        if self.mode == BINARY_MODE:
            y_true = binary_target(y_pred, y_true)
        else:
            same_shape(y_pred, y_true, self.mode)
        if self.per_image:
            return torch.stack([self._hinge(p, t) for p, t in zip(y_pred, y_true)]).mean()
        return self._hinge(y_pred, y_true)

    def _hinge(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, labels = logits.reshape(-1), labels.reshape(-1)
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            logits, labels = logits[keep], labels[keep]
        return _hinge_flat(logits, labels)

    def _softmax(self, probas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_classes = probas.size(1)
        probas = torch.movedim(probas, 1, -1).reshape(-1, num_classes)
        labels = labels.reshape(-1)
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            probas, labels = probas[keep], labels[keep]
        return _softmax_flat(probas, labels)
