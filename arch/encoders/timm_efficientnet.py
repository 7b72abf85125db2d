"""(being written)"""

from __future__ import annotations

timm_efficientnet_encoders: dict = {}
