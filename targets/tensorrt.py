"""TensorRT target: ONNX → precision transform → parse → build → ``model.engine``.

The graph comes from the ONNX target's exporter. Precision is a property of that
graph, not a builder flag: TensorRT 11 and TensorRT-RTX are strongly typed only, and
TensorRT 10 is driven in its strongly typed mode so that all three behave the same.
fp16 is the mixed-fp16 graph of :mod:`.fp16`; int8 is the explicit Q/DQ graph of
:mod:`segexport.calibration.quantize`. That transformed graph is what the engine is
built from, and it stays in the bundle (``model.fp16.onnx`` / ``model.int8.onnx``) so an
engine can be rebuilt for another GPU or TensorRT version.

Two builders, one API (the Python bindings are the same):

``tensorrt``
    Builds on a machine with the target GPU (it times kernels there). Supports a
    timing cache file and hardware/version compatibility flags.
``tensorrt_rtx``
    Builds ahead of time on any machine, GPU or not; the engine JIT-compiles its
    kernels on the GPU at first run. Engines are portable across supported GPUs from
    Ampere on by default. It has no ahead-of-time timing or compilation cache: its
    runtime cache lives on the deployment machine.

``tensorrt`` is used when importable and a CUDA GPU is visible, else ``tensorrt_rtx``;
``SEGEXPORT_TRT_MODULE=tensorrt|tensorrt_rtx`` forces one.

Validation runs the engine when a GPU and the engine's runtime are present;
otherwise it runs the exact graph the engine was built from in onnxruntime on CPU,
and the report's ``validated_with`` says which of the two it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from segexport.atomic import write_atomic
from segexport.checks import check_int
from segexport.devices import DeviceRecord
from segexport.errors import ExportError, InvalidInputError, SegexportError, squeeze
from segexport.parity import ParityReport

from .base import ExportResult, ExportSpec, TargetOptions, check_precision, judge
from .onnx import check_opset, export_onnx, onnx_io
from .runners import OnnxRuntimeRunner

ENGINE_FILE = "model.engine"
#: The graph each precision builds from; it stays in the bundle.
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
MODULES = ("tensorrt", "tensorrt_rtx")
MODULE_ENV = "SEGEXPORT_TRT_MODULE"
#: Option key → CLI flag of the profile shapes (each NxCxHxW).
SHAPE_FLAGS = {"min_shape": "--min-shape", "opt_shape": "--opt-shape", "max_shape": "--max-shape"}

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class TensorRTOptions(TargetOptions):
    """``--target trt``'s options: the dynamic profile and the builder's settings."""

    min_shape: str | None = field(default=None, metadata={"flag": "--min-shape"})
    opt_shape: str | None = field(default=None, metadata={"flag": "--opt-shape"})
    max_shape: str | None = field(default=None, metadata={"flag": "--max-shape"})
    workspace_mb: int | None = field(default=None, metadata={"flag": "--workspace"})
    timing_cache: str | None = field(default=None, metadata={"flag": "--timing-cache"})
    hardware_compat: bool = field(default=False, metadata={"flag": "--hardware-compat"})
    version_compat: bool = False


# --------------------------------------------------------------------------- runtime module


def trt_module() -> ModuleType:
    """The TensorRT Python module to build with (see the module docstring for the choice)."""
    forced = os.environ.get(MODULE_ENV)
    if forced:
        if forced not in MODULES:
            raise InvalidInputError(f"{MODULE_ENV}={forced!r} is not a TensorRT module; allowed: {', '.join(MODULES)}.")
        try:
            return importlib.import_module(forced)
        except ImportError as exc:
            raise InvalidInputError(f"{MODULE_ENV}={forced} but {forced} cannot be imported: {exc}") from exc
    available = {}
    for name in MODULES:
        try:
            available[name] = importlib.import_module(name)
        except (ImportError, OSError):  # not installed, or its CUDA libraries do not load
            continue
    if "tensorrt" in available and _cuda_available():
        return available["tensorrt"]
    if "tensorrt_rtx" in available:
        return available["tensorrt_rtx"]
    if "tensorrt" in available:
        raise InvalidInputError(
            "tensorrt builds engines only on a machine with a CUDA GPU, and none is visible. "
            "Install tensorrt-rtx (pip install 'segexport[trt]') to build ahead of time on a CPU-only machine."
        )
    raise InvalidInputError(
        "--target trt needs TensorRT: pip install 'segexport[trt]' (tensorrt-rtx, builds on any machine) "
        "or install NVIDIA's tensorrt (builds on the target GPU)."
    )


def module_version(trt: ModuleType) -> str:
    """``"<module> <version>"``, e.g. ``tensorrt_rtx 1.7.1.116``."""
    return f"{trt.__name__} {trt.__version__}"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def _logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps messages (for error text) instead of printing them."""

    class Logger(trt.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))
            if os.environ.get("SEGEXPORT_VERBOSE_EXPORT") and severity <= trt.ILogger.Severity.WARNING:
                print(f"[{trt.__name__}] {msg}")

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s <= trt.ILogger.Severity.ERROR]

    return Logger()


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class Profile:
    """An optimization profile for the input: the smallest, the tuned-for and the largest shape."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_shape(text: str, flag: str) -> Shape:
    """``"1x3x256x256"`` → ``(1, 3, 256, 256)``; a clear error for anything else."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or any(d < 1 for d in dims):
        raise InvalidInputError(f"{flag} {text!r} is not a shape NxCxHxW of positive integers (e.g. 1x3x256x256).")
    return dims  # type: ignore[return-value]


