"""Every int8 cell of the compatibility table, judged on held-out images of the proxy task, with its speed against fp32.

For each row (architecture x encoder, as in the README's matrix) a model is trained on
the proxy task of tests/proxy_task.py (objects cut from photographs pasted onto other
photographs, 4 classes); the fp32 ONNX bundle is built by ``segexport.build``; then both
int8 forms (onnxruntime's and TensorRT's Q/DQ graph) are quantized from that fp32 graph
by ``calibration.quantize.quantize_onnx``, calibrated on the calibration share of a
folder of proxy validation-split images and judged on its held-out share, with the
accuracy-budgeted fallback on. Each cell reports the held-out agreement and mean IoU
against eager fp32 PyTorch, the layers kept in float, and the median latency against
the fp32 graph in onnxruntime in the same run (the TensorRT form's graph is timed there
too, as written: without a GPU its engine cannot be timed, and x86 onnxruntime has no
fast symmetric-int8 kernels, so that figure is not the engine's speed).

Finally ``segexport eval`` (segexport.evaluate) of the first row's fp32 and int8 ONNX
bundles on a separate proxy validation set with ground-truth masks: mIoU of both.

    python benchmarks/int8_heldout.py --rows unet:resnet34,deeplabv3:resnet34 --size 256 --json out.json
    python benchmarks/int8_heldout.py --rows all   # the 20 rows of the README's matrix
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _timing import machine  # noqa: E402

#: The README matrix's rows with an int8 cell (architecture, encoder).
MATRIX_ROWS = [
    ("deeplabv3", "resnet34"), ("deeplabv3plus", "resnet34"), ("dpt", "tu-vit_tiny_patch16_224"),
    ("fpn", "resnet34"), ("fpn", "mit_b0"), ("linknet", "resnet34"), ("linknet", "mit_b0"), ("manet", "resnet34"),
    ("manet", "mit_b0"), ("pan", "resnet34"), ("pspnet", "resnet34"), ("pspnet", "mit_b0"), ("segformer", "resnet34"),
    ("segformer", "mit_b0"), ("unet", "resnet34"), ("unet", "mit_b0"), ("unetplusplus", "resnet34"),
    ("unetplusplus", "mit_b0"), ("upernet", "resnet34"), ("upernet", "mit_b0"),
]  # fmt: skip
ARCH_ARGS = {"dpt": {"dynamic_img_size": True}}
#: Smallest input an architecture takes (PAN pools its stride-32 feature to 1, 2 and 4 cells).
MIN_SIZE = {"pan": 128}
FORMS = {"onnx int8": "onnxruntime", "trt int8": "tensorrt"}


def parse_rows(text: str) -> list[tuple[str, str]]:
    if text == "all":
        return list(MATRIX_ROWS)
    rows = []
    for item in text.split(","):
        arch, _, encoder = item.strip().partition(":")
        rows.append((arch, encoder or "resnet34"))
    return rows


def eager_outputs(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy() for x in inputs]


def run_row(arch: str, encoder: str, args: argparse.Namespace, work: Path, calib: Path) -> dict[str, Any]:
    """Train, build fp32, quantize both forms, judge on the held-out images against eager; one dict per row."""
    import onnxruntime as ort
    import torch

    import segexport
    from proxy_task import CLASSES
    from segexport.calibration.fallback import measure_speedup
    from segexport.calibration.quantize import quantize_onnx
    from segexport.calibration.sources import CalibrationConfig, load_validation
    from segexport.errors import SegexportError
    from segexport.parity import confusion, miou
    from segexport.parity import class_masks, mean_iou
    from segexport.targets import ExportSpec
    from trained_model import train_checkpoint

    row: dict[str, Any] = {"arch": arch, "encoder": encoder, "cells": {}}
    arch_args = ARCH_ARGS.get(arch, {})
    checkpoint = work / f"{arch}-{encoder}.pth"
    start = time.perf_counter()
    size = max(args.train_size, MIN_SIZE.get(arch, 0))
    trained = train_checkpoint(
        checkpoint, arch, encoder, arch_args=arch_args, size=size, steps=args.train_steps, batch=8, lr=args.lr, task="proxy"
    )
    row["train"] = {**trained, "seconds": time.perf_counter() - start}
    common = dict(checkpoint=str(checkpoint), classes=CLASSES, height=args.size, width=args.size, arch_args=arch_args)
    start = time.perf_counter()
    fp32 = segexport.build(arch, encoder, out=work / f"{arch}-{encoder}-fp32", **common)
    row["fp32_build_s"] = time.perf_counter() - start
    torch.manual_seed(0)
    model = segexport.create_model(arch, encoder, encoder_weights=None, classes=CLASSES, **arch_args)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    for form, runtime in FORMS.items():
        spec = ExportSpec(
            batch=1, in_channels=3, height=args.size, width=args.size, output_names=("mask",), precision="int8",
            calibration=CalibrationConfig.from_options({
                "calib": str(calib), "calib_count": args.calib_count, "calib_method": args.calib_method, "int8_speed_runs": 0,
                "calib_cache": str(work / f"{arch}-{encoder}.calib.json")}),
            encoder=encoder, threads=args.threads,
        )  # fmt: skip
        out = work / f"{arch}-{encoder}-{runtime}.onnx"
        cell: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            record = quantize_onnx(fp32.artifact, out, spec, runtime=runtime)
        except SegexportError as exc:
            cell.update(error=str(exc), seconds=time.perf_counter() - start)
            row["cells"][form] = cell
            continue
        cell["seconds"] = time.perf_counter() - start
        held = load_validation(spec).inputs
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if runtime == "tensorrt":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # as TensorRT runs Q/DQ
        session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        actual = [session.run(["mask"], {"input": x})[0] for x in held]
        expected = eager_outputs(model, held)
        matrix = sum(confusion(class_masks(a, None).ravel(), class_masks(e, None).ravel(), CLASSES) for a, e in zip(actual, expected))
        cell.update(
            held_out_images=len(held),
            calibration_images=record["images"],
            agreement=float(np.trace(matrix) / matrix.sum()),
            mean_iou=miou(matrix),
            per_image_mean_iou=float(np.mean([mean_iou(a, e, None) for a, e in zip(actual, expected)])),
            before_fallback=record["validation"]["before_fallback"],
            kept_in_float=[k["node"] for k in record["fallback"]["kept_in_float"]],
            quantized_layers=record["fallback"].get("quantized_layers"),
            float_share_of_macs=record["fallback"].get("float_share_of_macs", 0.0),
        )
        cell["passes"] = cell["agreement"] >= 0.98 and cell["mean_iou"] >= 0.95
        cell["speed"] = measure_speedup(fp32.artifact, out, held[0], runs=args.runs, threads=args.threads)
        row["cells"][form] = cell
    return row


def eval_rows(arch: str, encoder: str, args: argparse.Namespace, work: Path, calib: Path, images: Path, masks: Path) -> dict[str, Any]:
    """segexport eval of the row's fp32 bundle and an int8 ONNX bundle against ground truth."""
    import segexport
    from proxy_task import CLASSES
    from segexport.evaluate import evaluate, format_markdown

    checkpoint = work / f"{arch}-{encoder}.pth"
    common = dict(checkpoint=str(checkpoint), classes=CLASSES, height=args.size, width=args.size, arch_args=ARCH_ARGS.get(arch, {}))
    from segexport.errors import SegexportError

    try:
        int8 = segexport.build(
            arch, encoder, out=work / f"{arch}-{encoder}-int8", precision="int8", calib=str(calib),
            target_options={"calib_count": args.calib_count, "calib_method": args.calib_method, "int8_speed_runs": 0,
                            "calib_cache": str(work / f"{arch}-{encoder}.calib.json")},
        **common,
        )  # fmt: skip
    except SegexportError as exc:
        return {"error": str(exc)}
    out = {}
    for name, path in (("fp32", work / f"{arch}-{encoder}-fp32"), ("int8", int8.path)):
        report = evaluate(path, images, masks, checkpoint=checkpoint, threads=args.threads)
        out[name] = report.to_dict()
        print(format_markdown(report), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="unet:resnet34", help="arch:encoder,... or 'all' (the README matrix's 20 rows).")
    parser.add_argument("--size", type=int, default=512, help="Export and judging size (the matrix's is 512).")
    parser.add_argument("--train-size", type=int, default=64, help="Training crop size (raised to an architecture's minimum).")
    parser.add_argument("--train-steps", type=int, default=200, help="The proxy task needs ~100 steps before objects appear.")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--images", type=int, default=48, help="Proxy images in the calibration folder (split into calibration/held-out).")
    parser.add_argument("--eval-images", type=int, default=32, help="Proxy validation images for segexport eval (another seed).")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--calib-method", default="minmax")
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per graph (alternating int8 and fp32).")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for timing and eval.")
    parser.add_argument("--no-eval", action="store_true", help="Skip segexport eval of the first row.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime

    from proxy_task import write_proxy_set

    rows = parse_rows(args.rows)
    figures: dict[str, Any] = {
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="segexport-int8-heldout-") as tmp:
        work = Path(tmp)
        calib, _ = write_proxy_set(work / "calib", args.images, args.size, split="val", seed=11)
        for arch, encoder in rows:
            print(f"== {arch} {encoder}", flush=True)
            row = run_row(arch, encoder, args, work, calib)
            figures["rows"].append(row)
            trained = row["train"]
            print(f"   trained {trained['seconds']:.0f} s: pixel accuracy {trained['accuracy']:.3f} on the proxy val split", flush=True)
            for form, cell in row["cells"].items():
                print(f"   {form}: {json.dumps({k: v for k, v in cell.items() if k != 'speed'})} speed "
                      f"{cell.get('speed', {}).get('speedup_vs_fp32', float('nan')):.2f}x", flush=True)  # fmt: skip
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2) + "\n")
        if not args.no_eval and rows:
            images, masks = write_proxy_set(work / "eval", args.eval_images, args.size, split="val", seed=12)
            figures["eval"] = {"row": f"{rows[0][0]}-{rows[0][1]}", **eval_rows(*rows[0], args, work, calib, images, masks)}
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def table(figures: dict[str, Any]) -> str:
    """The cells as a Markdown table."""
    lines = [
        "| arch | encoder | form | held-out images | agreement | mIoU | mean IoU per image | passes | kept in float "
        "| speed vs fp32 onnxruntime |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in figures["rows"]:
        for form, c in row["cells"].items():
            if "error" in c:
                lines.append(f"| {row['arch']} | {row['encoder']} | {form} | - | - | - | - | ✗ | {c['error'][:160]} | - |")
                continue
            kept = "none"
            if c["kept_in_float"]:
                kept = f"{len(c['kept_in_float'])} of {c['quantized_layers']} ({c['float_share_of_macs']:.0%} of MACs)"
            lines.append(
                f"| {row['arch']} | {row['encoder']} | {form} | {c['held_out_images']} | {c['agreement']:.4f} | {c['mean_iou']:.4f} | "
                f"{c['per_image_mean_iou']:.4f} | "
                f"{'✓' if c['passes'] else '✗'} | {kept} | {c['speed']['speedup_vs_fp32']:.2f}x |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
