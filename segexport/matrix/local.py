"""Cells on this machine: a worker process per row, supervised (results, crashes, timeouts).

A worker (``python -m segexport.matrix --worker``) builds the cells of one row in turn,
sharing the row's model, eager references and ONNX graph (:mod:`~segexport.matrix.worker`),
in its own process group. Each cell has its own timeout, counted from the moment it
starts, and its own log. A worker past a cell's timeout first dumps its stacks to that
cell's log, then its whole group is killed (compiler sub-processes go too) and the cell
is recorded as ``error``; so is the cell a worker crashed in. The row's cells that had
not started yet then go to a fresh worker (:class:`RowRun`), so a segfault, a hang or a
leak in one backend costs one cell, not its row or the run.

One process per row rather than per cell: start-up (imports, plugins) is paid once per
row, and the row's model, references and fp32 graph are made once instead of once per
target and precision. Between cells the worker resets dynamo's caches; nothing else a
cell makes outlives it in the process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segexport.matrix.model import STARTUP_TIMEOUT_S, Cell, CellResult, RowJob
from segexport.matrix.plan import Plan
from segexport.matrix.worker import READY_NAME, RESULT_SUFFIX, STARTED_SUFFIX, STEP_PREFIX
from segexport.resources import available_cores

#: Threads each worker gets when -j is chosen for the user; exporting is mostly single-threaded
#: Python, so two threads per worker and more workers finish a matrix sooner than the reverse.
THREADS_PER_WORKER = 2
#: Peak RSS of one worker building a 512x512 ResNet-34 U-Net for ONNX is about 2 GiB; 3 GiB leaves headroom.
WORKER_MEMORY_BYTES = 3 * 2**30
POLL_S = 0.2
#: How long a worker that has written every result may take to exit before it is killed.
EXIT_WAIT_S = 10.0
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
    """One live worker process building the cells of one row job in turn."""

    job: RowJob
    proc: subprocess.Popen
    started: float
    results: Path
    #: The worker's own output before its first cell and after its last (start-up errors).
    log_path: Path
    ready_at: float | None = None
    #: When each cell was seen to start (monotonic clock), and the cells whose result was taken.
    cell_started: dict[Cell, float] = field(default_factory=dict)
    collected: set[Cell] = field(default_factory=set)

    @classmethod
    def start(cls, job: RowJob, work: Path) -> LocalWorker:
        """Write the job to ``work`` and start its worker; its results go to ``work/<job id>/``."""
        results = work / job.id
        results.mkdir(parents=True, exist_ok=True)
        job_path = work / f"{job.id}.json"
        job_path.write_text(job.to_json())
        log_path = work / f"{job.id}.log"
        env = {**os.environ, **{var: str(job.threads) for var in _THREAD_VARS}, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "segexport.matrix", "--worker", str(job_path), str(results)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=os.name == "posix",  # its own process group, killed as a whole
            )
        return cls(job, proc, time.monotonic(), results, log_path)

    @property
    def unstarted(self) -> list[Cell]:
        """Cells the worker never began (after it ended: the ones a new worker should build)."""
        return [c for c in self.job.cells if c not in self.cell_started and c not in self.collected]

    def check(self, timeout: float) -> tuple[list[CellResult], bool]:
        """Results finished since the last call, and whether the worker is gone (done, dead or killed)."""
        now = time.monotonic()
        done = self._collect(now)
        code = self.proc.poll()
        if code is None:
            if self.ready_at is None and (self.results / READY_NAME).exists():
                self.ready_at = now
            running = [c for c in self.cell_started if c not in self.collected]
            if running and now - self.cell_started[running[0]] > timeout:
                cell = running[0]
                step = last_step(self.job.log_path(cell))
                self.kill(dump_stacks=True)
                reason = f"timed out after {timeout:g} s" + (f" during '{step}'" if step else "") + "; worker killed"
                return [*done, self._settled(cell, CellResult(cell, "error", reason, stage="worker"))], True
            if self.ready_at is None and now - self.started > STARTUP_TIMEOUT_S:
                self.kill(dump_stacks=True)
                reason = f"worker start-up took over {STARTUP_TIMEOUT_S:g} s; killed"
                return [*done, *(self._settled(c, CellResult(c, "error", reason, stage="worker")) for c in self.unstarted)], True
            return done, False
        done += self._collect(time.monotonic())
        died = [c for c in self.cell_started if c not in self.collected]
        for cell in died:  # the worker crashed inside this cell
            log = self.job.log_path(cell)
            step, last = last_step(log), last_message(log)
            reason = f"worker died ({exit_text(code)})" + (f" during '{step}'" if step else "") + (f": {last}" if last else "")
            done.append(self._settled(cell, CellResult(cell, "error", reason, stage="worker")))
        if not self.cell_started and self.unstarted:  # it died before any cell: a new worker would too
            last = last_message(self.log_path)
            reason = f"worker died before its first cell ({exit_text(code)})" + (f": {last}" if last else "")
            done += [self._settled(c, CellResult(c, "error", reason, stage="worker")) for c in self.unstarted]
        return done, True

    def _collect(self, now: float) -> list[CellResult]:
        done = []
        for cell in self.job.cells:
            if cell in self.collected:
                continue
            if cell not in self.cell_started and (self.results / f"{cell.id}{STARTED_SUFFIX}").exists():
                self.cell_started[cell] = self._began(cell, now)
            path = self.results / f"{cell.id}{RESULT_SUFFIX}"
            if path.exists():
                self.cell_started.setdefault(cell, self._began(cell, now))
                done.append(self._settled(cell, CellResult.from_dict(json.loads(path.read_text()))))
        return done

    def _began(self, cell: Cell, now: float) -> float:
        """When the worker began ``cell``, on this process's monotonic clock: the worker writes its
        wall-clock start into the ``.started`` file, so a cell is timed from its start, not from
        the poll that noticed it (which would make a cell shorter than its own build)."""
        try:
            wall = float((self.results / f"{cell.id}{STARTED_SUFFIX}").read_text())
        except (OSError, ValueError):
            return now
        return now - max(0.0, time.time() - wall)

    def _settled(self, cell: Cell, result: CellResult) -> CellResult:
        self.collected.add(cell)
        began = self.cell_started.get(cell, self.ready_at or self.started)
        result.cell_s = round(time.monotonic() - began, 2)
        result.threads = self.job.threads
        log = self.job.log_path(cell)
        if result.stage == "worker" and not log.exists() and self.log_path.exists():
            log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log_path, log)  # a start-up failure: the worker's own log says why
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


class RowRun:
    """A row job driven to its end: when its worker dies or is killed in a cell, the cells it
    had not started go to a fresh worker."""

    def __init__(self, job: RowJob, work: Path) -> None:
        self.job, self.work = job, work
        self.worker: LocalWorker | None = LocalWorker.start(job, work)

    @property
    def finished(self) -> bool:
        return self.worker is None

    def check(self, timeout: float) -> list[CellResult]:
        """Results finished since the last call (starting the next worker when one is needed)."""
        if self.worker is None:
            return []
        done, gone = self.worker.check(timeout)
        if not gone and self.worker.collected.issuperset(self.worker.job.cells):
            with contextlib.suppress(subprocess.TimeoutExpired):  # every result is in: the worker is only exiting
                self.worker.proc.wait(timeout=EXIT_WAIT_S)
            self.worker.kill()
            gone = True
        if gone:
            rest = self.worker.unstarted
            self.worker = LocalWorker.start(dataclasses.replace(self.job, cells=tuple(rest)), self.work) if rest else None
        return done

    def kill(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None


class LocalExecutor:
    """Up to ``jobs`` row workers on this machine at once."""

    gpu_apart = False  # a worker here builds a row's CPU and GPU cells alike

    def __init__(self, plan: Plan, out: Path, jobs: int, threads: int) -> None:
        self.plan, self.out, self.jobs, self.threads = plan, out, jobs, threads
        self.keep_bundles = plan.config.keep_bundles
        self.running: list[RowRun] = []
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

    def fits(self, cells: Sequence[Cell]) -> bool:
        return len(self.running) < self.jobs

    def busy(self) -> int:
        return len(self.running)

    def start(self, cells: Sequence[Cell]) -> None:
        root = self.out / "bundles" if self.keep_bundles else self.work / "bundles"
        job = self.plan.job(cells, self.threads, root, self.out / "logs", parent_pid=os.getpid())
        self.running.append(RowRun(job, self.work))

    def poll(self) -> list[CellResult]:
        time.sleep(POLL_S)
        done = []
        for run in list(self.running):
            done += [self._settle(run.job, result) for result in run.check(self.plan.config.timeout)]
            if run.finished:
                self.running.remove(run)
        return done

    def _settle(self, job: RowJob, result: CellResult) -> CellResult:
        """Keep the log of a failed cell and the bundles asked for; remove the rest."""
        log = job.log_path(result.cell)
        if result.status in ("pass", "n/a"):
            log.unlink(missing_ok=True)
        elif log.exists():
            result.log = str(log)
        bundle_dir = job.bundle_dir(result.cell)
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
        for run in self.running:
            run.kill()
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
