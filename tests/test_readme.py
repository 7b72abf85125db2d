"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_custom_encoder_example_runs(capsys):
    from segexport.arch.encoders import ENCODERS

    block = next(b for b in python_blocks() if "register_encoder" in b)
    try:
        exec(compile(block, "README.md", "exec"), {})
    finally:
        ENCODERS.pop("tiny", None)
    assert "torch.Size([1, 2, 64, 64])" in capsys.readouterr().out


@pytest.mark.onnx
def test_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = next(b for b in python_blocks() if "segexport.build(" in b)
    block = block.replace("height=256, width=256", "height=64, width=64, arch_args={'decoder_channels': (16, 16, 8, 8, 8)}")
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "artifacts" / "unet-resnet34-onnx-fp32" / "manifest.json").is_file()


def test_training_example_runs(capsys):
    block = next(b for b in python_blocks() if "DiceLoss" in b)
    exec(compile(block, "README.md", "exec"), {})
    assert "mIoU" in capsys.readouterr().out
