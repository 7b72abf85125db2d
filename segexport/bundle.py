"""The one place that writes and reads bundles: artifact files + manifest.json.

A bundle is written into a temporary sibling directory and renamed into place,
so a user never finds a half-written bundle. A directory without manifest.json
is not a bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.errors import InvalidInputError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Bundle:
    """A written bundle: its directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def artifact(self) -> Path:
        return self.path_of(self.manifest["artifact"])

    def path_of(self, name: str) -> Path:
        """The file ``name`` (as a manifest names it) inside this bundle.

        A name that is absolute, climbs out with ``..``, or resolves outside the
        bundle through a symlink is refused: a manifest never points a reader
        at files beyond its own folder.
        """
        return contained_path(self.path, name)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read the bundle at ``path``; a clear error if it is not one."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise InvalidInputError(f"{str(path)!r} is not a segexport bundle: it has no {MANIFEST}.")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{str(manifest_path)!r} is not valid JSON: {exc}") from exc
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidInputError(f"Bundle {str(path)!r} has format_version {version!r}; this segexport reads {FORMAT_VERSION}.")
        return cls(path, manifest)


def contained_path(root: Path, name: object) -> Path:
    """``root / name``, refusing names that leave ``root`` (absolute, ``..``, symlinks out)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidInputError(f"Bundle {str(root)!r}: manifest names the file {name!r}, which is not a relative path.")
    pure = Path(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise InvalidInputError(
            f"Bundle {str(root)!r}: manifest names {name!r}, a path outside the bundle; only paths inside it are allowed."
        )
    candidate = root / pure
    if not candidate.resolve().is_relative_to(root.resolve()):
        raise InvalidInputError(
            f"Bundle {str(root)!r}: {name!r} is a symlink that leads outside the bundle; only files inside it are allowed."
        )
    return candidate


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_dir(out: Path, force: bool) -> None:
    """Fail early when ``out`` exists (without --force) or its parent is not writable."""
    if out.exists() and not force:
        raise InvalidInputError(f"Output directory {str(out)!r} already exists; pass --force to replace it.")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"Output path {str(out)!r} exists and is not a directory.")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise InvalidInputError(f"Cannot write to {str(parent)!r}: permission denied.")


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary directory
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bundle(staging: Path, out: Path, manifest: dict[str, Any], files: list[str], force: bool = False) -> Bundle:
    """Hash ``files`` in ``staging``, add manifest.json, and move the directory to ``out`` atomically."""
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["sha256"] = {name: sha256_file(staging / name) for name in sorted(files)}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    final = staging.with_name(staging.name + ".done")
    staging.rename(final)
    if out.exists():
        if not force:
            raise InvalidInputError(f"Output directory {str(out)!r} already exists; pass --force to replace it.")
        trash = out.with_name(f".{out.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        out.rename(trash)
        final.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        final.rename(out)
    return Bundle(out, manifest)


def write_failure(staging: Path, out: Path, report: dict[str, Any], files: list[str]) -> Path:
    """Keep a failed build for inspection at ``<out>.failed/`` (report.json, no manifest)."""
    failed = out.with_name(out.name + ".failed")
    shutil.rmtree(failed, ignore_errors=True)
    failed.mkdir(parents=True)
    for name in files:
        if (staging / name).exists():
            shutil.copy2(staging / name, failed / name)
    (failed / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return failed


def verify_hashes(bundle: Bundle) -> list[str]:
    """Names of files whose sha256 no longer matches the manifest (missing files included)."""
    bad = []
    for name, expected in bundle.manifest.get("sha256", {}).items():
        path = bundle.path / name
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad
