"""PAN, Pyramid Attention Network (arXiv:1805.10180).

A feature pyramid attention (FPA) block on the deepest feature, then global
attention upsampling (GAU) blocks that bring in the stride 16, 8 and 4 features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.checks import check_int
from segexport.errors import InputShapeError, InvalidInputError

from .base import AdaptiveAvgPool2d, SegmentationHead, SegmentationModel, check_common_args, make_classification_head
from .base.validation import check_interpolation
from .encoders import get_encoder

OUTPUT_STRIDES = (16, 32)
#: The FPA block halves its input three times, so the deepest feature needs at least 8x8.
MIN_DEEPEST_SIZE = 8


class ConvBnRelu(nn.Module):
    """Conv → BatchNorm → optional ReLU → optional 2x upsampling; SMP's PAN layout and arguments (``conv``, ``bn``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        add_relu: bool = True,
        interpolate: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias
        )
        self.activation = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.add_relu = add_relu
        self.interpolate = interpolate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.add_relu:
            x = self.activation(x)
        if self.interpolate:
            x = F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2), mode="bilinear", align_corners=True)
        return x


def _align_corners(mode: str) -> bool | None:
    # align_corners is only meaningful for the linear modes; SMP sets it for "bilinear" only.
    return True if mode == "bilinear" else None


class FPABlock(nn.Module):
    """Feature pyramid attention: a 7-5-3 pyramid gates a 1x1 projection, plus a global branch.

    PANDecoder builds it with SMP's default ``upscale_mode="bilinear"`` whatever
    ``decoder_interpolation`` says, as SMP does.
    """

    def __init__(self, in_channels: int, out_channels: int, upscale_mode: str = "bilinear") -> None:
        super().__init__()
        self.upscale_mode = upscale_mode
        self.align_corners = _align_corners(upscale_mode)
        # Global branch: the pooled vector is broadcast back over H, W.
        self.branch1 = nn.Sequential(AdaptiveAvgPool2d(1), ConvBnRelu(in_channels, out_channels, 1))
        self.mid = nn.Sequential(ConvBnRelu(in_channels, out_channels, 1))
        self.down1 = nn.Sequential(nn.MaxPool2d(2, 2), ConvBnRelu(in_channels, 1, 7, padding=3))
        self.down2 = nn.Sequential(nn.MaxPool2d(2, 2), ConvBnRelu(1, 1, 5, padding=2))
        self.down3 = nn.Sequential(nn.MaxPool2d(2, 2), ConvBnRelu(1, 1, 3, padding=1), ConvBnRelu(1, 1, 3, padding=1))
        self.conv2 = ConvBnRelu(1, 1, 5, padding=2)
        self.conv1 = ConvBnRelu(1, 1, 7, padding=3)

    def _resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return F.interpolate(x, size=(height, width), mode=self.upscale_mode, align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        global_out = self._resize(self.branch1(x), height, width)
        middle = self.mid(x)
        x1 = self.down1(x)
        x2 = self.down2(x1)
        x3 = self._resize(self.down3(x2), height // 4, width // 4)
        x = self._resize(self.conv2(x2) + x3, height // 2, width // 2)
        x = self._resize(x + self.conv1(x1), height, width)
        return x * middle + global_out


class GAUBlock(nn.Module):
    """Global attention upsampling: the high-level feature's channel attention gates the low-level one."""

    def __init__(self, in_channels: int, out_channels: int, interpolation_mode: str = "bilinear") -> None:
        super().__init__()
        self.interpolation_mode = interpolation_mode
        self.align_corners = _align_corners(interpolation_mode)
        self.conv1 = nn.Sequential(
            AdaptiveAvgPool2d(1),
            ConvBnRelu(out_channels, out_channels, 1, add_relu=False),
            nn.Sigmoid(),
        )
        self.conv2 = ConvBnRelu(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``: the low-level (higher resolution) feature, ``y``: the decoder state."""
        y_up = F.interpolate(
            y, size=(x.shape[2], x.shape[3]), mode=self.interpolation_mode, align_corners=self.align_corners
        )
        return y_up + self.conv2(x) * self.conv1(y)


class PANDecoder(nn.Module):
    """FPA on the deepest feature, then one GAU per feature from stride 16 (depth 5) down to 4."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_depth: int,
        decoder_channels: int,
        interpolation_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        channels = list(encoder_channels[2:])  # strides 4, 8, 16, 32: the input and stride-2 levels are unused
        self.fpa = FPABlock(channels[-1], decoder_channels)
        # Attribute names follow SMP (gau3 for stride 16 ... gau1 for stride 4); only the ones the depth needs exist.
        if encoder_depth == 5:
            self.gau3 = GAUBlock(channels[2], decoder_channels, interpolation_mode)
        if encoder_depth >= 4:
            self.gau2 = GAUBlock(channels[1], decoder_channels, interpolation_mode)
        self.gau1 = GAUBlock(channels[0], decoder_channels, interpolation_mode)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = features[2:]
        out = self.fpa(features[-1])
        # hasattr on a module is resolved statically by TorchScript.
        if hasattr(self, "gau3"):
            out = self.gau3(features[2], out)
        if hasattr(self, "gau2"):
            out = self.gau2(features[1], out)
        return self.gau1(features[0], out)


class PAN(SegmentationModel):
    """PAN with any registered encoder; arguments and defaults as in SMP 0.6.

    ``encoder_output_stride=16`` dilates the encoder's last stage (the encoder must
    support dilation); 32 keeps it as is. The deepest feature must be at least 8x8,
    so inputs start at ``8 * output_stride`` pixels (128 with the defaults).
    """

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        encoder_output_stride: int = 16,
        decoder_channels: int = 32,
        decoder_interpolation: str = "bilinear",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 4,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_interpolation = self._renamed_keyword(kwargs, "upscale_mode", "decoder_interpolation", decoder_interpolation)
        check_common_args("PAN", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        if encoder_output_stride not in OUTPUT_STRIDES:
            raise InvalidInputError(
                f"encoder_output_stride {encoder_output_stride!r} is not supported by PAN; allowed: 16, 32."
            )
        check_int("PAN's decoder_channels", decoder_channels)
        check_interpolation(decoder_interpolation)
        self.encoder = get_encoder(
            encoder_name,
            in_channels=in_channels,
            depth=encoder_depth,
            weights=encoder_weights,
            output_stride=encoder_output_stride,
            **kwargs,
        )
        self.decoder = PANDecoder(self.encoder.out_channels, encoder_depth, decoder_channels, decoder_interpolation)
        self.segmentation_head = SegmentationHead(
            decoder_channels, classes, activation=activation, kernel_size=3, upsampling=upsampling
        )
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"pan-{encoder_name}"
        self.initialize()

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Divisible by the output stride, and large enough for the FPA block's three poolings."""
        super().check_input_shape(x)
        smallest = MIN_DEEPEST_SIZE * self.required_stride
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h < smallest or w < smallest:
            raise InputShapeError(
                f"Input size {h}x{w} is too small for PAN with output stride {self.required_stride}: its deepest "
                f"feature must be at least {MIN_DEEPEST_SIZE}x{MIN_DEEPEST_SIZE}; use at least {smallest}x{smallest}."
            )
