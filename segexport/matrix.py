"""`segexport matrix`: which architecture x encoder x target x precision builds work here.

Each cell is one ordinary build through :func:`segexport.pipeline.run_build` (no
shortcut), then a short timing of the bundle in its own runtime. Every cell runs in
a fresh worker process (``python -m segexport.matrix --worker``) in its own process
group: a segfault, a hang or a leak in one backend costs one cell, not the run. The
parent kills a worker that exceeds the timeout (the whole group, so compiler
sub-processes go too) and records the cell as ``error``.

A fresh process per cell rather than a pool of long-lived workers: a cell's result
must not depend on what ran before it in the same process (registered plugins,
backend globals, CUDA contexts, dynamo caches). Start-up (~5 s of imports) is small
next to a build.

Cells that cannot apply are ``n/a`` with the reason, never dropped:

* decided in the parent, without a worker: a target whose module cannot be imported,
  a precision the target does not offer (``target.precisions``), a target the
  architecture declares unsupported, int8 without ``--calib``;
* decided in the worker, before exporting: the model is constructed (on the meta
  device where the constructor allows it: no memory, no init cost), so an encoder the
  architecture refuses or a size it cannot take raises :class:`InvalidInputError` at
  once. That answer holds for the whole row (arch, encoder), so the other cells of the
  row are not run;
* any other InvalidInputError from the build (e.g. ``target.check`` refusing fp16 on
  a machine that cannot validate it).

Statuses: ``pass`` (✓ with the mask's max abs error), ``fail`` (parity failed),
``error`` (export error, crash, timeout), ``n/a``. Results go to ``<out>/matrix.json``
after every cell, so an interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import typer

from segexport.bundle import sha256_file
from segexport.errors import InvalidInputError, SegexportError, closest, unknown
from segexport.pipeline import PRECISIONS  # torch-free at import, like this module
STATUSES = ("pass", "fail", "error", "n/a")
JSON_NAME = "matrix.json"
MARKDOWN_NAME = "matrix.md"
FORMAT_VERSION = 1

DEFAULT_TIMEOUT_S = 1200.0
#: Worker start-up (imports, plugins) is bounded separately: it does not count against --timeout.
STARTUP_TIMEOUT_S = 300.0
#: Threads each worker gets when -j is chosen for the user; exporting is mostly single-threaded
#: Python, so two threads per worker and more workers finish a matrix sooner than the reverse.
THREADS_PER_WORKER = 2
#: Peak RSS of one worker building a 512x512 ResNet-34 U-Net for ONNX is about 2 GiB; 3 GiB leaves headroom.
WORKER_MEMORY_BYTES = 3 * 2**30
BENCH_WARMUP = 2
#: Timing stops short of --iters runs when they would take longer than this (big models on CPU).
BENCH_BUDGET_S = 10.0
MAX_TABLE_REASON = 80
_POLL_S = 0.2
_STEP_PREFIX = "segexport-matrix step"

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


@dataclass
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
    #: Parallel workers; None fits the machine (see :func:`default_jobs`).
    jobs: int | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    #: Timed runs of each passing bundle in its runtime (0 skips timing).
    iters: int = 10
    out: str | os.PathLike[str] = "matrix"
    #: Markdown file; None = <out>/matrix.md.
    report: str | os.PathLike[str] | None = None
    keep_bundles: bool = False
    resume: bool = False


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
            "cells": [r.to_dict() for r in self.cells],
        }

    def markdown(self) -> str:
        return format_markdown(self)


# --------------------------------------------------------------------------- machine sizing


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available now: MemAvailable, capped by a cgroup v2 limit; None when unknown."""
    avail: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(0, int(limit) - used)
            avail = room if avail is None else min(avail, room)
    return avail


