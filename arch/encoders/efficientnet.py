"""(being written)"""

from __future__ import annotations

efficientnet_encoders: dict = {}
