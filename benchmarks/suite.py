"""Regenerate the README's performance tables on this machine.

For each model at 512x512: build time per target, CPU latency of eager PyTorch,
ONNX fp32, ONNX int8, TorchScript and AOTInductor (medians, ratios within this
run), and parity figures; on a CUDA machine also eager fp32/fp16, TorchScript fp16
and TensorRT fp16/int8.

    python benchmarks/suite.py                    # print the tables
    python benchmarks/suite.py --update-readme    # also rewrite README.md between the suite markers
    python benchmarks/suite.py --models unet:resnet34 --size 256 --targets onnx,torchscript
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _timing import machine, timed  # noqa: E402

MODELS = ["unet:resnet34", "deeplabv3plus:resnet50", "segformer:mit_b0"]
CPU_TARGETS = ["onnx", "onnx-int8", "torchscript", "aoti"]
GPU_TARGETS = ["torchscript-fp16", "trt-fp16", "trt-int8"]
START, END = "<!-- suite:start -->", "<!-- suite:end -->"


def calibration_dir(root: Path) -> Path:
    """Real photographs shipped with scikit-image, as calibration images."""
    import numpy as np
    from skimage import data

    out = root / "calib"
    out.mkdir(exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry", "retina"):
        try:
            image = getattr(data, name)()
        except Exception:  # some samples need an optional download; skip those
            continue
        if image.ndim == 3 and image.shape[2] == 3:
            np.save(out / f"{name}.npy", image)
    return out


def build_variant(arch: str, encoder: str, variant: str, size: int, root: Path, calib: Path) -> tuple[float, Any]:
    import segexport

    target, _, precision = variant.partition("-")
    options: dict[str, Any] = {"height": size, "width": size, "out": root / f"{arch}-{encoder}-{variant}"}
    if precision == "int8":
        options.update(precision="int8", calib=str(calib))
    elif precision == "fp16":
        options.update(precision="fp16")
    return timed(lambda: segexport.build(arch, encoder, target=target, **options))


def run(models: list[str], size: int, targets: list[str], iters: int) -> dict[str, Any]:
    import torch

    from segexport.bench import bench

    gpu = torch.cuda.is_available()
    results: dict[str, Any] = {"machine": machine(), "gpu": torch.cuda.get_device_name() if gpu else None, "size": size, "models": {}}
    variants = targets + (GPU_TARGETS if gpu else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calib = calibration_dir(root)
        for spec in models:
            arch, encoder = spec.split(":")
            row: dict[str, Any] = {"build_s": {}, "latency_ms": {}, "parity": {}, "errors": {}}
            for variant in variants:
                print(f"[suite] {spec} {variant}: build", file=sys.stderr)
                try:
                    seconds, bundle = build_variant(arch, encoder, variant, size, root, calib)
                except Exception as exc:  # record and go on: one failing target must not hide the others
                    row["errors"][variant] = str(exc).splitlines()[0]
                    continue
                row["build_s"][variant] = seconds
                parity = bundle.manifest["parity"]
                mask = next(o for o in parity["outputs"] if o["name"] == "mask")
                row["parity"][variant] = {"max_abs": mask["max_abs"], "agreement": mask["agreement"], "mean_iou": mask.get("mean_iou")}
                device = "cuda" if variant in GPU_TARGETS else "cpu"
                print(f"[suite] {spec} {variant}: time on {device}", file=sys.stderr)
                try:
                    report = bench(str(bundle.path), iters=iters, warmup=2, device=device, compare_eager=variant == "onnx")
                except Exception as exc:
                    row["errors"][variant] = str(exc).splitlines()[0]
                    continue
                res = report.results[0]
                row["latency_ms"][variant] = res.latency_ms.median
                if res.eager_latency_ms is not None:
                    row["latency_ms"]["eager"] = res.eager_latency_ms.median
            if gpu:
                row["latency_ms"].update(eager_gpu(arch, encoder, size, iters))
            results["models"][spec] = row
    return results


def eager_gpu(arch: str, encoder: str, size: int, iters: int) -> dict[str, float]:
    import torch

    import segexport
    from segexport.bench import Latency, time_calls

    model = segexport.create_model(arch, encoder, encoder_weights=None).eval().cuda()
    x = torch.randn(1, 3, size, size, device="cuda")
    out = {}
    with torch.inference_mode():
        out["eager-cuda"] = Latency.of(time_calls(lambda: model(x), 3, iters, torch.cuda.synchronize)).median
        half, xh = model.half(), x.half()
        out["eager-cuda-fp16"] = Latency.of(time_calls(lambda: half(xh), 3, iters, torch.cuda.synchronize)).median
    return out


def to_markdown(results: dict[str, Any], command: str) -> str:
    import onnxruntime
    import torch

    lines = [
        f"Measured by `{command}` on {results['machine']}"
        + (f" with {results['gpu']}" if results["gpu"] else "")
        + f"; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}. "
        f"Input 1x3x{results['size']}x{results['size']}; latencies are medians, speedups are against eager PyTorch on the CPU in the same run.",
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
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", type=Path, help="Also write the raw figures here.")
    parser.add_argument("--update-readme", action="store_true", help="Rewrite README.md between the suite markers.")
    args = parser.parse_args()
    results = run(args.models.split(","), args.size, args.targets.split(","), args.iters)
    command = "python benchmarks/suite.py " + " ".join(sys.argv[1:])
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
