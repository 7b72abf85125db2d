"""UPerNet (arXiv:1807.10221): a PSP module on the deepest feature feeding an FPN, all fused at stride 4."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.checks import check_int

from .base import (
    AdaptiveAvgPool2d,
    Conv2dReLU,
    SegmentationHead,
    SegmentationModel,
    check_common_args,
    make_classification_head,
)
from .base.modules import NormSpec
from .encoders import get_encoder

#: Output grid sizes of the pyramid pooling branches (PSPNet's choice, as SMP).
PSP_SIZES = (1, 2, 3, 6)


def _resize(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    return F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=False)


class PSPModule(nn.Module):
    """Pool to 1x1, 2x2, 3x3 and 6x6 grids, project, resize back and fuse with the input.

    The pooling is arch.base's AdaptiveAvgPool2d: identical to nn.AdaptiveAvgPool2d
    in eager mode, and exported as size-derived slices so the graph is right for
    every input size (nn.AdaptiveAvgPool2d bakes the example's windows).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        sizes: Sequence[int] = PSP_SIZES,
        use_norm: NormSpec = "batchnorm",
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool2d(size), Conv2dReLU(in_channels, out_channels, 1, use_norm=use_norm))
            for size in sizes
        )
        # SMP uses batchnorm here whatever decoder_use_norm says; so do we (the state_dict depends on it).
        self.out_conv = Conv2dReLU(in_channels + len(sizes) * out_channels, out_channels, 3, padding=1, use_norm="batchnorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [x.shape[2], x.shape[3]]
        pyramid = [x]
        for block in self.blocks:
            pyramid.append(_resize(block(x), size))
        return self.out_conv(torch.cat(pyramid, dim=1))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class FPNLateralBlock(nn.Module):
    """1x1 conv-norm-ReLU on the encoder feature, plus the decoder state resized to it."""

    def __init__(self, lateral_channels: int, out_channels: int, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__()
        self.conv_norm_relu = Conv2dReLU(lateral_channels, out_channels, 1, use_norm=use_norm)

    def forward(self, state: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        lateral = self.conv_norm_relu(lateral)
        return _resize(state, [lateral.shape[2], lateral.shape[3]]) + lateral


class UPerNetDecoder(nn.Module):
    """Normalise the stride 4..32 features, PSP on the deepest, top-down FPN, fuse everything at stride 4."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: int = 256,
        use_norm: NormSpec = "batchnorm",
    ) -> None:
        super().__init__()
        channels = list(encoder_channels[2:])  # strides 4, 8, ...: the input and stride-2 levels are unused
        self.feature_norms = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in channels)
        self.psp = PSPModule(channels[-1], decoder_channels, PSP_SIZES, use_norm)
        lateral_channels = channels[:-1][::-1]  # deepest first, the PSP level excluded
        self.fpn_lateral_blocks = nn.ModuleList(FPNLateralBlock(c, decoder_channels, use_norm) for c in lateral_channels)
        self.fpn_conv_blocks = nn.ModuleList(
            Conv2dReLU(decoder_channels, decoder_channels, 3, padding=1, use_norm=use_norm) for _ in lateral_channels
        )
        self.fusion_block = Conv2dReLU(
            (len(lateral_channels) + 1) * decoder_channels, decoder_channels, 3, padding=1, use_norm=use_norm
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # Module lists are iterated with enumerate/zip among themselves only, which TorchScript can unroll.
        normed = [norm(features[i + 2]) for i, norm in enumerate(self.feature_norms)]
        state = self.psp(normed[-1])
        pyramid = [state]
        laterals = normed[:-1][::-1]
        for i, (block, conv) in enumerate(zip(self.fpn_lateral_blocks, self.fpn_conv_blocks)):
            state = block(state, laterals[i])
            pyramid.append(conv(state))
        # The FPN convs refine each level's output; the next level is built from the unrefined sum (as SMP).
        target = [pyramid[-1].shape[2], pyramid[-1].shape[3]]
        resized = [_resize(f, target) for f in pyramid]
        return self.fusion_block(torch.cat(resized[::-1], dim=1))


class UPerNet(SegmentationModel):
    """UPerNet with any registered encoder; arguments and defaults as in SMP 0.6."""

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_channels: int = 256,
        decoder_use_norm: NormSpec = "batchnorm",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 4,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_common_args("UPerNet", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        check_int("UPerNet's decoder_channels", decoder_channels)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        self.decoder = UPerNetDecoder(self.encoder.out_channels, decoder_channels, decoder_use_norm)
        self.segmentation_head = SegmentationHead(
            decoder_channels, classes, activation=activation, kernel_size=1, upsampling=upsampling
        )
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"upernet-{encoder_name}"
        self.initialize()
