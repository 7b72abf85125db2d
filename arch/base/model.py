"""The shared forward pass: encoder → decoder → segmentation head (+ aux head).

An architecture only builds its decoder and heads; running them lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segexport.errors import InvalidInputError

from .export_mode import is_exporting


class SegmentationModel(nn.Module):
    """Base of every architecture.

    Subclasses set ``encoder``, ``decoder``, ``segmentation_head`` and
    ``classification_head`` (None without ``aux_params``), then call
    :meth:`initialize`. ``forward`` returns the mask, or ``(mask, label)``
    when there is an aux head.
    """

    #: False when the decoder resizes features itself and any H, W works.
    requires_divisible_input_shape: bool = True
    #: Targets this architecture cannot be exported to, with the reason (declared, not discovered).
    unsupported_targets: dict[str, str] = {}

    encoder: nn.Module
    decoder: nn.Module
    segmentation_head: nn.Module
    classification_head: nn.Module | None

    def initialize(self) -> None:
        """Random init of decoder and heads (the encoder keeps its own)."""
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)
        if self.classification_head is not None:
            initialize_head(self.classification_head)

    @property
    def required_stride(self) -> int:
        """H and W must be multiples of this (1 when any size works)."""
        return int(self.encoder.output_stride) if self.requires_divisible_input_shape else 1

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a clear error when H or W does not fit the encoder's stride."""
        stride = self.required_stride
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % stride or w % stride:
            raise InvalidInputError(
                f"Input size {h}x{w} is not divisible by {stride}, the stride this model needs; "
                f"nearest sizes that work: {_nearest_multiples(h, stride)} x {_nearest_multiples(w, stride)}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not is_exporting():
            self.check_input_shape(x)
        features = self.encoder(x)
        mask = self.segmentation_head(self.decoder(features))
        if self.classification_head is not None:
            return mask, self.classification_head(features[-1])
        return mask

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode forward under inference mode, as SMP's ``predict``."""
        if self.training:
            self.eval()
        return self(x)


def _nearest_multiples(size: int, stride: int) -> str:
    low, high = (size // stride) * stride, (size // stride + 1) * stride
    if size % stride == 0:
        return str(size)
    return f"{high}" if low == 0 else f"{low} or {high}"


def initialize_decoder(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def initialize_head(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def check_common_args(
    arch: str,
    *,
    classes: int,
    in_channels: int,
    encoder_depth: int,
    allowed_depths: Sequence[int],
) -> None:
    """Validate the arguments every architecture shares, with messages that say what is allowed."""
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise InvalidInputError(f"classes must be an integer >= 1; got {classes!r}.")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise InvalidInputError(f"in_channels must be an integer >= 1; got {in_channels!r}.")
    if encoder_depth not in allowed_depths:
        raise InvalidInputError(
            f"encoder_depth {encoder_depth!r} is out of range for {arch}; allowed: "
            f"{', '.join(str(d) for d in allowed_depths)}."
        )


def check_decoder_channels(arch: str, decoder_channels: Sequence[int], encoder_depth: int) -> None:
    """decoder_channels needs one entry per decoder stage, i.e. ``encoder_depth`` entries."""
    if len(decoder_channels) != encoder_depth:
        raise InvalidInputError(
            f"decoder_channels {tuple(decoder_channels)!r} has {len(decoder_channels)} entries but {arch} "
            f"with encoder_depth={encoder_depth} needs exactly {encoder_depth}."
        )
