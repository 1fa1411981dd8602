"""The generated CRD: valid for Kubernetes 1.33, structural, and it accepts/rejects GeoClusters.

jsonschema against openAPIV3Schema approximates the API server (no x-kubernetes-* semantics,
no defaulting); that is the only CR validation available offline.
"""

from __future__ import annotations

import copy
import pathlib

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from geocluster.cli import cli
from geocluster.crd import crd

EXAMPLES = pathlib.Path(__file__).parent / "examples"


def _schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _validate(body: dict) -> None:
    """OpenAPI v3.0 schemas use draft-4 keywords (boolean exclusiveMinimum)."""
    jsonschema.Draft4Validator(_schema()).validate(body)


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_validates_against_kubernetes_schema():
    kubernetes_validate.validate(crd(), "1.33", strict=True)


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        assert "type" in node, path
        assert "$ref" not in node and "anyOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path in {
                ".metadata",
                ".spec.resources",
                ".spec.scheduling.tolerations[]",
                ".spec.securityContext.pod",
                ".spec.securityContext.container",
                ".status.kopf",
            }, path


def test_every_spec_field_is_described():
    for path, node in _walk(_schema()["properties"]["spec"]):
        if path and not path.endswith("[]") and not path.endswith("{}"):
            assert node.get("description"), path


def test_subresources_and_columns():
    version = crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.followers",
        "statusReplicasPath": ".status.readyFollowers",
        "labelSelectorPath": ".status.selector",  # so an HPA can scale followers
    }
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:4] == ["Leader", "Followers", "Ready", "AOF"] and names[-1] == "Age"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_accepted(path):
    _validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "patch",
    [
        {"followers": "three"},
        {"followers": -1},
        {"server": {"appendfsync": "sometimes"}},
        {"aofShrink": {"schedule": "* * *"}},
        {"aofShrink": {"sizeTrigger": {"growthFactor": 1}}},
        {"divergence": {"ladder": ["explode"]}},
        {"scheduling": {"antiAffinity": "maybe"}},
        {"storage": {"size": "ten gigs"}},
        {"metrics": {"port": 70000}},
        {"server": {"authSecretRef": {"key": "password"}}},
        {"server": {"generatePassword": "yes"}},
        {"networkPolicy": {"enabled": "on"}},
        {"networkPolicy": {"clients": [{"ipBlock": {"except": ["10.0.0.0/8"]}}]}},
        {"networkPolicy": {"metricsFrom": [{"podSelector": {"matchLabels": {"a": 1}}}]}},
    ],
)
def test_bad_specs_rejected(patch):
    body = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    body["spec"] = copy.deepcopy(patch)
    with pytest.raises(jsonschema.ValidationError):
        _validate(body)


def test_cli_prints_the_crd():
    result = CliRunner().invoke(cli, ["crd"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output) == crd()
