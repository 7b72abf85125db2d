"""MobileOne: SMP's layout under every option SMP offers, and reparameterisation that keeps the output.

The shared test_smp_native_encoders.py checks each member at default settings; here
in_channels, depth and output stride are compared with SMP, the refused options are
checked, and the fused (one convolution per block) form is checked against the
branches it replaces: per block in float32, per encoder in float64 (exact algebra,
without the rounding of activations that grow to 1e5 in a randomly initialised net).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from segexport.arch.encoders import get_encoder
from segexport.arch.encoders._base import replace_strides_with_dilation
from segexport.arch.encoders.mobileone import MobileOneBlock
from segexport.errors import InvalidInputError
from segexport.prepare import prepare_for_export, reparameterize_blocks

RTOL_OF_RMS = 1e-5


def _randomize_batchnorm(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _assert_close_to(actual: list[torch.Tensor], expected: list[torch.Tensor], rtol_of_rms: float) -> None:
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for got, want in zip(actual, expected, strict=True):
        rms = want.pow(2).mean().sqrt().item()
        assert (got - want).abs().max().item() <= rtol_of_rms * max(rms, 1.0)


def _count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


# --------------------------------------------------------------------------- SMP's options


def _smp():  # type: ignore[no-untyped-def]
    return pytest.importorskip("segmentation_models_pytorch")


@pytest.mark.smp
@pytest.mark.parametrize(
    ("name", "in_channels", "depth", "output_stride"),
    [
        ("mobileone_s0", 1, 5, 32),
        ("mobileone_s0", 4, 3, 32),
        ("mobileone_s0", 3, 5, 8),
        ("mobileone_s1", 2, 5, 16),
        ("mobileone_s0", 3, 1, 32),
    ],
)
def test_options_match_smp_with_its_weights(name, in_channels, depth, output_stride):
    smp = _smp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = smp.encoders.get_encoder(name, in_channels=in_channels, depth=depth, output_stride=output_stride)
    reference.eval()
    _randomize_batchnorm(reference)
    ours = get_encoder(name, in_channels=in_channels, depth=depth, output_stride=output_stride).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, in_channels, 64, 64)
    with torch.no_grad():
        _assert_close_to(ours(x), reference(x), RTOL_OF_RMS)
    assert list(ours.out_channels) == list(reference.out_channels)
    assert ours.output_stride == reference.output_stride


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_stride": 4}, "cannot reach output stride 4; allowed: 8, 16, 32"),
        ({"depth": 6}, r"encoder_depth 6 is out of range for encoder 'mobileone_s0'; allowed: 1\.\.5"),
        ({"depth": 0}, r"allowed: 1\.\.5"),
    ],
)
def test_options_smp_refuses_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        get_encoder("mobileone_s0", **kwargs)


def test_apple_checkpoint_classifier_is_ignored_on_load():
    encoder = get_encoder("mobileone_s0", depth=2)
    state = encoder.state_dict()
    encoder.load_state_dict({**state, "linear.weight": torch.zeros(1000, 1024), "linear.bias": torch.zeros(1000)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        encoder.load_state_dict({**state, "stage9.weight": torch.zeros(1)})


# --------------------------------------------------------------------------- reparameterisation


BLOCKS = {
    # (in, out, kernel, stride, groups, conv branches, SE): every branch combination MobileOne uses
    "depthwise-with-skip": (8, 8, 3, 1, 8, 4, False),
    "depthwise-strided": (8, 8, 3, 2, 8, 1, False),
    "pointwise-with-skip": (8, 8, 1, 1, 1, 4, False),
    "pointwise-widening": (8, 16, 1, 1, 1, 1, False),
    "stem": (3, 16, 3, 2, 1, 1, False),
    "depthwise-se": (32, 32, 3, 1, 32, 1, True),
}


def _block(spec: tuple) -> MobileOneBlock:
    cin, cout, k, stride, groups, branches, se = spec
    block = MobileOneBlock(cin, cout, k, stride=stride, padding=k // 2, groups=groups, use_se=se, num_conv_branches=branches)
    _randomize_batchnorm(block)
    return block.eval()


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("spec", BLOCKS.values(), ids=BLOCKS.keys())
def test_reparameterized_block_is_one_convolution_with_the_same_output(spec, dilation):
    block = _block(spec)
    if dilation > 1:  # what make_dilated does to the last stages
        replace_strides_with_dilation(block, dilation)
    x = torch.randn(2, spec[0], 16, 16)
    with torch.no_grad():
        expected = block(x)
    branches = _count(block, nn.Conv2d) - 2 * spec[6]
    assert branches == spec[5] + (spec[2] > 1)
    block.reparameterize()
    assert _count(block, nn.Conv2d) - 2 * spec[6] == 1 and _count(block, nn.BatchNorm2d) == 0
    with torch.no_grad():
        _assert_close_to([block(x)], [expected], RTOL_OF_RMS)
    block.reparameterize()  # a second call changes nothing
    with torch.no_grad():
        _assert_close_to([block(x)], [expected], RTOL_OF_RMS)


@pytest.mark.parametrize("output_stride", [32, 8])
def test_reparameterized_encoder_is_exactly_the_multi_branch_one(output_stride):
    encoder = get_encoder("mobileone_s0", output_stride=output_stride).double().eval()
    _randomize_batchnorm(encoder)
    fused = copy.deepcopy(encoder)
    blocks = _count(encoder, MobileOneBlock)
    assert reparameterize_blocks(fused) == blocks
    assert _count(fused, nn.Conv2d) == blocks and _count(fused, nn.BatchNorm2d) == 0
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)  # 32: float64 convolutions are slow on CPU
    with torch.no_grad():
        _assert_close_to(fused(x), encoder(x), 1e-10)


@pytest.mark.smp
def test_reparameterized_state_dict_is_smps_reparameterized_layout():
    smp = _smp()
    from segmentation_models_pytorch.encoders.mobileone import reparameterize_model

    reference = smp.encoders.get_encoder("mobileone_s0").eval()
    _randomize_batchnorm(reference)
    ours = get_encoder("mobileone_s0").eval()
    ours.load_state_dict(reference.state_dict())
    reparameterize_blocks(ours)
    fused_reference = reparameterize_model(reference)
    ours.load_state_dict(fused_reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close_to(ours(x), fused_reference(x), RTOL_OF_RMS)


def test_export_preparation_fuses_a_copy_and_leaves_the_eager_model_multi_branch():
    from segexport.arch.registry import create_model

    model = create_model("linknet", "mobileone_s0", encoder_weights=None, encoder_depth=3).eval()
    branches = _count(model.encoder, nn.Conv2d)
    blocks = _count(model.encoder, MobileOneBlock)
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_for_export(model, x)
    assert _count(prepared.model.encoder, nn.Conv2d) == blocks < branches
    assert _count(model.encoder, nn.Conv2d) == branches and all(m.reparam_conv is None for m in model.modules() if isinstance(m, MobileOneBlock))
    with torch.no_grad():
        (got,), want = prepared(x), model(x)
    _assert_close_to([got], [want], 1e-4)  # fp32, BatchNorm folded too: the pipeline's own parity tolerance


class _Sampler(nn.Module):
    """A module whose ``reparameterize`` is a VAE's sampling step, not a block fusion."""

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        raise AssertionError("must not be called")


def test_reparameterize_methods_that_take_arguments_are_left_alone():
    model = nn.Sequential(_Sampler(), MobileOneBlock(4, 4, 3, padding=1, groups=4))
    assert reparameterize_blocks(model) == 1
    assert model[1].reparam_conv is not None


@pytest.mark.parametrize("name", ["tu-mobileone_s0", "tu-repvgg_a0"])
def test_timm_reparameterizable_blocks_take_part_too(name):
    encoder = get_encoder(name, depth=3).eval()
    fused = copy.deepcopy(encoder)
    assert reparameterize_blocks(fused) > 0
    assert _count(fused, nn.Conv2d) < _count(encoder, nn.Conv2d)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _assert_close_to(fused(x), encoder(x), RTOL_OF_RMS)
