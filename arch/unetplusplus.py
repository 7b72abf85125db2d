"""U-Net++ (arXiv:1807.10165): U-Net whose skips are nested, densely connected decoder nodes.

Node ``x_{d}_{l}`` upsamples its input 2x and concatenates the nodes ``x_{i}_{l}``
(``i > d``) of its column plus the encoder feature at that resolution. Node names, and so
state_dict keys, are SMP 0.6's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InvalidInputError

from .base import (
    Attention,
    Conv2dReLU,
    SegmentationHead,
    SegmentationModel,
    check_common_args,
    check_decoder_channels,
    make_classification_head,
)
from .base.modules import CenterBlock, NormSpec, center_block_from_weights, wants_center_block
from .base.validation import check_interpolation
from .encoders import get_encoder


class DecoderBlock(nn.Module):
    """Upsample 2x, concatenate the skips (if the node has any), two conv-norm-ReLU (SMP's name and attributes).

    A node of a 0-channel level (``out_channels=0``) is empty, as in SMP: no layers
    and no weights; the decoder never runs it.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        use_norm: NormSpec = "batchnorm",
        attention_type: str | None = None,
        interpolation_mode: str = "nearest",
        has_skip: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.is_empty = out_channels == 0
        self.interpolation_mode = interpolation_mode
        # A node can have a skip whose every part is a 0-channel level: it then
        # concatenates nothing but still applies attention1, as SMP does when it
        # concatenates the empty tensors.
        self.has_skip = has_skip
        self.conv1: nn.Module | None = None
        self.attention1: nn.Module | None = None
        self.conv2: nn.Module | None = None
        self.attention2: nn.Module | None = None
        if self.is_empty:
            return
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.attention1 = Attention(attention_type, in_channels=in_channels + skip_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels, 3, padding=1, use_norm=use_norm)
        self.attention2 = Attention(attention_type, in_channels=out_channels)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        # Every level halves H and W (the model requires divisible inputs), so 2x the
        # input size is SMP's scale_factor=2 exactly, with integer sizes in the graph.
        x = F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2), mode=self.interpolation_mode)
        if self.conv1 is None or self.attention1 is None or self.conv2 is None or self.attention2 is None:
            return x.new_empty(x.shape[0], 0, x.shape[2], x.shape[3])  # an empty node, as SMP's
        if self.has_skip:
            if skips:
                x = torch.cat([x, *skips], dim=1)
            x = self.attention1(x)
        return self.attention2(self.conv2(self.conv1(x)))


