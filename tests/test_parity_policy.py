"""One parity policy, written once: ``build`` decides it, the manifest carries it, ``verify`` reads it back unchanged."""

from __future__ import annotations

import importlib.util
import json

import pytest
from cases import tiny_kwargs

import segexport
from segexport.parity import MIN_AGREEMENT, TOLERANCES, ParityPolicy

ACTIVATIONS = [None, "sigmoid", "softmax2d"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_policy_survives_the_manifest_unchanged(precision, activation):
    policy = ParityPolicy.for_build(precision, activation=activation, seed=7)
    assert ParityPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert (policy.atol, policy.rtol) == TOLERANCES[precision] and policy.min_agreement == MIN_AGREEMENT[precision]
    assert policy.mask_threshold == (0.5 if activation == "sigmoid" else None)
    assert policy.inputs == ("calibration" if precision == "int8" else "seeded") and policy.seed == 7


def test_user_tolerances_replace_the_defaults():
    policy = ParityPolicy.for_build("fp32", atol=1e-3, rtol=0.0)
    assert (policy.atol, policy.rtol) == (1e-3, 0.0)


@pytest.mark.parametrize("field", ParityPolicy.FIELDS)
def test_a_policy_without_one_of_its_fields_is_refused(field):
    d = ParityPolicy.for_build("fp16").to_dict()
    del d[field]
    with pytest.raises(segexport.InvalidInputError, match=f"lacks {field}"):
        ParityPolicy.from_dict(d)


def _build(tmp_path, target: str, precision: str, activation: str | None, classes: int, **extra):  # type: ignore[no-untyped-def]
    return segexport.build(
        "unet", "resnet34" if target == "trt" else "resnet18", target=target, precision=precision, activation=activation,
        classes=classes, height=64, width=64, arch_args=tiny_kwargs("unet"), out=tmp_path / "b", **extra,
    )  # fmt: skip


def _assert_verify_judges_by_the_build_policy(bundle, expected: ParityPolicy) -> None:
    stored = bundle.manifest.parity.policy
    assert stored == expected
    result = segexport.verify(bundle.path)
    assert result.passed and result.report.policy == stored


@pytest.mark.onnx
@pytest.mark.parametrize(("activation", "classes"), [(None, 1), ("sigmoid", 1), ("softmax2d", 2)])
def test_build_and_verify_agree_on_every_field_in_fp32(tmp_path, activation, classes):
    bundle = _build(tmp_path, "onnx", "fp32", activation, classes)
    _assert_verify_judges_by_the_build_policy(bundle, ParityPolicy.for_build("fp32", activation=activation))


@pytest.mark.trt
@pytest.mark.skipif(
    not any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx")), reason="fp16 builds here through TensorRT"
)
def test_a_sigmoid_fp16_bundle_is_reverified_at_its_threshold_not_at_zero(tmp_path):
    """Before the policy record, verify re-judged a one-class sigmoid mask at 0, where every pixel agrees."""
    bundle = _build(tmp_path, "trt", "fp16", "sigmoid", 1)
    _assert_verify_judges_by_the_build_policy(bundle, ParityPolicy.for_build("fp16", activation="sigmoid"))
    assert segexport.verify(bundle.path).report.policy.mask_threshold == 0.5


@pytest.mark.onnx
def test_build_and_verify_agree_on_every_field_in_int8(tmp_path):
    pytest.importorskip("skimage", reason="calibration photos come from scikit-image (a test extra)")
    from trained_model import cached_checkpoint, write_photos

    photos = tmp_path / "photos"
    write_photos(photos)
    checkpoint = cached_checkpoint("unet", "resnet18", tiny_kwargs("unet"))
    bundle = _build(
        tmp_path, "onnx", "int8", "softmax2d", 3, checkpoint=str(checkpoint), calib=str(photos),
        target_options={"calib_count": 12},
    )  # fmt: skip
    expected = ParityPolicy.from_dict({**ParityPolicy.for_build("int8", activation="softmax2d").to_dict(),
                                       "inputs": bundle.manifest.parity.policy.inputs})  # fmt: skip
    _assert_verify_judges_by_the_build_policy(bundle, expected)
