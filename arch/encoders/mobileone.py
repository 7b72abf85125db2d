"""MobileOne encoders (Apple's "An Improved One millisecond Mobile Backbone") in SMP 0.6's state_dict layout.

Each :class:`MobileOneBlock` trains as several parallel branches (k×k conv+BN
branches, a 1×1 conv+BN "scale" branch, a BN "skip" branch) whose sum is linear
in the input, so :meth:`MobileOneBlock.reparameterize` can replace them with one
convolution that gives the same output. Export preparation calls it on a copy of
the model (see ``segexport.prepare.reparameterize_blocks``): the eager model, the
parity reference, keeps its branches and loads SMP's (unfused) checkpoints as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import EncoderEntry, EncoderMixin, patch_first_conv
from .weights import imagenet


class SEBlock(nn.Module):
    """Squeeze-and-excitation with a 1/16 reduction (MobileOne-S4's last blocks)."""

    def __init__(self, channels: int, rd_ratio: float = 0.0625) -> None:
        super().__init__()
        reduced = int(channels * rd_ratio)
        self.reduce = nn.Conv2d(channels, reduced, kernel_size=1, bias=True)
        self.expand = nn.Conv2d(reduced, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A global mean, not SMP's avg_pool2d(kernel=[h, w]): the same value, but no window
        # size read from the input shape, so dynamic-shape exports keep it a ReduceMean.
        weight = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(weight)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int) -> nn.Sequential:
    branch = nn.Sequential()
    branch.add_module(
        "conv",
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False),
    )
    branch.add_module("bn", nn.BatchNorm2d(out_channels))
    return branch


