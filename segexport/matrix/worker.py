"""A row's cells, built in this process: ``python -m segexport.matrix --worker JOB RESULTS``.

Each cell is one ordinary build through :func:`segexport.pipeline.run_build` (no
shortcut), then a short timing of the bundle in its own runtime. The cells of a row are
built one after another and share one :class:`~segexport.reuse.BuildReuse`: the model is
constructed and its weights loaded once, eager PyTorch runs once per set of judged
inputs, and the fp32 ONNX graph is exported once for the targets that start from it.
Between cells dynamo's caches are reset, and each cell's output goes to its own log.

Before the first build, the model is constructed (on the meta device where the
constructor allows it), so an encoder the architecture refuses or a size it cannot take
answers ``n/a`` in seconds; that answer holds for the whole row. Any other
InvalidInputError from a build (e.g. a target refusing fp16 on a machine that cannot
validate it) is ``n/a`` too.

For the supervisor (:mod:`~segexport.matrix.local`): ``<RESULTS>/<cell id>.started``
(holding the wall-clock time the cell began)
appears when a cell starts, ``<RESULTS>/<cell id>.json`` when it ends, and
``<RESULTS>/ready`` once the imports are done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segexport.atomic import write_atomic
from segexport.errors import InvalidInputError
from segexport.matrix.model import BENCH_BUDGET_S, BENCH_WARMUP, Cell, CellResult, Progress, RowJob
from segexport.matrix.plugins import load_plugins
from segexport.matrix.report import one_line
from segexport.resources import peak_rss_mib

if TYPE_CHECKING:
    from segexport.reuse import BuildReuse

#: Lines of a cell's log that name the step it is in (the supervisor quotes the last on a timeout).
STEP_PREFIX = "segexport-matrix step"
#: Files the worker writes in its results folder (see the module docstring).
READY_NAME = "ready"
STARTED_SUFFIX = ".started"
RESULT_SUFFIX = ".json"


def run_cell(job: RowJob, cell: Cell, say: Progress | None = None, reuse: BuildReuse | None = None,
             probe: bool = True) -> CellResult:  # fmt: skip
    """Build one cell of ``job`` in this process and return its result (runs inside a worker).

    ``probe`` first constructs the model to answer a refused encoder in seconds (the row's
    first cell does it; its answer stands for the row).
    """
    import traceback

    from segexport.errors import ParityError
    from segexport.pipeline import BuildRequest, run_build

    tell = say or (lambda _msg: None)
    out = job.bundle_dir(cell)
    req = BuildRequest(
        arch=cell.arch,
        encoder=cell.encoder,
        target=cell.target,
        height=job.height,
        width=job.width,
        arch_args=job.arch_args,
        checkpoint=job.checkpoint,
        classes=job.classes,
        precision=cell.precision,
        calib=job.calib if cell.precision == "int8" else None,
        threads=job.threads,
        out=out,
        force=True,
        # int8 cells of a row share one range cache: the onnxruntime and TensorRT forms calibrate the same fp32 graph.
        target_options={"calib_cache": str(reuse.folder() / "calib.json")} if reuse is not None and cell.precision == "int8" else None,
    )
    start = time.perf_counter()
    result = CellResult(cell, "error", stage="build")
    hits_before = dict(reuse.hits) if reuse is not None else {}

    def step(msg: str) -> None:
        result.steps.append([round(time.perf_counter() - start, 2), msg])
        tell(msg)

    def ended(status: str, reason: str | None, stage: str = "build", **figures: Any) -> CellResult:
        result.status, result.reason, result.stage = status, reason, stage
        for name, value in figures.items():
            setattr(result, name, value)
        if reuse is not None:
            result.shared = sorted(k for k, n in reuse.hits.items() if n > hits_before.get(k, 0))
        result.peak_rss_mib = round(peak_rss_mib(), 1)
        return result

    if probe:
        try:
            step("probe: construct the model, check the input size")
            probe_model(req)
        except InvalidInputError as exc:
            return ended("n/a", one_line(exc), stage="model")
    try:
        bundle = run_build(req, step, reuse)
    except InvalidInputError as exc:
        return ended("n/a", one_line(exc))
    except ParityError as exc:
        traceback.print_exc()
        parity = _failed_report(out)
        return ended("fail", _parity_reason(parity, cell.precision) or one_line(exc), parity=parity,
                     build_s=round(time.perf_counter() - start, 2))
    except Exception as exc:  # ExportError and anything a backend raises: one line here, the traceback in the log
        traceback.print_exc()
        return ended("error", one_line(exc))
    result.parity, result.bundle = bundle.manifest.parity.to_dict(), str(bundle.path)
    result.build_s = round(time.perf_counter() - start, 2)
    result.seconds = dict(bundle.manifest.build.get("seconds", {}))
    if reuse is not None and bundle.manifest.export.details.get("calibration", {}).get("cache", {}).get("hit"):
        reuse.hits["calibration ranges"] += 1  # the cache is the row's (see target_options above)
    if job.iters > 0:
        device = "cuda" if cell.target == "trt" else "cpu"
        result.bench_device = device
        step(f"time up to {job.iters} runs on {device}")
        timing = time.perf_counter()
        try:
            result.latency_ms = time_bundle(bundle, device, job.threads, job.iters)
        except Exception as exc:  # timing is a bonus: the cell still passed
            result.bench_error = one_line(exc).replace(f"{bundle.path}{os.sep}", "")  # the bundle's folder is scratch
        result.bench_s = round(time.perf_counter() - timing, 2)
    return ended("pass", None)


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
    exp = m.export
    x = np.random.default_rng(0).standard_normal((exp.batch, m.in_channels, exp.height, exp.width)).astype(m.inputs[0].dtype)
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


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (its process group no longer gets killed for us)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so sub-processes and
    faulthandler too) to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def build_row(job: RowJob, results: Path, say: Callable[[str], None]) -> None:
    """Build ``job``'s cells in turn, one reuse shared by all, each result written as it ends.

    A refused encoder (the first cell's probe) answers every cell of the row without a build.
    """
    import torch

    from segexport.reuse import BuildReuse

    reuse = BuildReuse()
    decided: CellResult | None = None
    try:
        for index, cell in enumerate(job.cells):
            write_atomic(results / f"{cell.id}{STARTED_SUFFIX}", repr(time.time()))  # the supervisor times the cell from here
            with output_to(job.log_path(cell)):
                say(f"cell {cell.label()}")
                if decided is not None:
                    result = CellResult(cell, "n/a", decided.reason, stage="model", decided_by=decided.cell.id)
                else:
                    result = run_cell(job, cell, say, reuse, probe=index == 0)
                    if result.status == "n/a" and result.stage == "model":
                        decided = result
                torch._dynamo.reset()  # nothing compiled for one cell stays in the process for the next
            write_atomic(results / f"{cell.id}{RESULT_SUFFIX}", json.dumps(result.to_dict(), default=repr))
    finally:
        reuse.close()


def worker_main(argv: Sequence[str]) -> int:
    """``python -m segexport.matrix --worker JOB RESULTS``: build a row's cells, a result JSON each."""
    import faulthandler

    job_path, results = Path(argv[0]), Path(argv[1])
    job = RowJob.from_json(job_path.read_text())
    faulthandler.enable()  # a segfault leaves its stack in the cell's log (fd 2 is that log during a cell)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the supervisor asks for stacks before a timeout kill
    if job.parent_pid is not None:
        _watch_parent(job.parent_pid)
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"{STEP_PREFIX} {time.perf_counter() - start:8.2f} s: {msg}", file=sys.stderr, flush=True)

    try:
        import torch

        torch.set_num_threads(job.threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        load_plugins(job.plugins)
        import segexport.arch.registry  # noqa: F401  (imports are start-up, not the cells' time)
        import segexport.pipeline  # noqa: F401
    except Exception as exc:
        import traceback

        traceback.print_exc()
        for cell in job.cells:
            failed = CellResult(cell, "error", f"worker start-up failed: {one_line(exc)}", stage="worker")
            write_atomic(results / f"{cell.id}{RESULT_SUFFIX}", json.dumps(failed.to_dict(), default=repr))
        return 0
    (results / READY_NAME).touch()
    say("ready")
    build_row(job, results, say)
    return 0
