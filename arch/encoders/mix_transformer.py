"""Mix Transformer (MiT) encoders of SegFormer (arXiv:2105.15203), SMP 0.6's state_dict layout.

Four stages of overlapping patch embedding + efficient self-attention (keys and
values spatially reduced by ``sr_ratio``) + Mix-FFN (an MLP with a depthwise 3x3
conv). Features come at strides 4, 8, 16 and 32; the stride-2 level of the
encoder contract is reported with 0 channels (:func:`missing_stride2_level`), so
decoders skip it and exported graphs hold no zero-sized tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from segexport.errors import InvalidInputError

from ._base import EncoderEntry, EncoderMixin, missing_stride2_level
from .weights import imagenet


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of token ``(B, N, C)`` or image ``(B, C, H, W)`` tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            # Channels last for the normalisation, then back: plain permutes trace and export everywhere.
            x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


def _init_weights(module: nn.Module) -> None:
    """SegFormer's init: truncated-normal linears, unit norms, fan-out normal convs."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _tokens_to_image(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, H*W, C)`` tokens → ``(B, C, H, W)``."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class DWConv(nn.Module):
    """Depthwise 3x3 conv applied to tokens laid back out on their grid (Mix-FFN's position cue)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.dwconv(_tokens_to_image(x, height, width)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Mix-FFN: linear → depthwise conv → GELU → linear."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), height, width)))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-times smaller grid.

    Written as matmul → softmax → matmul rather than a fused kernel: every exporter
    (ONNX opsets without an Attention op, TorchScript, TensorRT) takes it as is, and
    the attention matrix is small because keys are spatially reduced.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        # Identity placeholders keep one forward for both cases (and SMP's key layout: no sr/norm keys at ratio 1).
        self.sr: nn.Module = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else nn.Identity()
        self.norm: nn.Module = LayerNorm(dim) if sr_ratio > 1 else nn.Identity()

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        q = self.q(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(_tokens_to_image(x, height, width)).flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block on an image: attention and Mix-FFN, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
        sr_ratio: int,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, sr_ratio)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        x = x + self.drop_path(self.mlp(self.norm2(x), height, width))
        return _tokens_to_image(x, height, width)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with a kernel larger than its stride (patches overlap), then LayerNorm."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = LayerNorm(embed_dim)  # eps 1e-5 here, unlike the blocks' 1e-6 (as in SegFormer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MixVisionTransformerEncoder(nn.Module, EncoderMixin):
    """MiT-b0..b5 returning ``depth + 1`` features: input, empty stride-2 level, strides 4..32.

    Stage ``i`` (1-based) holds ``patch_embed{i}``, ``block{i}`` and ``norm{i}``, which
    is SMP's (and SegFormer's) key layout, so their checkpoints load strictly.
    """

    max_depth = 5
    supported_output_strides = (32,)

    def __init__(
        self,
        out_channels: Sequence[int],
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        depths: Sequence[int],
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        depth: int = 5,
    ) -> None:
        super().__init__()
        #: Blocks per stage (SMP's attribute).
        self.depths = list(depths)
        self._out_channels = list(out_channels)
        self._depth = depth
        self._in_channels = 3
        self._output_stride = 32
        # Stochastic depth grows linearly over all blocks of all stages.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        in_chans = 3
        for i in range(4):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(patch, stride, in_chans, embed_dims[i]))
            first = sum(depths[:i])
            blocks = [
                Block(
                    embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias, drop_rate, attn_drop_rate,
                    rates[first + j], sr_ratios[i], norm_eps,
                )
                for j in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.Sequential(*blocks))
            setattr(self, f"norm{i + 1}", LayerNorm(embed_dims[i], eps=norm_eps))
            in_chans = embed_dims[i]
        self.apply(_init_weights)

    def make_dilated(self, output_stride: int) -> None:
        """MiT cannot trade strides for dilation (its patch embeddings are the downsampling)."""
        if output_stride != 32:
            raise InvalidInputError(
                f"Encoder {type(self).__name__} cannot reach output stride {output_stride}; allowed: 32 only "
                "(Mix Transformer encoders do not support dilation)."
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x, missing_stride2_level(x)]
        stages = self.forward_features(x, self._depth - 1)
        features.extend(stages)
        return features[: self._depth + 1]

    def forward_features(self, x: torch.Tensor, stages: int = 4) -> list[torch.Tensor]:
        """The first ``stages`` stage outputs (strides 4, 8, 16, 32), NCHW, as SMP's ``forward_features``.

        One branch per stage: TorchScript compiles this as written.
        """
        features: list[torch.Tensor] = []
        if stages >= 1:
            x = self.norm1(self.block1(self.patch_embed1(x))).contiguous()
            features.append(x)
        if stages >= 2:
            x = self.norm2(self.block2(self.patch_embed2(x))).contiguous()
            features.append(x)
        if stages >= 3:
            x = self.norm3(self.block3(self.patch_embed3(x))).contiguous()
            features.append(x)
        if stages >= 4:
            x = self.norm4(self.block4(self.patch_embed4(x))).contiguous()
            features.append(x)
        return features

    def reset_drop_path(self, drop_path_rate: float) -> None:
        """Set stochastic depth to grow linearly from 0 to ``drop_path_rate`` over all blocks (SMP's method)."""
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        blocks = [block for stage in (self.block1, self.block2, self.block3, self.block4) for block in stage]
        for block, rate in zip(blocks, rates):
            block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()


def _hub(name: str, revision: str) -> dict:
    return {"imagenet": imagenet(repo_id=f"smp-hub/{name}.imagenet", revision=revision)}


def _entry(name: str, revision: str, embed_dims: list[int], depths: list[int]) -> EncoderEntry:
    params: dict[str, Any] = {
        "out_channels": [3, 0, *embed_dims],
        "embed_dims": embed_dims,
        "num_heads": [1, 2, 5, 8],
        "depths": depths,
    }
    return EncoderEntry(MixVisionTransformerEncoder, params, _hub(name, revision))


_WIDE = [64, 128, 320, 512]

mix_transformer_encoders: dict[str, EncoderEntry] = {
    "mit_b0": _entry("mit_b0", "9ce53d104d92d75aabb00aae70677aaab67e7c84", [32, 64, 160, 256], [2, 2, 2, 2]),
    "mit_b1": _entry("mit_b1", "a04bf4f13a549bce677cf79b04852e7510782817", _WIDE, [2, 2, 2, 2]),
    "mit_b2": _entry("mit_b2", "868ab6f13871dcf8c3d9f90ee4519403475b65ef", _WIDE, [3, 4, 6, 3]),
    "mit_b3": _entry("mit_b3", "32558d12a65f1daa0ebcf4f4053c4285e2c1cbda", _WIDE, [3, 4, 18, 3]),
    "mit_b4": _entry("mit_b4", "3a3454e900a4b4f11dd60eeb59101a9a1a36b017", _WIDE, [3, 8, 27, 3]),
    "mit_b5": _entry("mit_b5", "ced04d96c586b6297fd59a7a1e244fc78fdb6531", _WIDE, [3, 6, 40, 3]),
}
