"""The manifest: what a bundle holds and how it was judged, as one typed record.

``build`` writes it as manifest.json through :meth:`Manifest.to_json`; every reader in
Python (verify, bench, inspect, eval, locate, the runners, the matrix) goes through
:meth:`Manifest.from_json`, which refuses a malformed file with one line naming the
field. The C++ consumer reads the same JSON (examples/cpp).

Format versions: 1 had no parity mask threshold, no judged-input kind and no digest;
2 added them; 3 added ``device`` (what the artifact was compiled for). All are read; 3 is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segexport.devices import DeviceRecord
from segexport.errors import InvalidInputError

if TYPE_CHECKING:
    from segexport.parity import ParityReport  # numpy: imported when a manifest is read, not with the module

#: 2 added the parity policy's mask_threshold and inputs, and the manifest digest; 3 the device record.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
#: Versions whose manifest carries its own digest.
DIGESTED_VERSIONS = (2, 3)

_LAYOUTS = {4: "NCHW", 3: "NHW", 2: "NC"}  # 3-D: an argmax mask


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its name, shape (ints, or names of dynamic axes), dtype and layout."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    layout: str

    @classmethod
    def of(cls, name: str, shape: Sequence[int | str], dtype: str) -> TensorInfo:
        return cls(name, tuple(shape), dtype, _LAYOUTS.get(len(shape), "N"))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}

    @classmethod
    def from_json(cls, d: object, where: str) -> TensorInfo:
        if not isinstance(d, Mapping):
            raise _bad(where, d, "an object with name, shape, dtype and layout")
        name, shape, dtype = d.get("name"), d.get("shape"), d.get("dtype")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.name", name, "a non-empty string")
        if not isinstance(shape, list) or not all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in shape):
            raise _bad(f"{where}.shape", shape, "a list of sizes or axis names")
        if not isinstance(dtype, str):
            raise _bad(f"{where}.dtype", dtype, "a dtype name")
        layout = d.get("layout", _LAYOUTS.get(len(shape), "N"))
        return cls(name, tuple(shape), dtype, str(layout))


@dataclass(frozen=True)
class ExportRecord:
    """The manifest's ``export`` block: the graph's shape contract, and what the target adds (``details``)."""

    batch: int
    height: int
    width: int
    dynamic: bool
    opset: int | None
    #: H and W stay multiples of this in dynamic graphs.
    stride: int
    output_names: tuple[str, ...]
    #: The checkpoint's file name, and where the weights came from (a save_pretrained folder, a hub repo).
    checkpoint: str | None = None
    checkpoint_source: str | None = None
    #: The target's own record, flat beside the fields above in JSON: ``exporter``, ``fp16``,
    #: ``calibration``, ``tensorrt``, ``compile_seconds``, ...
    details: Mapping[str, Any] = field(default_factory=dict)

    _CORE = ("batch", "height", "width", "dynamic", "opset", "stride", "output_names", "checkpoint", "checkpoint_source")

    def to_json(self) -> dict[str, Any]:
        core = {name: getattr(self, name) for name in self._CORE}
        return {**core, "output_names": list(self.output_names), **self.details}

    @classmethod
    def from_json(cls, d: object) -> ExportRecord:
        if not isinstance(d, Mapping):
            raise _bad("export", d, "an object")
        for name in ("batch", "height", "width", "stride"):
            value = d.get(name)
            if not _is_int(value) or value < 1:
                raise _bad(f"export.{name}", value, "a positive integer")
        if not isinstance(d.get("dynamic"), bool):
            raise _bad("export.dynamic", d.get("dynamic"), "true or false")
        if d.get("opset") is not None and not _is_int(d.get("opset")):
            raise _bad("export.opset", d.get("opset"), "an integer or null")
        names = d.get("output_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _bad("export.output_names", names, "a non-empty list of output names")
        for name in ("checkpoint", "checkpoint_source"):
            if d.get(name) is not None and not isinstance(d.get(name), str):
                raise _bad(f"export.{name}", d.get(name), "a string or null")
        core = {name: d.get(name) for name in cls._CORE}
        details = {k: v for k, v in d.items() if k not in cls._CORE}
        return cls(**{**core, "output_names": tuple(names)}, details=details)


@dataclass(frozen=True)
class Manifest:
    """Everything manifest.json says: the model, the target, the artifact's interface, the verdict, the file hashes."""

    arch: str
    #: Every constructor argument, given or default: the eager model is rebuilt from these.
    arch_args: Mapping[str, Any]
    encoder: str
    target: str
    precision: str
    #: The artifact's file name inside the bundle.
    artifact: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    export: ExportRecord
    #: The verdict ``build`` reached, with the policy ``verify`` re-applies.
    parity: ParityReport
    in_channels: int
    classes: int | None = None
    aux_classes: int | None = None
    #: The encoder's input preparation (mean, std, input_space, input_range).
    normalization: Mapping[str, Any] | None = None
    runtime: str | None = None
    #: The device the artifact was built and validated on (format 3; None before).
    device: DeviceRecord | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    segexport_version: str | None = None
    #: The judged inputs and eager outputs (reference.npz).
    reference: str | None = None
    created: str | None = None
    #: Wall seconds per build step.
    build: Mapping[str, Any] = field(default_factory=dict)
    #: sha256 of every file but the manifest; set by the writer.
    sha256: Mapping[str, str] = field(default_factory=dict)
    #: sha256 of the manifest itself without this field (format 2); set by the writer.
    digest: str | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object manifest.json holds (keys in a stable, readable order)."""
        return {
            "format_version": self.format_version,
            "segexport_version": self.segexport_version,
            "versions": dict(self.versions),
            "runtime": self.runtime,
            **({} if self.device is None else {"device": self.device.to_json()}),
            "arch": self.arch,
            "arch_args": dict(self.arch_args),
            "encoder": self.encoder,
            "classes": self.classes,
            "in_channels": self.in_channels,
            "aux_classes": self.aux_classes,
            "target": self.target,
            "precision": self.precision,
            "artifact": self.artifact,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "normalization": None if self.normalization is None else dict(self.normalization),
            "export": self.export.to_json(),
            "parity": self.parity.to_dict(),
            "reference": self.reference,
            "created": self.created,
            "build": dict(self.build),
            "sha256": dict(self.sha256),
            **({} if self.digest is None else {"digest": self.digest}),
        }

    @classmethod
    def from_json(cls, d: object, source: str = "manifest.json") -> Manifest:
        """Read a manifest object; a missing or ill-typed field fails with one line naming it (exit 2 in the CLI)."""
        version = cls.check_complete(d, source)
        try:
            return cls._parse(d, version)  # type: ignore[arg-type]  # a Mapping: check_complete said so
        except InvalidInputError as exc:
            raise InvalidInputError(f"{source!r}: {exc}") from None

    @staticmethod
    def check_complete(d: object, source: str = "manifest.json") -> int:
        """The format version of ``d``, once it is an object of a readable version with every required key."""
        if not isinstance(d, Mapping):
            raise InvalidInputError(f"{source!r} holds a JSON {type(d).__name__}, not a manifest object.")
        version = d.get("format_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise InvalidInputError(
                f"{source!r} has format_version {version!r}; this segexport reads {', '.join(map(str, READABLE_VERSIONS))}."
            )
        missing = [key for key in _REQUIRED if key not in d]
        if missing:
            raise InvalidInputError(f"{source!r} lacks the keys {', '.join(missing)}; it is not a complete manifest.")
        return int(version)

    @classmethod
    def _parse(cls, d: Mapping[str, Any], version: int) -> Manifest:
        for key in ("arch", "encoder", "target", "precision", "artifact"):
            if not isinstance(d[key], str) or not d[key]:
                raise _bad(key, d[key], "a non-empty string")
        if not isinstance(d["arch_args"], Mapping):
            raise _bad("arch_args", d["arch_args"], "an object")
        if not _is_int(d["in_channels"]) or d["in_channels"] < 1:
            raise _bad("in_channels", d["in_channels"], "a positive integer")
        for key in ("classes", "aux_classes"):
            if d.get(key) is not None and not _is_int(d[key]):
                raise _bad(key, d[key], "an integer or null")
        for key in ("inputs", "outputs"):
            if not isinstance(d[key], list) or not d[key]:
                raise _bad(key, d[key], "a non-empty list")
        for key in ("sha256", "versions", "build"):
            if not isinstance(d.get(key, {}), Mapping):
                raise _bad(key, d[key], "an object")
        if d.get("normalization") is not None and not isinstance(d["normalization"], Mapping):
            raise _bad("normalization", d["normalization"], "an object or null")
        for key in ("reference", "digest", "runtime", "created", "segexport_version"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise _bad(key, d[key], "a string or null")
        return cls(
            arch=d["arch"],
            arch_args=dict(d["arch_args"]),
            encoder=d["encoder"],
            target=d["target"],
            precision=d["precision"],
            artifact=d["artifact"],
            inputs=tuple(TensorInfo.from_json(t, f"inputs[{i}]") for i, t in enumerate(d["inputs"])),
            outputs=tuple(TensorInfo.from_json(t, f"outputs[{i}]") for i, t in enumerate(d["outputs"])),
            export=ExportRecord.from_json(d["export"]),
            parity=_parity(d, version),
            in_channels=d["in_channels"],
            classes=d.get("classes"),
            aux_classes=d.get("aux_classes"),
            normalization=None if d.get("normalization") is None else dict(d["normalization"]),
            runtime=d.get("runtime"),
            device=None if d.get("device") is None else DeviceRecord.from_json(d["device"]),
            versions=dict(d.get("versions", {})),
            segexport_version=d.get("segexport_version"),
            reference=d.get("reference"),
            created=d.get("created"),
            build=dict(d.get("build", {})),
            sha256=dict(d["sha256"]),
            digest=d.get("digest"),
            format_version=version,
        )

    def with_files(self, sha256: Mapping[str, str]) -> Manifest:
        """This manifest for the current format with ``sha256`` as its file table and its digest computed."""
        hashed = dataclasses.replace(self, format_version=FORMAT_VERSION, sha256=dict(sorted(sha256.items())), digest=None)
        return dataclasses.replace(hashed, digest=manifest_digest(hashed.to_json()))

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def onnx_graph(self) -> str | None:
        """The ONNX graph the bundle holds: the artifact of an onnx bundle, the graph a TensorRT engine was built from
        (its build record names it), else None."""
        if self.target == "onnx":
            return self.artifact
        recorded = self.export.details.get("tensorrt", {}).get("onnx") if self.target == "trt" else None
        return recorded if isinstance(recorded, str) else None


#: Keys no reader can do without.
_REQUIRED = ("arch", "arch_args", "encoder", "target", "precision", "artifact", "inputs", "outputs", "export", "parity", "sha256", "in_channels")


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON without its own ``digest`` field.

    The manifest holds every file's sha256, so this one value pins the whole bundle:
    ``build`` prints it, ``verify`` recomputes it over the file as written, ``verify --expect-digest`` compares it.
    """
    body = {k: v for k, v in manifest.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _parity(d: Mapping[str, Any], version: int) -> ParityReport:
    from segexport.parity import ParityPolicy, ParityReport

    block = d["parity"]
    if not isinstance(block, Mapping):
        raise _bad("parity", block, "an object")
    if version == 1:  # format 1 wrote no mask threshold: build derived it from the activation, as for_build does
        block = {
            **block,
            "mask_threshold": 0.5 if dict(d["arch_args"]).get("activation") == "sigmoid" else None,
            "inputs": "calibration" if d["precision"] == "int8" else "seeded",
        }
    policy = ParityPolicy.from_dict(block, source="")
    outputs = block.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, Mapping) for o in outputs):
        raise _bad("parity.outputs", outputs, "a list of per-output figures")
    for i, o in enumerate(outputs):
        for key in ("max_abs", "mean_abs", "max_rel", "cosine"):
            if not isinstance(o.get(key), (int, float)) or isinstance(o.get(key), bool):
                raise _bad(f"parity.outputs[{i}].{key}", o.get(key), "a number")
    try:
        return ParityReport.from_dict(block, policy=policy)
    except (TypeError, ValueError) as exc:
        raise _bad("parity.outputs", block.get("outputs"), f"parity figures per output ({exc})") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(field_name: str, value: object, allowed: str) -> InvalidInputError:
    return InvalidInputError(f"the manifest's {field_name} is {value!r}; expected {allowed}.")
