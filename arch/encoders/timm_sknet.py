"""SMP 0.6's timm_sknet encoders in SMP's state_dict layout (being written; empty until then)."""

from __future__ import annotations

from ._base import EncoderEntry

timm_sknet_encoders: dict[str, EncoderEntry] = {}
