"""Dual Path Network encoders (dpn68 ... dpn131) in SMP 0.6's state_dict layout.

DPN blocks carry two paths: a residual one (added) and a densely connected one
(concatenated). Module names follow Ross Wightman's port that SMP vendors
(``features.conv2_1.c1x1_a.bn``...), so SMP and pretrainedmodels checkpoints load
strictly. Every shape is static: channel splits are fixed slices and there is no
pooling outside the stem, so the blocks trace and export without shape arithmetic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import EncoderEntry, EncoderMixin
from .weights import imagenet

#: The original MXNet models subtract a per-channel mean (in 0..255) and multiply by 0.0167.
DPN_MEAN = (124 / 255, 117 / 255, 104 / 255)
DPN_STD = (1 / (0.0167 * 255),) * 3
BN_EPS = 1e-3

#: The two paths between blocks: (residual, dense).
DualPath = tuple[torch.Tensor, torch.Tensor]


def _merge(x: torch.Tensor | DualPath) -> torch.Tensor:
    return torch.cat(x, dim=1) if isinstance(x, tuple) else x


class BnActConv2d(nn.Module):
    """Pre-activation convolution: BatchNorm, ReLU, then a bias-free conv."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.bn(x)))


class CatBnAct(nn.Module):
    """Concatenate the two paths (if given both), then BatchNorm and ReLU."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor | DualPath) -> torch.Tensor:
        return self.act(self.bn(_merge(x)))


class InputBlock(nn.Module):
    """The stem: a stride-2 conv (3x3 for the small models, 7x7 otherwise), BN, ReLU, stride-2 max pool."""

    def __init__(self, num_init_features: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_init_features, kernel_size, stride=2, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(num_init_features, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class DualPathBlock(nn.Module):
    """One DPN block: a grouped bottleneck whose output is split into a residual and a dense part.

    ``kind`` is "proj" (first block of the first stage: projects both paths),
    "down" (first block of later stages: projects with stride 2) or "normal".
    With ``b`` (dpn68b) the last 1x1 conv is two convs after a shared BN-ReLU.
    """

    def __init__(
        self, in_chs: int, width: int, num_1x1_c: int, inc: int, groups: int, kind: str = "normal", b: bool = False
    ) -> None:
        super().__init__()
        self.num_1x1_c = num_1x1_c
        self.b = b
        self.has_proj = kind in ("proj", "down")
        self.downsamples = kind == "down"
        stride = 2 if self.downsamples else 1
        # The projection's name encodes its stride: it is how the checkpoints spell it.
        if self.downsamples:
            self.c1x1_w_s2 = BnActConv2d(in_chs, num_1x1_c + 2 * inc, kernel_size=1, stride=2)
        elif kind == "proj":
            self.c1x1_w_s1 = BnActConv2d(in_chs, num_1x1_c + 2 * inc, kernel_size=1, stride=1)
        self.c1x1_a = BnActConv2d(in_chs, width, kernel_size=1)
        self.c3x3_b = BnActConv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=groups)
        if b:
            self.c1x1_c = CatBnAct(width)
            self.c1x1_c1 = nn.Conv2d(width, num_1x1_c, kernel_size=1, bias=False)
            self.c1x1_c2 = nn.Conv2d(width, inc, kernel_size=1, bias=False)
        else:
            self.c1x1_c = BnActConv2d(width, num_1x1_c + inc, kernel_size=1)

    def forward(self, x: torch.Tensor | DualPath) -> DualPath:
        x_in = _merge(x)
        if self.has_proj:
            proj = self.c1x1_w_s2(x_in) if self.downsamples else self.c1x1_w_s1(x_in)
            resid_in, dense_in = proj[:, : self.num_1x1_c], proj[:, self.num_1x1_c :]
        else:
            resid_in, dense_in = x
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x_in)))
        if self.b:
            resid_out, dense_out = self.c1x1_c1(out), self.c1x1_c2(out)
        else:
            resid_out, dense_out = out[:, : self.num_1x1_c], out[:, self.num_1x1_c :]
        return resid_in + resid_out, torch.cat([dense_in, dense_out], dim=1)


class DPNEncoder(nn.Module, EncoderMixin):
    """DPN returning ``depth + 1`` features: the input, the stem conv (stride 2), and stages 2..5.

    As in SMP, the stride-4..16 features are ReLU(concat(residual, dense)) of the
    stage's last block, and the stride-32 one goes through the final BN-ReLU.
    """

    #: torch.jit.script: SMP declares DPN non-scriptable too.
    _is_torch_scriptable = False

    max_depth = 5

    def __init__(
        self,
        num_init_features: int,
        k_r: int,
        groups: int,
        k_sec: Sequence[int],
        inc_sec: Sequence[int],
        small: bool = False,
        b: bool = False,
        depth: int = 5,
    ) -> None:
        super().__init__()
        self._depth = depth
        self._in_channels = 3
        self._output_stride = 32
        bw_factor = 1 if small else 4
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        blocks["conv1_1"] = InputBlock(num_init_features, kernel_size=3 if small else 7)
        out_channels = [3, num_init_features]
        # Index in ``features`` one past each stage's last block (the last stage includes conv5_bn_ac).
        self._stage_ends: list[int] = []
        in_chs = num_init_features
        for stage, (blocks_in_stage, inc) in enumerate(zip(k_sec, inc_sec, strict=True), start=2):
            bw = 64 * 2 ** (stage - 2) * bw_factor
            width = k_r * bw // (64 * bw_factor)
            for i in range(1, blocks_in_stage + 1):
                kind = "normal" if i > 1 else ("proj" if stage == 2 else "down")
                blocks[f"conv{stage}_{i}"] = DualPathBlock(in_chs, width, bw, inc, groups, kind, b)
                # Residual width stays bw; the dense path starts at 2*inc (projection) and grows by inc per block.
                in_chs = bw + (2 + i) * inc
            out_channels.append(in_chs)
            self._stage_ends.append(len(blocks))
        blocks["conv5_bn_ac"] = CatBnAct(in_chs)
        self._stage_ends[-1] = len(blocks)
        self.features = nn.Sequential(blocks)
        self._out_channels = out_channels

    def _stage(self, index: int) -> nn.Sequential:
        """Stage ``index`` (0 for conv2_x ... 3 for conv5_x) as a slice of ``features``."""
        start = 1 if index == 0 else self._stage_ends[index - 1]
        return self.features[start : self._stage_ends[index]]

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self._stage(2)], 32: [self._stage(3)]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            stem = self.features[0]
            x = stem.act(stem.bn(stem.conv(x)))
            features.append(x)
        paths: torch.Tensor | DualPath = x
        for index in range(self._depth - 1):
            if index == 0:
                paths = self.features[0].pool(x)
            paths = self._stage(index)(paths)
            features.append(paths if index == 3 else F.relu(_merge(paths)))
        return features


def _entry(weights: str, repo_id: str, revision: str, **params: object) -> EncoderEntry:
    settings = imagenet(repo_id=repo_id, revision=revision, mean=DPN_MEAN, std=DPN_STD)
    return EncoderEntry(DPNEncoder, dict(params), {weights: settings})


# Weight names and hub revisions as SMP 0.6 pins them ("imagenet+5k": pretrained on ImageNet-5k, fine-tuned on 1k).
dpn_encoders: dict[str, EncoderEntry] = {
    "dpn68": _entry(
        "imagenet", "smp-hub/dpn68.imagenet", "c209aefdeae6bc93937556629e974b44d4e58535",
        num_init_features=10, k_r=128, groups=32, k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64), small=True,
    ),
    "dpn68b": _entry(
        "imagenet+5k", "smp-hub/dpn68b.imagenet-5k", "6c6615e77688e390ae0eaa81e26821fbd83cee4b",
        num_init_features=10, k_r=128, groups=32, k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64), small=True, b=True,
    ),
    "dpn92": _entry(
        "imagenet+5k", "smp-hub/dpn92.imagenet-5k", "d231f51ce4ad2c84ed5fcaf4ef0cfece6814a526",
        num_init_features=64, k_r=96, groups=32, k_sec=(3, 4, 20, 3), inc_sec=(16, 32, 24, 128),
    ),
    "dpn98": _entry(
        "imagenet", "smp-hub/dpn98.imagenet", "b2836c86216c1ddce980d832f7deaa4ca22babd3",
        num_init_features=96, k_r=160, groups=40, k_sec=(3, 6, 20, 3), inc_sec=(16, 32, 32, 128),
    ),
    "dpn107": _entry(
        "imagenet+5k", "smp-hub/dpn107.imagenet-5k", "dab4cd6b8b79de3db970f2dbff85359a8847db05",
        num_init_features=128, k_r=200, groups=50, k_sec=(4, 8, 20, 3), inc_sec=(20, 64, 64, 128),
    ),
    "dpn131": _entry(
        "imagenet", "smp-hub/dpn131.imagenet", "04bbb9f415ca2bb59f3d8227857967b74698515e",
        num_init_features=128, k_r=160, groups=40, k_sec=(4, 8, 28, 3), inc_sec=(16, 32, 32, 128),
    ),
}
