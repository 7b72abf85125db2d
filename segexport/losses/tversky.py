"""Tversky loss: Dice with separate weights for false positives and false negatives."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._functional import soft_tversky_score
from .dice import DiceLoss

__all__ = ["TverskyLoss"]


class TverskyLoss(DiceLoss):
    """Tversky loss (arXiv:1706.05721), raised to ``gamma`` (focal Tversky, arXiv:1810.07842).

    Score per class: TP / (TP + alpha FP + beta FN); alpha = beta = 0.5 is the Dice loss.
    A subclass of DiceLoss, as in SMP 0.6.

    Args:
        mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights: as DiceLoss.
        alpha: weight of false positives.
        beta: weight of false negatives.
        gamma: the class-averaged loss is raised to this power.

    With gamma < 1 the power has an infinite slope at 0, so SMP 0.6 gives NaN gradients whenever
    the averaged loss is exactly 0 (e.g. a batch whose masks are all empty). Here the loss is then
    0 with a zero gradient; elsewhere values and gradients are SMP's.
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
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__(mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma

    def compute_score(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        smooth: float = 0.0,
        eps: float = 1e-7,
        dims: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Tversky index per class."""
        return soft_tversky_score(output, target, self.alpha, self.beta, smooth, eps, dims)

    def aggregate_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The (weighted) class mean, raised to gamma."""
        base = super().aggregate_loss(loss)
        if self.gamma >= 1:
            return base**self.gamma
        # Route the zero case around pow so its backward never evaluates 0 ** (gamma - 1) = inf.
        is_zero = base == 0
        safe = torch.where(is_zero, torch.ones_like(base), base)
        return torch.where(is_zero, torch.zeros_like(base) ** self.gamma, safe**self.gamma)
