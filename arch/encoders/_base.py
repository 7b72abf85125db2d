"""What every native encoder shares: the encoder contract, first-conv patching, dilation.

The contract (what a user-written encoder must offer to be registered):
``out_channels`` (one entry per feature, the first being the input's channels),
``depth``, ``in_channels``, ``output_stride``, and ``forward(x)`` returning
``depth + 1`` tensors from the input resolution down, each halving H and W.
A level an encoder does not produce (transformers start at stride 4) has 0 channels;
decoders then skip it instead of consuming an empty tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from segexport.errors import InvalidInputError

from ..base.export_mode import is_exporting
from .weights import PretrainedSettings


@dataclass(frozen=True)
class EncoderEntry:
    """One registered encoder: how to build it and which weights exist for it."""

    cls: type[nn.Module]
    params: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, PretrainedSettings] = field(default_factory=dict)


class EncoderMixin:
    """Mixed into native encoders; subclasses set ``_out_channels`` and implement ``get_stages``.

    The ``_is_torch_*`` flags are SMP's capability declarations (True unless an encoder
    family overrides them, e.g. one TorchScript cannot compile).
    """

    _is_torch_scriptable: bool = True
    _is_torch_exportable: bool = True
    _is_torch_compilable: bool = True
    # Python-side properties: TorchScript need not compile them (forward reads the plain attributes).
    __jit_unused_properties__ = ["out_channels", "depth", "in_channels", "output_stride"]

    _out_channels: list[int]
    _depth: int = 5
    _in_channels: int = 3
    _output_stride: int = 32
    #: Output strides :meth:`make_dilated` can reach.
    supported_output_strides: tuple[int, ...] = (8, 16, 32)

    @property
    def out_channels(self) -> list[int]:
        return list(self._out_channels[: self._depth + 1])

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def output_stride(self) -> int:
        return min(self._output_stride, 2**self._depth)

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """Adapt the first convolution to ``in_channels`` the way SMP does."""
        if in_channels == 3:
            return
        self._in_channels = in_channels
        if self._out_channels[0] == 3:
            self._out_channels = [in_channels, *self._out_channels[1:]]
        patch_first_conv(self, in_channels, pretrained=pretrained)  # type: ignore[arg-type]

    def get_stages(self) -> dict[int, Sequence[nn.Module]]:
        """Map output stride → modules of the stage that produces it (for dilation)."""
        raise NotImplementedError

    def make_dilated(self, output_stride: int) -> None:
        """Trade the last strides for dilation so features stop at ``output_stride``."""
        if output_stride not in self.supported_output_strides or output_stride not in (8, 16):
            allowed = ", ".join(str(s) for s in self.supported_output_strides)
            raise InvalidInputError(
                f"Encoder {type(self).__name__} cannot reach output stride {output_stride}; allowed: {allowed}."
            )
        for stage_stride, modules in self.get_stages().items():
            if stage_stride <= output_stride:
                continue
            for module in modules:
                replace_strides_with_dilation(module, stage_stride // output_stride)
        self._output_stride = output_stride


def patch_first_conv(model: nn.Module, new_in_channels: int, default_in_channels: int = 3, pretrained: bool = True) -> None:
    """Change the first conv's input channels.

    Random weights are re-initialised; pretrained ones are summed (1 channel) or
    cycled and rescaled (2 or more channels), as in SMP.
    """
    module = next(
        (m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == default_in_channels), None
    )
    if module is None:
        raise InvalidInputError(f"{type(model).__name__} has no {default_in_channels}-channel first convolution to adapt.")
    weight = module.weight.detach()
    module.in_channels = new_in_channels
    if not pretrained:
        module.weight = nn.Parameter(
            torch.empty(module.out_channels, new_in_channels // module.groups, *module.kernel_size)
        )
        module.reset_parameters()
    elif new_in_channels == 1:
        module.weight = nn.Parameter(weight.sum(1, keepdim=True))
    else:
        new_weight = torch.empty(module.out_channels, new_in_channels // module.groups, *module.kernel_size)
        for i in range(new_in_channels):
            new_weight[:, i] = weight[:, i % default_in_channels]
        module.weight = nn.Parameter(new_weight * (default_in_channels / new_in_channels))


def replace_strides_with_dilation(module: nn.Module, dilation_rate: int) -> None:
    """Set every conv in ``module`` to stride 1 with ``dilation_rate`` (padding kept 'same')."""
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            mod.stride = (1, 1)
            mod.dilation = (dilation_rate, dilation_rate)
            kh, _ = mod.kernel_size
            mod.padding = ((kh // 2) * dilation_rate, (kh // 2) * dilation_rate)
            if hasattr(mod, "static_padding"):  # TF-"same" padded convs of EfficientNet
                mod.static_padding = nn.Identity()


def missing_stride2_level(x: torch.Tensor) -> torch.Tensor:
    """The stride-2 feature of an encoder that has none (transformers), reported with 0 channels.

    Eagerly it is an empty strided view of the input, as SMP's dummy feature: no device
    or batch is baked in. Decoders skip the level by its declared 0 channels and read
    only its size. An exported graph keeps the tensor whose shape it reads, and TensorRT
    rejects zero-sized tensors, so while exporting it is a one-channel view instead (its
    values are never read).
    """
    if not torch.jit.is_scripting():
        if is_exporting():
            return x[:, :1, 1::2, 1::2]
    return x[:, :0, 1::2, 1::2]
