"""The command line: fast help, one-line errors with exit code 2, build/inspect/verify/list."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from segexport.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_help_imports_no_heavy_modules():
    code = "import sys; from segexport.cli import app; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt_rtx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["build", "unett", "resnet18"], "Did you mean 'unet'"),
        (["build", "unet", "resnet99"], "Unknown encoder 'resnet99'"),
        (["build", "unet", "resnet18", "--target", "onyx"], "Did you mean 'onnx'"),
        (["build", "unet", "resnet18", "--classes", "0"], "classes must be an integer >= 1; got 0"),
        (["build", "unet", "resnet18", "--encoder-depth", "7"], "encoder_depth 7 is out of range"),
        (["build", "unet", "resnet18", "--int8"], "int8 needs calibration data"),
        (["build", "unet", "resnet18", "--fp16", "--int8"], "exclude each other"),
        (["build", "unet", "resnet18", "--opset", "9"], "--opset 9 is not supported"),
        (["build", "unet", "resnet18", "--arch-arg", "nonsense"], "key=value"),
        (["build", "unet", "resnet18", "--arch-arg", "decoder_channels=(8,8)"], "needs exactly 5"),
        (["build", "unet", "resnet18", "--checkpoint", "missing.pth"], "does not exist"),
        (["build", "unet", "resnet18", "--checkpoint", "weights.txt"], "unknown suffix"),
        (["inspect", "."], "is not a segexport bundle"),
        (["verify", "."], "is not a segexport bundle"),
        (["list", "encoderz"], "Did you mean 'encoders'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


def test_impossible_size_names_the_sizes_that_work(capsys, tmp_path):
    code, _, err = run_cli(capsys, "build", "fpn", "resnet18", "--height", "70", "--width", "64", "--out", str(tmp_path / "b"))
    assert code == 2 and "nearest sizes that work: 64 or 96 x 64" in err


def test_output_path_that_is_a_file_is_a_clear_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "build", "unet", "resnet18", "--out", str(blocker), "--force")
    assert code == 2 and "exists and is not a directory" in err


def test_build_inspect_verify_roundtrip(capsys, tmp_path):
    out = tmp_path / "b"
    code, stdout, _ = run_cli(
        capsys, "build", "unet", "resnet18", "--height", "64", "--width", "64", "--aux-classes", "2",
        "--arch-arg", "decoder_channels=(16,16,8,8,8)", "--out", str(out), "--json",
    )
    assert code == 0
    result = json.loads(stdout)
    assert result["manifest"]["parity"]["passed"] and result["manifest"]["arch_args"]["decoder_channels"] == [16, 16, 8, 8, 8]
    code, stdout, _ = run_cli(capsys, "inspect", str(out))
    assert code == 0 and "output label" in stdout and "passed with onnxruntime-cpu" in stdout
    code, stdout, _ = run_cli(capsys, "verify", str(out))
    assert code == 0 and stdout.startswith("OK")


def test_quiet_build_prints_nothing(capsys, tmp_path):
    code, out, err = run_cli(capsys, "build", "unet", "resnet18", "--height", "64", "--width", "64", "--quiet", "--out", str(tmp_path / "b"))
    assert code == 0 and out == "" and err == ""


@pytest.mark.parametrize("what", ["archs", "encoders", "targets"])
def test_list(capsys, what):
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0
    expected = {"archs": "unet", "encoders": "resnet34", "targets": "onnx"}[what]
    assert expected in out.split()


def test_the_static_name_table_matches_the_registries():
    """The CLI answers names without torch from segexport/names.py; it must list exactly what the registries hold."""
    from segexport import names
    from segexport.arch.encoders import list_encoders
    from segexport.arch.registry import ALIASES, list_architectures
    from segexport.targets import list_targets

    assert list(names.ARCHITECTURES) == list_architectures()
    assert names.ARCHITECTURE_ALIASES == ALIASES
    assert list(names.ENCODERS) == list_encoders()
    assert list(names.TARGETS) == list_targets()


@pytest.mark.parametrize(
    ("target", "options", "fragment"),
    [
        ("trt", {"workspace": 64}, r"'workspace' is not an option of --target trt; its options: min_shape \(--min-shape\)"),
        ("onnx", {"min_shape": "1x3x64x64"}, r"'min_shape' is not an option of --target onnx; its options: none"),
        ("onnx", {"calib_count": 4}, r"--calib-count is an int8 option"),
        ("onnx", {"calib": "random"}, r"not inside target_options"),
    ],
)
def test_a_target_option_that_the_build_does_not_take_is_refused_with_what_it_takes(tmp_path, target, options, fragment):
    import segexport
    from segexport.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=fragment):
        segexport.build("unet", "resnet18", target=target, target_options=options, out=tmp_path / "b", height=32, width=32)
    assert not (tmp_path / "b").exists()


def test_target_options_become_the_targets_typed_record():
    from segexport.pipeline import BuildRequest, split_options
    from segexport.targets import get_target
    from segexport.targets.tensorrt import TensorRTOptions

    req = BuildRequest("unet", "resnet18", target="trt", precision="int8", calib="random",
                       target_options={"workspace_mb": 64, "calib_count": 4, "opt_shape": None})  # fmt: skip
    options, calibration = split_options(get_target("trt"), req)
    assert options == TensorRTOptions(workspace_mb=64)
    assert (calibration.source, calibration.count) == ("random", 4)
