"""Confusion counts (true/false positives/negatives) per image and class: the input of every score."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from segexport.errors import InvalidInputError, unknown

__all__ = ["get_stats"]

MODES = ("binary", "multiclass", "multilabel")


def get_stats(
    output: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    ignore_index: int | None = None,
    threshold: float | Sequence[float] | None = None,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """True positive, false positive, false negative and true negative pixel counts per image and class.

    The argument order is SMP 0.6's, so positional calls carry over unchanged.

    Args:
        output: predictions. 'binary': (N, 1, *S); 'multilabel': (N, C, *S), integer 0/1, or
            float with ``threshold``; 'multiclass': (N, *S) integer class ids (e.g. logits.argmax(1)).
        target: ground truth of ``output``'s shape: 0/1 for binary/multilabel, class ids for
            multiclass. Integer, or float holding whole numbers (converted; SMP 0.6 rejects floats).
        mode: 'binary', 'multilabel' or 'multiclass'.
        ignore_index: multiclass only: target value whose pixels are not counted at all. Must lie
            outside 0..num_classes-1 (e.g. -1 or 255).
        threshold: binary/multilabel: ``output >= threshold`` is positive, and the target is
            binarised the same way (as SMP does). A sequence gives one threshold per class
            (SMP 0.6 fails on it).
        num_classes: multiclass only, required: class ids are 0..num_classes-1.

    Returns:
        tp, fp, fn, tn: int64 tensors of shape (N, C) on the input's device (C = 1 for binary).

    Raises:
        InvalidInputError: bad mode or arguments, mismatched shapes, or (multiclass) class ids
            outside 0..num_classes-1 in a counted pixel, which SMP 0.6 silently folds into tn.
    """
    if mode not in MODES:
        raise unknown("metrics mode", mode, MODES)
    target = _integer_target(target)
    if output.is_floating_point():
        if mode == "multiclass":
            raise InvalidInputError(
                f"multiclass output must hold integer class ids, got {output.dtype}; pass e.g. logits.argmax(dim=1)."
            )
        if threshold is None:
            raise InvalidInputError(
                f"output is {output.dtype}: give a threshold (e.g. threshold=0.5 on probabilities) "
                "or pass integer 0/1 predictions."
            )
    if mode == "multiclass" and threshold is not None:
        raise InvalidInputError("threshold is not supported in multiclass mode; pass class ids (argmax) instead.")
    if output.shape != target.shape:
        raise InvalidInputError(
            f"output {_fmt(output.shape)} and target {_fmt(target.shape)} must have the same shape "
            f"in {mode} mode."
        )
    if mode != "multiclass" and ignore_index is not None:
        raise InvalidInputError(f"ignore_index is only supported in multiclass mode, not {mode!r}.")

    if mode == "multiclass":
        if num_classes is None or int(num_classes) < 1:
            raise InvalidInputError(f"multiclass mode needs num_classes >= 1, got {num_classes!r}.")
        if ignore_index is not None and 0 <= ignore_index <= num_classes - 1:
            raise InvalidInputError(
                f"ignore_index={ignore_index} is a class id (0..{num_classes - 1}); it must lie outside "
                "them, e.g. -1 or 255. If 0 is your ignored label, shift labels and predictions by -1."
            )
        if output.dim() < 1:
            raise InvalidInputError("multiclass output needs a batch dimension: (N, *spatial).")
        return _multiclass_stats(output, target, int(num_classes), ignore_index)

    if output.dim() < 2:
        raise InvalidInputError(f"{mode} output must be (N, C, *spatial), got {_fmt(output.shape)}.")
    if threshold is not None:
        cut = _thresholds(threshold, output)
        output = (output >= cut).long()
        target = (target >= cut).long()
    return _multilabel_stats(output, target)


def _fmt(shape: torch.Size) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _integer_target(target: torch.Tensor) -> torch.Tensor:
    """Float targets holding whole numbers (a mask loaded as float) become int64; others are refused."""
    if not target.is_floating_point():
        return target
    fractional = target != torch.floor(target)
    if bool(fractional.any()):
        bad = target[fractional].flatten()[0].item()
        raise InvalidInputError(
            f"target must hold integer labels, found {bad} in a {target.dtype} tensor; pass e.g. mask.round().long()."
        )
    return target.long()


def _thresholds(threshold: float | Sequence[float], output: torch.Tensor) -> float | torch.Tensor:
    """A scalar threshold, or one per class shaped (1, C, 1, ...) to broadcast over (N, C, *S)."""
    if isinstance(threshold, (int, float)):
        return float(threshold)
    values = torch.as_tensor(threshold, dtype=torch.float64 if output.dtype == torch.float64 else torch.float32)
    if values.dim() == 0:
        return float(values)
    if values.numel() != output.size(1):
        raise InvalidInputError(
            f"threshold has {values.numel()} values but output has {output.size(1)} classes; "
            "give one threshold, or one per class."
        )
    return values.to(output.device).reshape(1, -1, *([1] * (output.dim() - 2)))


@torch.no_grad()
def _multiclass_stats(
    output: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts by one bincount over (image, class) pairs instead of SMP's per-image histc loop."""
    batch = output.size(0)
    output = output.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    counted = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    for name, values in (("target", target), ("output", output)):
        bad = counted & ((values < 0) | (values >= num_classes))
        if bool(bad.any()):
            allowed = f"0..{num_classes - 1}"
            if ignore_index is not None:
                allowed += f" (or ignore_index={ignore_index} in target)"
            raise InvalidInputError(
                f"{name} holds the class id {values[bad][0].item()}, outside the {num_classes} classes; "
                f"allowed: {allowed}."
            )
    # Index (image, class) pairs as image * C + class so that one bincount counts every image.
    offsets = torch.arange(batch, device=output.device).unsqueeze(1) * num_classes
    size = batch * num_classes

    def count(index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.bincount((index + offsets)[mask], minlength=size).reshape(batch, num_classes)

    tp = count(target, counted & (output == target))
    fp = count(output, counted) - tp
    fn = count(target, counted) - tp
    tn = counted.sum(1, keepdim=True) - tp - fp - fn
    return tp, fp, fn, tn


@torch.no_grad()
def _multilabel_stats(
    output: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts of 0/1 predictions against 0/1 targets, channel by channel."""
    batch, channels = target.shape[:2]
    pixels = math.prod(target.shape[2:])
    output = output.reshape(batch, channels, -1).long()
    target = target.reshape(batch, channels, -1).long()
    tp = (output * target).sum(2)
    fp = output.sum(2) - tp
    fn = target.sum(2) - tp
    tn = pixels - (tp + fp + fn)
    return tp, fp, fn, tn
