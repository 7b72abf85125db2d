"""Selective-Kernel ResNet/ResNeXt encoders built from timm's blocks (SMP's ``timm-skresnet*``).

timm's ``ResNet`` is used as a library with its ``SelectiveKernelBasic`` /
``SelectiveKernelBottleneck`` blocks, so the modules and state_dict keys (``conv1``,
``bn1``, ``layerN.B.conv1.paths.P.conv`` ...) are those of SMP's encoders and its
checkpoints load strictly. Dilation goes through the shared stride-to-dilation patch
(as in SMP), not timm's own ``output_stride``, so dilated weights and outputs match SMP's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models.resnet import ResNet
from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet


class SkNetEncoder(ResNet, EncoderMixin):
    """timm's ResNet with Selective-Kernel blocks, without its classifier, one feature per stride."""

    def __init__(self, out_channels: Sequence[int], depth: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        del self.fc
        del self.global_pool

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.layer3], 32: [self.layer4]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            x = self.act1(self.bn1(self.conv1(x)))
            features.append(x)
        # One branch per stage (not a loop over a tuple of modules): TorchScript compiles this as written.
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


#: SMP 0.6's basic-block SK kwargs: an attention reduction of 1/8 and the input split across the two paths.
_BASIC_SK_ARGS = {"sk_kwargs": {"rd_ratio": 1 / 8, "split_input": True}}


def _entry(name: str, revision: str, out_channels: list[int], **params: Any) -> EncoderEntry:
    return EncoderEntry(
        SkNetEncoder,
        # zero_init_last=False as in SMP: random init keeps the last BN's weight at 1.
        {"out_channels": out_channels, "zero_init_last": False, **params},
        # Hub revisions pinned as in SMP 0.6; timm's ImageNet normalization (RGB, [0, 1]).
        {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=revision)},
    )


timm_sknet_encoders: dict[str, EncoderEntry] = {
    "timm-skresnet18": _entry(
        "timm-skresnet18",
        "6c97652bb744d89177b68274d2fda3923a7d1f95",
        [3, 64, 64, 128, 256, 512],
        block=SelectiveKernelBasic,
        layers=[2, 2, 2, 2],
        block_args=_BASIC_SK_ARGS,
    ),
    "timm-skresnet34": _entry(
        "timm-skresnet34",
        "2367796924a8182cc835ef6b5dc303917f923f99",
        [3, 64, 64, 128, 256, 512],
        block=SelectiveKernelBasic,
        layers=[3, 4, 6, 3],
        block_args=_BASIC_SK_ARGS,
    ),
    "timm-skresnext50_32x4d": _entry(
        "timm-skresnext50_32x4d",
        "50207e407cc4c6ea9e6872963db6844ca7b7b9de",
        [3, 64, 256, 512, 1024, 2048],
        block=SelectiveKernelBottleneck,
        layers=[3, 4, 6, 3],
        cardinality=32,
        base_width=4,
    ),
}
