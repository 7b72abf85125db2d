"""(being written)"""

from __future__ import annotations

mobilenet_encoders: dict = {}
