"""Parity between an artifact and eager PyTorch: the numbers and the pass/fail rule.

A report holds, per output, max/mean absolute error, max relative error, cosine
similarity and, for the mask, the agreement of the predicted classes.

The pass rule is numpy's ``allclose`` with one change: ``atol`` is multiplied by
``max(1, RMS of the reference output)``. Rounding errors of fp32 arithmetic grow
with the size of the activations, and randomly initialised networks produce
outputs with an RMS of tens; an unscaled atol then fails at every zero crossing
although the outputs agree to 1e-5 of their scale. For outputs of unit scale
(trained models, probabilities) the rule is exactly ``allclose(atol, rtol)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

#: Default tolerances per precision (atol, rtol). fp16/int8 are judged on mask agreement.
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2), "int8": (1e-1, 1e-1)}
#: Minimum class agreement of the mask for precisions that cannot match fp32 numerically.
MIN_AGREEMENT: dict[str, float] = {"fp32": 0.0, "fp16": 0.995, "int8": 0.98}


#: Where the judged inputs come from: seeded noise (fp32/fp16), or images (int8).
INPUT_KINDS = ("seeded", "calibration", "held-out")


@dataclass(frozen=True)
class ParityPolicy:
    """How an artifact is judged: written into the manifest by ``build``, read back unchanged by ``verify``.

    Attributes:
        precision: fp32 is judged numerically; fp16/int8 on the mask's class agreement.
        atol: absolute tolerance, scaled by max(1, RMS of the reference output).
        rtol: relative tolerance.
        min_agreement: least fraction of mask pixels whose class must match (fp16/int8).
        mask_threshold: class boundary of a one-channel mask (0.5 after a sigmoid; None = logits, 0).
        seed: seed of the generated inputs.
        inputs: where the judged inputs come from (see INPUT_KINDS); they are stored in the bundle.
    """

    precision: str
    atol: float
    rtol: float
    min_agreement: float
    mask_threshold: float | None
    seed: int
    inputs: str

    FIELDS = ("precision", "atol", "rtol", "min_agreement", "mask_threshold", "seed", "inputs")

    @classmethod
    def for_build(
        cls,
        precision: str,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        activation: str | None = None,
        seed: int = 0,
        inputs: str | None = None,
    ) -> ParityPolicy:
        """The policy ``build`` applies: the precision's defaults unless the user chose tolerances."""
        default_atol, default_rtol = TOLERANCES[precision]
        return cls(
            precision=precision,
            atol=float(default_atol if atol is None else atol),
            rtol=float(default_rtol if rtol is None else rtol),
            min_agreement=MIN_AGREEMENT[precision],
            mask_threshold=0.5 if activation == "sigmoid" else None,
            seed=int(seed),
            inputs=inputs or ("calibration" if precision == "int8" else "seeded"),
        )

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, object], *, source: str = "manifest") -> ParityPolicy:
        """Read the policy back from a manifest's ``parity`` block; every field must be there and well-typed.

        Errors start with ``source`` (nothing when it is empty: the caller names the file).
        """
        from segexport.errors import InvalidInputError

        where = f"{source}: " if source else ""
        missing = [name for name in cls.FIELDS if name not in d]
        if missing:
            raise InvalidInputError(f"{where}the parity block lacks {', '.join(missing)}.")
        numbers = ("atol", "rtol", "min_agreement")
        bad = [n for n in numbers if not isinstance(d[n], (int, float)) or isinstance(d[n], bool) or not d[n] >= 0]
        threshold = d["mask_threshold"]
        if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)):
            bad.append("mask_threshold")
        if not isinstance(d["seed"], int) or isinstance(d["seed"], bool):
            bad.append("seed")
        if d["precision"] not in TOLERANCES:
            bad.append("precision")
        if d["inputs"] not in INPUT_KINDS:
            bad.append("inputs")
        if bad:
            raise InvalidInputError(f"{where}the parity block has invalid {', '.join(bad)}: {[d[b] for b in bad]}.")
        return cls(**{name: d[name] for name in cls.FIELDS})  # type: ignore[arg-type]


@dataclass
class OutputParity:
    """How closely one output of the artifact reproduces eager PyTorch."""

    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    agreement: float | None
    within_tolerance: bool
    atol_scale: float = 1.0
    mean_iou: float | None = None


@dataclass
class ParityReport:
    """Per-output figures over all judged inputs, the policy they were judged by, and the verdict."""

    validated_with: str
    policy: ParityPolicy
    input_shapes: list[list[int]]
    outputs: list[OutputParity] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return self.policy.precision

    @property
    def passed(self) -> bool:
        for out in self.outputs:
            if self.policy.precision == "fp32" or out.agreement is None:
                if not out.within_tolerance:
                    return False
            elif out.agreement < self.policy.min_agreement:
                return False
        return bool(self.outputs)

    def to_dict(self) -> dict:
        """The manifest's ``parity`` block: the policy's fields, then the figures and the verdict."""
        return {
            "validated_with": self.validated_with,
            **self.policy.to_dict(),
            "input_shapes": [list(s) for s in self.input_shapes],
            "outputs": [asdict(o) for o in self.outputs],
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: Mapping, policy: ParityPolicy | None = None) -> ParityReport:
        """The report a manifest's ``parity`` block holds (``policy``: already read from it)."""
        return cls(
            validated_with=str(d.get("validated_with", "")),
            policy=ParityPolicy.from_dict(d) if policy is None else policy,
            input_shapes=[list(s) for s in d.get("input_shapes", [])],
            outputs=[OutputParity(**o) for o in d.get("outputs", [])],
        )

    def summary(self) -> str:
        """One line per output, for progress output and error messages."""
        lines = []
        for o in self.outputs:
            agree = f", agreement {o.agreement:.4%}, mean IoU {o.mean_iou:.4f}" if o.agreement is not None else ""
            lines.append(
                f"{o.name}: max abs {o.max_abs:.3g}, mean abs {o.mean_abs:.3g}, max rel {o.max_rel:.3g}, "
                f"cosine {o.cosine:.6f}{agree}"
            )
        return "; ".join(lines)