class UnetPlusPlusDecoder(nn.Module):
    """The nested decoder, built from a static plan of which node feeds which.

    ``encoder_channels`` may hold 0 at the stride-2 level (level 1): the nodes that
    would carry that level have no channels and are empty, and no tensor of that
    level is ever concatenated.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        n_blocks: int = 5,
        use_norm: NormSpec = "batchnorm",
        attention_type: str | None = None,
        interpolation_mode: str = "nearest",
        center: bool = False,
    ) -> None:
        super().__init__()
        # Features f0 (deepest) .. f{depth}, the input level dropped. Node x_{d}_{l} sits
        # in column l (it outputs at f{l+1}'s resolution) at nesting depth d; column
        # ``depth`` is the single plain node that upsamples to the input resolution.
        channels = list(encoder_channels[1:])[::-1]
        depth = len(channels) - 1
        self.depth = depth
        # skip_of[l]: channels of the encoder feature column l concatenates.
        skip_of = [*channels[1:], 0]
        in_first = [channels[0], *decoder_channels[:-1]]
        kwargs: dict[str, Any] = {
            "use_norm": use_norm,
            "attention_type": attention_type,
            "interpolation_mode": interpolation_mode,
        }

        blocks: dict[str, nn.Module] = {}
        empty: set[str] = set()  # nodes of a 0-channel level: built empty (as SMP), never run
        for layer in range(depth):
            for d in range(layer + 1):
                if d == 0:
                    in_ch, out_ch = in_first[layer], decoder_channels[layer]
                else:
                    in_ch, out_ch = channels[layer], skip_of[layer]
                skip_ch = skip_of[layer] * (layer + 1 - d)
                blocks[f"x_{d}_{layer}"] = DecoderBlock(in_ch, skip_ch, out_ch, **kwargs)
                if out_ch == 0:
                    empty.add(f"x_{d}_{layer}")
        last = f"x_0_{depth}"
        blocks[last] = DecoderBlock(in_first[-1], 0, decoder_channels[-1], has_skip=False, **kwargs)
        self.blocks = nn.ModuleDict(blocks)
        # SMP's attributes: per-column widths, and a center that SMP builds (for vgg* encoders)
        # but never applies: its weights are in SMP's checkpoints, it is not in the graph.
        self.in_channels = in_first
        self.skip_channels = skip_of
        self.out_channels = list(decoder_channels)
        self.center: nn.Module = CenterBlock(channels[0], use_norm) if center else nn.Identity()

        # The wiring is fixed at construction, so forward is a flat loop the tracers
        # see through. Entries: (node, input, skips) in SMP's execution order (by
        # diagonal); inputs and skips name nodes or "f<i>", the i-th encoder feature
        # counted from the deepest. Empty nodes and 0-channel features never appear.
        plan: list[tuple[str, str, tuple[str, ...]]] = []
        for diagonal in range(depth):
            for d in range(depth - diagonal):
                layer = d + diagonal
                key = f"x_{d}_{layer}"
                if key in empty:
                    continue
                source = f"f{d}" if diagonal == 0 else f"x_{d}_{layer - 1}"
                skips = [f"x_{i}_{layer}" for i in range(d + 1, layer + 1) if f"x_{i}_{layer}" not in empty]
                if skip_of[layer] > 0:
                    skips.append(f"f{layer + 1}")
                plan.append((key, source, tuple(skips)))
        plan.append((last, f"x_0_{depth - 1}", ()))
        self.plan = plan

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = list(features[1:])[::-1]
        values: dict[str, torch.Tensor] = {f"f{i}": f for i, f in enumerate(feats)}
        for key, source, skips in self.plan:
            values[key] = self.blocks[key](values[source], [values[s] for s in skips])
        return values[self.plan[-1][0]]


class UnetPlusPlus(SegmentationModel):
    """U-Net++ with any registered encoder; arguments and defaults as in SMP 0.6.

    Encoders without a stride-2 feature (transformers: 0 channels at level 1) are
    accepted and that level is left out; SMP refuses ``mit_b*`` by name but builds
    the same network for ``tu-`` transformers. Other 0-channel levels are refused.
    ``decoder_add_center_block`` is Unet's argument: SMP builds the center block for
    ``vgg*`` encoders by name, and, in U-Net++, never applies it (its weights load, its
    output is unused); by default (None) it follows SMP.
    """

    requires_divisible_input_shape = True
    # As SMP declares: the decoder's name-keyed node plan is not TorchScript code (trace or export it instead).
    _is_torch_scriptable = False
    segexport_only_arguments = ("decoder_add_center_block",)

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        decoder_use_norm: NormSpec = "batchnorm",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_attention_type: str | None = None,
        decoder_interpolation: str = "nearest",
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        aux_params: dict[str, Any] | None = None,
        decoder_add_center_block: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        decoder_use_norm = self._renamed_keyword(kwargs, "decoder_use_batchnorm", "decoder_use_norm", decoder_use_norm)
        check_common_args(
            "UnetPlusPlus", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(3, 4, 5)
        )
        check_decoder_channels("UnetPlusPlus", decoder_channels, encoder_depth)
        check_interpolation(decoder_interpolation)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs)
        empty = [i for i, c in enumerate(self.encoder.out_channels) if c == 0 and i >= 2]
        if empty:
            raise InvalidInputError(
                f"UnetPlusPlus cannot use encoder {encoder_name!r}: it has no features (0 channels) at level(s) "
                f"{empty}, and the nested decoder can only do without level 1 (stride 2), whose nodes it leaves out."
            )
        self.decoder = UnetPlusPlusDecoder(
            self.encoder.out_channels,
            decoder_channels,
            n_blocks=encoder_depth,
            use_norm=decoder_use_norm,
            attention_type=decoder_attention_type,
            interpolation_mode=decoder_interpolation,
            center=wants_center_block(encoder_name, decoder_add_center_block),
        )
        self.segmentation_head = SegmentationHead(decoder_channels[-1], classes, activation=activation, kernel_size=3)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"unetplusplus-{encoder_name}"
        self.initialize()

    @classmethod
    def complete_saved_arguments(
        cls, arguments: dict[str, Any], weight_keys: Callable[[], Iterable[str]]
    ) -> dict[str, Any]:
        return center_block_from_weights(arguments, weight_keys)
