"""Manifests for `geocluster up`: the built-in example, and invalid ones rejected naming the field."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from geocluster.cli import cli, load_subcommands
from geocluster.localstate import EXAMPLE, load_manifest
from geocluster.spec import SpecError
from local_lib import FAST, write_manifest


def test_builtin_example_is_a_valid_manifest():
    m = load_manifest(None)
    assert m.name == "local" and m.spec.followers == 2 and m.spec.aof_shrink.schedule == "*/5 * * * *"
    assert m.password is None and yaml.safe_load(EXAMPLE)["kind"] == "GeoCluster"


def test_examples_shipped_for_kubectl_also_run_locally():
    m = load_manifest(__import__("pathlib").Path(__file__).parents[2] / "manifests/examples/minimal.yaml")
    assert m.name == "minimal" and m.spec.followers == 2


def test_password_from_a_secret_in_the_same_file(tmp_path):
    path = write_manifest(tmp_path / "a.yaml", {"server": {"authSecretRef": {"name": "s"}}})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "stringData": {"password": "pw1"}}
    path.write_text(yaml.safe_dump(secret) + "---\n" + path.read_text())
    assert load_manifest(path).password == "pw1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"folowers": 1}, "spec.folowers: unknown field"),
        ({"aofShrink": {"schedule": "every day"}}, "spec.aofShrink.schedule"),
        ({"aofShrink": {"schedule": "61 * * * *"}}, "spec.aofShrink.schedule"),
        ({"followers": -1}, "spec.followers"),
        ({"divergence": {"ladder": ["reboot"]}}, "spec.divergence.ladder[0]"),
        ({"server": {"authSecretRef": {"name": "missing"}}}, "spec.server.authSecretRef"),
        ({"server": {"extraArgs": ["--port=1"]}}, "spec.server.extraArgs: flags the operator owns"),
        ({"server": {"extraArgs": ["--follow", "127.0.0.1:1"]}}, "spec.server.extraArgs"),
    ],
)
def test_invalid_spec_names_the_field(tmp_path, monkeypatch, change, field):
    monkeypatch.delenv("GEOCLUSTER_PASSWORD", raising=False)
    path = write_manifest(tmp_path / "bad.yaml", {**FAST, **change})
    with pytest.raises(SpecError, match=r"^.*bad\.yaml: .*" + field.replace("[", r"\[").replace(".", r"\.")):
        load_manifest(path)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster", "metadata": {"name": "a"},
          "sepc": {}}, "sepc: unknown field"),
        ({"apiVersion": "v1", "kind": "GeoCluster", "metadata": {"name": "a"}}, "apiVersion"),
        ({"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster", "metadata": {"name": "A_b"}},
         "metadata.name"),
        ({"kind": "ConfigMap"}, "expected one document of kind GeoCluster"),
    ],
)
def test_invalid_document_names_the_field(tmp_path, doc, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=field):
        load_manifest(path)


def test_up_with_an_invalid_manifest_exits_nonzero_naming_the_field(tmp_path):
    path = write_manifest(tmp_path / "bad.yaml", {**FAST, "followers": -2, "aofShrink": {"schedule": "x"}})
    load_subcommands(cli)
    result = CliRunner().invoke(cli, ["up", "-f", str(path), "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "invalid manifest" in result.output and "spec.followers" in result.output
    assert "spec.aofShrink.schedule" in result.output
    assert not (tmp_path / "s").exists()  # nothing started, nothing written


def test_wrong_types_bad_base64_and_binary_files_are_clear_errors(tmp_path):
    """Found in review: `spec: 5` ran a default cluster; a Secret with bad base64 and a
    non-UTF-8 file ended in Python tracebacks."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                    "metadata": {"name": "a"}, "spec": 5}))  # fmt: skip
    with pytest.raises(SpecError, match="spec: must be an object, got int"):
        load_manifest(path)
    path = write_manifest(tmp_path / "b64.yaml", {"server": {"authSecretRef": {"name": "s"}}})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"password": "not base64!!"}}  # fmt: skip
    path.write_text(yaml.safe_dump(secret) + "---\n" + path.read_text())
    with pytest.raises(SpecError, match=r"data\.password: not base64"):
        load_manifest(path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match=r"bin\.yaml"):
        load_manifest(binary)


def test_tls_example_loads_locally():
    """manifests/examples/tls.yaml (cert-manager objects around the GeoCluster) loads for
    `geocluster up` too; spec.tls is the Kubernetes side (the local runtime's is `--tls`)."""
    path = __import__("pathlib").Path(__file__).parents[2] / "manifests/examples/tls.yaml"
    m = load_manifest(path)
    assert m.name == "geo" and m.spec.tls is not None and m.spec.tls.issuer_ref.name == "geo-ca"
