"""MA-Net (doi:10.1109/ACCESS.2020.3025372): U-Net with attention blocks.

A position-wise attention block (PAB) on the deepest feature, then multi-scale
fusion attention blocks (MFAB: squeeze-and-excitation on both the upsampled path
and the skip) at every level that has a skip. Layout as SMP 0.6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    AdaptiveAvgPool2d,
    Conv2dReLU,
    SegmentationHead,
    SegmentationModel,
    check_common_args,
    check_decoder_channels,
    make_classification_head,
)
from .base.modules import NormSpec
from .base.validation import check_channels, check_interpolation
from .encoders import get_encoder


def _upsample2x(x: torch.Tensor, mode: str) -> torch.Tensor:
    # Every level halves H and W (the model requires divisible inputs), so 2x the
    # input size is SMP's scale_factor=2 exactly, with integer sizes in the graph.
    return F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2), mode=mode)


class PABBlock(nn.Module):
    """Position attention: every pixel attends to every pixel of the deepest feature."""

    def __init__(self, in_channels: int, pab_channels: int = 64) -> None:
        super().__init__()
        self.pab_channels = pab_channels
        self.in_channels = in_channels
        self.top_conv = nn.Conv2d(in_channels, pab_channels, kernel_size=1)
        self.center_conv = nn.Conv2d(in_channels, pab_channels, kernel_size=1)
        self.bottom_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        # SMP normalises over the whole HW x HW map per sample (dim 1 of the flattened map), not per row.
        self.map_softmax = nn.Softmax(dim=1)
        self.out_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        top = self.top_conv(x).flatten(2)  # B, P, HW
        center = self.center_conv(x).flatten(2).transpose(1, 2)  # B, HW, P
        bottom = self.bottom_conv(x).flatten(2).transpose(1, 2)  # B, HW, C
        attention = torch.matmul(center, top)  # B, HW, HW
        attention = self.map_softmax(attention.flatten(1)).reshape(batch, height * width, height * width)
        mixed = torch.matmul(attention, bottom)  # B, HW, C
        # SMP reinterprets the (HW, C) memory as (C, H, W) without transposing;
        # kept so that SMP checkpoints give the same outputs.
        mixed = mixed.reshape(batch, self.in_channels, height, width)
        return self.out_conv(x + mixed)


def _squeeze_excite(channels: int, reduced: int) -> nn.Sequential:
    return nn.Sequential(
        AdaptiveAvgPool2d(1),
        nn.Conv2d(channels, reduced, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(reduced, channels, 1),
        nn.Sigmoid(),
    )


class MFABBlock(nn.Module):
    """Project the deep path to the skip's width, upsample, gate it by SE of both, fuse."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        interpolation_mode: str = "nearest",
        use_norm: NormSpec = "batchnorm",
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.hl_conv = nn.Sequential(
            Conv2dReLU(in_channels, in_channels, 3, padding=1, use_norm=use_norm),
            Conv2dReLU(in_channels, skip_channels, 1, use_norm=use_norm),
        )
        reduced = max(1, skip_channels // reduction)
        self.SE_ll = _squeeze_excite(skip_channels, reduced)
        self.SE_hl = _squeeze_excite(skip_channels, reduced)
        self.conv1 = Conv2dReLU(skip_channels + skip_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.conv2 = Conv2dReLU(out_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.interpolation_mode = interpolation_mode

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:  # the decoder builds an MFAB block only where its level has a feature
            raise RuntimeError("MFABBlock needs the skip feature of its level.")
        x = _upsample2x(self.hl_conv(x), self.interpolation_mode)
        x = x * (self.SE_hl(x) + self.SE_ll(skip))
        x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DecoderBlock(nn.Module):
    """Plain U-Net block (SMP's name), used where there is no skip (last level, or a 0-channel level)."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        interpolation_mode: str = "nearest",
        use_norm: NormSpec = "batchnorm",
    ) -> None:
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.conv2 = Conv2dReLU(out_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.interpolation_mode = interpolation_mode

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = _upsample2x(x, self.interpolation_mode)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class MAnetDecoder(nn.Module):
    """PAB center, then one MFAB per level with a skip and a plain block elsewhere.

    Levels with 0 channels (no feature at that stride) get a plain block and their
    empty tensor is never touched.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        n_blocks: int = 5,
        reduction: int = 16,
        use_norm: NormSpec = "batchnorm",
        pab_channels: int = 64,
        interpolation_mode: str = "nearest",
    ) -> None:
        super().__init__()
        channels = list(encoder_channels[1:])[::-1]  # deepest first, input level dropped
        head = channels[0]
        in_channels = [head, *decoder_channels[:-1]]
        skip_channels = [*channels[1:], 0]
        self.center = PABBlock(head, pab_channels=pab_channels)
        blocks: list[nn.Module] = []
        for in_ch, skip_ch, out_ch in zip(in_channels, skip_channels, decoder_channels):
            if skip_ch > 0:
                blocks.append(MFABBlock(in_ch, skip_ch, out_ch, interpolation_mode, use_norm, reduction))
            else:
                blocks.append(DecoderBlock(in_ch, skip_ch, out_ch, interpolation_mode, use_norm))
        self.blocks = nn.ModuleList(blocks)
        #: Which blocks fuse a skip (decided here, so forward has no data-dependent branch).
        self.fuses = [skip_ch > 0 for skip_ch in skip_channels]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = list(features[1:])[::-1][1:]
        x = self.center(features[-1])
        for i, block in enumerate(self.blocks):
            skip: torch.Tensor | None = skips[i] if self.fuses[i] else None
            x = block(x, skip)
        return x


class MAnet(SegmentationModel):
    """MA-Net with any registered encoder; arguments and defaults as in SMP 0.6."""

    requires_divisible_input_shape = True

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_use_norm: NormSpec = "batchnorm",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_pab_channels: int = 64,
        decoder_interpolation: str = "nearest",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_use_norm = self._renamed_keyword(kwargs, "decoder_use_batchnorm", "decoder_use_norm", decoder_use_norm)
        check_common_args("MAnet", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        check_decoder_channels("MAnet", decoder_channels, encoder_depth)
        check_interpolation(decoder_interpolation)
        check_channels("decoder_pab_channels", decoder_pab_channels)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        self.decoder = MAnetDecoder(
            self.encoder.out_channels,
            decoder_channels,
            n_blocks=encoder_depth,
            use_norm=decoder_use_norm,
            pab_channels=decoder_pab_channels,
            interpolation_mode=decoder_interpolation,
        )
        self.segmentation_head = SegmentationHead(decoder_channels[-1], classes, activation=activation, kernel_size=3)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"manet-{encoder_name}"
        self.initialize()
