"""The architecture registry: name → model class, with SMP's aliases.

Built-in architectures are listed in ``_BUILTIN``; users add theirs with
:func:`register_architecture`.
"""

from __future__ import annotations

from typing import Any

from segexport.errors import InvalidInputError, UnknownNameError, unknown

from .base import SegmentationModel
from .deeplabv3 import DeepLabV3, DeepLabV3Plus
from .dpt import DPT
from .fpn import FPN
from .linknet import Linknet
from .manet import MAnet
from .pan import PAN
from .pspnet import PSPNet
from .segformer import Segformer
from .unet import Unet
from .unetplusplus import UnetPlusPlus
from .upernet import UPerNet

_BUILTIN: dict[str, type[SegmentationModel]] = {
    "unet": Unet,
    "unetplusplus": UnetPlusPlus,
    "manet": MAnet,
    "linknet": Linknet,
    "fpn": FPN,
    "pspnet": PSPNet,
    "pan": PAN,
    "deeplabv3": DeepLabV3,
    "deeplabv3plus": DeepLabV3Plus,
    "upernet": UPerNet,
    "segformer": Segformer,
    "dpt": DPT,
}

ARCHITECTURES: dict[str, type[SegmentationModel]] = dict(_BUILTIN)
#: SMP's name for the registry (lower-case class name → class; the same keys as SMP's).
MODEL_ARCHITECTURES_MAPPING = ARCHITECTURES
ALIASES: dict[str, str] = {"unet++": "unetplusplus", "deeplabv3+": "deeplabv3plus"}


def canonical_name(name: str) -> str:
    """The registry key for ``name`` (case-insensitive, aliases resolved)."""
    key = str(name).lower()
    return ALIASES.get(key, key)


def register_architecture(name: str, cls: type[SegmentationModel], *, overwrite: bool = False) -> None:
    """Make ``cls`` available to :func:`create_model`, the CLI and the matrix as ``name``."""
    key = canonical_name(name)
    if key in ARCHITECTURES and not overwrite:
        raise InvalidInputError(f"Architecture {key!r} is already registered; pass overwrite=True to replace it.")
    ARCHITECTURES[key] = cls


def list_architectures() -> list[str]:
    """Registered architecture names, canonical spelling."""
    return sorted(ARCHITECTURES)


def get_architecture(name: str) -> type[SegmentationModel]:
    """The model class registered as ``name``."""
    key = canonical_name(name)
    if key not in ARCHITECTURES:
        # A KeyError too, as SMP's create_model raises.
        raise UnknownNameError(*unknown("architecture", name, [*ARCHITECTURES, *ALIASES]).args)
    return ARCHITECTURES[key]


def architecture_by_class_name(class_name: str) -> str:
    """The registry name of the architecture whose class is called ``class_name`` (SMP's ``_model_class``)."""
    matches = [name for name, cls in ARCHITECTURES.items() if cls.__name__ == class_name]
    if not matches:
        raise UnknownNameError(
            *unknown("model class", class_name, sorted({cls.__name__ for cls in ARCHITECTURES.values()})).args
        )
    return matches[0]


def create_model(
    arch: str,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    classes: int = 1,
    **kwargs: Any,
) -> SegmentationModel:
    """Build architecture ``arch`` by name, as SMP's ``create_model``."""
    cls = get_architecture(arch)
    return cls(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels, classes=classes, **kwargs)
