"""DPT, Dense Prediction Transformer (arXiv:2103.13413).

Features of several ViT blocks (one stride throughout) are reassembled into a
stride 4, 8, 16, 32 pyramid, optionally using the class token ("readout"), then
fused from the deepest level up with residual conv units, each step doubling
the resolution.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segexport.checks import check_int
from segexport.errors import InputShapeError, InvalidInputError, closest

from .base import Activation, SegmentationModel, check_common_args, is_exporting, make_classification_head
from .encoders import TIMM_PREFIX, get_encoder

READOUTS = ("cat", "add", "ignore")


class ReadoutConcatBlock(nn.Module):
    """Concatenate the first prefix (class) token to every patch token, project back with Linear + GELU."""

    def __init__(self, embed_dim: int, has_prefix_tokens: bool) -> None:
        super().__init__()
        in_features = 2 * embed_dim if has_prefix_tokens else embed_dim
        self.project = nn.Sequential(nn.Linear(in_features, embed_dim), nn.GELU())

    def forward(self, features: torch.Tensor, prefix_tokens: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if prefix_tokens is not None:
            tokens = torch.cat([tokens, prefix_tokens[:, :1].expand_as(tokens)], dim=2)
        tokens = self.project(tokens)
        return tokens.transpose(1, 2).reshape(batch, -1, height, width)


class ReadoutAddBlock(nn.Module):
    """Add the mean of the prefix tokens to every patch token."""

    def forward(self, features: torch.Tensor, prefix_tokens: torch.Tensor | None = None) -> torch.Tensor:
        if prefix_tokens is None:
            return features
        return features + prefix_tokens.mean(dim=1)[:, :, None, None]


class ReadoutIgnoreBlock(nn.Module):
    """Leave the patch tokens as they are."""

    def forward(self, features: torch.Tensor, prefix_tokens: torch.Tensor | None = None) -> torch.Tensor:
        return features


class ReassembleBlock(nn.Module):
    """1x1 projection, resampling by ``upsample_factor``, then a 3x3 conv to the fusion width.

    Factors above 1 use a transposed conv, below 1 a strided 3x3 conv; SMP rounds
    the factor (or its inverse) down to an integer kernel/stride, and so do we.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, upsample_factor: float) -> None:
        super().__init__()
        self.project_to_out_channel = nn.Conv2d(in_channels, mid_channels, 1)
        if upsample_factor > 1:
            factor = int(upsample_factor)
            self.upsample: nn.Module = nn.ConvTranspose2d(mid_channels, mid_channels, factor, stride=factor)
        elif upsample_factor == 1:
            self.upsample = nn.Identity()
        else:
            self.upsample = nn.Conv2d(mid_channels, mid_channels, 3, stride=int(1 / upsample_factor), padding=1)
        self.project_to_feature_dim = nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_to_feature_dim(self.upsample(self.project_to_out_channel(x)))


