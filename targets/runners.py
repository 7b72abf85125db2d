"""Runners: load a bundle's artifact in its own runtime and call it on numpy inputs.

Polygraphy-style: each runner is a context manager (load on enter, free on exit)
whose ``infer(x)`` returns ``{output name: array}``. One runner per runtime, used by
the targets' validation (on the files in the staging folder), ``bench``, ``eval``
and the matrix (on a bundle: :func:`runner_for`). A target may run in more than one
runtime (an ONNX bundle in onnxruntime or OpenVINO): :data:`TARGET_RUNTIMES` lists
them, the first being the one a bundle is validated with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segexport.bundle import contained_path
from segexport.devices import check_runs_here
from segexport.errors import InvalidInputError, unknown
from segexport.manifest import Manifest

from .base import INPUT_NAME


class Runner:
    """Base: subclasses set ``self._call`` in ``__enter__``; ``sync`` waits for the device.

    ``names`` are the outputs in the artifact's order (an ONNX runner reads them from
    the graph when None).
    """

    runtime = "?"
    #: Whether the artifact loads only in the torch that compiled it (checked against the manifest's device record).
    same_torch = False

    def __init__(
        self, path: Path, names: Sequence[str] | None = None, device: str = "cpu", threads: int | None = None,
        input_name: str = INPUT_NAME,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.names = list(names) if names is not None else None
        self.input_name = input_name
        self.device = device
        self.threads = threads
        self._call: Callable[[np.ndarray], list[np.ndarray]] | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._call = None

    def sync(self) -> None:
        """Wait for queued device work (no-op on CPU runtimes)."""

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._call is None:
            raise RuntimeError("Use the runner inside a `with` block.")
        return dict(zip(self.names or [], self._call(x), strict=True))

    def run(self, inputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Load, run each input, free: one ``{output name: array}`` per input."""
        with self:
            return [self.infer(x) for x in inputs]


class OnnxRuntimeRunner(Runner):
    """An ONNX graph in onnxruntime.

    ``as_written``: basic graph optimizations only, so that Q/DQ nodes run as fake
    quantization, the reference semantics TensorRT implements. onnxruntime's level-2
    rewrites turn some Q/DQ patterns into its own integer kernels, each with its own
    requantization rounding, and leave others in float (28 of 47 convolutions fused on
    unet-resnet34), so figures for a TensorRT graph would describe a mix.
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, names: Sequence[str] | None = None, device: str = "cpu", threads: int | None = None,
                 input_name: str = INPUT_NAME, as_written: bool = False) -> None:  # fmt: skip
        super().__init__(path, names, device, threads, input_name)
        self.as_written = as_written

    def __enter__(self) -> OnnxRuntimeRunner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.as_written:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else ["CPUExecutionProvider"]
        if self.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InvalidInputError("--device cuda needs onnxruntime-gpu (CUDAExecutionProvider is not available).")
        session = ort.InferenceSession(str(self.path), options, providers=providers)
        if self.names is None:
            self.names = [o.name for o in session.get_outputs()]
        input_name = session.get_inputs()[0].name
        self._call = lambda x: session.run(self.names, {input_name: x})
        return self


class OpenVinoRunner(Runner):
    """An ONNX bundle's graph (fp32, or the Q/DQ graph of --int8) compiled by OpenVINO for the CPU.

    The runtime that examples/cpp uses for ONNX bundles, so ``bench --runtime openvino``
    times what a C++ application would run. The latency hint (one stream) matches how
    the other runners are timed: one request at a time. The graph runs at the precision
    it was written in: on CPUs with bf16 units OpenVINO would otherwise compute an fp32
    graph in bf16 (measured: mask error 0.03-0.24 on a tiny Unet, where fp32 parity allows 1e-4).
    """

    runtime = "openvino"

    def __enter__(self) -> OpenVinoRunner:
        if self.device != "cpu":
            raise InvalidInputError(f"The openvino runtime runs on the CPU here; got --device {self.device}. Use --device cpu.")
        try:
            import openvino as ov
        except ImportError:
            raise InvalidInputError("The openvino runtime needs the openvino package: pip install 'segexport[openvino]'.") from None
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        request = compiled.create_infer_request()
        outputs = [compiled.output(name) for name in self.names]

        def call(x: np.ndarray) -> list[np.ndarray]:
            # infer() copies the outputs out of the request's buffers (share_outputs=False), as onnxruntime returns fresh arrays.
            result = request.infer({self.input_name: x})
            return [result[port] for port in outputs]

        self._call = call
        return self


class _TorchRunner(Runner):
    """Shared by TorchScript and AOTInductor: numpy in, torch module call, numpy out."""

    def _load(self) -> Callable[..., Any]:
        raise NotImplementedError

    def __enter__(self) -> _TorchRunner:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("--device cuda needs a CUDA GPU; none is available.")
        module = self._load()

        def call(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                out = module(torch.from_numpy(x).to(self.device))
            out = out if isinstance(out, (tuple, list)) else (out,)
            return [o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in out]

        self._call = call
        return self

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()


def load_torchscript(path: Path, device: str = "cpu") -> Any:
    """``torch.jit.load`` onto ``device`` (weights moved there), without the deprecation notice."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval()


class TorchScriptRunner(_TorchRunner):
    runtime = "torchscript"

    def _load(self) -> Callable[..., Any]:
        return load_torchscript(self.path, self.device)


class AotiRunner(_TorchRunner):
    runtime = "aoti"
    same_torch = True  # the package's library is built against this torch's ABI

    def _load(self) -> Callable[..., Any]:
        import torch._inductor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch._inductor.aoti_load_package(str(self.path))


class TensorRTRunner(Runner):
    runtime = "tensorrt"

    def __enter__(self) -> TensorRTRunner:
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("TensorRT engines run on a CUDA GPU only; none is available on this machine.")
        from segexport.targets.tensorrt import engine_runner  # written with the TensorRT target

        self._call = engine_runner(self.path, self.names)
        return self

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()


RUNTIMES: dict[str, type[Runner]] = {
    "onnxruntime": OnnxRuntimeRunner,
    "openvino": OpenVinoRunner,
    "torchscript": TorchScriptRunner,
    "aoti": AotiRunner,
    "tensorrt": TensorRTRunner,
}
#: The runtimes that run each target's artifact; the first is the default (the one it was validated with).
TARGET_RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "openvino"),
    "torchscript": ("torchscript",),
    "aoti": ("aoti",),
    "trt": ("tensorrt",),
}


def runtimes_for(target: str) -> tuple[str, ...]:
    """The runtimes that can run a bundle of ``target``, default first."""
    if target not in TARGET_RUNTIMES:
        raise unknown("bundle target", target, TARGET_RUNTIMES)
    return TARGET_RUNTIMES[target]


def runner_for(
    bundle_dir: Path, manifest: Manifest, device: str = "cpu", threads: int | None = None, runtime: str | None = None
) -> Runner:
    """The runner for the bundle's artifact in ``runtime`` (None: the target's default runtime)."""
    allowed = runtimes_for(manifest.target)
    name = allowed[0] if runtime is None else runtime
    if name not in RUNTIMES:
        raise unknown("runtime", name, RUNTIMES)
    if name not in allowed:
        raise InvalidInputError(f"{manifest.target} bundles run in {' or '.join(allowed)}, not in {name!r}.")
    path = contained_path(Path(bundle_dir), manifest.artifact)  # never a file outside the bundle
    check_runs_here(manifest.device, str(path), same_torch=RUNTIMES[name].same_torch)
    return RUNTIMES[name](path, manifest.output_names, device=device, threads=threads, input_name=manifest.inputs[0].name)
