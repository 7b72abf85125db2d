"""LinkNet (arXiv:1707.03718): light decoder whose blocks add the encoder skip instead of concatenating.

Each block is 1x1 conv (C → C/4), 2x transposed conv, 1x1 conv to the next width.
Layout as SMP 0.6; the last block outputs 32 channels for a 1x1 head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .base import Conv2dReLU, SegmentationHead, SegmentationModel, check_common_args, get_norm_layer, make_classification_head
from .base.modules import NormSpec
from .encoders import get_encoder

#: Width of the last decoder block, the segmentation head's input (SMP's ``prefinal_channels``).
PREFINAL_CHANNELS = 32


class TransposeX2(nn.Sequential):
    """4x4 stride-2 transposed conv (exactly doubles H and W) → norm → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            get_norm_layer(use_norm, out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Bottleneck-upsample-expand; the skip is added by the decoder when there is one."""

    def __init__(self, in_channels: int, out_channels: int, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__()
        self.block = nn.Sequential(
            Conv2dReLU(in_channels, in_channels // 4, 1, use_norm=use_norm),
            TransposeX2(in_channels // 4, in_channels // 4, use_norm=use_norm),
            Conv2dReLU(in_channels // 4, out_channels, 1, use_norm=use_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class LinknetDecoder(nn.Module):
    """One block per encoder level, deepest first, each adding the skip of its output level.

    A 0-channel level (no feature at that stride) keeps the previous width and adds
    nothing; the choice is made here, from ``encoder_channels``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        prefinal_channels: int = PREFINAL_CHANNELS,
        n_blocks: int = 5,
        use_norm: NormSpec = "batchnorm",
    ) -> None:
        super().__init__()
        channels = [*list(encoder_channels[1:])[::-1], prefinal_channels]  # deepest first, input level dropped
        #: Which blocks add a skip (the last block never has one).
        self.fuses = [c > 0 for c in channels[1:-1]] + [False]
        for i in range(1, len(channels) - 1):
            if channels[i] == 0:
                channels[i] = channels[i - 1]
        self.blocks = nn.ModuleList(
            DecoderBlock(channels[i], channels[i + 1], use_norm=use_norm) for i in range(n_blocks)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(features[1:])[::-1][1:]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.fuses[i]:
                x = x + skips[i]
        return x


class Linknet(SegmentationModel):
    """LinkNet with any registered encoder; arguments and defaults as in SMP 0.6.

    Encoders without a stride-2 feature (transformers) work: that level adds no
    skip. SMP refuses ``mit_b*`` by name although its decoder handles them so.
    """

    requires_divisible_input_shape = True

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_use_norm: NormSpec = "batchnorm",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_use_norm = self._renamed_keyword(kwargs, "decoder_use_batchnorm", "decoder_use_norm", decoder_use_norm)
        check_common_args("Linknet", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        self.decoder = LinknetDecoder(
            self.encoder.out_channels, prefinal_channels=PREFINAL_CHANNELS, n_blocks=encoder_depth, use_norm=decoder_use_norm
        )
        self.segmentation_head = SegmentationHead(PREFINAL_CHANNELS, classes, activation=activation, kernel_size=1)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"link-{encoder_name}"
        self.initialize()