class ResidualConvBlock(nn.Module):
    """Two pre-activation ReLU → 3x3 conv → BN, plus the input."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False)
        self.batch_norm_1 = nn.BatchNorm2d(feature_dim)
        self.conv_2 = nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False)
        self.batch_norm_2 = nn.BatchNorm2d(feature_dim)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.batch_norm_1(self.conv_1(self.activation(x)))
        out = self.batch_norm_2(self.conv_2(self.activation(out)))
        return out + x


class FusionBlock(nn.Module):
    """Refine a level, add the fused deeper level, refine again, upsample x2 and project."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.residual_conv_block1 = ResidualConvBlock(feature_dim)
        self.residual_conv_block2 = ResidualConvBlock(feature_dim)
        self.project = nn.Conv2d(feature_dim, feature_dim, 1)
        self.activation = nn.ReLU()  # unused in forward; kept because SMP has it (no weights either way)

    def forward(self, feature: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        feature = self.residual_conv_block1(feature)
        if previous is not None:
            feature = feature + previous
        feature = self.residual_conv_block2(feature)
        feature = F.interpolate(feature, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(feature)


class DPTDecoder(nn.Module):
    """Readout → reassemble each block feature to stride 4, 8, 16, ... → fuse from the deepest up.

    The output has stride 2 relative to the input (with patch-16 ViTs and 4 features).
    """

    def __init__(
        self,
        encoder_out_channels: Sequence[int],
        encoder_output_strides: Sequence[int],
        encoder_has_prefix_tokens: bool,
        readout: str = "cat",
        intermediate_channels: Sequence[int] = (256, 512, 1024, 1024),
        fusion_channels: int = 256,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module]
        if readout == "cat":
            blocks = [ReadoutConcatBlock(c, encoder_has_prefix_tokens) for c in encoder_out_channels]
        elif readout == "add":
            blocks = [ReadoutAddBlock() for _ in encoder_out_channels]
        else:
            blocks = [ReadoutIgnoreBlock() for _ in encoder_out_channels]
        self.projection_blocks = nn.ModuleList(blocks)
        # Feature i goes to stride 2**(i + 2): 4, 8, 16, 32, ...
        factors = [stride / 2 ** (i + 2) for i, stride in enumerate(encoder_output_strides)]
        self.reassemble_blocks = nn.ModuleList(
            ReassembleBlock(c, mid, fusion_channels, f)
            for c, mid, f in zip(encoder_out_channels, intermediate_channels, factors)
        )
        self.fusion_blocks = nn.ModuleList(FusionBlock(fusion_channels) for _ in encoder_out_channels)

    def forward(self, features: list[torch.Tensor], prefix_tokens: list[torch.Tensor | None]) -> torch.Tensor:
        levels = [
            reassemble(readout(feature, tokens))
            for readout, reassemble, feature, tokens in zip(
                self.projection_blocks, self.reassemble_blocks, features, prefix_tokens
            )
        ]
        levels = levels[::-1]  # deepest first
        fused = self.fusion_blocks[0](levels[0])
        for fusion, level in zip(self.fusion_blocks[1:], levels[1:]):
            fused = fusion(level, fused)
        return fused


class DPTSegmentationHead(nn.Module):
    """3x3 conv → BN → ReLU → dropout → 1x1 conv to classes, bilinear upsampling, activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        activation: str | Callable[..., nn.Module] | None = None,
        kernel_size: int = 3,
        upsampling: float = 2.0,
    ) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.1),
            nn.Conv2d(in_channels, out_channels, 1),
        )
        self.activation = Activation(activation)
        self.upsampling_factor = upsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.head(x), scale_factor=self.upsampling_factor, mode="bilinear", align_corners=True)
        return self.activation(x)


def _is_vit_style(encoder: nn.Module) -> bool:
    """True when ``encoder`` follows the ViT encoder contract DPT builds on (see encoders.timm_vit)."""
    return all(hasattr(encoder, a) for a in ("output_strides", "has_prefix_tokens", "out_channels", "output_stride"))


class DPT(SegmentationModel):
    """DPT with a ViT-style encoder; arguments and defaults as in SMP 0.6.

    ``tu-<timm ViT>`` encoders are built with :mod:`.encoders.timm_vit`; a registered
    encoder works too if it follows the same contract (``forward`` returning
    ``(features, prefix_tokens)``, ``out_channels``/``output_strides`` per feature,
    ``has_prefix_tokens``). ViTs built for one size only take that size: pass
    ``img_size=...`` or ``dynamic_img_size=True`` (timm kwargs) for others.
    """

    # As SMP declares: the ViT encoder (timm's forward_intermediates) is not TorchScript code.
    _is_torch_scriptable = False

    def __init__(
        self,
        encoder_name: str = "tu-vit_base_patch16_224.augreg_in21k",
        encoder_depth: int = 4,
        encoder_weights: str | None = "imagenet",
        encoder_output_indices: Sequence[int] | None = None,
        decoder_readout: str = "cat",
        decoder_intermediate_channels: Sequence[int] = (256, 512, 1024, 1024),
        decoder_fusion_channels: int = 256,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | Callable[..., nn.Module] | None = None,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(encoder_depth, int) or isinstance(encoder_depth, bool) or encoder_depth < 1:
            raise InvalidInputError(
                f"encoder_depth {encoder_depth!r} is out of range for DPT; allowed: 1 up to the encoder's number of blocks."
            )
        # The upper bound of the depth is the encoder's block count, checked by the encoder.
        check_common_args("DPT", classes=classes, in_channels=in_channels, encoder_depth=encoder_depth, allowed_depths=(encoder_depth,))
        if decoder_readout not in READOUTS:
            raise InvalidInputError(
                f"Unknown decoder_readout {decoder_readout!r}; allowed: {', '.join(READOUTS)}.{closest(str(decoder_readout), READOUTS)}"
            )
        if len(decoder_intermediate_channels) != encoder_depth:
            raise InvalidInputError(
                f"decoder_intermediate_channels {tuple(decoder_intermediate_channels)!r} has "
                f"{len(decoder_intermediate_channels)} entries but DPT with encoder_depth={encoder_depth} needs exactly "
                f"{encoder_depth} (one per encoder feature)."
            )
        fusion = check_int("DPT's decoder_fusion_channels", decoder_fusion_channels)

        self.encoder = _build_vit_encoder(
            encoder_name, in_channels, encoder_depth, encoder_weights, encoder_output_indices, **kwargs
        )
        strides = [int(st) for st in self.encoder.output_strides]
        if any(st < 1 or st & (st - 1) for st in strides):
            # Reassembly resamples stride s to 4, 8, 16... by int(s / 2**k): only exact for powers of two
            # (SMP builds such models, then fails in forward on mismatched sizes).
            raise InvalidInputError(
                f"DPT needs encoder features at a power-of-two stride (patch size 8, 16, 32...); encoder "
                f"{encoder_name!r} has strides {strides}."
            )
        if not self.encoder.has_prefix_tokens and decoder_readout != "ignore":
            warnings.warn(
                f"Encoder {encoder_name!r} has no prefix tokens (e.g. cls_token) but decoder_readout is "
                f"{decoder_readout!r}; decoder_readout='ignore' is recommended.",
                UserWarning,
                stacklevel=2,
            )
        self.decoder = DPTDecoder(
            self.encoder.out_channels,
            self.encoder.output_strides,
            self.encoder.has_prefix_tokens,
            readout=decoder_readout,
            intermediate_channels=decoder_intermediate_channels,
            fusion_channels=fusion,
        )
        self.segmentation_head = DPTSegmentationHead(fusion, classes, activation=activation, kernel_size=3, upsampling=2)
        self.classification_head = make_classification_head(self.encoder.out_channels[-1], aux_params)
        self.name = f"dpt-{encoder_name.removeprefix(TIMM_PREFIX)}"
        self.initialize()

    @property
    def required_stride(self) -> int:
        """The deepest reassembled level has stride ``2**(depth + 1)`` (32 with 4 features).

        Fusion upsamples it x2 onto the next level, which only lines up when H and W
        are multiples of that stride, not just of the patch size (SMP checks only the latter).
        """
        return max(int(self.encoder.output_stride), 2 ** (len(self.encoder.out_channels) + 1))

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Divisible by :attr:`required_stride`, and the ViT's own size when it is built for one."""
        super().check_input_shape(x)
        if getattr(self.encoder, "is_fixed_input_size", False) and self.encoder.input_size:
            want_h, want_w = (int(s) for s in self.encoder.input_size[-2:])
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if (h, w) != (want_h, want_w):
                raise InputShapeError(
                    f"Input size {h}x{w} does not fit DPT's encoder, which is built for {want_h}x{want_w} only; "
                    "build the model with img_size=(H, W) or dynamic_img_size=True (timm kwargs) for other sizes."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # The shared forward assumes a list of features; ViT encoders also return prefix tokens.
        if not is_exporting():
            self.check_input_shape(x)
        features, prefix_tokens = self.encoder(x)
        mask = self.segmentation_head(self.decoder(features, prefix_tokens))
        if self.classification_head is not None:
            return mask, self.classification_head(features[-1])
        return mask


def _not_vit_style(name: str, kind: str) -> InvalidInputError:
    return InvalidInputError(
        f"DPT needs a ViT-style encoder (features of transformer blocks plus prefix tokens, with "
        f"output_strides and has_prefix_tokens); encoder {name!r} is a {kind}. "
        "Use a timm ViT such as 'tu-vit_tiny_patch16_224' or 'tu-vit_base_patch16_224.augreg_in21k'."
    )


def _build_vit_encoder(
    name: str,
    in_channels: int,
    depth: int,
    weights: str | None,
    output_indices: Sequence[int] | None,
    **kwargs: Any,
) -> nn.Module:
    """The ViT-style encoder for ``name``; an error naming what is missing when it is not one."""
    if name.startswith(TIMM_PREFIX):  # the timm namespace, as in encoders.get_encoder
        from .encoders.timm_vit import create_timm_vit_encoder

        return create_timm_vit_encoder(
            name[len(TIMM_PREFIX) :], in_channels, depth, weights, output_indices, **kwargs
        )
    if output_indices is not None:
        kwargs = {**kwargs, "output_indices": output_indices}
    try:
        encoder = get_encoder(name, in_channels=in_channels, depth=depth, weights=weights, **kwargs)
    except InvalidInputError:
        # ViT keywords (dynamic_img_size, ...) that a CNN refuses: say that DPT needs a ViT, the real problem.
        if kwargs:
            plain = get_encoder(name, in_channels=in_channels, depth=depth, weights=None)
            if not _is_vit_style(plain):
                raise _not_vit_style(name, type(plain).__name__) from None
        raise
    if not _is_vit_style(encoder):
        raise _not_vit_style(name, type(encoder).__name__)
    return encoder
