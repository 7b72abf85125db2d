"""The build pipeline every target shares, and re-verification of written bundles.

resolve model → load checkpoint → eval → prepare (BN folded, heads fused) →
target export → target validation against eager PyTorch → bundle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segexport.checks import check_int
from segexport.errors import InvalidInputError, OutputError, ParityError, SegexportError, first_line

if TYPE_CHECKING:
    from segexport.manifest import Manifest
    from segexport.reuse import BuildReuse

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
    #: Where the weights came from when not a plain file (a save_pretrained folder, a hub repo), for the manifest.
    checkpoint_source: str | None = None
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
    #: onnxruntime intra-op threads for validation (None: its default; the matrix gives each worker its share).
    threads: int | None = None

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


def is_pretrained_source(checkpoint: str) -> bool:
    """A save_pretrained folder, or a hub repo id (``user/name``) that names no local file."""
    import re

    path = Path(checkpoint)
    return path.is_dir() or (not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint) is not None
                             and path.suffix not in (".pth", ".pt", ".ckpt", ".bin", ".safetensors"))  # fmt: skip


def pretrained_fields(
    source: str,
    *,
    arch: str | None = None,
    encoder: str | None = None,
    classes: int | None = None,
    in_channels: int | None = None,
    arch_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """BuildRequest fields from a save_pretrained folder or hub repo: its config.json decides; what is given must agree.

    Returns arch, encoder, classes, in_channels, arch_args (every other constructor argument),
    checkpoint (the weights file) and checkpoint_source.
    """
    from segexport.arch.registry import canonical_name
    from segexport.pretrained import read_pretrained_config

    config = read_pretrained_config(source)
    args = dict(config.arguments)
    args.pop("encoder_weights", None)  # the saved state_dict holds the encoder's weights
    saved = {
        "arch": config.architecture,
        "encoder": args.pop("encoder_name", "resnet34"),
        "classes": args.pop("classes", 1),
        "in_channels": args.pop("in_channels", 3),
    }
    given = {"arch": canonical_name(arch) if arch else None, "encoder": encoder, "classes": classes, "in_channels": in_channels}
    for key, value in given.items():
        if value is not None and value != saved[key]:
            raise InvalidInputError(
                f"{key} {value!r} disagrees with {config.config_path}, which says {saved[key]!r}; leave it out or make it agree."
            )
    for key, value in dict(arch_args or {}).items():
        if key in args and args[key] != value:
            raise InvalidInputError(
                f"--arch-arg {key}={value!r} disagrees with {config.config_path}, which says {args[key]!r}; leave it out."
            )
    return {**saved, "arch_args": {**args, **dict(arch_args or {})}, "checkpoint": str(config.weights), "checkpoint_source": config.source}


def _check_request(req: BuildRequest) -> None:
    for name in ("batch", "height", "width", "classes", "in_channels"):
        check_int(name, getattr(req, name))
    if req.precision not in PRECISIONS:
        raise InvalidInputError(f"Unknown precision {req.precision!r}; allowed: {', '.join(PRECISIONS)}.")
    if req.precision == "int8" and not req.calib:
        raise InvalidInputError("int8 needs calibration data: pass --calib DIR (a folder of images) or --calib random.")
    if req.aux_classes is not None:
        check_int("aux_classes", req.aux_classes)
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


def request_model_key(req: BuildRequest) -> str:
    """What decides the eager model of ``req`` (builds with equal keys may share it)."""
    from segexport.arch.registry import canonical_name
    from segexport.reuse import model_key

    return model_key({"arch": canonical_name(req.arch), "kwargs": model_kwargs(req), "seed": req.seed, "checkpoint": req.checkpoint})


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


def run_build(req: BuildRequest, progress: Progress | None = None, reuse: BuildReuse | None = None) -> Any:
    """Run the pipeline for ``req``; raises ParityError (exit 2 in the CLI) when validation fails.

    Each step's wall time is reported with its progress line and recorded in the
    manifest's ``build.seconds``, so a slow build says where its time went. Builds of the
    same model in one process (the matrix's row worker) pass one :class:`BuildReuse` to share
    the eager model, its references and its ONNX graph; every check still runs on each build.
    """
    say = progress or (lambda _msg: None)
    steps = BuildSteps(say)
    _check_request(req)
    from segexport.targets import ExportSpec, get_target

    target = get_target(req.target)
    target_options, calibration = split_options(target, req)
    out = req.output_dir()
    from segexport.bundle import check_output_dir, output_lock, staging_dir, write_bundle, write_failure

    check_output_dir(out, req.force)

    with steps("imports", "load torch and the target's runtime"):
        import numpy as np
        import torch

        from segexport.parity import ParityPolicy, seeded_inputs
        from segexport.prepare import output_names, prepare_for_export

    key = request_model_key(req) if reuse else ""
    with steps("model", f"resolve {req.arch} with encoder {req.encoder}"):

        def made() -> tuple[Any, dict[str, Any], Any]:
            model, arguments = create_from_request(req)
            return model, arguments, torch.get_rng_state()

        # A shared model comes with the random state its construction left, so what follows draws as in a build alone.
        model, arguments, rng = reuse.model(key, made) if reuse else made()
        torch.set_rng_state(rng)
        model.check_input_shape(torch.empty(req.batch, req.in_channels, req.height, req.width, device="meta"))
    policy = ParityPolicy.for_build(
        req.precision, atol=req.atol, rtol=req.rtol, activation=arguments.get("activation"), seed=req.seed,
        inputs="held-out" if req.precision == "int8" else None,
    )  # fmt: skip
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
        options=target_options,
        calibration=calibration,
        parity=policy,
        seed=req.seed,
        encoder=req.encoder,
        threads=req.threads,
        progress=say,
        graphs=reuse.graph_store(key) if reuse else None,
    )
    target.check(spec)

    with steps("prepare", "prepare for export (eval, fold BatchNorm, fuse heads)"):
        # Folding finds conv->BN pairs with one forward and checks itself with another: both run on a
        # small probe (the pairs and the identity do not depend on the size), at full size only where the
        # model refuses the probe.
        try:
            prepared = prepare_for_export(model, torch.zeros(_probe_shape(spec)))
        except Exception:  # noqa: BLE001 - a model that needs its full size (a ViT's fixed patch grid)
            prepared = prepare_for_export(model, torch.zeros(spec.input_shape))

    with steps("reference", "run eager PyTorch on the judged inputs"):
        if req.precision == "int8":
            # int8 is judged on real images it was not calibrated on: the held-out split of --calib, or --val.
            from segexport.calibration import validation_inputs

            inputs = validation_inputs(spec)
        else:
            inputs = seeded_inputs(spec.parity_shapes(), req.seed)

        def run_eager() -> list[dict[str, Any]]:
            with torch.no_grad():
                return [{name: t.numpy() for name, t in zip(spec.output_names, _as_tuple(model(torch.from_numpy(x))))} for x in inputs]

        reference = reuse.reference(key, inputs, run_eager) if reuse else run_eager()

    with output_lock(out), _writing(out), staging_dir(out) as staging:
        with steps("export", f"export to {req.target} ({req.precision}{', dynamic' if req.dynamic else ''})"):
            result = target.export(prepared, spec, staging)
        with steps("validate", "validate against eager PyTorch"):
            report = target.validate(staging, result, spec, inputs, reference)
        if not report.passed:
            failed = write_failure(staging, out, report.to_dict(), result.files)
            raise ParityError(
                f"Parity check failed ({report.summary()}); report kept in {failed}/report.json{RETRY_HINTS.get(req.precision, '')}"
            )
        say(f"parity ok: {report.summary()}")
        with steps("write", f"write bundle {out}"):
            np.savez(
                staging / REFERENCE_FILE,
                **{f"input_{i}": x for i, x in enumerate(inputs)},
                **{f"output_{i}_{name}": r[name] for i, r in enumerate(reference) for name in spec.output_names},
            )
            manifest = _manifest(req, arguments, spec, result, report, target, steps.seconds)
            return write_bundle(staging, out, manifest, [*result.files, REFERENCE_FILE], force=req.force)


def _probe_shape(spec: Any) -> tuple[int, int, int, int]:
    """The smallest input worth a forward pass: batch 1, a few multiples of the model's stride, never above the export size."""
    stride = max(int(spec.stride), 1)
    side = -(-max(64, 2 * stride) // stride) * stride
    return (1, spec.in_channels, min(side, spec.height), min(side, spec.width))


class BuildSteps:
    """Names each build step in the progress output and records its wall time in seconds."""

    def __init__(self, say: Progress) -> None:
        self.say = say
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, key: str, message: str) -> Iterator[None]:
        self.say(message)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = round(time.perf_counter() - start, 3)


def split_options(target: Any, req: BuildRequest) -> tuple[Any, Any]:
    """``req.target_options`` as the target's typed record and, for int8, the calibration record.

    An option of int8 given to another precision, or one the target does not take, fails
    with the allowed list (None values are "not given": the CLI passes every flag).
    """
    from segexport.calibration.sources import CALIBRATION_OPTIONS, CalibrationConfig

    given = {k: v for k, v in dict(req.target_options or {}).items() if v is not None}
    if "calib" in given:
        raise InvalidInputError("Give the calibration folder as calib=..., not inside target_options.")
    int8 = {k: given.pop(k) for k in list(given) if k in CALIBRATION_OPTIONS}
    if req.calib is not None:
        int8["calib"] = req.calib
    if req.precision != "int8" and int8:
        flag = CALIBRATION_OPTIONS[next(iter(int8))]
        raise InvalidInputError(f"{flag} is an int8 option; add --int8 (precision='int8') or drop it.")
    calibration = CalibrationConfig.from_options(int8) if req.precision == "int8" else None
    return target.Options.parse(given, target.name), calibration


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn a full disk, a read-only folder or a vanished parent into one line naming the output (exit 2)."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out
        raise OutputError(f"Cannot write the bundle {str(out)!r}: {exc.strerror or exc} ({where}); nothing was written there.") from exc


def _as_tuple(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _manifest(req: BuildRequest, arguments: dict, spec: Any, result: Any, report: Any, target: Any, seconds: dict) -> Manifest:
    import torch

    from segexport import __version__
    from segexport.arch.encoders import get_pretrained_settings
    from segexport.arch.registry import canonical_name
    from segexport.manifest import ExportRecord, Manifest

    described = target.describe()
    checkpoint = os.path.basename(req.checkpoint) if req.checkpoint else None
    return Manifest(
        segexport_version=__version__,
        versions={"python": platform.python_version(), "torch": torch.__version__, **described.get("versions", {})},
        runtime=described.get("runtime"),
        device=result.device,
        arch=canonical_name(req.arch),
        arch_args=arguments,
        encoder=req.encoder,
        classes=req.classes,
        in_channels=req.in_channels,
        aux_classes=req.aux_classes,
        target=req.target,
        precision=req.precision,
        artifact=result.artifact,
        inputs=tuple(result.inputs),
        outputs=tuple(result.outputs),
        normalization=get_pretrained_settings(req.encoder).normalization(),
        export=ExportRecord(
            batch=spec.batch,
            height=spec.height,
            width=spec.width,
            dynamic=spec.dynamic,
            opset=spec.opset,
            stride=spec.stride,
            output_names=tuple(spec.output_names),
            checkpoint=checkpoint,
            checkpoint_source=req.checkpoint_source or checkpoint,
            details=dict(result.extra),
        ),
        parity=report,
        reference=REFERENCE_FILE,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build={"seconds": seconds},
    )


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`: hash mismatches, the fresh parity report, and the manifest's digest."""

    bundle: Any
    bad_files: list[str]
    report: Any
    digest: str

    @property
    def passed(self) -> bool:
        return not self.bad_files and self.report is not None and self.report.passed


def verify(path: str | os.PathLike[str], expect_digest: str | None = None) -> VerifyResult:
    """Re-check the manifest's digest and every file's sha256, then re-run parity under the stored policy.

    Args:
        path: the bundle directory.
        expect_digest: the digest ``build`` printed (``sha256:...``); a bundle with any other is refused.

    Raises:
        TamperedBundleError: the manifest was edited after the build, or its digest is not ``expect_digest``.
        InvalidInputError: the bundle is unreadable (manifest, reference or artifact).
    """
    from segexport.bundle import MANIFEST, Bundle, read_manifest_json, verify_hashes
    from segexport.errors import TamperedBundleError
    from segexport.manifest import DIGESTED_VERSIONS, Manifest, manifest_digest
    from segexport.targets import ExportResult, ExportSpec, get_target

    raw = read_manifest_json(Path(path))
    version = Manifest.check_complete(raw, str(Path(path) / MANIFEST))
    if version in DIGESTED_VERSIONS and raw.get("digest") != manifest_digest(raw):
        raise TamperedBundleError(
            f"{str(Path(path) / MANIFEST)!r} was edited after the build: it records digest "
            f"{raw.get('digest')!r}, its content has {manifest_digest(raw)}."
        )  # checked on the file as written, before it is read as a record: an edit is named as one
    bundle = Bundle.load(path)
    digest = manifest_digest(raw)
    if expect_digest is not None and expect_digest.strip() != digest:
        raise TamperedBundleError(f"Bundle {str(path)!r} has digest {digest}, not the expected {expect_digest.strip()}.")
    bad = verify_hashes(bundle)
    if bad:
        return VerifyResult(bundle, bad, None, digest)
    m, exp = bundle.manifest, bundle.manifest.export
    spec = ExportSpec(
        batch=exp.batch,
        in_channels=m.in_channels,
        height=exp.height,
        width=exp.width,
        output_names=exp.output_names,
        dynamic=exp.dynamic,
        precision=m.precision,
        opset=exp.opset if exp.opset is not None else ExportSpec.opset,
        stride=exp.stride,
        seed=m.parity.policy.seed,
        parity=m.parity.policy,
    )
    if m.reference is None:
        raise InvalidInputError(f"{str(bundle.path / MANIFEST)!r} names no reference file to judge the artifact on.")
    inputs, reference = read_reference(bundle.path_of(m.reference), spec.output_names)
    result = ExportResult(artifact=m.artifact, files=list(m.sha256), inputs=list(m.inputs), outputs=list(m.outputs),
                          extra=dict(exp.details), device=m.device)  # fmt: skip
    try:
        report = get_target(m.target).validate(bundle.path, result, spec, inputs, reference)
    except SegexportError:
        raise
    except Exception as exc:  # the runtime refused the artifact: the file's fault, named as such
        raise InvalidInputError(f"Cannot run {str(bundle.artifact)!r} in its runtime: {first_line(exc)}") from exc
    return VerifyResult(bundle, [], report, digest)


def read_reference(path: Path, output_names: Sequence[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The judged inputs and eager outputs stored in a bundle's reference.npz (no pickles)."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as ref:
            n = len([k for k in ref.files if k.startswith("input_")])
            inputs = [ref[f"input_{i}"] for i in range(n)]
            reference = [{name: ref[f"output_{i}_{name}"] for name in output_names} for i in range(n)]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{str(path)!r} is not a readable reference file: {first_line(exc)}") from exc
    if not inputs:
        raise InvalidInputError(f"{str(path)!r} holds no inputs to judge the artifact on.")
    return inputs, reference
