"""save_pretrained / from_pretrained in SMP's format: folders interchange with SMP in both directions.

Hub repos go through huggingface_hub; the tests stand in for the network with a local folder
(``hf_hub_download`` and ``HfApi`` replaced), so nothing here reaches the internet.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from cases import EXPORT_ENCODER, SIZE, tiny_kwargs

import segexport
from segexport.arch.registry import list_architectures
from segexport.errors import InvalidInputError
from segexport.pretrained import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, read_pretrained_config


def _tiny(arch: str, **kwargs):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    arguments = {**tiny_kwargs(arch), "encoder_weights": None, "classes": 2, "aux_params": {"classes": 3}, **kwargs}
    return segexport.create_model(arch, EXPORT_ENCODER[arch], **arguments).eval()


def _outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


def _assert_same_outputs(a, b, arch: str) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(1, 3, SIZE[arch], SIZE[arch])
    for got, expected in zip(_outputs(a, x), _outputs(b, x)):
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() == 0.0


@pytest.mark.smp
@pytest.mark.parametrize("arch", list_architectures())
def test_folders_interchange_with_smp_both_ways(arch, tmp_path):
    smp = pytest.importorskip("segmentation_models_pytorch")
    ours = _tiny(arch)
    ours.save_pretrained(tmp_path / "ours")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # SMP prints "Loading weights..."
        warnings.simplefilter("ignore")
        theirs = smp.from_pretrained(str(tmp_path / "ours"))
        theirs.save_pretrained(tmp_path / "theirs")
    assert type(theirs).__name__ == type(ours).__name__
    _assert_same_outputs(theirs, ours, arch)
    back = segexport.from_pretrained(tmp_path / "theirs")
    _assert_same_outputs(back, theirs, arch)
    assert not back.training and not theirs.training  # both return eval-mode models
    only_ours = set(type(ours).segexport_only_arguments)
    assert {k: v for k, v in back.config.items() if k not in only_ours} == theirs.config


def test_config_json_holds_the_class_and_every_constructor_argument(tmp_path):
    model = segexport.FPN("resnet18", encoder_weights=None, classes=4, decoder_dropout=0.1, decoder_merge_policy="cat")
    model.save_pretrained(tmp_path, metrics={"miou": 0.5}, dataset="roads")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("_model_class") == "FPN"
    assert config == {**model.config}
    assert config["classes"] == 4 and config["decoder_merge_policy"] == "cat" and config["upsampling"] == 4
    card = (tmp_path / "README.md").read_text()
    assert "segexport.from_pretrained" in card and '"miou": 0.5' in card and "Dataset name: roads" in card


def test_read_pretrained_config_names_the_architecture_arguments_and_files(tmp_path):
    _tiny("unet").save_pretrained(tmp_path)
    config = read_pretrained_config(tmp_path / "config.json")  # the folder or its config.json
    assert (config.architecture, config.model_class) == ("unet", "Unet")
    assert config.arguments["encoder_name"] == "resnet18" and config.arguments["decoder_channels"] == [32, 16, 16, 8, 8]
    assert config.weights == tmp_path / WEIGHTS_NAME and config.config_path == tmp_path / "config.json"
    assert config.source == f"folder {tmp_path}"
    assert read_pretrained_config(tmp_path) == config


def test_loading_never_downloads_encoder_weights_and_keeps_the_saved_config(tmp_path, monkeypatch):
    model = _tiny("unet")
    model._init_config["encoder_weights"] = "imagenet"  # as if it had been trained from ImageNet weights
    model.save_pretrained(tmp_path)

    def no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("from_pretrained tried to fetch encoder weights")

    monkeypatch.setattr("segexport.arch.encoders.fetch_pretrained", no_download)
    loaded = segexport.from_pretrained(tmp_path)
    assert loaded.config["encoder_weights"] == "imagenet"
    _assert_same_outputs(loaded, model, "unet")


def test_overrides_with_strict_false_keep_matching_weights_and_warn_about_the_rest(tmp_path):
    source = _tiny("unet")
    source.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"segmentation_head.0.weight: \(2, 8, 3, 3\) \(weights\) -> \(5, 8, 3, 3\)"):
        model = segexport.Unet.from_pretrained(tmp_path, classes=5, strict=False)
    assert model.segmentation_head[0].out_channels == 5 and model.config["classes"] == 5
    assert torch.equal(model.encoder.conv1.weight, source.encoder.conv1.weight)
    with pytest.raises(InvalidInputError, match=r"does not match the model: .*shape mismatches"):
        segexport.from_pretrained(tmp_path, classes=5)


def test_class_from_pretrained_refuses_another_architecture(tmp_path):
    _tiny("fpn").save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError, match=r"holds a FPN, not a Unet"):
        segexport.Unet.from_pretrained(tmp_path)
    assert type(segexport.FPN.from_pretrained(tmp_path)).__name__ == "FPN"


def test_legacy_pytorch_model_bin_loads_with_weights_only(tmp_path):
    model = _tiny("linknet")
    model.save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    torch.save(model.state_dict(), tmp_path / LEGACY_WEIGHTS_NAME)
    _assert_same_outputs(segexport.from_pretrained(tmp_path), model, "linknet")


def test_smp_config_without_center_block_argument_takes_it_from_the_weights(tmp_path):
    """SMP adds Unet's center block by encoder name and records no argument; the saved weights tell."""
    model = _tiny("unet", decoder_add_center_block=True)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("decoder_add_center_block") is True  # written: not the default
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = segexport.from_pretrained(tmp_path)
    assert loaded.config["decoder_add_center_block"] is True
    _assert_same_outputs(loaded, model, "unet")


