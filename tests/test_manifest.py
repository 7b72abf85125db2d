"""The manifest as a typed record: what build writes is what every reader reads back, old formats included.

Readers go through :class:`segexport.manifest.Manifest`; a field of the wrong type is
refused by name (exit 2 through the installed command), and format-1 bundles still verify.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cases import cli, one_error_line

import segexport
from segexport.manifest import FORMAT_VERSION, Manifest, TensorInfo, manifest_digest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("manifest") / "bundle"
    segexport.build("unet", "resnet18", height=64, width=64, aux_classes=2, activation="sigmoid",
                    arch_args={"decoder_channels": (16, 16, 8, 8, 8)}, out=out)  # fmt: skip
    return out


@pytest.fixture
def bundle(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    return copy


def raw(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def rewrite(bundle: Path, manifest: dict, *, redigest: bool = True) -> None:
    if redigest and "digest" in manifest:
        manifest["digest"] = manifest_digest(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_the_record_reads_back_exactly_what_build_wrote(built):
    written = raw(built)
    manifest = Manifest.from_json(written)
    assert manifest.to_json() == written
    assert manifest.format_version == FORMAT_VERSION and manifest.digest == manifest_digest(written)
    assert manifest.inputs == (TensorInfo("input", (1, 3, 64, 64), "float32", "NCHW"),)
    assert manifest.output_names == ["mask", "label"] and manifest.export.output_names == ("mask", "label")
    assert manifest.parity.passed and manifest.parity.policy.mask_threshold == 0.5
    assert manifest.onnx_graph() == "model.onnx"


@pytest.mark.parametrize("version", [1, 2])
def test_a_bundle_of_an_older_format_still_verifies_with_the_policy_build_applied(bundle, version):
    old = raw(bundle)
    old["format_version"] = version
    del old["device"]  # format 3's
    if version == 1:
        for key in ("mask_threshold", "inputs"):
            del old["parity"][key]
        del old["digest"]
    rewrite(bundle, old, redigest=version == 2)
    manifest = Manifest.from_json(old)
    assert manifest.parity.policy.mask_threshold == 0.5  # derived from the sigmoid, as format 1's build did
    assert manifest.parity.policy.inputs == "seeded" and manifest.device is None
    proc = cli("verify", str(bundle))
    assert proc.returncode == 0, proc.stderr
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes()[:-8])
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2 and "model.onnx" in proc.stderr


WRONG_TYPES = {
    "in_channels": (lambda m: m.update(in_channels="3"), "in_channels is '3'; expected a positive integer"),
    "export.batch": (lambda m: m["export"].update(batch=0), "export.batch is 0; expected a positive integer"),
    "export.dynamic": (lambda m: m["export"].update(dynamic="no"), "export.dynamic is 'no'; expected true or false"),
    "inputs[0].shape": (lambda m: m["inputs"][0].update(shape="NCHW"), "inputs[0].shape is 'NCHW'"),
    "outputs": (lambda m: m.update(outputs=[]), "outputs is []; expected a non-empty list"),
    "parity cosine": (lambda m: m["parity"]["outputs"][0].update(cosine="high"), "parity.outputs[0].cosine is 'high'"),
    "arch_args": (lambda m: m.update(arch_args=[1]), "arch_args is [1]; expected an object"),
    "device.kind": (lambda m: m["device"].update(kind="tpu"), "the manifest's device is {'kind': 'tpu'"),
}


@pytest.mark.parametrize("command", ["verify", "inspect"])
@pytest.mark.parametrize("field", list(WRONG_TYPES))
def test_a_field_of_the_wrong_type_is_refused_by_name(bundle, command, field):
    edit, fragment = WRONG_TYPES[field]
    manifest = raw(bundle)
    edit(manifest)
    rewrite(bundle, manifest)  # re-signed: only the record's own checks can refuse it
    proc = cli(command, str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, fragment)


def test_an_edit_without_a_new_digest_is_named_as_an_edit_before_its_types_are_read(bundle):
    manifest = raw(bundle)
    manifest["in_channels"] = "3"
    rewrite(bundle, manifest, redigest=False)
    proc = cli("verify", str(bundle))
    assert proc.returncode == 2
    one_error_line(proc, "was edited after the build")
