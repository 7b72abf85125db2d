"""``segexport build``: the command function (registered on the app in ``segexport.cli``).

Only typer is imported here; torch and the runtimes load when the command runs.
"""

from __future__ import annotations

import itertools
import json
from typing import Optional

import typer

from segexport.arguments import parse_arch_args
from segexport.cli.output import echo
from segexport.errors import InvalidInputError
from segexport.names import check_architecture, check_encoder, check_target


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
    bundle = run_build(req, progress=lambda msg: echo(f"[{next(steps)}] {msg}", quiet or as_json))
    m = bundle.manifest
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle.path), "digest": m.digest, "manifest": m.to_json()}, indent=2))
    else:
        took = ", ".join(f"{step} {t:.1f}" for step, t in m.build.get("seconds", {}).items())
        echo(f"Bundle written to {bundle.path} (digest {m.digest}); seconds per step: {took}", quiet)
