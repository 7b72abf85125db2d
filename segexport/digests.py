"""sha256 of files, read in blocks: what manifests, calibration records and caches pin."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


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
