"""From a :class:`MatrixConfig` to a plan: validated names, arguments, weights, keys, and the
cells the parent can answer without a worker.

Everything the user could have mistyped fails here, before any folder is made or any
worker started. Cells that cannot apply are ``n/a`` with the reason, never dropped:
a target whose module cannot be imported, a precision the target does not offer, a
target the architecture declares unsupported, int8 without ``--calib``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segexport.arguments import parse_arch_args as parse_pairs
from segexport.bundle import sha256_file
from segexport.checks import check_int
from segexport.errors import InvalidInputError, closest, unknown
from segexport.matrix.fingerprints import calib_fingerprint, cell_key, tool_versions
from segexport.matrix.model import Cell, CellResult, MatrixConfig, RowJob
from segexport.matrix.plugins import is_file_plugin, load_plugins, plugins_fingerprint
from segexport.matrix.report import one_line
from segexport.pipeline import PRECISIONS

#: precision → device, for targets that run CUDA when a GPU is there and do not say so themselves
#: (a ``devices`` attribute on the target wins): TensorRT engines are built, validated and timed
#: on the GPU; fp16 TorchScript is traced and validated on CUDA.
_CUDA_WITHOUT_DECLARATION: dict[str, dict[str, str]] = {
    "trt": {p: "cuda" for p in PRECISIONS},
    "torchscript": {"fp16": "cuda"},
}


@dataclass(frozen=True)
class TargetInfo:
    """What the planner knows of one target: its precisions and devices, or why it cannot be used."""

    precisions: tuple[str, ...] = ()
    #: precision → "cuda" where the target runs CUDA when a GPU is there (others run on the CPU).
    devices: Mapping[str, str] = field(default_factory=dict)
    #: Set when the target cannot be used at all: "n/a" (not installed) or "error" (broken module).
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Plan:
    """A validated run: every cell in table order, its key, and what the workers need to build it."""

    config: MatrixConfig
    archs: list[str]
    encoders: list[str]
    columns: list[tuple[str, str]]
    cells: list[Cell]
    arch_args: Mapping[str, Mapping[str, Any]]
    targets: Mapping[str, TargetInfo]
    #: (arch, encoder) → weights file on this machine.
    checkpoints: Mapping[tuple[str, str], Path]
    keys: Mapping[Cell, str]
    versions: Mapping[str, str | None]

    def uses_gpu(self, cell: Cell) -> bool:
        """Whether the cell runs CUDA when a GPU is there (a Ray task for it asks for one)."""
        return self.targets[cell.target].devices.get(cell.precision) == "cuda"

    def job(self, cells: Sequence[Cell], threads: int, bundle_root: Path, log_dir: Path, parent_pid: int | None = None) -> RowJob:
        """The worker's job for ``cells`` (one row), with paths as they are on this machine."""
        config = self.config
        row = cells[0].row
        return RowJob(
            cells=tuple(cells),
            height=config.height,
            width=config.width,
            classes=config.classes,
            arch_args=dict(self.arch_args[row[0]]),
            calib=config.calib,
            checkpoint=str(self.checkpoints[row].resolve()) if row in self.checkpoints else None,
            plugins=tuple(str(Path(p).resolve()) if is_file_plugin(p) else p for p in config.plugins),
            threads=threads,
            iters=config.iters,
            bundle_root=str(bundle_root.resolve()),
            log_dir=str(log_dir.resolve()),
            parent_pid=parent_pid,
        )

    def groups(self, cells: Sequence[Cell], gpu_apart: bool = False) -> list[tuple[Cell, ...]]:
        """``cells`` as the jobs of row workers: a row's cells together, in table order; with
        ``gpu_apart`` the cells that use a GPU form their own group (a Ray task for them asks for one)."""
        grouped: dict[tuple[tuple[str, str], bool], list[Cell]] = {}
        for cell in cells:
            grouped.setdefault((cell.row, gpu_apart and self.uses_gpu(cell)), []).append(cell)
        return [tuple(group) for group in grouped.values()]


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


