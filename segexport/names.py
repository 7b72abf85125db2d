"""The built-in names, as a static table: the CLI answers a typo or ``list`` without importing torch.

A test checks these tuples against the registries (arch/registry.py, arch/encoders,
targets/), so they cannot drift. Names added at run time with ``register_*`` are
known to the Python API and the matrix's plugins, not to this table.
"""

from __future__ import annotations

from segexport.errors import unknown

ARCHITECTURES: tuple[str, ...] = (
    "deeplabv3", "deeplabv3plus", "dpt", "fpn", "linknet", "manet", "pan", "pspnet", "segformer", "unet",
    "unetplusplus", "upernet",
)
ARCHITECTURE_ALIASES: dict[str, str] = {"unet++": "unetplusplus", "deeplabv3+": "deeplabv3plus"}
ENCODERS: tuple[str, ...] = (
    'densenet121', 'densenet161', 'densenet169', 'densenet201', 'dpn107', 'dpn131', 'dpn68', 'dpn68b', 'dpn92',
    'dpn98', 'efficientnet-b0', 'efficientnet-b1', 'efficientnet-b2', 'efficientnet-b3', 'efficientnet-b4',
    'efficientnet-b5', 'efficientnet-b6', 'efficientnet-b7', 'inceptionresnetv2', 'inceptionv4', 'mit_b0',
    'mit_b1', 'mit_b2', 'mit_b3', 'mit_b4', 'mit_b5', 'mobilenet_v2', 'mobileone_s0', 'mobileone_s1',
    'mobileone_s2', 'mobileone_s3', 'mobileone_s4', 'resnet101', 'resnet152', 'resnet18', 'resnet34',
    'resnet50', 'resnext101_32x16d', 'resnext101_32x32d', 'resnext101_32x48d', 'resnext101_32x4d',
    'resnext101_32x8d', 'resnext50_32x4d', 'se_resnet101', 'se_resnet152', 'se_resnet50', 'se_resnext101_32x4d',
    'se_resnext50_32x4d', 'senet154', 'timm-efficientnet-b0', 'timm-efficientnet-b1', 'timm-efficientnet-b2',
    'timm-efficientnet-b3', 'timm-efficientnet-b4', 'timm-efficientnet-b5', 'timm-efficientnet-b6',
    'timm-efficientnet-b7', 'timm-efficientnet-b8', 'timm-efficientnet-l2', 'timm-skresnet18',
    'timm-skresnet34', 'timm-skresnext50_32x4d', 'timm-tf_efficientnet_lite0', 'timm-tf_efficientnet_lite1',
    'timm-tf_efficientnet_lite2', 'timm-tf_efficientnet_lite3', 'timm-tf_efficientnet_lite4', 'vgg11',
    'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn', 'xception',
)
TARGETS: tuple[str, ...] = ("aoti", "onnx", "torchscript", "trt")
TIMM_PREFIX = "tu-"
#: SMP's former timm-* names (timm-regnetx_002, ...) are mapped to tu- models by arch/encoders/renamed.py.
RENAMED_PREFIX = "timm-"


def check_architecture(name: str) -> None:
    """Raise the standard unknown-name error unless ``name`` is a built-in architecture or alias."""
    key = name.lower()
    if key not in ARCHITECTURES and key not in ARCHITECTURE_ALIASES:
        raise unknown("architecture", name, [*ARCHITECTURES, *ARCHITECTURE_ALIASES])


def check_encoder(name: str) -> None:
    """Raise unless ``name`` is a built-in encoder, a ``tu-`` timm name, or a former SMP ``timm-`` name.

    ``tu-`` and ``timm-`` names are checked for existence later, when timm is loaded.
    """
    if name in ENCODERS or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return
    if name.startswith(RENAMED_PREFIX):
        return
    raise unknown("encoder", name, [*ENCODERS, "tu-<any timm model>"])


def check_target(name: str) -> None:
    """Raise unless ``name`` is a built-in target."""
    if name.lower() not in TARGETS:
        raise unknown("target", name, TARGETS)
