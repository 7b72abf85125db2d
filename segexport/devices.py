"""What device an artifact was built and validated on, and whether this machine can run it.

An AOTInductor package or a TensorRT engine holds machine code for one device: CUDA
kernels for one compute capability, or a shared library for one torch's ABI. The
manifest records the device (:class:`DeviceRecord`); readers check it with
:func:`check_runs_here` before loading, so a package built on an H200 says so on a
machine without that GPU instead of failing inside the runtime.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segexport.errors import InvalidInputError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DeviceRecord:
    """The device an artifact was built for.

    Attributes:
        kind: ``cpu`` or ``cuda``.
        name: the GPU's name (``NVIDIA H200``), or the CPU's architecture (``x86_64``).
        capability: CUDA compute capability (``9.0``); None on the CPU, or when no GPU was present at build.
        cuda: the CUDA version torch was built with (None on the CPU).
        torch: the torch version that built it.
        compiled: the artifact holds code for this device only (AOTInductor, TensorRT).
    """

    kind: str
    name: str
    capability: str | None
    cuda: str | None
    torch: str
    compiled: bool

    @classmethod
    def current(cls, kind: str, *, compiled: bool) -> DeviceRecord:
        """This machine's ``kind`` device, as torch sees it."""
        import torch

        if kind == "cuda" and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return cls("cuda", torch.cuda.get_device_name(), f"{major}.{minor}", torch.version.cuda, torch.__version__, compiled)
        if kind == "cuda":  # a TensorRT engine built ahead of time on a machine without a GPU
            return cls("cuda", "unknown (built without a GPU)", None, torch.version.cuda, torch.__version__, compiled)
        return cls("cpu", platform.machine() or "cpu", None, None, torch.__version__, compiled)

    def describe(self) -> str:
        return self.name if self.capability is None else f"{self.name}, sm_{self.capability.replace('.', '')}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "capability": self.capability, "cuda": self.cuda,
                "torch": self.torch, "compiled": self.compiled}  # fmt: skip

    @classmethod
    def from_json(cls, d: object) -> DeviceRecord:
        if not isinstance(d, Mapping) or d.get("kind") not in DEVICES:
            raise InvalidInputError(f"the manifest's device is {d!r}; expected an object with kind {' or '.join(DEVICES)}.")
        for key in ("name", "torch"):
            if not isinstance(d.get(key), str):
                raise InvalidInputError(f"the manifest's device.{key} is {d.get(key)!r}; expected a string.")
        for key in ("capability", "cuda"):
            if d.get(key) is not None and not isinstance(d.get(key), str):
                raise InvalidInputError(f"the manifest's device.{key} is {d.get(key)!r}; expected a string or null.")
        if not isinstance(d.get("compiled"), bool):
            raise InvalidInputError(f"the manifest's device.compiled is {d.get('compiled')!r}; expected true or false.")
        return cls(d["kind"], d["name"], d.get("capability"), d.get("cuda"), d["torch"], d["compiled"])


def check_runs_here(record: DeviceRecord | None, artifact: str, *, same_torch: bool = False) -> None:
    """Refuse, in one line, an artifact compiled for a device this machine lacks (or, ``same_torch``, for another torch).

    Called by whatever is about to load the compiled artifact itself (its runner, its target's
    validation); portable artifacts (ONNX, TorchScript) and bundles from before the record (None) pass.
    """
    if record is None or not record.compiled:
        return
    import torch

    if record.kind == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"{artifact} was compiled for a CUDA GPU ({record.describe()}); this machine has none. "
                "Run it on that GPU, or rebuild the bundle here."
            )
        if record.capability is not None:
            here = "{}.{}".format(*torch.cuda.get_device_capability())
            if here != record.capability:
                raise InvalidInputError(
                    f"{artifact} was compiled for {record.describe()}; this GPU is {torch.cuda.get_device_name()}, "
                    f"sm_{here.replace('.', '')}. Rebuild the bundle on this GPU."
                )
    if same_torch and _minor(record.torch) != _minor(torch.__version__):
        raise InvalidInputError(
            f"{artifact} is an AOTInductor package compiled by torch {record.torch}, which loads in that torch only; "
            f"this is torch {torch.__version__}. Rebuild the bundle with this torch."
        )


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])
