"""Calibration range cache: one JSON file, entries keyed by what the ranges depend on.

Ranges depend on the fp32 graph (its bytes: weights and structure), the calibration
method and its parameters, the op types whose tensors are calibrated, the exact
images (names and content hashes) and their preparation. The key is the sha256 of all
of these, so a rebuild with the same inputs skips calibration and anything else
recalibrates. One file may hold several entries (a folder of bundles can share it);
the oldest are dropped beyond ``MAX_ENTRIES``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from segexport.atomic import write_atomic
from segexport.digests import sha256_files, sha256_json
from segexport.errors import InvalidInputError

CACHE_FORMAT = "segexport-calibration-cache/1"
MAX_ENTRIES = 16
#: ``bundle.staging_dir`` names its directory ``.<bundle name>.<random>.tmp``.
_STAGING = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")

Ranges = dict[str, tuple[float, float]]


def default_cache_path(work_dir: Path) -> Path:
    """``<bundle>.calib.json`` beside the bundle that ``work_dir`` (its staging directory) becomes."""
    match = _STAGING.fullmatch(work_dir.name)
    name = match.group("name") if match else work_dir.name
    return work_dir.parent / f"{name}.calib.json"


def file_sha256(path: Path) -> str:
    """sha256 of a graph file, plus its external-data file when the graph has one."""
    return sha256_files(part for part in (path, path.with_name(path.name + ".data")) if part.exists())


def cache_key(**parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (sorted keys, so the order of keywords does not matter)."""
    return sha256_json(parts, default=str)


def load_ranges(path: Path, key: str) -> Ranges | None:
    """The ranges stored under ``key`` in ``path``, or None (no file, other key, or an older format)."""
    entries = _read(path)
    entry = entries.get(key)
    if entry is None:
        return None
    return {name: (float(lo), float(hi)) for name, (lo, hi) in entry["ranges"].items()}


def save_ranges(path: Path, key: str, ranges: Ranges, about: dict[str, Any]) -> None:
    """Store ``ranges`` under ``key`` (atomically: a crash never leaves half a file)."""
    entries = _read(path)
    entries.pop(key, None)
    entries[key] = {"about": about, "ranges": {name: [lo, hi] for name, (lo, hi) in sorted(ranges.items())}}
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    write_atomic(path, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1))


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    if not path.is_file():
        raise InvalidInputError(f"--calib-cache {str(path)!r} exists and is not a file.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"--calib-cache {str(path)!r} is not a segexport calibration cache ({exc}); delete it or pass another file."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise InvalidInputError(
            f"--calib-cache {str(path)!r} is not a segexport calibration cache (format {CACHE_FORMAT}); "
            "delete it or pass another file."
        )
    return dict(data.get("entries", {}))
