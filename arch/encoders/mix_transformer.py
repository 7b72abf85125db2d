"""(being written)"""

from __future__ import annotations

mix_transformer_encoders: dict = {}
