"""The Helm chart: lint, render with every ci/*values.yaml, validate every rendered object
offline, least-privilege RBAC with exactly the expected verbs, and args the CLI accepts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from shipping_lib import (
    CHART,
    CLUSTER_PEERING,
    CLUSTER_READ_RULES,
    NAMESPACED_PEERING,
    NAMESPACED_RULES,
    ROOT,
    SPEC_PY,
    helm_template,
    load_all,
    rules_table,
    run,
    validate_object,
)

CI_VALUES = sorted((CHART / "ci").glob("*values.yaml"))
ids = [p.name for p in CI_VALUES]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_ci_values_exist():
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "namespaced-values.yaml",
        "monitoring-values.yaml",
    }


@pytest.mark.parametrize("values", CI_VALUES, ids=ids)
def test_helm_lint(helm, values):
    proc = run([helm, "lint", "--strict", str(CHART), "-f", str(values)])
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=ids)
def test_rendered_objects_validate(helm, values):
    docs = helm_template(helm, values, "--include-crds")
    assert by_kind(docs, "Deployment") and by_kind(docs, "CustomResourceDefinition")
    for doc in docs:
        validate_object(doc)


def test_validation_is_not_vacuous(helm):
    """kubernetes-validate --strict catches an unknown field in a rendered Deployment."""
    (dep,) = by_kind(helm_template(helm), "Deployment")
    dep["spec"]["replicaz"] = 1
    with pytest.raises(pytest.fail.Exception, match="replicaz"):
        validate_object(dep)


@pytest.mark.parametrize("values", CI_VALUES, ids=ids)
def test_every_object_has_the_chart_labels(helm, values):
    for doc in helm_template(helm, values):
        labels = doc["metadata"].get("labels", {})
        for key in (
            "helm.sh/chart",
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
        ):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "watch.scope=bogus"], "scope"),
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "notAValue=1"], "notAValue"),
        (["--set", "serviceAccount.create=false"], "serviceAccount"),
        (["--set", "networkPolicy.enabled=maybe"], "networkPolicy"),
    ],
)
def test_values_schema_rejects(helm, args, message):
    proc = run([helm, "template", "x", str(CHART), *args], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_values_schema_is_valid_json_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_every_value_is_commented():
    """Each key in values.yaml has a comment right above it, or sits inside a block whose
    key has a `# --` comment (e.g. the fields of resources: or securityContext:)."""
    lines = (CHART / "values.yaml").read_text().splitlines()

    def indent(line):
        return len(line) - len(line.lstrip())

    def commented(i):
        return i > 0 and lines[i - 1].strip().startswith("#")

    missing = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("-") or ":" not in s:
            continue
        if commented(i):
            continue
        # walk up the ancestors: a documented ancestor block covers its children
        ok, level = False, indent(line)
        for j in range(i - 1, -1, -1):
            t = lines[j].strip()
            if t and not t.startswith("#") and indent(lines[j]) < level:
                if commented(j):
                    ok = True
                    break
                level = indent(lines[j])
        if not ok:
            missing.append(f"line {i + 1}: {s}")
    assert not missing, "values without a comment:\n" + "\n".join(missing)


# --- RBAC ---------------------------------------------------------------------------------------


def test_rbac_cluster_scope_exact(helm):
    docs = helm_template(helm)
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    (role,) = by_kind(docs, "ClusterRole")
    assert rules_table(role) == {**NAMESPACED_RULES, **CLUSTER_READ_RULES, **CLUSTER_PEERING}
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "geocluster-system"}
    ]


def test_rbac_namespace_scope_exact(helm):
    docs = helm_template(helm, CHART / "ci" / "namespaced-values.yaml")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert rules_table(cluster_role) == CLUSTER_READ_RULES
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["geo-a", "geo-b"]
    for role in roles:
        assert rules_table(role) == {**NAMESPACED_RULES, **NAMESPACED_PEERING}
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["geo-a", "geo-b"]
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == "geocluster-system"
    # The operator serves exactly those namespaces, and its peering objects live there.
    (dep,) = by_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=geo-a",
        "--namespace=geo-b",
    ]
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["geo-a", "geo-b"]


def test_rbac_namespace_scope_defaults_to_release_namespace(helm):
    docs = helm_template(helm, None, "--set", "watch.scope=namespace")
    assert [r["metadata"]["namespace"] for r in by_kind(docs, "Role")] == ["geocluster-system"]


def test_rbac_standalone_has_no_peering(helm):
    docs = helm_template(helm, CHART / "ci" / "standalone-values.yaml")
    (role,) = by_kind(docs, "ClusterRole")
    assert rules_table(role) == {**NAMESPACED_RULES, **CLUSTER_READ_RULES}
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "ServiceAccount")
    (dep,) = by_kind(docs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "geocluster-operator"
    assert "--standalone" in spec["containers"][0]["args"]


# --- Deployment ---------------------------------------------------------------------------------


def container(docs):
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def test_deployment_hardening_and_probes(helm):
    dep, c = container(helm_template(helm))
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--liveness=0.0.0.0:8080" in c["args"] and "--metrics=0.0.0.0:9090" in c["args"]
    assert "--peering=geocluster" in c["args"] and "--all-namespaces" in c["args"]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert c["image"] == f"ghcr.io/geocluster/geocluster:{chart_meta()['appVersion']}"


def chart_meta():
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def parse_with_cli(command: list[str], args: list[str]):
    """Parse a container's command+args with the real `geocluster` click CLI (nothing runs)."""
    if not SPEC_PY.exists():
        pytest.skip("operator/geocluster not there yet")
    from geocluster.cli import cli, run_command

    assert command == ["geocluster"]
    i = args.index("run")
    cli.make_context("geocluster", [*list(args[:i]), "run"])  # group options
    return run_command.make_context("run", list(args[i + 1 :])).params


