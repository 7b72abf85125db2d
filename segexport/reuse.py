"""What builds of the same model in one process share: the eager model, its references, its ONNX graphs.

A build makes all of these itself. The matrix builds every target and precision of a row in
one worker; handing the same :class:`BuildReuse` to each of those builds means the model is
constructed and its checkpoint loaded once, eager PyTorch runs once per set of judged inputs,
and the fp32 ONNX graph that the onnx and TensorRT targets (and their int8 and fp16 forms)
start from is exported and simplified once.

Every entry is keyed by everything that decides it (the model's constructor arguments, seed
and weights file; the input arrays' bytes; the export shape and opset), so a build given a
``BuildReuse`` gets what it would have made alone. What a build could modify is never
shared: each build prepares its own copy of the model, and a graph is copied into the
build's own folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from segexport.digests import sha256_arrays, sha256_json

if TYPE_CHECKING:
    import numpy as np

    from segexport.targets.base import ExportSpec

T = TypeVar("T")


def fingerprint(parts: Any) -> str:
    """A short key for ``parts`` (see :func:`~segexport.digests.sha256_json`)."""
    return sha256_json(parts)[:24]


@dataclass
class BuildReuse:
    """Work shared by the builds of one process (see the module docstring); ``close()`` removes its files."""

    models: dict[str, Any] = field(default_factory=dict)
    references: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    graphs: dict[tuple[str, str], tuple[Path, str]] = field(default_factory=dict)
    #: How often each kind of entry was reused (the matrix reports it).
    hits: Counter[str] = field(default_factory=Counter)
    _folder: Path | None = None

    def model(self, key: str, make: Callable[[], T]) -> T:
        """What ``make`` returns for model ``key`` (the eager model and what goes with it), made on first use."""
        if key in self.models:
            self.hits["model"] += 1
        else:
            self.models[key] = make()
        return self.models[key]

    def reference(self, model_key: str, inputs: Sequence[np.ndarray],
                  run: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
        """Eager outputs of the model ``model_key`` on ``inputs``, computed by ``run`` on first use."""
        key = (model_key, sha256_arrays(inputs)[:24])
        if key in self.references:
            self.hits["reference"] += 1
        else:
            self.references[key] = run()
        return self.references[key]

    def graph_store(self, model_key: str) -> GraphStore:
        """Where the ONNX exports of model ``model_key`` are kept for the next build of it."""
        return GraphStore(self, model_key)

    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="segexport-reuse-"))
        return self._folder

    def close(self) -> None:
        self.models.clear()
        self.references.clear()
        self.graphs.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


@dataclass(frozen=True)
class GraphStore:
    """ONNX graphs of one model, by export settings: :func:`segexport.targets.onnx.export_onnx` looks here first."""

    reuse: BuildReuse
    model_key: str

    @staticmethod
    def export_key(spec: ExportSpec) -> str:
        """What decides an fp32 ONNX export of a given model (its precision forms are made from it afterwards)."""
        return fingerprint([spec.batch, spec.in_channels, spec.height, spec.width, spec.dynamic, spec.opset, list(spec.output_names)])

    def fetch(self, spec: ExportSpec, path: Path) -> str | None:
        """Copy the graph exported earlier for ``spec`` to ``path``; returns its exporter, or None when there is none."""
        kept = self.reuse.graphs.get((self.model_key, self.export_key(spec)))
        if kept is None:
            return None
        shutil.copyfile(kept[0], path)
        self.reuse.hits["onnx graph"] += 1
        return kept[1]

    def keep(self, spec: ExportSpec, path: Path, exporter: str) -> None:
        """Keep a copy of the graph just written to ``path`` (single-file graphs only: external data names its file)."""
        if path.with_name(path.name + ".data").exists():
            return
        key = (self.model_key, self.export_key(spec))
        copy = self.reuse.folder() / f"{fingerprint(list(key))}.onnx"
        shutil.copyfile(path, copy)
        self.reuse.graphs[key] = (copy, exporter)


def model_key(fields: Mapping[str, Any]) -> str:
    """The key of an eager model: its constructor keywords, seed and weights file (path, size and mtime)."""
    parts = dict(fields)
    checkpoint = parts.get("checkpoint")
    if checkpoint is not None and Path(checkpoint).is_file():
        stat = Path(checkpoint).stat()
        parts["checkpoint"] = [str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns]
    return fingerprint(parts)
