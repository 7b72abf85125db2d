"""`segexport bench`: report structure, positive and consistent figures, shape rules."""

from __future__ import annotations

import pytest

import segexport
from segexport.bench import bench

pytestmark = pytest.mark.onnx

TINY = {"decoder_channels": (16, 16, 8, 8, 8)}


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