def _fuse_batchnorm(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` for a bias-free conv with ``kernel`` (eval-mode statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class MobileOneBlock(nn.Module):
    """One MobileOne block: branches summed, optional SE, ReLU.

    Keys as in SMP: ``rbr_conv.N.{conv,bn}``, ``rbr_scale.{conv,bn}`` (k > 1),
    ``rbr_skip`` (a BatchNorm, when shapes allow an identity), ``se.{reduce,expand}``;
    after :meth:`reparameterize`, ``reparam_conv`` replaces the branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        use_se: bool = False,
        num_conv_branches: int = 1,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.se: nn.Module = SEBlock(out_channels) if use_se else nn.Identity()
        self.activation = nn.ReLU()
        #: The single convolution of the reparameterised block; None while it has branches.
        self.reparam_conv: nn.Conv2d | None = None
        self.rbr_skip = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_conv = nn.ModuleList(
            _conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups) for _ in range(num_conv_branches)
        )
        self.rbr_scale = _conv_bn(in_channels, out_channels, 1, stride, 0, groups) if kernel_size > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self._sum_of_branches(x)
        return self.activation(self.se(out))

    def _sum_of_branches(self, x: torch.Tensor) -> torch.Tensor:
        # Summed in SMP's order (scale, skip, then each conv branch) so float rounding matches it too.
        parts = [branch(x) for branch in (self.rbr_scale, self.rbr_skip) if branch is not None]
        parts += [branch(x) for branch in self.rbr_conv]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one convolution with the same (eval-mode) output; a no-op once done.

        Uses the BatchNorms' running statistics, so call it on a model in eval mode
        that will not be trained further (export preparation works on a copy).
        """
        if self.reparam_conv is not None:
            return
        template: nn.Conv2d = self.rbr_conv[0].conv
        kernel, bias = self._fused_kernel_and_bias(template)
        fused = nn.Conv2d(
            template.in_channels,
            template.out_channels,
            template.kernel_size,  # type: ignore[arg-type]
            stride=template.stride,  # type: ignore[arg-type]
            padding=template.padding,  # type: ignore[arg-type]
            dilation=template.dilation,  # type: ignore[arg-type]
            groups=template.groups,
            bias=True,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)  # type: ignore[union-attr]
        fused.requires_grad_(template.weight.requires_grad)
        self.reparam_conv = fused
        self.rbr_conv = nn.ModuleList()
        self.rbr_scale = None
        self.rbr_skip = None

    def _fused_kernel_and_bias(self, template: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
        kernel = torch.zeros_like(template.weight)
        bias = torch.zeros(template.out_channels, dtype=kernel.dtype, device=kernel.device)
        for branch in self.rbr_conv:
            k, b = _fuse_batchnorm(branch.conv.weight, branch.bn)
            kernel, bias = kernel + k, bias + b
        center = self.kernel_size // 2
        if self.rbr_scale is not None:
            # A 1x1 kernel is the centre tap of a kxk one (also when dilated: the centre tap does not move).
            k, b = _fuse_batchnorm(self.rbr_scale.conv.weight, self.rbr_scale.bn)
            kernel, bias = kernel + F.pad(k, [center] * 4), bias + b
        if self.rbr_skip is not None:
            # The identity as a (grouped) convolution: 1 at the centre tap of each channel's own input.
            identity = torch.zeros_like(template.weight)
            per_group = identity.shape[1]
            for channel in range(identity.shape[0]):
                identity[channel, channel % per_group, center, center] = 1.0
            k, b = _fuse_batchnorm(identity, self.rbr_skip)
            kernel, bias = kernel + k, bias + b
        return kernel, bias


class MobileOneEncoder(nn.Module, EncoderMixin):
    """MobileOne's stem (``stage0``) and four stages of depthwise + pointwise block pairs, one feature per stride."""

    #: torch.jit.script: its branch sum does not script yet (SMP's does).
    _is_torch_scriptable = False

    def __init__(
        self,
        out_channels: Sequence[int],
        width_multipliers: Sequence[float],
        num_blocks_per_stage: Sequence[int] = (2, 8, 10, 1),
        use_se: bool = False,
        num_conv_branches: int = 1,
        depth: int = 5,
    ) -> None:
        super().__init__()
        self._depth = depth
        self._out_channels = list(out_channels)
        self._in_channels = 3
        self._output_stride = 32
        self._in_planes = min(64, int(64 * width_multipliers[0]))
        self.stage0 = MobileOneBlock(3, self._in_planes, kernel_size=3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        se_blocks = (0, 0, num_blocks_per_stage[2] // 2 if use_se else 0, num_blocks_per_stage[3] if use_se else 0)
        self.stage1, self.stage2, self.stage3, self.stage4 = (
            self._make_stage(int(width * mult), blocks, se, num_conv_branches)
            for width, mult, blocks, se in zip(widths, width_multipliers, num_blocks_per_stage, se_blocks, strict=True)
        )

    def _make_stage(self, planes: int, num_blocks: int, num_se_blocks: int, num_conv_branches: int) -> nn.Sequential:
        """``num_blocks`` (depthwise 3x3, pointwise 1x1) pairs; the first halves H and W, the last ``num_se_blocks`` use SE."""
        blocks: list[nn.Module] = []
        for index in range(num_blocks):
            use_se = index >= num_blocks - num_se_blocks
            stride = 2 if index == 0 else 1
            blocks.append(
                MobileOneBlock(
                    self._in_planes, self._in_planes, 3, stride=stride, padding=1, groups=self._in_planes,
                    use_se=use_se, num_conv_branches=num_conv_branches,
                )  # fmt: skip
            )
            blocks.append(MobileOneBlock(self._in_planes, planes, 1, use_se=use_se, num_conv_branches=num_conv_branches))
            self._in_planes = planes
        return nn.Sequential(*blocks)

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        return {16: [self.stage3], 32: [self.stage4]}

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """Adapt the stem's conv branch and scale branch (both read the input), as SMP does."""
        if in_channels == 3:
            return
        self._in_channels = in_channels
        self._out_channels = [in_channels, *self._out_channels[1:]]
        for branch in (*self.stage0.rbr_conv, self.stage0.rbr_scale):
            patch_first_conv(branch, in_channels, pretrained=pretrained)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load weights, ignoring the ImageNet classifier (``linear.*``) of Apple's checkpoints, as SMP does."""
        kept = {k: v for k, v in state_dict.items() if k not in ("linear.weight", "linear.bias")}
        return super().load_state_dict(kept, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for stage in (self.stage0, self.stage1, self.stage2, self.stage3, self.stage4)[: self._depth]:
            x = stage(x)
            features.append(x)
        return features


def _entry(
    name: str, revision: str, out_channels: list[int], width_multipliers: tuple[float, ...], **extra: Any
) -> EncoderEntry:
    return EncoderEntry(
        MobileOneEncoder,
        {"out_channels": out_channels, "width_multipliers": width_multipliers, **extra},
        # Hub revisions pinned as in SMP 0.6; ImageNet mean/std, RGB, range 0-1.
        {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=revision)},
    )


mobileone_encoders: dict[str, EncoderEntry] = {
    "mobileone_s0": _entry(
        "mobileone_s0", "f52815cf0ad29278a9860c9cd5fabf19f904bedf", [3, 48, 48, 128, 256, 1024],
        (0.75, 1.0, 1.0, 2.0), num_conv_branches=4,
    ),  # fmt: skip
    "mobileone_s1": _entry(
        "mobileone_s1", "5707a98852b762cd8e0c43b5c8c729cd28496677", [3, 64, 96, 192, 512, 1280], (1.5, 1.5, 2.0, 2.5)
    ),
    "mobileone_s2": _entry(
        "mobileone_s2", "ddc3db8fa40d271902c7a8c95cee6691f617d551", [3, 64, 96, 256, 640, 2048], (1.5, 2.0, 2.5, 4.0)
    ),
    "mobileone_s3": _entry(
        "mobileone_s3", "da89b84a91b7400c366c358bfbf8dd0b2fa4dde2", [3, 64, 128, 320, 768, 2048], (2.0, 2.5, 3.0, 4.0)
    ),
    "mobileone_s4": _entry(
        "mobileone_s4", "16197c55d599076b6aae67a83d3b3f70c31b097c", [3, 64, 192, 448, 896, 2048],
        (3.0, 3.5, 3.5, 4.0), use_se=True,
    ),  # fmt: skip
}
