"""``segexport matrix``: the command line of the compatibility matrix (the work is in :mod:`segexport.matrix`)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Optional

import typer

from segexport.errors import InvalidInputError
from segexport.matrix import MatrixConfig, RaySettings, parse_arch_args, run_matrix
from segexport.matrix.model import DEFAULT_TIMEOUT_S

__all__ = ["matrix"]


def _ray_address(value: str) -> str:
    """``--ray``'s value; an option name there means the address was left out (the parser took the next option)."""
    if not value.strip() or value.startswith("-"):
        raise InvalidInputError(
            f"--ray needs an address: auto, local, ray://HEAD:10001 or HOST:6379; got {value!r}."
        )
    return value.strip()


def matrix(
    archs: str = typer.Option("all", "--archs", help="Architectures, comma-separated, or 'all'."),
    encoders: str = typer.Option("resnet34", "--encoders", help="Encoders, comma-separated (e.g. resnet34,mit_b0,tu-convnext_atto)."),
    targets: str = typer.Option("all", "--targets", help="Targets, comma-separated (onnx,torchscript,aoti,trt), or 'all'."),
    precisions: str = typer.Option("fp32,fp16,int8", "--precisions", help="Precisions, comma-separated."),
    height: int = typer.Option(512, help="Input height of every cell."),
    width: int = typer.Option(512, help="Input width of every cell."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images folder (or 'random') for int8 cells; int8 is n/a without it."),
    checkpoints: Optional[str] = typer.Option(
        None, "--checkpoints", help="Folder of trained weights named <arch>-<encoder>.pth (or .safetensors, ...); rows without one use random weights."
    ),
    classes: int = typer.Option(1, "--classes", help="Output classes of every model (as the checkpoints were trained)."),
    arch_arg: list[str] = typer.Option([], "--arch-arg", help="[ARCH:]key=value constructor argument (repeatable); without ARCH: for every architecture."),
    plugin: list[str] = typer.Option([], "--plugin", help="Module or .py file imported first in every worker (registers custom architectures/encoders)."),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="Workers at once, each building a row's cells in turn (default: fits the cores and memory, or the Ray cluster)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", help="Seconds one cell may take (from its start, after its worker's start-up) before the worker is killed."),
    iters: int = typer.Option(10, "--iters", help="Timed runs of each passing bundle (0: no timing)."),
    out: str = typer.Option("matrix", "--out", "-o", help="Folder for matrix.json, matrix.md, logs of failed cells and kept bundles."),
    report: Optional[str] = typer.Option(None, "--report", help="Markdown report file (default <out>/matrix.md)."),
    keep_bundles: bool = typer.Option(False, "--keep-bundles", help="Keep every cell's bundle under <out>/bundles/."),
    resume: bool = typer.Option(False, "--resume", help="Reuse cells of <out>/matrix.json whose inputs and tool versions are unchanged (errors are retried)."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="ADDRESS",
        help="Build the cells as Ray tasks on a cluster: 'auto' (the cluster this machine is a node of), "
             "ray://HEAD:10001 (Ray Client), HOST:6379, or 'local' (a new Ray instance on this machine). Needs segexport[ray].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (no progress, no table)."),
) -> None:
    """Build every architecture x encoder x target x precision and tabulate export, parity and speed."""
    config = MatrixConfig(
        archs=archs,
        encoders=encoders,
        targets=targets,
        precisions=precisions,
        height=height,
        width=width,
        calib=calib,
        checkpoints=checkpoints,
        classes=classes,
        arch_args=parse_arch_args(arch_arg),
        plugins=list(plugin),
        jobs=jobs,
        timeout=timeout,
        iters=iters,
        out=out,
        report=report,
        keep_bundles=keep_bundles,
        resume=resume,
        ray=None if ray is None else RaySettings(_ray_address(ray)),
    )
    # With --json, stdout holds the JSON only: anything else printing there meanwhile (Ray reports dead workers
    # on stdout) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        result = run_matrix(config, progress=None if as_json else (lambda msg: typer.echo(msg, err=True)))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=repr))
    else:
        typer.echo(result.markdown())
        typer.echo(f"\nWrote {result.report_path} and {result.json_path}", err=True)
