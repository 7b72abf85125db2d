"""`segexport bench`: latency, throughput, memory and achieved GFLOP/s of a bundle where it runs.

The artifact runs in its own runtime (targets/runners.py), or in each of the
runtimes asked for (an ONNX bundle in onnxruntime and OpenVINO); with
``compare_eager`` the eager model rebuilt from the manifest runs on the same inputs
in the same process. Every runtime (and eager) is timed in the same rounds, each
round one call of each in a rotating order, so that load changes on a shared
machine hit them alike and the ratios compare like with like.

On ``--device cuda`` each call is timed with CUDA events recorded around it on the
current stream (after the warm-up), so the figure is the GPU's time for the call,
the copies of the numpy input and outputs included (what an application handing
the runtime host arrays sees); ``compare_eager`` then times eager fp32 and eager
fp16 (autocast) alike, and the report adds peak GPU memory and the share of the
GPU's nominal peak the artifact reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import InvalidInputError
from segexport.resources import peak_rss_mib

if TYPE_CHECKING:
    from segexport.manifest import Manifest

#: Nominal dense fp32 / fp16 peak in TFLOP/s for GPUs we know (vendor datasheets, dense, no sparsity).
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100": {"fp32": 67.0, "fp16": 989.0},
    "H200": {"fp32": 67.0, "fp16": 989.0},
    "A100": {"fp32": 19.5, "fp16": 312.0},
    "L4": {"fp32": 30.3, "fp16": 121.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
}


@dataclass
class Latency:
    """Per-call wall time statistics in milliseconds."""

    min: float
    median: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ms = np.asarray(seconds) * 1e3
        return cls(*(float(v) for v in (ms.min(), np.median(ms), np.percentile(ms, 90), np.percentile(ms, 99), ms.max())))


@dataclass
class BenchResult:
    """Figures for one input shape."""

    shape: list[int]
    runtime: str
    latency_ms: Latency
    throughput: float
    gflop: float | None
    gflops_achieved: float | None
    peak_tflops: float | None
    eager_latency_ms: Latency | None = None
    speedup_vs_eager: float | None = None
    #: CUDA only: eager under fp16 autocast, timed in the same rounds.
    eager_fp16_latency_ms: Latency | None = None
    speedup_vs_eager_fp16: float | None = None


@dataclass
class BenchReport:
    bundle: str
    target: str
    precision: str
    device: str
    threads: int | None
    warmup: int
    iters: int
    peak_rss_mib: float
    peak_device_mib: float | None
    results: list[BenchResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Times one call: ``(call, sync) -> seconds``.
Timer = Callable[[Callable[[], object], Callable[[], None]], float]


def wall_timer(call: Callable[[], object], sync: Callable[[], None]) -> float:
    """Wall seconds of ``call`` and the sync that waits for its work."""
    start = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - start


def cuda_event_timer() -> Timer:
    """A timer reading CUDA events recorded around the call on the current stream (GPU time, not host time)."""
    import torch

    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(call: Callable[[], object], sync: Callable[[], None]) -> float:
        begin.record()
        call()
        end.record()
        end.synchronize()
        sync()  # work a runtime queued on its own stream is done too
        return begin.elapsed_time(end) / 1e3

    return timed


def time_rounds(
    calls: dict[str, Callable[[], object]],
    warmup: int,
    iters: int,
    syncs: dict[str, Callable[[], None]],
    timer: Timer = wall_timer,
) -> dict[str, list[float]]:
    """Per call, the time of each of ``iters`` runs after ``warmup`` untimed ones (``timer`` measures it).

    The calls take turns: each round runs every call once, starting one later than the
    round before, so none always runs right after the same other one.
    """
    for name, fn in calls.items():
        for _ in range(warmup):
            fn()
        syncs[name]()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(iters):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timer(calls[name], syncs[name]))
    return times


def time_calls(fn: Callable[[], object], warmup: int, iters: int, sync: Callable[[], None], timer: Timer = wall_timer) -> list[float]:
    """The time of each of ``iters`` calls after ``warmup`` untimed ones."""
    return time_rounds({"call": fn}, warmup, iters, {"call": sync}, timer)["call"]


def shapes_to_run(manifest: Manifest, batches: Sequence[int], heights: Sequence[int], widths: Sequence[int]) -> list[tuple[int, ...]]:
    """The input shapes to sweep; a static bundle accepts only its own shape."""
    exp = manifest.export
    channels = manifest.in_channels
    batches = list(batches) or [exp.batch]
    heights = list(heights) or [exp.height]
    widths = list(widths) or [exp.width] * len(heights)
    if len(widths) == 1 and len(heights) > 1:
        widths = widths * len(heights)
    if len(widths) != len(heights):
        raise InvalidInputError(f"Give one --width, or as many as --height ({len(heights)}); got {len(widths)}.")
    shapes = [(b, channels, h, w) for b in batches for h, w in zip(heights, widths)]
    for shape in shapes:
        if min(shape) < 1:
            raise InvalidInputError(f"Input shape {shape} has a non-positive dimension.")
        fixed = (exp.batch, channels, exp.height, exp.width)
        if not exp.dynamic and shape != fixed:
            raise InvalidInputError(
                f"This bundle is static: it only takes {'x'.join(map(str, fixed))}, not {'x'.join(map(str, shape))}. "
                "Rebuild with --dynamic to sweep shapes."
            )
        stride = exp.stride
        if exp.dynamic and (shape[2] % stride or shape[3] % stride):
            raise InvalidInputError(f"Height and width must be multiples of {stride} for this model; got {shape[2]}x{shape[3]}.")
    return shapes


def eager_model(manifest: Manifest) -> Any:
    """The eager model described by the manifest (random weights: timing only)."""
    import torch

    from segexport.arch.registry import get_architecture

    args = dict(manifest.arch_args)
    args["encoder_weights"] = None
    torch.manual_seed(0)
    return get_architecture(manifest.arch)(**args).eval()


def count_gflop(model: Any, shape: Sequence[int]) -> float:
    """Model FLOPs for one call at ``shape`` (convolutions, matmuls), counted once on the eager model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(*shape))
    return counter.get_total_flops() / 1e9


