"""CPU latency of segexport's int8 ONNX vs fp32 in onnxruntime, with the int8 model's agreement with fp32.

The model is trained for a minute on the synthetic task of tests/trained_model.py and
calibrated and judged on real photographs (scikit-image's bundled samples), so the
agreement figures describe a model with structure, not random weights on noise. Both
bundles are built by ``segexport.build`` exactly as the CLI does; latencies are
medians over alternating rounds in one process (ratios are computed within the run).

    python benchmarks/int8_onnx.py [--arch unet --encoder resnet34 --size 512 --iters 10 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _timing import interleaved_times, machine, timed  # noqa: E402


def ort_session(path: Path, threads: int | None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def dataset_miou(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """mIoU as segmentation benchmarks define it: intersections and unions summed over all images, then per class.

    The parity report's mean IoU averages per image instead, where a class covering a few
    dozen pixels of one photograph weighs as much as a whole other image.
    """
    from segexport.parity import class_masks

    a = np.concatenate([class_masks(x, None).ravel() for x in actual])
    e = np.concatenate([class_masks(x, None).ravel() for x in expected])
    ious = [np.sum((a == c) & (e == c)) / np.sum((a == c) | (e == c)) for c in np.union1d(np.unique(a), np.unique(e))]
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--train-size", type=int, default=128, help="Training crop size (the model is fully convolutional).")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--calib-count", type=int, default=12)
    parser.add_argument("--calib-method", default="minmax")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6, help="Timing rounds, each graph in turn, the order rotating.")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import onnxruntime

    import segexport
    from segexport.calibration.quantize import quantize_onnx
    from segexport.calibration.sources import CalibrationConfig
    from segexport.parity import class_agreement, mean_iou
    from segexport.targets import ExportSpec
    from trained_model import PHOTOS, train_checkpoint, write_photos

    with tempfile.TemporaryDirectory(prefix="segexport-int8-bench-") as tmp:
        tmp = Path(tmp)
        train_s, trained = timed(
            lambda: train_checkpoint(tmp / "model.pth", args.arch, args.encoder, size=args.train_size, steps=args.train_steps, batch=8, lr=1e-3)
        )
        photos = tmp / "photos"
        write_photos(photos, formats=("png", "jpg"))
        common = dict(checkpoint=str(tmp / "model.pth"), classes=3, height=args.size, width=args.size)
        fp32_s, fp32 = timed(lambda: segexport.build(args.arch, args.encoder, out=tmp / "fp32", **common))
        int8_s, int8 = timed(
            lambda: segexport.build(
                args.arch, args.encoder, out=tmp / "int8", precision="int8", calib=str(photos),
                target_options={"calib_count": args.calib_count, "calib_method": args.calib_method}, **common,
            )
        )  # fmt: skip
        # The graph the TensorRT target builds from (symmetric int8), timed here to show why the
        # ONNX target writes a different encoding of the same ranges for onnxruntime.
        spec = ExportSpec(
            batch=1, in_channels=3, height=args.size, width=args.size, output_names=("mask",), precision="int8",
            calibration=CalibrationConfig.from_options({
                "calib": str(photos), "calib_count": args.calib_count, "calib_method": args.calib_method,
                "calib_cache": str(tmp / "int8.calib.json")}),
            encoder=args.encoder,
        )  # fmt: skip
        quantize_onnx(int8.path / "model.fp32.onnx", tmp / "model.trt-int8.onnx", spec, runtime="tensorrt")

        sessions = {
            "fp32 (model.onnx)": ort_session(fp32.artifact, args.threads),
            "int8 (model.onnx, uint8 activations)": ort_session(int8.artifact, args.threads),
            "int8 for TensorRT (symmetric int8), same runtime": ort_session(tmp / "model.trt-int8.onnx", args.threads),
        }
        with np.load(int8.path / "reference.npz") as ref:
            inputs = [ref[k] for k in sorted(ref.files, key=lambda k: int(k.split("_")[1])) if k.startswith("input_")]
        feed = {"input": inputs[0]}
        calls = {name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()}
        rounds = interleaved_times(calls, args.rounds, args.iters)
        latency = {name: statistics.median(times) * 1e3 for name, times in rounds.items()}

        # Agreement of the two int8 graphs with fp32 onnxruntime on every calibration photograph.
        fp32_out = [sessions["fp32 (model.onnx)"].run(None, {"input": x})[0] for x in inputs]
        agreement = {}
        for name in list(sessions)[1:]:
            out = [sessions[name].run(None, {"input": x})[0] for x in inputs]
            agreement[name] = {
                "agreement": float(np.mean([class_agreement(a, e, None) for a, e in zip(out, fp32_out)])),
                "mean_iou": float(np.mean([mean_iou(a, e, None) for a, e in zip(out, fp32_out)])),
                "dataset_miou": dataset_miou(out, fp32_out),
            }
        parity = int8.manifest.parity.outputs[0]

    base = latency["fp32 (model.onnx)"]
    figures = {
        "model": f"{args.arch}-{args.encoder} 1x3x{args.size}x{args.size}, 3 classes, trained {args.train_steps} steps "
        f"at {args.train_size}px (synthetic-task pixel accuracy {trained['accuracy']:.3f})",
        "calibration": f"{len(PHOTOS)} skimage photographs, {args.calib_count} used, method {args.calib_method}",
        "machine": machine(),
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads or "onnxruntime default",
        "build_s": {"train": train_s, "fp32 bundle": fp32_s, "int8 bundle (calibrate + quantize + validate)": int8_s},
        "latency_ms": latency,
        "speedup_vs_fp32": {name: base / ms for name, ms in latency.items()},
        "int8_bundle_parity_vs_eager_fp32": {"agreement": parity.agreement, "mean_iou": parity.mean_iou},
        "agreement_vs_fp32_onnxruntime": agreement,
        "goal": "int8 >= 1.5x faster at >= 0.98 mean IoU agreement with fp32",
    }
    print(f"{figures['model']}\n{figures['calibration']}\n{figures['machine']}, onnxruntime {figures['onnxruntime']}, "
          f"threads: {figures['threads']}\n")  # fmt: skip
    print(
        "| graph | median latency (ms) | speedup vs fp32 | class agreement | mean IoU per image | dataset mIoU |\n"
        "|---|---|---|---|---|---|"
    )
    for name, ms in latency.items():
        agree = agreement.get(name)
        cells = f"{agree['agreement']:.4f} | {agree['mean_iou']:.4f} | {agree['dataset_miou']:.4f}" if agree else "1 | 1 | 1"
        print(f"| {name} | {ms:.1f} | {base / ms:.2f}x | {cells} |")
    print(f"\nint8 bundle parity vs eager fp32 PyTorch: agreement {parity['agreement']:.4f}, mean IoU {parity['mean_iou']:.4f}")
    print(f"build: train {train_s:.0f} s, fp32 bundle {fp32_s:.0f} s, int8 bundle {int8_s:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
