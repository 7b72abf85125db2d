"""Building blocks shared by the decoders: conv-norm-relu, attention, activations, pooling.

Module layouts (and so state_dict keys) follow SMP 0.6, so that SMP checkpoints load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import InvalidInputError, closest

from .export_mode import is_exporting

NormSpec = Union[bool, str, dict[str, Any]]
NORM_TYPES = ("batchnorm", "identity", "layernorm", "instancenorm", "inplace")


def normalize_norm_spec(use_norm: NormSpec) -> dict[str, Any]:
    """Turn any accepted ``decoder_use_norm`` value into ``{"type": ..., **kwargs}``."""
    if use_norm is True:
        return {"type": "batchnorm"}
    if use_norm is False:
        return {"type": "identity"}
    if isinstance(use_norm, str):
        name = use_norm.lower()
        if name == "inplace":
            return {"type": "inplace", "activation": "leaky_relu", "activation_param": 0.0}
        if name in NORM_TYPES:
            return {"type": name}
        raise InvalidInputError(
            f"Unknown decoder_use_norm {use_norm!r}; allowed: True, False, {', '.join(NORM_TYPES)} "
            f"or a dict with a 'type'.{closest(name, NORM_TYPES)}"
        )
    if isinstance(use_norm, dict):
        if use_norm.get("type") not in NORM_TYPES:
            raise InvalidInputError(
                f"decoder_use_norm dict {use_norm!r} needs 'type' set to one of {', '.join(NORM_TYPES)}."
            )
        return dict(use_norm)
    raise InvalidInputError(
        f"decoder_use_norm must be a bool, a string ({', '.join(NORM_TYPES)}) or a dict with a 'type'; got {use_norm!r}."
    )


def get_norm_layer(use_norm: NormSpec, channels: int) -> nn.Module:
    """The normalization layer ``use_norm`` asks for, sized for ``channels``."""
    params = normalize_norm_spec(use_norm)
    kind = params.pop("type")
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, **params)
    if kind == "identity":
        return nn.Identity()
    if kind == "layernorm":
        return nn.LayerNorm(channels, **params)
    if kind == "instancenorm":
        return nn.InstanceNorm2d(channels, **params)
    try:
        from inplace_abn import InPlaceABN  # type: ignore[import-not-found]
    except ImportError as exc:
        raise InvalidInputError(
            "decoder_use_norm='inplace' needs the inplace_abn package (pip install inplace_abn)."
        ) from exc
    return InPlaceABN(channels, **params)


def _is_inplace_abn(module: nn.Module) -> bool:
    return type(module).__name__ == "InPlaceABN"


class Conv2dReLU(nn.Sequential):
    """Conv → norm → ReLU; the conv has a bias only when there is no norm (as SMP)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        stride: int = 1,
        use_norm: NormSpec = "batchnorm",
    ) -> None:
        norm = get_norm_layer(use_norm, out_channels)
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=isinstance(norm, nn.Identity)
        )
        act: nn.Module = nn.Identity() if _is_inplace_abn(norm) else nn.ReLU(inplace=True)
        super().__init__(conv, norm, act)


class CenterBlock(nn.Sequential):
    """Two conv-norm-ReLU on the deepest feature, keeping its width: the center of SMP's U-Net and U-Net++."""

    def __init__(self, channels: int, use_norm: NormSpec = "batchnorm") -> None:
        super().__init__(
            Conv2dReLU(channels, channels, 3, padding=1, use_norm=use_norm),
            Conv2dReLU(channels, channels, 3, padding=1, use_norm=use_norm),
        )


def wants_center_block(encoder_name: str, requested: bool | None) -> bool:
    """Whether a U-Net decoder gets a :class:`CenterBlock`: ``requested``, else SMP's rule (``vgg*`` encoders).

    SMP decides by the encoder's name and takes no argument, so its checkpoints of VGG
    U-Nets carry ``decoder.center.*`` weights; the same default makes them load strictly.
    """
    return encoder_name.startswith("vgg") if requested is None else bool(requested)


def center_block_from_weights(arguments: dict[str, Any], weight_keys: Callable[[], Iterable[str]]) -> dict[str, Any]:
    """A saved config without ``decoder_add_center_block`` (SMP's) has the center block iff its weights do."""
    if "decoder_add_center_block" in arguments:
        return arguments
    has_center = any(key.startswith("decoder.center.") for key in weight_keys())
    return {**arguments, "decoder_add_center_block": has_center}


