"""Cells as Ray tasks: ``segexport matrix --ray [ADDRESS]``.

Each row's group of cells is one Ray task that supervises ordinary worker processes on the
node Ray picks (:class:`~segexport.matrix.local.RowRun`: the same per-cell timeout, stack
dump, process-group kill, crash reports and fresh worker for the cells after a crash as on
one machine). Nothing assumes a shared disk:
the row's weights, the calibration set (int8 cells) and plugin files travel to the node
through Ray's object store, and the cell's log (failed cells) and, with
``--keep-bundles``, its bundle come back as bytes that the driver writes under ``--out``.

Resources: a task asks for ``threads`` CPUs; on a cluster with GPUs, a row's cells that run
CUDA when a GPU is there (TensorRT, fp16 TorchScript) are a task of their own that also asks for one; on a cluster without
GPUs those cells run on CPUs and answer as on a CPU-only machine. The driver starts no
more tasks than the cluster's nodes have room for, so a task starts when it is submitted.

A task that fails as a whole (its Ray worker killed, its node lost) is an error for each of
its cells; so is one that gives no answer long after its cells' own timeouts (it is
cancelled), and one from a node whose tool versions differ from this machine's (the table
names one set).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from segexport.errors import InvalidInputError
from segexport.matrix.fingerprints import tool_versions
from segexport.matrix.local import POLL_S, THREADS_PER_WORKER, RowRun
from segexport.matrix.model import STARTUP_TIMEOUT_S, Cell, CellResult, RaySettings, RowJob
from segexport.matrix.plan import Plan
from segexport.matrix.plugins import is_file_plugin
from segexport.matrix.report import one_line

#: Slack past the worker's own start-up and cell timeouts before the driver gives up on a task.
BACKSTOP_GRACE_S = 300.0


@dataclass(frozen=True)
class NodeInputs:
    """Files a task writes into its scratch folder before the build: relative path → object ref of the bytes."""

    files: Mapping[str, Any]
    #: Relative path of the row's weights file, when the row has one.
    checkpoint: str | None = None
    #: Relative path of the calibration folder or file, when the cell reads one.
    calib: str | None = None


@dataclass(frozen=True)
class CellReturn:
    """What a task sends back: the result, where and with what it was built, its log and bundle."""

    result: CellResult
    node: str
    versions: Mapping[str, str | None]
    #: The worker's log, for cells that failed or errored.
    log: str | None = None
    #: Relative path → bytes of the bundle folder (or of ``<id>.failed``), with --keep-bundles.
    bundle: Mapping[str, bytes] | None = None
    bundle_name: str | None = None


def _plugin_path(index: int, plugin: str) -> str:
    return f"plugins/{index}/{Path(plugin).name}"


def build_on_node(job: RowJob, inputs: NodeInputs, timeout: float, ship_bundle: bool) -> list[CellReturn]:
    """The Ray task: write the inputs, run ``job``'s cells to their end, pack what goes back for each."""
    import ray

    with tempfile.TemporaryDirectory(prefix="segexport-matrix-") as tmp:
        root = Path(tmp)
        contents = ray.get(list(inputs.files.values()))
        for rel, data in zip(inputs.files, contents):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        job = replace(
            job,
            checkpoint=str(root / inputs.checkpoint) if inputs.checkpoint else None,
            calib=str(root / inputs.calib) if inputs.calib else job.calib,
            plugins=tuple(str(root / _plugin_path(i, p)) if is_file_plugin(p) else p for i, p in enumerate(job.plugins)),
            bundle_root=str(root / "bundles"),
            log_dir=str(root / "logs"),
            parent_pid=os.getpid(),
        )
        run = RowRun(job, root)
        results: list[CellResult] = []
        try:
            while not run.finished:
                results += run.check(timeout)
                time.sleep(POLL_S)
        finally:
            run.kill()  # also on ray.cancel: the KeyboardInterrupt lands in the loop above
        node, versions = socket.gethostname(), tool_versions()
        back = []
        for result in results:
            log_path = job.log_path(result.cell)
            log = log_path.read_text(errors="replace") if result.status not in ("pass", "n/a") and log_path.exists() else None
            bundle, name = None, None
            built = job.bundle_dir(result.cell)
            source = built if result.status == "pass" else built.with_name(built.name + ".failed")
            if ship_bundle and result.status in ("pass", "fail") and source.is_dir():
                bundle = {str(p.relative_to(source)): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file() and not p.is_symlink()}
                name = source.name
            result.bundle = None
            back.append(CellReturn(result, node, versions, log, bundle, name))
        return back