def peak_tflops(device: str, precision: str) -> float | None:
    """The device's nominal peak for ``precision`` when we know it, else None."""
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    for key, peaks in GPU_PEAK_TFLOPS.items():
        if key in name:
            return peaks.get("fp16" if precision in ("fp16", "int8") else "fp32")
    return None


def bench(
    bundle_path: str,
    *,
    batches: Sequence[int] = (),
    heights: Sequence[int] = (),
    widths: Sequence[int] = (),
    warmup: int = 5,
    iters: int = 20,
    threads: int | None = None,
    device: str = "cpu",
    compare_eager: bool = False,
    runtimes: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the bundle at every requested shape in each of ``runtimes`` (default: the one it was validated with).

    ``runtimes`` entries may hold several names separated by commas; see ``runtimes_for``
    in targets/runners.py for the runtimes each target runs in.

    The runners open the artifact through ``contained_path`` (what :meth:`Bundle.path_of`
    checks), so a manifest that points outside its bundle is refused before anything runs.
    """
    from contextlib import ExitStack

    from segexport.bundle import Bundle, verify_hashes
    from segexport.targets.runners import runner_for, runtimes_for

    say = progress or (lambda _m: None)
    if device not in ("cpu", "cuda"):
        raise InvalidInputError(f"Unknown device {device!r}; allowed: cpu, cuda.")
    if warmup < 0 or iters < 1:
        raise InvalidInputError(f"--warmup must be >= 0 and --iters >= 1; got {warmup} and {iters}.")
    bundle = Bundle.load(bundle_path)
    changed = verify_hashes(bundle)  # a truncated or replaced artifact is named, not fed to a runtime
    if changed:
        raise InvalidInputError(
            f"Bundle {str(bundle.path)!r}: {', '.join(changed)} changed since the build (sha256 mismatch); "
            "rebuild it, or see `segexport verify`."
        )
    m = bundle.manifest
    # "onnxruntime,openvino" and a repeated option both work; each runtime is timed once.
    names = list(dict.fromkeys(n.strip() for item in runtimes for n in item.split(",") if n.strip()))
    names = names or [runtimes_for(m.target)[0]]
    # Runners check their runtime and the artifact's path when made, before the eager model is built.
    runners = [runner_for(bundle.path, m, device=device, threads=threads, runtime=name) for name in names]
    shapes = shapes_to_run(m, batches, heights, widths)
    report = BenchReport(str(bundle.path), m.target, m.precision, device, threads, warmup, iters, 0.0, None)
    rng = np.random.default_rng(0)
    model = eager_model(m)  # FLOPs are counted on it; with compare_eager it is timed too
    peak = peak_tflops(device, m.precision)
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()  # the report's peak is this run's, from the artifact's load on
    with ExitStack() as stack:
        for runner in runners:
            stack.enter_context(runner)
        for shape in shapes:
            x = rng.standard_normal(shape).astype(np.float32)
            calls: dict[str, Callable[[], object]] = {r.runtime: (lambda r=r, x=x: r.infer(x)) for r in runners}
            syncs: dict[str, Callable[[], None]] = {r.runtime: r.sync for r in runners}
            if compare_eager:
                calls["eager"], syncs["eager"] = _eager_call(model, x, device, threads)
                if device == "cuda":
                    calls["eager-fp16"], syncs["eager-fp16"] = _eager_call(model, x, device, threads, autocast_fp16=True)
            say(f"{', '.join(calls)} {'x'.join(map(str, shape))}: {warmup} warm-up + {iters} timed rounds")
            times = time_rounds(calls, warmup, iters, syncs, cuda_event_timer() if device == "cuda" else wall_timer)
            gflop = count_gflop(model, shape)
            eager = Latency.of(times["eager"]) if compare_eager else None
            eager16 = Latency.of(times["eager-fp16"]) if "eager-fp16" in times else None
            for runner in runners:
                lat = Latency.of(times[runner.runtime])
                report.results.append(
                    BenchResult(
                        shape=list(shape),
                        runtime=runner.runtime,
                        latency_ms=lat,
                        throughput=shape[0] / (lat.median / 1e3),
                        gflop=gflop,
                        gflops_achieved=gflop / (lat.median / 1e3) if gflop else None,
                        peak_tflops=peak,
                        eager_latency_ms=eager,
                        speedup_vs_eager=eager.median / lat.median if eager else None,
                        eager_fp16_latency_ms=eager16,
                        speedup_vs_eager_fp16=eager16.median / lat.median if eager16 else None,
                    )
                )
    report.peak_rss_mib = peak_rss_mib()
    if device == "cuda":
        import torch

        report.peak_device_mib = torch.cuda.max_memory_allocated() / 2**20
    return report


def _eager_call(
    model: Any, x: np.ndarray, device: str, threads: int | None, *, autocast_fp16: bool = False
) -> tuple[Callable[[], object], Callable[[], None]]:
    """One eager forward on ``x`` (inference mode; fp16 autocast on CUDA if asked) and the matching device sync."""
    import contextlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    model = model.to(device)
    t = torch.from_numpy(x).to(device)

    def call() -> object:
        autocast = torch.autocast("cuda", dtype=torch.float16) if autocast_fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return model(t)

    return call, (torch.cuda.synchronize if device == "cuda" else (lambda: None))


def format_table(report: BenchReport) -> str:
    """The report as a Markdown table."""
    fp16 = any(r.eager_fp16_latency_ms for r in report.results)
    head = "| shape | runtime | min | median | p90 | p99 | max (ms) | img/s | GFLOP | GFLOP/s | eager median | speedup |"
    head += " eager fp16 median | speedup vs fp16 |" if fp16 else ""
    lines = [head, "|" + "---|" * (14 if fp16 else 12)]
    for r in report.results:
        lat = r.latency_ms
        eager = f"{r.eager_latency_ms.median:.2f}" if r.eager_latency_ms else "-"
        speed = f"{r.speedup_vs_eager:.2f}x" if r.speedup_vs_eager else "-"
        if fp16:
            eager16 = f"{r.eager_fp16_latency_ms.median:.2f}" if r.eager_fp16_latency_ms else "-"
            speed += f" | {eager16} | " + (f"{r.speedup_vs_eager_fp16:.2f}x" if r.speedup_vs_eager_fp16 else "-")
        gflops = f"{r.gflops_achieved:.1f}" if r.gflops_achieved else "-"
        if r.peak_tflops and r.gflops_achieved:
            gflops += f" ({r.gflops_achieved / (r.peak_tflops * 1e3):.1%} of peak)"
        lines.append(
            f"| {'x'.join(map(str, r.shape))} | {r.runtime} | {lat.min:.2f} | {lat.median:.2f} | {lat.p90:.2f} | "
            f"{lat.p99:.2f} | {lat.max:.2f} | {r.throughput:.1f} | {r.gflop or 0:.2f} | {gflops} | {eager} | {speed} |"
        )
    mem = f"peak RSS {report.peak_rss_mib:.0f} MiB"
    if report.peak_device_mib is not None:
        mem += f", peak device memory {report.peak_device_mib:.0f} MiB"
    return "\n".join(lines) + f"\n\n{report.target} {report.precision} on {report.device}; {mem}"
