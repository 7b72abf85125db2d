"""The build pipeline every target shares, and re-verification of written bundles.

resolve model → load checkpoint → eval → prepare (BN folded, heads fused) →
target export → target validation against eager PyTorch → bundle.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.errors import InvalidInputError, ParityError

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 18
REFERENCE_FILE = "reference.npz"
#: What to try next when a precision that cannot match fp32 exactly falls short of its agreement threshold.
RETRY_HINTS = {
    "int8": ". int8 lost too much of this model's mask: try --calib-method percentile or entropy, more "
    "--calib-count images from the deployment domain, or --fp16",
}
Progress = Callable[[str], None]


@dataclass
class BuildRequest:
    """A validated description of one build (what the CLI and Python API both produce)."""

    arch: str
    encoder: str
    target: str = "onnx"
    checkpoint: str | None = None
    classes: int = 1
    in_channels: int = 3
    height: int = 512
    width: int = 512
    batch: int = 1
    dynamic: bool = False
    encoder_depth: int | None = None
    aux_classes: int | None = None
    activation: str | None = None
    arch_args: Mapping[str, Any] | None = None
    precision: str = "fp32"
    calib: str | None = None
    target_options: Mapping[str, Any] | None = None
    opset: int = DEFAULT_OPSET
    atol: float | None = None
    rtol: float | None = None
    out: str | os.PathLike[str] | None = None
    force: bool = False
    seed: int = 0

    def output_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path("artifacts") / f"{self.arch.lower()}-{self.encoder}-{self.target}-{self.precision}"


def build(arch: str, encoder: str, target: str = "onnx", *, progress: Progress | None = None, **options: Any) -> Any:
    """Build a validated bundle for ``arch`` with ``encoder`` on ``target``; returns a :class:`Bundle`.

    Keyword options are the fields of :class:`BuildRequest` (classes, height, width,
    batch, dynamic, checkpoint, precision, calib, opset, atol, rtol, out, force, ...).
    """
    unknown_opts = sorted(set(options) - set(inspect.signature(BuildRequest).parameters))
    if unknown_opts:
        allowed = sorted(set(inspect.signature(BuildRequest).parameters) - {"arch", "encoder", "target"})
        raise InvalidInputError(f"Unknown build option {unknown_opts[0]!r}; allowed: {', '.join(allowed)}.")
    return run_build(BuildRequest(arch=arch, encoder=encoder, target=target, **options), progress)


def _check_request(req: BuildRequest) -> None:
    for name in ("batch", "height", "width", "classes", "in_channels"):
        value = getattr(req, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"{name} must be an integer >= 1; got {value!r}.")
    if req.precision not in PRECISIONS:
        raise InvalidInputError(f"Unknown precision {req.precision!r}; allowed: {', '.join(PRECISIONS)}.")
    if req.precision == "int8" and not req.calib:
        raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
    if req.aux_classes is not None and req.aux_classes < 1:
        raise InvalidInputError(f"aux_classes must be an integer >= 1; got {req.aux_classes!r}.")
    for name in ("atol", "rtol"):
        value = getattr(req, name)
        if value is not None and not value >= 0:
            raise InvalidInputError(f"{name} must be >= 0; got {value!r}.")


def model_kwargs(req: BuildRequest) -> dict[str, Any]:
    """Constructor keywords for the architecture, from the request."""
    kwargs: dict[str, Any] = dict(req.arch_args or {})
    kwargs.update(encoder_name=req.encoder, encoder_weights=None, classes=req.classes, in_channels=req.in_channels)
    if req.encoder_depth is not None:
        kwargs["encoder_depth"] = req.encoder_depth
    if req.activation is not None:
        kwargs["activation"] = req.activation
    if req.aux_classes is not None:
        kwargs["aux_params"] = {**dict(kwargs.get("aux_params") or {}), "classes": req.aux_classes}
    return kwargs


def constructor_arguments(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every constructor argument of ``cls`` (given or default), JSON-safe, for the manifest."""
    sig = inspect.signature(cls.__init__)
    bound = sig.bind_partial(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    extra = args.pop("kwargs", {}) or {}
    args.update(extra)
    return json.loads(json.dumps(args, default=repr))


def create_from_request(req: BuildRequest) -> tuple[Any, dict[str, Any]]:
    """The eager model (seeded random init, then the checkpoint) and its full constructor arguments."""
    import torch

    from segexport.arch.registry import get_architecture

    cls = get_architecture(req.arch)
    kwargs = model_kwargs(req)
    torch.manual_seed(req.seed)
    try:
        model = cls(**kwargs)
    except TypeError as exc:  # an --arch-arg the constructor does not take
        params = sorted(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs"))
        raise InvalidInputError(f"{cls.__name__} rejected the arguments ({exc}); it takes: {', '.join(params)}.") from exc
    if req.checkpoint is not None:
        from segexport.checkpoint import load_checkpoint

        load_checkpoint(model, req.checkpoint)
    return model.eval(), constructor_arguments(cls, kwargs)


def run_build(req: BuildRequest, progress: Progress | None = None) -> Any:
    """Run the pipeline for ``req``; raises ParityError (exit 2 in the CLI) when validation fails."""
    say = progress or (lambda _msg: None)
    _check_request(req)
    from segexport.targets import ExportSpec, get_target

    target = get_target(req.target)
    out = req.output_dir()
    from segexport.bundle import check_output_dir, staging_dir, write_bundle, write_failure

    check_output_dir(out, req.force)

    import numpy as np
    import torch

    from segexport.parity import TOLERANCES, seeded_inputs
    from segexport.prepare import output_names, prepare_for_export

    say(f"resolve {req.arch} with encoder {req.encoder}")
    model, arguments = create_from_request(req)
    model.check_input_shape(torch.empty(req.batch, req.in_channels, req.height, req.width, device="meta"))
    atol, rtol = TOLERANCES[req.precision]
    spec = ExportSpec(
        batch=req.batch,
        in_channels=req.in_channels,
        height=req.height,
        width=req.width,
        output_names=output_names(model),
        dynamic=req.dynamic,
        precision=req.precision,
        opset=req.opset,
        stride=model.required_stride,
        options={
            **dict(req.target_options or {}),
            "atol": req.atol if req.atol is not None else atol,
            "rtol": req.rtol if req.rtol is not None else rtol,
            "seed": req.seed,
            "mask_threshold": 0.5 if arguments.get("activation") == "sigmoid" else None,
            "calib": req.calib,
            "model_arguments": arguments,
            "encoder": req.encoder,
            "progress": say,
        },
    )
    target.check(spec)

    say("prepare for export (eval, fold BatchNorm, fuse heads)")
    example = torch.zeros(spec.input_shape)
    prepared = prepare_for_export(model, example)

    if req.precision == "int8":
        # int8 is judged on real images: agreement and IoU over the calibration set.
        from segexport.calibration import calibration_inputs

        inputs = calibration_inputs(spec)
    else:
        inputs = seeded_inputs(spec.parity_shapes(), req.seed)
    with torch.no_grad():
        reference = [
            {name: t.numpy() for name, t in zip(spec.output_names, _as_tuple(model(torch.from_numpy(x))))} for x in inputs
        ]

    with staging_dir(out) as staging:
        say(f"export to {req.target} ({req.precision}{', dynamic' if req.dynamic else ''})")
        result = target.export(prepared, spec, staging)
        say("validate against eager PyTorch")
        report = target.validate(staging, result, spec, inputs, reference)
        if not report.passed:
            failed = write_failure(staging, out, report.to_dict(), result.files)
            raise ParityError(
                f"Parity check failed ({report.summary()}); report kept in {failed}/report.json{RETRY_HINTS.get(req.precision, '')}"
            )
        say(f"parity ok: {report.summary()}")
        np.savez(
            staging / REFERENCE_FILE,
            **{f"input_{i}": x for i, x in enumerate(inputs)},
            **{f"output_{i}_{name}": r[name] for i, r in enumerate(reference) for name in spec.output_names},
        )
        manifest = _manifest(req, arguments, spec, result, report, target, model)
        say(f"write bundle {out}")
        return write_bundle(staging, out, manifest, [*result.files, REFERENCE_FILE], force=req.force)


def _as_tuple(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _manifest(req: BuildRequest, arguments: dict, spec: Any, result: Any, report: Any, target: Any, model: Any) -> dict:
    import torch

    from segexport import __version__
    from segexport.arch.encoders import get_pretrained_settings
    from segexport.arch.registry import canonical_name

    described = target.describe()
    return {
        "format_version": None,  # set by write_bundle
        "segexport_version": __version__,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, **described.get("versions", {})},
        "runtime": described.get("runtime"),
        "arch": canonical_name(req.arch),
        "arch_args": arguments,
        "encoder": req.encoder,
        "classes": req.classes,
        "in_channels": req.in_channels,
        "aux_classes": req.aux_classes,
        "target": req.target,
        "precision": req.precision,
        "artifact": result.artifact,
        "inputs": result.inputs,
        "outputs": result.outputs,
        "normalization": get_pretrained_settings(req.encoder).normalization(),
        "export": {
            "batch": spec.batch,
            "height": spec.height,
            "width": spec.width,
            "dynamic": spec.dynamic,
            "opset": spec.opset,
            "stride": spec.stride,
            "output_names": list(spec.output_names),
            "checkpoint": os.path.basename(req.checkpoint) if req.checkpoint else None,
            **result.extra,
        },
        "parity": report.to_dict(),
        "reference": REFERENCE_FILE,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`: hash mismatches and the fresh parity report."""

    bundle: Any
    bad_files: list[str]
    report: Any

    @property
    def passed(self) -> bool:
        return not self.bad_files and self.report is not None and self.report.passed


def verify(path: str | os.PathLike[str]) -> VerifyResult:
    """Re-check every file's sha256 and re-run parity of the artifact against the stored eager outputs."""
    import numpy as np

    from segexport.bundle import Bundle, verify_hashes
    from segexport.targets import ExportResult, ExportSpec, get_target

    bundle = Bundle.load(path)
    bad = verify_hashes(bundle)
    if bad:
        return VerifyResult(bundle, bad, None)
    m = bundle.manifest
    exp = m["export"]
    parity = m["parity"]
    spec = ExportSpec(
        batch=exp["batch"],
        in_channels=m["in_channels"],
        height=exp["height"],
        width=exp["width"],
        output_names=tuple(exp["output_names"]),
        dynamic=exp["dynamic"],
        precision=m["precision"],
        opset=exp["opset"],
        stride=exp["stride"],
        options={"atol": parity["atol"], "rtol": parity["rtol"], "min_agreement": parity["min_agreement"], "seed": parity["seed"]},
    )
    with np.load(bundle.path / m["reference"]) as ref:
        n = len([k for k in ref.files if k.startswith("input_")])
        inputs = [ref[f"input_{i}"] for i in range(n)]
        reference = [{name: ref[f"output_{i}_{name}"] for name in spec.output_names} for i in range(n)]
    result = ExportResult(artifact=m["artifact"], files=list(m["sha256"]), inputs=m["inputs"], outputs=m["outputs"], extra=exp)
    report = get_target(m["target"]).validate(bundle.path, result, spec, inputs, reference)
    return VerifyResult(bundle, [], report)
