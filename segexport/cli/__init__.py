"""The ``segexport`` command line.

Heavy modules (torch, onnxruntime, TensorRT) are imported inside the commands,
so ``segexport --help`` answers at once. Errors the user caused print one line
and exit 2; anything unexpected exits 1 and suggests ``--debug``.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import TYPE_CHECKING, Optional

import typer

from segexport import interrupts
from segexport.arguments import parse_arch_args
from segexport.cli import eval as eval_command
from segexport.cli import matrix as matrix_command
from segexport.errors import InvalidInputError, SegexportError, unknown
from segexport.names import check_architecture, check_encoder, check_target

if TYPE_CHECKING:
    from segexport.manifest import Manifest

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
    arch: Optional[str] = typer.Argument(
        None, help="Architecture, e.g. unet, fpn, deeplabv3plus (see `segexport list archs`); from config.json with a pretrained --checkpoint."
    ),
    encoder: Optional[str] = typer.Argument(None, help="Encoder, e.g. resnet34, mit_b0, tu-<timm model>; likewise."),
    target: str = typer.Option("onnx", "--target", "-t", help="onnx | torchscript | trt | aoti."),
    checkpoint: Optional[str] = typer.Option(
        None, help="Trained weights (.pth/.pt/.ckpt/.safetensors), or a save_pretrained folder / hub repo (its config.json gives every argument)."
    ),
    classes: Optional[int] = typer.Option(None, help="Output mask channels (SMP default 1)."),
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="Input image channels (default 3)."),
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
    calib_count: Optional[int] = typer.Option(None, "--calib-count", help="Calibration images to use (default 32)."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="minmax (default) | entropy | percentile."),
    calib_cache: Optional[str] = typer.Option(None, "--calib-cache", help="File caching calibration ranges (default beside the bundle)."),
    val: Optional[str] = typer.Option(
        None, "--val", help="int8 is judged on these images (default: a fixed held-out split of --calib, never calibrated on)."
    ),
    int8_fallback: Optional[str] = typer.Option(
        None, "--int8-fallback", help="on (default): keep the fewest int8-hostile layers in float until the held-out budget holds; off: never."
    ),
    min_shape: Optional[str] = typer.Option(None, "--min-shape", help="TensorRT profile minimum, e.g. 1x3x256x256 (with --dynamic)."),
    opt_shape: Optional[str] = typer.Option(None, "--opt-shape", help="TensorRT profile optimum shape (with --dynamic)."),
    max_shape: Optional[str] = typer.Option(None, "--max-shape", help="TensorRT profile maximum shape (with --dynamic)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="TensorRT workspace limit in MiB."),
    timing_cache: Optional[str] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, reused across builds."),
    hardware_compat: bool = typer.Option(False, "--hardware-compat", help="TensorRT engine for all Ampere+ GPUs, where supported."),
    device: Optional[str] = typer.Option(None, "--device", help="aoti: compile for cpu (default) or cuda (this GPU; --fp16 too)."),
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
    check_target(target)
    from segexport.pipeline import (
        BuildRequest,
        is_pretrained_source,
        pretrained_fields,
        run_build,
    )

    arch_args = parse_arch_args(arch_arg)
    pretrained: dict = {}
    if checkpoint is not None and is_pretrained_source(checkpoint):
        if arch is not None:
            check_architecture(arch)
        pretrained = pretrained_fields(
            checkpoint, arch=arch, encoder=encoder, classes=classes, in_channels=in_channels, arch_args=arch_args
        )
    elif arch is None or encoder is None:
        raise InvalidInputError("ARCH and ENCODER are needed (e.g. `segexport build unet resnet34`) unless --checkpoint is a save_pretrained folder or hub repo.")
    else:
        check_architecture(arch)
        check_encoder(encoder)

    steps = itertools.count(1)
    req = BuildRequest(
        arch=pretrained.get("arch", arch),
        encoder=pretrained.get("encoder", encoder),
        target=target,
        checkpoint=pretrained.get("checkpoint", checkpoint),
        checkpoint_source=pretrained.get("checkpoint_source"),
        classes=pretrained.get("classes", 1 if classes is None else classes),
        in_channels=pretrained.get("in_channels", 3 if in_channels is None else in_channels),
        height=height,
        width=width,
        batch=batch,
        dynamic=dynamic,
        encoder_depth=encoder_depth,
        aux_classes=aux_classes,
        activation=activation,
        arch_args=pretrained.get("arch_args", arch_args),
        precision="fp16" if fp16 else "int8" if int8 else "fp32",
        calib=calib,
        target_options={
            "calib_count": calib_count,
            "calib_method": calib_method,
            "calib_cache": calib_cache,
            "val": val,
            "int8_fallback": int8_fallback,
            "min_shape": min_shape,
            "opt_shape": opt_shape,
            "max_shape": max_shape,
            "workspace_mb": workspace,
            "timing_cache": timing_cache,
            "hardware_compat": hardware_compat or None,  # None: not given (an option of trt only)
            "device": device,  # an option of aoti only
        },
        opset=opset,
        atol=atol,
        rtol=rtol,
        out=out,
        force=force,
    )
    bundle = run_build(req, progress=lambda msg: _echo(f"[{next(steps)}] {msg}", quiet or as_json))
    m = bundle.manifest
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle.path), "digest": m.digest, "manifest": m.to_json()}, indent=2))
    else:
        took = ", ".join(f"{step} {t:.1f}" for step, t in m.build.get("seconds", {}).items())
        _echo(f"Bundle written to {bundle.path} (digest {m.digest}); seconds per step: {took}", quiet)


@app.command()
def verify(
    bundle: str = typer.Argument(..., help="Bundle directory."),
    expect_digest: Optional[str] = typer.Option(
        None, "--expect-digest", help="Refuse the bundle unless its manifest digest is this one (as `build` printed it)."
    ),
    locate: bool = typer.Option(
        False, "--locate", help="Also compare every layer with the eager model and print the first ones past tolerance."
    ),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="With --locate: the weights the bundle was built from."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check the manifest's digest and every file's sha256, then re-run parity under the stored policy.

    Exits 0 when everything holds, 2 when anything does not.
    """
    from segexport.pipeline import verify as run_verify

    result = run_verify(bundle, expect_digest=expect_digest)
    if locate and not result.bad_files:
        from segexport.locate import format_locate
        from segexport.locate import locate as run_locate

        typer.echo(format_locate(run_locate(bundle, checkpoint=checkpoint)), err=True)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "passed": result.passed,
                    "digest": result.digest,
                    "bad_files": result.bad_files,
                    "parity": result.report.to_dict() if result.report else None,
                },
                indent=2,
            )
        )
    elif result.bad_files:
        typer.echo(f"FAILED: files changed since the build: {', '.join(result.bad_files)}", err=True)
    else:
        verdict = "OK" if result.passed else "FAILED"
        typer.echo(f"{verdict}: {result.report.summary()} (digest {result.digest})", err=not result.passed)
    if not result.passed:
        raise typer.Exit(2)