def _options(spec: ExportSpec) -> TensorRTOptions:
    """The spec's TensorRT options (the defaults when the spec was made without any)."""
    if isinstance(spec.options, TensorRTOptions):
        return spec.options
    if type(spec.options) is TargetOptions:
        return TensorRTOptions()
    raise TypeError(f"A TensorRT build got {type(spec.options).__name__}, not TensorRTOptions.")


def optimization_profile(spec: ExportSpec) -> Profile | None:
    """The input's profile: None for a static engine, else from the shape options or the defaults.

    Defaults for ``--dynamic``: min 1xCx(H/2)x(W/2), opt BxCxHxW, max 2Bx Cx2Hx2W (H/2 and
    W/2 rounded down to the model's stride) — the export shape in the middle, and room
    for the second shape parity checks.
    """
    opts = _options(spec)
    given = {k: getattr(opts, k) for k in SHAPE_FLAGS if getattr(opts, k)}
    if not spec.dynamic:
        if given:
            flags = ", ".join(SHAPE_FLAGS[k] for k in given)
            verb = "needs" if len(given) == 1 else "need"
            raise InvalidInputError(
                f"{flags} {verb} --dynamic: a static engine has the one shape {'x'.join(map(str, spec.input_shape))}."
            )
        return None
    b, c, h, w = spec.input_shape
    s = max(spec.stride, 1)
    if not given:
        parity_max = np.max(np.array(spec.parity_shapes()), axis=0)
        low = (1, c, max(s, (h // 2) // s * s), max(s, (w // 2) // s * s))
        high = (max(2 * b, int(parity_max[0])), c, max(2 * h, int(parity_max[2])), max(2 * w, int(parity_max[3])))
        return Profile(min=low, opt=(b, c, h, w), max=high)
    if len(given) != 3:
        missing = ", ".join(flag for k, flag in SHAPE_FLAGS.items() if k not in given)
        raise InvalidInputError(f"Give all three of --min-shape, --opt-shape, --max-shape; missing: {missing}.")
    shapes = {k: parse_shape(v, SHAPE_FLAGS[k]) for k, v in given.items()}
    for key, shape in shapes.items():
        if shape[1] != c:
            raise InvalidInputError(f"{SHAPE_FLAGS[key]} {given[key]!r} has {shape[1]} channels; the model takes {c}.")
        if s > 1 and (shape[2] % s or shape[3] % s):
            raise InvalidInputError(
                f"{SHAPE_FLAGS[key]} {given[key]!r}: height and width must be multiples of {s} for this model "
                f"(e.g. {shape[0]}x{c}x{max(s, shape[2] // s * s)}x{max(s, shape[3] // s * s)})."
            )
    profile = Profile(min=shapes["min_shape"], opt=shapes["opt_shape"], max=shapes["max_shape"])
    for lo, hi, names in ((profile.min, profile.opt, "--min-shape <= --opt-shape"), (profile.opt, profile.max, "--opt-shape <= --max-shape")):
        if any(a > z for a, z in zip(lo, hi)):
            raise InvalidInputError(
                f"The profile needs {names} in every dim; got {'x'.join(map(str, lo))} and {'x'.join(map(str, hi))}."
            )
    if not profile.contains(spec.input_shape):
        raise InvalidInputError(
            f"The export shape {'x'.join(map(str, spec.input_shape))} (--batch/--height/--width) lies outside the profile "
            f"{'x'.join(map(str, profile.min))} .. {'x'.join(map(str, profile.max))}."
        )
    return profile


# --------------------------------------------------------------------------- build


@dataclass
class BuildSettings:
    """Builder configuration read from the spec's options, checked before any work."""

    profile: Profile | None
    workspace_mb: int | None
    timing_cache: Path | None
    hardware_compat: bool
    version_compat: bool

    @classmethod
    def from_spec(cls, spec: ExportSpec, trt: ModuleType) -> BuildSettings:
        opts = _options(spec)
        workspace = opts.workspace_mb
        if workspace is not None:
            check_int("--workspace (MiB)", workspace)
        cache = opts.timing_cache
        rtx = trt.__name__ == "tensorrt_rtx"
        if cache and rtx:
            raise InvalidInputError(
                "--timing-cache needs tensorrt; tensorrt_rtx (the builder here) builds ahead of time without "
                "timing kernels, and a timing cache would make it query a GPU. Its kernels are compiled on the "
                "target GPU at first run (the application keeps that runtime cache). Drop --timing-cache."
            )
        version_compat = bool(opts.version_compat)
        if version_compat and rtx:
            raise InvalidInputError("version_compat needs tensorrt; tensorrt_rtx engines are not version-compatible.")
        return cls(
            profile=optimization_profile(spec),
            workspace_mb=workspace,
            timing_cache=Path(cache) if cache else None,
            hardware_compat=bool(opts.hardware_compat),
            version_compat=version_compat,
        )


def build_engine(onnx_path: Path, engine_path: Path, settings: BuildSettings, trt: ModuleType) -> dict[str, Any]:
    """Parse ``onnx_path`` and build a serialized engine into ``engine_path``; returns the manifest record.

    Raises:
        ExportError: the parser rejects nodes (each named with its op type) or the build fails.
    """
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        # The graph's types decide each layer's precision (fp16 graph, Q/DQ int8 graph).
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ExportError(_parser_failure(parser, onnx_path, trt, logger))

    config = builder.create_builder_config()
    record: dict[str, Any] = {"builder": module_version(trt), "onnx": onnx_path.name, "strongly_typed": bool(flags)}
    if settings.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    record["workspace_mb"] = settings.workspace_mb
    if settings.profile is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, settings.profile.min, settings.profile.opt, settings.profile.max)
        config.add_optimization_profile(profile)
    record["profile"] = settings.profile.to_dict() if settings.profile else None

    rtx = trt.__name__ == "tensorrt_rtx"
    if settings.hardware_compat:
        if rtx:
            # RTX engines are portable across its supported GPUs already; its setter only warns.
            record["hardware_compat"] = "tensorrt_rtx default: runs on every supported GPU from Ampere on"
        else:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
            record["hardware_compat"] = "AMPERE_PLUS"
    else:
        record["hardware_compat"] = "tensorrt_rtx default: runs on every supported GPU from Ampere on" if rtx else None
    if settings.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    record["version_compat"] = settings.version_compat

    cache = None
    if settings.timing_cache is not None:
        data = settings.timing_cache.read_bytes() if settings.timing_cache.is_file() else b""
        try:
            cache = config.create_timing_cache(data)
            reused = bool(data) and bool(config.set_timing_cache(cache, ignore_mismatch=False))
        except (RuntimeError, TypeError):  # unreadable cache bytes
            reused = False
        if data and not reused:
            # Made by another GPU or TensorRT version: start afresh (the file is rewritten below).
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
        record["timing_cache"] = {"file": settings.timing_cache.name, "reused": reused}
    else:
        record["timing_cache"] = None if not rtx else "none: tensorrt_rtx builds ahead of time; kernels compile at first run"

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = logger.errors()
        detail = errors[-1] if errors else "no message from the builder"
        raise ExportError(f"{module_version(trt)} could not build an engine from {onnx_path.name}: {squeeze(detail)}")
    engine_path.write_bytes(memoryview(serialized))
    if cache is not None and settings.timing_cache is not None:
        write_atomic(settings.timing_cache, memoryview(config.get_timing_cache().serialize()))
    return record


def _parser_failure(parser: Any, onnx_path: Path, trt: ModuleType, logger: Any) -> str:
    """One line naming every node the parser rejected, with its op type and the first reason."""
    seen: dict[tuple[str, str], str] = {}
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        op = err.node_operator() or "?"
        key = (err.node_name() or f"#{err.node()}", op)
        reason = squeeze(err.desc())
        if op != "?" and not parser.supports_operator(op):
            reason = f"TensorRT has no importer for {op} (and no plugin of that name)"
        elif reason.lower() in ("", "false", "true"):  # the parser's checkers report a bare boolean
            reason = f"{str(err.code()).split('.')[-1]}: its inputs, types or attributes are not supported"
        seen.setdefault(key, reason)
    if not seen:
        detail = logger.errors()[-1] if logger.errors() else "no message from the parser"
        return f"{module_version(trt)} cannot parse {onnx_path.name}: {squeeze(detail)}"
    parts = [f"node {name!r} (op {op}): {desc}" for (name, op), desc in seen.items()]
    ops = sorted({op for _, op in seen})
    return (
        f"{module_version(trt)} cannot take {len(seen)} node(s) of {onnx_path.name} (op {', '.join(ops)}): "
        + "; ".join(parts)
    )


# --------------------------------------------------------------------------- run


def engine_runner(path: Path, names: Sequence[str], module: str | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Load the engine at ``path`` on the GPU; the callable maps one float32 NCHW array to the outputs ``names``.

    Args:
        path: the serialized engine.
        names: output tensor names, in the order to return them.
        module: ``tensorrt`` or ``tensorrt_rtx``; default: the bundle manifest's ``runtime``
            beside the engine, else the builder :func:`trt_module` picks.
    """
    import torch

    trt = importlib.import_module(module or _bundle_runtime(Path(path)) or trt_module().__name__)
    logger = _logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        errors = logger.errors()
        raise ExportError(f"{module_version(trt)} cannot load {Path(path).name} here: {squeeze(errors[-1] if errors else 'no message')}")
    context = engine.create_execution_context()
    tensors = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [t for t in tensors if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT]
    outputs = [t for t in tensors if engine.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT]
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    if hasattr(trt.DataType, "INT64"):
        dtypes[trt.DataType.INT64] = torch.int64
    stream = torch.cuda.Stream()

    def call(x: np.ndarray) -> list[np.ndarray]:
        x_gpu = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
        context.set_input_shape(inputs[0], tuple(x_gpu.shape))
        context.set_tensor_address(inputs[0], x_gpu.data_ptr())
        results = {}
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=dtypes.get(engine.get_tensor_dtype(name), torch.float32), device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream.wait_stream(torch.cuda.current_stream())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{module_version(trt)} failed to run {Path(path).name}: {squeeze(' '.join(logger.errors()[-1:]))}")
        stream.synchronize()
        return [r.float().cpu().numpy() if r.is_floating_point() else r.cpu().numpy() for r in (results[n] for n in names)]

    call.engine = engine  # type: ignore[attr-defined]  # keep the engine alive with the context
    return call


def _bundle_runtime(engine_path: Path) -> str | None:
    """The TensorRT module named by the manifest beside ``engine_path``, if it is a bundle's engine."""
    from segexport.bundle import Bundle

    with contextlib.suppress(SegexportError, OSError):
        runtime = Bundle.load(engine_path.parent).manifest.runtime
        if runtime in MODULES:
            return runtime
    return None


# --------------------------------------------------------------------------- target


class TensorRTTarget:
    """``--target trt``: model.engine built from the (precision-transformed) ONNX graph."""

    name = "trt"
    precisions = ("fp32", "fp16", "int8")
    Options = TensorRTOptions

    def __init__(self) -> None:
        self._trt: ModuleType | None = None

    @property
    def trt(self) -> ModuleType:
        if self._trt is None:
            self._trt = trt_module()
        return self._trt

    def check(self, spec: ExportSpec) -> None:
        check_precision(self, spec)
        check_opset(spec)
        BuildSettings.from_spec(spec, self.trt)

    def export(self, model: Any, spec: ExportSpec, out_dir: Path) -> ExportResult:
        trt = self.trt
        settings = BuildSettings.from_spec(spec, trt)
        onnx_name = ONNX_FILES[spec.precision]
        fp32_path = out_dir / ONNX_FILES["fp32"]
        export_onnx(model, spec, fp32_path)
        extra: dict[str, Any] = {}
        if spec.precision == "fp16":
            from .fp16 import convert_to_fp16

            extra["fp16"] = convert_to_fp16(fp32_path, out_dir / onnx_name)
        elif spec.precision == "int8":
            from segexport.calibration.quantize import quantize_onnx

            extra["calibration"] = quantize_onnx(fp32_path, out_dir / onnx_name, spec, runtime="tensorrt")
        onnx_path = out_dir / onnx_name
        extra["tensorrt"] = build_engine(onnx_path, out_dir / ENGINE_FILE, settings, trt)
        if onnx_path != fp32_path:
            # The fp32 graph is reproducible from the model; the bundle keeps the graph the engine came from.
            for leftover in (fp32_path, fp32_path.with_name(fp32_path.name + ".data")):
                leftover.unlink(missing_ok=True)
        files = [ENGINE_FILE, onnx_name]
        if onnx_path.with_name(onnx_name + ".data").exists():
            files.append(onnx_name + ".data")
        inputs, outputs = onnx_io(onnx_path)
        device = DeviceRecord.current("cuda", compiled=True)
        if extra["tensorrt"].get("hardware_compat"):  # the engine runs on a range of GPUs, not only this one's capability
            device = dataclasses.replace(device, capability=None)
        return ExportResult(artifact=ENGINE_FILE, files=files, inputs=inputs, outputs=outputs, extra=extra, device=device)

    def validate(
        self,
        out_dir: Path,
        result: ExportResult,
        spec: ExportSpec,
        inputs: Sequence[np.ndarray],
        reference: Sequence[dict[str, np.ndarray]],
    ) -> ParityReport:
        """Run the engine on the GPU when possible, else its source graph in onnxruntime on CPU."""
        record = result.extra.get("tensorrt", {})
        onnx_name = record.get("onnx") or ONNX_FILES.get(spec.precision, ONNX_FILES["fp32"])
        if _cuda_available():
            runtime = record.get("builder", "").split(" ")[0] or None
            try:
                run = engine_runner(out_dir / result.artifact, list(spec.output_names), module=runtime)
            except (ImportError, ExportError):
                run = None  # no runtime for this engine here, or the GPU cannot load it: fall back to CPU
            if run is not None:
                profile = record.get("profile")
                fits = [
                    (x, r)
                    for x, r in zip(inputs, reference)
                    if profile is None or Profile(*(tuple(profile[k]) for k in ("min", "opt", "max"))).contains(x.shape)
                ]
                actual = [dict(zip(spec.output_names, run(x))) for x, _ in fits]
                return judge(spec, actual, [r for _, r in fits], f"{runtime or 'tensorrt'} ({result.artifact})", [x for x, _ in fits])
        # int8: the Q/DQ nodes run as written (fake quantization), as TensorRT executes them.
        actual = OnnxRuntimeRunner(out_dir / onnx_name, threads=spec.threads, as_written=spec.precision == "int8").run(inputs)
        return judge(spec, actual, reference, f"onnxruntime-cpu ({onnx_name})", inputs)

    def describe(self) -> dict[str, Any]:
        import onnx
        import onnxruntime

        trt = self.trt
        return {
            "runtime": trt.__name__,
            "versions": {trt.__name__: trt.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        }