def class_agreement(actual: np.ndarray, expected: np.ndarray, threshold: float | None) -> float:
    """Fraction of pixels whose predicted class matches: argmax over channels, or a threshold for 1 class."""
    if actual.ndim < 2 or not np.issubdtype(expected.dtype, np.floating):
        return float(np.mean(actual == expected))
    if expected.shape[1] == 1:
        t = 0.0 if threshold is None else threshold
        return float(np.mean((actual > t) == (expected > t)))
    return float(np.mean(np.argmax(actual, axis=1) == np.argmax(expected, axis=1)))


def class_masks(x: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted class per pixel: argmax over channels, or a threshold for one channel."""
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        return x
    if x.shape[1] == 1:
        return (x[:, 0] > (0.0 if threshold is None else threshold)).astype(np.int64)
    return np.argmax(x, axis=1)


def mean_iou(actual: np.ndarray, expected: np.ndarray, threshold: float | None) -> float:
    """Mean over classes present in either mask of the IoU between the two class masks."""
    a, e = class_masks(actual, threshold), class_masks(expected, threshold)
    ious = []
    for cls in np.union1d(np.unique(a), np.unique(e)):
        inter = np.sum((a == cls) & (e == cls))
        union = np.sum((a == cls) | (e == cls))
        ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


def compare_outputs(
    name: str,
    actual: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    atol: float,
    rtol: float,
    *,
    agreement_threshold: float | None = None,
    with_agreement: bool = False,
) -> OutputParity:
    """Aggregate error figures for one named output across several inputs."""
    a = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in actual])
    e = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in expected])
    diff = np.abs(a - e)
    scale = max(1.0, float(np.sqrt(np.mean(e * e)))) if e.size else 1.0
    denom = np.linalg.norm(a) * np.linalg.norm(e)
    cosine = float(np.dot(a, e) / denom) if denom > 0 else float(np.array_equal(a, e))
    agreement = iou = None
    if with_agreement:
        weights = [x.size for x in expected]
        scores = [class_agreement(np.asarray(x), np.asarray(y), agreement_threshold) for x, y in zip(actual, expected)]
        agreement = float(np.average(scores, weights=weights))
        iou = float(np.mean([mean_iou(np.asarray(x), np.asarray(y), agreement_threshold) for x, y in zip(actual, expected)]))
    return OutputParity(
        name=name,
        max_abs=float(diff.max(initial=0.0)),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        max_rel=float((diff / np.maximum(np.abs(e), 1e-6)).max(initial=0.0)),
        cosine=cosine,
        agreement=agreement,
        within_tolerance=bool(np.all(diff <= atol * scale + rtol * np.abs(e))),
        atol_scale=scale,
        mean_iou=iou,
    )


def seeded_inputs(shapes: Sequence[Sequence[int]], seed: int = 0) -> list[np.ndarray]:
    """Deterministic float32 test inputs (standard normal, like normalized images)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]


def parity_report(
    actual: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    policy: ParityPolicy,
    output_names: Sequence[str],
    validated_with: str,
    input_shapes: Sequence[Sequence[int]],
) -> ParityReport:
    """Judge an artifact's outputs against eager PyTorch's under ``policy``; the mask also gets class agreement.

    Every named output must be present on both sides for every input: a missing
    output is a failed check, never a skipped one.
    """
    from segexport.errors import ParityError

    if len(actual) != len(reference):
        raise ParityError(f"The artifact answered {len(actual)} of {len(reference)} inputs.")
    report = ParityReport(validated_with=validated_with, policy=policy, input_shapes=[list(s) for s in input_shapes])
    for name in output_names:
        lacking = [i for i, (a, r) in enumerate(zip(actual, reference)) if name not in a or name not in r]
        if lacking:
            raise ParityError(f"Output {name!r} is missing for input {lacking[0]} (the artifact or the reference lacks it).")
        report.outputs.append(
            compare_outputs(
                name,
                [a[name] for a in actual],
                [r[name] for r in reference],
                policy.atol,
                policy.rtol,
                agreement_threshold=policy.mask_threshold,
                with_agreement=name == "mask",
            )
        )
    return report


def confusion(actual: np.ndarray, expected: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts: rows ``expected``, columns ``actual`` (pixels with ``expected`` >= classes skipped)."""
    keep = expected < classes
    index = expected[keep].astype(np.int64) * classes + actual[keep].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def ious(matrix: np.ndarray) -> list[float | None]:
    """IoU per class from a confusion matrix; None for a class in neither mask."""
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    return [float(i / u) if u > 0 else None for i, u in zip(inter, union)]


def miou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes present in either mask (1.0 when there are none)."""
    values = [v for v in ious(matrix) if v is not None]
    return float(np.mean(values)) if values else 1.0
