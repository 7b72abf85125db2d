"""ViT-style timm backbones (one stride throughout) as DPT encoders, SMP 0.6's TimmViTEncoder layout.

The whole timm model (classifier included, unused) lives under ``model``, so SMP
DPT checkpoints load strictly. Features are taken from chosen transformer blocks
with timm's ``forward_intermediates``.

What :meth:`TimmViTEncoder.forward` returns (the contract DPT's decoder builds on)::

    features, prefix_tokens = encoder(x)          # x: (B, in_channels, H, W)
    features[i]       # (B, out_channels[i], H / output_strides[i], W / output_strides[i]), NCHW,
                      # the raw output of block output_indices[i] (no final norm), patch tokens only
    prefix_tokens[i]  # (B, num_prefix_tokens, out_channels[i]): class/register/distillation
                      # tokens of that block (the "readout" DPT can cat/add), or None for
                      # every i when the model has none (has_prefix_tokens is False)

Both lists have ``depth`` entries, shallowest block first. Unlike pyramid
encoders there is no input entry and no per-level halving: ``out_channels`` and
``output_strides`` have one entry per returned feature (all strides equal the
patch size), and ``output_stride`` is that stride.

Input size: ViTs built for a fixed size (``is_fixed_input_size``, ``input_size``)
only take that size; pass ``dynamic_img_size=True`` (a timm kwarg) to take any
multiple of the patch size (position embeddings are resampled in the graph).

Eager runs use timm's fused attention as SMP does (identical outputs); while
exporting, attention takes timm's plain matmul/softmax path instead (see
:func:`.timm_universal.export_friendly_attention`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segexport.errors import InvalidInputError

from .timm_universal import check_timm_name, create_timm_model, export_friendly_attention, merge_timm_kwargs


def sample_block_indices_uniformly(n: int, total_blocks: int) -> list[int]:
    """``n`` block indices spread evenly, ending at the last block (SMP's default choice)."""
    return [int(total_blocks / n * i) - 1 for i in range(1, n + 1)]


def _check_output_indices(output_indices: Sequence[int], total_blocks: int, depth: int) -> list[int]:
    if not isinstance(output_indices, (list, tuple)):
        raise InvalidInputError(
            f"encoder_output_indices must be a list/tuple of block indices or None; got {output_indices!r}."
        )
    if len(output_indices) != depth:
        raise InvalidInputError(
            f"encoder_output_indices {tuple(output_indices)!r} has {len(output_indices)} entries but "
            f"encoder_depth is {depth}; give exactly one block index per feature."
        )
    for index in output_indices:
        if not isinstance(index, int) or not -total_blocks <= index < total_blocks:
            raise InvalidInputError(
                f"encoder_output_indices entry {index!r} is out of range; the model has {total_blocks} blocks, "
                f"allowed: {-total_blocks}..{total_blocks - 1}."
            )
    positive = [i % total_blocks for i in output_indices]
    # forward_intermediates returns blocks in model order, once each: anything else would
    # silently reorder or drop features.
    if any(b <= a for a, b in zip(positive, positive[1:])):
        raise InvalidInputError(
            f"encoder_output_indices {tuple(output_indices)!r} must name distinct blocks in increasing order."
        )
    return list(output_indices)


class TimmViTEncoder(nn.Module):
    """Features of ``depth`` transformer blocks of a timm ViT, plus their prefix tokens (see module docstring)."""

    # SMP's capability flags: timm's forward_intermediates is not TorchScript-compatible.
    _is_torch_scriptable: bool = False
    _is_torch_exportable: bool = True
    _is_torch_compilable: bool = True
    __jit_unused_properties__ = ["depth", "in_channels", "output_indices"]

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        depth: int = 4,
        weights: str | bool | os.PathLike[str] | None = None,
        output_indices: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise InvalidInputError(f"encoder_depth {depth!r} is out of range for ViT encoders; allowed: >= 1.")
        output_stride = kwargs.pop("output_stride", None)
        if output_stride is not None:
            raise InvalidInputError(
                f"ViT encoders cannot be dilated; got output_stride={output_stride!r}, allowed: None "
                "(the stride is the model's patch size)."
            )
        check_timm_name(name)
        self.name = name
        self.model = create_timm_model(name, weights, **merge_timm_kwargs({"in_chans": in_channels}, kwargs))
        if not hasattr(self.model, "forward_intermediates"):
            raise InvalidInputError(
                f"timm model {name!r} has no forward_intermediates, so its block features cannot be taken; "
                "use a ViT-style timm model (vit_*, deit_*, eva*...)."
            )
        feature_info = self.model.feature_info
        total_blocks = len(feature_info)
        if depth > total_blocks:
            raise InvalidInputError(
                f"encoder_depth {depth} exceeds the {total_blocks} blocks of timm model {name!r}; "
                f"allowed: 1..{total_blocks}."
            )
        if output_indices is None:
            output_indices = sample_block_indices_uniformly(depth, total_blocks)
        self._output_indices = _check_output_indices(output_indices, total_blocks, depth)
        self._num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self._has_cls_token = bool(getattr(self.model, "has_cls_token", False))
        self._in_channels = in_channels
        self._depth = depth

        #: Stride of each returned feature (all equal: the patch size).
        self.output_strides: list[int] = [int(feature_info[i]["reduction"]) for i in self._output_indices]
        #: The stride of the features, for input-size checks.
        self.output_stride: int = self.output_strides[-1]
        #: Channels of each returned feature (and of its prefix tokens).
        self.out_channels: list[int] = [int(feature_info[i]["num_chs"]) for i in self._output_indices]
        #: True when forward's ``prefix_tokens`` are tensors (class/register tokens), False when all None.
        self.has_prefix_tokens: bool = self._num_prefix_tokens > 0
        #: ``(C, H, W)`` the model was built for: timm's training size, or ``img_size`` when given.
        self.input_size = self.model.pretrained_cfg.get("input_size", None)
        built_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        if built_size is not None:
            self.input_size = (in_channels, *built_size)
        #: True when only ``input_size`` is accepted (build with ``dynamic_img_size=True`` to lift it).
        self.is_fixed_input_size: bool = bool(self.model.pretrained_cfg.get("fixed_input_size", False)) and not (
            kwargs.get("dynamic_img_size", False)
        )

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def output_indices(self) -> list[int]:
        """The blocks features are taken from (as given, negatives count from the end)."""
        return list(self._output_indices)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """``(features, prefix_tokens)``, ``depth`` entries each; see the module docstring."""
        with export_friendly_attention(self.model):
            if self.has_prefix_tokens:
                outputs = self.model.forward_intermediates(
                    x, indices=self._output_indices, intermediates_only=True, return_prefix_tokens=True
                )
                features = [out[0] for out in outputs]
                prefix_tokens: list[torch.Tensor | None] = [out[1] for out in outputs]
                return features, prefix_tokens
            features = list(self.model.forward_intermediates(x, indices=self._output_indices, intermediates_only=True))
        return features, [None] * len(features)


def create_timm_vit_encoder(
    name: str,
    in_channels: int = 3,
    depth: int = 4,
    weights: str | bool | os.PathLike[str] | None = None,
    output_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> TimmViTEncoder:
    """DPT's encoder for ``tu-<name>`` (pass ``name`` without the ``tu-`` prefix).

    Args:
        name: timm ViT-style model, optionally with a pretrained tag.
        in_channels: input channels (timm's ``in_chans``).
        depth: number of block features returned (SMP DPT's default: 4).
        weights: None (random), True/``"imagenet"``/a tag (timm download), or a local
            file with the timm model's state_dict.
        output_indices: the blocks to take (``encoder_output_indices``); None spreads
            ``depth`` of them evenly, ending at the last block.
        kwargs: passed on to ``timm.create_model`` (e.g. ``dynamic_img_size=True``, ``img_size=64``).
    """
    return TimmViTEncoder(name, in_channels, depth, weights, output_indices, **kwargs)
