"""SENet-154, SE-ResNet and SE-ResNeXt encoders (Hu et al., 2018) in SMP's state_dict layout.

The layout is the Caffe-derived one SMP inherited from ``pretrainedmodels``: a ``layer0``
stem (``conv1``/``bn1``, three of each for SENet-154), then ``layer1..4`` of bottlenecks
keyed ``conv1..3``, ``bn1..3``, ``se_module.fc1/fc2`` and ``downsample.0/1``, so SMP
checkpoints load with ``strict=True``. The three families differ only in their
bottleneck widths and in which convolution strides (see :class:`BottleneckStyle`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet

EXPANSION = 4


@dataclass(frozen=True)
class BottleneckStyle:
    """How one family sizes a bottleneck of ``planes`` and where it strides.

    conv1 and conv2 output ``conv1_width * planes`` and ``conv2_width * planes``
    channels, or, with ``resnext_width``, both ``floor(planes * base_width / 64) * groups``.
    ``stride_in_conv1`` is Caffe SE-ResNet's choice of striding the 1x1 convolution.
    """

    conv1_width: int = 1
    conv2_width: int = 1
    resnext_width: bool = False
    base_width: int = 4
    stride_in_conv1: bool = False

    def widths(self, planes: int, groups: int) -> tuple[int, int]:
        if self.resnext_width:
            width = math.floor(planes * self.base_width / 64) * groups
            return width, width
        return planes * self.conv1_width, planes * self.conv2_width


SENET154 = BottleneckStyle(conv1_width=2, conv2_width=4)
SE_RESNET = BottleneckStyle(stride_in_conv1=True)
SE_RESNEXT = BottleneckStyle(resnext_width=True)


class SEModule(nn.Module):
    """Squeeze-and-excitation: rescale channels by a gate computed from their global mean."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * gate


class SEBottleneck(nn.Module):
    """1x1 → grouped 3x3 → 1x1 with squeeze-and-excitation before the residual sum."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        groups: int,
        reduction: int,
        style: BottleneckStyle,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        width1, width2 = style.widths(planes, groups)
        stride1, stride2 = (stride, 1) if style.stride_in_conv1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width1, kernel_size=1, stride=stride1, bias=False)
        self.bn1 = nn.BatchNorm2d(width1)
        self.conv2 = nn.Conv2d(width1, width2, kernel_size=3, stride=stride2, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width2)
        self.conv3 = nn.Conv2d(width2, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes * EXPANSION, reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.se_module(out) + shortcut)


class SENetEncoder(nn.Module, EncoderMixin):
    """An SE network without its classifier, returning one feature per stride.

    Args:
        out_channels: channels of the input and of each of the five features.
        style: the family's bottleneck (:data:`SENET154`, :data:`SE_RESNET`, :data:`SE_RESNEXT`).
        layers: bottlenecks in each of the four stages.
        groups: groups of every bottleneck's 3x3 convolution.
        reduction: squeeze-and-excitation reduction ratio.
        stem_channels: the stem's output channels (layer1's input).
        deep_stem: three 3x3 convolutions instead of one 7x7 (SENet-154).
        downsample_kernel_size: kernel of layer2..4's shortcut projection (3 with padding 1 for SENet-154).
        depth: how many features after the input to return (1..5).
    """

    def __init__(
        self,
        out_channels: Sequence[int],
        style: BottleneckStyle,
        layers: Sequence[int],
        groups: int,
        reduction: int = 16,
        stem_channels: int = 64,
        deep_stem: bool = False,
        downsample_kernel_size: int = 1,
        depth: int = 5,
    ) -> None:
        super().__init__()
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        self.layer0 = _stem(stem_channels, deep_stem)
        # Outside layer0 so the stride-2 feature is the stem's output. ceil_mode as in the Caffe weights.
        self.layer0_pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        inplanes = stem_channels
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            kernel = 1 if i == 0 else downsample_kernel_size
            stages.append(_stage(inplanes, planes, blocks, groups, reduction, style, stride, kernel))
            inplanes = planes * EXPANSION
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.layer3], 32: [self.layer4]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            x = self.layer0(x)
            features.append(x)
        # One branch per stage (not a loop over a tuple of modules): TorchScript compiles this as written.
        if self._depth >= 2:
            x = self.layer1(self.layer0_pool(x))
            features.append(x)
        if self._depth >= 3:
            x = self.layer2(x)
            features.append(x)
        if self._depth >= 4:
            x = self.layer3(x)
            features.append(x)
        if self._depth >= 5:
            x = self.layer4(x)
            features.append(x)
        return features


def _stem(channels: int, deep: bool) -> nn.Sequential:
    """``layer0``: a 7x7 stride-2 conv, or three 3x3 convs (64, 64, ``channels``) striding in the first."""
    if not deep:
        modules = [
            ("conv1", nn.Conv2d(3, channels, kernel_size=7, stride=2, padding=3, bias=False)),
            ("bn1", nn.BatchNorm2d(channels)),
            ("relu1", nn.ReLU(inplace=True)),
        ]
        return nn.Sequential(OrderedDict(modules))
    widths = (3, 64, 64, channels)
    modules = []
    for i in range(1, 4):
        conv = nn.Conv2d(widths[i - 1], widths[i], kernel_size=3, stride=2 if i == 1 else 1, padding=1, bias=False)
        modules += [(f"conv{i}", conv), (f"bn{i}", nn.BatchNorm2d(widths[i])), (f"relu{i}", nn.ReLU(inplace=True))]
    return nn.Sequential(OrderedDict(modules))


def _stage(
    inplanes: int,
    planes: int,
    blocks: int,
    groups: int,
    reduction: int,
    style: BottleneckStyle,
    stride: int,
    downsample_kernel_size: int,
) -> nn.Sequential:
    """``blocks`` bottlenecks; the first projects the shortcut when the shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(
                inplanes,
                planes * EXPANSION,
                kernel_size=downsample_kernel_size,
                stride=stride,
                padding=downsample_kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(planes * EXPANSION),
        )
    first = SEBottleneck(inplanes, planes, groups, reduction, style, stride, downsample)
    rest = [SEBottleneck(planes * EXPANSION, planes, groups, reduction, style) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)


