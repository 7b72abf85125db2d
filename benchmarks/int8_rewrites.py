"""What each rewrite of the onnxruntime int8 form buys: the same Q/DQ graph without them, with the GELU fused, and with both.

The onnxruntime form (``calibration.quantize``) rewrites each decomposed GELU as one
``Gelu`` node (``fuse_gelu``) and leaves attention's activation-by-activation MatMuls in
float (``activation_matmuls``). This script quantizes one fp32 graph three times from the
same calibrated ranges, with the fallback off so that the graphs differ by the rewrites
only, and times the four graphs (fp32 and the three int8 ones) in alternating rounds in
one process, onnxruntime with full optimizations on 1 thread. Weights are random (the
speed of a graph does not depend on them); calibration uses proxy-task images.

    python benchmarks/int8_rewrites.py --rows pspnet:mit_b0,linknet:mit_b0 --size 512 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _timing import interleaved_times, machine  # noqa: E402

#: The three int8 graphs: which rewrites are switched off in each.
VARIANTS = {
    "int8, no rewrites": ("fuse_gelu", "activation_matmuls"),
    "int8, GELU fused": ("activation_matmuls",),
    "int8, GELU fused, attention products in float (the build)": (),
}
_OFF = {"fuse_gelu": lambda proto: 0, "activation_matmuls": lambda model: []}


def run_row(arch: str, encoder: str, args: argparse.Namespace, work: Path, calib: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    import segexport
    from proxy_task import CLASSES
    from segexport.calibration import quantize as quantize_module
    from segexport.calibration.sources import CalibrationConfig
    from segexport.targets import ExportSpec

    fp32 = segexport.build(arch, encoder, out=work / f"{arch}-{encoder}", classes=CLASSES, height=args.size, width=args.size)
    spec = ExportSpec(
        batch=1, in_channels=3, height=args.size, width=args.size, output_names=("mask",), precision="int8",
        calibration=CalibrationConfig.from_options({
            "calib": str(calib), "calib_count": args.calib_count, "int8_fallback": "off", "int8_speed_runs": 0,
            "calib_cache": str(work / f"{arch}-{encoder}.calib.json")}),
        encoder=encoder, threads=1,
    )  # fmt: skip
    graphs = {"fp32": fp32.artifact}
    counts = {}
    for name, off in VARIANTS.items():
        path = work / f"{arch}-{encoder}-{len(graphs)}.onnx"
        with contextlib.ExitStack() as stack:
            for function in off:
                stack.enter_context(mock.patch.object(quantize_module, function, _OFF[function]))
            quantize_module.quantize_onnx(fp32.artifact, path, spec)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        counts[name] = {"Gelu": ops.count("Gelu"), "Erf": ops.count("Erf")}
        graphs[name] = path

    import numpy as np

    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    calls = {}
    for name, path in graphs.items():
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        calls[name] = (lambda s: lambda: s.run(None, {"input": x}))(session)
    times = interleaved_times(calls, rounds=args.rounds)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        "arch": arch,
        "encoder": encoder,
        "ms": ms,
        "speedup_vs_fp32": {name: ms["fp32"] / v for name, v in ms.items()},
        "ops": counts,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| arch | encoder | graph | median ms | speed vs fp32 |", "|---|---|---|---|---|"]
    for row in rows:
        for name, v in row["ms"].items():
            lines.append(f"| {row['arch']} | {row['encoder']} | {name} | {v:.1f} | {row['speedup_vs_fp32'][name]:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="pspnet:mit_b0,linknet:mit_b0", help="arch:encoder,...")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calib-count", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="Timed rounds; each runs every graph once, in rotating order.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime

    from proxy_task import write_proxy_set

    figures: dict[str, Any] = {"machine": machine(), "onnxruntime": onnxruntime.__version__, "settings": vars(args) | {"json": str(args.json)}}
    with tempfile.TemporaryDirectory(prefix="segexport-int8-rewrites-") as tmp:
        work = Path(tmp)
        calib, _ = write_proxy_set(work / "calib", args.calib_count * 2, args.size, split="val", seed=11)
        rows = []
        for item in args.rows.split(","):
            arch, _, encoder = item.strip().partition(":")
            print(f"== {arch} {encoder}", flush=True)
            rows.append(run_row(arch, encoder or "mit_b0", args, work, calib))
            print(table(rows[-1:]), flush=True)
    figures["rows"] = rows
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
