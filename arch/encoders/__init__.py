"""The encoder registry: name → encoder class, constructor params and pretrained settings.

Adding a family means one module that defines a ``{name: EncoderEntry}`` dict plus
one line in ``_FAMILIES`` below. Users add their own with :func:`register_encoder`.
Any timm backbone is available as ``tu-<timm name>`` without registration.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from segexport.errors import InvalidInputError, UnknownNameError, unknown

from ._base import EncoderEntry
from .densenet import densenet_encoders
from .dpn import dpn_encoders
from .efficientnet import efficientnet_encoders
from .inceptionresnetv2 import inceptionresnetv2_encoders
from .inceptionv4 import inceptionv4_encoders
from .mix_transformer import mix_transformer_encoders
from .mobilenet import mobilenet_encoders
from .mobileone import mobileone_encoders
from .renamed import renamed_encoder
from .resnet import resnet_encoders
from .senet import senet_encoders
from .timm_efficientnet import timm_efficientnet_encoders
from .timm_sknet import timm_sknet_encoders
from .timm_universal import TimmUniversalEncoder, create_timm_encoder, timm_pretrained_settings
from .timm_vit import TimmViTEncoder
from .vgg import vgg_encoders
from .weights import PretrainedSettings, fetch_pretrained, load_state_dict_file, preprocess_input
from .xception import xception_encoders

TIMM_PREFIX = "tu-"


_FAMILIES: tuple[dict[str, EncoderEntry], ...] = (
    resnet_encoders,
    dpn_encoders,
    vgg_encoders,
    senet_encoders,
    densenet_encoders,
    inceptionresnetv2_encoders,
    inceptionv4_encoders,
    xception_encoders,
    mobilenet_encoders,
    efficientnet_encoders,
    timm_efficientnet_encoders,
    timm_sknet_encoders,
    mix_transformer_encoders,
    mobileone_encoders,
)

ENCODERS: dict[str, EncoderEntry] = {name: entry for family in _FAMILIES for name, entry in family.items()}


def register_encoder(
    name: str,
    cls: type[nn.Module],
    params: dict[str, Any] | None = None,
    pretrained: dict[str, PretrainedSettings] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Make ``cls(**params, depth=...)`` available as encoder ``name`` in every architecture."""
    if name.startswith(TIMM_PREFIX):
        raise InvalidInputError(f"Encoder names starting with {TIMM_PREFIX!r} are reserved for timm models; got {name!r}.")
    if name in ENCODERS and not overwrite:
        raise InvalidInputError(f"Encoder {name!r} is already registered; pass overwrite=True to replace it.")
    ENCODERS[name] = EncoderEntry(cls, dict(params or {}), dict(pretrained or {}))


def list_encoders() -> list[str]:
    """Registered encoder names (timm models come on top as ``tu-<name>``)."""
    return sorted(ENCODERS)


def get_encoder_names() -> list[str]:
    """Registered encoder names in registration order, as SMP's ``get_encoder_names``."""
    return list(ENCODERS)


def get_entry(name: str) -> EncoderEntry:
    if name not in ENCODERS:
        # A KeyError too, as SMP raises for an unknown encoder.
        raise UnknownNameError(*unknown("encoder", name, [*ENCODERS, "tu-<any timm model>"]).args)
    return ENCODERS[name]


