"""EfficientNet-B0..B7 encoders as ported by lukemelas (SMP's ``efficientnet-*``).

A compact re-implementation with the same module names (``_conv_stem``, ``_bn0``,
``_blocks.N._depthwise_conv``...) so SMP checkpoints load strictly, and the same
TensorFlow-"SAME" padding so they give the same features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import PretrainedSettings, imagenet

# TensorFlow's BatchNorm momentum 0.99 is PyTorch's 1 - 0.99 (kept as an expression so
# the float is bit-identical to the original port's).
BN_MOMENTUM = 1 - 0.99
BN_EPS = 1e-3
SE_RATIO = 0.25
DROP_CONNECT_RATE = 0.2

# EfficientNet-B0's seven stages: (repeats, kernel, stride, expand ratio, in filters, out filters).
# Wider/deeper members scale the filters and repeats of this table.
_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, width_coefficient: float, divisor: int = 8) -> int:
    """Scale ``filters`` by the width coefficient, rounding to a multiple of ``divisor``.

    Rounds to nearest but never more than 10% down (the TensorFlow reference rule).
    """
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Scale a stage's block count by the depth coefficient, rounding up."""
    return int(math.ceil(depth_coefficient * repeats))


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that makes a conv output ``ceil(size / stride)`` like TF's "SAME"."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow-"SAME" padding fixed for one reference input size.

    As in the original port, the pad is computed once from the model's native
    resolution (224 for B0, 240 for B1...), not from the actual input: pretrained
    weights were fitted to that alignment, and a constant pad keeps the exported
    graph free of shape arithmetic. ``replace_strides_with_dilation`` swaps
    ``static_padding`` for Identity when it turns a stride into dilation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        image_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
        before, after = same_padding(image_size, kernel_size, stride)
        self.static_padding: nn.Module = (
            nn.ZeroPad2d((before, after, before, after)) if before or after else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Conv2d's own kernel call (TorchScript cannot compile super().forward).
        return self._conv_forward(self.static_padding(x), self.weight, self.bias)


def drop_connect(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``rate`` (training only)."""
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise conv, squeeze-excite, 1x1 project, skip."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        image_size: int,
        drop_connect_rate: float = 0.0,
    ) -> None:
        super().__init__()
        expanded = in_channels * expand_ratio
        self._has_expansion = expand_ratio != 1
        # Decided at construction: a block keeps (or lacks) its skip after dilation.
        self._has_skip = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate
        if self._has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, expanded, 1, image_size)
            self._bn0 = nn.BatchNorm2d(expanded, momentum=BN_MOMENTUM, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(
            expanded, expanded, kernel_size, image_size, stride=stride, groups=expanded
        )
        self._bn1 = nn.BatchNorm2d(expanded, momentum=BN_MOMENTUM, eps=BN_EPS)
        squeezed = max(1, int(in_channels * SE_RATIO))
        self._se_reduce = nn.Conv2d(expanded, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, expanded, 1)
        self._project_conv = SamePadConv2d(expanded, out_channels, 1, image_size)
        self._bn2 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM, eps=BN_EPS)
        self._swish = nn.SiLU()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        # hasattr, not the _has_expansion flag: TorchScript resolves it when compiling (the layers exist or not).
        if hasattr(self, "_expand_conv"):
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        # Global mean instead of adaptive pooling: one ReduceMean in every exporter.
        squeezed = self._se_expand(self._swish(self._se_reduce(x.mean(dim=(2, 3), keepdim=True))))
        x = torch.sigmoid(squeezed) * x
        x = self._bn2(self._project_conv(x))
        if self._has_skip:
            if self.training and self.drop_connect_rate > 0:
                x = drop_connect(x, self.drop_connect_rate)
            x = x + inputs
        return x


class EfficientNetEncoder(nn.Module, EncoderMixin):
    """EfficientNet stem and MBConv blocks, returning one feature per stride.

    ``out_indexes`` are the blocks whose outputs are the stride 4, 8, 16 and 32
    features (SMP's choice, kept so decoders see the same tensors).
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        out_indexes: Sequence[int],
        width_coefficient: float,
        depth_coefficient: float,
        image_size: int,
        depth: int = 5,
        drop_connect_rate: float = DROP_CONNECT_RATE,
    ) -> None:
        super().__init__()
        self._depth = depth
        self._out_channels = list(out_channels)
        self._out_indexes = list(out_indexes)
        self._in_channels = 3
        self._output_stride = 32

        stem_channels = round_filters(32, width_coefficient)
        self._conv_stem = SamePadConv2d(3, stem_channels, 3, image_size, stride=2)
        self._bn0 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM, eps=BN_EPS)
        size = math.ceil(image_size / 2)

        # (in, out, kernel, stride, expand, input size) per block; the first block of a
        # stage changes stride and width, its repeats keep them.
        specs = []
        for repeats, kernel, stride, expand, in_filters, out_filters in _B0_STAGES:
            in_ch, out_ch = round_filters(in_filters, width_coefficient), round_filters(out_filters, width_coefficient)
            for i in range(round_repeats(repeats, depth_coefficient)):
                specs.append((in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand, size))
                size = math.ceil(size / (stride if i == 0 else 1))
        # Stochastic depth grows linearly with the block index.
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, drop_connect_rate=drop_connect_rate * i / len(specs)) for i, spec in enumerate(specs)
        )

        # The classifier's 1x1 conv and BN are unused for segmentation but part of
        # SMP's encoder state_dict: they stay so its checkpoints load strictly.
        head_channels = round_filters(1280, width_coefficient)
        self._conv_head = SamePadConv2d(specs[-1][1], head_channels, 1, size)
        self._bn1 = nn.BatchNorm2d(head_channels, momentum=BN_MOMENTUM, eps=BN_EPS)
        self._swish = nn.SiLU()

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        first16, first32 = self._out_indexes[1] + 1, self._out_indexes[2] + 1
        return {16: [self._blocks[first16:first32]], 32: [self._blocks[first32:]]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            x = self._swish(self._bn0(self._conv_stem(x)))
            features.append(x)
        if self._depth >= 2:
            last = self._out_indexes[self._depth - 2]
            # The whole module list with a runtime guard (not a slice): TorchScript unrolls this loop.
            for i, block in enumerate(self._blocks):
                if i <= last:
                    x = block(x)
                    if i in self._out_indexes:
                        features.append(x)
        return features


def _pretrained(name: str, imagenet_revision: str, advprop_revision: str) -> dict[str, PretrainedSettings]:
    # AdvProp weights were trained on inputs scaled to [-1, 1].
    return {
        "imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=imagenet_revision),
        "advprop": imagenet(
            repo_id=f"smp-hub/{name}.advprop", revision=advprop_revision, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
    }


def _entry(
    name: str,
    out_channels: list[int],
    out_indexes: list[int],
    scaling: tuple[float, float, int],
    revisions: tuple[str, str],
) -> EncoderEntry:
    width, depth, size = scaling
    params = {
        "out_channels": out_channels,
        "out_indexes": out_indexes,
        "width_coefficient": width,
        "depth_coefficient": depth,
        "image_size": size,
    }
    return EncoderEntry(EfficientNetEncoder, params, _pretrained(name, *revisions))


# name: out_channels, out_indexes, (width, depth, native resolution), (imagenet, advprop) hub revisions.
efficientnet_encoders: dict[str, EncoderEntry] = {
    "efficientnet-b0": _entry(
        "efficientnet-b0", [3, 32, 24, 40, 112, 320], [2, 4, 8, 15], (1.0, 1.0, 224),
        ("1bbe7ecc1d5ea1d2058de1a2db063b8701aff314", "29043c08140d9c6ee7de1468d55923f2b06bcec2"),
    ),
    "efficientnet-b1": _entry(
        "efficientnet-b1", [3, 32, 24, 40, 112, 320], [4, 7, 15, 22], (1.0, 1.1, 240),
        ("5d637466a5215de300a8ccb13a39357df2df2bf4", "2e518b8b0955bbab467f50525578dab6b6086afc"),
    ),
    "efficientnet-b2": _entry(
        "efficientnet-b2", [3, 32, 24, 48, 120, 352], [4, 7, 15, 22], (1.1, 1.2, 260),
        ("a96d4f0295ffbae18ebba173bf7f3c0c8f21990e", "be788c20dfb0bbe83b4c439f9cfe0dd937c0783e"),
    ),
    "efficientnet-b3": _entry(
        "efficientnet-b3", [3, 40, 32, 48, 136, 384], [4, 7, 17, 25], (1.2, 1.4, 300),
        ("074c54a6c473e0d294690d49cedb6cf463e7127d", "9ccc166d87bd9c08d6bed4477638c7f4bb3eec78"),
    ),
    "efficientnet-b4": _entry(
        "efficientnet-b4", [3, 48, 32, 56, 160, 448], [5, 9, 21, 31], (1.4, 1.8, 380),
        ("05cd5dde5dab658f00c463f9b9aa0ced76784f40", "f04caa809ea4eb08ee9e7fd555f5514ebe2a9ef5"),
    ),
    "efficientnet-b5": _entry(
        "efficientnet-b5", [3, 48, 40, 64, 176, 512], [7, 12, 26, 38], (1.6, 2.2, 456),
        ("69f4d28460a4e421b7860bc26ee7d832e03e01ca", "dabe78fc8ab7ce93ddc2bb156b01db227caede88"),
    ),
    "efficientnet-b6": _entry(
        "efficientnet-b6", [3, 56, 40, 72, 200, 576], [8, 14, 30, 44], (1.8, 2.6, 528),
        ("8570752016f7c62ae149cffa058550fe44e21c8b", "c2dbb4d1359151165ec7b96cfe54a9cac2142a31"),
    ),
    "efficientnet-b7": _entry(
        "efficientnet-b7", [3, 64, 48, 80, 224, 640], [10, 17, 37, 54], (2.0, 3.1, 600),
        ("5a5dbe687d612ebc3dca248274fd1191111deda6", "ce33edb4e80c0cde268f098ae2299e23f615577d"),
    ),
}
