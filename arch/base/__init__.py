"""Shared model machinery: the base model, heads, building blocks and export mode."""

from .export_mode import export_mode, is_exporting
from .heads import ClassificationHead, SegmentationHead, make_classification_head
from .model import DEPRECATED_KEYWORDS_REMOVAL, SegmentationModel, check_common_args, check_decoder_channels
from .modules import (
    Activation,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    Attention,
    Conv2dReLU,
    adaptive_avg_pool2d,
    get_norm_layer,
)

__all__ = [
    "DEPRECATED_KEYWORDS_REMOVAL",
    "Activation",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "Attention",
    "ClassificationHead",
    "Conv2dReLU",
    "SegmentationHead",
    "SegmentationModel",
    "adaptive_avg_pool2d",
    "check_common_args",
    "check_decoder_channels",
    "export_mode",
    "get_norm_layer",
    "is_exporting",
    "make_classification_head",
]
