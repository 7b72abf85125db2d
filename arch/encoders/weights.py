"""Pretrained settings and weight loading: hub repos, URLs, local files, safetensors.

Everything loads with ``weights_only=True`` or through safetensors; nothing here
runs pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segexport.errors import InvalidInputError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedSettings:
    """Where one set of weights comes from and how inputs must be prepared for it."""

    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    filename: str = "model.safetensors"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_space: str = "RGB"
    input_range: tuple[float, float] = (0.0, 1.0)
    extra: dict[str, object] = field(default_factory=dict)

    def normalization(self) -> dict[str, object]:
        """The manifest's ``normalization`` block."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_space": self.input_space,
            "input_range": list(self.input_range),
        }


def imagenet(repo_id: str | None = None, revision: str | None = None, url: str | None = None, **kw: object) -> PretrainedSettings:
    """Settings for weights trained on ImageNet with the usual normalization."""
    return PretrainedSettings(repo_id=repo_id, revision=revision, url=url, **kw)  # type: ignore[arg-type]


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state_dict from .safetensors or a torch file (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Weights file {str(path)!r} does not exist or is not a file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable/unsafe files
        raise InvalidInputError(
            f"Cannot read weights file {str(path)!r} as a state_dict (weights_only=True): {first_line(exc)}"
        ) from exc
    if not isinstance(obj, dict):
        raise InvalidInputError(f"Weights file {str(path)!r} holds a {type(obj).__name__}, not a state_dict.")
    return obj


def fetch_pretrained(settings: PretrainedSettings) -> dict[str, torch.Tensor]:
    """Download (or take from the local cache) the weights ``settings`` point to."""
    if settings.repo_id:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
            raise InvalidInputError("Downloading pretrained weights needs huggingface_hub installed.") from exc
        path = hf_hub_download(settings.repo_id, filename=settings.filename, revision=settings.revision)
        return load_state_dict_file(path)
    if settings.url:
        return torch.hub.load_state_dict_from_url(settings.url, map_location="cpu", weights_only=True, progress=False)
    raise InvalidInputError("These pretrained settings name neither a hub repo nor a URL.")


def preprocess_input(
    x: Any,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_space: str = "RGB",
    input_range: Sequence[float] | None = None,
    **kwargs: Any,
) -> Any:
    """Normalise an HWC image array as the encoder's pretrained weights expect (SMP's ``preprocess_input``).

    Channels are reversed for ``input_space="BGR"``; values above 1 are scaled by 1/255 when the
    weights want a [0, 1] range; then ``(x - mean) / std`` over the last axis. Extra keywords are
    ignored, so the dict of ``get_preprocessing_params`` can be passed as is.
    """
    import numpy as np

    if input_space == "BGR":
        x = x[..., ::-1].copy()
    if input_range is not None and x.max() > 1 and input_range[1] == 1:
        x = x / 255.0
    if mean is not None:
        x = x - np.array(mean)
    if std is not None:
        x = x / np.array(std)
    return x
