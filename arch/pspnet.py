"""PSPNet (arXiv:1612.01105): pyramid pooling over the deepest feature.

The deepest feature is average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each projected
by a 1x1 conv, upsampled back and concatenated with the feature. Layout as SMP 0.6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InvalidInputError

from .base import AdaptiveAvgPool2d, Conv2dReLU, SegmentationHead, SegmentationModel, check_common_args, make_classification_head
from .base.modules import NormSpec
from .base.validation import check_channels, check_probability, check_upsampling
from .encoders import get_encoder

PYRAMID_BINS = (1, 2, 3, 6)


class PSPBlock(nn.Module):
    """Pool to ``pool_size`` x ``pool_size`` bins → 1x1 conv-norm-ReLU → bilinear back to the input size."""

    def __init__(self, in_channels: int, out_channels: int, pool_size: int, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__()
        if pool_size == 1:
            # Batch norm over a 1x1 map fails in training with batch 1 (one value per channel).
            use_norm = "identity"
        self.pool_size = pool_size
        # arch.base's pooling: exact in eager, and in export mode it slices with windows
        # derived from the traced size, so the graph is right for every input size
        # (nn.AdaptiveAvgPool2d fails in the legacy ONNX exporter and is baked to the
        # example size by the dynamo exporter).
        self.pool = nn.Sequential(
            AdaptiveAvgPool2d(output_size=(pool_size, pool_size)),
            Conv2dReLU(in_channels, out_channels, kernel_size=1, use_norm=use_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        return F.interpolate(self.pool(x), size=size, mode="bilinear", align_corners=True)


class PSPModule(nn.Module):
    """The pyramid: one :class:`PSPBlock` per bin size, concatenated with the input."""

    def __init__(self, in_channels: int, sizes: Sequence[int] = PYRAMID_BINS, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PSPBlock(in_channels, in_channels // len(sizes), s, use_norm=use_norm) for s in sizes)
        self.out_channels = in_channels + len(sizes) * (in_channels // len(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [block(x) for block in self.blocks]
        pyramid.append(x)
        return torch.cat(pyramid, dim=1)


class PSPDecoder(nn.Module):
    """Pyramid pooling on the deepest feature, then a 1x1 conv to ``out_channels`` and dropout."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        use_norm: NormSpec = "batchnorm",
        out_channels: int = 512,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.psp = PSPModule(encoder_channels[-1], sizes=PYRAMID_BINS, use_norm=use_norm)
        # SMP sizes this conv as 2 * channels, which is the pyramid's width whenever the
        # channels divide by 4 (every known encoder); the exact width also covers the rest.
        self.conv = Conv2dReLU(self.psp.out_channels, out_channels, kernel_size=1, use_norm=use_norm)
        self.dropout = nn.Dropout2d(p=dropout)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.dropout(self.conv(self.psp(features[-1])))


class PSPNet(SegmentationModel):
    """PSPNet with any registered encoder; arguments and defaults as in SMP 0.6.

    The decoder works at the encoder's output stride ``2**encoder_depth`` and the
    head upsamples by ``upsampling``: the defaults (depth 3, 8) give the input size.
    As in SMP, an empty ``aux_params`` dict means no classification head.
    """

    requires_divisible_input_shape = True

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_weights: str | None = "imagenet",
        encoder_depth: int = 3,
        psp_out_channels: int = 512,
        decoder_use_norm: NormSpec = "batchnorm",
        psp_dropout: float = 0.2,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 8,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_use_norm = self._renamed_keyword(kwargs, "psp_use_batchnorm", "decoder_use_norm", decoder_use_norm)
        check_common_args("PSPNet", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        check_channels("psp_out_channels", psp_out_channels)
        check_probability("psp_dropout", psp_dropout)
        check_upsampling(upsampling)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        deepest = self.encoder.out_channels[-1]
        if deepest < len(PYRAMID_BINS):
            raise InvalidInputError(
                f"PSPNet cannot use encoder {encoder_name!r} with encoder_depth={encoder_depth}: its deepest feature has "
                f"{deepest} channels and the pyramid needs at least {len(PYRAMID_BINS)} (one per bin size)."
            )
        self.decoder = PSPDecoder(self.encoder.out_channels, use_norm=decoder_use_norm, out_channels=psp_out_channels, dropout=psp_dropout)
        self.segmentation_head = SegmentationHead(
            psp_out_channels, classes, activation=activation, kernel_size=3, upsampling=upsampling
        )
        self.classification_head = make_classification_head(deepest, aux_params or None)
        self.name = f"psp-{encoder_name}"
        self.initialize()
