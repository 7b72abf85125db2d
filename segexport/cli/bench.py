"""``segexport bench``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from segexport.cli.output import echo


def bench(
    bundle: str = typer.Argument(..., help="Bundle directory."),
    batch: list[int] = typer.Option([], "--batch", help="Batch size (repeat to sweep; dynamic bundles)."),
    height: list[int] = typer.Option([], "--height", help="Input height (repeat to sweep)."),
    width: list[int] = typer.Option([], "--width", help="Input width (one, or one per --height)."),
    warmup: int = typer.Option(5, help="Untimed runs before timing."),
    iters: int = typer.Option(20, help="Timed runs per shape."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the runtime (default: runtime's own)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    compare_eager: bool = typer.Option(False, "--compare-eager", help="Also time eager PyTorch and report the speedup."),
    runtime: list[str] = typer.Option(
        [], "--runtime",
        help="Runtime to time the bundle in; repeat or comma-separate to compare in one run "
        "(onnx bundles: onnxruntime, openvino). Default: the runtime it was validated with.",
    ),  # fmt: skip
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Measure a bundle's latency, throughput, memory and GFLOP/s in its own runtime (or several, in the same rounds)."""
    from segexport.bench import bench as run_bench
    from segexport.bench import format_table

    report = run_bench(
        bundle, batches=batch, heights=height, widths=width, warmup=warmup, iters=iters, threads=threads,
        device=device, compare_eager=compare_eager, runtimes=runtime, progress=lambda msg: echo(msg, as_json),
    )
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_table(report))
