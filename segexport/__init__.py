"""segexport: segmentation models (SMP-compatible) exported to ONNX, TensorRT and TorchScript,
each artifact validated for parity with eager PyTorch.

Public names are imported lazily so that ``segexport --help`` starts without torch.

``import segexport as smp`` stands in for ``import segmentation_models_pytorch as smp``: the
architectures, ``create_model``, ``from_pretrained`` and the ``encoders``, ``decoders``, ``base``,
``losses`` and ``metrics`` namespaces are reachable as in SMP 0.6 (tests/test_smp_api.py lists
what is intentionally absent, with the reason).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "create_model": "segexport.arch.registry",
    "list_architectures": "segexport.arch.registry",
    "register_architecture": "segexport.arch.registry",
    "MODEL_ARCHITECTURES_MAPPING": "segexport.arch.registry",
    "from_pretrained": "segexport.pretrained",
    "load_pretrained": "segexport.pretrained",
    "read_pretrained_config": "segexport.pretrained",
    "PretrainedConfig": "segexport.pretrained",
    "get_encoder": "segexport.arch.encoders",
    "list_encoders": "segexport.arch.encoders",
    "register_encoder": "segexport.arch.encoders",
    "get_pretrained_settings": "segexport.arch.encoders",
    "Unet": "segexport.arch.unet",
    "UnetPlusPlus": "segexport.arch.unetplusplus",
    "MAnet": "segexport.arch.manet",
    "Linknet": "segexport.arch.linknet",
    "FPN": "segexport.arch.fpn",
    "PSPNet": "segexport.arch.pspnet",
    "PAN": "segexport.arch.pan",
    "DeepLabV3": "segexport.arch.deeplabv3",
    "DeepLabV3Plus": "segexport.arch.deeplabv3",
    "UPerNet": "segexport.arch.upernet",
    "Segformer": "segexport.arch.segformer",
    "DPT": "segexport.arch.dpt",
    "build": "segexport.pipeline",
    "verify": "segexport.pipeline",
    "Bundle": "segexport.bundle",
    "SegexportError": "segexport.errors",
    "InvalidInputError": "segexport.errors",
    "ParityError": "segexport.errors",
    "ExportError": "segexport.errors",
    "InputShapeError": "segexport.errors",
    "UnknownNameError": "segexport.errors",
}

#: SMP's sub-namespaces → (module to import, module that holds SMP's names), imported on first access.
_NAMESPACES: dict[str, tuple[str, str]] = {
    "encoders": ("segexport.arch.encoders", "segexport.arch.encoders"),
    # smp.decoders.unet.Unet → segexport.arch.unet.Unet; the registry imports every architecture module.
    "decoders": ("segexport.arch.registry", "segexport.arch"),
    "base": ("segexport.arch.base", "segexport.arch.base"),
    "losses": ("segexport.losses", "segexport.losses"),
    "metrics": ("segexport.metrics", "segexport.metrics"),
}

if TYPE_CHECKING:
    from segexport.arch.encoders import get_encoder, get_pretrained_settings, list_encoders, register_encoder
    from segexport.arch.registry import MODEL_ARCHITECTURES_MAPPING, create_model, list_architectures, register_architecture
    from segexport.arch.deeplabv3 import DeepLabV3, DeepLabV3Plus
    from segexport.arch.dpt import DPT
    from segexport.arch.fpn import FPN
    from segexport.arch.linknet import Linknet
    from segexport.arch.manet import MAnet
    from segexport.arch.pan import PAN
    from segexport.arch.pspnet import PSPNet
    from segexport.arch.segformer import Segformer
    from segexport.arch.unet import Unet
    from segexport.arch.unetplusplus import UnetPlusPlus
    from segexport.arch.upernet import UPerNet
    from segexport.bundle import Bundle
    from segexport.errors import (
        ExportError,
        InputShapeError,
        InvalidInputError,
        ParityError,
        SegexportError,
        UnknownNameError,
    )
    from segexport.pipeline import build, verify
    from segexport.pretrained import PretrainedConfig, from_pretrained, load_pretrained, read_pretrained_config


def __getattr__(name: str) -> Any:
    if name in _NAMESPACES:
        first, holder = _NAMESPACES[name]
        importlib.import_module(first)
        value: Any = importlib.import_module(holder)
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'segexport' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_NAMESPACES})


__all__ = sorted(_LAZY)
