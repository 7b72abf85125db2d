"""Inception-v4 encoder (Cadene's pretrainedmodels port) in SMP 0.6's state_dict layout.

The network is one ``features`` Sequential of 22 blocks, as in the port, so SMP
checkpoints load strictly (``features.0.conv.weight``, ``features.6.branch3.1.bn``...).
SMP pads every 3x3 conv and max pool by 1 (see :class:`.inceptionresnetv2.BasicConv2d`),
and takes its features after blocks 2, 4, 8, 14 and 21: the stride-8 and stride-16
features come from inside their stages (the third of four Inception-A blocks, the
fourth of seven Inception-B blocks), which is SMP's choice and kept for identical
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .inceptionresnetv2 import INCEPTION_MEAN, INCEPTION_STD, BasicConv2d, max_pool_3x3_s2
from .weights import imagenet


def _avg_pool_branch(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), BasicConv2d(in_planes, out_planes, 1))


class Mixed3a(nn.Module):
    """Stride 2 → 4: max pool and a strided conv side by side (64 → 160 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxpool = max_pool_3x3_s2()
        self.conv = BasicConv2d(64, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.maxpool(x), self.conv(x)), 1)


class Mixed4a(nn.Module):
    """160 → 192 channels at stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(160, 64, 1), BasicConv2d(64, 96, 3))
        self.branch1 = nn.Sequential(
            BasicConv2d(160, 64, 1), BasicConv2d(64, 64, (1, 7)), BasicConv2d(64, 64, (7, 1)), BasicConv2d(64, 96, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x)), 1)


class Mixed5a(nn.Module):
    """Stride 4 → 8: a strided conv and a max pool side by side (192 → 384 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BasicConv2d(192, 192, 3, stride=2)
        self.maxpool = max_pool_3x3_s2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.conv(x), self.maxpool(x)), 1)


class InceptionA(nn.Module):
    """384 channels at stride 8."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(384, 96, 1)
        self.branch1 = nn.Sequential(BasicConv2d(384, 64, 1), BasicConv2d(64, 96, 3))
        self.branch2 = nn.Sequential(BasicConv2d(384, 64, 1), BasicConv2d(64, 96, 3), BasicConv2d(96, 96, 3))
        self.branch3 = _avg_pool_branch(384, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionA(nn.Module):
    """Stride 8 → 16 (384 → 1024 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(384, 384, 3, stride=2)
        self.branch1 = nn.Sequential(BasicConv2d(384, 192, 1), BasicConv2d(192, 224, 3), BasicConv2d(224, 256, 3, stride=2))
        self.branch2 = max_pool_3x3_s2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionB(nn.Module):
    """1024 channels at stride 16, with factorised 7x7 convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(1024, 384, 1)
        self.branch1 = nn.Sequential(BasicConv2d(1024, 192, 1), BasicConv2d(192, 224, (1, 7)), BasicConv2d(224, 256, (7, 1)))
        self.branch2 = nn.Sequential(
            BasicConv2d(1024, 192, 1),
            BasicConv2d(192, 192, (7, 1)),
            BasicConv2d(192, 224, (1, 7)),
            BasicConv2d(224, 224, (7, 1)),
            BasicConv2d(224, 256, (1, 7)),
        )
        self.branch3 = _avg_pool_branch(1024, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class ReductionB(nn.Module):
    """Stride 16 → 32 (1024 → 1536 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(1024, 192, 1), BasicConv2d(192, 192, 3, stride=2))
        self.branch1 = nn.Sequential(
            BasicConv2d(1024, 256, 1), BasicConv2d(256, 256, (1, 7)), BasicConv2d(256, 320, (7, 1)), BasicConv2d(320, 320, 3, stride=2)
        )
        self.branch2 = max_pool_3x3_s2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class InceptionC(nn.Module):
    """1536 channels at stride 32; two branches split into 1x3 and 3x1 halves."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(1536, 256, 1)
        self.branch1_0 = BasicConv2d(1536, 384, 1)
        self.branch1_1a = BasicConv2d(384, 256, (1, 3))
        self.branch1_1b = BasicConv2d(384, 256, (3, 1))
        self.branch2_0 = BasicConv2d(1536, 384, 1)
        self.branch2_1 = BasicConv2d(384, 448, (3, 1))
        self.branch2_2 = BasicConv2d(448, 512, (1, 3))
        self.branch2_3a = BasicConv2d(512, 256, (1, 3))
        self.branch2_3b = BasicConv2d(512, 256, (3, 1))
        self.branch3 = _avg_pool_branch(1536, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat(
            (
                self.branch0(x),
                self.branch1_1a(x1),
                self.branch1_1b(x1),
                self.branch2_3a(x2),
                self.branch2_3b(x2),
                self.branch3(x),
            ),
            1,
        )


class InceptionV4Encoder(nn.Module, EncoderMixin):
    """Inception-v4 without its classifier, returning one feature per stride.

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
        # Index in ``features`` of the block whose output is the feature at stride 2, 4, 8, 16, 32 (SMP's).
        self._feature_blocks = [2, 4, 8, 14, 21]
        self.features = nn.Sequential(
            BasicConv2d(3, 32, 3, stride=2),
            BasicConv2d(32, 32, 3),
            BasicConv2d(32, 64, 3),
            Mixed3a(),
            Mixed4a(),
            Mixed5a(),
            *(InceptionA() for _ in range(4)),
            ReductionA(),
            *(InceptionB() for _ in range(7)),
            ReductionB(),
            *(InceptionC() for _ in range(3)),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self._feature_blocks:
                features.append(x)
            # TorchScript unrolls this loop and cannot break out of it: scripted, every
            # block runs and the list is cut below; eager, traced and exported, the
            # loop stops after the last feature asked for.
            if not torch.jit.is_scripting():
                if len(features) > self._depth:
                    break
        return features[: self._depth + 1]


inceptionv4_encoders: dict[str, EncoderEntry] = {
    "inceptionv4": EncoderEntry(
        InceptionV4Encoder,
        {"out_channels": [3, 64, 192, 384, 1024, 1536]},
        # Hub revisions pinned as in SMP 0.6; "+background" is the 1001-class checkpoint of the same network.
        {
            "imagenet": imagenet(
                repo_id="smp-hub/inceptionv4.imagenet", revision="918fb54f07811d82a4ecde3a51156041d0facba9",
                mean=INCEPTION_MEAN, std=INCEPTION_STD,
            ),
            "imagenet+background": imagenet(
                repo_id="smp-hub/inceptionv4.imagenet-background", revision="8c2a48e20d2709ee64f8421c61be309f05bfa536",
                mean=INCEPTION_MEAN, std=INCEPTION_STD,
            ),
        },
    ),
}
