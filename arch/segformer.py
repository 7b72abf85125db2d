"""SegFormer's all-MLP decoder (arXiv:2105.15203): project every level, resize to stride 4, fuse."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.checks import check_int

from .base import Conv2dReLU, SegmentationHead, SegmentationModel, check_common_args, make_classification_head
from .encoders import get_encoder


class MLP(nn.Module):
    """A per-pixel linear projection of an NCHW feature (``linear``, as SMP)."""

    def __init__(self, skip_channels: int, segmentation_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(skip_channels, segmentation_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        x = self.linear(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(batch, -1, height, width)


class SegformerDecoder(nn.Module):
    """One MLP per encoder level (deepest first), each resized to a quarter of the input, then a 1x1 fuse.

    Levels the encoder does not produce (0 channels, the stride-2 level of
    transformer encoders) are left out when the decoder is built, so no empty
    tensor is ever consumed.
    """

    def __init__(self, encoder_channels: Sequence[int], segmentation_channels: int = 256) -> None:
        super().__init__()
        # Indices into the encoder's features, deepest first; the input (index 0) is never used.
        self.levels = [i for i in range(len(encoder_channels) - 1, 0, -1) if encoder_channels[i] > 0]
        self.mlp_stage = nn.ModuleList(MLP(encoder_channels[i], segmentation_channels) for i in self.levels)
        self.fuse_stage = Conv2dReLU(
            len(self.levels) * segmentation_channels, segmentation_channels, 1, use_norm="batchnorm"
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        target = (size[0] // 4, size[1] // 4)
        resized = [
            F.interpolate(mlp(features[self.levels[j]]), size=target, mode="bilinear", align_corners=False)
            for j, mlp in enumerate(self.mlp_stage)
        ]
        return self.fuse_stage(torch.cat(resized, dim=1))


class Segformer(SegmentationModel):
    """SegFormer's decoder with any registered encoder (mit_b* as in the paper); arguments as in SMP 0.6."""

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_segmentation_channels: int = 256,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 4,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_common_args("Segformer", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        channels = decoder_segmentation_channels
        check_int("Segformer's decoder_segmentation_channels", channels)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        self.decoder = SegformerDecoder(self.encoder.out_channels, channels)
        self.segmentation_head = SegmentationHead(channels, classes, activation=activation, kernel_size=1, upsampling=upsampling)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"segformer-{encoder_name}"
        self.initialize()
