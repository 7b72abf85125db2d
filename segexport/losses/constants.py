"""The three task modes every mode-aware loss understands (same strings as SMP 0.6).

- ``binary``: one foreground class. Output (N, 1, *S) logits, target (N, *S) or (N, 1, *S) of 0/1.
- ``multiclass``: C mutually exclusive classes. Output (N, C, *S), target (N, *S) of class ids.
- ``multilabel``: C independent classes, one channel each. Output and target (N, C, *S) of 0/1.
"""

from __future__ import annotations

BINARY_MODE: str = "binary"
MULTICLASS_MODE: str = "multiclass"
MULTILABEL_MODE: str = "multilabel"

MODES: tuple[str, ...] = (BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE)
