"""One cell, built in this process: ``python -m segexport.matrix --worker JOB RESULT``.

The cell is one ordinary build through :func:`segexport.pipeline.run_build` (no
shortcut), then a short timing of the bundle in its own runtime. Before exporting, the
model is constructed (on the meta device where the constructor allows it), so an
encoder the architecture refuses or a size it cannot take answers ``n/a`` in seconds;
that answer holds for the whole row. Any other InvalidInputError from the build (e.g. a
target refusing fp16 on a machine that cannot validate it) is ``n/a`` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from segexport.atomic import write_atomic
from segexport.errors import InvalidInputError
from segexport.matrix.model import BENCH_BUDGET_S, BENCH_WARMUP, CellJob, CellResult, Progress
from segexport.matrix.plugins import load_plugins
from segexport.matrix.report import one_line
from segexport.resources import peak_rss_mib

#: Lines of the worker's log that name the step it is in (the supervisor quotes the last on a timeout).
STEP_PREFIX = "segexport-matrix step"
#: The worker touches ``<result>.ready`` once its imports are done: the cell's timeout starts then.
READY_SUFFIX = ".ready"


def run_cell(job: CellJob, say: Progress | None = None) -> CellResult:
    """Build one cell in this process and return its result (runs inside a worker)."""
    import traceback

    from segexport.errors import ParityError
    from segexport.pipeline import BuildRequest, run_build

    tell = say or (lambda _msg: None)
    cell = job.cell
    out = Path(job.bundle_dir)
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
    )
    start = time.perf_counter()
    result = CellResult(cell, "error", stage="build")

    def step(msg: str) -> None:
        result.steps.append([round(time.perf_counter() - start, 2), msg])
        tell(msg)

    def ended(status: str, reason: str | None, stage: str = "build", **figures: Any) -> CellResult:
        result.status, result.reason, result.stage = status, reason, stage
        for name, value in figures.items():
            setattr(result, name, value)
        result.peak_rss_mib = round(peak_rss_mib(), 1)
        return result

    try:
        step("probe: construct the model, check the input size")
        probe_model(req)
    except InvalidInputError as exc:
        return ended("n/a", one_line(exc), stage="model")
    try:
        bundle = run_build(req, step)
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
    if job.iters > 0:
        device = "cuda" if cell.target == "trt" else "cpu"
        result.bench_device = device
        step(f"time up to {job.iters} runs on {device}")
        try:
            result.latency_ms = time_bundle(bundle, device, job.threads, job.iters)
        except Exception as exc:  # timing is a bonus: the cell still passed
            result.bench_error = one_line(exc)
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


def worker_main(argv: Sequence[str]) -> int:
    """``python -m segexport.matrix --worker JOB RESULT``: build one cell, write its result JSON."""
    import faulthandler

    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = CellJob.from_json(job_path.read_text())
    faulthandler.enable()  # a segfault leaves its stack in the cell's log
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
        import segexport.arch.registry  # noqa: F401  (imports are start-up, not the cell's time)
        import segexport.pipeline  # noqa: F401
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result = CellResult(job.cell, "error", f"worker start-up failed: {one_line(exc)}", stage="worker")
    else:
        result_path.with_suffix(READY_SUFFIX).touch()
        say("ready")
        result = run_cell(job, say)
    write_atomic(result_path, json.dumps(result.to_dict(), default=repr))
    return 0
