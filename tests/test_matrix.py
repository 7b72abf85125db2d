"""`segexport matrix`: the table, the JSON, n/a and error cells, timeouts, crashes and --resume.

Workers are real processes running real builds, so the runs here are few and tiny:
one small matrix (a module fixture) that the table/JSON tests share, one run of a
hanging and a crashing architecture, and one --resume run from the command line.
The architectures that refuse, break, hang or crash come from a plugin file the
workers import, exactly as a user's custom architectures would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from cases import TINY
from typer.testing import CliRunner

from segexport.cli.matrix import matrix
from segexport.errors import ExportError, InvalidInputError, ParityError
from segexport.matrix import (
    Cell,
    CellResult,
    MatrixConfig,
    Plan,
    RowJob,
    calib_fingerprint,
    cell_key,
    cell_text,
    default_jobs,
    parse_arch_args,
    run_cell,
    run_cells,
    run_matrix,
    split_names,
    threads_per_job,
)

GIB = 2**30

PLUGIN = textwrap.dedent(
    '''
    """Architectures that misbehave on purpose, for the matrix tests."""
    import os
    import time

    from segexport.arch.registry import register_architecture
    from segexport.arch.unet import Unet
    from segexport.errors import ExportError, InvalidInputError, ParityError


    class Picky(Unet):
        def __init__(self, encoder_name="mit_b0", **kwargs):
            if encoder_name != "mit_b0":
                raise InvalidInputError(f"Picky takes mit_b0 only; got {encoder_name!r}.")
            super().__init__(encoder_name=encoder_name, **kwargs)


    class Broken(Unet):
        def __init__(self, **kwargs):
            raise RuntimeError("deliberately broken")


    class Hang(Unet):
        def __init__(self, **kwargs):
            time.sleep(3600)


    class Crash(Unet):
        def __init__(self, **kwargs):
            os._exit(3)


    class CrashWhenScripted(Unet):
        """Exports to ONNX; kills its process when TorchScript traces it."""

        def forward(self, x):
            import torch

            if torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
                os._exit(4)
            return super().forward(x)


    for name, cls in {"picky": Picky, "broken": Broken, "hang": Hang, "crash": Crash, "tscrash": CrashWhenScripted}.items():
        register_architecture(name, cls, overwrite=True)
    '''
)


@contextmanager
def isolated_registry() -> Iterator[None]:
    """Plugins register architectures in this process too; take them out again afterwards."""
    from segexport.arch import registry

    saved = dict(registry.ARCHITECTURES)
    modules = set(sys.modules)
    try:
        yield
    finally:
        registry.ARCHITECTURES.clear()
        registry.ARCHITECTURES.update(saved)
        for name in set(sys.modules) - modules:
            if name.startswith("_segexport_plugin_"):
                del sys.modules[name]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("plugin") / "misbehaving_archs.py"
    path.write_text(PLUGIN)
    return str(path)


@pytest.fixture(scope="module")
def small_matrix(tmp_path_factory, plugin):
    """unet passes, picky refuses resnet18, broken raises; fp16 and int8 (no --calib) are n/a on onnx."""
    out = tmp_path_factory.mktemp("matrix")
    lines: list[str] = []
    config = MatrixConfig(
        archs="unet,picky,broken",
        encoders=["resnet18"],
        targets=["onnx"],
        precisions="fp32,fp16,int8",
        height=64,
        width=64,
        arch_args={"unet": TINY["unet"]},
        plugins=[plugin],
        jobs=2,
        timeout=600,
        iters=3,
        out=out,
        keep_bundles=True,
    )
    with isolated_registry():
        report = run_matrix(config, progress=lines.append)
    return report, out, lines


def by_cell(report) -> dict[tuple[str, str], CellResult]:
    return {(r.cell.arch, r.cell.precision): r for r in report.cells}


# --------------------------------------------------------------------------- the real runs


@pytest.mark.onnx
def test_markdown_table_has_a_row_per_model_and_a_column_per_target_precision(small_matrix):
    report, out, _ = small_matrix
    table = (out / "matrix.md").read_text()
    assert table.strip() == report.markdown()
    lines = table.splitlines()
    assert lines[0] == "| arch | encoder | onnx fp32 |"  # fp16 and int8 apply to no row here: listed below instead
    rows = {line.split(" | ")[0].lstrip("| "): [c.strip(" |") for c in line.split(" | ")[2:]] for line in lines[2:4]}
    assert list(rows) == ["unet", "broken"]  # picky refuses the encoder: its row is listed below
    assert rows["unet"][0].startswith("✓ ") and rows["unet"][0].endswith(" ms")
    assert rows["broken"][0] == "✗ error: RuntimeError: deliberately broken"
    assert lines[4:8] == [
        "",
        "- onnx fp16: n/a (onnx offers fp32, int8)",
        "- onnx int8: n/a (int8 needs --calib)",
        "- picky / resnet18: n/a (Picky takes mit_b0 only; got 'resnet18'.)",
    ]
    assert "9 cells: 1 ✓, 0 ✗ parity, 1 error, 7 n/a." in table
    assert "torch " in table.splitlines()[-1] and "onnxruntime " in table.splitlines()[-1]


@pytest.mark.onnx
def test_json_holds_every_cell_with_parity_timing_and_status(small_matrix):
    report, out, _ = small_matrix
    data = json.loads((out / "matrix.json").read_text())
    assert data["complete"] and data["summary"] == {"pass": 1, "fail": 0, "error": 1, "n/a": 7}
    assert len(data["cells"]) == 9 and all(c["key"] for c in data["cells"])
    cells = by_cell(report)
    unet = cells[("unet", "fp32")]
    assert unet.parity["passed"] and unet.mask_parity["max_abs"] < 1e-4
    assert unet.build_s > 0 and unet.cell_s >= unet.build_s and unet.latency_ms["median"] > 0
    assert unet.bench_device == "cpu" and unet.threads == threads_per_job(2) and unet.peak_rss_mib > 0
    assert [step for _, step in unet.steps][-1].startswith("time up to 3 runs") and unet.latency_ms["runs"] == 3
    assert (out / "bundles" / unet.cell.id / "manifest.json").is_file()  # --keep-bundles
    assert unet.log is None  # logs of passing cells are not kept
    picky = cells[("picky", "fp32")]
    assert (picky.status, picky.stage) == ("n/a", "model")
    broken = cells[("broken", "fp32")]
    assert (broken.status, broken.stage) == ("error", "build")
    assert "RuntimeError: deliberately broken" in open(broken.log).read()  # the traceback is kept for errors
    assert {cells[(a, p)].stage for a in ("unet", "picky", "broken") for p in ("fp16", "int8")} == {"plan"}
    assert not list(out.glob(".work-*"))


@pytest.mark.onnx
def test_progress_reports_done_failed_and_running_counts(small_matrix):
    _, _, lines = small_matrix
    assert lines[0].startswith("matrix: 9 cells (3 archs x 1 encoders x 3 target/precision); 6 decided up front")
    finished = [line for line in lines if line.startswith("[")]
    assert len(finished) == 3 and finished[-1].endswith("(done 9, failed 1, running 0)")
    assert re.fullmatch(r"matrix: \d+\.\d min wall; the 3 cells built took \d+ s in their workers \(.*export \d+.*\)", lines[-1]), lines[-1]


@pytest.mark.onnx
def test_hanging_cell_times_out_and_crashing_cell_is_an_error(tmp_path, plugin):
    config = MatrixConfig(archs="hang,crash", encoders="resnet18", targets="onnx", precisions="fp32", height=64, width=64,
                          plugins=[plugin], jobs=2, timeout=2, iters=0, out=tmp_path)
    with isolated_registry():
        report = run_matrix(config)
    cells = by_cell(report)
    hang, crash = cells[("hang", "fp32")], cells[("crash", "fp32")]
    assert hang.status == "error" and hang.reason.startswith("timed out after 2 s during 'probe: construct the model, check the input size'")
    assert "misbehaving_archs.py" in open(hang.log).read()  # the worker's stacks were dumped before the kill
    assert crash.status == "error" and crash.reason.startswith("worker died (exit code 3)")
    assert "✗ error: timed out after 2 s" in report.markdown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "matrix.json", "matrix.md"]  # no bundles kept


@pytest.mark.onnx
def test_a_rows_cells_share_one_worker_and_a_crash_costs_only_its_cell(tmp_path, plugin):
    config = MatrixConfig(archs="tscrash", encoders="resnet18", targets="torchscript,onnx,trt", precisions="fp32,int8", height=64,
                          width=64, arch_args={"tscrash": TINY["unet"]}, calib="random", plugins=[plugin], jobs=1, iters=0, out=tmp_path)
    with isolated_registry():
        report = run_matrix(config)
    cells = {(r.cell.target, r.cell.precision): r for r in report.cells}
    crashed, fp32, int8 = cells[("torchscript", "fp32")], cells[("onnx", "fp32")], cells[("onnx", "int8")]
    assert crashed.status == "error" and crashed.reason.startswith("worker died (exit code 4) during 'export to torchscript")
    assert "export to torchscript" in open(crashed.log).read()  # the cell's own log
    assert (fp32.status, int8.status) == ("pass", "pass")  # built by a fresh worker after the crash
    assert fp32.shared == [] and int8.shared == ["model", "onnx graph"]  # one worker for the row: one model, one export
    trt_int8 = cells[("trt", "int8")]
    if trt_int8.status != "n/a":  # TensorRT installed: its int8 form calibrates the same graph, so it takes the ranges too
        assert trt_int8.status == "pass" and trt_int8.shared == ["calibration ranges", "model", "onnx graph", "reference"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["tscrash-resnet18-torchscript-fp32.log"]
    seconds = json.loads((tmp_path / "matrix.json").read_text())["seconds"]  # where the time went, by build step
    assert {"export", "validate", "reference", "other"} <= set(seconds) and seconds["export"] > 0
    assert seconds["cells"] == pytest.approx(sum(r.cell_s for r in report.cells if r.cell_s is not None), abs=0.1)
    assert seconds["cells"] == pytest.approx(sum(v for k, v in seconds.items() if k != "cells"), abs=0.5)


@pytest.mark.onnx
def test_resume_from_the_command_line_reuses_unchanged_cells(small_matrix, plugin, tmp_path):
    report, out, _ = small_matrix
    shutil.copytree(out, tmp_path / "m")
    app = typer.Typer()
    app.command()(matrix)  # registered in segexport.cli the same way
    argv = [
        "--archs", "unet,picky", "--encoders", "resnet18", "--targets", "onnx", "--precisions", "fp32,int8",
        "--height", "64", "--width", "64", "--arch-arg", "unet:decoder_channels=(32,16,16,8,8)",
        "--plugin", plugin, "-j", "2", "--out", str(tmp_path / "m"), "--resume", "--json",
    ]
    with isolated_registry():
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # --json: no progress
    data = json.loads(result.stdout)
    cells = {(c["arch"], c["precision"]): c for c in data["cells"]}
    assert set(cells) == {("unet", "fp32"), ("unet", "int8"), ("picky", "fp32"), ("picky", "int8")}
    before = by_cell(report)
    for arch in ("unet", "picky"):  # nothing changed: no worker ran, the stored results came back
        assert cells[(arch, "fp32")]["resumed"]
        assert cells[(arch, "fp32")]["cell_s"] == before[(arch, "fp32")].cell_s
    assert not cells[("unet", "int8")]["resumed"] and cells[("unet", "int8")]["stage"] == "plan"
    assert (tmp_path / "m" / "matrix.md").read_text().startswith("| arch | encoder | onnx fp32 |\n")


@pytest.mark.onnx
def test_rows_build_from_their_trained_checkpoint(tmp_path):
    import numpy as np
    import torch

    import segexport

    torch.manual_seed(7)
    trained = segexport.create_model("unet", "resnet18", encoder_weights=None, classes=2, **TINY["unet"])
    (tmp_path / "weights").mkdir()
    torch.save(trained.state_dict(), tmp_path / "weights" / "unet-resnet18.pth")
    config = MatrixConfig(archs="unet", encoders="resnet18", targets="onnx", precisions="fp32", height=64, width=64,
                          arch_args={"unet": TINY["unet"]}, checkpoints=tmp_path / "weights", classes=2, jobs=1, iters=0,
                          out=tmp_path / "m", keep_bundles=True)  # fmt: skip
    report = run_matrix(config)
    cell = by_cell(report)[("unet", "fp32")]
    assert cell.status == "pass", cell.reason
    manifest = json.loads((Path(cell.bundle) / "manifest.json").read_text())
    assert manifest["export"]["checkpoint"] == "unet-resnet18.pth" and manifest["classes"] == 2
    with np.load(Path(cell.bundle) / "reference.npz") as ref, torch.no_grad():  # the eager reference is the trained model
        expected = trained.eval()(torch.from_numpy(ref["input_0"])).numpy()
        assert abs(ref["output_0_mask"] - expected).max() < 1e-4
    assert "2 classes, trained weights (1 rows, from --checkpoints)" in report.markdown()
    assert report.settings["checkpoints"] == {"unet-resnet18": "unet-resnet18.pth"}


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        (None, "is not a folder"),
        ([], "holds no file for any row; name them <arch>-<encoder>.pth (e.g. unet-resnet18.pth)"),
        (["unet-resnet18.pth", "unet-resnet18.safetensors"], "holds 2 files for unet-resnet18"),
    ],
)
def test_bad_checkpoints_folder_is_refused_before_any_work(tmp_path, files, fragment):
    folder = tmp_path / "weights"
    if files is not None:
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
    config = MatrixConfig(archs="unet", encoders="resnet18", targets="onnx", checkpoints=folder, out=tmp_path / "m")
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        run_matrix(config)
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- planning and formatting, no workers


def test_import_leaves_torch_ray_and_the_cli_out_so_help_stays_fast():
    heavy = "('torch', 'onnx', 'onnxruntime', 'numpy', 'ray', 'typer', 'segexport.cli')"
    code = f"import sys, segexport.matrix; print([m for m in {heavy} if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


REPORT = {"precision": "fp16", "outputs": [{"name": "mask", "max_abs": 0.31, "agreement": 0.9712}], "passed": False}


def _fail_parity(req, progress, reuse=None):
    failed = Path(req.out).with_name(Path(req.out).name + ".failed")
    failed.mkdir(parents=True)
    (failed / "report.json").write_text(json.dumps(REPORT))
    raise ParityError(f"Parity check failed (...); report kept in {failed}/report.json")


def _raise(exc):
    def fake(req, progress, reuse=None):
        raise exc

    return fake


@pytest.mark.parametrize(
    ("fake_build", "status", "reason"),
    [
        (_fail_parity, "fail", "parity: max abs 3.1e-01, agreement 97.12%"),
        (_raise(ExportError("torch.onnx.export failed: unsupported op")), "error", "torch.onnx.export failed: unsupported op"),
        (_raise(KeyError("mask")), "error", "KeyError: 'mask'"),
        (_raise(InvalidInputError("TensorRT fp16 needs a GPU")), "n/a", "TensorRT fp16 needs a GPU"),
    ],
)
def test_build_outcome_maps_to_cell_status(tmp_path, monkeypatch, fake_build, status, reason):
    monkeypatch.setattr("segexport.pipeline.run_build", fake_build)
    cell = Cell("unet", "resnet18", "onnx", "fp16")
    job = RowJob((cell,), height=64, width=64, classes=1, arch_args=TINY["unet"], calib=None, checkpoint=None, plugins=(),
                 threads=1, iters=0, bundle_root=str(tmp_path / "b"), log_dir=str(tmp_path / "logs"))
    result = run_cell(job, cell)
    assert (result.status, result.reason, result.stage) == (status, reason, "build")
    assert (result.parity == REPORT) == (status == "fail")


def test_a_cell_is_timed_from_when_its_worker_began_it_not_from_when_the_supervisor_noticed(tmp_path):
    import time

    from segexport.matrix.local import LocalWorker
    from segexport.matrix.worker import RESULT_SUFFIX, STARTED_SUFFIX

    cell = Cell("unet", "resnet18", "onnx", "fp32")
    job = RowJob((cell,), 64, 64, 1, {}, None, None, (), 1, 0, str(tmp_path / "b"), str(tmp_path / "logs"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        worker = LocalWorker(job, sleeper, time.monotonic(), tmp_path, tmp_path / "worker.log")
        (tmp_path / f"{cell.id}{STARTED_SUFFIX}").write_text(repr(time.time() - 3.0))  # began 3 s before any poll
        (tmp_path / f"{cell.id}{RESULT_SUFFIX}").write_text(json.dumps(CellResult(cell, "pass", None, build_s=2.9).to_dict()))
        (done,), gone = worker.check(timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not gone and done.cell_s >= done.build_s and 3.0 <= done.cell_s < 10


class FakeExecutor:
    """One group at a time; the picky row's model refuses its encoder, everything else errors."""

    jobs, threads, gpu_apart = 1, 1, True

    def __init__(self):
        self.started: list[tuple[Cell, ...]] = []
        self.running: list[Cell] = []

    def fits(self, cells):
        return not self.running

    def busy(self):
        return len(self.running)

    def start(self, cells):
        self.started.append(tuple(cells))
        self.running.extend(cells)

    def poll(self):
        done, self.running = self.running, []
        return [CellResult(c, "n/a", "Picky takes mit_b0 only", stage="model") if c.arch == "picky"
                else CellResult(c, "error", "boom", stage="build") for c in done]


