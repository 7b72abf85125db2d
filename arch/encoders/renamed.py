"""SMP's former encoder names that now live in timm (``timm-regnetx_002`` → ``tu-regnetx_002``)."""

from __future__ import annotations


def renamed_encoder(name: str) -> str:
    """The current name for ``name``; unchanged where SMP never renamed it."""
    return name