@app.command()
def inspect(bundle: str = typer.Argument(..., help="Bundle directory."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a bundle's manifest as a readable table."""
    from segexport.bundle import Bundle

    m = Bundle.load(bundle).manifest
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2))
        return
    rows = _inspect_rows(m)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key.ljust(width)}  {value}")


def _inspect_rows(m: Manifest) -> list[tuple[str, str]]:
    n, p = m.normalization or {}, m.parity
    return [
        ("arch", m.arch),
        ("encoder", m.encoder),
        ("target", f"{m.target} ({m.runtime})"),
        ("device", "not recorded (format < 3)" if m.device is None else
                   f"{m.device.kind} ({m.device.describe()}){', compiled for it' if m.device.compiled else ''}"),
        ("precision", m.precision),
        ("artifact", m.artifact),
        *[(f"input {i.name}", f"{list(i.shape)} {i.dtype} {i.layout}") for i in m.inputs],
        *[(f"output {o.name}", f"{list(o.shape)} {o.dtype}") for o in m.outputs],
        ("normalization", f"mean {n.get('mean')} std {n.get('std')} range {n.get('input_range')}"),
        ("parity", f"{'passed' if p.passed else 'FAILED'} with {p.validated_with} (atol {p.policy.atol}, rtol {p.policy.rtol})"),
        *[(f"  {o.name}", f"max abs {o.max_abs:.3g}, cosine {o.cosine:.6f}" + (f", agreement {o.agreement:.4%}" if o.agreement is not None else "")) for o in p.outputs],
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
        ("created", str(m.created)),
        ("digest", m.digest or "(format 1: none)"),
    ]


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
        device=device, compare_eager=compare_eager, runtimes=runtime, progress=lambda msg: _echo(msg, as_json),
    )
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_table(report))


@app.command("list")
def list_(what: str = typer.Argument(..., help="archs | encoders | targets")) -> None:
    """List the registered architectures, encoders or targets."""
    from segexport import names as builtin

    if what in ("archs", "architectures"):
        names = [*builtin.ARCHITECTURES, *(f"{a} (= {n})" for a, n in builtin.ARCHITECTURE_ALIASES.items())]
    elif what == "encoders":
        names = [*builtin.ENCODERS, "tu-<any timm model>"]
    elif what == "targets":
        names = list(builtin.TARGETS)
    else:
        raise unknown("list", what, ["archs", "encoders", "targets"])
    typer.echo("\n".join(names))


app.command("matrix")(matrix_command.matrix)
app.command("eval")(eval_command.eval_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 for bad input and failed checks, 1 for bugs, 130 Ctrl-C, 143 SIGTERM.

    Both signals unwind (staging folders and locks are removed on the way out); see
    :mod:`segexport.interrupts` for how they wait out native code.
    """
    interrupts.install()
    try:
        code = app(args=argv, standalone_mode=False)
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
    except Exception as exc:  # noqa: BLE001 - sorted below: the CLI framework's usage errors, else a bug
        if not _is_usage_error(exc):
            if _state["debug"]:
                raise
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            sys.exit(1)
        typer.echo(f"error: {_usage_line(exc, sys.argv[1:] if argv is None else argv)}", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    # Without standalone mode click returns a command's `raise typer.Exit(n)` as n instead of exiting.
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: Exception) -> bool:
    """A usage error of the CLI framework (typer ships its own click): it formats a message and carries an exit code."""
    return callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _usage_line(exc: Exception, argv: list[str]) -> str:
    """The CLI framework's usage error as one line that names the bad value."""
    message = exc.format_message()  # type: ignore[attr-defined]
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and param is not None:
        opts = list(getattr(param, "opts", []))
        value = None
        for i, arg in enumerate(argv):
            if arg in opts and i + 1 < len(argv):
                value = argv[i + 1]
            elif any(arg.startswith(f"{o}=") for o in opts):
                value = arg.partition("=")[2]
        name = opts[0] if opts else param.name
        if value is not None:
            return f"{name} {value!r} is not valid: {message.removeprefix(f'Invalid value for {name!r}: ')}"
    command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "segexport"
    return f"{message} (see `{command} --help`)"


if __name__ == "__main__":
    main()