@dataclass
class _Task:
    cells: tuple[Cell, ...]
    gpu: bool
    submitted: float


class RayExecutor:
    """Cells as Ray tasks on the cluster at ``settings.address`` (see the module docstring)."""

    def __init__(self, plan: Plan, out: Path, settings: RaySettings) -> None:
        self.plan, self.out, self.where = plan, out, settings
        self.ray, self._owned = _connect(settings)
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        node_cpus = [int(n["Resources"]["CPU"]) for n in nodes] or [int(self.ray.cluster_resources().get("CPU", 1))]
        self.nodes, self.cpus = len(node_cpus), sum(node_cpus)
        self.gpus = int(self.ray.cluster_resources().get("GPU", 0))
        self.gpu_apart = self.gpus > 0  # a row's GPU cells are a task that asks for a GPU, its other cells one that does not
        jobs = plan.config.jobs
        self.threads = max(1, min(max(node_cpus), self.cpus // jobs)) if jobs else min(THREADS_PER_WORKER, max(node_cpus))
        slots = sum(c // self.threads for c in node_cpus)
        self.jobs = max(1, min(jobs, slots) if jobs else slots)
        self.timeout = plan.config.timeout
        self.running: dict[Any, _Task] = {}
        self._remote = self.ray.remote(max_retries=0)(build_on_node)
        self._refs: dict[Path, Any] = {}
        self._plugin_files = {_plugin_path(i, p): self._put(Path(p)) for i, p in enumerate(plan.config.plugins) if is_file_plugin(p)}
        self._calib_files = self._calib_inputs(plan.config.calib)

    def _put(self, path: Path) -> Any:
        """An object ref of the file's bytes, put once per run."""
        if path not in self._refs:
            self._refs[path] = self.ray.put(path.read_bytes())
        return self._refs[path]

    def _calib_inputs(self, calib: str | None) -> tuple[str | None, dict[str, Any]]:
        if calib is None or calib == "random":
            return None, {}
        root = Path(calib)
        if root.is_file():
            return f"calib/{root.name}", {f"calib/{root.name}": self._put(root)}
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return "calib", {f"calib/{p.relative_to(root)}": self._put(p) for p in files}

    def describe(self) -> str:
        gpu_cells = any(self.plan.uses_gpu(c) for c in self.plan.cells)
        where = (f"on Ray ({self.cpus} CPUs, {self.gpus} GPU{'s' * (self.gpus != 1)} on {self.nodes} node{'s' * (self.nodes != 1)}"
                 + ("; cells that would use a GPU run on CPUs" if gpu_cells and not self.gpus else "") + ")")
        return f"{where} with up to {self.jobs} at once ({self.threads} thread{'s' * (self.threads != 1)} each)"

    def settings(self) -> dict[str, object]:
        return {"executor": "ray", "ray_address": self.where.address, "ray_nodes": self.nodes, "ray_cpus": self.cpus, "ray_gpus": self.gpus}

    def fits(self, cells: Sequence[Cell]) -> bool:
        if len(self.running) >= self.jobs:
            return False
        gpu = self._uses_gpu(cells)
        return not gpu or sum(t.gpu for t in self.running.values()) < self.gpus

    def _uses_gpu(self, cells: Sequence[Cell]) -> bool:
        return self.gpus > 0 and any(self.plan.uses_gpu(c) for c in cells)

    def busy(self) -> int:
        return len(self.running)

    def start(self, cells: Sequence[Cell]) -> None:
        row = cells[0].row
        job = self.plan.job(cells, self.threads, Path("bundles"), Path("logs"))  # the node roots every path in its scratch folder
        files: dict[str, Any] = dict(self._plugin_files)
        checkpoint = None
        if row in self.plan.checkpoints:
            path = self.plan.checkpoints[row]
            checkpoint = f"weights/{path.name}"
            files[checkpoint] = self._put(path)
        calib = None
        if any(c.precision == "int8" for c in cells):
            calib, calib_files = self._calib_files
            files.update(calib_files)
        gpu = self._uses_gpu(cells)
        ref = self._remote.options(num_cpus=self.threads, num_gpus=1 if gpu else 0, name=f"segexport-matrix {job.id}").remote(
            job, NodeInputs(files, checkpoint, calib), self.timeout, self.plan.config.keep_bundles
        )
        self.running[ref] = _Task(tuple(cells), gpu, time.monotonic())

    def poll(self) -> list[CellResult]:
        if not self.running:
            time.sleep(POLL_S)
            return []
        refs = list(self.running)
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_S, fetch_local=False)
        done = []
        for ref in refs:
            task = self.running[ref]
            if ref in ready:
                done += self._collect(ref, task)
            elif time.monotonic() - task.submitted > self._backstop(task):
                self.ray.cancel(ref, force=True)
                reason = f"no answer from its Ray task within {self._backstop(task):g} s (the node enforces --timeout; the task itself is stuck); cancelled"
                done += [CellResult(cell, "error", reason, stage="worker") for cell in task.cells]
            else:
                continue
            del self.running[ref]
        return done

    def _backstop(self, task: _Task) -> float:
        """How long the driver waits for a task: each cell's timeout, and start-up for each worker it may need."""
        return 2 * (STARTUP_TIMEOUT_S + self.timeout) * len(task.cells) + BACKSTOP_GRACE_S

    def _collect(self, ref: Any, task: _Task) -> list[CellResult]:
        try:
            returns: list[CellReturn] = self.ray.get(ref)
        except Exception as exc:  # RayError (worker or node died, cancelled) and anything raised inside the task
            cause = getattr(exc, "cause", None)
            reason = f"Ray task failed: {one_line(cause if isinstance(cause, BaseException) else exc)}"
            return [CellResult(cell, "error", reason, stage="worker") for cell in task.cells]
        return [self._receive(back) for back in returns]

    def _receive(self, back: CellReturn) -> CellResult:
        result = back.result
        cell = result.cell
        result.node = back.node
        differ = [f"{k} {v}" + f" (this machine {self.plan.versions.get(k)})" for k, v in back.versions.items() if v != self.plan.versions.get(k)]
        if differ:
            reason = f"node {back.node} runs {', '.join(differ)}: install the same versions on every node"
            result = CellResult(cell, "error", reason, stage="worker", cell_s=result.cell_s, threads=result.threads, node=back.node)
        if back.log is not None:
            log = self.out / "logs" / f"{cell.id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(back.log)
            result.log = str(log)
        if back.bundle is not None and back.bundle_name is not None and not differ:
            result.bundle = str(_write_tree(self.out / "bundles" / back.bundle_name, back.bundle))
        return result

    def close(self) -> None:
        """Cancel what still runs (each task kills its worker's process group) and leave Ray if this run joined it."""
        for ref in self.running:
            self.ray.cancel(ref, force=False)
        self.running.clear()
        self._refs.clear()
        if self._owned:
            self._owned = False
            self.ray.shutdown()


def _connect(settings: RaySettings) -> tuple[Any, bool]:
    """The ray module, connected; True when this call made the connection (and closes it afterwards)."""
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError("--ray needs Ray on this machine and on every node: pip install 'segexport[ray]'.") from exc
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=settings.address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(
            f"--ray {settings.address or ''}: cannot connect to a Ray cluster ({one_line(exc)}). Start one with "
            "`ray start --head` and pass 'auto' on one of its nodes, or ray://HEAD:10001 from elsewhere."
        ) from exc
    return ray, True


def _write_tree(dest: Path, files: Mapping[str, bytes]) -> Path:
    """Write a folder that came back from a node (paths stay inside ``dest``); replaces an older one."""
    shutil.rmtree(dest, ignore_errors=True)
    for rel, data in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise InvalidInputError(f"A node sent back {rel!r} for {dest.name}; only paths inside the bundle are allowed.")
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return dest.resolve()
