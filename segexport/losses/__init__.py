"""Training losses with SMP 0.6's names and arguments: switch by changing the import.

``from segmentation_models_pytorch.losses import DiceLoss`` becomes
``from segexport.losses import DiceLoss``; for the same inputs and arguments the values and
gradients agree. Inputs are validated: mismatched shapes, class ids outside the classes and
unknown modes raise :class:`~segexport.errors.InvalidInputError`.
"""

from .constants import BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE
from .dice import DiceLoss
from .focal import FocalLoss
from .jaccard import JaccardLoss
from .lovasz import LovaszLoss
from .mcc import MCCLoss
from .soft_bce import SoftBCEWithLogitsLoss
from .soft_ce import SoftCrossEntropyLoss
from .tversky import TverskyLoss

__all__ = [
    "BINARY_MODE",
    "MULTICLASS_MODE",
    "MULTILABEL_MODE",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "LovaszLoss",
    "MCCLoss",
    "SoftBCEWithLogitsLoss",
    "SoftCrossEntropyLoss",
    "TverskyLoss",
]
