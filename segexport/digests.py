"""sha256 of files (read in blocks), of JSON-able values and of arrays: what manifests, calibration records and caches pin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def sha256_files(paths: Iterable[Path]) -> str:
    """One hex digest over the files' bytes in order (a graph and its external data count as one artifact)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of one file's bytes."""
    return sha256_files([path])


def sha256_json(parts: Any, default: Callable[[Any], Any] = repr) -> str:
    """Hex sha256 of the JSON of ``parts``: sorted keys, so the order of a mapping does not matter;
    values JSON cannot hold are written by ``default``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=default).encode()).hexdigest()


def sha256_arrays(arrays: Sequence[np.ndarray]) -> str:
    """Hex sha256 of the arrays' shapes, dtypes and bytes: equal only for the same arrays."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.shape}{a.dtype.str};".encode())
        digest.update(memoryview(a.tobytes()))
    return digest.hexdigest()
