"""`segexport build --checkpoint FOLDER`: an SMP save_pretrained folder is all a build needs, through the installed command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import SEGEXPORT

smp = pytest.importorskip("segmentation_models_pytorch")
pytestmark = [pytest.mark.smp, pytest.mark.onnx]


@pytest.fixture(scope="module")
def smp_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    model = smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_channels=(16, 16, 8, 8, 8), activation="sigmoid").eval()
    folder = tmp_path_factory.mktemp("smp") / "unet-roads"
    model.save_pretrained(str(folder))
    return folder, model


def test_an_smp_save_pretrained_folder_builds_alone_and_matches_smp(smp_folder, tmp_path):
    folder, model = smp_folder
    out = tmp_path / "b"
    proc = subprocess.run(
        [SEGEXPORT, "build", "--checkpoint", str(folder), "--height", "64", "--width", "64", "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["arch"], manifest["encoder"], manifest["classes"]) == ("unet", "resnet18", 2)
    assert manifest["arch_args"]["decoder_channels"] == [16, 16, 8, 8, 8] and manifest["arch_args"]["activation"] == "sigmoid"
    assert str(folder) in manifest["export"]["checkpoint_source"]
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    (mask,) = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(["mask"], {"input": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mask, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    ("given", "fragment"),
    [(["fpn"], "arch 'fpn' disagrees with"), (["unet", "resnet34"], "encoder 'resnet34' disagrees with"),
     (["--classes", "3"], "classes 3 disagrees with")],
)  # fmt: skip
def test_arguments_that_disagree_with_config_json_exit_2(smp_folder, tmp_path, given, fragment):
    folder, _ = smp_folder
    proc = subprocess.run([SEGEXPORT, "build", *given, "--checkpoint", str(folder), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()
