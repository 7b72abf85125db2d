"""The ``segexport`` command line.

Heavy modules (torch, onnxruntime, TensorRT) are imported inside the commands,
so ``segexport --help`` answers at once. Errors the user caused print one line
and exit 2; anything unexpected exits 1 and suggests ``--debug``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from segexport.arguments import parse_arch_args
from segexport.errors import InvalidInputError, SegexportError
from segexport.cli.matrix import matrix

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Export segmentation models to validated ONNX / TensorRT / TorchScript bundles.",
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _echo(msg: str, quiet: bool) -> None:
    if not quiet:
        typer.echo(msg, err=True)


@app.command()
def build(
    arch: str = typer.Argument(..., help="Architecture, e.g. unet, fpn, deeplabv3plus (see `segexport list archs`)."),
    encoder: str = typer.Argument(..., help="Encoder, e.g. resnet34, mit_b0, tu-<timm model>."),
    target: str = typer.Option("onnx", "--target", "-t", help="onnx | torchscript | trt | aoti."),
    checkpoint: Optional[str] = typer.Option(None, help="Trained weights (.pth/.pt/.ckpt/.safetensors)."),
    classes: int = typer.Option(1, help="Output mask channels (SMP default 1)."),
    in_channels: int = typer.Option(3, "--in-channels", help="Input image channels."),
    height: int = typer.Option(512, help="Input height."),
    width: int = typer.Option(512, help="Input width."),
    batch: int = typer.Option(1, help="Batch size."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch, height and width."),
    encoder_depth: Optional[int] = typer.Option(None, "--encoder-depth", help="Encoder depth (architecture default if unset)."),
    aux_classes: Optional[int] = typer.Option(None, "--aux-classes", help="Add the classification head with N classes."),
    activation: Optional[str] = typer.Option(None, help="Output activation: sigmoid, softmax2d, argmax2d, ..."),
    arch_arg: list[str] = typer.Option([], "--arch-arg", help="Extra constructor argument key=value (repeatable)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half precision."),
    int8: bool = typer.Option(False, "--int8", help="INT8 with explicit Q/DQ (needs --calib)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images folder, or 'random'."),
    calib_count: int = typer.Option(32, "--calib-count", help="Calibration images to use."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="minmax | entropy | percentile."),
    calib_cache: Optional[str] = typer.Option(None, "--calib-cache", help="File caching calibration ranges (default beside the bundle)."),
    min_shape: Optional[str] = typer.Option(None, "--min-shape", help="TensorRT profile minimum, e.g. 1x3x256x256 (with --dynamic)."),
    opt_shape: Optional[str] = typer.Option(None, "--opt-shape", help="TensorRT profile optimum shape (with --dynamic)."),
    max_shape: Optional[str] = typer.Option(None, "--max-shape", help="TensorRT profile maximum shape (with --dynamic)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="TensorRT workspace limit in MiB."),
    timing_cache: Optional[str] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, reused across builds."),
    hardware_compat: bool = typer.Option(False, "--hardware-compat", help="TensorRT engine for all Ampere+ GPUs, where supported."),
    opset: int = typer.Option(18, help="ONNX opset."),
    atol: Optional[float] = typer.Option(None, help="Absolute tolerance for parity."),
    rtol: Optional[float] = typer.Option(None, help="Relative tolerance for parity."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Bundle directory (default artifacts/<arch>-<encoder>-<target>-<precision>)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Export ARCH with ENCODER to a validated bundle."""
    if fp16 and int8:
        raise InvalidInputError("--fp16 and --int8 exclude each other; choose one.")
    from segexport.pipeline import BuildRequest, run_build

    steps = iter(range(1, 100))
    req = BuildRequest(
        arch=arch,
        encoder=encoder,
        target=target,
        checkpoint=checkpoint,
        classes=classes,
        in_channels=in_channels,
        height=height,
        width=width,
        batch=batch,
        dynamic=dynamic,
        encoder_depth=encoder_depth,
        aux_classes=aux_classes,
        activation=activation,
        arch_args=parse_arch_args(arch_arg),
        precision="fp16" if fp16 else "int8" if int8 else "fp32",
        calib=calib,
        target_options={
            "calib_count": calib_count,
            "calib_method": calib_method,
            "calib_cache": calib_cache,
            "min_shape": min_shape,
            "opt_shape": opt_shape,
            "max_shape": max_shape,
            "workspace_mb": workspace,
            "timing_cache": timing_cache,
            "hardware_compat": hardware_compat,
        },
        opset=opset,
        atol=atol,
        rtol=rtol,
        out=out,
        force=force,
    )
    bundle = run_build(req, progress=lambda msg: _echo(f"[{next(steps)}] {msg}", quiet or as_json))
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle.path), "manifest": bundle.manifest}, indent=2))
    else:
        _echo(f"Bundle written to {bundle.path}", quiet)


