"""ResNet and ResNeXt encoders (torchvision blocks, SMP's state_dict layout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet


class ResNetEncoder(ResNet, EncoderMixin):
    """torchvision's ResNet without its classifier, returning one feature per stride."""

    def __init__(self, out_channels: Sequence[int], depth: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        del self.fc
        del self.avgpool

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.layer3], 32: [self.layer4]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One branch per stage (not a loop over a tuple of modules): TorchScript compiles this as written.
        features = [x]
        if self._depth >= 1:
            x = self.relu(self.bn1(self.conv1(x)))
            features.append(x)
        if self._depth >= 2:
            x = self.layer1(self.maxpool(x))
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


_BASIC = [3, 64, 64, 128, 256, 512]
_BOTTLENECK = [3, 64, 256, 512, 1024, 2048]


def _hub(name: str) -> dict:
    return {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet")}


def _entry(name: str, block: type[nn.Module], layers: list[int], pretrained: dict | None = None, **extra: Any) -> EncoderEntry:
    channels = _BASIC if block is BasicBlock else _BOTTLENECK
    return EncoderEntry(
        ResNetEncoder,
        {"out_channels": channels, "block": block, "layers": layers, **extra},
        pretrained if pretrained is not None else _hub(name),
    )


def _semi_weakly(name: str) -> dict:
    return {
        "imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet"),
        "ssl": imagenet(repo_id=f"smp-hub/{name}.ssl"),
        "swsl": imagenet(repo_id=f"smp-hub/{name}.swsl"),
    }


resnet_encoders: dict[str, EncoderEntry] = {
    "resnet18": _entry("resnet18", BasicBlock, [2, 2, 2, 2], _semi_weakly("resnet18")),
    "resnet34": _entry("resnet34", BasicBlock, [3, 4, 6, 3]),
    "resnet50": _entry("resnet50", Bottleneck, [3, 4, 6, 3], _semi_weakly("resnet50")),
    "resnet101": _entry("resnet101", Bottleneck, [3, 4, 23, 3]),
    "resnet152": _entry("resnet152", Bottleneck, [3, 8, 36, 3]),
    "resnext50_32x4d": _entry("resnext50_32x4d", Bottleneck, [3, 4, 6, 3], _semi_weakly("resnext50_32x4d"), groups=32, width_per_group=4),
    "resnext101_32x4d": _entry("resnext101_32x4d", Bottleneck, [3, 4, 23, 3], {"ssl": imagenet(repo_id="smp-hub/resnext101_32x4d.ssl"), "swsl": imagenet(repo_id="smp-hub/resnext101_32x4d.swsl")}, groups=32, width_per_group=4),
    "resnext101_32x8d": _entry("resnext101_32x8d", Bottleneck, [3, 4, 23, 3], {"imagenet": imagenet(repo_id="smp-hub/resnext101_32x8d.imagenet"), "instagram": imagenet(repo_id="smp-hub/resnext101_32x8d.instagram"), "ssl": imagenet(repo_id="smp-hub/resnext101_32x8d.ssl"), "swsl": imagenet(repo_id="smp-hub/resnext101_32x8d.swsl")}, groups=32, width_per_group=8),
    "resnext101_32x16d": _entry("resnext101_32x16d", Bottleneck, [3, 4, 23, 3], {"instagram": imagenet(repo_id="smp-hub/resnext101_32x16d.instagram"), "ssl": imagenet(repo_id="smp-hub/resnext101_32x16d.ssl"), "swsl": imagenet(repo_id="smp-hub/resnext101_32x16d.swsl")}, groups=32, width_per_group=16),
    "resnext101_32x32d": _entry("resnext101_32x32d", Bottleneck, [3, 4, 23, 3], {"instagram": imagenet(repo_id="smp-hub/resnext101_32x32d.instagram")}, groups=32, width_per_group=32),
    "resnext101_32x48d": _entry("resnext101_32x48d", Bottleneck, [3, 4, 23, 3], {"instagram": imagenet(repo_id="smp-hub/resnext101_32x48d.instagram")}, groups=32, width_per_group=48),
}
