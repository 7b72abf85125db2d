"""VGG-11/13/16/19 encoders, with and without BatchNorm, in SMP 0.6's (torchvision's) layout.

Only torchvision's ``features`` stack is built (keys ``features.N.weight``), not its
120M-parameter classifier, which an encoder never uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segexport.errors import InvalidInputError

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet

#: Conv widths per block, "M" for a 2x2 max pool (torchvision's configurations A, B, D, E).
POOL = "M"
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg13": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    "vgg19": (
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL
    ),
}


def make_vgg_features(config: Sequence[int | str], batch_norm: bool) -> nn.Sequential:
    """3x3 conv (+BN) + ReLU per width, a max pool per "M", initialised as torchvision does."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.BatchNorm2d(int(item))] if batch_norm else [conv]
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(item)
    return nn.Sequential(*layers)


class VGGEncoder(nn.Module, EncoderMixin):
    """VGG returning ``depth + 1`` features, as SMP does.

    Unlike most encoders, SMP's VGG does not return the input first: its features are
    the activations just before each of the five max pools (strides 1, 2, 4, 8, 16;
    the first has 64 channels at full resolution) and the last pool's output (stride 32).
    """

    #: torch.jit.script: slicing its Sequential by depth does not script yet (SMP's does).
    _is_torch_scriptable = False

    max_depth = 5
    #: Downsampling is done by max pools, which cannot be traded for dilation.
    supported_output_strides = (32,)

    def __init__(
        self, out_channels: Sequence[int], config: Sequence[int | str], batch_norm: bool = False, depth: int = 5
    ) -> None:
        super().__init__()
        self._depth = depth
        self._in_channels = 3
        self._output_stride = 32
        self._out_channels = list(out_channels)
        self.features = make_vgg_features(config, batch_norm)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        # The layer whose output is each feature: the one before every pool, then the last pool.
        self._out_indexes = (*(i - 1 for i in pools), len(self.features) - 1)

    def make_dilated(self, output_stride: int) -> None:
        """VGG refuses every output stride but 32, as in SMP."""
        if output_stride != 32:
            raise InvalidInputError(
                f"Encoder {type(self).__name__} cannot reach output stride {output_stride}; allowed: 32 only "
                "(VGG downsamples with max pooling, which cannot be replaced by dilation)."
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        last = self._out_indexes[self._depth]
        for i, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if i in self._out_indexes:
                features.append(x)
        return features


_CHANNELS = (64, 128, 256, 512, 512, 512)

# Hub revisions as SMP 0.6 pins them.
_REVISIONS = {
    "vgg11": "ad8b90e1051c38fdbf399cf5016886a1be357390",
    "vgg11_bn": "59757f9215032c9f092977092d57d26a9df7fd9c",
    "vgg13": "1b70ff2580f101a8007a48b51e2b5d1e5925dc42",
    "vgg13_bn": "9be454515193af6612261b7614fe90607e27b143",
    "vgg16": "49d74b799006ee252b86e25acd6f1fd8ac9a99c1",
    "vgg16_bn": "2c186d02fb519e93219a99a1c2af6295aef0bf0d",
    "vgg19": "2853d00d7bca364dbb98be4d6afa347e5aeec1f6",
    "vgg19_bn": "f09a924cb0d201ea6f61601df9559141382271d7",
}


def _entry(name: str) -> EncoderEntry:
    base = name.removesuffix("_bn")
    params = {"out_channels": list(_CHANNELS), "config": CONFIGS[base], "batch_norm": name.endswith("_bn")}
    settings = imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=_REVISIONS[name])
    return EncoderEntry(VGGEncoder, params, {"imagenet": settings})


vgg_encoders: dict[str, EncoderEntry] = {name: _entry(name) for name in _REVISIONS}
