"""Checks and reshapes of (y_pred, y_true) shared by the losses.

SMP checks little (an ``assert`` on the batch size) and lets mismatched tensors fail deep inside,
or worse, silently broadcast. Every loss here validates its inputs up front and raises
:class:`~segexport.errors.InvalidInputError` naming both shapes and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segexport.errors import InvalidInputError, unknown

from .constants import MODES


def check_mode(mode: str) -> str:
    """The mode itself, or an error listing the three allowed modes."""
    if mode not in MODES:
        raise unknown("loss mode", mode, MODES)
    return mode


def check_reduction(reduction: str | None, allowed: Sequence[str | None]) -> None:
    """Reductions are checked at construction: a typo would otherwise silently mean 'none'."""
    if reduction not in allowed:
        raise unknown("reduction", reduction, [str(a) for a in allowed])


def fmt(shape: torch.Size | Sequence[int]) -> str:
    """A shape as users write it: (2, 1, 64, 64)."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def binary_target(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """y_true reshaped to y_pred's shape, where the two hold one value per pixel and image.

    Allowed: equal shapes, or shapes that differ only by a singleton channel dimension on either side
    ((N, 1, H, W) against (N, H, W)), the pairs SMP documents for binary targets.
    """
    pred, true = tuple(y_pred.shape), tuple(y_true.shape)
    if pred == true:
        return y_true
    squeezed_pred = pred[:1] + pred[2:] if len(pred) >= 2 and pred[1] == 1 else None
    squeezed_true = true[:1] + true[2:] if len(true) >= 2 and true[1] == 1 else None
    if true == squeezed_pred or pred == squeezed_true:
        return y_true.reshape(pred)
    raise InvalidInputError(
        f"y_pred {fmt(pred)} and y_true {fmt(true)} do not match: binary targets must have the "
        "prediction's shape, or that shape without its singleton channel dimension, e.g. "
        "y_pred (N, 1, H, W) with y_true (N, H, W) or (N, 1, H, W)."
    )


def same_shape(y_pred: torch.Tensor, y_true: torch.Tensor, mode: str) -> None:
    """Multilabel targets carry one channel per class, exactly like the prediction."""
    if y_pred.shape != y_true.shape:
        raise InvalidInputError(
            f"y_pred {fmt(y_pred.shape)} and y_true {fmt(y_true.shape)} do not match: {mode} mode "
            "needs both of shape (N, C, *spatial)."
        )


def multiclass_target(y_pred: torch.Tensor, y_true: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """y_true as (N, *S) for y_pred (N, C, *S); a (N, 1, *S) target is accepted and squeezed.

    ``dim`` is the class dimension of y_pred (only SoftCrossEntropyLoss lets it move).
    """
    if y_pred.dim() < 2:
        raise InvalidInputError(
            f"y_pred {fmt(y_pred.shape)} has no class dimension: multiclass mode needs (N, C, *spatial)."
        )
    dim = dim % y_pred.dim()
    pred = tuple(y_pred.shape)
    expected = pred[:dim] + pred[dim + 1 :]
    true = tuple(y_true.shape)
    if true == expected:
        return y_true
    if true == pred[:dim] + (1,) + pred[dim + 1 :]:
        return y_true.reshape(expected)
    raise InvalidInputError(
        f"y_pred {fmt(pred)} and y_true {fmt(true)} do not match: multiclass targets hold one class id "
        f"per pixel, shape {fmt(expected)} (or with a singleton class dimension)."
    )


def class_labels(y_true: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """Class ids as int64, checked to lie in [0, num_classes) unless equal to ignore_index.

    Float targets are accepted when they hold whole numbers (a mask read as float is common);
    fractional values are an error rather than silently truncated. Out-of-range ids would make
    ``one_hot``/``gather`` fail with an opaque message (or a device-side assert on CUDA).
    """
    if y_true.is_floating_point():
        if bool((y_true != torch.floor(y_true)).any()):
            bad = y_true[y_true != torch.floor(y_true)].flatten()[0].item()
            raise InvalidInputError(
                f"multiclass y_true must hold class ids, found the non-integer value {bad}; "
                "pass integer labels (e.g. mask.long())."
            )
    labels = y_true.long()
    out_of_range = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        out_of_range &= labels != ignore_index
    if bool(out_of_range.any()):
        bad = labels[out_of_range].flatten()[0].item()
        allowed = f"0..{num_classes - 1}" + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
        raise InvalidInputError(
            f"y_true holds the class id {bad}, outside the {num_classes} classes; allowed: {allowed}."
        )
    return labels


def as_index_tensor(values: object, name: str) -> torch.Tensor:
    """A list/tuple/array/tensor of class ids as a 1-D int64 tensor (SMP's ``classes`` argument)."""
    try:
        tensor = torch.as_tensor(values).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidInputError(f"{name} must be a sequence of class ids, got {values!r}.") from error
    if tensor.is_floating_point() and bool((tensor != torch.floor(tensor)).any()):
        raise InvalidInputError(f"{name} must be a sequence of class ids, got {values!r}.")
    return tensor.long()


def as_weight_tensor(values: object, name: str) -> torch.Tensor:
    """Per-class weights as a float tensor; negative weights are refused (they invert the loss)."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidInputError(f"{name} must be a sequence of numbers, got {values!r}.") from error
    if bool((tensor < 0).any()) or not bool(torch.isfinite(tensor).all()):
        raise InvalidInputError(f"{name} must be finite and non-negative, got {tensor.tolist()}.")
    return tensor


def check_class_selection(
    classes: torch.Tensor | None, class_weights: torch.Tensor | None, num_classes: int
) -> None:
    """``classes`` must index the C channels and ``class_weights`` give one weight per channel.

    Called in forward because C is only known from y_pred. SMP indexes both with the class ids,
    so the weights are always one per channel, even when ``classes`` picks a subset.
    """
    if classes is not None and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise InvalidInputError(
            f"classes {classes.tolist()} do not fit the {num_classes} channels of y_pred; "
            f"allowed: 0..{num_classes - 1}."
        )
    if class_weights is not None:
        if class_weights.numel() != num_classes:
            raise InvalidInputError(
                f"class_weights has {class_weights.numel()} values but y_pred has {num_classes} classes; "
                "give one weight per class (also when `classes` selects a subset)."
            )
        selected = class_weights if classes is None else class_weights[classes]
        if float(selected.sum()) <= 0:
            raise InvalidInputError(f"class_weights of the selected classes sum to 0: {selected.tolist()}.")