class SCSEModule(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (arXiv:1808.08127)."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.cSE = nn.Sequential(
            AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // reduction, in_channels, 1),
            nn.Sigmoid(),
        )
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cSE(x) + x * self.sSE(x)


ATTENTION_TYPES = (None, "scse")


class Attention(nn.Module):
    """``None`` → identity, ``"scse"`` → :class:`SCSEModule`."""

    def __init__(self, name: str | None, **params: Any) -> None:
        super().__init__()
        if name is None:
            self.attention: nn.Module = nn.Identity()
        elif name == "scse":
            self.attention = SCSEModule(**params)
        else:
            raise InvalidInputError(
                f"Unknown decoder_attention_type {name!r}; allowed: None, 'scse'.{closest(str(name), ['scse'])}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


class ArgMax(nn.Module):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argmax(x, dim=self.dim)


class Clamp(nn.Module):
    def __init__(self, min: float = 0, max: float = 1) -> None:  # noqa: A002 - SMP's argument names
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.min, self.max)


ACTIVATIONS = ("identity", "sigmoid", "softmax", "softmax2d", "logsoftmax", "tanh", "argmax", "argmax2d", "clamp")


class Activation(nn.Module):
    """The output activation by SMP name, a callable returning a module, or None."""

    def __init__(self, name: str | Callable[..., nn.Module] | None, **params: Any) -> None:
        super().__init__()
        if name is None or name == "identity":
            self.activation: nn.Module = nn.Identity()
        elif name == "sigmoid":
            self.activation = nn.Sigmoid()
        elif name == "softmax2d":
            self.activation = nn.Softmax(dim=1, **params)
        elif name == "softmax":
            self.activation = nn.Softmax(**params)
        elif name == "logsoftmax":
            self.activation = nn.LogSoftmax(**params)
        elif name == "tanh":
            self.activation = nn.Tanh()
        elif name == "argmax":
            self.activation = ArgMax(**params)
        elif name == "argmax2d":
            self.activation = ArgMax(dim=1, **params)
        elif name == "clamp":
            self.activation = Clamp(**params)
        elif callable(name):
            self.activation = name(**params)
        else:
            raise InvalidInputError(
                f"Unknown activation {name!r}; allowed: None, {', '.join(ACTIVATIONS)} or a callable."
                f"{closest(str(name), ACTIVATIONS)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


def _window_means(x: torch.Tensor, dim: int, bins: int) -> torch.Tensor:
    """Adaptive average pooling along one axis, as explicit slices.

    Window ``i`` spans ``[floor(i*n/bins), ceil((i+1)*n/bins))`` exactly as in
    ``F.adaptive_avg_pool2d``, but the bounds are computed from the traced size,
    so the exported graph stays correct for every input size.
    """
    size = x.shape[dim]
    parts = []
    for i in range(bins):
        start = (i * size) // bins
        # ceil((i+1)*n/bins) with non-negative operands only: exporters lower floor division to
        # ONNX Div, which truncates toward zero, so a negated floor division would round the wrong way.
        end = ((i + 1) * size + bins - 1) // bins
        parts.append(x.narrow(dim, start, end - start).mean(dim=dim, keepdim=True))
    return torch.cat(parts, dim=dim)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` that exports for any input size.

    The legacy ONNX exporter cannot export adaptive pooling whose windows do not
    divide the input, and the dynamo exporter bakes the window indices of the
    example input. Under export mode we pool with size-derived slices instead.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if not is_exporting():
        return F.adaptive_avg_pool2d(x, (out_h, out_w))  # bit-identical to SMP in eager
    if (out_h, out_w) == (1, 1):
        return x.mean(dim=(2, 3), keepdim=True)
    return _window_means(_window_means(x, 2, out_h), 3, out_w)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` (a subclass, so code that looks for SMP's layer finds it) that exports for any input size.

    TorchScript compiles the plain ``F.adaptive_avg_pool2d`` path: a scripted
    model runs the same kernel as eager.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        return adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    """``nn.AdaptiveMaxPool2d`` to 1x1 (the aux head's ``pooling='max'``), exported as one ReduceMax.

    Only a global output is supported: it is the one size SMP builds it with.
    """

    def __init__(self, output_size: int = 1) -> None:
        if output_size not in (1, (1, 1)):
            raise InvalidInputError(f"AdaptiveMaxPool2d here pools globally only (output_size 1); got {output_size!r}.")
        super().__init__(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)
