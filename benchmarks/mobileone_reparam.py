"""CPU latency gain of MobileOne's reparameterisation: multi-branch blocks vs one convolution per block.

One model (default unet-mobileone_s0, random seeded weights, 1x3xSxS fp32), timed in
one process on the same input and thread count:

- eager PyTorch, multi-branch (the model as trained and as SMP runs it);
- eager PyTorch, reparameterised (``reparameterize_blocks`` on a copy: the blocks only);
- onnxruntime on the graph exported from each form (both prepared as segexport
  prepares exports, BatchNorm folded; the reparameterised one is the bundle
  ``segexport build`` writes, parity-checked against the multi-branch eager model);
- the encoder alone, eager, in both forms (where the gain is not diluted by the decoder).

Every runtime is warmed up three times, then ``--rounds`` rounds each run every runtime
once in turn, the order rotating (benchmarks/_timing.py), so load changes on a shared
machine hit all of them alike. The table gives the median (and minimum) per runtime and
each reparameterised form's speedup over its multi-branch form, measured in the same run.

    python benchmarks/mobileone_reparam.py [--arch unet --encoder mobileone_s0 --size 256 --rounds 10 --threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_times, machine  # noqa: E402

#: (reparameterised runtime, its multi-branch counterpart): the ratios the table reports.
PAIRS = (
    ("eager, reparameterised", "eager, multi-branch"),
    ("onnxruntime, reparameterised", "onnxruntime, multi-branch"),
    ("encoder only eager, reparameterised", "encoder only eager, multi-branch"),
)


def onnx_session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_multi_branch(model: torch.nn.Module, size: int, path: Path) -> None:
    """The multi-branch graph, prepared like a build's but without reparameterisation (not a segexport bundle)."""
    from segexport.prepare import output_names, prepare_for_export
    from segexport.targets import ExportSpec
    from segexport.targets.onnx import export_onnx

    spec = ExportSpec(batch=1, in_channels=3, height=size, width=size, output_names=output_names(model))
    prepared = prepare_for_export(model, torch.zeros(spec.input_shape), reparameterize=False)
    export_onnx(prepared, spec, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="mobileone_s0")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="Threads for every runtime (default: torch's).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import segexport
    from segexport.pipeline import BuildRequest, create_from_request
    from segexport.prepare import reparameterize_blocks

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    xt = torch.from_numpy(x)
    request = BuildRequest(arch=args.arch, encoder=args.encoder, height=args.size, width=args.size)
    model, _ = create_from_request(request)
    model.eval()
    fused = copy.deepcopy(model)
    blocks = reparameterize_blocks(fused)
    if not blocks:
        raise SystemExit(f"{args.encoder} has no reparameterisable blocks; nothing to compare.")

    with tempfile.TemporaryDirectory() as tmp:
        print("building the reparameterised bundle and the multi-branch graph ...", file=sys.stderr, flush=True)
        bundle = segexport.build(args.arch, args.encoder, height=args.size, width=args.size, out=Path(tmp) / "onnx")
        export_multi_branch(model, args.size, Path(tmp) / "multi_branch.onnx")
        sessions = {
            "reparameterised": onnx_session(bundle.artifact, threads),
            "multi-branch": onnx_session(Path(tmp) / "multi_branch.onnx", threads),
        }
        feed = {sessions["reparameterised"].get_inputs()[0].name: x}
        with torch.inference_mode():
            expected = model(xt).numpy()
            scale = max(1.0, float(np.sqrt(np.mean(expected * expected))))  # random weights: outputs of RMS >> 1
            agreement = {
                "eager, reparameterised": float(np.abs(fused(xt).numpy() - expected).max()) / scale,
                **{f"onnxruntime, {k}": float(np.abs(s.run(None, feed)[0] - expected).max()) / scale for k, s in sessions.items()},
            }

        def eager(module: torch.nn.Module) -> Callable[[], object]:
            def call() -> object:
                with torch.inference_mode():
                    return module(xt)

            return call

        calls: dict[str, Callable[[], object]] = {
            "eager, multi-branch": eager(model),
            "eager, reparameterised": eager(fused),
            "onnxruntime, multi-branch": lambda: sessions["multi-branch"].run(None, feed),
            "onnxruntime, reparameterised": lambda: sessions["reparameterised"].run(None, feed),
            "encoder only eager, multi-branch": eager(model.encoder),
            "encoder only eager, reparameterised": eager(fused.encoder),
        }
        print("timing ...", file=sys.stderr, flush=True)
        samples = interleaved_times(calls, args.rounds)

    latency = {name: statistics.median(times) for name, times in samples.items()}
    figures = {
        "model": f"{args.arch}-{args.encoder} 1x3x{args.size}x{args.size} fp32, {blocks} MobileOne blocks",
        "machine": machine(),
        "threads": threads,
        "torch": torch.__version__,
        "rounds": args.rounds,
        "latency_ms": {k: v * 1e3 for k, v in latency.items()},
        "min_latency_ms": {k: min(v) * 1e3 for k, v in samples.items()},
        "speedup_of_reparameterisation": {fast: latency[slow] / latency[fast] for fast, slow in PAIRS},
        "max_abs_diff_vs_eager_multi_branch_over_rms": agreement,
        "bundle_parity": bundle.manifest.parity.passed,
    }
    print(f"{figures['model']} on {figures['machine']}, {threads} threads, torch {torch.__version__}, {args.rounds} rounds\n")
    print("| runtime | median latency (ms) | min (ms) |\n|---|---|---|")
    for name, seconds in latency.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {min(samples[name]) * 1e3:.1f} |")
    print("\n| reparameterised vs multi-branch | speedup (median) |\n|---|---|")
    for fast, slow in PAIRS:
        print(f"| {fast.rsplit(',', 1)[0]} | {latency[slow] / latency[fast]:.2f}x |")
    print("\nmax |output - eager multi-branch| / max(1, RMS): " + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()))
    print(f"bundle parity passed: {figures['bundle_parity']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
