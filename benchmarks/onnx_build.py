"""Build time and CPU latency of segexport's ONNX artifact vs the plain path and eager PyTorch.

The plain path is what a user would otherwise write: torch.onnx.export + onnxsim. Imports
(torch, torchvision, onnx, the runtimes) are loaded before either build is timed.
All figures come from one run on this machine; ratios are computed within it. Latencies
are medians over ``--rounds`` rounds that run each runtime in turn (``--iters`` runs each,
the order rotating), so that load changes and run order hit all three alike.

    python benchmarks/onnx_build.py [--arch unet --encoder resnet34 --size 512 --iters 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_times, machine, timed  # noqa: E402


def plain_export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """torch.onnx.export + onnxsim, as in most tutorials."""
    import onnx
    import onnxsim

    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["mask"], opset_version=18)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    onnx.save(simplified, str(path))


def ort_session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6, help="Timing rounds, each runtime in turn, the order rotating.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import onnx  # noqa: F401 - imports are warmed for both paths: the plain path's are outside its timing too
    import onnxruntime  # noqa: F401
    import onnxslim  # noqa: F401

    import segexport
    import segexport.arch.registry  # noqa: F401
    import segexport.targets.onnx  # noqa: F401

    shape = (1, 3, args.size, args.size)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours_time, bundle = timed(
            lambda: segexport.build(args.arch, args.encoder, height=args.size, width=args.size, out=tmp / "ours")
        )
        torch.manual_seed(0)
        model = segexport.create_model(args.arch, args.encoder, encoder_weights=None).eval()
        plain_path = tmp / "plain.onnx"
        with torch.no_grad():
            plain_time, _ = timed(lambda: plain_export(model, x, plain_path))

        bundle_steps, exporter = bundle.manifest.build["seconds"], bundle.manifest.export.details.get("exporter")
        ours, plain = ort_session(bundle.artifact), ort_session(plain_path)
        feed = {"input": x.numpy()}
        runs = {"eager": lambda: model(x), "plain": lambda: plain.run(None, feed), "ours": lambda: ours.run(None, feed)}
        with torch.inference_mode():
            rounds = interleaved_times(runs, args.rounds, args.iters)
        eager, plain_lat, ours_lat = (statistics.median(rounds[name]) for name in ("eager", "plain", "ours"))

    figures = {
        "model": f"{args.arch}-{args.encoder} 1x3x{args.size}x{args.size}",
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "build_s": {"segexport (export+simplify+validate)": ours_time, "plain (torch.onnx.export+onnxsim)": plain_time},
        "build_ratio": ours_time / plain_time,
        "segexport_steps_s": bundle_steps,
        "exporter": exporter,
        "latency_ms": {"eager PyTorch": eager * 1e3, "plain export, onnxruntime": plain_lat * 1e3, "segexport, onnxruntime": ours_lat * 1e3},
        "ratios": {"speedup vs eager": eager / ours_lat, "speedup vs plain export": plain_lat / ours_lat},
    }
    print(f"{figures['model']} on {figures['machine']}, torch {torch.__version__} ({figures['torch_threads']} threads)\n")
    print("| step | seconds |\n|---|---|")
    for k, v in figures["build_s"].items():
        print(f"| build: {k} | {v:.1f} |")
    print(f"| build ratio segexport / plain | {figures['build_ratio']:.2f}x |")
    steps = ", ".join(f"{k} {v:.1f}" for k, v in bundle_steps.items())
    print(f"\nsegexport's steps (s, exporter {exporter}): {steps}")
    print("\n| runtime | median latency (ms) | segexport speedup |\n|---|---|---|")
    for k, v in figures["latency_ms"].items():
        print(f"| {k} | {v:.1f} | {v / (ours_lat * 1e3):.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
