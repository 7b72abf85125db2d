"""The AOTInductor target: model.pt2 compiled with the machine's C++ compiler, parity through aoti_load_package.

Compiling takes about a minute per model on 2 cores, so only two models are built,
tiny, one with dynamic shapes and one static; the dynamic one (a session fixture in
conftest.py) also serves the C++ consumer's test.
"""

from __future__ import annotations

import time

import pytest
from cases import SIZE, tiny_kwargs

import segexport
from segexport.targets.aoti import heartbeat, inductor_cache_dir

pytestmark = pytest.mark.aoti


def build_tiny(arch: str, tmp_path, **options):  # type: ignore[no-untyped-def]
    size = options.pop("size", SIZE[arch])
    return segexport.build(
        arch,
        options.pop("encoder", "resnet34"),
        target="aoti",
        height=size,
        width=size,
        arch_args=tiny_kwargs(arch),
        out=tmp_path / "bundle",
        **options,
    )


def check_package(bundle, arch: str, dynamic: bool, aux: bool) -> None:  # type: ignore[no-untyped-def]
    m = bundle.manifest
    assert m.parity.passed and m.parity.validated_with == "aoti_load_package-cpu"
    assert m.output_names == (["mask", "label"] if aux else ["mask"])
    assert len(m.parity.input_shapes) == (2 if dynamic else 1)  # dynamic: batch 2 and another size too
    size = SIZE[arch]
    assert m.inputs[0].shape == (("batch", 3, "height", "width") if dynamic else (1, 3, size, size))
    assert set(m.sha256) == {"model.pt2", "reference.npz"}
    assert m.runtime == "aoti" and m.export.details["compile_seconds"] > 0
    cache = inductor_cache_dir()
    assert any(cache.iterdir())  # the CPU probes stay cached for the next build...
    assert not list(cache.glob("*/*.wrapper.so"))  # ...but not this build's library, which the package holds


def test_dynamic_unet_resnet34_package_with_label_passes_parity_in_the_python_loader(aoti_unet_bundle):
    check_package(aoti_unet_bundle, "unet", dynamic=True, aux=True)


def test_static_deeplabv3plus_resnet34_package_passes_parity_in_the_python_loader(tmp_path):
    check_package(build_tiny("deeplabv3plus", tmp_path, classes=2), "deeplabv3plus", dynamic=False, aux=False)


@pytest.mark.parametrize(
    ("precision", "fragment"),
    [("fp16", "fp16 AOTInductor packages are compiled for a CUDA GPU: add --device cuda"),
     ("int8", "not available for target aoti; allowed: fp32, fp16")],
)  # fmt: skip
def test_a_precision_the_cpu_package_cannot_have_is_refused_before_compiling(tmp_path, precision, fragment):
    with pytest.raises(segexport.InvalidInputError, match=fragment):
        build_tiny("unet", tmp_path, precision=precision, **({"calib": "random"} if precision == "int8" else {}))
    assert not (tmp_path / "bundle").exists()


def test_missing_compiler_is_a_clear_error(tmp_path):
    from torch._inductor import config

    with config.patch({"cpp.cxx": (None, "/nonexistent/c++")}):
        with pytest.raises(segexport.InvalidInputError, match="no working C\\+\\+ compiler.*install g\\+\\+"):
            build_tiny("unet", tmp_path)
    assert not (tmp_path / "bundle").exists()


def test_heartbeat_reports_elapsed_time_while_a_step_runs():
    lines: list[str] = []
    with heartbeat(lines.append, "compiling", every=0.05):
        time.sleep(0.3)
    assert lines and all(line.startswith("compiling: ") and line.endswith(" s") for line in lines)
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count  # stops with the block
