"""Every gate's failure path, through the installed ``segexport`` command, as users and CI call it.

Each test runs the console script in a subprocess and asserts its exit code: 0 when
everything holds, 2 for bad input and failed checks (parity, hashes, digests), 1 for
bugs, 130 for Ctrl-C, 143 for SIGTERM. Bad input gets one ``error:`` line and no
traceback; nothing half-written is left where a user would pick it up.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cases import SEGEXPORT, cli, one_error_line

TINY = ["--height", "64", "--width", "64", "--arch-arg", "decoder_channels=(16,16,8,8,8)"]


def build_cli(out: Path, *extra: str, arch: str = "unet", encoder: str = "resnet18") -> subprocess.CompletedProcess[str]:
    return cli("build", arch, encoder, *TINY, "--out", str(out), "-q", *extra)


@pytest.fixture(scope="module")
def good_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One small fp32 ONNX bundle with mask and label, built with progress output; tests tamper with copies of it."""
    out = tmp_path_factory.mktemp("good") / "bundle"
    proc = cli("build", "unet", "resnet18", *TINY, "--out", str(out), "--aux-classes", "2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def good_bundle(good_build: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    return good_build[0]


@pytest.fixture
def bundle(good_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(good_bundle, copy)
    return copy


def edit_manifest(bundle: Path, edit, *, rehash: bool = False, redigest: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Change the manifest as an attacker or a careless hand would; optionally recompute hashes and digest."""
    from segexport.digests import sha256_file
    from segexport.manifest import manifest_digest

    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if rehash:
        manifest["sha256"] = {name: sha256_file(bundle / name) for name in manifest["sha256"]}
    if redigest:
        manifest["digest"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def scale_first_conv(bundle: Path, factor: float) -> None:
    """A wrong artifact that still runs: the first convolution's weights multiplied by ``factor``."""
    import onnx
    from onnx import numpy_helper

    path = bundle / "model.onnx"
    graph = onnx.load(str(path))
    names = {n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    init = next(t for t in graph.graph.initializer if t.name in names)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(graph, str(path))


# --------------------------------------------------------------------------- verify: the verdict is true


def test_verify_of_an_untouched_bundle_exits_0_and_names_its_digest(good_bundle):
    proc = cli("verify", str(good_bundle))
    digest = json.loads((good_bundle / "manifest.json").read_text())["digest"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK") and digest in proc.stdout


def test_verify_of_a_changed_artifact_exits_2(bundle):
    with open(bundle / "model.onnx", "r+b") as f:
        f.seek(-64, os.SEEK_END)
        f.write(b"\0" * 64)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2 and "files changed since the build: model.onnx" in proc.stderr


@pytest.mark.parametrize("command", ["verify", "bench"])
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_truncated_or_missing_artifact_exits_2_naming_it(bundle, damage, command):
    artifact = bundle / "model.onnx"
    if damage == "missing":
        artifact.unlink()
    else:
        artifact.write_bytes(artifact.read_bytes()[:100])
    proc = cli(command, str(bundle), *(["--iters", "1", "--warmup", "0"] if command == "bench" else []))
    assert proc.returncode == 2 and "model.onnx" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_verify_of_a_hand_loosened_tolerance_is_refused_as_tampered(bundle):
    edit_manifest(bundle, lambda m: m["parity"].update(atol=10.0))
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "was edited after the build")


def test_verify_of_a_replaced_artifact_with_its_hash_updated_is_refused_as_tampered(bundle):
    scale_first_conv(bundle, 3.0)
    edit_manifest(bundle, lambda m: None, rehash=True)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "was edited after the build")


def test_verify_reruns_parity_and_exits_2_when_a_consistent_bundle_is_wrong(bundle):
    """Hashes and digest recomputed by hand: only the parity re-run can catch the wrong weights."""
    scale_first_conv(bundle, 3.0)
    edit_manifest(bundle, lambda m: None, rehash=True, redigest=True)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2 and proc.stderr.startswith("FAILED"), proc.stdout + proc.stderr


def test_expect_digest_pins_a_bundle_to_what_the_build_printed(bundle):
    """Even a bundle re-signed by hand is refused when the deployment pipeline pinned the built digest."""
    built = json.loads((bundle / "manifest.json").read_text())["digest"]
    assert cli("verify", str(bundle), "--expect-digest", built).returncode == 0
    scale_first_conv(bundle, 3.0)
    edit_manifest(bundle, lambda m: m["parity"].update(atol=10.0, rtol=10.0), rehash=True, redigest=True)
    proc = cli("verify", str(bundle), "--expect-digest", built)
    assert proc.returncode == 2
    one_error_line(proc, f"not the expected {built}")


def test_build_prints_the_digest_that_verify_checks(good_build):
    out, proc = good_build
    digest = json.loads((out / "manifest.json").read_text())["digest"]
    assert digest.startswith("sha256:") and f"(digest {digest})" in proc.stderr


# --------------------------------------------------------------------------- manifests that lie about paths


ESCAPES = {
    "artifact climbs out": lambda m: m.update(artifact="../outside.onnx"),
    "artifact is absolute": lambda m: m.update(artifact="/etc/hostname"),
    "reference climbs out": lambda m: m.update(reference="../../ref.npz"),
    "a hashed file climbs out": lambda m: m["sha256"].update({"../../etc/hostname": "0" * 64}),
}


@pytest.mark.parametrize("command", ["verify", "inspect", "bench"])
@pytest.mark.parametrize("escape", list(ESCAPES))
def test_manifest_paths_outside_the_bundle_are_refused(bundle, command, escape):
    edit_manifest(bundle, ESCAPES[escape], redigest=True)
    proc = cli(command, str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "outside the bundle")


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path, command):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle / "model.onnx", outside)
    (bundle / "model.onnx").symlink_to(outside)
    proc = cli(command, str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "symlink that leads outside the bundle")


# --------------------------------------------------------------------------- unreadable bundles


@pytest.mark.parametrize("command", ["verify", "inspect", "bench"])
@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("not json", "is not valid JSON"),
        ("a list", "not a manifest object"),
        ("no parity", "lacks the keys parity"),
        ("future format", "has format_version 99"),
    ],
)
def test_a_broken_manifest_is_one_line_naming_the_file(bundle, command, damage, fragment):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "not json":
        path.write_text(path.read_text()[:-20])
    elif damage == "a list":
        path.write_text("[1, 2]")
    elif damage == "no parity":
        del manifest["parity"]
        path.write_text(json.dumps(manifest))
    else:
        manifest["format_version"] = 99
        path.write_text(json.dumps(manifest))
    proc = cli(command, str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, fragment)


