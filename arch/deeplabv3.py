"""DeepLabV3 (arXiv:1706.05587) and DeepLabV3+ (arXiv:1802.02611).

Both run atrous spatial pyramid pooling (ASPP) on a dilated encoder's deepest
feature; V3+ adds a light decoder that fuses the stride-4 feature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.checks import check_int
from segexport.errors import InvalidInputError

from .base import AdaptiveAvgPool2d, SegmentationHead, SegmentationModel, check_common_args, make_classification_head
from .encoders import get_encoder

OUTPUT_STRIDES = (8, 16)
#: Channels the stride-4 feature is projected to in V3+ (the paper's choice, as in SMP).
HIGHRES_CHANNELS = 48


class SeparableConv2d(nn.Sequential):
    """Depthwise conv → pointwise 1x1 conv (keys ``0`` and ``1``, as SMP)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels, bias=False
        )
        pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        super().__init__(depthwise, pointwise)


class ASPPConv(nn.Sequential):
    """3x3 atrous conv → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPSeparableConv(nn.Sequential):
    """Depthwise-separable 3x3 atrous conv → BN → ReLU (SMP's class for ``decoder_aspp_separable``)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        conv = SeparableConv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPPooling(nn.Sequential):
    """Image-level branch: global mean → 1x1 conv → BN → ReLU, spread back over the feature map.

    The pooling is a plain mean (one ReduceMean in ONNX) rather than an adaptive
    pooling layer, and the output size is read from the input's shape, so any
    input size exports.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = x
        for module in self:  # the Sequential's layers (TorchScript cannot call super().forward)
            pooled = module(pooled)
        return F.interpolate(pooled, size=(size[0], size[1]), mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1 conv, three atrous convs and image pooling, concatenated and projected (with dropout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        atrous_rates: Sequence[int],
        separable: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())
        ]
        conv = ASPPSeparableConv if separable else ASPPConv
        branches += [conv(in_channels, out_channels, rate) for rate in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [branch(x) for branch in self.convs]
        return self.project(torch.cat(branches, dim=1))


class DeepLabV3Decoder(nn.Module):
    """ASPP on the deepest feature → 3x3 conv → BN → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        atrous_rates: Sequence[int],
        aspp_separable: bool,
        aspp_dropout: float,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, out_channels, atrous_rates, separable=aspp_separable, dropout=aspp_dropout)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.aspp(features[-1]))))


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deepest feature, upsampled to stride 4 and fused with the projected stride-4 feature."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        out_channels: int,
        atrous_rates: Sequence[int],
        deepest_stride: int,
        aspp_separable: bool,
        aspp_dropout: float,
    ) -> None:
        super().__init__()
        self.aspp = nn.Sequential(
            ASPP(encoder_channels[-1], out_channels, atrous_rates, separable=aspp_separable, dropout=aspp_dropout),
            SeparableConv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )
        # SMP picks 4 or 2 from (output_stride, depth); both equal the deepest stride over the stride-4 level.
        self.up = nn.Upsample(mode="bilinear", scale_factor=deepest_stride // 4, align_corners=True)
        self.block1 = nn.Sequential(
            nn.Conv2d(encoder_channels[2], HIGHRES_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HIGHRES_CHANNELS),
            nn.ReLU(),
        )
        self.block2 = nn.Sequential(
            SeparableConv2d(HIGHRES_CHANNELS + out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        deep = self.up(self.aspp(features[-1]))
        return self.block2(torch.cat([deep, self.block1(features[2])], dim=1))


def _check_aspp_args(arch: str, output_stride: int, channels: int, rates: Iterable[int], dropout: float) -> tuple[int, ...]:
    if output_stride not in OUTPUT_STRIDES:
        raise InvalidInputError(f"encoder_output_stride {output_stride!r} is not supported by {arch}; allowed: 8, 16.")
    check_int(f"{arch}'s decoder_channels", channels)
    try:
        rates = tuple(rates)
    except TypeError:
        rates = (rates,)  # type: ignore[assignment]
    if len(rates) != 3 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rates):
        raise InvalidInputError(
            f"decoder_atrous_rates {rates!r} must be three integers >= 1 (one per atrous branch), e.g. (12, 24, 36)."
        )
    if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise InvalidInputError(f"decoder_aspp_dropout {dropout!r} must be a probability in [0, 1].")
    return rates


class DeepLabV3(SegmentationModel):
    """DeepLabV3 with any encoder that supports dilation; arguments and defaults as in SMP 0.6.

    ``upsampling=None`` upsamples by the encoder's output stride, giving back the input size.
    """

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        encoder_output_stride: int = 8,
        decoder_channels: int = 256,
        decoder_atrous_rates: Iterable[int] = (12, 24, 36),
        decoder_aspp_separable: bool = False,
        decoder_aspp_dropout: float = 0.5,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int | None = None,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        # SMP sets no depth limit on DeepLabV3 (the head upsamples by 2**depth for shallow encoders).
        check_common_args(
            "DeepLabV3", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(1, 2, 3, 4, 5)
        )
        rates = _check_aspp_args("DeepLabV3", encoder_output_stride, decoder_channels, decoder_atrous_rates, decoder_aspp_dropout)
        self.encoder = get_encoder(
            encoder_name,
            in_channels=in_channels,
            depth=encoder_depth,
            weights=encoder_weights,
            output_stride=encoder_output_stride,
            **kwargs,
        )
        self.decoder = DeepLabV3Decoder(
            self.encoder.out_channels[-1], decoder_channels, rates, decoder_aspp_separable, decoder_aspp_dropout
        )
        # SMP's default (2**depth for depth <= 3, else the output stride) is the encoder's output stride.
        scale = int(self.encoder.output_stride) if upsampling is None else upsampling
        self.segmentation_head = SegmentationHead(
            decoder_channels, classes, activation=activation, kernel_size=1, upsampling=scale
        )
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"deeplabv3-{encoder_name}"
        # Like SMP, DeepLabV3 keeps PyTorch's default init for decoder and head (no self.initialize()).

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Also accept checkpoints from SMP versions whose decoder was a Sequential (``decoder.0.`` ...)."""
        renamed = {"decoder.0.": "decoder.aspp.", "decoder.1.": "decoder.conv.", "decoder.2.": "decoder.bn."}
        converted = {}
        for key, value in state_dict.items():
            for old, new in renamed.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            converted[key] = value
        return super().load_state_dict(converted, *args, **kwargs)


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ with any encoder that supports dilation; arguments and defaults as in SMP 0.6."""

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        encoder_output_stride: int = 16,
        decoder_channels: int = 256,
        decoder_atrous_rates: Iterable[int] = (12, 24, 36),
        decoder_aspp_separable: bool = True,
        decoder_aspp_dropout: float = 0.5,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 4,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_common_args(
            "DeepLabV3Plus", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5)
        )
        rates = _check_aspp_args(
            "DeepLabV3Plus", encoder_output_stride, decoder_channels, decoder_atrous_rates, decoder_aspp_dropout
        )
        self.encoder = get_encoder(
            encoder_name,
            in_channels=in_channels,
            depth=encoder_depth,
            weights=encoder_weights,
            output_stride=encoder_output_stride,
            **kwargs,
        )
        if self.encoder.out_channels[2] == 0:
            raise InvalidInputError(
                f"DeepLabV3Plus fuses the stride-4 feature, but encoder {encoder_name!r} has none "
                f"(out_channels {list(self.encoder.out_channels)})."
            )
        self.decoder = DeepLabV3PlusDecoder(
            self.encoder.out_channels,
            decoder_channels,
            rates,
            int(self.encoder.output_stride),
            decoder_aspp_separable,
            decoder_aspp_dropout,
        )
        self.segmentation_head = SegmentationHead(
            decoder_channels, classes, activation=activation, kernel_size=1, upsampling=upsampling
        )
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"deeplabv3plus-{encoder_name}"
        # Like SMP, DeepLabV3+ keeps PyTorch's default init for decoder and head (no self.initialize()).
