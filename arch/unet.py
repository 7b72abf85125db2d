"""U-Net (arXiv:1505.04597): upsample, concatenate the encoder skip, two 3x3 convs, repeat."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    Attention,
    Conv2dReLU,
    SegmentationHead,
    SegmentationModel,
    check_common_args,
    check_decoder_channels,
    make_classification_head,
)
from .base.modules import CenterBlock, NormSpec, center_block_from_weights, wants_center_block
from .base.validation import check_interpolation
from .encoders import get_encoder

class UnetDecoderBlock(nn.Module):
    """Resize to the skip's size, concatenate it, then two conv-norm-ReLU."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        use_norm: NormSpec = "batchnorm",
        attention_type: str | None = None,
        interpolation_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.interpolation_mode = interpolation_mode
        # A 0-channel skip (a level the encoder does not produce) is never concatenated:
        # the graph then holds no empty tensor, which TensorRT rejects.
        self.skip_channels = skip_channels
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.attention1 = Attention(attention_type, in_channels=in_channels + skip_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.attention2 = Attention(attention_type, in_channels=out_channels)

    def forward(self, x: torch.Tensor, size: list[int], skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=(size[0], size[1]), mode=self.interpolation_mode)
        if skip is not None:
            if self.skip_channels > 0:
                x = torch.cat([x, skip], dim=1)
            x = self.attention1(x)
        return self.attention2(self.conv2(self.conv1(x)))


class UnetDecoder(nn.Module):
    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        n_blocks: int = 5,
        use_norm: NormSpec = "batchnorm",
        attention_type: str | None = None,
        add_center_block: bool = False,
        interpolation_mode: str = "nearest",
    ) -> None:
        super().__init__()
        channels = list(encoder_channels[1:])[::-1]  # deepest first, input level dropped
        head = channels[0]
        in_channels = [head, *decoder_channels[:-1]]
        skip_channels = [*channels[1:], 0]
        self.center: nn.Module = CenterBlock(head, use_norm) if add_center_block else nn.Identity()
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(i, s, o, use_norm, attention_type, interpolation_mode)
            for i, s, o in zip(in_channels, skip_channels, decoder_channels)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [f.shape[2:] for f in features][::-1]
        skips = list(features[1:])[::-1][1:]
        x = self.center(features[-1])
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], skips[i] if i < len(skips) else None)
        return x


class Unet(SegmentationModel):
    """U-Net with any registered encoder; arguments and defaults as in SMP 0.6.

    ``decoder_add_center_block`` adds SMP's two-conv center block; by default (None)
    it is there for ``vgg*`` encoders, as SMP decides by the encoder's name.
    """

    requires_divisible_input_shape = False
    # SMP decides the center block by the encoder's name ("vgg*") instead of taking an argument.
    segexport_only_arguments = ("decoder_add_center_block",)

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_use_norm: NormSpec = "batchnorm",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_attention_type: str | None = None,
        decoder_interpolation: str = "nearest",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        aux_params: dict[str, Any] | None = None,
        decoder_add_center_block: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_use_norm = self._renamed_keyword(kwargs, "decoder_use_batchnorm", "decoder_use_norm", decoder_use_norm)
        check_common_args("Unet", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        check_decoder_channels("Unet", decoder_channels, encoder_depth)
        check_interpolation(decoder_interpolation)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        self.decoder = UnetDecoder(
            self.encoder.out_channels,
            decoder_channels,
            n_blocks=encoder_depth,
            use_norm=decoder_use_norm,
            attention_type=decoder_attention_type,
            add_center_block=wants_center_block(encoder_name, decoder_add_center_block),
            interpolation_mode=decoder_interpolation,
        )
        self.segmentation_head = SegmentationHead(decoder_channels[-1], classes, activation=activation, kernel_size=3)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"u-{encoder_name}"
        self.initialize()

    @classmethod
    def complete_saved_arguments(
        cls, arguments: dict[str, Any], weight_keys: Callable[[], Iterable[str]]
    ) -> dict[str, Any]:
        return center_block_from_weights(arguments, weight_keys)
