"""The one place that writes and reads bundles: artifact files + manifest.json.

A bundle is written into a temporary sibling directory and renamed into place,
so a user never finds a half-written bundle. A directory without manifest.json
is not a bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.digests import sha256_file
from segexport.errors import InvalidInputError
from segexport.interrupts import removed_on_forced_exit
from segexport.manifest import Manifest

MANIFEST = "manifest.json"


@dataclass
class Bundle:
    """A written bundle: its directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def artifact(self) -> Path:
        return self.path_of(self.manifest.artifact)

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
        manifest = Manifest.from_json(read_manifest_json(path), source=str(path / MANIFEST))
        bundle = cls(path, manifest)
        for name in [manifest.artifact, manifest.reference or manifest.artifact, *manifest.sha256]:
            bundle.path_of(name)  # every path a manifest names stays inside the bundle
        return bundle


def read_manifest_json(path: Path) -> Any:
    """The JSON value in ``path``/manifest.json, as written (``verify`` digests it before reading it as a record)."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise InvalidInputError(f"{str(path)!r} is not a segexport bundle: it has no {MANIFEST}.")
    try:
        return json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{str(manifest_path)!r} is not valid JSON: {exc}") from exc


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


def check_output_dir(out: Path, force: bool) -> None:
    """Fail early when ``out`` exists (without --force), lies below a file, or its parent is not writable."""
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"Output path {str(out)!r} exists and is not a directory; choose a directory path.")
    if out.exists() and not force:
        raise InvalidInputError(f"Output directory {str(out)!r} already exists; pass --force to replace it.")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InvalidInputError(f"Cannot create {str(out)!r}: {str(probe)!r} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInputError(f"Cannot write to {str(parent)!r}: permission denied.")


def _stale_name(out: Path) -> re.Pattern[str]:
    """What :func:`staging_dir` and :func:`write_bundle` leave beside ``out`` when a build is killed."""
    return re.compile(rf"\.{re.escape(out.name)}\.(\d+_[a-z0-9_]+\.tmp(\.done)?|old)")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out`` for a whole build: a second build to the same ``out`` fails at once.

    Inside the lock no other build of ``out`` is alive, so staging folders left by a
    killed one (SIGKILL, power loss) are removed here before this build starts.
    """
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInputError(
                f"Another build is writing {str(out)!r} (pid {holder}); wait for it to finish or choose another --out."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        stale = _stale_name(out)
        for leftover in out.parent.iterdir():
            if stale.fullmatch(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` (same filesystem, so the final rename is atomic).

    Removed on every exit, Ctrl-C and SIGTERM included (the CLI turns SIGTERM into an
    exception, and a second signal while native code runs removes it before exiting:
    :mod:`segexport.interrupts`); one left by SIGKILL is removed by the next build under :func:`output_lock`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}_", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary directory
    done = tmp.with_name(tmp.name + ".done")
    try:
        with removed_on_forced_exit(tmp), removed_on_forced_exit(done):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(done, ignore_errors=True)


def write_bundle(staging: Path, out: Path, manifest: Manifest, files: list[str], force: bool = False) -> Bundle:
    """Hash ``files`` in ``staging``, add manifest.json with its digest, and move the directory to ``out`` atomically."""
    manifest = manifest.with_files({name: sha256_file(staging / name) for name in files})
    with open(staging / MANIFEST, "w") as f:
        f.write(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
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
    """Names of files whose sha256 no longer matches the manifest (missing files included).

    The artifact and the reference must be among the hashed files; every name must lie inside the bundle.
    """
    hashes = bundle.manifest.sha256
    if not hashes:
        raise InvalidInputError(f"Bundle {str(bundle.path)!r}: the manifest's sha256 table is empty.")
    for key in ("artifact", "reference"):
        name = getattr(bundle.manifest, key)
        if name is not None and name not in hashes:
            raise InvalidInputError(f"Bundle {str(bundle.path)!r}: the {key} {name!r} has no sha256 in the manifest.")
    bad = []
    for name, expected in hashes.items():
        path = bundle.path_of(name)
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad
