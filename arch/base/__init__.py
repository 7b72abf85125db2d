"""Shared model machinery: the base model, heads, building blocks and export mode."""

from .export_mode import export_mode, is_exporting
from .heads import ClassificationHead, SegmentationHead, make_classification_head
from .model import SegmentationModel, check_common_args, check_decoder_channels
from .modules import (
    Activation,
    AdaptiveAvgPool2d,
    Attention,
    Conv2dReLU,
    GlobalAvgPool2d,
    adaptive_avg_pool2d,
    get_norm_layer,
)

__all__ = [
    "Activation",
    "AdaptiveAvgPool2d",
    "Attention",
    "ClassificationHead",
    "Conv2dReLU",
    "GlobalAvgPool2d",
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