@pytest.mark.parametrize("content", ["garbage", "pickled object"])
def test_a_corrupt_reference_is_one_line_naming_it(bundle, content):
    ref = bundle / "reference.npz"
    if content == "garbage":
        ref.write_bytes(b"PK\x03\x04 not really a zip")
    else:  # an object array would need allow_pickle: it must be refused, never unpickled
        with open(ref, "wb") as f:
            np.savez(f, input_0=np.array([object()], dtype=object))
    edit_manifest(bundle, lambda m: None, rehash=True, redigest=True)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "reference.npz")


def test_a_policy_field_of_the_wrong_type_is_refused(bundle):
    edit_manifest(bundle, lambda m: m["parity"].update(min_agreement="high"), redigest=True)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "invalid min_agreement")


# --------------------------------------------------------------------------- inputs that carry code


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.pth"
    with open(checkpoint, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(marker))}, f)
    proc = build_cli(tmp_path / "b", "--checkpoint", str(checkpoint))
    assert proc.returncode == 2
    one_error_line(proc, "weights_only=True")
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_arch_arg_values_are_literals_never_code(tmp_path):
    marker = tmp_path / "pwned"
    proc = build_cli(tmp_path / "b", "--arch-arg", f"decoder_channels=__import__('os').system('touch {marker}')")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------- where the bundle goes


def test_out_below_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = build_cli(blocker / "bundle")
    assert proc.returncode == 2
    one_error_line(proc, "is a file, not a directory")


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=256k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def read_only_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "ro,size=64k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing(small_disk):
    proc = build_cli(small_disk / "bundle")
    assert proc.returncode == 2
    one_error_line(proc, "Cannot write the bundle")
    assert list(small_disk.iterdir()) == []


