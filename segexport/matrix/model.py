"""The matrix's records: a cell, its result, a run's configuration, a worker's job and the report.

Everything here is plain data (torch-free, CLI-free): the planner builds it, executors
carry it to workers, the report module turns it into Markdown, matrix.json stores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segexport.pipeline import PRECISIONS  # torch-free at import, like this package

STATUSES = ("pass", "fail", "error", "n/a")
JSON_NAME = "matrix.json"
MARKDOWN_NAME = "matrix.md"
FORMAT_VERSION = 1

DEFAULT_TIMEOUT_S = 1200.0
#: Worker start-up (imports, plugins) is bounded separately: it does not count against --timeout.
STARTUP_TIMEOUT_S = 300.0
BENCH_WARMUP = 2
#: Timing stops short of --iters runs when they would take longer than this (big models on CPU).
BENCH_BUDGET_S = 10.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    """One build of the matrix: a row (arch, encoder) and a column (target, precision)."""

    arch: str
    encoder: str
    target: str
    precision: str

    @property
    def row(self) -> tuple[str, str]:
        return (self.arch, self.encoder)

    @property
    def column(self) -> tuple[str, str]:
        return (self.target, self.precision)

    @property
    def id(self) -> str:
        """A file-name-safe identifier: ``unet-resnet34-onnx-fp32``."""
        raw = f"{self.arch}-{self.encoder}-{self.target}-{self.precision}"
        return "".join(c if c.isalnum() or c in "._+-" else "_" for c in raw)

    def label(self) -> str:
        return f"{self.arch}/{self.encoder} {self.target} {self.precision}"


@dataclass
class CellResult:
    """What happened to one cell; everything here goes to matrix.json."""

    cell: Cell
    status: str
    reason: str | None = None
    #: Where the cell stopped: plan (parent), model (construction probe), build, worker (crash/timeout).
    stage: str | None = None
    #: Fingerprint of the cell's inputs and tool versions, for --resume.
    key: str = ""
    parity: dict[str, Any] | None = None
    build_s: float | None = None
    cell_s: float | None = None
    latency_ms: dict[str, float] | None = None
    bench_device: str | None = None
    bench_error: str | None = None
    threads: int | None = None
    peak_rss_mib: float | None = None
    steps: list[list[Any]] = field(default_factory=list)
    bundle: str | None = None
    log: str | None = None
    resumed: bool = False
    #: For n/a cells answered by another cell of the same row (the model refused the encoder).
    decided_by: str | None = None
    #: The Ray node that built the cell (None for local workers).
    node: str | None = None
    #: What the cell took from earlier cells of its row's worker instead of making it (model, reference, onnx graph).
    shared: list[str] = field(default_factory=list)
    #: Seconds of each build step (the manifest's ``build.seconds``) of a passing cell, and of its timing.
    seconds: dict[str, float] | None = None
    bench_s: float | None = None

    @property
    def mask_parity(self) -> dict[str, Any] | None:
        """The parity entry of the mask output (the first output when none is named mask)."""
        outputs = (self.parity or {}).get("outputs") or []
        return next((o for o in outputs if o.get("name") == "mask"), outputs[0] if outputs else None)

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self.cell)}
        d.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "cell"})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellResult:
        cell = Cell(d["arch"], d["encoder"], d["target"], d["precision"])
        known = {f.name for f in fields(cls)} - {"cell"}
        return cls(cell=cell, **{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class RaySettings:
    """Where the matrix's Ray tasks go.

    ``address`` None follows Ray's own lookup ($RAY_ADDRESS, else a cluster started on this
    machine with ``ray start``, else a new local instance); ``"auto"`` joins an existing
    cluster only; ``"ray://host:10001"`` connects through Ray Client. A process already
    connected to Ray (``ray.is_initialized()``) keeps its connection.
    """

    address: str | None = None


@dataclass(frozen=True)
class MatrixConfig:
    """A matrix run, as the CLI and the Python API describe it. None means the default throughout."""

    #: Architecture names (a list or "a,b"); None or "all" = every registered one (plugins included).
    archs: str | Sequence[str] | None = None
    encoders: str | Sequence[str] = ("resnet34",)
    #: Target names; None or "all" = every registered one.
    targets: str | Sequence[str] | None = None
    precisions: str | Sequence[str] = PRECISIONS
    height: int = 512
    width: int = 512
    #: Calibration images folder (or "random") for int8 cells; int8 cells are n/a without it.
    calib: str | None = None
    #: Folder of trained state_dicts named ``<arch>-<encoder>.<pth|pt|ckpt|bin|safetensors>``; a row
    #: whose file is there builds from it, the others from seeded random weights.
    checkpoints: str | os.PathLike[str] | None = None
    #: Output classes of every model (the checkpoints' heads must have as many).
    classes: int = 1
    #: Constructor keywords per architecture; the key "*" applies to every architecture (per-arch entries win).
    arch_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Modules or .py files imported first, in the parent and in every worker (custom architectures, encoders).
    plugins: Sequence[str] = ()
    #: Workers at once (each builds one cell at a time); None fits the machine (local workers) or the cluster (Ray).
    jobs: int | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    #: Timed runs of each passing bundle in its runtime (0 skips timing).
    iters: int = 10
    out: str | os.PathLike[str] = "matrix"
    #: Markdown file; None = <out>/matrix.md.
    report: str | os.PathLike[str] | None = None
    keep_bundles: bool = False
    resume: bool = False
    #: Run the cells as Ray tasks (None: worker processes on this machine).
    ray: RaySettings | None = None


@dataclass(frozen=True)
class RowJob:
    """Cells of one row that one worker builds in turn; travels as JSON (local) or pickled (Ray).

    The worker constructs the row's model once and shares it, its eager references and its
    fp32 ONNX graph among the cells (:mod:`segexport.reuse`); each cell is still a full build.
    """

    cells: tuple[Cell, ...]
    height: int
    width: int
    classes: int
    arch_args: Mapping[str, Any]
    #: Calibration folder or file on the worker's machine, "random", or None.
    calib: str | None
    #: The row's weights file on the worker's machine (None: seeded random weights).
    checkpoint: str | None
    #: Module names and .py files (paths on the worker's machine).
    plugins: tuple[str, ...]
    threads: int
    iters: int
    #: Each cell's bundle goes to ``<bundle_root>/<cell id>``.
    bundle_root: str
    #: Each cell's output (stdout and stderr, compiler sub-processes too) goes to ``<log_dir>/<cell id>.log``.
    log_dir: str
    #: The supervising process; the worker exits when it is gone.
    parent_pid: int | None = None

    def __post_init__(self) -> None:
        if not self.cells or len({c.row for c in self.cells}) != 1:
            raise ValueError(f"a RowJob holds cells of one row; got {[c.id for c in self.cells]}")

    @property
    def id(self) -> str:
        """The first cell's id, ``+N`` for the N cells after it: ``unet-resnet34-onnx-fp32+6``."""
        first = self.cells[0].id
        return first if len(self.cells) == 1 else f"{first}+{len(self.cells) - 1}"

    def bundle_dir(self, cell: Cell) -> Path:
        return Path(self.bundle_root) / cell.id

    def log_path(self, cell: Cell) -> Path:
        return Path(self.log_dir) / f"{cell.id}.log"

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=repr)

    @classmethod
    def from_json(cls, text: str) -> RowJob:
        data = json.loads(text)
        return cls(**{**data, "cells": tuple(Cell(**c) for c in data["cells"]), "plugins": tuple(data["plugins"])})


