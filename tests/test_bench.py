"""`segexport bench`: report structure, positive and consistent figures, shape rules, runtimes, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from cases import SEGEXPORT

import segexport
from segexport.bench import bench, format_table, time_rounds
from segexport.parity import compare_outputs
from segexport.targets.runners import runner_for

pytestmark = pytest.mark.onnx

TINY = {"decoder_channels": (16, 16, 8, 8, 8)}
#: The installed console script, beside this interpreter: failure paths are checked as a user meets them.


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    return segexport.build("unet", "resnet18", height=64, width=64, dynamic=True, arch_args=TINY, out=out)


def test_report_figures_are_positive_and_consistent(dynamic_bundle):
    report = bench(str(dynamic_bundle.path), warmup=1, iters=5, compare_eager=True)
    (result,) = report.results
    lat = result.latency_ms
    assert 0 < lat.min <= lat.median <= lat.p90 <= lat.p99 <= lat.max
    assert result.throughput == pytest.approx(1 / (lat.median / 1e3))
    assert result.gflop > 0 and result.gflops_achieved == pytest.approx(result.gflop / (lat.median / 1e3))
    assert result.speedup_vs_eager == pytest.approx(result.eager_latency_ms.median / lat.median)
    assert report.peak_rss_mib > 0 and result.runtime == "onnxruntime"


def test_dynamic_bundle_sweeps_batches_and_sizes(dynamic_bundle):
    report = bench(str(dynamic_bundle.path), batches=[1, 2], heights=[64, 96], widths=[64], warmup=0, iters=2)
    assert [r.shape for r in report.results] == [[1, 3, 64, 64], [1, 3, 96, 64], [2, 3, 64, 64], [2, 3, 96, 64]]
    gflop = {tuple(r.shape): r.gflop for r in report.results}
    assert gflop[(2, 3, 64, 64)] == pytest.approx(2 * gflop[(1, 3, 64, 64)], rel=1e-6)


def test_static_bundle_refuses_other_shapes(tmp_path):
    bundle = segexport.build("unet", "resnet18", height=64, width=64, arch_args=TINY, out=tmp_path / "b")
    with pytest.raises(segexport.InvalidInputError, match="only takes 1x3x64x64, not 1x3x96x64"):
        bench(str(bundle.path), heights=[96], widths=[64])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"device": "tpu"}, "Unknown device 'tpu'"), ({"iters": 0}, "--iters >= 1"), ({"heights": [64, 96], "widths": [64, 64, 64]}, "one --width")],
)
def test_bad_bench_arguments(dynamic_bundle, kwargs, fragment):
    with pytest.raises(segexport.InvalidInputError, match=fragment):
        bench(str(dynamic_bundle.path), **kwargs)


def test_json_output_from_cli(dynamic_bundle, capsys):
    import json

    from segexport.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", str(dynamic_bundle.path), "--iters", "2", "--warmup", "0", "--json"])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["latency_ms"]["median"] > 0


@pytest.mark.torchscript
def test_torchscript_bundle_benches_in_its_own_runtime(tmp_path):
    bundle = segexport.build("unet", "resnet18", target="torchscript", height=64, width=64, arch_args=TINY, out=tmp_path / "ts")
    report = bench(str(bundle.path), warmup=1, iters=3)
    assert report.results[0].runtime == "torchscript" and report.results[0].latency_ms.median > 0


# ---- several runtimes in one run, and what bench refuses ------------------------------------------


def test_onnx_bundle_is_timed_in_onnxruntime_and_openvino_in_the_same_rounds(dynamic_bundle):
    pytest.importorskip("openvino")
    report = bench(str(dynamic_bundle.path), runtimes=["onnxruntime,openvino"], warmup=1, iters=3, compare_eager=True)
    assert [r.runtime for r in report.results] == ["onnxruntime", "openvino"]
    for result in report.results:
        assert result.latency_ms.median > 0 and result.gflop > 0
        assert result.speedup_vs_eager == pytest.approx(result.eager_latency_ms.median / result.latency_ms.median)
    assert report.results[0].eager_latency_ms == report.results[1].eager_latency_ms  # one eager timing, shared
    assert "| openvino |" in format_table(report)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 64)])
def test_openvino_runner_computes_what_onnxruntime_computes(dynamic_bundle, shape):
    pytest.importorskip("openvino")
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    m = dynamic_bundle.manifest
    with runner_for(dynamic_bundle.path, m, runtime="onnxruntime") as ort, runner_for(dynamic_bundle.path, m, runtime="openvino") as ov:
        expected, actual = ort.infer(x), ov.infer(x)
    assert list(actual) == ["mask"] and actual["mask"].shape == (shape[0], 1, *shape[2:])
    result = compare_outputs("mask", [actual["mask"]], [expected["mask"]], atol=1e-4, rtol=1e-3)
    assert result.within_tolerance, result


@pytest.mark.parametrize(
    ("runtimes", "fragment"),
    [
        (["openvinoo"], "Unknown runtime 'openvinoo'; allowed: .*Did you mean 'openvino'"),
        (["onnxruntime", "torchscript"], "onnx bundles run in onnxruntime or openvino, not in 'torchscript'"),
    ],
)
def test_runtimes_a_bundle_cannot_run_in_are_named(dynamic_bundle, runtimes, fragment):
    with pytest.raises(segexport.InvalidInputError, match=fragment):
        bench(str(dynamic_bundle.path), runtimes=runtimes)


def test_architecture_registered_under_another_name_is_rebuilt_from_that_name(tmp_path, monkeypatch):
    from segexport.arch import registry

    class HouseUnet(registry.get_architecture("unet")):  # its class name is not its registry name
        pass

    monkeypatch.setattr(registry, "ARCHITECTURES", dict(registry.ARCHITECTURES))  # the registration ends with the test
    registry.register_architecture("house-unet", HouseUnet)
    bundle = segexport.build("house-unet", "resnet18", height=64, width=64, arch_args=TINY, out=tmp_path / "b")
    assert bundle.manifest.arch == "house-unet"

    report = bench(str(bundle.path), warmup=0, iters=2, compare_eager=True)
    assert report.results[0].eager_latency_ms.median > 0 and report.results[0].gflop > 0


@pytest.mark.parametrize("where", ["climbs-out", "absolute", "symlink-out"])
def test_cli_refuses_a_manifest_whose_artifact_lies_outside_the_bundle(dynamic_bundle, tmp_path, where):
    bundle = tmp_path / "bundle"
    shutil.copytree(dynamic_bundle.path, bundle)
    (tmp_path / "elsewhere.onnx").write_bytes((bundle / "model.onnx").read_bytes())  # a real model: only the check stops it
    manifest = json.loads((bundle / "manifest.json").read_text())
    if where == "symlink-out":
        (bundle / "model.onnx").unlink()
        (bundle / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    else:
        manifest["artifact"] = "../elsewhere.onnx" if where == "climbs-out" else str(tmp_path / "elsewhere.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    done = subprocess.run([SEGEXPORT, "bench", str(bundle), "--iters", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "outside the bundle" in done.stderr and "Traceback" not in done.stderr


def test_rounds_rotate_the_order_and_are_measured_by_the_timer_given():
    """CUDA-event timing plugs in as a timer; here a fake one shows each call is timed once per round, in turn."""
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    times = time_rounds(calls, 0, 3, dict.fromkeys(calls, lambda: None), timer=lambda call, sync: (call(), sync(), 0.25)[2])
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times == {"a": [0.25] * 3, "b": [0.25] * 3, "c": [0.25] * 3}


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="times on the GPU: needs a CUDA GPU")
def test_cuda_bench_times_with_events_and_compares_eager_fp32_and_fp16(tmp_path):
    bundle = segexport.build("unet", "resnet18", target="torchscript", precision="fp16", height=64, width=64,
                             arch_args=TINY, out=tmp_path / "b")  # fmt: skip
    report = bench(str(bundle.path), device="cuda", warmup=2, iters=5, compare_eager=True)
    result = report.results[0]
    assert result.latency_ms.median > 0 and result.eager_latency_ms.median > 0 and result.eager_fp16_latency_ms.median > 0
    assert report.peak_device_mib > 0 and "eager fp16 median" in format_table(report)