#: Hub revisions pinned as in SMP 0.6; the weights are ImageNet-normalized RGB in [0, 1].
_REVISIONS = {
    "senet154": "249f45efc9881ba560a0c480128edbc34ab87e40",
    "se_resnet50": "e6b4bc2dc85226c3d3474544410724a485455459",
    "se_resnet101": "71fe95cc0a27f444cf83671f354de02dc741b18b",
    "se_resnet152": "e79fc3d9d76f197bd76a2593c2054edf1083fe32",
    "se_resnext50_32x4d": "73246406d879a2b0e3fdfe6fddd56347d38f38ae",
    "se_resnext101_32x4d": "18808a4276f46421d358a9de554e0b93c2795df4",
}


def _entry(
    name: str, style: BottleneckStyle, layers: list[int], groups: int, stem_channels: int = 64, **extra: object
) -> EncoderEntry:
    return EncoderEntry(
        SENetEncoder,
        {
            "out_channels": [3, stem_channels, 256, 512, 1024, 2048],
            "style": style,
            "layers": layers,
            "groups": groups,
            "stem_channels": stem_channels,
            **extra,
        },
        {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=_REVISIONS[name])},
    )


senet_encoders: dict[str, EncoderEntry] = {
    "senet154": _entry(
        "senet154", SENET154, [3, 8, 36, 3], groups=64, stem_channels=128, deep_stem=True, downsample_kernel_size=3
    ),
    "se_resnet50": _entry("se_resnet50", SE_RESNET, [3, 4, 6, 3], groups=1),
    "se_resnet101": _entry("se_resnet101", SE_RESNET, [3, 4, 23, 3], groups=1),
    "se_resnet152": _entry("se_resnet152", SE_RESNET, [3, 8, 36, 3], groups=1),
    "se_resnext50_32x4d": _entry("se_resnext50_32x4d", SE_RESNEXT, [3, 4, 6, 3], groups=32),
    "se_resnext101_32x4d": _entry("se_resnext101_32x4d", SE_RESNEXT, [3, 4, 23, 3], groups=32),
}