@pytest.mark.parametrize("values", CI_VALUES, ids=ids)
def test_cli_accepts_rendered_args(helm, values):
    _, c = container(helm_template(helm, values))
    params = parse_with_cli(c["command"], c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert params["liveness"].rpartition(":")[2] == str(ports["healthz"])
    if "metrics" in ports:
        assert params["metrics_addr"].rpartition(":")[2] == str(ports["metrics"])
    assert params["all_namespaces"] or params["namespaces"]


# --- NetworkPolicy ------------------------------------------------------------------------------


def test_operator_network_policy(helm):
    """On by default: ingress to the operator pod on its metrics port only, optionally from the
    given peers; off with networkPolicy.enabled=false."""
    docs = helm_template(helm)
    (policy,) = by_kind(docs, "NetworkPolicy")
    dep, c = container(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": ports["metrics"]}]}]
    peer = '[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]'
    (scoped,) = by_kind(helm_template(helm, None, "--set-json", f"networkPolicy.metricsFrom={peer}"),
                        "NetworkPolicy")  # fmt: skip
    assert scoped["spec"]["ingress"][0]["from"] == json.loads(peer)
    validate_object(scoped)
    (closed,) = by_kind(helm_template(helm, None, "--set", "metrics.enabled=false"), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []  # nothing but the kubelet (always admitted)
    assert not by_kind(helm_template(helm, None, "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


@pytest.mark.parametrize("values", CI_VALUES, ids=ids)
def test_geocluster_network_policy_admits_this_operator(helm, values):
    """The operator's NetworkPolicy of each GeoCluster admits pods with OPERATOR_POD_LABELS from
    $POD_NAMESPACE: the chart's operator pod carries those labels and gets that variable."""
    if not SPEC_PY.exists():
        pytest.skip("operator/geocluster not there yet")
    from geocluster import resources
    from geocluster.spec import parse_spec

    dep, c = container(helm_template(helm, values))
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert resources.OPERATOR_POD_LABELS.items() <= labels.items()
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    cluster = resources.Cluster("demo", "geo", "0000", parse_spec({}), "geocluster-system")
    policy = resources.build_network_policy(cluster)
    validate_object(policy)
    operator_peer = policy["spec"]["ingress"][1]["from"][1]
    assert operator_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": dep["metadata"]["namespace"]
    }


# --- metrics and monitors --------------------------------------------------------------------


def test_monitors_select_what_exists(helm):
    docs = helm_template(helm, CHART / "ci" / "monitoring-values.yaml")
    (svc,) = by_kind(docs, "Service")
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    (pm,) = by_kind(docs, "PodMonitor")
    assert sm["metadata"]["labels"]["release"] == pm["metadata"]["labels"]["release"]
    (gc,) = by_kind(docs, "GeoCluster")
    assert gc["metadata"]["name"] == "demo"
    if not SPEC_PY.exists():
        return
    # The PodMonitor's selector and port match the pods the operator builds.
    from geocluster import resources
    from geocluster.spec import parse_spec

    gc = {**gc, "metadata": {**gc["metadata"], "uid": "0000"}}
    cluster = resources.Cluster.from_body(gc, parse_spec(gc["spec"]))
    for obj in resources.build_all(cluster):
        if obj["kind"] != "StatefulSet":
            continue
        tmpl = obj["spec"]["template"]
        assert pm["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
        names = {p["name"] for ct in tmpl["spec"]["containers"] for p in ct.get("ports", [])}
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] in names


def test_no_monitors_by_default(helm):
    kinds = {d["kind"] for d in helm_template(helm)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "GeoCluster"}


def render_notes(helm, tmp_path, *args):
    """NOTES.txt rendered offline: `helm install --dry-run` wants a cluster, so wrap the notes
    in a define and render them into a ConfigMap of a throwaway copy of the chart."""
    chart = tmp_path / "geocluster"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "notes" }}' + notes + "{{- end }}")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include "notes" . | quote }}}\n'
    )
    out = run(
        [
            helm,
            "template",
            "geo",
            str(chart),
            "--namespace",
            "geocluster-system",
            "--show-only",
            "templates/notes.yaml",
            *args,
        ]
    ).stdout
    return yaml.safe_load(out)["data"]["notes"]


def test_notes_render(helm, tmp_path):
    notes = render_notes(helm, tmp_path)
    assert "all namespaces" in notes and "finalizers" in notes and "crd.yaml" in notes
    notes = render_notes(helm, tmp_path / "ns", "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert "geo-a, geo-b" in notes


def test_crds_dir_holds_only_generated_and_kopf_crds():
    names = sorted(p.name for p in (CHART / "crds").iterdir())
    assert names == ["geoclusters.yaml", "kopf-peering.yaml"]
    kinds = [d["spec"]["names"]["kind"] for d in load_all((CHART / "crds" / "kopf-peering.yaml").read_text())]
    assert kinds == ["ClusterKopfPeering", "KopfPeering"]


def test_chart_files_present():
    for rel in (
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/_helpers.tpl",
        "templates/NOTES.txt",
        "crds/geoclusters.yaml",
    ):
        assert (CHART / rel).is_file(), rel
    assert Path(ROOT / "manifests" / "crd.yaml").is_file()
