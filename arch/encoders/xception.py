"""Xception encoder (Cadene's pretrainedmodels port of the Keras weights) in SMP 0.6's state_dict layout.

Module names follow the port (``conv1``, ``bn1``, ``block1.rep.0.conv1``,
``block1.skipbn``, ``conv3.pointwise``...), so SMP checkpoints load strictly,
including the positions of the weightless ReLUs and pools inside each block's
``rep`` Sequential, which set the indices of the keys after them. As in SMP, the
two stem convolutions are padded by 1 (the reference pads neither), so the
features sit at strides 2..32; the stride-32 feature is ``bn4``'s output without
the classifier's ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .inceptionresnetv2 import INCEPTION_MEAN, INCEPTION_STD
from .weights import imagenet


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (``conv1``) then pointwise 1x1 convolution, both without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` ReLU → separable conv → BN units, a 3x3 max pool when strided, and a residual.

    ``grow_first`` widens to ``out_filters`` in the first unit, otherwise in the last;
    ``start_with_relu=False`` drops the leading ReLU (the first block follows the
    stem's own ReLU). The residual is a strided 1x1 conv + BN when the shape changes.
    """

    def __init__(self, in_filters: int, out_filters: int, reps: int, stride: int = 1, start_with_relu: bool = True, grow_first: bool = True) -> None:
        super().__init__()
        if out_filters != in_filters or stride != 1:
            self.skip: nn.Module | None = nn.Conv2d(in_filters, out_filters, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_filters)
        else:
            self.skip = None
        widths = [(in_filters, out_filters)] + [(out_filters, out_filters)] * (reps - 1)
        if not grow_first:
            widths = [(in_filters, in_filters)] * (reps - 1) + [(in_filters, out_filters)]
        rep: list[nn.Module] = []
        for cin, cout in widths:
            rep += [nn.ReLU(), SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip


class XceptionEncoder(nn.Module, EncoderMixin):
    """Xception without its classifier, returning one feature per stride.

    Its blocks downsample with max pools, which dilation cannot replace: like SMP,
    only output stride 32.
    """

    supported_output_strides = (32,)

    def __init__(self, out_channels: Sequence[int], depth: int = 5) -> None:
        super().__init__()
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.block1 = Block(64, 128, 2, 2, start_with_relu=False)
        self.block2 = Block(128, 256, 2, 2)
        self.block3 = Block(256, 728, 2, 2)
        # Eight identical middle-flow blocks, named block4..block11 as in the port.
        for i in range(4, 12):
            setattr(self, f"block{i}", Block(728, 728, 3, 1))
        self.block12 = Block(728, 1024, 2, 2, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.relu3 = nn.ReLU()
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One explicit step per depth (no loop over a tuple of modules), so TorchScript compiles it.
        features = [x]
        if self._depth >= 1:
            x = self.relu1(self.bn1(self.conv1(x)))
            x = self.relu2(self.bn2(self.conv2(x)))
            features.append(x)
        if self._depth >= 2:
            x = self.block1(x)
            features.append(x)
        if self._depth >= 3:
            x = self.block2(x)
            features.append(x)
        if self._depth >= 4:
            x = self.block3(x)
            x = self.block7(self.block6(self.block5(self.block4(x))))
            x = self.block11(self.block10(self.block9(self.block8(x))))
            features.append(x)
        if self._depth >= 5:
            x = self.relu3(self.bn3(self.conv3(self.block12(x))))
            features.append(self.bn4(self.conv4(x)))
        return features


xception_encoders: dict[str, EncoderEntry] = {
    "xception": EncoderEntry(
        XceptionEncoder,
        {"out_channels": [3, 64, 128, 256, 728, 2048]},
        # Hub revision pinned as in SMP 0.6; the Keras weights expect inputs scaled to [-1, 1].
        {
            "imagenet": imagenet(
                repo_id="smp-hub/xception.imagenet", revision="01cfaf27c11353b1f0c578e7e26d2c000ea91049",
                mean=INCEPTION_MEAN, std=INCEPTION_STD,
            )
        },
    ),
}