def test_refused_encoder_answers_its_whole_row_without_more_workers():
    picky_fp32, picky_int8, unet_fp32, unet_int8 = (Cell(a, "resnet18", "onnx", p) for a in ("picky", "unet") for p in ("fp32", "int8"))
    executor = FakeExecutor()
    results: dict[Cell, CellResult] = {}
    groups = [(picky_fp32,), (unet_fp32, unet_int8), (picky_int8,)]  # a row split in two groups (as by GPU use)
    run_cells(groups, executor, results, lambda r: results.__setitem__(r.cell, r), lambda _m: None)
    assert executor.started == [(picky_fp32,), (unet_fp32, unet_int8)]
    int8 = results[picky_int8]
    assert (int8.status, int8.reason, int8.decided_by) == ("n/a", "Picky takes mit_b0 only", "picky-resnet18-onnx-fp32")


def test_planner_groups_a_rows_cells_for_one_worker_with_its_gpu_cells_apart_when_asked():
    plan = SimpleNamespace(uses_gpu=lambda c: c.target == "trt")
    cells = [Cell(a, "resnet18", t, p) for a in ("unet", "fpn") for t in ("onnx", "trt") for p in ("fp32", "int8")]
    assert [[c.id for c in g] for g in Plan.groups(plan, cells)] == [
        ["unet-resnet18-onnx-fp32", "unet-resnet18-onnx-int8", "unet-resnet18-trt-fp32", "unet-resnet18-trt-int8"],
        ["fpn-resnet18-onnx-fp32", "fpn-resnet18-onnx-int8", "fpn-resnet18-trt-fp32", "fpn-resnet18-trt-int8"],
    ]  # fmt: skip
    groups = Plan.groups(plan, cells, gpu_apart=True)
    assert [[c.id for c in g] for g in groups] == [
        ["unet-resnet18-onnx-fp32", "unet-resnet18-onnx-int8"], ["unet-resnet18-trt-fp32", "unet-resnet18-trt-int8"],
        ["fpn-resnet18-onnx-fp32", "fpn-resnet18-onnx-int8"], ["fpn-resnet18-trt-fp32", "fpn-resnet18-trt-int8"],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="one row"):
        RowJob((cells[0], cells[4]), 64, 64, 1, {}, None, None, (), 1, 0, "b", "logs")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"archs": "unett"}, "Did you mean 'unet'"),
        ({"encoders": "resnet99"}, "Unknown encoder 'resnet99'"),
        ({"encoders": "all"}, "'all' is not offered"),
        ({"encoders": "tu-resnet18x"}, "Unknown timm model 'resnet18x' in encoder 'tu-resnet18x'. Did you mean 'resnet18'"),
        ({"targets": "onyx"}, "Did you mean 'onnx'"),
        ({"precisions": "fp8"}, "Unknown precision 'fp8'"),
        ({"calib": "no/such/folder"}, "--calib 'no/such/folder' does not exist"),
        ({"arch_args": {"unett": {}}}, "Did you mean 'unet'"),
        ({"plugins": ["no_such_plugin_module"]}, "no module of that name"),
        ({"plugins": ["missing_plugin.py"]}, "no such file"),
        ({"timeout": 0}, "--timeout must be > 0"),
        ({"jobs": 0}, "-j must be an integer >= 1; got 0"),
        ({"height": 0}, "height must be an integer >= 1"),
        ({"iters": -1}, "--iters must be >= 0"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, monkeypatch, changes, fragment):
    monkeypatch.chdir(tmp_path)
    config = MatrixConfig(**{"archs": "unet", "encoders": "resnet18", "targets": "onnx", "out": tmp_path / "m", **changes})
    with pytest.raises(InvalidInputError, match=fragment):
        run_matrix(config)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["decoder_channels=(8,8,8,8,8)"], {"*": {"decoder_channels": (8, 8, 8, 8, 8)}}),
        (["unet:decoder_channels=[8,8]", "FPN:decoder_dropout=0.1"], {"unet": {"decoder_channels": [8, 8]}, "fpn": {"decoder_dropout": 0.1}}),
        (["unet:activation=sigmoid"], {"unet": {"activation": "sigmoid"}}),
    ],
)
def test_arch_args_apply_to_one_architecture_or_all(items, expected):
    assert parse_arch_args(items) == expected


