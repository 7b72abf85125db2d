"""SMP's former ``timm-`` encoder names map to the ``tu-`` timm models SMP 0.6 maps them to.

The prefixes come from SMP itself (its ``is_equivalent_to_timm_universal``), and the
name each old name becomes is what SMP's ``get_encoder`` hands its timm encoder, so a
change in SMP's mapping fails here. A model built with an old name also loads the
checkpoint of SMP's model built with that old name, strictly, with the same outputs.
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from cases import tiny_kwargs

import segexport
from segexport.arch.encoders import get_pretrained_settings
from segexport.arch.encoders.renamed import REMOVED_IN, TIMM_RENAMED_PREFIXES, renamed_encoder

#: Every timm- name SMP 0.5 registered for the families SMP 0.6 moved to timm (its encoders/timm_*.py).
FORMER_NAMES = (
    *(f"timm-regnet{kind}_{size}" for kind in "xy" for size in ("002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160", "320")),
    "timm-res2net50_26w_4s", "timm-res2net101_26w_4s", "timm-res2net50_26w_6s", "timm-res2net50_26w_8s",
    "timm-res2net50_48w_2s", "timm-res2net50_14w_8s", "timm-res2next50",
    "timm-resnest14d", "timm-resnest26d", "timm-resnest50d", "timm-resnest101e", "timm-resnest200e", "timm-resnest269e",
    "timm-resnest50d_4s2x40d", "timm-resnest50d_1s4x24d",
    "timm-gernet_s", "timm-gernet_m", "timm-gernet_l",
    "timm-mobilenetv3_large_075", "timm-mobilenetv3_large_100", "timm-mobilenetv3_large_minimal_100",
    "timm-mobilenetv3_small_075", "timm-mobilenetv3_small_100", "timm-mobilenetv3_small_minimal_100",
)  # fmt: skip
#: Names that keep their meaning: native timm- families SMP 0.6 still has, and names that were never renamed.
UNCHANGED = ("timm-efficientnet-b0", "timm-skresnet18", "timm-tf_efficientnet_lite0", "resnet34", "tu-regnetx_002", "mobileone_s0")


HAS_SMP = importlib.util.find_spec("segmentation_models_pytorch") is not None


def _smp():  # type: ignore[no-untyped-def]
    return pytest.importorskip("segmentation_models_pytorch")


def smp_prefixes() -> list[str]:
    """The prefix list inside SMP's ``is_equivalent_to_timm_universal`` (SMP has no public name for it)."""
    smp = _smp()
    constants = smp.encoders.is_equivalent_to_timm_universal.__code__.co_consts
    return [c for group in constants if isinstance(group, tuple) for c in group if isinstance(c, str)]


#: SMP's own list where SMP is installed (so a prefix SMP adds is tested the day it appears), else ours.
PREFIXES = smp_prefixes() if HAS_SMP else list(TIMM_RENAMED_PREFIXES)


class _Built(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def smp_mapping(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The encoder name SMP 0.6's get_encoder builds for ``name`` (its timm encoder is replaced by a recorder)."""
    smp = _smp()

    def record(name: str, **_: object) -> None:
        raise _Built(name)

    monkeypatch.setattr(smp.encoders, "TimmUniversalEncoder", record)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            smp.encoders.get_encoder(name)
    except _Built as built:
        return f"tu-{built.name}"
    return name


@pytest.mark.smp
def test_our_prefixes_are_smps():
    assert sorted(smp_prefixes()) == sorted(TIMM_RENAMED_PREFIXES)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_former_name_maps_as_smp_maps_it(prefix, monkeypatch):
    import timm

    names = [n for n in FORMER_NAMES if n.startswith(prefix)]
    assert names, f"no former SMP name starts with {prefix!r}"
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"{name!r} is deprecated.*use the `tu-` equivalent"):
            new = renamed_encoder(name)
        if HAS_SMP:
            assert new == smp_mapping(name, monkeypatch)
        assert new.startswith("tu-") and timm.is_model(new.removeprefix("tu-")), new


@pytest.mark.parametrize("name", UNCHANGED)
def test_other_names_are_unchanged_and_do_not_warn(name, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert renamed_encoder(name) == name
    if name.startswith("timm-") and HAS_SMP:
        assert smp_mapping(name, monkeypatch) == name


def test_pretrained_settings_follow_the_new_name():
    with pytest.warns(DeprecationWarning):
        old = get_pretrained_settings("timm-mobilenetv3_large_100")
    assert old == get_pretrained_settings("tu-tf_mobilenetv3_large_100")


def test_old_names_are_gone_by_their_removal_version():
    from packaging.version import Version

    assert Version(segexport.__version__) < Version(REMOVED_IN), (
        f"segexport {segexport.__version__} reached {REMOVED_IN}: remove arch/encoders/renamed.py's mapping and this test"
    )


@pytest.mark.smp
@pytest.mark.parametrize(
    "name",
    [
        "timm-regnetx_002",
        "timm-mobilenetv3_small_minimal_100",  # the one that gains tf_
        pytest.param("timm-gernet_s", marks=pytest.mark.slow),  # slow: ~8M weights built twice (seconds each on 2 cores)
        pytest.param("timm-resnest14d", marks=pytest.mark.slow),  # slow: ~10M weights
        pytest.param("timm-res2net50_14w_8s", marks=pytest.mark.slow),  # slow: ~25M weights
    ],
)
def test_model_built_with_an_old_name_loads_smps_checkpoint_of_that_name(name):
    smp = _smp()
    kwargs = tiny_kwargs("unet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(0)
        reference = smp.create_model("unet", encoder_name=name, encoder_weights=None, classes=2, **kwargs).eval()
    with pytest.warns(DeprecationWarning, match=name):
        ours = segexport.create_model("unet", encoder_name=name, encoder_weights=None, classes=2, **kwargs).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    rms = want.pow(2).mean().sqrt().item()
    assert (got - want).abs().max().item() <= 1e-5 * max(rms, 1.0)
