"""Load a user's checkpoint into a model: safe formats, common wrappers, clear mismatch errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from segexport.arch.encoders.weights import load_state_dict_file
from segexport.errors import InvalidInputError

SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_WRAPPERS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("model.", "module.")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model state_dict inside ``path``: unwrapped and with training-wrapper prefixes stripped."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise InvalidInputError(f"Checkpoint {str(path)!r} has an unknown suffix {path.suffix!r}; allowed: {', '.join(SUFFIXES)}.")
    state = load_state_dict_file(path)
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InvalidInputError(f"Checkpoint {str(path)!r} holds no tensors (keys: {list(state)[:5]}).")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load ``path`` into ``model`` strictly; mismatches name the first missing and unexpected keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches (first: {wrong_shape[0]})")
        raise InvalidInputError(
            f"Checkpoint {str(path)!r} does not match the model: {'; '.join(parts)}. "
            "Check the architecture, encoder, classes, in_channels and other arguments."
        )
    model.load_state_dict(state, strict=True)
