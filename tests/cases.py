"""Tiny but complete settings per architecture, shared by the test modules.

Small decoder widths keep each model to a few hundred thousand decoder weights,
so the full architecture x target matrix runs in minutes on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The installed console script: gates are tested through it, as users and CI call them.
SEGEXPORT = shutil.which("segexport") or str(Path(sys.executable).with_name("segexport"))


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user's shell or CI would."""
    return subprocess.run(
        [SEGEXPORT, *argv], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL
    )


def one_error_line(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exactly one ``error:`` line, containing ``fragment``, and no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


#: architecture → constructor keywords that make it small (valid for every encoder used in tests).
TINY: dict[str, dict[str, Any]] = {
    "unet": {"decoder_channels": (32, 16, 16, 8, 8)},
    "unetplusplus": {"decoder_channels": (32, 16, 16, 8, 8)},
    "manet": {"decoder_channels": (32, 16, 16, 8, 8), "decoder_pab_channels": 8},
    "linknet": {},
    "fpn": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "pspnet": {"psp_out_channels": 32},
    "pan": {"decoder_channels": 16},
    "deeplabv3": {"decoder_channels": 32},
    "deeplabv3plus": {"decoder_channels": 32},
    "upernet": {"decoder_channels": 32},
    "segformer": {"decoder_segmentation_channels": 32},
    # dynamic_img_size: the timm ViT then takes any multiple of its patch size, not only 224x224.
    "dpt": {"decoder_intermediate_channels": (16, 32, 32, 32), "decoder_fusion_channels": 16, "dynamic_img_size": True},
}

#: architecture → encoder for export tests (a CNN where the architecture takes one; DPT needs a ViT).
EXPORT_ENCODER: dict[str, str] = {name: "resnet18" for name in TINY}
EXPORT_ENCODER["dpt"] = "tu-vit_tiny_patch16_224"

#: architecture → input size for tests (a multiple of every stride involved).
SIZE: dict[str, int] = {name: 64 for name in TINY}
SIZE["pan"] = 128  # its stride-32 feature must be at least 8x8 (PAN pools to 1, 2, 4)
SIZE["dpt"] = 64


def tiny_kwargs(arch: str, depth: int | None = None) -> dict[str, Any]:
    """TINY settings for ``arch``, with decoder_channels cut to ``depth`` where it has one per stage."""
    kwargs = dict(TINY[arch])
    if depth is not None and isinstance(kwargs.get("decoder_channels"), tuple):
        kwargs["decoder_channels"] = kwargs["decoder_channels"][:depth]
    return kwargs


def export_cases() -> list:
    """(arch, dynamic, aux) cases for target conformance tests.

    Every architecture is exported static without the aux head and dynamic with it,
    so each architecture is checked static and dynamic, with and without aux; unet
    also runs the two other combinations. This halves the builds of the full cross.
    """
    import pytest

    from segexport.arch.registry import list_architectures

    cases = []
    for arch in list_architectures():
        combos = [(False, False), (True, True)] + ([(False, True), (True, False)] if arch == "unet" else [])
        for dynamic, aux in combos:
            name = f"{arch}-{'dynamic' if dynamic else 'static'}-{'mask+label' if aux else 'mask'}"
            cases.append(pytest.param(arch, dynamic, aux, id=name))
    return cases


def randomize_batchnorm(module: Any, seed: int = 0) -> None:
    """Non-trivial running statistics, so eval-mode comparisons with SMP exercise every BatchNorm."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