def test_a_callable_activation_cannot_be_saved(tmp_path):
    model = segexport.Unet("resnet18", encoder_weights=None, activation=torch.nn.Sigmoid)
    with pytest.raises(InvalidInputError, match=r"activation=.*cannot be written to config.json.*activation='sigmoid'"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def _folder_with_config(tmp_path: Path, text: str) -> Path:
    _tiny("unet").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ('{"_model_class": "Unet", "classes": 2,', r"config.json is not valid JSON: .* at line 1, column"),
        ('["Unet"]', r"config.json must hold a JSON object .* got a list"),
        ('{"classes": 2}', r"config.json has no '_model_class' entry"),
        ('{"_model_class": "Unett"}', r"config.json: Unknown model class 'Unett'; allowed: DPT, .*Did you mean 'Unet'"),
    ],
    ids=["bad-json", "not-an-object", "no-model-class", "unknown-model-class"],
)
def test_bad_config_json_names_the_file_and_the_value(tmp_path, config, fragment):
    folder = _folder_with_config(tmp_path, config)
    with pytest.raises(InvalidInputError, match=fragment):
        read_pretrained_config(folder)


def _missing_folder(p: Path) -> Path:
    return p / "missing-folder"


def _empty_folder(p: Path) -> Path:
    return p


def _config_without_weights(p: Path) -> Path:
    (p / "config.json").write_text('{"_model_class": "Unet"}')
    return p


def _a_weights_file(p: Path) -> Path:
    torch.save({}, p / "weights.pth")
    return p / "weights.pth"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_missing_folder, r"is neither an existing folder nor a Hugging Face Hub repo id"),
        (_empty_folder, r"has no config.json; from_pretrained takes a folder written by save_pretrained"),
        (_config_without_weights, r"has config.json but no weights file \(model.safetensors or pytorch_model.bin\)"),
        (_a_weights_file, r"is a file; a pretrained model is the folder save_pretrained wrote"),
    ],
    ids=["missing", "no-config", "no-weights", "a-file"],
)
def test_what_is_not_a_pretrained_folder_says_what_is_expected(tmp_path, make, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        read_pretrained_config(make(tmp_path))


# ---------------------------------------------------------------------------------- the hub, offline


class _LocalHub:
    """``hf_hub_download`` and ``HfApi`` over a local folder of repos: what the hub code calls, without a network."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: list[tuple[str, str, str | None]] = []

    def hf_hub_download(self, repo_id: str, filename: str, revision: str | None = None, **kwargs: object) -> str:
        from huggingface_hub.errors import EntryNotFoundError

        self.downloads.append((repo_id, filename, revision))
        path = self.root / repo_id / filename
        if not path.is_file():
            raise EntryNotFoundError(f"404 Client Error: Entry Not Found for {repo_id}/{filename}")
        return str(path)

    def api(self, token: str | None = None) -> object:
        hub = self

        class Api:
            def create_repo(self, repo_id: str, private: bool | None = None, exist_ok: bool = False) -> object:
                return type("RepoUrl", (), {"repo_id": repo_id})()

            def upload_folder(self, *, repo_id: str, folder_path: Path, commit_message: str, **kwargs: object) -> str:
                shutil.copytree(folder_path, hub.root / repo_id, dirs_exist_ok=True)
                return f"https://huggingface.co/{repo_id}/commit/0001"

        return Api()


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _LocalHub:
    hub = _LocalHub(tmp_path / "hub")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr("huggingface_hub.HfApi", hub.api)
    return hub


def test_push_to_hub_then_from_pretrained_by_repo_id(local_hub):
    model = _tiny("segformer")
    assert model.push_to_hub("user/segformer-roads", commit_message="trained") == "https://huggingface.co/user/segformer-roads/commit/0001"
    loaded = segexport.from_pretrained("user/segformer-roads", revision="v1")
    _assert_same_outputs(loaded, model, "segformer")
    assert ("user/segformer-roads", "config.json", "v1") in local_hub.downloads
    assert read_pretrained_config("user/segformer-roads", revision="v1").source == "hub repo user/segformer-roads@v1"


def test_save_pretrained_with_push_to_hub_uploads_the_folder(local_hub, tmp_path):
    model = _tiny("unet")
    url = model.save_pretrained(tmp_path / "unet-roads", push_to_hub=True)
    assert url.endswith("/commit/0001") and (local_hub.root / "unet-roads" / WEIGHTS_NAME).is_file()


def test_hub_repo_without_safetensors_falls_back_to_pytorch_model_bin(local_hub):
    model = _tiny("fpn")
    repo = local_hub.root / "user" / "fpn"
    model.save_pretrained(repo)
    (repo / WEIGHTS_NAME).unlink()
    torch.save(model.state_dict(), repo / LEGACY_WEIGHTS_NAME)
    _assert_same_outputs(segexport.from_pretrained("user/fpn"), model, "fpn")


def test_unreachable_hub_repo_names_the_repo(local_hub, monkeypatch):
    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    with pytest.raises(InvalidInputError, match=r"Cannot fetch config.json of hub repo user/nothing: We couldn't connect"):
        segexport.from_pretrained("user/nothing")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", local_hub.hf_hub_download)
    with pytest.raises(InvalidInputError, match=r"hub repo user/nothing has no config.json"):
        segexport.from_pretrained("user/nothing")
