"""DenseNet-121/169/201/161 encoders: torchvision's network in SMP 0.6's state_dict layout.

SMP's encoder is torchvision's ``DenseNet`` minus its classifier, so the keys
(``features.denseblock1.denselayer1.norm1.weight``...) are torchvision's and SMP
checkpoints load strictly. The stride-4/8/16 features are taken inside each
transition, after its BatchNorm and ReLU and before its 1x1 conv and average pool
(the dense block's full width), and the stride-32 feature is ``norm5``'s output
without a ReLU, as in SMP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.models.densenet import DenseNet

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet


class DenseNetEncoder(DenseNet, EncoderMixin):
    """torchvision's DenseNet without its classifier, returning one feature per stride.

    Downsampling is done by average pools in the transitions, which dilation cannot
    replace: like SMP, these encoders only give output stride 32.
    """

    supported_output_strides = (32,)

    def __init__(self, out_channels: Sequence[int], depth: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        del self.classifier

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One explicit step per depth (no loop over a tuple of modules), so TorchScript compiles it.
        f = self.features
        features = [x]
        if self._depth >= 1:
            x = f.relu0(f.norm0(f.conv0(x)))
            features.append(x)
        if self._depth >= 2:
            x = f.transition1.relu(f.transition1.norm(f.denseblock1(f.pool0(x))))
            features.append(x)
        if self._depth >= 3:
            x = f.transition1.pool(f.transition1.conv(x))
            x = f.transition2.relu(f.transition2.norm(f.denseblock2(x)))
            features.append(x)
        if self._depth >= 4:
            x = f.transition2.pool(f.transition2.conv(x))
            x = f.transition3.relu(f.transition3.norm(f.denseblock3(x)))
            features.append(x)
        if self._depth >= 5:
            x = f.transition3.pool(f.transition3.conv(x))
            features.append(f.norm5(f.denseblock4(x)))
        return features


def _entry(name: str, revision: str, out_channels: list[int], init_features: int, growth_rate: int, blocks: tuple[int, ...]) -> EncoderEntry:
    params = {
        "out_channels": out_channels,
        "num_init_features": init_features,
        "growth_rate": growth_rate,
        "block_config": blocks,
    }
    # torchvision's ImageNet weights, on the hub at the revision SMP 0.6 pins; ImageNet normalization.
    return EncoderEntry(DenseNetEncoder, params, {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=revision)})


densenet_encoders: dict[str, EncoderEntry] = {
    "densenet121": _entry("densenet121", "a17c96896a265b61338f66f61d3887b24f61995a", [3, 64, 256, 512, 1024, 1024], 64, 32, (6, 12, 24, 16)),
    "densenet169": _entry("densenet169", "8facfba9fc72f7750879dac9ac6ceb3ab990de8d", [3, 64, 256, 512, 1280, 1664], 64, 32, (6, 12, 32, 32)),
    "densenet201": _entry("densenet201", "ed5deb355d71659391d46fae5e7587460fbb5f84", [3, 64, 256, 512, 1792, 1920], 64, 32, (6, 12, 48, 32)),
    "densenet161": _entry("densenet161", "9afe0fec51ab2a627141769d97d6f83756d78446", [3, 96, 384, 768, 2112, 2208], 96, 48, (6, 12, 36, 24)),
}
