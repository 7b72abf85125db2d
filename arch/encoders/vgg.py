"""SMP 0.6's vgg encoders in SMP's state_dict layout (being written; empty until then)."""

from __future__ import annotations

from ._base import EncoderEntry

vgg_encoders: dict[str, EncoderEntry] = {}
