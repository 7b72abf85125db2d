"""EfficientNet and EfficientNet-Lite encoders built from timm's blocks (SMP's ``timm-efficientnet-*``).

timm's ``EfficientNet`` class is used as a library: the arch definitions below are
decoded by timm, so the modules and state_dict keys (``conv_stem``, ``bn1``,
``blocks.S.B...``) are those of SMP's encoders and its checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.layers.activations import Swish
from timm.models.efficientnet import EfficientNet, decode_arch_def, round_channels
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import IMAGENET_MEAN, IMAGENET_STD, PretrainedSettings, imagenet

# B0's stages in timm's block notation; B1..B8/L2 and Lite1..4 scale them.
_STAGES = (
    "ds_r1_k3_s1_e1_c16",
    "ir_r2_k3_s2_e6_c24",
    "ir_r2_k5_s2_e6_c40",
    "ir_r3_k3_s2_e6_c80",
    "ir_r3_k5_s1_e6_c112",
    "ir_r4_k5_s2_e6_c192",
    "ir_r1_k3_s1_e6_c320",
)
DROP_PATH_RATE = 0.2
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def efficientnet_kwargs(channel_multiplier: float, depth_multiplier: float, lite: bool) -> dict[str, Any]:
    """timm ``EfficientNet`` arguments for a scaled EfficientNet or EfficientNet-Lite.

    Lite drops squeeze-excite, uses ReLU6, and keeps the stem, the head width and
    the first and last stages' depth fixed (so it quantizes and runs well on mobile).
    """
    round_chs = partial(round_channels, multiplier=channel_multiplier)
    if lite:
        return {
            "block_args": decode_arch_def([[s] for s in _STAGES], depth_multiplier, fix_first_last=True),
            "num_features": 1280,
            "stem_size": 32,
            "fix_stem": True,
            "round_chs_fn": round_chs,
            "act_layer": nn.ReLU6,
            "drop_path_rate": DROP_PATH_RATE,
        }
    return {
        "block_args": decode_arch_def([[f"{s}_se0.25"] for s in _STAGES], depth_multiplier),
        "num_features": round_channels(1280, channel_multiplier, 8, None),
        "stem_size": 32,
        "round_chs_fn": round_chs,
        "act_layer": Swish,
        "drop_path_rate": DROP_PATH_RATE,
    }


class TimmEfficientNetEncoder(EfficientNet, EncoderMixin):
    """timm's EfficientNet without its classifier, returning one feature per stride.

    ``blocks`` holds timm's seven stages; strides 4, 8, 16 and 32 end after
    stages 1, 2, 4 and 6 (counting from 0).
    """

    # Stage groups producing the stride 4, 8, 16 and 32 features: stages 0-1, 2, 3-4, 5-6.
    _GROUPS = ((0, 2), (2, 3), (3, 5), (5, 7))

    def __init__(
        self,
        out_channels: Sequence[int],
        channel_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
        lite: bool = False,
        depth: int = 5,
    ) -> None:
        super().__init__(**efficientnet_kwargs(channel_multiplier, depth_multiplier, lite))
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        # conv_head/bn2 stay although unused: they are in SMP's encoder state_dict.
        del self.classifier
        #: Index of the stage after which each feature (strides 4, 8, 16, 32) is taken.
        self._feature_stages = [end - 1 for _, end in self._GROUPS]

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.blocks[3:5]], 32: [self.blocks[5:]]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            x = self.bn1(self.conv_stem(x))  # timm's BatchNormAct2d applies the activation
            features.append(x)
        last = self._feature_stages[self._depth - 2] if self._depth >= 2 else -1
        # The whole stage list with a runtime guard (not slices): TorchScript unrolls this loop.
        for i, stage in enumerate(self.blocks):
            if i <= last:
                x = stage(x)
                if i in self._feature_stages:
                    features.append(x)
        return features


def _hub(
    name: str,
    tag: str,
    revision: str,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> PretrainedSettings:
    return imagenet(repo_id=f"smp-hub/{name}.{tag}", revision=revision, mean=mean, std=std)


def _efficientnet(
    name: str,
    out_channels: list[int],
    multipliers: tuple[float, float],
    imagenet_rev: str,
    advprop_rev: str,
    noisy_student_rev: str | None,
) -> EncoderEntry:
    # AdvProp weights expect inputs scaled to [-1, 1]; ImageNet and Noisy Student ones the usual mean/std.
    pretrained = {
        "imagenet": _hub(name, "imagenet", imagenet_rev),
        "advprop": _hub(name, "advprop", advprop_rev, INCEPTION_MEAN, INCEPTION_STD),
    }
    if noisy_student_rev is not None:
        pretrained["noisy-student"] = _hub(name, "noisy-student", noisy_student_rev)
    channel, depth = multipliers
    params = {"out_channels": out_channels, "channel_multiplier": channel, "depth_multiplier": depth}
    return EncoderEntry(TimmEfficientNetEncoder, params, pretrained)


def _lite(name: str, out_channels: list[int], multipliers: tuple[float, float], revision: str) -> EncoderEntry:
    # The TF Lite ports expect inputs scaled to [-1, 1].
    channel, depth = multipliers
    params = {"out_channels": out_channels, "channel_multiplier": channel, "depth_multiplier": depth, "lite": True}
    return EncoderEntry(
        TimmEfficientNetEncoder, params, {"imagenet": _hub(name, "imagenet", revision, INCEPTION_MEAN, INCEPTION_STD)}
    )


# Hub revisions are the ones SMP 0.6 pins.
timm_efficientnet_encoders: dict[str, EncoderEntry] = {
    "timm-efficientnet-b0": _efficientnet(
        "timm-efficientnet-b0", [3, 32, 24, 40, 112, 320], (1.0, 1.0),
        "8419e9cc19da0b68dcd7bb12f19b7c92407ad7c4", "a5870af2d24ce79e0cc7fae2bbd8e0a21fcfa6d8",
        "bea8b0ff726a50e48774d2d360c5fb1ac4815836",
    ),
    "timm-efficientnet-b1": _efficientnet(
        "timm-efficientnet-b1", [3, 32, 24, 40, 112, 320], (1.0, 1.1),
        "63bdd65ef6596ef24f1cadc7dd4f46b624442349", "79b3d102080ef679b16c2748e608a871112233d0",
        "36856124a699f6032574ceeefab02040daa90a9a",
    ),
    "timm-efficientnet-b2": _efficientnet(
        "timm-efficientnet-b2", [3, 32, 24, 48, 120, 352], (1.1, 1.2),
        "e693adb39d3cb3847e71e3700a0c2aa58072cff1", "b58479bf78007cfbb365091d64eeee369bddfa21",
        "67c558827c6d3e0975ff9b4bce8557bc2ca80931",
    ),
    "timm-efficientnet-b3": _efficientnet(
        "timm-efficientnet-b3", [3, 40, 32, 48, 136, 384], (1.2, 1.4),
        "1666b835b5151d6bb2067c7cd67e67ada6c39edf", "70474cdb9f1ff4fcbd7434e66560ead1ab8e506b",
        "2367bc9f61e79ee97684169a71a87db280bcf4db",
    ),
    "timm-efficientnet-b4": _efficientnet(
        "timm-efficientnet-b4", [3, 48, 32, 56, 160, 448], (1.4, 1.8),
        "07868c28ab308f4de4cf1e7ec54b33b8b002ccdb", "8ea1772ee9a2a0d18c1b56dce0dfac8dd33d537d",
        "faeb77b6e8292a700380c840d39442d7ce4d6443",
    ),
    "timm-efficientnet-b5": _efficientnet(
        "timm-efficientnet-b5", [3, 48, 40, 64, 176, 512], (1.6, 2.2),
        "004153b4ddd93d30afd9bbf34329d7f57396d413", "1d1c5f05aab5ed9a1d5052847ddd4024c06a464d",
        "9bc3a1e5490de92b1af061d5c2c474ab3129e38c",
    ),
    "timm-efficientnet-b6": _efficientnet(
        "timm-efficientnet-b6", [3, 56, 40, 72, 200, 576], (1.8, 2.6),
        "dbbf28a5c33f021486db4070de693caad6b56c3d", "3b5d3412047f7711c56ffde997911cfefe79f835",
        "9b899ea9e8e0ce2ccada0f34a8cb8b5028e9bb36",
    ),
    "timm-efficientnet-b7": _efficientnet(
        "timm-efficientnet-b7", [3, 64, 48, 80, 224, 640], (2.0, 3.1),
        "8ef7ffccf54dad9baceb21d05b7ef86b6b70f4cc", "fcbc576ffb939c12d5cd8dad523fdae6eb0177ca",
        "6b1dd73e61bf934d485d7bd4381dc3e2ab374664",
    ),
    "timm-efficientnet-b8": _efficientnet(
        "timm-efficientnet-b8", [3, 72, 56, 88, 248, 704], (2.2, 3.6),
        "b5e9dde35605a3a6d17ea2a727382625f9066a37", "e43f381de72e7467383c2c80bacbb7fcb9572866",
        None,
    ),
    "timm-efficientnet-l2": EncoderEntry(
        TimmEfficientNetEncoder,
        {"out_channels": [3, 136, 104, 176, 480, 1376], "channel_multiplier": 4.3, "depth_multiplier": 5.3},
        {
            "noisy-student": _hub("timm-efficientnet-l2", "noisy-student", "cdc711e76d1becdd9197169f1a8bb1b2094e980c"),
            "noisy-student-475": _hub(
                "timm-efficientnet-l2", "noisy-student-475", "35f5ba667a64bf4f3f0689daf84fc6d0f8e1311b"
            ),
        },
    ),
    "timm-tf_efficientnet_lite0": _lite(
        "timm-tf_efficientnet_lite0", [3, 32, 24, 40, 112, 320], (1.0, 1.0), "f5729249af07e5d923fb8b16922256ce2865d108"
    ),
    "timm-tf_efficientnet_lite1": _lite(
        "timm-tf_efficientnet_lite1", [3, 32, 24, 40, 112, 320], (1.0, 1.1), "7b5e3f8dbb0c13b74101773584bba7523721be72"
    ),
    "timm-tf_efficientnet_lite2": _lite(
        "timm-tf_efficientnet_lite2", [3, 32, 24, 48, 120, 352], (1.1, 1.2), "cc5f6cd4c7409ebacc13292f09d369ae88547f6a"
    ),
    "timm-tf_efficientnet_lite3": _lite(
        "timm-tf_efficientnet_lite3", [3, 32, 32, 48, 136, 384], (1.2, 1.4), "ab29c8402991591d66f813bbb1f061565d9b0cd0"
    ),
    "timm-tf_efficientnet_lite4": _lite(
        "timm-tf_efficientnet_lite4", [3, 32, 32, 56, 160, 448], (1.4, 1.8), "91a822e0f03c255b34dfb7846d3858397e50ba39"
    ),
}
