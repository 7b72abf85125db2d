"""``segexport matrix``: the command line of the compatibility matrix."""

from __future__ import annotations

from segexport.matrix import matrix

__all__ = ["matrix"]
