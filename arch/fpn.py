"""FPN for segmentation (Kirillov et al., "Panoptic FPN", arXiv:1901.02446).

A top-down pyramid over the four deepest encoder levels (P5..P2), each level
brought to the P2 resolution by conv-GroupNorm-ReLU-upsample stages, merged by
sum or concatenation. Layout as SMP 0.6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InvalidInputError, closest

from .base import SegmentationHead, SegmentationModel, check_common_args, make_classification_head
from .base.validation import check_channels, check_interpolation, check_probability, check_upsampling
from .encoders import get_encoder

MERGE_POLICIES = ("add", "cat")
#: GroupNorm groups in the segmentation branches (fixed in SMP): their width must be a multiple.
GROUPS = 32
#: Pyramid levels the decoder reads: the four deepest encoder features.
PYRAMID_LEVELS = 4


def _double(x: torch.Tensor) -> tuple[int, int]:
    # Every level halves H and W (the model requires divisible inputs), so 2x the
    # input size is SMP's scale_factor=2 exactly, with integer sizes in the graph.
    return (x.shape[2] * 2, x.shape[3] * 2)


class Conv3x3GNReLU(nn.Module):
    """3x3 conv → GroupNorm(32) → ReLU, then optionally 2x bilinear upsampling."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False),
            nn.GroupNorm(GROUPS, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        if self.upsample:
            x = F.interpolate(x, size=_double(x), mode="bilinear", align_corners=True)
        return x


class FPNBlock(nn.Module):
    """Top-down step: upsample the coarser level 2x and add the 1x1-projected skip."""

    def __init__(self, pyramid_channels: int, skip_channels: int, interpolation_mode: str = "nearest") -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, pyramid_channels, kernel_size=1)
        self.interpolation_mode = interpolation_mode

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=_double(x), mode=self.interpolation_mode)
        return x + self.skip_conv(skip)


class SegmentationBlock(nn.Module):
    """``max(1, n_upsamples)`` Conv3x3GNReLU stages, the first ``n_upsamples`` of them upsampling."""

    def __init__(self, in_channels: int, out_channels: int, n_upsamples: int = 0) -> None:
        super().__init__()
        blocks = [Conv3x3GNReLU(in_channels, out_channels, upsample=bool(n_upsamples))]
        blocks += [Conv3x3GNReLU(out_channels, out_channels, upsample=True) for _ in range(1, n_upsamples)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MergeBlock(nn.Module):
    """Sum (``"add"``) or channel-concatenate (``"cat"``) the pyramid levels."""

    def __init__(self, policy: str) -> None:
        super().__init__()
        check_merge_policy(policy)
        self.policy = policy

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        if self.policy == "cat":
            return torch.cat(x, dim=1)
        # Same sum as SMP's stack().sum(0), without materialising the stacked copy.
        out = x[0]
        for t in x[1:]:
            out = out + t
        return out


def check_merge_policy(policy: str) -> None:
    """decoder_merge_policy must be 'add' or 'cat'."""
    if policy not in MERGE_POLICIES:
        raise InvalidInputError(
            f"Unknown decoder_merge_policy {policy!r}; allowed: {', '.join(MERGE_POLICIES)}.{closest(str(policy), MERGE_POLICIES)}"
        )


class FPNDecoder(nn.Module):
    """P5..P2 from the four deepest encoder features, each refined to P2's stride and merged."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_depth: int = 5,
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        dropout: float = 0.2,
        merge_policy: str = "add",
        interpolation_mode: str = "nearest",
    ) -> None:
        super().__init__()
        check_merge_policy(merge_policy)
        self.out_channels = segmentation_channels * (PYRAMID_LEVELS if merge_policy == "cat" else 1)
        c5, c4, c3, c2 = list(encoder_channels)[::-1][:PYRAMID_LEVELS]
        self.p5 = nn.Conv2d(c5, pyramid_channels, kernel_size=1)
        self.p4 = FPNBlock(pyramid_channels, c4, interpolation_mode)
        self.p3 = FPNBlock(pyramid_channels, c3, interpolation_mode)
        self.p2 = FPNBlock(pyramid_channels, c2, interpolation_mode)
        self.seg_blocks = nn.ModuleList(
            SegmentationBlock(pyramid_channels, segmentation_channels, n_upsamples=n) for n in (3, 2, 1, 0)
        )
        self.merge = MergeBlock(merge_policy)
        self.dropout = nn.Dropout2d(p=dropout, inplace=True)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # The PYRAMID_LEVELS (4) deepest features, indexed one by one: TorchScript unpacks no list slices.
        p5 = self.p5(features[-1])
        p4 = self.p4(p5, features[-2])
        p3 = self.p3(p4, features[-3])
        p2 = self.p2(p3, features[-4])
        levels = [p5, p4, p3, p2]
        pyramid = [block(levels[i]) for i, block in enumerate(self.seg_blocks)]
        return self.dropout(self.merge(pyramid))


class FPN(SegmentationModel):
    """FPN with any registered encoder; arguments and defaults as in SMP 0.6.

    The decoder reads the four deepest features, so its finest level P2 has
    stride ``2**(encoder_depth - 3)`` (at depth 3 it is the input image itself)
    and, as in SMP, the output is the input size times
    ``upsampling / 2**(encoder_depth - 3)``: the default 4 keeps the input size
    at depth 5 only. Encoders without a feature (0 channels) at one of the four
    levels read are refused.
    """

    requires_divisible_input_shape = True

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_pyramid_channels: int = 256,
        decoder_segmentation_channels: int = 128,
        decoder_merge_policy: str = "add",
        decoder_dropout: float = 0.2,
        decoder_interpolation: str = "nearest",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        upsampling: int = 4,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_common_args("FPN", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5))
        check_channels("decoder_pyramid_channels", decoder_pyramid_channels)
        check_channels(
            "decoder_segmentation_channels", decoder_segmentation_channels, multiple_of=GROUPS, why=f"GroupNorm with {GROUPS} groups"
        )
        check_merge_policy(decoder_merge_policy)
        check_probability("decoder_dropout", decoder_dropout)
        check_interpolation(decoder_interpolation)
        check_upsampling(upsampling)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        out_channels = list(self.encoder.out_channels)
        first_read = len(out_channels) - PYRAMID_LEVELS
        empty = [i for i, c in enumerate(out_channels) if c == 0 and i >= first_read]
        if empty:
            raise InvalidInputError(
                f"FPN cannot use encoder {encoder_name!r} with encoder_depth={encoder_depth}: the decoder reads feature "
                f"levels {first_read}..{len(out_channels) - 1} but the encoder has no features (0 channels) at level(s) "
                f"{empty}; use encoder_depth >= {max(empty) + PYRAMID_LEVELS}."
            )
        self.decoder = FPNDecoder(
            out_channels,
            encoder_depth=encoder_depth,
            pyramid_channels=decoder_pyramid_channels,
            segmentation_channels=decoder_segmentation_channels,
            dropout=decoder_dropout,
            merge_policy=decoder_merge_policy,
            interpolation_mode=decoder_interpolation,
        )
        self.segmentation_head = SegmentationHead(
            self.decoder.out_channels, classes, activation=activation, kernel_size=1, upsampling=upsampling
        )
        self.classification_head = make_classification_head(out_channels[-1], aux_params)
        self.name = f"fpn-{encoder_name}"
        self.initialize()

