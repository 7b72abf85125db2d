"""CPU latency of one model in every CPU runtime: eager PyTorch, onnxruntime, TorchScript and AOTInductor.

Builds the three bundles with segexport (same seeded weights, static 1x3xSxS), then
times each artifact in its own runtime in this process, on the same input and thread
count: three warm-up calls each, then ``--iters`` rounds in which every runtime runs once
in turn (the order rotating), so that load changes and run order hit all of them alike; the table
gives the median (and the minimum) per runtime. TorchScript is timed as loaded and after
``torch.jit.optimize_for_inference`` (MKLDNN kernels, which can only be applied on the
deployment machine, after loading).

    python benchmarks/cpu_targets.py [--arch unet --encoder resnet34 --size 512 --iters 10 --threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_times, machine, timed  # noqa: E402


def runners(bundles: dict[str, Path], x: np.ndarray, threads: int) -> dict[str, Callable[[], object]]:
    """One zero-argument call per runtime, each running its artifact on ``x``."""
    import onnxruntime as ort
    import torch._inductor

    from segexport.targets.runners import load_torchscript

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(bundles["onnx"] / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    xt = torch.from_numpy(x)
    scripted = load_torchscript(bundles["torchscript"] / "model.ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        optimized = torch.jit.optimize_for_inference(load_torchscript(bundles["torchscript"] / "model.ts"))
    compiled = torch._inductor.aoti_load_package(str(bundles["aoti"] / "model.pt2"))

    def under_inference_mode(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return fn()

        return call

    return {
        "onnxruntime": lambda: session.run(None, feed),
        "TorchScript (model.ts)": under_inference_mode(lambda: scripted(xt)),
        "TorchScript + optimize_for_inference at load": under_inference_mode(lambda: optimized(xt)),
        "AOTInductor (model.pt2)": under_inference_mode(lambda: compiled(xt)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="Threads for every runtime (default: torch's).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import segexport
    from segexport.pipeline import BuildRequest, create_from_request

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    build_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundles: dict[str, Path] = {}
        for target in ("onnx", "torchscript", "aoti"):
            print(f"building {target} ...", file=sys.stderr, flush=True)
            build_s[target], bundle = timed(
                lambda target=target: segexport.build(
                    args.arch, args.encoder, target=target, height=args.size, width=args.size, out=Path(tmp) / target
                )
            )
            bundles[target] = bundle.path
        model, _ = create_from_request(BuildRequest(arch=args.arch, encoder=args.encoder, height=args.size, width=args.size))
        xt = torch.from_numpy(x)

        def eager() -> object:
            with torch.inference_mode():
                return model(xt)

        print("timing ...", file=sys.stderr, flush=True)
        samples = interleaved_times({"eager PyTorch": eager, **runners(bundles, x, threads)}, args.iters)

    latency = {name: statistics.median(times) for name, times in samples.items()}
    base = latency["eager PyTorch"]
    figures = {
        "model": f"{args.arch}-{args.encoder} 1x3x{args.size}x{args.size} fp32",
        "machine": machine(),
        "threads": threads,
        "torch": torch.__version__,
        "build_s": build_s,
        "latency_ms": {k: v * 1e3 for k, v in latency.items()},
        "min_latency_ms": {k: min(v) * 1e3 for k, v in samples.items()},
        "speedup_vs_eager": {k: base / v for k, v in latency.items()},
    }
    print(f"{figures['model']} on {figures['machine']}, {threads} threads, torch {torch.__version__}, {args.iters} rounds\n")
    print("| runtime | median latency (ms) | min (ms) | speedup vs eager (median) |\n|---|---|---|---|")
    for name, seconds in latency.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {min(samples[name]) * 1e3:.1f} | {base / seconds:.2f}x |")
    print("\n| bundle build (export + validate) | seconds |\n|---|---|")
    for target, seconds in build_s.items():
        print(f"| {target} | {seconds:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
