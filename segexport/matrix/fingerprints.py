"""What a cell's outcome depends on, as digests: tool versions, the calibration set, the cell key.

Equal keys mean ``--resume`` may reuse a stored cell; anything that could change the
outcome (arguments, size, weights, plugins, versions) goes into the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from segexport.digests import sha256_json
from segexport.errors import InvalidInputError
from segexport.matrix.model import Cell

#: Tool → distribution names to ask importlib.metadata for (first installed wins).
_TOOLS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "timm": ("timm",),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "onnxslim": ("onnxslim",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-rtx", "tensorrt_rtx", "tensorrt-cu12", "tensorrt-cu13"),
}


def tool_versions() -> dict[str, str | None]:
    """Versions that decide whether a stored cell is still valid (read from metadata, nothing imported)."""
    from importlib import metadata

    from segexport import __version__

    versions: dict[str, str | None] = {"segexport": __version__, "python": platform.python_version()}
    for tool, dists in _TOOLS.items():
        versions[tool] = None
        for dist in dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                version = metadata.version(dist)
                versions[tool] = version if dist == tool else f"{version} ({dist})"
                break
    return versions


def calib_fingerprint(calib: str | None) -> str | None:
    """A digest of the calibration folder's listing (names, sizes, mtimes), or "random" / None."""
    if calib is None or calib == "random":
        return calib
    root = Path(calib)
    if not root.exists():
        raise InvalidInputError(f"--calib {calib!r} does not exist; give a folder of images or 'random'.")
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        digest.update(f"{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cell_key(cell: Cell, arch_args: Mapping[str, Any], height: int, width: int, calib: str | None,
             versions: Mapping[str, str | None], plugins: Sequence[str], checkpoint: str | None = None, classes: int = 1) -> str:
    """Fingerprint of everything a cell's outcome depends on; equal keys mean --resume may reuse it.

    ``checkpoint`` is the digest of the row's weights file (None: random weights).
    """
    payload = {
        "cell": asdict(cell),
        "arch_args": arch_args,
        "size": [1, height, width],
        "calib": calib if cell.precision == "int8" else None,  # only int8 reads the calibration set
        "versions": versions,
        "plugins": list(plugins),
    }
    if checkpoint is not None or classes != 1:  # keys of runs without either stay as they were
        payload.update(checkpoint=checkpoint, classes=classes)
    return sha256_json(payload)[:20]
