"""Regenerate the README's performance tables on this machine.

For each model at 512x512: a checkpoint trained for a minute on the synthetic task of
tests/trained_model.py (so that int8 is judged on a model with structure, not random
weights), then every bundle built from it with ``segexport.build`` exactly as the CLI
builds it, calibrated and int8-judged on scikit-image's photographs. Latencies of eager
PyTorch and of every bundle in its own runtime are timed in rotating rounds in one
process (each round runs each runtime once, the order rotating), so ratios compare
runs made under the same conditions. On a CUDA machine the GPU variants (eager fp32/
fp16, TorchScript fp16, TensorRT fp16/int8) are timed the same way.

    python benchmarks/suite.py                    # print the tables
    python benchmarks/suite.py --update-readme    # also rewrite README.md between the suite markers
    python benchmarks/suite.py --models unet:resnet34 --size 256 --targets onnx,torchscript
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _timing import interleaved_times, machine, timed  # noqa: E402

MODELS = ["unet:resnet34", "deeplabv3plus:resnet50", "segformer:mit_b0"]
CPU_TARGETS = ["onnx", "onnx-int8", "torchscript", "aoti"]
GPU_TARGETS = ["torchscript-fp16", "trt-fp16", "trt-int8"]
START, END = "<!-- suite:start -->", "<!-- suite:end -->"
TRAIN = {"size": 128, "steps": 60, "batch": 8, "lr": 1e-3}
CLASSES = 3


def build_variant(arch: str, encoder: str, variant: str, size: int, root: Path, checkpoint: Path, calib: Path) -> tuple[float, Any]:
    import segexport

    target, _, precision = variant.partition("-")
    options: dict[str, Any] = {
        "height": size, "width": size, "classes": CLASSES, "checkpoint": str(checkpoint), "out": root / f"{arch}-{encoder}-{variant}",
    }  # fmt: skip
    if precision == "int8":
        options.update(precision="int8", calib=str(calib))
    elif precision == "fp16":
        options.update(precision="fp16")
    return timed(lambda: segexport.build(arch, encoder, target=target, **options))


def eager_calls(arch: str, encoder: str, checkpoint: Path, x: Any, gpu: bool) -> dict[str, Any]:
    """Eager PyTorch with the trained weights: fp32 on the CPU, and fp32/fp16 on CUDA when there is a GPU."""
    import torch

    import segexport

    model = segexport.create_model(arch, encoder, encoder_weights=None, classes=CLASSES)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    xt = torch.from_numpy(x)
    calls = {"eager": lambda: model(xt)}
    if gpu:
        cuda, xc = copy.deepcopy(model).cuda(), xt.cuda()
        half, xh = copy.deepcopy(model).cuda().half(), xc.half()
        calls["eager-cuda"] = lambda: (cuda(xc), torch.cuda.synchronize())
        calls["eager-cuda-fp16"] = lambda: (half(xh), torch.cuda.synchronize())
    return calls


def run(models: list[str], size: int, targets: list[str], iters: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from segexport.bundle import Bundle
    from segexport.targets.runners import runner_for
    from trained_model import train_checkpoint, write_photos

    gpu = torch.cuda.is_available()
    results: dict[str, Any] = {
        "machine": machine(), "gpu": torch.cuda.get_device_name() if gpu else None, "size": size, "train": TRAIN, "models": {},
    }  # fmt: skip
    variants = targets + (GPU_TARGETS if gpu else [])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calib = root / "calib"
        write_photos(calib)
        for spec in models:
            arch, encoder = spec.split(":")
            row: dict[str, Any] = {"build_s": {}, "latency_ms": {}, "parity": {}, "errors": {}}
            print(f"[suite] {spec}: train {TRAIN['steps']} steps", file=sys.stderr)
            checkpoint = root / f"{arch}-{encoder}.pth"
            row["train_s"], trained = timed(lambda: train_checkpoint(checkpoint, arch, encoder, **TRAIN))
            row["train_accuracy"] = trained["accuracy"]
            bundles = {}
            for variant in variants:
                print(f"[suite] {spec} {variant}: build", file=sys.stderr)
                try:
                    seconds, bundle = build_variant(arch, encoder, variant, size, root, checkpoint, calib)
                except Exception as exc:  # record and go on: one failing target must not hide the others
                    row["errors"][variant] = str(exc).splitlines()[0].split("; report kept in")[0]
                    continue
                row["build_s"][variant] = seconds
                mask = next(o for o in bundle.manifest.parity.outputs if o.name == "mask")
                row["parity"][variant] = {"max_abs": mask.max_abs, "agreement": mask.agreement, "mean_iou": mask.mean_iou}
                bundles[variant] = bundle.path
            print(f"[suite] {spec}: time {', '.join(['eager', *bundles])} in {iters} rotating rounds", file=sys.stderr)
            calls = eager_calls(arch, encoder, checkpoint, x, gpu)
            with contextlib.ExitStack() as stack:
                for variant, path in bundles.items():
                    manifest = Bundle.load(path).manifest
                    device = "cuda" if variant in GPU_TARGETS else "cpu"
                    try:
                        runner = stack.enter_context(runner_for(path, manifest, device=device))
                    except Exception as exc:
                        row["errors"][variant] = str(exc).splitlines()[0]
                        continue
                    calls[variant] = lambda r=runner: (r.infer(x), r.sync())
                with torch.inference_mode():
                    samples = interleaved_times(calls, iters)
            row["latency_ms"] = {name: statistics.median(times) * 1e3 for name, times in samples.items()}
            results["models"][spec] = row
    return results


def to_markdown(results: dict[str, Any], command: str) -> str:
    import onnxruntime
    import torch

    t = results["train"]
    lines = [
        f"Measured by `{command}` on {results['machine']}"
        + (f" with {results['gpu']}" if results["gpu"] else "")
        + f"; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. Input 1x3x{results['size']}x{results['size']}, "
        f"{CLASSES} classes; weights trained {t['steps']} steps on the synthetic task at {t['size']} px; int8 calibrated and "
        "judged on the 12 scikit-image photographs. Latencies are medians of rotating rounds in one process; "
        "speedups are against eager PyTorch on the CPU in the same run.",
        "",
    ]
    columns = sorted({k for r in results["models"].values() for k in r["latency_ms"]}, key=lambda k: (k != "eager", k))
    lines += ["| model | " + " | ".join(f"{c} (ms)" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in results["models"].items():
        eager = row["latency_ms"].get("eager")
        cells = []
        for c in columns:
            v = row["latency_ms"].get(c)
            cells.append("-" if v is None else f"{v:.1f}" + (f" ({eager / v:.2f}x)" if eager and c != "eager" else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| model | target | build (s) | mask max abs err | agreement | mean IoU |", "|---|---|---|---|---|---|"]
    for name, row in results["models"].items():
        for variant, seconds in row["build_s"].items():
            p = row["parity"][variant]
            agree = f"{p['agreement']:.4%}" if p["agreement"] is not None else "-"
            iou = f"{p['mean_iou']:.4f}" if p.get("mean_iou") is not None else "-"
            lines.append(f"| {name} | {variant} | {seconds:.1f} | {p['max_abs']:.2e} | {agree} | {iou} |")
        for variant, err in row["errors"].items():
            lines.append(f"| {name} | {variant} | failed: {err} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="arch:encoder,... (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--targets", default=",".join(CPU_TARGETS), help="CPU variants (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=15, help="Timing rounds (each runtime once per round).")
    parser.add_argument("--json", type=Path, help="Also write the raw figures here.")
    parser.add_argument("--update-readme", action="store_true", help="Rewrite README.md between the suite markers.")
    args = parser.parse_args()
    results = run(args.models.split(","), args.size, args.targets.split(","), args.iters)
    command = "python benchmarks/suite.py " + " ".join(a for a in sys.argv[1:] if a != "--json" and not a.endswith(".json"))
    table = to_markdown(results, command.strip())
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.update_readme:
        readme = Path(__file__).parent.parent / "README.md"
        text = readme.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"README.md lacks the markers {START} ... {END}")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
