"""GPU latency and throughput of eager PyTorch, TorchScript fp16 and AOTInductor fp16, in one run.

Per model: eager fp32, eager fp16 (autocast), the TorchScript fp16 and AOTI fp16
(``--device cuda``) bundles segexport builds, and ``torch.compile(mode="max-autotune")``
of the same half-precision graph AOTI compiles (at batch 1, where its compile pays off
in a short run). Every variant takes a device tensor and is timed with CUDA events
in rotating rounds (segexport.bench.time_rounds), so the ratios to eager fp32 compare
like with like. Goal (issue 20): AOTI fp16 >= 3x eager fp32 at batch 1, and within
1.3x of compiled fp16 or faster.

    python benchmarks/gpu_table.py --json OUT.json --markdown OUT.md   # on a CUDA GPU
    python benchmarks/gpu_table.py --rehearse                          # the same code path, fp32 on the CPU, tiny

``--budget-s`` stops building further models once spent, so a short GPU lease ends
with a table of the models measured instead of nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MODELS = {
    "unet-resnet34": ("unet", "resnet34"),
    "deeplabv3plus-resnet50": ("deeplabv3plus", "resnet50"),
    "segformer-mit_b0": ("segformer", "mit_b0"),
}


def loaded(bundle: Any, device: str) -> Callable[[torch.Tensor], Any]:
    """The bundle's artifact as a callable on device tensors (TorchScript or AOTI)."""
    from segexport.targets.runners import load_torchscript

    if bundle.manifest.target == "torchscript":
        return load_torchscript(bundle.artifact, device)
    import torch._inductor

    return torch._inductor.aoti_load_package(str(bundle.artifact))


def measure_model(name: str, args: argparse.Namespace, work: Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rows (one per batch) of median latencies in ms for every variant of model ``name``."""
    import segexport
    from segexport.bench import cuda_event_timer, time_rounds, wall_timer
    from segexport.prepare import prepare_for_export
    from segexport.targets.base import half_precision_module

    arch, encoder = MODELS[name]
    device, size = args.device, args.size
    precision = "fp32" if args.rehearse else "fp16"
    built: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for target, options in (("torchscript", {}), ("aoti", {"device": device})):
        start = time.perf_counter()
        say(f"{name}: build {target} {precision} {size}x{size} (dynamic)")
        built[target] = segexport.build(
            arch, encoder, target=target, precision=precision, height=size, width=size, dynamic=True, classes=args.classes,
            target_options=options, out=work / f"{name}-{target}", force=True,
        )  # fmt: skip
        seconds[target] = round(time.perf_counter() - start, 1)
    torch.manual_seed(0)
    model = segexport.create_model(arch, encoder, encoder_weights=None, classes=args.classes).eval().to(device)
    prepared = prepare_for_export(model, torch.zeros(1, 3, size, size, device=device))
    half = prepared if args.rehearse else half_precision_module(prepared).to(device)
    artifacts = {target: loaded(bundle, device) for target, bundle in built.items()}
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if device == "cuda" else contextlib.nullcontext
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    timer = cuda_event_timer() if device == "cuda" else wall_timer
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, 3, size, size, device=device)
        calls: dict[str, Callable[[], object]] = {
            "eager fp32": lambda: model(x),
            "eager fp16 autocast": lambda: _under(autocast, model, x),
            f"torchscript {precision}": lambda: artifacts["torchscript"](x),
            f"aoti {precision}": lambda: artifacts["aoti"](x),
        }
        if batch == 1 and not args.no_compile:
            say(f"{name}: torch.compile(mode='{args.compile_mode}') of the {precision} graph")
            start = time.perf_counter()
            compiled = torch.compile(half, mode=args.compile_mode, dynamic=False)
            with torch.inference_mode():
                compiled(x)
            seconds["compile"] = round(time.perf_counter() - start, 1)
            calls[f"compile {precision} {args.compile_mode}"] = lambda: compiled(x)
        say(f"{name} batch {batch}: {args.warmup} warm-up + {args.iters} rounds of {len(calls)} variants")
        with torch.inference_mode():
            times = time_rounds(calls, args.warmup, args.iters, dict.fromkeys(calls, sync), timer)
        ms = {variant: statistics.median(t) * 1e3 for variant, t in times.items()}
        rows.append({
            "model": name, "batch": batch, "size": size, "latency_ms": ms,
            "images_per_s": {v: batch / (t / 1e3) for v, t in ms.items()},
            "vs_eager_fp32": {v: ms["eager fp32"] / t for v, t in ms.items()},
            "build_seconds": seconds,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        })  # fmt: skip
    return rows


def _under(context: Callable[[], Any], model: Any, x: torch.Tensor) -> Any:
    with context():
        return model(x)


def markdown(rows: list[dict[str, Any]], machine: str, timing: str = "CUDA-event timings") -> str:
    variants = list(dict.fromkeys(v for r in rows for v in r["latency_ms"]))
    head = "| model | batch | " + " | ".join(f"{v} ms (x eager fp32)" for v in variants) + " |"
    lines = [head, "|---|---|" + "---|" * len(variants)]
    for r in rows:
        cells = [f"{r['latency_ms'][v]:.2f} ({r['vs_eager_fp32'][v]:.2f}x)" if v in r["latency_ms"] else "-" for v in variants]
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{machine}; {rows[0]['size'] if rows else '?'}x{rows[0]['size'] if rows else '?'} input, medians of {timing}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--compile-mode", default="max-autotune")
    parser.add_argument("--no-compile", action="store_true", help="Skip the torch.compile comparison.")
    parser.add_argument("--budget-s", type=float, default=None, help="Build no further model once this many seconds passed.")
    parser.add_argument("--rehearse", action="store_true", help="fp32 on the CPU at 64x64, batch 1: the code path without a GPU.")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.rehearse:
        args.device, args.size, args.batches, args.warmup, args.iters = "cpu", 64, [1], 1, 3
        args.compile_mode = "default"
    elif not torch.cuda.is_available():
        sys.exit("gpu_table.py needs a CUDA GPU (or --rehearse to try the code path on the CPU).")
    else:
        args.device = "cuda"
    machine = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
               if args.device == "cuda" else f"CPU rehearsal, torch {torch.__version__}")  # fmt: skip

    def say(msg: str) -> None:
        print(f"[gpu_table {time.perf_counter() - started:5.0f} s] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                skipped.append(name)
                continue
            rows.extend(measure_model(name, args, Path(tmp), say))
            if args.json:  # written after every model: a run cut short keeps what it measured
                args.json.write_text(json.dumps({"machine": machine, "rows": rows, "skipped": skipped}, indent=2))
    if skipped:
        say(f"over --budget-s: not measured: {', '.join(skipped)}")
    table = markdown(rows, machine, "CUDA-event timings" if args.device == "cuda" else "wall timings")
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "skipped": skipped}, indent=2))
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
