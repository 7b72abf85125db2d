"""Inception-ResNet-v2 encoder (Cadene's pretrainedmodels port) in SMP 0.6's state_dict layout.

Module names follow the port (``conv2d_1a.conv``, ``repeat.3.branch1.0.bn``,
``block8.conv2d``...), so SMP checkpoints load strictly. As in SMP, every 3x3
convolution and every max pool is padded by 1 (the reference network pads none of
its stride-2 layers), so each downsampling step gives ``ceil(size / 2)`` and the
five features sit at strides 2..32 like every other encoder's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet

#: BatchNorm epsilon of the TensorFlow original the weights come from.
BN_EPS = 1e-3
#: Inception-style weights expect inputs scaled to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3) → ReLU, zero-padded by half the kernel.

    The reference pads every conv this way except its 3x3 ones, which SMP pads by 1
    too; so one rule, ``kernel // 2`` per side, gives SMP's network.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int | tuple[int, int], stride: int = 1) -> None:
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.conv = nn.Conv2d(in_planes, out_planes, (kh, kw), stride=stride, padding=(kh // 2, kw // 2), bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=BN_EPS)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def max_pool_3x3_s2() -> nn.MaxPool2d:
    """The reference's 3x3 stride-2 max pool with SMP's padding of 1."""
    return nn.MaxPool2d(3, stride=2, padding=1)


class Mixed5b(nn.Module):
    """The stride-8 Inception-A style block that widens 192 → 320 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, 1)
        self.branch1 = nn.Sequential(BasicConv2d(192, 48, 1), BasicConv2d(48, 64, 5))
        self.branch2 = nn.Sequential(BasicConv2d(192, 64, 1), BasicConv2d(64, 96, 3), BasicConv2d(96, 96, 3))
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), BasicConv2d(192, 64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block35(nn.Module):
    """Residual Inception-A block at stride 8 (320 channels)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(320, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(320, 32, 1), BasicConv2d(32, 32, 3))
        self.branch2 = nn.Sequential(BasicConv2d(320, 32, 1), BasicConv2d(32, 48, 3), BasicConv2d(48, 64, 3))
        self.conv2d = nn.Conv2d(128, 320, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
        return self.relu(out * self.scale + x)


class Mixed6a(nn.Module):
    """Reduction to stride 16 (320 → 1088 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, 3, stride=2)
        self.branch1 = nn.Sequential(BasicConv2d(320, 256, 1), BasicConv2d(256, 256, 3), BasicConv2d(256, 384, 3, stride=2))
        self.branch2 = max_pool_3x3_s2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Block17(nn.Module):
    """Residual Inception-B block at stride 16 (1088 channels)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1088, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1088, 128, 1),
            BasicConv2d(128, 160, (1, 7)),
            BasicConv2d(160, 192, (7, 1)),
        )
        self.conv2d = nn.Conv2d(384, 1088, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        return self.relu(out * self.scale + x)


class Mixed7a(nn.Module):
    """Reduction to stride 32 (1088 → 2080 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(1088, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3, stride=2))
        self.branch2 = nn.Sequential(BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3), BasicConv2d(288, 320, 3, stride=2))
        self.branch3 = max_pool_3x3_s2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block8(nn.Module):
    """Residual Inception-C block at stride 32 (2080 channels); the last one has no ReLU."""

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(2080, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(2080, 192, 1),
            BasicConv2d(192, 224, (1, 3)),
            BasicConv2d(224, 256, (3, 1)),
        )
        self.conv2d = nn.Conv2d(448, 2080, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1))
        return self.relu(out * self.scale + x)


class InceptionResNetV2Encoder(nn.Module, EncoderMixin):
    """Inception-ResNet-v2 without its classifier, returning one feature per stride.

    Its stride-2 steps are pools and strided branches concatenated side by side,
    which dilation cannot replace: like SMP, only output stride 32.
    """

    supported_output_strides = (32,)

    def __init__(self, out_channels: Sequence[int], depth: int = 5) -> None:
        super().__init__()
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3)
        self.maxpool_3a = max_pool_3x3_s2()
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.maxpool_5a = max_pool_3x3_s2()
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*(Block35(scale=0.17) for _ in range(10)))
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*(Block17(scale=0.10) for _ in range(20)))
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*(Block8(scale=0.20) for _ in range(9)))
        self.block8 = Block8(relu=False)
        self.conv2d_7b = BasicConv2d(2080, 1536, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One explicit step per depth (no loop over a tuple of modules), so TorchScript compiles it.
        features = [x]
        if self._depth >= 1:
            x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
            features.append(x)
        if self._depth >= 2:
            x = self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x)))
            features.append(x)
        if self._depth >= 3:
            x = self.repeat(self.mixed_5b(self.maxpool_5a(x)))
            features.append(x)
        if self._depth >= 4:
            x = self.repeat_1(self.mixed_6a(x))
            features.append(x)
        if self._depth >= 5:
            x = self.conv2d_7b(self.block8(self.repeat_2(self.mixed_7a(x))))
            features.append(x)
        return features


inceptionresnetv2_encoders: dict[str, EncoderEntry] = {
    "inceptionresnetv2": EncoderEntry(
        InceptionResNetV2Encoder,
        {"out_channels": [3, 64, 192, 320, 1088, 1536]},
        # Hub revisions pinned as in SMP 0.6; "+background" is the 1001-class checkpoint of the same network.
        {
            "imagenet": imagenet(
                repo_id="smp-hub/inceptionresnetv2.imagenet", revision="120c5afdbb80a1c989db0a7423ebb7a9db9b1e6c",
                mean=INCEPTION_MEAN, std=INCEPTION_STD,
            ),
            "imagenet+background": imagenet(
                repo_id="smp-hub/inceptionresnetv2.imagenet-background", revision="3ecf3491658dc0f6a76d69c9d1cb36511b1ee56c",
                mean=INCEPTION_MEAN, std=INCEPTION_STD,
            ),
        },
    ),
}