def get_encoder(
    name: str,
    in_channels: int = 3,
    depth: int = 5,
    weights: str | bool | None = None,
    output_stride: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build encoder ``name`` with ``depth`` stages, ``in_channels`` inputs and ``weights``.

    ``weights`` is None (random), a registered name such as ``"imagenet"``, or a
    path to a local state_dict (.pth/.pt/.safetensors) of this encoder.
    """
    name = renamed_encoder(name)
    if name.startswith(TIMM_PREFIX):
        return create_timm_encoder(
            name[len(TIMM_PREFIX) :],
            in_channels=in_channels,
            depth=depth,
            weights=weights,
            output_stride=output_stride,
            **kwargs,
        )
    entry = get_entry(name)
    if kwargs:
        # SMP passes extra keywords to timm encoders only and ignores them here; so do we, but say so.
        warnings.warn(
            f"Encoder {name!r} ignores the keyword arguments {', '.join(sorted(kwargs))}: extra encoder "
            "keywords apply to 'tu-' (timm) encoders only.",
            UserWarning,
            stacklevel=2,
        )
    max_depth = getattr(entry.cls, "max_depth", 5)
    if not isinstance(depth, int) or not 1 <= depth <= max_depth:
        raise InvalidInputError(f"encoder_depth {depth!r} is out of range for encoder {name!r}; allowed: 1..{max_depth}.")
    encoder = entry.cls(**copy.deepcopy(entry.params), depth=depth)
    state_dict = _resolve_weights(name, entry, weights)
    if state_dict is not None:
        load_encoder_state_dict(encoder, state_dict, source=str(weights))
    if in_channels != 3:
        if not hasattr(encoder, "set_in_channels"):
            raise InvalidInputError(f"Encoder {name!r} cannot take in_channels={in_channels}; it only takes 3.")
        encoder.set_in_channels(in_channels, pretrained=state_dict is not None)
    if output_stride != 32:
        if not hasattr(encoder, "make_dilated"):
            raise InvalidInputError(f"Encoder {name!r} cannot reach output stride {output_stride}; allowed: 32.")
        encoder.make_dilated(output_stride)
    return encoder


def _resolve_weights(name: str, entry: EncoderEntry, weights: str | bool | None) -> dict | None:
    if weights is None or weights is False:
        return None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return load_state_dict_file(weights)
    if isinstance(weights, str) and weights in entry.pretrained:
        return fetch_pretrained(entry.pretrained[weights])
    allowed = [*entry.pretrained, "None", "<path to a local state_dict>"]
    raise UnknownNameError(*unknown(f"encoder_weights for encoder {name!r}", weights, allowed).args)


def load_encoder_state_dict(encoder: nn.Module, state_dict: dict, source: str) -> None:
    """Load encoder weights strictly, ignoring a classifier the encoder does not have."""
    state_dict = {k.removeprefix("encoder."): v for k, v in state_dict.items()}
    own = encoder.state_dict()
    dropped = {k for k in state_dict if k not in own and k.split(".")[0] in ("fc", "classifier", "head", "_fc", "last_linear", "linear")}
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise InvalidInputError(
            f"Weights {source!r} do not fit the encoder: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}."
        )
    encoder.load_state_dict(state_dict)


def get_pretrained_settings(name: str, weights: str | None = "imagenet") -> PretrainedSettings:
    """Normalization settings for ``name``: its registered weights, timm's config, or ImageNet's."""
    name = renamed_encoder(name)
    if name.startswith(TIMM_PREFIX):
        return timm_pretrained_settings(name[len(TIMM_PREFIX) :])
    entry = get_entry(name)
    if isinstance(weights, str) and weights in entry.pretrained:
        return entry.pretrained[weights]
    if entry.pretrained:
        return next(iter(entry.pretrained.values()))
    return PretrainedSettings()


def get_preprocessing_params(encoder_name: str, pretrained: str = "imagenet") -> dict[str, Any]:
    """How inputs must be normalised for ``encoder_name``'s ``pretrained`` weights, as SMP's dict.

    ``{"input_space": "RGB", "input_range": [0, 1], "mean": [...], "std": [...]}``, read from the
    registry (SMP downloads it from the hub; this needs no network). ``tu-`` encoders take timm's
    config of the model (its pretrained tag, if the name has one).
    """
    name = renamed_encoder(encoder_name)
    if name.startswith(TIMM_PREFIX):
        import timm

        timm_name = name[len(TIMM_PREFIX) :]
        settings = timm_pretrained_settings(timm_name)
        if not timm.models.is_model_pretrained(timm_name.split(".", 1)[0]):
            raise InvalidInputError(f"timm model {timm_name!r} has no pretrained weights, so no preprocessing parameters.")
    else:
        entry = get_entry(name)
        if pretrained not in entry.pretrained:
            allowed = list(entry.pretrained) or ["none: this encoder has no pretrained weights"]
            raise unknown(f"pretrained weights for encoder {name!r}", pretrained, allowed)
        settings = entry.pretrained[pretrained]
    return {
        "input_space": settings.input_space,
        "input_range": list(settings.input_range),
        "mean": list(settings.mean),
        "std": list(settings.std),
    }


def get_preprocessing_fn(encoder_name: str, pretrained: str = "imagenet") -> Callable[..., Any]:
    """:func:`preprocess_input` bound to :func:`get_preprocessing_params` of ``encoder_name``, as in SMP."""
    return functools.partial(preprocess_input, **get_preprocessing_params(encoder_name, pretrained=pretrained))


__all__ = [
    "ENCODERS",
    "EncoderEntry",
    "PretrainedSettings",
    "TimmUniversalEncoder",
    "TimmViTEncoder",
    "get_encoder",
    "get_encoder_names",
    "get_preprocessing_fn",
    "get_preprocessing_params",
    "get_pretrained_settings",
    "list_encoders",
    "load_encoder_state_dict",
    "preprocess_input",
    "register_encoder",
]
