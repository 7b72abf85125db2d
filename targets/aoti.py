"""AOTInductor target: ``model.pt2``, a compiled shared library plus weights, for applications without Python.

torch.export captures the prepared model; ``torch._inductor.aoti_compile_and_package``
generates C++ kernels and compiles them with the machine's C++ compiler into a
package that LibTorch loads with ``torch::inductor::AOTIModelPackageLoader`` and
Python with ``torch._inductor.aoti_load_package`` (which validation uses). The
package is compiled for one device: by default the CPU it was built on (its
instruction set); with ``--device cuda`` the GPU it was built on (CUDA kernels for
its compute capability), in fp32 or, with ``--fp16``, in half precision behind a
float32 interface. It is validated on that device, and the manifest's ``device``
record makes every reader refuse it elsewhere (:mod:`segexport.devices`).

Compilation takes from seconds to minutes (code generation, then g++ on one large
file), and inductor redoes both for every AOT build. What can be cached is kept in
a persistent directory, ``~/.cache/segexport/inductor`` by default, instead of a
fresh one in /tmp per boot: the probe builds that find the CPU's vector instruction
sets (8 s and more on a busy 2-core machine, paid by the first compile of every
process otherwise). The build's own sources and library are removed from it once
packaged. Progress is reported every 15 s through ``spec.progress`` when
the pipeline passes one.

Dynamic graphs are exported from a batch-2 example with an explicit minimum of 1
for the batch dim: a batch of 1 lets torch.export specialise the dim, and the
default lower bound of 2 would make batch 1 fall outside the declared range.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segexport.devices import DEVICES, DeviceRecord, check_runs_here
from segexport.errors import ExportError, InvalidInputError, first_line
from segexport.parity import ParityReport
from segexport.quiet import quiet_logger

from .runners import AotiRunner
from .base import (
    ExportResult,
    ExportSpec,
    TargetOptions,
    check_precision,
    half_precision_module,
    io_entries,
    judge,
    trace_example_shape,
)

MODEL_FILE = "model.pt2"
#: Seconds between "still compiling" progress lines.
HEARTBEAT_S = 15.0
_log = logging.getLogger(__name__)


def cache_root() -> Path:
    """segexport's persistent cache: $SEGEXPORT_CACHE_DIR, else $XDG_CACHE_HOME/segexport, else ~/.cache/segexport."""
    explicit = os.environ.get("SEGEXPORT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segexport"


def inductor_cache_dir() -> Path:
    """Where compiled kernels are cached: $TORCHINDUCTOR_CACHE_DIR when the user set it, else under :func:`cache_root`.

    Inductor writes its default (a folder in /tmp) into that variable the first time it
    looks the cache up, so a value equal to the default counts as unset.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit and os.path.abspath(explicit) != os.path.abspath(default_cache_dir()):
        return Path(explicit)
    return cache_root() / "inductor"


def cpp_compiler() -> str:
    """The C++ compiler inductor will use ($CXX, else g++ / clang++ on PATH); InvalidInputError when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception as exc:  # inductor raises its own InvalidCxxCompiler, or RuntimeError on odd setups
        raise InvalidInputError(
            "--target aoti compiles C++ and found no working C++ compiler (" + first_line(exc) + "); "
            "install g++ (apt-get install g++) or set CXX to a compiler."
        ) from exc


@dataclass(frozen=True)
class AotiOptions(TargetOptions):
    """Where the package runs: ``cpu`` (this CPU's instruction set) or ``cuda`` (this GPU)."""

    device: str = field(default="cpu", metadata={"flag": "--device"})


def export_program(model: Any, spec: ExportSpec, device: str = "cpu") -> Any:
    """torch.export of the prepared model in export mode; batch, height and width dynamic with --dynamic."""
    import torch
    from segexport.arch.base import export_mode

    example = torch.zeros(trace_example_shape(spec), device=device)
    dynamic_shapes = None
    if spec.dynamic:
        # Height and width: let torch.export derive the valid range (and any stride
        # divisibility) from the model; batch: declared, so that 1 stays inside it.
        any_size = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1), 2: any_size, 3: any_size},)
    with export_mode(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
        except Exception as exc:  # torch.export raises many internal types
            raise ExportError(f"torch.export failed: {first_line(exc)}") from exc


@contextlib.contextmanager
def persistent_inductor_cache() -> Iterator[Path]:
    """Point inductor at :func:`inductor_cache_dir` for the duration of a compile."""
    path = inductor_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") == str(path):  # the user's own setting: nothing to switch
        yield path
        return
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    with temporary_cache_dir(str(path)):
        yield path


def drop_build_outputs(cache: Path, package: Path) -> None:
    """Delete this build's generated sources and shared library from the cache; the package holds copies.

    Inductor writes them into the cache but never reuses them for a later AOT build;
    kept, they would add the model's size (the weights are inside the library) to the
    cache on every build. They are found by the library's name inside the package.
    """
    with zipfile.ZipFile(package) as archive:
        libraries = {Path(name).name for name in archive.namelist() if name.endswith(".so")}
    for name in libraries:
        for found in cache.glob(f"*/{name}"):
            shutil.rmtree(found.parent, ignore_errors=True)


@contextlib.contextmanager
def heartbeat(say: Callable[[str], None], what: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Call ``say`` every ``every`` seconds while the block runs, with the elapsed time."""
    start = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            say(f"{what}: {time.monotonic() - start:.0f} s")

    thread = threading.Thread(target=beat, name="segexport-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def compile_package(program: Any, path: Path, say: Callable[[str], None]) -> float:
    """AOTInductor-compile ``program`` into the package ``path``; returns the seconds it took."""
    import torch._inductor

    compiler = cpp_compiler()
    start = time.monotonic()
    with persistent_inductor_cache() as cache, warnings.catch_warnings(), quiet_logger("torch.utils.cpp_extension"):
        warnings.simplefilter("ignore")
        say(f"aoti: generating and compiling C++ with {compiler} (cache {cache}); this takes minutes")
        with heartbeat(say, "aoti: still compiling"):
            try:
                torch._inductor.aoti_compile_and_package(program, package_path=str(path))
            except Exception as exc:  # inductor and the compiler fail in many ways
                raise ExportError(f"AOTInductor compilation failed: {first_line(exc)}") from exc
        drop_build_outputs(cache, path)
    elapsed = time.monotonic() - start
    say(f"aoti: compiled in {elapsed:.0f} s")
    return elapsed


class AotiTarget:
    """``--target aoti``: model.pt2 compiled by AOTInductor for this CPU or GPU, validated through aoti_load_package there."""

    name = "aoti"
    precisions = ("fp32", "fp16")
    Options = AotiOptions

    def check(self, spec: ExportSpec) -> None:
        check_precision(self, spec)
        device = self._device(spec)
        if spec.precision == "fp16" and device != "cuda":
            raise InvalidInputError(
                "fp16 AOTInductor packages are compiled for a CUDA GPU: add --device cuda, or drop --fp16 for the CPU."
            )
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise InvalidInputError("--target aoti --device cuda compiles for this machine's GPU, and it has none; use --device cpu.")
        cpp_compiler()

    @staticmethod
    def _device(spec: ExportSpec) -> str:
        device = getattr(spec.options, "device", "cpu")
        if device not in DEVICES:
            raise InvalidInputError(f"--device {device!r} is not a device AOTInductor compiles for; allowed: {', '.join(DEVICES)}.")
        return str(device)

    def export(self, model: Any, spec: ExportSpec, out_dir: Path) -> ExportResult:
        say: Callable[[str], None] = spec.progress or _log.info
        device = self._device(spec)
        module = (half_precision_module(model) if spec.precision == "fp16" else model).to(device)
        start = time.monotonic()
        program = export_program(module, spec, device)
        say(f"aoti: torch.export done in {time.monotonic() - start:.0f} s")
        path = out_dir / MODEL_FILE
        compile_s = compile_package(program, path, say)
        inputs, outputs = io_entries(module, spec, device)
        extra = {
            "device": device,
            "compute_dtype": "float16" if spec.precision == "fp16" else "float32",
            "compile_seconds": round(compile_s, 1),
        }
        record = DeviceRecord.current(device, compiled=True)
        return ExportResult(artifact=MODEL_FILE, files=[MODEL_FILE], inputs=inputs, outputs=outputs, extra=extra, device=record)

    def validate(
        self,
        out_dir: Path,
        result: ExportResult,
        spec: ExportSpec,
        inputs: Sequence[np.ndarray],
        reference: Sequence[dict[str, np.ndarray]],
    ) -> ParityReport:
        device = str(result.extra.get("device", "cpu"))  # verify reads it back from the manifest
        check_runs_here(result.device, str(out_dir / result.artifact), same_torch=True)
        actual = AotiRunner(out_dir / result.artifact, spec.output_names, device=device).run(inputs)
        validated_with = f"aoti_load_package-{device}" + ("-fp16" if spec.precision == "fp16" else "")
        return judge(spec, actual, reference, validated_with, inputs)

    def describe(self) -> dict[str, Any]:
        # The runtime is LibTorch of the same torch version, which the manifest already records.
        return {"runtime": "aoti", "versions": {}}
