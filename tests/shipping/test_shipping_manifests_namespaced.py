"""manifests/namespaced/: the plain manifests with the operator watching one namespace through a
Role (issue 9: "the operator's Secret access is as narrow as its watch scope allows").

Offline: the kustomization builds and every object validates against the Kubernetes schemas;
the rules are exactly ../rbac.yaml's, split into a namespaced Role and a cluster-read
ClusterRole as the Helm chart splits them for watch.scope=namespace (compared with a real
`helm template` of that mode); the copies of operator.yaml and networkpolicy.yaml equal the
cluster-wide ones but for the watch argument; and the operator's CLI accepts the arguments.
"""

from __future__ import annotations

import pytest
from shipping_lib import (
    CLUSTER_READ_RULES,
    MANIFESTS,
    NAMESPACED_RULES,
    SPEC_PY,
    helm_template,
    load_all,
    rules_table,
    run,
    validate_object,
)

HERE = MANIFESTS / "namespaced"
WATCHED = "geocluster-system"


def docs_of(path):
    return load_all(path.read_text())


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_kustomize_build_validates(kubectl):
    out = load_all(run([kubectl, "kustomize", str(HERE)]).stdout)
    kinds = sorted(d["kind"] for d in out)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Deployment", "Service", "NetworkPolicy",
                            "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"])
    for doc in out:
        validate_object(doc)


def test_rules_split_as_the_chart_does():
    docs = docs_of(HERE / "rbac.yaml")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert rules_table(cluster_role) == CLUSTER_READ_RULES
    (role,) = by_kind(docs, "Role")
    assert rules_table(role) == NAMESPACED_RULES  # standalone: no kopf peering objects
    assert role["metadata"]["namespace"] == WATCHED
    # together, exactly the cluster-wide ClusterRole of ../rbac.yaml
    (whole,) = by_kind(docs_of(MANIFESTS / "rbac.yaml"), "ClusterRole")
    assert rules_table(whole) == {**rules_table(role), **rules_table(cluster_role)}
    (sa,) = by_kind(docs_of(HERE / "operator.yaml"), "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
               "namespace": sa["metadata"]["namespace"]}
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == WATCHED
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [subject]
    (cbinding,) = by_kind(docs, "ClusterRoleBinding")
    assert cbinding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert cbinding["subjects"] == [subject]


def test_rules_equal_the_charts_namespace_mode(helm):
    docs = helm_template(helm, None, "--set", "watch.scope=namespace", "--set", "peering.enabled=false")
    (chart_role,) = by_kind(docs, "Role")
    (chart_read,) = by_kind(docs, "ClusterRole")
    mine = docs_of(HERE / "rbac.yaml")
    assert rules_table(by_kind(mine, "Role")[0]) == rules_table(chart_role)
    assert rules_table(by_kind(mine, "ClusterRole")[0]) == rules_table(chart_read)
    assert chart_role["metadata"]["namespace"] == WATCHED  # the chart's default: its own namespace


def test_copies_equal_the_cluster_wide_files_but_for_the_watch():
    assert docs_of(HERE / "networkpolicy.yaml") == docs_of(MANIFESTS / "networkpolicy.yaml")
    mine, theirs = docs_of(HERE / "operator.yaml"), docs_of(MANIFESTS / "operator.yaml")
    (dep,) = by_kind(theirs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--all-namespaces")] = f"--namespace={WATCHED}"
    assert mine == theirs


def test_operator_args_watch_one_namespace():
    (dep,) = by_kind(docs_of(HERE / "operator.yaml"), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--all-namespaces" not in c["args"] and "--standalone" in c["args"]
    assert [a for a in c["args"] if a.startswith("--namespace")] == [f"--namespace={WATCHED}"]
    if not SPEC_PY.exists():
        pytest.skip("operator/geocluster not there yet")
    from geocluster.cli import run_command

    params = run_command.make_context("run", list(c["args"][1:])).params
    assert not params["all_namespaces"] and list(params["namespaces"]) == [WATCHED]