def test_an_unwritable_folder_is_one_line_and_leaves_nothing(read_only_disk):
    proc = build_cli(read_only_disk / "bundle")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "read-only" in proc.stderr.lower() or "permission denied" in proc.stderr.lower(), proc.stderr
    assert list(read_only_disk.iterdir()) == []


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_build_removes_its_staging_folder(tmp_path, sig, code):
    out = tmp_path / "bundle"
    proc = subprocess.Popen([SEGEXPORT, "build", "unet", "resnet18", *TINY, "--out", str(out), "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not [n for n in _leftovers(tmp_path, "bundle") if n.endswith(".tmp")]:  # export has started
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before its staging folder appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path, "bundle") == []


def test_the_next_build_cleans_what_a_killed_build_left(tmp_path):
    out = tmp_path / "bundle"
    killed = tmp_path / ".bundle.4242_abcd1234.tmp"  # what SIGKILL leaves: a staging folder nobody removes
    killed.mkdir()
    (killed / "model.onnx").write_bytes(b"half")
    (tmp_path / ".bundle.4243_ef567890.tmp.done").mkdir()
    proc = build_cli(out)
    assert proc.returncode == 0, proc.stderr
    assert _leftovers(tmp_path, "bundle") == []
    assert cli("verify", str(out)).returncode == 0


def test_two_builds_racing_to_one_out_give_one_complete_bundle(tmp_path):
    out = tmp_path / "bundle"
    argv = [SEGEXPORT, "build", "unet", "resnet18", *TINY, "--out", str(out), "-q"]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Another build is writing" in loser or "already exists" in loser, loser
    assert cli("verify", str(out)).returncode == 0
    assert _leftovers(tmp_path, "bundle") == []


# --------------------------------------------------------------------------- exit codes of every command


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["build", "unett", "resnet34"], "Did you mean 'unet'"),
        (["build", "unet", "resnet99"], "Unknown encoder 'resnet99'"),
        (["build", "unet", "resnet34", "--target", "onyx"], "Did you mean 'onnx'"),
        (["build", "unet", "resnet34", "--calib-count", "4"], "--calib-count is an int8 option; add --int8"),
        (["build", "unet", "resnet34", "--workspace", "512"], "'workspace_mb' is not an option of --target onnx"),
        (["list", "encoderz"], "Did you mean 'encoders'"),
        (["inspect", "."], "is not a segexport bundle"),
        (["verify", "."], "is not a segexport bundle"),
        (["bench", "."], "is not a segexport bundle"),
        (["matrix", "--archs", "unett", "--encoders", "resnet18", "--targets", "onnx", "--precisions", "fp32"], "unett"),
    ],
)
def test_every_command_exits_2_on_bad_input_with_one_line(tmp_path, argv, fragment):
    proc = subprocess.run([SEGEXPORT, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc, fragment)


def test_a_malformed_number_is_a_usage_error_exit_2():
    proc = cli("build", "unet", "resnet34", "--height", "tall")
    assert proc.returncode == 2 and "tall" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_names_and_list_answer_without_importing_torch_timm_or_onnx():
    probe = (
        "import sys\n"
        "from segexport.cli import main\n"
        "for argv in (['build', 'unett', 'resnet34'], ['build', 'unet', 'resnet99'], ['list', 'encoders'], ['list', 'archs']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'timm', 'onnx', 'onnxruntime') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def _inject(tmp_path: Path, code: str) -> dict[str, str]:
    """A sitecustomize that patches segexport in the subprocess: fault injection for paths users cannot reach."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(tmp_path / "inject")}


def test_a_bug_exits_1_with_a_hint_and_debug_shows_the_traceback(tmp_path):
    env = _inject(
        tmp_path,
        "import segexport.pipeline as p\n"
        "def broken(*a, **k):\n    raise ZeroDivisionError('simulated bug')\n"
        "p.run_build = broken\n",
    )
    proc = cli("build", "unet", "resnet18", "--out", str(tmp_path / "b"), env=env)
    assert proc.returncode == 1
    one_error_line(proc, "unexpected ZeroDivisionError: simulated bug (rerun with --debug")
    debug = cli("--debug", "build", "unet", "resnet18", "--out", str(tmp_path / "b"), env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_more_than_a_hundred_progress_lines_are_numbered_on(tmp_path):
    env = _inject(
        tmp_path,
        "import segexport.pipeline as p\n"
        "import types\n"
        "class B:\n    path = 'x'\n    manifest = types.SimpleNamespace(digest='sha256:0', build={})\n"
        "def chatty(req, progress=None):\n    [progress(f'step {i}') for i in range(150)]\n    return B()\n"
        "p.run_build = chatty\n",
    )
    proc = cli("build", "unet", "resnet18", "--out", str(tmp_path / "b"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[150] step 149" in proc.stderr
