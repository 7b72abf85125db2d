"""`segexport matrix --ray`: cells as Ray tasks give the table local workers give; a cell whose
worker dies or hangs is that cell's error and the run goes on.

One Ray cluster for the module (starting one costs seconds), local to this machine, with
2 CPUs. The cells are real builds in real worker processes, so the runs are tiny: the
architectures that refuse, break, hang or crash are test_matrix.py's plugin, plus one
that kills the Ray worker running its task (it would kill pytest without Ray).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from test_matrix import by_cell, isolated_registry, plugin  # noqa: F401  (plugin is a fixture)
from typer.testing import CliRunner

from segexport.bundle import sha256_file
from segexport.cli.matrix import matrix
from segexport.errors import InvalidInputError
from segexport.matrix import MatrixConfig, RaySettings, run_matrix

ray = pytest.importorskip("ray")

KILLS_ITS_RAY_WORKER = textwrap.dedent(
    '''
    """An architecture whose construction SIGKILLs the worker's parent: under Ray, the Ray worker running the task."""
    import os
    import signal
    import time

    from segexport.arch.registry import register_architecture
    from segexport.arch.unet import Unet


    class KillsRayWorker(Unet):
        def __init__(self, **kwargs):
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(60)


    register_architecture("killray", KillsRayWorker, overwrite=True)
    '''
)

@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20)
    yield
    ray.shutdown()


def invoke(argv: list[str]) -> dict:
    app = typer.Typer()
    app.command()(matrix)  # registered in segexport.cli the same way
    with isolated_registry():
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def small_matrix(plugin: str, out: Path, *extra: str, archs: str = "unet,picky,broken") -> list[str]:
    """unet passes, picky refuses resnet18, broken raises; int8 (no --calib) is n/a. No timing: nothing machine-dependent."""
    return [
        "--archs", archs, "--encoders", "resnet18", "--targets", "onnx", "--precisions", "fp32,int8", "--height", "64",
        "--width", "64", "--arch-arg", "unet:decoder_channels=(32,16,16,8,8)", "--iters", "0", "-j", "2", "--plugin", plugin,
        "--keep-bundles", "--json", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def both(cluster, plugin, tmp_path_factory):
    """The small matrix run by local workers and by Ray tasks."""
    root = tmp_path_factory.mktemp("matrix")
    with pytest.MonkeyPatch.context() as patch:  # local workers sized as for the cluster's 2 CPUs: 1 thread each at -j 2
        patch.setattr("segexport.matrix.local.available_cores", lambda: 2)
        local = invoke(small_matrix(plugin, root / "local"))
    return root, local, invoke(small_matrix(plugin, root / "ray", "--ray", "auto"))


@pytest.mark.onnx
def test_ray_tasks_give_the_table_local_workers_give(both):
    root, local, on_ray = both
    assert (root / "ray" / "matrix.md").read_text() == (root / "local" / "matrix.md").read_text()
    assert [(c["status"], c["stage"]) for c in on_ray["cells"]] == [(c["status"], c["stage"]) for c in local["cells"]]
    assert (on_ray["settings"]["executor"], on_ray["settings"]["ray_cpus"], on_ray["settings"]["jobs"]) == ("ray", 2, 2)
    assert on_ray["settings"]["threads_per_job"] == local["settings"]["threads_per_job"] == 1


@pytest.mark.onnx
def test_bundles_and_logs_come_back_from_the_node_under_out(both):
    root, _, on_ray = both
    cells = {(c["arch"], c["precision"]): c for c in on_ray["cells"]}
    unet, broken = cells[("unet", "fp32")], cells[("broken", "fp32")]
    assert unet["node"] == socket.gethostname()
    bundle = root / "ray" / "bundles" / "unet-resnet18-onnx-fp32"
    assert unet["bundle"] == str(bundle.resolve())
    digests = json.loads((bundle / "manifest.json").read_text())["sha256"]
    assert digests and {name: sha256_file(bundle / name) for name in digests} == digests
    assert broken["log"] == str(root / "ray" / "logs" / "broken-resnet18-onnx-fp32.log")
    assert "RuntimeError: deliberately broken" in Path(broken["log"]).read_text()  # the traceback, as local workers keep it


@pytest.mark.onnx
def test_ray_resume_reuses_stored_cells_without_a_task(both, plugin, tmp_path):
    root, _, on_ray = both
    shutil.copytree(root / "ray", tmp_path / "m")
    again = invoke(small_matrix(plugin, tmp_path / "m", "--ray", "auto", "--resume", archs="unet,picky"))
    before = {(c["arch"], c["precision"]): c for c in on_ray["cells"]}
    built = [c for c in again["cells"] if c["stage"] != "plan"]
    assert [(c["arch"], c["precision"]) for c in built] == [("unet", "fp32"), ("picky", "fp32")]
    assert all(c["resumed"] and c["cell_s"] == before[(c["arch"], c["precision"])]["cell_s"] for c in built)


@pytest.fixture
def killer(tmp_path) -> str:
    path = tmp_path / "kills_its_ray_worker.py"
    path.write_text(KILLS_ITS_RAY_WORKER)
    return str(path)


@pytest.mark.onnx
def test_ray_cell_whose_worker_dies_or_hangs_is_that_cells_error(cluster, plugin, killer, tmp_path):
    config = MatrixConfig(archs="hang,crash,killray", encoders="resnet18", targets="onnx", precisions="fp32", height=64, width=64,
                          plugins=[plugin, killer], jobs=2, timeout=2, iters=0, out=tmp_path / "m", ray=RaySettings("auto"))
    with isolated_registry():
        report = run_matrix(config)
    cells = by_cell(report)
    hang, crash, killed = cells[("hang", "fp32")], cells[("crash", "fp32")], cells[("killray", "fp32")]
    assert hang.status == "error" and hang.reason.startswith("timed out after 2 s during 'probe: construct the model, check the input size'")
    assert "misbehaving_archs.py" in open(hang.log).read()  # the node dumped the worker's stacks before the kill
    assert crash.status == "error" and crash.reason.startswith("worker died (exit code 3)")
    assert (killed.status, killed.stage) == ("error", "worker") and killed.reason.startswith("Ray task failed: WorkerCrashedError"), killed.reason
    assert report.complete and report.summary() == {"pass": 0, "fail": 0, "error": 3, "n/a": 0}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["logs", "matrix.json", "matrix.md"]


@pytest.mark.parametrize(
    ("argv", "modules", "fragment"),
    [
        (["--ray", "--json"], {}, "--ray needs an address: auto, local, ray://HEAD:10001 or HOST:6379; got '--json'"),
        (["--ray", "auto"], {"ray": None}, "--ray needs Ray on this machine and on every node: pip install 'segexport[ray]'"),
    ],
)
def test_ray_option_errors_say_what_to_do(tmp_path, monkeypatch, argv, modules, fragment):
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    app = typer.Typer()
    app.command()(matrix)
    base = ["--archs", "unet", "--encoders", "resnet18", "--targets", "onnx", "--out", str(tmp_path / "m")]
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        CliRunner().invoke(app, [*base, *argv], catch_exceptions=False)
    assert not (tmp_path / "m").exists()
