"""SMP 0.6's xception encoders in SMP's state_dict layout (being written; empty until then)."""

from __future__ import annotations

from ._base import EncoderEntry

xception_encoders: dict[str, EncoderEntry] = {}