@app.command()
def verify(
    bundle: str = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-check the sha256 of every file and re-run parity from the manifest."""
    from segexport.pipeline import verify as run_verify

    result = run_verify(bundle)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "passed": result.passed,
                    "bad_files": result.bad_files,
                    "parity": result.report.to_dict() if result.report else None,
                },
                indent=2,
            )
        )
    elif result.bad_files:
        typer.echo(f"FAILED: files changed since the build: {', '.join(result.bad_files)}", err=True)
    else:
        typer.echo(f"{'OK' if result.passed else 'FAILED'}: {result.report.summary()}")
    if not result.passed:
        raise typer.Exit(2)


@app.command()
def inspect(bundle: str = typer.Argument(..., help="Bundle directory."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a bundle's manifest as a readable table."""
    from segexport.bundle import Bundle

    m = Bundle.load(bundle).manifest
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    rows = [
        ("arch", m["arch"]),
        ("encoder", m["encoder"]),
        ("target", f"{m['target']} ({m.get('runtime')})"),
        ("precision", m["precision"]),
        ("artifact", m["artifact"]),
        *[(f"input {i['name']}", f"{i['shape']} {i['dtype']} {i['layout']}") for i in m["inputs"]],
        *[(f"output {o['name']}", f"{o['shape']} {o['dtype']}") for o in m["outputs"]],
        ("normalization", f"mean {m['normalization']['mean']} std {m['normalization']['std']} range {m['normalization']['input_range']}"),
        ("parity", f"{'passed' if m['parity']['passed'] else 'FAILED'} with {m['parity']['validated_with']} "
                   f"(atol {m['parity']['atol']}, rtol {m['parity']['rtol']})"),
        *[(f"  {o['name']}", f"max abs {o['max_abs']:.3g}, cosine {o['cosine']:.6f}" + (f", agreement {o['agreement']:.4%}" if o["agreement"] is not None else "")) for o in m["parity"]["outputs"]],
        ("versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
        ("created", m["created"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key.ljust(width)}  {value}")


@app.command()
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
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Measure a bundle's latency, throughput, memory and GFLOP/s in its own runtime."""
    from segexport.bench import bench as run_bench
    from segexport.bench import format_table

    report = run_bench(
        bundle, batches=batch, heights=height, widths=width, warmup=warmup, iters=iters, threads=threads,
        device=device, compare_eager=compare_eager, progress=lambda msg: _echo(msg, as_json),
    )
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_table(report))


@app.command("list")
def list_(what: str = typer.Argument(..., help="archs | encoders | targets")) -> None:
    """List the registered architectures, encoders or targets."""
    if what in ("archs", "architectures"):
        from segexport.arch.registry import ALIASES, list_architectures

        names = list_architectures() + [f"{a} (= {n})" for a, n in ALIASES.items()]
    elif what == "encoders":
        from segexport.arch.encoders import list_encoders

        names = [*list_encoders(), "tu-<any timm model>"]
    elif what == "targets":
        from segexport.targets import list_targets

        names = list_targets()
    else:
        from segexport.errors import unknown

        raise unknown("list", what, ["archs", "encoders", "targets"])
    typer.echo("\n".join(names))


app.command()(matrix)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, mapping errors to one line and exit codes 2 (input) / 1 (bug)."""
    try:
        app(args=argv, standalone_mode=False)
    except SegexportError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # usage errors of the CLI framework are handled here; anything else is a bug
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
