"""Segmentation head and the optional classification ("aux") head, laid out as in SMP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from segexport.errors import InvalidInputError, closest

from .modules import Activation, AdaptiveAvgPool2d, AdaptiveMaxPool2d


class SegmentationHead(nn.Sequential):
    """Conv to ``classes`` channels → bilinear upsampling by ``upsampling`` → activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: float = 1,
    ) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        up: nn.Module = (
            nn.Upsample(mode="bilinear", scale_factor=upsampling, align_corners=True) if upsampling > 1 else nn.Identity()
        )
        super().__init__(conv, up, Activation(activation))


AUX_KEYS = ("classes", "pooling", "dropout", "activation")


class ClassificationHead(nn.Sequential):
    """Global pooling ('avg' | 'max') → flatten → dropout → linear → activation.

    The pooling layers are (subclasses of) ``nn.AdaptiveAvgPool2d(1)`` / ``nn.AdaptiveMaxPool2d(1)``,
    as in SMP, so code that inspects or replaces ``head[0]`` works unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        pooling: str = "avg",
        dropout: float | None = 0.2,
        activation: str | Callable[..., nn.Module] | None = None,
    ) -> None:
        if pooling not in ("avg", "max"):
            raise InvalidInputError(
                f"Unknown aux_params pooling {pooling!r}; allowed: 'avg', 'max'.{closest(str(pooling), ['avg', 'max'])}"
            )
        pool: nn.Module = AdaptiveAvgPool2d(1) if pooling == "avg" else AdaptiveMaxPool2d(1)
        drop: nn.Module = nn.Dropout(p=dropout, inplace=True) if dropout else nn.Identity()
        super().__init__(pool, nn.Flatten(), drop, nn.Linear(in_channels, classes, bias=True), Activation(activation))


def make_classification_head(in_channels: int, aux_params: Mapping[str, Any] | None) -> ClassificationHead | None:
    """The aux head described by SMP-style ``aux_params``, or None when it is None."""
    if aux_params is None:
        return None
    unknown_keys = sorted(set(aux_params) - set(AUX_KEYS))
    if unknown_keys:
        raise InvalidInputError(
            f"Unknown aux_params key {unknown_keys[0]!r}; allowed: {', '.join(AUX_KEYS)}.{closest(unknown_keys[0], AUX_KEYS)}"
        )
    classes = aux_params.get("classes", 1)
    if not isinstance(classes, int) or classes < 1:
        raise InvalidInputError(f"aux_params classes must be an integer >= 1; got {classes!r}.")
    return ClassificationHead(in_channels=in_channels, **aux_params)
