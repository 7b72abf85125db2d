"""Test-wide settings: the tests folder is importable (cases.py, trained_model.py), slow tests are opt-in,
and the one AOTInductor bundle that several modules check is compiled once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SLOW_ENV = "SEGEXPORT_RUN_SLOW"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help=f"also run tests marked slow (or set {SLOW_ENV}=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get(SLOW_ENV, "") not in ("", "0"):
        return
    default = "a full sweep that trains a model per case (about 25 minutes on 2 cores)"
    for item in items:
        mark = item.get_closest_marker("slow")
        if mark is not None:
            why = mark.kwargs.get("reason") or (mark.args[0] if mark.args else default)
            item.add_marker(pytest.mark.skip(reason=f"slow: {why}; kept out of the default run so CI stays within "
                                             f"its 30 minutes; run with --run-slow or {SLOW_ENV}=1"))  # fmt: skip


@pytest.fixture(scope="session")
def aoti_unet_bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """unet-resnet34 (tiny decoder) as a dynamic AOTInductor bundle with mask and label: compiling takes a minute."""
    import segexport
    from cases import SIZE, tiny_kwargs

    size = SIZE["unet"]
    return segexport.build(
        "unet", "resnet34", target="aoti", height=size, width=size, dynamic=True, classes=2, aux_classes=3,
        arch_args=tiny_kwargs("unet"), out=tmp_path_factory.mktemp("aoti") / "bundle",
    )  # fmt: skip