@dataclass
class MatrixReport:
    """The outcome of a run: every planned cell in table order, the versions and the settings."""

    cells: list[CellResult]
    archs: list[str]
    encoders: list[str]
    columns: list[tuple[str, str]]
    versions: dict[str, str | None]
    settings: dict[str, Any]
    created: str
    wall_s: float = 0.0
    complete: bool = True
    json_path: Path | None = None
    report_path: Path | None = None

    def summary(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.cells) for status in STATUSES}

    def time_by_step(self) -> dict[str, float]:
        """Worker seconds of the cells this run built, summed by build step (largest first), "timing",
        "other" (worker start-up, the construction probe, failed builds) and their total, "cells"."""
        built = [r for r in self.cells if r.cell_s is not None and not r.resumed]
        steps: dict[str, float] = {}
        for r in built:
            for name, seconds in {**(r.seconds or {}), "timing": r.bench_s or 0.0}.items():
                steps[name] = steps.get(name, 0.0) + seconds
        total = sum(r.cell_s or 0.0 for r in built)
        steps["other"] = max(0.0, total - sum(steps.values()))
        ordered = dict(sorted(steps.items(), key=lambda kv: -kv[1]))
        return {name: round(seconds, 1) for name, seconds in {**ordered, "cells": total}.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "segexport-matrix",
            "format_version": FORMAT_VERSION,
            "complete": self.complete,
            "created": self.created,
            "wall_s": round(self.wall_s, 2),
            "versions": self.versions,
            "settings": self.settings,
            "archs": self.archs,
            "encoders": self.encoders,
            "columns": [list(c) for c in self.columns],
            "summary": self.summary(),
            "seconds": self.time_by_step(),
            "cells": [r.to_dict() for r in self.cells],
        }

    def markdown(self) -> str:
        from segexport.matrix.report import format_markdown

        return format_markdown(self)
