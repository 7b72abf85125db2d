"""Cells on this machine: one fresh worker process per cell, supervised (result, crash, timeout).

Every cell runs in ``python -m segexport.matrix --worker`` in its own process group: a
segfault, a hang or a leak in one backend costs one cell, not the run. A worker past the
timeout first dumps its stacks to its log, then its whole group is killed (compiler
sub-processes go too), and the cell is recorded as ``error``.

A fresh process per cell rather than a pool of long-lived workers: a cell's result must
not depend on what ran before it in the same process (registered plugins, backend
globals, CUDA contexts, dynamo caches). Start-up (~5 s of imports) is small next to a build.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from segexport.matrix.model import STARTUP_TIMEOUT_S, Cell, CellJob, CellResult
from segexport.matrix.plan import Plan
from segexport.matrix.worker import READY_SUFFIX, STEP_PREFIX
from segexport.resources import available_cores

#: Threads each worker gets when -j is chosen for the user; exporting is mostly single-threaded
#: Python, so two threads per worker and more workers finish a matrix sooner than the reverse.
THREADS_PER_WORKER = 2
#: Peak RSS of one worker building a 512x512 ResNet-34 U-Net for ONNX is about 2 GiB; 3 GiB leaves headroom.
WORKER_MEMORY_BYTES = 3 * 2**30
POLL_S = 0.2
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")


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


@dataclass
class LocalWorker:
    """One live worker process building one cell."""

    job: CellJob
    proc: subprocess.Popen
    started: float
    result_path: Path
    log_path: Path
    ready_at: float | None = None

    @classmethod
    def start(cls, job: CellJob, work: Path, log_path: Path) -> LocalWorker:
        """Write the job to ``work`` and start its worker, stdout and stderr going to ``log_path``."""
        job_path = work / f"{job.cell.id}.json"
        job_path.write_text(job.to_json())
        result_path = work / f"{job.cell.id}.result.json"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **{var: str(job.threads) for var in _THREAD_VARS}, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "segexport.matrix", "--worker", str(job_path), str(result_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=os.name == "posix",  # its own process group, killed as a whole
            )
        return cls(job, proc, time.monotonic(), result_path, log_path)

    @property
    def cell(self) -> Cell:
        return self.job.cell

    def check(self, timeout: float) -> CellResult | None:
        """The cell's result once the worker is done, died or ran out of time; None while it runs."""
        now = time.monotonic()
        code = self.proc.poll()
        if code is None:
            if self.ready_at is None and self.result_path.with_suffix(READY_SUFFIX).exists():
                self.ready_at = now
            if self.ready_at is not None and now - self.ready_at > timeout:
                step = last_step(self.log_path)
                self.kill(dump_stacks=True)
                reason = f"timed out after {timeout:g} s" + (f" during '{step}'" if step else "") + "; worker killed"
                return self._done(CellResult(self.cell, "error", reason, stage="worker"))
            if self.ready_at is None and now - self.started > STARTUP_TIMEOUT_S:
                self.kill(dump_stacks=True)
                return self._done(CellResult(self.cell, "error", f"worker start-up took over {STARTUP_TIMEOUT_S:g} s; killed", stage="worker"))
            return None
        if self.result_path.exists():
            return self._done(CellResult.from_dict(json.loads(self.result_path.read_text())))
        step, last = last_step(self.log_path), last_message(self.log_path)
        reason = f"worker died ({exit_text(code)})" + (f" during '{step}'" if step else "") + (f": {last}" if last else "")
        return self._done(CellResult(self.cell, "error", reason, stage="worker"))

    def _done(self, result: CellResult) -> CellResult:
        result.cell_s = round(time.monotonic() - self.started, 2)
        result.threads = self.job.threads
        return result

    def kill(self, dump_stacks: bool = False) -> None:
        """Kill the worker's process group (after asking for its stacks when ``dump_stacks``)."""
        if self.proc.poll() is not None:
            return
        if os.name == "posix":
            if dump_stacks:  # the worker's faulthandler writes every thread's stack to the log first
                with contextlib.suppress(OSError):
                    os.kill(self.proc.pid, signal.SIGUSR1)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=1.0)
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.kill()
        self.proc.wait()


class LocalExecutor:
    """Up to ``jobs`` worker processes on this machine at once."""

    def __init__(self, plan: Plan, out: Path, jobs: int, threads: int) -> None:
        self.plan, self.out, self.jobs, self.threads = plan, out, jobs, threads
        self.keep_bundles = plan.config.keep_bundles
        self.running: dict[Cell, LocalWorker] = {}
        self._work: Path | None = None

    @property
    def work(self) -> Path:
        """Scratch folder for jobs and results (bundles too, unless --keep-bundles)."""
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix=".work-", dir=self.out))
        return self._work

    def describe(self) -> str:
        return f"with -j {self.jobs} ({self.threads} thread{'s' * (self.threads != 1)} each)"

    def settings(self) -> dict[str, object]:
        return {"executor": "local"}

    def fits(self, cell: Cell) -> bool:
        return len(self.running) < self.jobs

    def busy(self) -> int:
        return len(self.running)

    def start(self, cell: Cell) -> None:
        root = self.out / "bundles" if self.keep_bundles else self.work / "bundles"
        job = self.plan.job(cell, self.threads, root / cell.id, parent_pid=os.getpid())
        self.running[cell] = LocalWorker.start(job, self.work, self.out / "logs" / f"{cell.id}.log")

    def poll(self) -> list[CellResult]:
        time.sleep(POLL_S)
        done = []
        for cell, worker in list(self.running.items()):
            result = worker.check(self.plan.config.timeout)
            if result is not None:
                del self.running[cell]
                done.append(self._settle(worker, result))
        return done

    def _settle(self, worker: LocalWorker, result: CellResult) -> CellResult:
        """Keep the log of a failed cell and the bundles asked for; remove the rest."""
        if result.status in ("pass", "n/a"):
            worker.log_path.unlink(missing_ok=True)
        else:
            result.log = str(worker.log_path)
        bundle_dir = Path(worker.job.bundle_dir)
        failed = bundle_dir.with_name(bundle_dir.name + ".failed")
        if self.keep_bundles and result.status == "fail" and failed.is_dir():
            result.bundle = str(failed)  # the artifact and report.json of the failed parity check
        if not self.keep_bundles:
            shutil.rmtree(bundle_dir, ignore_errors=True)
            shutil.rmtree(failed, ignore_errors=True)
            result.bundle = None
        return result

    def close(self) -> None:
        """Stop every live worker (interrupt or error in the parent) and remove the scratch folder."""
        for worker in self.running.values():
            worker.kill()
        self.running.clear()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)


def last_step(log: Path) -> str | None:
    """The step a worker last announced in its log."""
    with contextlib.suppress(OSError):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith(STEP_PREFIX):
                return line.split(": ", 1)[-1].strip()
    return None


def last_message(log: Path) -> str | None:
    """The line of a dead worker's log that best says why: a fatal error, else the last unindented line."""
    with contextlib.suppress(OSError):
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(STEP_PREFIX)]
        fatal = [ln for ln in lines if ln.startswith("Fatal Python error")]
        plain = [ln for ln in lines if not ln[0].isspace() and not ln.startswith(("Current thread", "Thread 0x", "Traceback"))]
        pick = fatal[-1] if fatal else plain[-1] if plain else None
        return pick[:200] if pick else None
    return None


def exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"
