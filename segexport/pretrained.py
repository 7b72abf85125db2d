"""SMP's ``save_pretrained`` / ``from_pretrained`` format: a folder (or hub repo) with config.json and weights.

``config.json`` holds ``_model_class`` (the model's class name, e.g. ``"Unet"``) and every
constructor argument; ``model.safetensors`` (or a legacy ``pytorch_model.bin``) the state_dict.
Folders written here load in SMP (``smp.from_pretrained``) and SMP's load here, both ways::

    model.save_pretrained("runs/unet")                 # config.json, model.safetensors, README.md
    model = segexport.from_pretrained("runs/unet")     # or a hub repo id: "user/unet-roads"
    config = read_pretrained_config("runs/unet")       # what the CLI's ``build --checkpoint`` reads

Weights are read with safetensors or ``torch.load(weights_only=True)`` only: loading a folder
never runs pickled code. Building the model never downloads encoder weights (the saved
state_dict replaces them); a hub repo id downloads config.json and the weights file through
huggingface_hub (its cache, token and offline settings apply).

The dataclass imports without torch; the functions import the model code when called.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segexport.errors import InvalidInputError, UnknownNameError, first_line

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from segexport.arch.base import SegmentationModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: What huggingface_hub's PyTorchModelHubMixin falls back to when a repo has no safetensors file.
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
MODEL_CLASS_KEY = "_model_class"
MODEL_CARD_NAME = "README.md"


@dataclass(frozen=True)
class PretrainedConfig:
    """What a ``save_pretrained`` folder or hub repo describes.

    Attributes:
        architecture: registry name of the architecture (``"unet"``), for ``create_model``.
        model_class: the class name config.json gives as ``_model_class`` (``"Unet"``).
        arguments: every constructor argument from config.json (keys starting with ``_`` left
            out), as ``create_model(architecture, **arguments)`` takes them. A fresh dict:
            changing it changes nothing on disk.
        weights: local path of the weights file (``model.safetensors`` or ``pytorch_model.bin``;
            downloaded into huggingface_hub's cache for a hub repo).
        config_path: local path of config.json.
        source: where it came from, for messages and manifests (``"folder /runs/unet"``,
            ``"hub repo user/unet-roads"``, with ``@revision`` when one was asked for).
    """

    architecture: str
    model_class: str
    arguments: dict[str, Any]
    weights: Path
    config_path: Path
    source: str

    def create_model(self, **overrides: Any) -> SegmentationModel:
        """The architecture built from ``arguments`` (``overrides`` replace some), weights not loaded.

        Encoder weights are never downloaded (``encoder_weights=None`` unless overridden): the
        saved state_dict replaces them. ``model.config`` still reports the saved arguments.
        """
        from segexport.arch.registry import create_model

        arguments = {**self.arguments, **overrides, "encoder_weights": overrides.get("encoder_weights")}
        model = create_model(self.architecture, **arguments)
        if "encoder_weights" in self.arguments and "encoder_weights" not in overrides:
            # model.config says what the model was saved with, not the no-download build.
            model._init_config["encoder_weights"] = self.arguments["encoder_weights"]
        return model


def read_pretrained_config(
    path_or_repo: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> PretrainedConfig:
    """Read config.json of a ``save_pretrained`` folder (or of a hub repo, downloading it and the weights).

    ``path_or_repo`` is a folder, a config.json inside one, or a Hugging Face Hub repo id
    (``user/name``); the keywords are huggingface_hub's and apply to repos only.

    Raises:
        InvalidInputError: no such folder or repo, no config.json or weights file, config.json
            not valid JSON, without ``_model_class``, or naming a class no registered
            architecture has (the message names the file and the value).
    """
    from segexport.arch.registry import architecture_by_class_name, get_architecture

    folder = Path(path_or_repo)
    if folder.is_file() and folder.name == CONFIG_NAME:
        folder = folder.parent
    if folder.is_dir():
        config_path, weights, source = _local_files(folder)
    elif folder.exists():
        raise InvalidInputError(
            f"{str(path_or_repo)!r} is a file; a pretrained model is the folder save_pretrained wrote (with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}) or a hub repo id. A bare state_dict file loads into a model "
            "built with the same arguments (segexport.checkpoint.load_checkpoint)."
        )
    else:
        hub = {
            "revision": revision,
            "token": token,
            "cache_dir": cache_dir,
            "force_download": force_download,
            "local_files_only": local_files_only,
        }
        config_path, weights, source = _hub_files(str(path_or_repo), hub)

    config = _read_json(config_path)
    if MODEL_CLASS_KEY not in config:
        raise InvalidInputError(
            f"{config_path} has no {MODEL_CLASS_KEY!r} entry, so the architecture is unknown; it is not a "
            "config.json written by save_pretrained (segexport's or SMP's)."
        )
    model_class = config[MODEL_CLASS_KEY]
    if not isinstance(model_class, str):
        raise InvalidInputError(f"{config_path}: {MODEL_CLASS_KEY} must be a class name such as 'Unet'; got {model_class!r}.")
    try:
        architecture = architecture_by_class_name(model_class)
    except UnknownNameError as exc:
        raise InvalidInputError(f"{config_path}: {exc}") from None
    arguments = {key: value for key, value in config.items() if not key.startswith("_")}
    arguments = get_architecture(architecture).complete_saved_arguments(arguments, lambda: _weight_keys(weights))
    return PretrainedConfig(architecture, model_class, arguments, weights, config_path, source)


def load_pretrained(
    path_or_repo: str | os.PathLike[str],
    *,
    strict: bool = True,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    map_location: str = "cpu",
    **overrides: Any,
) -> SegmentationModel:
    """The model a ``save_pretrained`` folder or hub repo holds (segexport's or SMP's), in eval mode.

    Args:
        path_or_repo: folder, its config.json, or hub repo id (see :func:`read_pretrained_config`).
        strict: every tensor must match the model (an error names the first mismatches); with
            False, missing or differently shaped tensors are skipped with a warning, as SMP does
            (fine-tuning a checkpoint with other ``classes`` passed in ``overrides``).
        revision, token, cache_dir, force_download, local_files_only: huggingface_hub's, for repos.
        map_location: device the model is moved to.
        overrides: constructor arguments replacing the saved ones.
    """
    from segexport.arch.encoders.weights import load_state_dict_file
    from segexport.checkpoint import load_checkpoint

    config = read_pretrained_config(
        path_or_repo,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
    )
    model = config.create_model(**overrides)
    if strict:
        load_checkpoint(model, config.weights)  # strict, with a message naming missing/unexpected keys
    else:
        model.load_state_dict(load_state_dict_file(config.weights), strict=False)
    return model.to(map_location).eval()


#: SMP's name (``smp.from_pretrained``) for :func:`load_pretrained`.
from_pretrained = load_pretrained


def pretrained_config_dict(model: SegmentationModel) -> dict[str, Any]:
    """The config.json content for ``model``: ``_model_class`` plus every constructor argument, JSON-checked.

    Raises:
        InvalidInputError: an argument has no JSON form (e.g. a callable ``activation``), so the
            saved model could not be rebuilt; SMP drops such values silently.
    """
    import inspect

    config: dict[str, Any] = {MODEL_CLASS_KEY: type(model).__name__}
    parameters = inspect.signature(type(model).__init__).parameters
    for key, value in model.config.items():
        if key in type(model).segexport_only_arguments and key in parameters and value == parameters[key].default:
            continue  # SMP's class takes no such argument; at its default, leaving it out loses nothing
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{type(model).__name__}'s {key}={value!r} cannot be written to {CONFIG_NAME} (only JSON values: "
                "strings, numbers, booleans, None, lists and dicts of them), so the saved model could not be "
                f"rebuilt; build the model with a JSON value for {key} (e.g. activation='sigmoid') to save it."
            ) from None
        config[key] = value
    return config


def save_pretrained(
    model: SegmentationModel,
    save_directory: str | os.PathLike[str],
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    model_card_kwargs: Mapping[str, Any] | None = None,
    **push_to_hub_kwargs: Any,
) -> str | None:
    """Write ``model`` to ``save_directory`` in SMP's format (see the module docstring); see
    ``SegmentationModel.save_pretrained``. An existing README.md is kept, as SMP keeps it."""
    from safetensors.torch import save_model

    card = {**(model_card_kwargs or {})}
    if metrics is not None:
        card["metrics"] = metrics
    if dataset is not None:
        card["dataset"] = dataset
    config = pretrained_config_dict(model)  # checked before anything is written
    folder = Path(save_directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"Cannot create the folder {str(folder)!r}: {first_line(exc)}") from exc
    (folder / CONFIG_NAME).write_text(json.dumps(config, sort_keys=True, indent=2), encoding="utf-8")
    save_model(model, str(folder / WEIGHTS_NAME))
    if not (folder / MODEL_CARD_NAME).exists():
        model_card(model, metrics=card.get("metrics"), dataset=card.get("dataset")).save(folder / MODEL_CARD_NAME)
    if push_to_hub:
        return _push(model, repo_id or folder.name, model_card_kwargs=card, **push_to_hub_kwargs)
    return None


def push_to_hub(
    model: SegmentationModel,
    repo_id: str,
    *,
    commit_message: str = "Push model using huggingface_hub.",
    private: bool | None = None,
    token: str | None = None,
    branch: str | None = None,
    create_pr: bool | None = None,
    allow_patterns: list[str] | str | None = None,
    ignore_patterns: list[str] | str | None = None,
    delete_patterns: list[str] | str | None = None,
    model_card_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Save ``model`` in SMP's format to a temporary folder and upload it to hub repo ``repo_id``
    (created if missing) in one commit; returns the commit URL. Arguments as huggingface_hub's."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_pretrained(model, folder, model_card_kwargs=model_card_kwargs)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message=commit_message,
            revision=branch,
            create_pr=create_pr,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=delete_patterns,
        )
    return str(commit)


_push = push_to_hub  # save_pretrained's push_to_hub keyword shadows the function there

_CARD = """---
library_name: segmentation-models-pytorch
pipeline_tag: image-segmentation
tags:
- segmentation-models-pytorch
- semantic-segmentation
- pytorch
- segexport
---
# {model_name} Model Card

Saved by segexport in segmentation_models_pytorch's format.

## Load trained model
```python
import segexport  # or: import segmentation_models_pytorch as smp

model = segexport.from_pretrained("<save-directory-or-this-repo>")
```

## Model init parameters
```python
model_init_params = {parameters}
```

## Model metrics
{metrics}

## Dataset
Dataset name: {dataset}
"""


def model_card(model: SegmentationModel, metrics: Mapping[str, Any] | None = None, dataset: str | None = None) -> ModelCard:
    """The README.md written next to the weights (SMP's card: parameters, metrics, dataset)."""
    from huggingface_hub import ModelCard

    parameters = json.dumps({k: v for k, v in pretrained_config_dict(model).items() if not k.startswith("_")}, indent=4)
    text = _CARD.format(
        model_name=type(model).__name__,
        parameters=parameters,
        metrics=f"```json\n{json.dumps(dict(metrics), indent=4)}\n```" if metrics else "[More Information Needed]",
        dataset=dataset or "[More Information Needed]",
    )
    return ModelCard(text)


def _local_files(folder: Path) -> tuple[Path, Path, str]:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise InvalidInputError(
            f"Folder {str(folder)!r} has no {CONFIG_NAME}; from_pretrained takes a folder written by save_pretrained "
            "(segexport's or SMP's)."
        )
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if (folder / name).is_file():
            return config_path, folder / name, f"folder {folder}"
    raise InvalidInputError(f"Folder {str(folder)!r} has {CONFIG_NAME} but no weights file ({WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}).")


def _hub_files(repo_id: str, hub: dict[str, Any]) -> tuple[Path, Path, str]:
    """Download config.json and the weights of hub repo ``repo_id`` (huggingface_hub's cache applies)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidInputError(
            f"{repo_id!r} is neither an existing folder nor a Hugging Face Hub repo id (user/name)."
        ) from None
    source = f"hub repo {repo_id}" + (f"@{hub['revision']}" if hub.get("revision") else "")

    def download(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename=filename, **hub))

    try:
        config_path = download(CONFIG_NAME)
    except EntryNotFoundError:
        raise InvalidInputError(f"{source} has no {CONFIG_NAME}; it was not written by save_pretrained.") from None
    except Exception as exc:  # offline, unknown repo, no access: huggingface_hub raises several types
        raise InvalidInputError(f"Cannot fetch {CONFIG_NAME} of {source}: {first_line(exc)}") from exc
    try:
        try:
            weights = download(WEIGHTS_NAME)
        except EntryNotFoundError:
            weights = download(LEGACY_WEIGHTS_NAME)
    except EntryNotFoundError:
        raise InvalidInputError(f"{source} has {CONFIG_NAME} but no weights file ({WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}).") from None
    except Exception as exc:
        raise InvalidInputError(f"Cannot fetch the weights of {source}: {first_line(exc)}") from exc
    return config_path, weights, source


def _weight_keys(path: Path) -> list[str]:
    """The tensor names in a weights file (safetensors: from its header only)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    from segexport.arch.encoders.weights import load_state_dict_file

    return list(load_state_dict_file(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path}: {first_line(exc)}") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path} must hold a JSON object of constructor arguments; got a {type(config).__name__}.")
    return config