def resolve_names(config: MatrixConfig) -> tuple[list[str], list[str], list[str], list[str]]:
    """Architectures, encoders, targets and precisions of the run, validated (typos fail before any work).

    Without plugins the names are first checked against the static table, so a typo is
    answered before torch and timm load; plugins may register names the table lacks.
    """
    if not config.plugins:
        from segexport import names

        for check, given in ((names.check_architecture, config.archs), (names.check_encoder, config.encoders),
                             (names.check_target, config.targets)):  # fmt: skip
            for name in split_names(given) or []:
                check(name)
    from segexport.arch.encoders import TIMM_PREFIX, get_entry
    from segexport.arch.encoders.renamed import renamed_encoder
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
    for name in map(renamed_encoder, encoders):  # SMP's former timm-* names are tu- models now
        if name.startswith(TIMM_PREFIX):
            import timm

            model = name[len(TIMM_PREFIX):]
            if not timm.is_model(model):
                raise InvalidInputError(f"Unknown timm model {model!r} in encoder {name!r}.{closest(model, timm.list_models())}")
        else:
            get_entry(name)
    targets = split_names(config.targets)
    targets = [t.lower() for t in (list_targets() if targets is None else targets)]
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


def check_config(config: MatrixConfig) -> None:
    """Numbers the user gave that cannot work (the names are checked by :func:`resolve_names`)."""
    for name in ("height", "width"):
        check_int(name, getattr(config, name))
    check_int("--classes", config.classes)
    if config.jobs is not None:
        check_int("-j", config.jobs)
    if not config.timeout > 0:
        raise InvalidInputError(f"--timeout must be > 0 seconds; got {config.timeout!r}.")
    if config.iters < 0:
        raise InvalidInputError(f"--iters must be >= 0; got {config.iters}.")


def target_info(name: str) -> TargetInfo:
    """Precisions and devices of target ``name``, or why it cannot be used (missing module: n/a; broken module: error)."""
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
            reason = f"{name} target unavailable: {one_line(exc)}"
        return TargetInfo(status="n/a", reason=reason)
    except Exception as exc:  # a target module that exists but is broken is a bug worth showing
        return TargetInfo(status="error", reason=f"target {name} failed to load: {one_line(exc)}")
    devices = getattr(target, "devices", None)
    devices = dict(devices) if devices is not None else _CUDA_WITHOUT_DECLARATION.get(name, {})
    return TargetInfo(precisions=tuple(getattr(target, "precisions", PRECISIONS)), devices=devices)


def precheck(cell: Cell, info: TargetInfo, arch_cls: type, calib: str | None) -> CellResult | None:
    """An ``n/a``/``error`` result when the parent can tell without a worker, else None."""
    if info.status is not None:
        return CellResult(cell, info.status, info.reason, stage="plan")
    unsupported = getattr(arch_cls, "unsupported_targets", {}) or {}
    if cell.target in unsupported:
        return CellResult(cell, "n/a", f"{cell.arch} does not support {cell.target}: {unsupported[cell.target]}", stage="plan")
    if cell.precision not in info.precisions:
        return CellResult(cell, "n/a", f"{cell.target} offers {', '.join(info.precisions)}", stage="plan")
    if cell.precision == "int8" and not calib:
        return CellResult(cell, "n/a", "int8 needs --calib", stage="plan")
    return None


def plan_matrix(config: MatrixConfig) -> Plan:
    """Validate ``config`` and fingerprint every cell (plugins are imported into this process)."""
    load_plugins(config.plugins)
    check_config(config)
    archs, encoders, targets, precisions = resolve_names(config)
    arch_args = resolve_arch_args(config.arch_args, archs)
    calib_fp = calib_fingerprint(config.calib)
    checkpoints = row_checkpoints(config.checkpoints, [(a, e) for a in archs for e in encoders])
    digests = {row: sha256_file(path)[:16] for row, path in checkpoints.items()}  # weights decide outcomes as versions do
    versions = tool_versions()
    plugin_prints = plugins_fingerprint(config.plugins)
    columns = [(t, p) for t in targets for p in precisions]
    cells = [Cell(a, e, t, p) for a in archs for e in encoders for t, p in columns]
    keys = {
        c: cell_key(c, arch_args[c.arch], config.height, config.width, calib_fp, versions, plugin_prints, digests.get(c.row), config.classes)
        for c in cells
    }
    return Plan(config, archs, encoders, columns, cells, arch_args, {t: target_info(t) for t in targets}, checkpoints, keys, versions)
