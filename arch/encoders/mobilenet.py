"""MobileNetV2 encoder (torchvision's network, SMP's state_dict layout: ``features.N...``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNetV2

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet


class MobileNetV2Encoder(MobileNetV2, EncoderMixin):
    """torchvision's MobileNetV2 without its classifier, returning one feature per stride."""

    def __init__(self, out_channels: Sequence[int], depth: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        # The last layer of each resolution in ``features`` (strides 2, 4, 8, 16, 32).
        self._out_indexes = [1, 3, 6, 13, len(self.features) - 1]
        del self.classifier

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.features[7:14]], 32: [self.features[14:]]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        last = self._out_indexes[self._depth - 1]
        # The whole Sequential with a runtime guard (not a slice): TorchScript unrolls this loop.
        for i, layer in enumerate(self.features):
            if i <= last:
                x = layer(x)
                if i in self._out_indexes:
                    features.append(x)
        return features


mobilenet_encoders: dict[str, EncoderEntry] = {
    "mobilenet_v2": EncoderEntry(
        MobileNetV2Encoder,
        {"out_channels": [3, 16, 24, 32, 96, 1280]},
        # Hub revision pinned as in SMP 0.6.
        {
            "imagenet": imagenet(
                repo_id="smp-hub/mobilenet_v2.imagenet", revision="e67aa804e17f7b404b629127eabbd224c4e0690b"
            )
        },
    ),
}