def default_jobs(cores: int | None = None, memory: int | None = None) -> int:
    """Workers that fit: THREADS_PER_WORKER cores and WORKER_MEMORY_BYTES each, at least one."""
    cores = available_cores() if cores is None else cores
    by_cpu = max(1, cores // THREADS_PER_WORKER)
    by_memory = max(1, memory // WORKER_MEMORY_BYTES) if memory is not None else by_cpu
    return min(by_cpu, by_memory)


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads per worker so that ``jobs`` workers do not oversubscribe the cores."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, jobs))


# --------------------------------------------------------------------------- inputs


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` → ``["a", "b"]`` (order kept, duplicates dropped); "all"/None → None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(i).strip() for i in items if str(i).strip()]
    if names == ["all"]:
        return None
    return list(dict.fromkeys(names))


def parse_arch_args(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``[ARCH:]key=value`` options → ``{arch or "*": {key: value}}`` (values parsed as by ``build --arch-arg``)."""
    from segexport.arguments import parse_arch_args as parse_pairs

    parsed: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        arch, colon, key = head.partition(":")
        if not colon:
            arch, key = "*", head
        if not sep or not arch.strip():
            raise InvalidInputError(f"--arch-arg {item!r} is not of the form [ARCH:]key=value (e.g. unet:decoder_channels=[128,64,32,16,8]).")
        parsed.setdefault(arch.strip().lower(), {}).update(parse_pairs([f"{key}={value}"]))
    return parsed


def _is_file_plugin(item: str) -> bool:
    return item.endswith(".py") or os.sep in item or bool(os.altsep and os.altsep in item)


def load_plugins(plugins: Sequence[str]) -> None:
    """Import each plugin: a module name, or a path to a .py file (run once per process)."""
    for item in plugins:
        if _is_file_plugin(item):
            path = Path(item).resolve()
            if not path.is_file():
                raise InvalidInputError(f"--plugin {item!r}: no such file.")
            name = f"_segexport_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InvalidInputError(f"--plugin {item!r} is not an importable Python file.")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise InvalidInputError(f"--plugin {item!r} failed to import: {_one_line(exc)}") from exc
        else:
            try:
                importlib.import_module(item)
            except ModuleNotFoundError as exc:
                if exc.name and item.startswith(exc.name):
                    raise InvalidInputError(f"--plugin {item!r}: no module of that name (give a module on sys.path or a .py file).") from exc
                raise InvalidInputError(f"--plugin {item!r} failed to import: {_one_line(exc)}") from exc
            except Exception as exc:
                raise InvalidInputError(f"--plugin {item!r} failed to import: {_one_line(exc)}") from exc


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


def row_checkpoints(folder: str | os.PathLike[str] | None, rows: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """The weights file of each (arch, encoder) row found in ``folder`` as ``<arch>-<encoder>.<suffix>``."""
    if folder is None:
        return {}
    from segexport.checkpoint import SUFFIXES

    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"--checkpoints {str(folder)!r} is not a folder; give one holding <arch>-<encoder>.pth files.")
    found = {}
    for arch, encoder in rows:
        matches = [root / f"{arch}-{encoder}{suffix}" for suffix in SUFFIXES if (root / f"{arch}-{encoder}{suffix}").is_file()]
        if len(matches) > 1:
            raise InvalidInputError(f"--checkpoints holds {len(matches)} files for {arch}-{encoder} ({', '.join(p.name for p in matches)}); keep one.")
        if matches:
            found[(arch, encoder)] = matches[0]
    if not found:
        example = "-".join(rows[0]) if rows else "unet-resnet34"
        raise InvalidInputError(f"--checkpoints {str(folder)!r} holds no file for any row; name them <arch>-<encoder>.pth (e.g. {example}.pth).")
    return found


def plugins_fingerprint(plugins: Sequence[str]) -> list[str]:
    """Each plugin with a digest of its source file, so editing a custom architecture re-runs its cells."""
    prints = []
    for item in plugins:
        origin: str | None = item if _is_file_plugin(item) else None
        if origin is None:
            with contextlib.suppress(ImportError, ValueError, AttributeError):
                spec = importlib.util.find_spec(item)
                origin = spec.origin if spec else None
        digest = hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:16] if origin and Path(origin).is_file() else "?"
        prints.append(f"{Path(item).name if origin == item else item}:{digest}")
    return prints


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
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()[:20]


def resolve_names(config: MatrixConfig) -> tuple[list[str], list[str], list[str], list[str]]:
    """Architectures, encoders, targets and precisions of the run, validated (typos fail before any work)."""
    from segexport.arch.encoders import TIMM_PREFIX, get_entry
    from segexport.arch.registry import canonical_name, get_architecture, list_architectures
    from segexport.targets import list_targets

    archs = split_names(config.archs)
    if archs is None:
        archs = list_architectures()
    else:
        for name in archs:
            get_architecture(name)
        archs = list(dict.fromkeys(canonical_name(a) for a in archs))
    encoders = split_names(config.encoders)
    if not encoders:
        raise InvalidInputError("--encoders needs encoder names, e.g. resnet34,mit_b0 ('all' is not offered: timm alone has hundreds).")
    for name in encoders:
        if name.startswith(TIMM_PREFIX):
            import timm

            model = name[len(TIMM_PREFIX):]
            if not timm.is_model(model):
                raise InvalidInputError(f"Unknown timm model {model!r} in encoder {name!r}.{closest(model, timm.list_models())}")
        else:
            get_entry(name)
    targets = split_names(config.targets)
    if targets is None:
        targets = list_targets()
    targets = [t.lower() for t in targets]
    for name in targets:
        if name not in list_targets():
            raise unknown("target", name, list_targets())
    precisions = split_names(config.precisions) or list(PRECISIONS)
    for name in precisions:
        if name not in PRECISIONS:
            raise unknown("precision", name, PRECISIONS)
    return archs, encoders, targets, precisions


def resolve_arch_args(arch_args: Mapping[str, Mapping[str, Any]], archs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Constructor keywords for each architecture of the run ("*" merged under per-arch entries)."""
    from segexport.arch.registry import canonical_name, get_architecture

    given = {("*" if k == "*" else canonical_name(k)): dict(v) for k, v in arch_args.items()}
    for name in given:
        if name != "*":
            get_architecture(name)
            if name not in archs:
                raise InvalidInputError(f"Arguments given for architecture {name!r}, which is not in this matrix ({', '.join(archs)}).")
    return {a: {**given.get("*", {}), **given.get(a, {})} for a in archs}


def _check_config(config: MatrixConfig, jobs: int) -> None:
    for name in ("height", "width"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"{name} must be an integer >= 1; got {value!r}.")
    if not isinstance(config.classes, int) or isinstance(config.classes, bool) or config.classes < 1:
        raise InvalidInputError(f"--classes must be an integer >= 1; got {config.classes!r}.")
    if jobs < 1:
        raise InvalidInputError(f"-j must be >= 1; got {jobs}.")
    if not config.timeout > 0:
        raise InvalidInputError(f"--timeout must be > 0 seconds; got {config.timeout!r}.")
    if config.iters < 0:
        raise InvalidInputError(f"--iters must be >= 0; got {config.iters}.")


# --------------------------------------------------------------------------- planning


def precheck(cell: Cell, target_info: Mapping[str, Any], arch_cls: type, calib: str | None) -> CellResult | None:
    """An ``n/a``/``error`` result when the parent can tell without a worker, else None.

    ``target_info`` is ``{"precisions": (...)}`` for an importable target, or
    ``{"status": ..., "reason": ...}`` when its module failed to import.
    """
    if "reason" in target_info:
        return CellResult(cell, target_info["status"], target_info["reason"], stage="plan")
    unsupported = getattr(arch_cls, "unsupported_targets", {}) or {}
    if cell.target in unsupported:
        return CellResult(cell, "n/a", f"{cell.arch} does not support {cell.target}: {unsupported[cell.target]}", stage="plan")
    if cell.precision not in target_info["precisions"]:
        return CellResult(cell, "n/a", f"{cell.target} offers {', '.join(target_info['precisions'])}", stage="plan")
    if cell.precision == "int8" and not calib:
        return CellResult(cell, "n/a", "int8 needs --calib", stage="plan")
    return None


def _target_info(name: str) -> dict[str, Any]:
    """Precisions of target ``name``, or why it cannot be used (missing module: n/a; broken module: error)."""
    from segexport.targets import get_target

    try:
        target = get_target(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and missing.startswith("segexport.targets"):
            reason = f"{name} target not installed ({missing})"
        elif missing:
            reason = f"{name} target needs {missing}, not installed"
        else:
            reason = f"{name} target unavailable: {_one_line(exc)}"
        return {"status": "n/a", "reason": reason}
    except Exception as exc:  # a target module that exists but is broken is a bug worth showing
        return {"status": "error", "reason": f"target {name} failed to load: {_one_line(exc)}"}
    return {"precisions": tuple(getattr(target, "precisions", PRECISIONS))}


def schedule_order(cells: Sequence[Cell]) -> list[Cell]:
    """Column-major order: the first cell of every row runs before the second of any row,
    so a row whose model refuses the encoder is found early and its other cells skipped."""
    columns = list(dict.fromkeys(c.column for c in cells))
    rows = list(dict.fromkeys(c.row for c in cells))
    by = {(c.row, c.column): c for c in cells}
    return [by[(r, col)] for col in columns for r in rows if (r, col) in by]


# --------------------------------------------------------------------------- running


def run_matrix(config: MatrixConfig, progress: Progress | None = None) -> MatrixReport:
    """Run every cell of ``config`` (see the module docstring); writes matrix.json and the Markdown report."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    load_plugins(config.plugins)
    jobs = config.jobs if config.jobs is not None else default_jobs(memory=available_memory())
    _check_config(config, jobs)
    threads = threads_per_job(jobs)
    archs, encoders, targets, precisions = resolve_names(config)
    arch_args = resolve_arch_args(config.arch_args, archs)
    calib_fp = calib_fingerprint(config.calib)
    checkpoints = row_checkpoints(config.checkpoints, [(a, e) for a in archs for e in encoders])
    digests = {row: sha256_file(path)[:16] for row, path in checkpoints.items()}  # weights decide outcomes as versions do
    versions = tool_versions()
    plugin_prints = plugins_fingerprint(config.plugins)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    report_path = Path(config.report) if config.report is not None else out / MARKDOWN_NAME

    from segexport.arch.registry import get_architecture

    columns = [(t, p) for t in targets for p in precisions]
    cells = [Cell(a, e, t, p) for a in archs for e in encoders for t, p in columns]
    infos = {t: _target_info(t) for t in targets}
    keys = {
        c: cell_key(c, arch_args[c.arch], config.height, config.width, calib_fp, versions, plugin_prints, digests.get(c.row), config.classes)
        for c in cells
    }
    previous = _load_previous(json_path, say) if config.resume else {}

    results: dict[Cell, CellResult] = {}
    todo: list[Cell] = []
    for cell in cells:
        result = precheck(cell, infos[cell.target], get_architecture(cell.arch), config.calib)
        old = previous.get(keys[cell])
        if result is None and old is not None and old.status in ("pass", "fail", "n/a"):
            result = old
            result.resumed = True
        if result is None:
            todo.append(cell)
        else:
            result.key = keys[cell]
            results[cell] = result

    settings = {
        "height": config.height,
        "width": config.width,
        "batch": 1,
        "calib": config.calib,
        "classes": config.classes,
        "checkpoints": {f"{a}-{e}": path.name for (a, e), path in checkpoints.items()},
        "arch_args": arch_args,
        "plugins": list(config.plugins),
        "jobs": jobs,
        "threads_per_job": threads,
        "timeout_s": config.timeout,
        "iters": config.iters,
        "bench_warmup": BENCH_WARMUP,
        "bench_budget_s": BENCH_BUDGET_S,
        "keep_bundles": config.keep_bundles,
    }
    report = MatrixReport(
        cells=[],
        archs=archs,
        encoders=encoders,
        columns=columns,
        versions=versions,
        settings=settings,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        complete=False,
        json_path=json_path,
        report_path=report_path,
    )

    def save() -> None:
        report.cells = [results[c] for c in cells if c in results]
        report.wall_s = time.monotonic() - started
        _write_atomic(json_path, json.dumps(report.to_dict(), indent=2, default=repr) + "\n")

    resumed = sum(r.resumed for r in results.values())
    say(
        f"matrix: {len(cells)} cells ({len(archs)} archs x {len(encoders)} encoders x {len(columns)} target/precision); "
        f"{len(results) - resumed} decided up front, {resumed} resumed, {len(todo)} to build "
        f"with -j {jobs} ({threads} thread{'s' * (threads != 1)} each), timeout {config.timeout:g} s"
    )
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=out))
    runner = _CellRunner(config, out, work, jobs, threads, arch_args, keys, say, total=len(cells), checkpoints=checkpoints)
    try:
        runner.run(schedule_order(todo), results, on_change=save)
        report.complete = True
    finally:
        runner.kill_all()
        save()
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / "logs").rmdir()  # only when empty: no cell failed
    report.cells = [results[c] for c in cells]
    save()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.markdown() + "\n")
    return report


@dataclass
class _Running:
    """A live worker: its process, when it started and when it reported ready."""

    cell: Cell
    proc: subprocess.Popen
    started: float
    result_path: Path
    log_path: Path
    bundle_dir: Path
    ready_at: float | None = None


class _CellRunner:
    """Starts workers, watches them (result, crash, timeout) and records results."""

    def __init__(self, config: MatrixConfig, out: Path, work: Path, jobs: int, threads: int,
                 arch_args: Mapping[str, Mapping[str, Any]], keys: Mapping[Cell, str], say: Progress, total: int,
                 checkpoints: Mapping[tuple[str, str], Path] | None = None) -> None:
        self.config, self.out, self.work, self.jobs, self.threads = config, out, work, jobs, threads
        self.arch_args, self.keys, self.say, self.total = arch_args, keys, say, total
        self.checkpoints = dict(checkpoints or {})
        self.bundle_root = out / "bundles" if config.keep_bundles else work / "bundles"
        self.running: dict[Cell, _Running] = {}
        self.results: dict[Cell, CellResult] = {}

    def run(self, order: Sequence[Cell], results: dict[Cell, CellResult], on_change: Callable[[], None]) -> None:
        self.results = results
        pending = deque(order)
        while pending or self.running:
            while pending and len(self.running) < self.jobs:
                cell = pending.popleft()
                if cell not in results:  # a row-level n/a may have answered it meanwhile
                    self.running[cell] = self._start(cell)
                    self.say(f"  start {cell.label()}")
            time.sleep(_POLL_S)
            for cell, worker in list(self.running.items()):
                result = self._check(worker)
                if result is None:
                    continue
                del self.running[cell]
                self._record(result)
                if result.status == "n/a" and result.stage == "model":
                    # The model itself refused (encoder or size): no target or precision changes that.
                    for other in [c for c in pending if c.row == cell.row and c not in results]:
                        self._record(CellResult(other, "n/a", result.reason, stage="model", decided_by=cell.id))
                on_change()

    def _record(self, result: CellResult) -> None:
        result.key = self.keys[result.cell]
        self.results[result.cell] = result
        done = len(self.results)
        failed = sum(r.status in ("fail", "error") for r in self.results.values())
        self.say(f"[{done}/{self.total}] {_progress_text(result)}  (done {done}, failed {failed}, running {len(self.running)})")

    def _start(self, cell: Cell) -> _Running:
        payload = {
            "cell": asdict(cell),
            "height": self.config.height,
            "width": self.config.width,
            "calib": self.config.calib,
            "checkpoint": str(self.checkpoints[cell.row].resolve()) if cell.row in self.checkpoints else None,
            "classes": self.config.classes,
            "arch_args": self.arch_args[cell.arch],
            "plugins": [str(Path(p).resolve()) if _is_file_plugin(p) else p for p in self.config.plugins],
            "bundle_dir": str((self.bundle_root / cell.id).resolve()),
            "threads": self.threads,
            "iters": self.config.iters,
            "parent_pid": os.getpid(),
        }
        payload_path = self.work / f"{cell.id}.json"
        payload_path.write_text(json.dumps(payload, default=repr))
        result_path = self.work / f"{cell.id}.result.json"
        log_dir = self.out / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{cell.id}.log"
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
            env[var] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "segexport.matrix", "--worker", str(payload_path), str(result_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=os.name == "posix",  # its own process group, killed as a whole
            )
        return _Running(cell, proc, time.monotonic(), result_path, log_path, Path(payload["bundle_dir"]))

    def _check(self, w: _Running) -> CellResult | None:
        now = time.monotonic()
        code = w.proc.poll()
        if code is None:
            if w.ready_at is None and w.result_path.with_suffix(".ready").exists():
                w.ready_at = now
            if w.ready_at is not None and now - w.ready_at > self.config.timeout:
                step = _last_step(w.log_path)
                self._kill(w, dump_stacks=True)
                reason = f"timed out after {self.config.timeout:g} s" + (f" during '{step}'" if step else "") + "; worker killed"
                return self._finish(w, CellResult(w.cell, "error", reason, stage="worker"))
            if w.ready_at is None and now - w.started > STARTUP_TIMEOUT_S:
                self._kill(w, dump_stacks=True)
                return self._finish(w, CellResult(w.cell, "error", f"worker start-up took over {STARTUP_TIMEOUT_S:g} s; killed", stage="worker"))
            return None
        if w.result_path.exists():
            data = json.loads(w.result_path.read_text())
            return self._finish(w, CellResult.from_dict({**asdict(w.cell), **data}))
        step, last = _last_step(w.log_path), _last_message(w.log_path)
        reason = f"worker died ({_exit_text(code)})" + (f" during '{step}'" if step else "") + (f": {last}" if last else "")
        return self._finish(w, CellResult(w.cell, "error", reason, stage="worker"))

    def _finish(self, w: _Running, result: CellResult) -> CellResult:
        result.cell_s = round(time.monotonic() - w.started, 2)
        result.threads = self.threads
        if result.status in ("pass", "n/a"):
            w.log_path.unlink(missing_ok=True)
        else:
            result.log = str(w.log_path)
        failed = w.bundle_dir.with_name(w.bundle_dir.name + ".failed")
        if self.config.keep_bundles and result.status == "fail" and failed.is_dir():
            result.bundle = str(failed)  # the artifact and report.json of the failed parity check
        if not self.config.keep_bundles:
            shutil.rmtree(w.bundle_dir, ignore_errors=True)
            shutil.rmtree(failed, ignore_errors=True)
            result.bundle = None
        return result

    def _kill(self, w: _Running, dump_stacks: bool = False) -> None:
        if w.proc.poll() is not None:
            return
        if os.name == "posix":
            if dump_stacks:  # the worker's faulthandler writes every thread's stack to the log first
                with contextlib.suppress(OSError):
                    os.kill(w.proc.pid, signal.SIGUSR1)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=1.0)
            with contextlib.suppress(OSError):
                os.killpg(w.proc.pid, signal.SIGKILL)
        else:
            w.proc.kill()
        w.proc.wait()

    def kill_all(self) -> None:
        """Stop every live worker (interrupt or error in the parent)."""
        for w in self.running.values():
            self._kill(w)
        self.running.clear()


def _load_previous(path: Path, say: Progress) -> dict[str, CellResult]:
    """Cells of the previous run in --out, by key; nothing (with a note) when there is none or it is unreadable."""
    if not path.is_file():
        say(f"matrix: --resume found no {path}; running every cell")
        return {}
    try:
        data = json.loads(path.read_text())
        return {c["key"]: CellResult.from_dict(c) for c in data.get("cells", []) if c.get("key")}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        say(f"matrix: cannot read {path} ({_one_line(exc)}); running every cell")
        return {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _last_step(log: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith(_STEP_PREFIX):
                return line.split(": ", 1)[-1].strip()
    return None


def _last_message(log: Path) -> str | None:
    """The line of a dead worker's log that best says why: a fatal error, else the last unindented line."""
    with contextlib.suppress(OSError):
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(_STEP_PREFIX)]
        fatal = [ln for ln in lines if ln.startswith("Fatal Python error")]
        plain = [ln for ln in lines if not ln[0].isspace() and not ln.startswith(("Current thread", "Thread 0x", "Traceback"))]
        pick = fatal[-1] if fatal else plain[-1] if plain else None
        return pick[:200] if pick else None
    return None


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


def _one_line(exc: BaseException) -> str:
    """The first line of an error; the type is added where the message alone would not say what failed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SegexportError) and text:
        return text[:300]
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- output


def _mask_figures(result: CellResult) -> str:
    mask = result.mask_parity or {}
    text = f"{mask['max_abs']:.0e}" if mask.get("max_abs") is not None else "?"
    if result.cell.precision != "fp32" and mask.get("agreement") is not None:
        text += f" · {mask['agreement']:.2%}"
    return text


def cell_text(result: CellResult, limit: int = MAX_TABLE_REASON) -> str:
    """The Markdown table text of one cell: ``✓ 3e-06 · 1.2 ms``, ``✗ reason`` or ``n/a (reason)``."""
    reason = _short(result.reason or "", limit)
    if result.status == "pass":
        text = f"✓ {_mask_figures(result)}"
        if result.latency_ms:
            text += f" · {_ms(result.latency_ms['median'])} ms"
        return text
    if result.status == "fail":
        return f"✗ {reason}" if reason else f"✗ parity {_mask_figures(result)}"
    if result.status == "error":
        return f"✗ error: {reason}"
    return f"n/a ({reason})"


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_markdown(report: MatrixReport) -> str:
    """Rows architecture x encoder, columns target/precision, then what did not apply, the legend, counts and versions.

    A row whose model refuses the encoder and a column that applies to no shown row hold
    nothing but ``n/a``: they are listed under the table with their reasons instead.
    """
    by = {(r.cell.row, r.cell.column): r for r in report.cells}
    rows = [(a, e) for a in report.archs for e in report.encoders]
    refused = {row: by[(row, col)].reason for row in rows for col in report.columns
               if (row, col) in by and by[(row, col)].status == "n/a" and by[(row, col)].stage == "model"}  # fmt: skip
    shown_rows = [row for row in rows if row not in refused]
    columns = [col for col in report.columns if any((row, col) not in by or by[(row, col)].status != "n/a" for row in shown_rows)]
    head = ["arch", "encoder", *[f"{t} {p}" for t, p in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in shown_rows:
        texts = [cell_text(by[(row, col)]) if (row, col) in by else "…" for col in columns]
        lines.append("| " + " | ".join([*row, *texts]) + " |")
    hidden = [col for col in report.columns if col not in columns]
    if hidden or refused:
        lines.append("")
    for col in hidden:
        reasons = sorted({_short(by[(row, col)].reason or "", MAX_TABLE_REASON) for row in shown_rows if (row, col) in by})
        lines.append(f"- {col[0]} {col[1]}: n/a ({'; '.join(reasons) or 'no row applies'})")
    for (arch, encoder), reason in refused.items():
        lines.append(f"- {arch} / {encoder}: n/a ({_short(reason or '', 2 * MAX_TABLE_REASON)})")
    s = report.settings
    counts = report.summary()
    trained = s.get("checkpoints") or {}
    weights = f"trained weights ({len(trained)} rows, from --checkpoints), random elsewhere" if trained else "random weights"
    legend = (f"Input 1x3x{s['height']}x{s['width']}, {s.get('classes', 1)} class{'es' * (s.get('classes', 1) != 1)}, {weights}. "
              "✓ max abs error of the mask against eager PyTorch (fp16/int8 also: class agreement)")
    if s["iters"]:
        threads = s["threads_per_job"]
        legend += (f" · median latency of up to {s['iters']} runs (fewer past {BENCH_BUDGET_S:g} s) in the target's runtime "
                   f"on CPU with {threads} thread{'s' * (threads != 1)}"
                   + ("; trt on CUDA" if any(r.cell.target == "trt" and r.latency_ms for r in report.cells) else ""))
        if s["jobs"] > 1:
            legend += f", measured while up to {s['jobs']} cells ran in parallel"
        untimed = sorted({r.cell.target for r in report.cells if r.status == "pass" and not r.latency_ms and r.bench_error})
        if untimed:
            legend += f"; not timed here: {', '.join(untimed)} ({_short(next(r.bench_error for r in report.cells if r.cell.target == untimed[0] and r.bench_error), 100).rstrip('.')})"
    lines += [
        "",
        legend + ".",
        f"{len(report.cells)} cells: {counts['pass']} ✓, {counts['fail']} ✗ parity, {counts['error']} error, {counts['n/a']} n/a.",
        "Versions: " + ", ".join(f"{k} {v or '—'}" for k, v in report.versions.items()) + ".",
    ]
    return "\n".join(lines)


def _progress_text(result: CellResult) -> str:
    mark = {"pass": "✓", "fail": "✗", "error": "✗", "n/a": "n/a"}[result.status]
    text = f"{mark} {result.cell.label()}: "
    if result.status == "pass":
        text += cell_text(result)[2:]
    else:
        text += _short(result.reason or "", 160)
    if result.cell_s is not None:
        text += f" ({result.cell_s:.1f} s)"
    elif result.decided_by:
        text += f" (as {result.decided_by})"
    return text


# --------------------------------------------------------------------------- the worker


def run_cell(payload: Mapping[str, Any], say: Progress | None = None) -> dict[str, Any]:
    """Build one cell in this process and return its result fields (runs inside a worker)."""
    import traceback

    from segexport.errors import ParityError
    from segexport.pipeline import BuildRequest, run_build

    tell = say or (lambda _msg: None)
    cell = Cell(**payload["cell"])
    threads = int(payload["threads"])
    out = Path(payload["bundle_dir"])
    req = BuildRequest(
        arch=cell.arch,
        encoder=cell.encoder,
        target=cell.target,
        height=int(payload["height"]),
        width=int(payload["width"]),
        arch_args=payload["arch_args"],
        checkpoint=payload.get("checkpoint"),
        classes=int(payload.get("classes", 1)),
        precision=cell.precision,
        calib=payload["calib"],
        # The same defaults `segexport build` passes; "threads" is a hint for runtimes that take one.
        target_options={"calib_count": 32, "calib_method": "minmax", "calib_cache": None, "min_shape": None, "opt_shape": None,
                        "max_shape": None, "workspace_mb": None, "timing_cache": None, "hardware_compat": False, "threads": threads},
        out=out,
        force=True,
    )
    start = time.perf_counter()
    steps: list[list[Any]] = []

    def step(msg: str) -> None:
        steps.append([round(time.perf_counter() - start, 2), msg])
        tell(msg)

    result: dict[str, Any] = {"steps": steps}
    try:
        step("probe: construct the model, check the input size")
        probe_model(req)
    except InvalidInputError as exc:
        return {**result, "status": "n/a", "reason": _one_line(exc), "stage": "model", **_rss()}
    try:
        bundle = run_build(req, step)
    except InvalidInputError as exc:
        return {**result, "status": "n/a", "reason": _one_line(exc), "stage": "build", **_rss()}
    except ParityError as exc:
        traceback.print_exc()
        parity = _failed_report(out)
        return {**result, "status": "fail", "reason": _parity_reason(parity, cell.precision) or _one_line(exc), "stage": "build",
                "parity": parity, "build_s": round(time.perf_counter() - start, 2), **_rss()}
    except Exception as exc:  # ExportError and anything a backend raises: one line here, the traceback in the log
        traceback.print_exc()
        return {**result, "status": "error", "reason": _one_line(exc), "stage": "build", **_rss()}
    result.update(status="pass", stage="build", parity=bundle.manifest.get("parity"), bundle=str(bundle.path),
                  build_s=round(time.perf_counter() - start, 2))
    if int(payload.get("iters", 0)) > 0:
        device = "cuda" if cell.target == "trt" else "cpu"
        result["bench_device"] = device
        step(f"time up to {payload['iters']} runs on {device}")
        try:
            result["latency_ms"] = time_bundle(bundle, device, threads, int(payload["iters"]))
        except Exception as exc:  # timing is a bonus: the cell still passed
            result["bench_error"] = _one_line(exc)
    return {**result, **_rss()}


def probe_model(req: Any) -> None:
    """Construct the model and check the input size before any export: refusals surface in seconds.

    The meta device comes first (no memory, no init). Some constructors cannot run there
    (MiT computes its drop-path rates with ``.item()``); those are built for real on the CPU.
    Only InvalidInputError counts; anything else is left to the build, which reports it with
    full context.
    """
    import warnings

    import torch

    from segexport.arch.registry import get_architecture
    from segexport.pipeline import model_kwargs

    cls = get_architecture(req.arch)
    for device in (torch.device("meta"), contextlib.nullcontext()):
        try:
            with device, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = cls(**model_kwargs(req))
            model.check_input_shape(torch.empty(req.batch, req.in_channels, req.height, req.width, device="meta"))
            return
        except InvalidInputError:
            raise
        except Exception:
            continue


def time_bundle(bundle: Any, device: str, threads: int, iters: int) -> dict[str, float]:
    """Latency figures (ms) of the bundle at its export shape in its own runtime.

    The first warm-up run is timed to size the rest: at most ``iters`` runs, fewer (but at
    least 3) when they would take over BENCH_BUDGET_S, so slow CPU cells do not dominate the run.
    """
    import numpy as np

    from segexport.bench import Latency, time_calls
    from segexport.targets.runners import runner_for

    m = bundle.manifest
    exp = m["export"]
    dtype = np.dtype((m.get("inputs") or [{}])[0].get("dtype", "float32"))
    x = np.random.default_rng(0).standard_normal((exp["batch"], m["in_channels"], exp["height"], exp["width"])).astype(dtype)
    with runner_for(bundle.path, m, device=device, threads=threads) as runner:
        first = time_calls(lambda: runner.infer(x), 0, 1, runner.sync)[0]
        runs = max(min(3, iters), min(iters, int(BENCH_BUDGET_S / max(first, 1e-9))))
        latency = Latency.of(time_calls(lambda: runner.infer(x), BENCH_WARMUP - 1, runs, runner.sync))
    return {**asdict(latency), "runs": runs}


def _failed_report(out: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, json.JSONDecodeError):
        return json.loads((out.with_name(out.name + ".failed") / "report.json").read_text())
    return None


def _parity_reason(parity: Mapping[str, Any] | None, precision: str) -> str | None:
    outputs = (parity or {}).get("outputs") or []
    mask = next((o for o in outputs if o.get("name") == "mask"), outputs[0] if outputs else None)
    if mask is None:
        return None
    text = f"parity: max abs {mask['max_abs']:.1e}"
    if precision != "fp32" and mask.get("agreement") is not None:
        text += f", agreement {mask['agreement']:.2%}"
    return text


def _rss() -> dict[str, float]:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mib": round(rss / 2**20 if sys.platform == "darwin" else rss / 2**10, 1)}


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (its process group no longer gets killed for us)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_main(argv: Sequence[str]) -> int:
    """``python -m segexport.matrix --worker PAYLOAD RESULT``: build one cell, write its result JSON."""
    import faulthandler

    payload_path, result_path = Path(argv[0]), Path(argv[1])
    payload = json.loads(payload_path.read_text())
    faulthandler.enable()  # a segfault leaves its stack in the cell's log
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for stacks before a timeout kill
    _watch_parent(int(payload["parent_pid"]))
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"{_STEP_PREFIX} {time.perf_counter() - start:8.2f} s: {msg}", file=sys.stderr, flush=True)

    try:
        import torch

        torch.set_num_threads(int(payload["threads"]))
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        load_plugins(payload["plugins"])
        import segexport.arch.registry  # noqa: F401  (imports are start-up, not the cell's time)
        import segexport.pipeline  # noqa: F401
    except Exception as exc:
        import traceback

        traceback.print_exc()
        data = {"status": "error", "reason": f"worker start-up failed: {_one_line(exc)}", "stage": "worker"}
    else:
        result_path.with_suffix(".ready").touch()
        say("ready")
        data = run_cell(payload, say)
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=repr))
    os.replace(tmp, result_path)
    return 0


# --------------------------------------------------------------------------- the command


def matrix(
    archs: str = typer.Option("all", "--archs", help="Architectures, comma-separated, or 'all'."),
    encoders: str = typer.Option("resnet34", "--encoders", help="Encoders, comma-separated (e.g. resnet34,mit_b0,tu-convnext_atto)."),
    targets: str = typer.Option("all", "--targets", help="Targets, comma-separated (onnx,torchscript,aoti,trt), or 'all'."),
    precisions: str = typer.Option("fp32,fp16,int8", "--precisions", help="Precisions, comma-separated."),
    height: int = typer.Option(512, help="Input height of every cell."),
    width: int = typer.Option(512, help="Input width of every cell."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images folder (or 'random') for int8 cells; int8 is n/a without it."),
    checkpoints: Optional[str] = typer.Option(
        None, "--checkpoints", help="Folder of trained weights named <arch>-<encoder>.pth (or .safetensors, ...); rows without one use random weights."
    ),
    classes: int = typer.Option(1, "--classes", help="Output classes of every model (as the checkpoints were trained)."),
    arch_arg: list[str] = typer.Option([], "--arch-arg", help="[ARCH:]key=value constructor argument (repeatable); without ARCH: for every architecture."),
    plugin: list[str] = typer.Option([], "--plugin", help="Module or .py file imported first in every worker (registers custom architectures/encoders)."),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="Cells built in parallel (default: fits the cores and memory)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", help="Seconds one cell may take (after its worker's start-up) before the worker is killed."),
    iters: int = typer.Option(10, "--iters", help="Timed runs of each passing bundle (0: no timing)."),
    out: str = typer.Option("matrix", "--out", "-o", help="Folder for matrix.json, matrix.md, logs of failed cells and kept bundles."),
    report: Optional[str] = typer.Option(None, "--report", help="Markdown report file (default <out>/matrix.md)."),
    keep_bundles: bool = typer.Option(False, "--keep-bundles", help="Keep every cell's bundle under <out>/bundles/."),
    resume: bool = typer.Option(False, "--resume", help="Reuse cells of <out>/matrix.json whose inputs and tool versions are unchanged (errors are retried)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (no progress, no table)."),
) -> None:
    """Build every architecture x encoder x target x precision and tabulate export, parity and speed."""
    config = MatrixConfig(
        archs=archs,
        encoders=encoders,
        targets=targets,
        precisions=precisions,
        height=height,
        width=width,
        calib=calib,
        checkpoints=checkpoints,
        classes=classes,
        arch_args=parse_arch_args(arch_arg),
        plugins=list(plugin),
        jobs=jobs,
        timeout=timeout,
        iters=iters,
        out=out,
        report=report,
        keep_bundles=keep_bundles,
        resume=resume,
    )
    result = run_matrix(config, progress=None if as_json else (lambda msg: typer.echo(msg, err=True)))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=repr))
    else:
        typer.echo(result.markdown())
        typer.echo(f"\nWrote {result.report_path} and {result.json_path}", err=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"] and len(sys.argv) == 4:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("This is segexport's matrix worker; run `segexport matrix` instead.")
