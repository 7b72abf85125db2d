"""``--plugin``: modules or .py files that register custom architectures and encoders, in every process."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from segexport.bundle import sha256_file
from segexport.errors import InvalidInputError
from segexport.matrix.report import one_line


def is_file_plugin(item: str) -> bool:
    """A path to a .py file (rather than a module name)."""
    return item.endswith(".py") or os.sep in item or bool(os.altsep and os.altsep in item)


def load_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin: a module name, or a path to a .py file (run once per process)."""
    for item in plugins:
        if is_file_plugin(item):
            _load_file(item)
            continue
        try:
            importlib.import_module(item)
        except ModuleNotFoundError as exc:
            if exc.name and item.startswith(exc.name):
                raise InvalidInputError(f"--plugin {item!r}: no module of that name (give a module on sys.path or a .py file).") from exc
            raise InvalidInputError(f"--plugin {item!r} failed to import: {one_line(exc)}") from exc
        except Exception as exc:
            raise InvalidInputError(f"--plugin {item!r} failed to import: {one_line(exc)}") from exc


def _load_file(item: str) -> None:
    path = Path(item).resolve()
    if not path.is_file():
        raise InvalidInputError(f"--plugin {item!r}: no such file.")
    name = f"_segexport_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"--plugin {item!r} is not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise InvalidInputError(f"--plugin {item!r} failed to import: {one_line(exc)}") from exc


def plugins_fingerprint(plugins: Sequence[str]) -> list[str]:
    """Each plugin with a digest of its source file, so editing a custom architecture re-runs its cells."""
    prints = []
    for item in plugins:
        origin: str | None = item if is_file_plugin(item) else None
        if origin is None:
            with contextlib.suppress(ImportError, ValueError, AttributeError):
                spec = importlib.util.find_spec(item)
                origin = spec.origin if spec else None
        digest = sha256_file(Path(origin))[:16] if origin and Path(origin).is_file() else "?"
        prints.append(f"{Path(item).name if origin == item else item}:{digest}")
    return prints
