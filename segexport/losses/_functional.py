"""Functional building blocks of the losses (the names of SMP 0.6's ``losses._functional``).

Each function computes exactly what SMP computes, so that values and gradients agree to float
rounding; the few places where SMP returns NaN or crashes are called out in the docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from segexport.errors import InvalidInputError

from ._inputs import fmt

__all__ = [
    "focal_loss_with_logits",
    "label_smoothed_nll_loss",
    "soft_dice_score",
    "soft_jaccard_score",
    "soft_tversky_score",
    "softmax_focal_loss_with_logits",
    "to_tensor",
    "wing_loss",
]


def to_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor from a tensor, NumPy array, list or tuple, cast to ``dtype`` when given (SMP's helper).

    Other types raise :class:`InvalidInputError` (SMP returns None for them).
    """
    if isinstance(x, torch.Tensor):
        tensor = x
    elif isinstance(x, (list, tuple)) or type(x).__module__ == "numpy":
        import numpy as np

        tensor = torch.from_numpy(np.asarray(x))
    else:
        raise InvalidInputError(f"to_tensor takes a tensor, NumPy array, list or tuple; got a {type(x).__name__}.")
    return tensor.type(dtype) if dtype is not None else tensor


def soft_tversky_score(
    output: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    smooth: float = 0.0,
    eps: float = 1e-7,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Tversky index (TP + smooth) / (TP + alpha FP + beta FN + smooth), denominator >= eps.

    TP is computed as (sum(output) + sum(target) - |output - target|_1) / 2, which equals
    sum(min(output, target)) and stays correct for soft targets (arXiv:2302.05666); SMP uses the
    same form, so the gradients agree too.
    """
    if output.shape != target.shape:
        raise InvalidInputError(f"output {fmt(output.shape)} and target {fmt(target.shape)} must have the same shape.")
    if dims is not None:
        output_sum = output.sum(dim=dims)
        target_sum = target.sum(dim=dims)
        difference = torch.linalg.vector_norm(output - target, ord=1, dim=dims)
    else:
        output_sum = output.sum()
        target_sum = target.sum()
        difference = torch.linalg.vector_norm(output - target, ord=1)
    tp = (output_sum + target_sum - difference) / 2
    fp = output_sum - tp
    fn = target_sum - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(eps)


def soft_dice_score(
    output: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 0.0,
    eps: float = 1e-7,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Soft Dice coefficient: the Tversky index with alpha = beta = 0.5."""
    return soft_tversky_score(output, target, 0.5, 0.5, smooth, eps, dims)


def soft_jaccard_score(
    output: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 0.0,
    eps: float = 1e-7,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Soft Jaccard index (IoU): the Tversky index with alpha = beta = 1."""
    return soft_tversky_score(output, target, 1.0, 1.0, smooth, eps, dims)


def focal_loss_with_logits(
    output: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    reduction: str | None = "mean",
    normalized: bool = False,
    reduced_threshold: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Binary focal loss (arXiv:1708.02002) on logits, element-wise then reduced.

    Args:
        output: logits of any shape.
        target: same shape, 0/1 (or soft) targets.
        gamma: focusing power; 0 gives (alpha-weighted) binary cross-entropy.
        alpha: weight of positives (1 - alpha for negatives); None for no weighting.
        reduction: 'mean', 'sum', 'batchwise_mean' (sum over dim 0), or 'none'/None.
        normalized: divide by the sum of focal terms (arXiv:1909.07829).
        reduced_threshold: reduced focal loss (arXiv:1903.01347): pixels with pt below it weigh 1.
        eps: floor of the normalisation factor.

    With ``reduction='mean'`` and no element at all (every pixel ignored) the result is 0 with a
    zero gradient, where SMP 0.6 returns NaN (the mean of nothing).
    """
    target = target.to(dtype=output.dtype, device=output.device)
    logpt = F.binary_cross_entropy_with_logits(output, target, reduction="none")
    pt = torch.exp(-logpt)
    if reduced_threshold is None:
        focal_term = (1.0 - pt).pow(gamma)
    else:
        focal_term = ((1.0 - pt) / reduced_threshold).pow(gamma)
        # Well-classified pixels keep the focal decay, the hard ones (pt < threshold) weigh 1.
        focal_term = torch.where(pt < reduced_threshold, torch.ones_like(focal_term), focal_term)
    loss = focal_term * logpt
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    if normalized:
        loss = loss / focal_term.sum().clamp_min(eps)
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchwise_mean":
        return loss.sum(0)
    return loss


def softmax_focal_loss_with_logits(
    output: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    reduction: str | None = "mean",
    normalized: bool = False,
    reduced_threshold: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Multi-class focal loss on logits: softmax cross-entropy scaled by ``(1 - pt) ** gamma`` per pixel.

    Args:
        output: logits ``(B, C, *)``, as for ``nn.CrossEntropyLoss``.
        target: int64 class ids ``(B, *)``.
        gamma, reduction, normalized, reduced_threshold, eps: as :func:`focal_loss_with_logits`
            (``reduction='none'`` returns the per-pixel loss, ``target``'s shape).
    """
    if output.dim() != target.dim() + 1 or output.shape[:1] + output.shape[2:] != target.shape:
        raise InvalidInputError(
            f"output {fmt(output.shape)} must be (B, C, *) logits and target {fmt(target.shape)} (B, *) class ids."
        )
    logpt = F.nll_loss(F.log_softmax(output, dim=1), target, reduction="none")
    pt = torch.exp(-logpt)
    if reduced_threshold is None:
        focal_term = (1.0 - pt).pow(gamma)
    else:
        focal_term = ((1.0 - pt) / reduced_threshold).pow(gamma)
        focal_term = torch.where(pt < reduced_threshold, torch.ones_like(focal_term), focal_term)
    loss = focal_term * logpt
    if normalized:
        loss = loss / focal_term.sum().clamp_min(eps)
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchwise_mean":
        return loss.sum(0)
    return loss


def wing_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    width: float = 5,
    curvature: float = 0.5,
    reduction: str | None = "mean",
) -> torch.Tensor:
    """Wing loss (arXiv:1711.06753): logarithmic for errors below ``width``, L1 shifted to stay continuous above.

    ``reduction``: 'mean', 'sum', or 'none'/None (element-wise, ``output``'s shape).
    """
    if output.shape != target.shape:
        raise InvalidInputError(f"output {fmt(output.shape)} and target {fmt(target.shape)} must have the same shape.")
    error = (target - output).abs()
    offset = width - width * math.log(1 + width / curvature)
    loss = torch.where(error < width, width * torch.log1p(error / curvature), error - offset)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def label_smoothed_nll_loss(
    lprobs: torch.Tensor,
    target: torch.Tensor,
    epsilon: float | None,
    ignore_index: int | None = None,
    reduction: str | None = "mean",
    dim: int = -1,
) -> torch.Tensor:
    """Negative log-likelihood with label smoothing (fairseq's formulation, as in SMP).

    loss = (1 - epsilon) * nll + epsilon / C * sum_c(-log p_c). Ignored pixels contribute 0 and,
    as in SMP, still count in the 'mean' denominator.

    Args:
        lprobs: log-probabilities, class dimension ``dim``.
        target: int64 class ids, ``lprobs``' shape without ``dim`` (or with it of size 1).
        epsilon: smoothing factor; None or 0 is plain NLL (SMP 0.6 raises TypeError on None).
        ignore_index: class id whose pixels do not contribute.
        reduction: 'mean', 'sum', or 'none'/None (per pixel, ``target``'s shape without ``dim``).
        dim: class dimension.
    """
    if target.dim() == lprobs.dim() - 1:
        target = target.unsqueeze(dim)
    if ignore_index is not None:
        pad_mask = target.eq(ignore_index)
        target = target.masked_fill(pad_mask, 0)
    nll_loss = -lprobs.gather(dim=dim, index=target)
    smooth_loss = -lprobs.sum(dim=dim, keepdim=True) if epsilon else None
    if ignore_index is not None:
        nll_loss = nll_loss.masked_fill(pad_mask, 0.0)
        if smooth_loss is not None:
            smooth_loss = smooth_loss.masked_fill(pad_mask, 0.0)
    # SMP keeps the singleton class dimension when ignore_index is set; dropping it always gives
    # 'none' one shape.
    nll_loss = nll_loss.squeeze(dim)
    if smooth_loss is not None:
        smooth_loss = smooth_loss.squeeze(dim)
    if reduction == "sum":
        nll_loss = nll_loss.sum()
        smooth_loss = smooth_loss.sum() if smooth_loss is not None else None
    elif reduction == "mean":
        nll_loss = nll_loss.mean()
        smooth_loss = smooth_loss.mean() if smooth_loss is not None else None
    if smooth_loss is None:
        # epsilon 0: skipping the smoothing term avoids 0 * inf = NaN for -inf log-probabilities.
        return nll_loss
    eps_i = epsilon / lprobs.size(dim)
    return (1.0 - epsilon) * nll_loss + eps_i * smooth_loss
