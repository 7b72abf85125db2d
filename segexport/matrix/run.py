"""A matrix run: plan, reuse what ``--resume`` allows, hand the rest to an executor, record.

The executor is local worker processes (:mod:`segexport.matrix.local`) or Ray tasks
(:mod:`segexport.matrix.ray`); both meet :class:`Executor`, so planning, the row-level
``n/a`` shortcut, ``--resume`` and the files written are the same for both. Results go to
``<out>/matrix.json`` after every cell, so an interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from segexport.atomic import write_atomic
from segexport.matrix.model import BENCH_BUDGET_S, BENCH_WARMUP, JSON_NAME, MARKDOWN_NAME, Cell, CellResult, MatrixConfig, MatrixReport, Progress
from segexport.matrix.plan import Plan, plan_matrix, precheck
from segexport.matrix.report import one_line, progress_text, time_text


class Executor(Protocol):
    """Where cells run, a row's group of cells per worker. ``poll`` waits briefly and returns the
    cells finished since the last call, with ``cell_s``, ``threads``, ``log`` and ``bundle``
    already as they are on this machine."""

    jobs: int
    threads: int
    #: Whether a row's GPU cells go to a worker of their own (one that asks for a GPU).
    gpu_apart: bool

    def describe(self) -> str: ...

    def settings(self) -> dict[str, object]: ...

    def fits(self, cells: Sequence[Cell]) -> bool: ...

    def busy(self) -> int: ...

    def start(self, cells: Sequence[Cell]) -> None: ...

    def poll(self) -> list[CellResult]: ...

    def close(self) -> None: ...


def run_cells(groups: Sequence[Sequence[Cell]], executor: Executor, results: dict[Cell, CellResult],
              record: Callable[[CellResult], None], say: Progress) -> None:
    """Start the groups (each a row's cells, for one worker) as the executor has room, record each result as it comes.

    When a model refuses its encoder (an ``n/a`` from the construction probe), no target or
    precision changes that: the row's cells in groups still pending are answered without a worker.
    """
    pending = [tuple(g) for g in groups]
    while pending or executor.busy():
        for group in list(pending):
            left = tuple(c for c in group if c not in results)  # a row-level n/a may have answered some
            if not left:
                pending.remove(group)
            elif executor.fits(left):
                pending.remove(group)
                executor.start(left)
                say(f"  start {left[0].label()}" + (f" and {len(left) - 1} more of its row" if len(left) > 1 else ""))
        for result in executor.poll():
            record(result)
            if result.status == "n/a" and result.stage == "model":
                for other in [c for g in pending for c in g if c.row == result.cell.row and c not in results]:
                    record(CellResult(other, "n/a", result.reason, stage="model", decided_by=result.cell.id))


def open_executor(plan: Plan, out: Path) -> Executor:
    """Local worker processes, or Ray tasks with ``config.ray`` (ray is imported only then)."""
    config = plan.config
    if config.ray is not None:
        from segexport.matrix.ray import RayExecutor

        return RayExecutor(plan, out, config.ray)
    from segexport.matrix.local import LocalExecutor, default_jobs, threads_per_job
    from segexport.resources import available_memory

    jobs = config.jobs if config.jobs is not None else default_jobs(memory=available_memory())
    return LocalExecutor(plan, out, jobs, threads_per_job(jobs))


def run_matrix(config: MatrixConfig, progress: Progress | None = None) -> MatrixReport:
    """Run every cell of ``config``; writes matrix.json and the Markdown report."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    plan = plan_matrix(config)
    out = Path(config.out)
    executor = open_executor(plan, out)  # a Ray cluster that cannot be reached fails here, before any folder is made
    try:
        return _run(plan, executor, out, say, started)
    finally:
        executor.close()


def _run(plan: Plan, executor: Executor, out: Path, say: Progress, started: float) -> MatrixReport:
    from segexport.arch.registry import get_architecture

    config = plan.config
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    report_path = Path(config.report) if config.report is not None else out / MARKDOWN_NAME
    previous = load_previous(json_path, say) if config.resume else {}
    results: dict[Cell, CellResult] = {}
    todo: list[Cell] = []
    for cell in plan.cells:
        result = precheck(cell, plan.targets[cell.target], get_architecture(cell.arch), config.calib)
        old = previous.get(plan.keys[cell])
        if result is None and old is not None and old.status in ("pass", "fail", "n/a"):
            result = old
            result.resumed = True
        if result is None:
            todo.append(cell)
        else:
            result.key = plan.keys[cell]
            results[cell] = result
    report = MatrixReport(
        cells=[],
        archs=plan.archs,
        encoders=plan.encoders,
        columns=plan.columns,
        versions=dict(plan.versions),
        settings=_settings(plan, executor),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        complete=False,
        json_path=json_path,
        report_path=report_path,
    )

    def save() -> None:
        report.cells = [results[c] for c in plan.cells if c in results]
        report.wall_s = time.monotonic() - started
        write_atomic(json_path, json.dumps(report.to_dict(), indent=2, default=repr) + "\n")

    def record(result: CellResult) -> None:
        result.key = plan.keys[result.cell]
        results[result.cell] = result
        done = len(results)
        failed = sum(r.status in ("fail", "error") for r in results.values())
        say(f"[{done}/{len(plan.cells)}] {progress_text(result)}  (done {done}, failed {failed}, running {executor.busy()})")
        save()

    resumed = sum(r.resumed for r in results.values())
    say(
        f"matrix: {len(plan.cells)} cells ({len(plan.archs)} archs x {len(plan.encoders)} encoders x {len(plan.columns)} target/precision); "
        f"{len(results) - resumed} decided up front, {resumed} resumed, {len(todo)} to build "
        f"{executor.describe()}, timeout {config.timeout:g} s"
    )
    try:
        run_cells(plan.groups(todo, executor.gpu_apart), executor, results, record, say)
        report.complete = True
    finally:
        executor.close()
        save()
        with contextlib.suppress(OSError):
            (out / "logs").rmdir()  # only when empty: no cell failed
    report.cells = [results[c] for c in plan.cells]
    save()
    say(time_text(report))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.markdown() + "\n")
    return report


def _settings(plan: Plan, executor: Executor) -> dict[str, object]:
    config = plan.config
    return {
        "height": config.height,
        "width": config.width,
        "batch": 1,
        "calib": config.calib,
        "classes": config.classes,
        "checkpoints": {f"{a}-{e}": path.name for (a, e), path in plan.checkpoints.items()},
        "arch_args": dict(plan.arch_args),
        "plugins": list(config.plugins),
        "jobs": executor.jobs,
        "threads_per_job": executor.threads,
        "timeout_s": config.timeout,
        "iters": config.iters,
        "bench_warmup": BENCH_WARMUP,
        "bench_budget_s": BENCH_BUDGET_S,
        "keep_bundles": config.keep_bundles,
        **executor.settings(),
    }


def load_previous(path: Path, say: Progress) -> dict[str, CellResult]:
    """Cells of the previous run in --out, by key; nothing (with a note) when there is none or it is unreadable."""
    if not path.is_file():
        say(f"matrix: --resume found no {path}; running every cell")
        return {}
    try:
        data = json.loads(path.read_text())
        return {c["key"]: CellResult.from_dict(c) for c in data.get("cells", []) if c.get("key")}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        say(f"matrix: cannot read {path} ({one_line(exc)}); running every cell")
        return {}
