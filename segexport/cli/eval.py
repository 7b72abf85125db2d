"""``segexport eval``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer


def eval_command(
    bundle: str = typer.Argument(..., help="Bundle directory."),
    images: str = typer.Option(..., "--images", help="Folder of images (png, jpg, bmp, npy), searched recursively."),
    masks: Optional[str] = typer.Option(None, "--masks", help="Folder of ground-truth PNG class ids with the images' stems."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="The weights the bundle was built from (eager fp32 runs them)."),
    device: str = typer.Option("cpu", help="Where the artifact runs: cpu | cuda."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the artifact's runtime."),
    ignore_index: int = typer.Option(255, "--ignore-index", help="Mask value of unlabelled pixels."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run the artifact and eager fp32 over a folder of images: agreement and IoU, or mIoU against ground truth."""
    from segexport.evaluate import evaluate, format_markdown

    bar = None
    state = {"done": 0}

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if quiet or as_json:
            return
        if bar is None:
            bar = typer.progressbar(length=total, label="eval", file=sys.stderr)
            bar.__enter__()
        bar.update(done - state["done"])
        state["done"] = done

    try:
        report = evaluate(
            bundle, images, masks, checkpoint=checkpoint, device=device, threads=threads, ignore_index=ignore_index, progress=progress
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_markdown(report))
