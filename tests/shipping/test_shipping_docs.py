"""The shipping docs exist, their YAML snippets parse, and they carry the commands users need."""

from __future__ import annotations

import re

import pytest
import yaml
from shipping_lib import ROOT

DOCS = ROOT / "docs"
FINALIZER_PATCH = """patch geocluster"""
FINALIZER_BODY = """--type=merge -p '{"metadata":{"finalizers":[]}}'"""


def yaml_blocks(name):
    text = (DOCS / name).read_text()
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("name", ["install.md", "gitops.md", "upgrade.md"])
def test_yaml_snippets_parse(name):
    for block in yaml_blocks(name):
        assert list(yaml.safe_load_all(block)), block


def test_install_covers_three_ways_and_uninstall():
    text = (DOCS / "install.md").read_text()
    for needle in (
        "kubectl apply --server-side -k manifests/",
        "helm install",
        "gitops.md",
        FINALIZER_PATCH,
        FINALIZER_BODY,
    ):
        assert needle in text, needle


def test_upgrade_says_helm_skips_crds():
    text = (DOCS / "upgrade.md").read_text()
    assert "does not upgrade the CRDs" in text and "manifests/crd.yaml" in text
    assert FINALIZER_BODY in text


def test_gitops_examples():
    kinds = {
        doc["kind"]
        for block in yaml_blocks("gitops.md")
        for doc in yaml.safe_load_all(block)
        if doc and "kind" in doc
    }
    assert {"Application", "Kustomization", "GitRepository"} <= kinds
    text = (DOCS / "gitops.md").read_text()
    assert "observedGeneration" in text and "Ready" in text
    # the Argo CD health check reads the same condition the operator writes
    assert "resource.customizations.health.geo.geocluster.io_GeoCluster" in text
