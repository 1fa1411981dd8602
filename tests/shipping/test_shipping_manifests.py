"""Plain manifests for kubectl/kustomize/GitOps: every file validates offline, the
kustomization lists every manifest, and the RBAC equals the chart's (cluster scope, standalone)."""

from __future__ import annotations

import pytest
import yaml
from shipping_lib import (
    CLUSTER_READ_RULES,
    MANIFESTS,
    NAMESPACED_RULES,
    ROOT,
    SPEC_PY,
    load_all,
    rules_table,
    run,
    validate_object,
)

ALL_FILES = sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


def docs_of(name):
    return load_all((MANIFESTS / name).read_text())


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_validates(path):
    docs = load_all(path.read_text())
    assert docs, f"{path} is empty"
    for doc in docs:
        validate_object(doc)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    top_level = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == top_level
    # CRDs first so that a one-shot `kubectl apply -k` registers the kind before anything uses it.
    assert listed[0] == "crd.yaml"


def test_kustomize_build(kubectl):
    """`kubectl kustomize manifests/` renders exactly the objects of the listed files."""
    out = load_all(run([kubectl, "kustomize", str(MANIFESTS)]).stdout)
    names = ("crd.yaml", "rbac.yaml", "operator.yaml", "networkpolicy.yaml")
    expected = [d for name in names for d in docs_of(name)]
    key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, out)) == sorted(map(key, expected))
    for doc in out:
        validate_object(doc)


def test_rbac_exact():
    docs = docs_of("rbac.yaml")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert rules_table(role) == {**NAMESPACED_RULES, **CLUSTER_READ_RULES}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (sa,) = [d for d in docs_of("operator.yaml") if d["kind"] == "ServiceAccount"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]


def test_operator_deployment():
    docs = docs_of("operator.yaml")
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "Deployment", "Service"]
    ns = docs[0]["metadata"]["name"]
    assert ns == "geocluster-system"
    assert all(d["metadata"].get("namespace") == ns for d in docs[1:])
    dep = docs[2]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # No peering CRDs in plain manifests, so the operator runs standalone.
    assert "--standalone" in c["args"] and "--all-namespaces" in c["args"]
    if SPEC_PY.exists():
        from geocluster.cli import run_command

        params = run_command.make_context("run", list(c["args"][1:])).params
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert params["liveness"].endswith(f":{ports['healthz']}")
        assert params["metrics_addr"].endswith(f":{ports['metrics']}")


def test_operator_network_policy():
    (dep,) = [d for d in docs_of("operator.yaml") if d["kind"] == "Deployment"]
    (policy,) = docs_of("networkpolicy.yaml")
    template = dep["spec"]["template"]
    assert policy["metadata"]["namespace"] == dep["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (c,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": ports["metrics"]}]}]
    if SPEC_PY.exists():  # each GeoCluster's policy admits this pod (labels + $POD_NAMESPACE)
        from geocluster.resources import OPERATOR_POD_LABELS

        assert OPERATOR_POD_LABELS.items() <= template["metadata"]["labels"].items()
        assert "POD_NAMESPACE" in {e["name"] for e in c["env"]}


def test_manifests_crd_equals_chart_crd():
    chart_crd = ROOT / "charts" / "geocluster" / "crds" / "geoclusters.yaml"
    assert (MANIFESTS / "crd.yaml").read_text() == chart_crd.read_text()