@pytest.mark.parametrize("item", ["nonsense", ":decoder_channels=8"])
def test_malformed_arch_arg_is_rejected(item):
    with pytest.raises(InvalidInputError, match=r"\[ARCH:\]key=value"):
        parse_arch_args([item])


@pytest.mark.parametrize(
    ("cores", "memory", "jobs", "threads"),
    [(2, 16 * GIB, 1, 2), (16, 64 * GIB, 8, 2), (16, 7 * GIB, 2, 8), (1, None, 1, 1), (64, None, 32, 2)],
)
def test_default_jobs_fit_cores_and_memory(cores, memory, jobs, threads):
    assert default_jobs(cores, memory) == jobs
    assert threads_per_job(jobs, cores) == threads


@pytest.mark.parametrize(("value", "expected"), [("all", None), (None, None), ("a, b,a", ["a", "b"]), (["x", "y"], ["x", "y"])])
def test_split_names(value, expected):
    assert split_names(value) == expected


def test_cell_key_changes_with_every_input_it_depends_on(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.png").write_bytes(b"1")
    versions = {"torch": "2.15.0", "onnxruntime": "1.31.1"}
    fp32, int8 = Cell("unet", "resnet18", "onnx", "fp32"), Cell("unet", "resnet18", "onnx", "int8")
    base = {"arch_args": {"decoder_channels": [8] * 5}, "height": 64, "width": 64, "calib": calib_fingerprint(str(calib)),
            "versions": versions, "plugins": []}
    changed = [
        {"arch_args": {"decoder_channels": [16] * 5}},
        {"height": 96},
        {"versions": {**versions, "onnxruntime": "1.32.0"}},
        {"versions": {**versions, "tensorrt": "10.13"}},
        {"plugins": ["my_archs.py:0123"]},
        {"checkpoint": "0123456789abcdef"},
        {"classes": 3},
    ]
    for cell in (fp32, int8):
        assert cell_key(cell, **base) == cell_key(cell, **dict(base))
        assert all(cell_key(cell, **{**base, **change}) != cell_key(cell, **base) for change in changed)
    (calib / "b.png").write_bytes(b"2")  # the calibration set only matters to int8 cells
    new_calib = {**base, "calib": calib_fingerprint(str(calib))}
    assert cell_key(int8, **new_calib) != cell_key(int8, **base) and cell_key(fp32, **new_calib) == cell_key(fp32, **base)
    assert cell_key(fp32, **base) != cell_key(int8, **base)


def _result(status: str, precision: str = "fp32", **kw) -> CellResult:
    return CellResult(Cell("unet", "resnet18", "onnx", precision), status, **kw)


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (_result("pass", parity={"outputs": [{"name": "mask", "max_abs": 3.2e-6, "agreement": 1.0}]}, latency_ms={"median": 1.234}),
         "✓ 3e-06 · 1.23 ms"),
        (_result("pass", parity={"outputs": [{"name": "mask", "max_abs": 5e-4}]}, latency_ms={"median": 1602.4}), "✓ 5e-04 · 1602 ms"),
        (_result("pass", "int8", parity={"outputs": [{"name": "mask", "max_abs": 0.05, "agreement": 0.9912}]}), "✓ 5e-02 · 99.12%"),
        (_result("fail", reason="parity: max abs 3.1e-01"), "✗ parity: max abs 3.1e-01"),
        (_result("error", reason="a | b\nc"), "✗ error: a \\| b c"),
        (_result("error", reason="x" * 200), "✗ error: " + "x" * 79 + "…"),
        (_result("n/a", reason="int8 needs --calib"), "n/a (int8 needs --calib)"),
    ],
)
def test_cell_text(result, text):
    assert cell_text(result) == text
