"""Pure tests of the object builders, each object validated offline against Kubernetes 1.33."""

from __future__ import annotations

import dataclasses
import itertools
import pathlib

import kubernetes_validate
import pytest
import yaml
from geocluster import resources as r
from geocluster.spec import parse_spec

EXAMPLES = pathlib.Path(__file__).parent / "examples"


def cluster(**spec) -> r.Cluster:
    return r.Cluster("fleet", "geo", "uid-1", parse_spec(spec))


FULL = r.Cluster(
    "fleet",
    "geo",
    "uid-1",
    parse_spec(yaml.safe_load((EXAMPLES / "full.yaml").read_text())["spec"]),
)


@pytest.mark.parametrize("c", [cluster(), FULL, cluster(followers=0)], ids=["min", "full", "zero"])
def test_every_object_is_valid_kubernetes(c):
    objs = r.build_all(c)
    assert [o["kind"] for o in objs][:4] == ["ConfigMap", "Service", "Service", "Service"]
    for obj in objs:
        kubernetes_validate.validate(obj, "1.33", strict=True)


def test_owner_reference_and_labels_everywhere():
    for obj in r.build_all(cluster()):
        meta = obj["metadata"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "geo.geocluster.io/v1alpha1",
                "kind": "GeoCluster",
                "name": "fleet",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == "fleet"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "geocluster-operator"


def test_one_statefulset_every_member_follows_the_configmaps_leader():
    c = cluster(followers=3, server={"appendfsync": "always"})
    sts = r.build_statefulset(c)
    assert sts["metadata"]["name"] == "fleet" and sts["spec"]["replicas"] == 4
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}  # the operator orders updates
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "geoserver", "--host", "0.0.0.0", "--port", "9851", "--dir", "/data",
        "--appendfsync", "always", "--metrics-addr", "0.0.0.0:9852",
        "--follow", "$(GEOCLUSTER_LEADER)",
    ]  # fmt: skip
    leader_env = next(e for e in container["env"] if e["name"] == "GEOCLUSTER_LEADER")
    assert leader_env["valueFrom"] == {"configMapKeyRef": {"name": "fleet-config", "key": "leader"}}
    assert r.build_configmap(c)["data"]["leader"] == "fleet-0.fleet-members.geo.svc.cluster.local:9851"
    # the role is on the pods (the operator's), never in the selector or template
    selector = sts["spec"]["selector"]["matchLabels"]
    template = sts["spec"]["template"]["metadata"]
    assert selector.items() <= template["labels"].items()
    assert "geo.geocluster.io/role" not in selector and "geo.geocluster.io/role" not in template["labels"]
    assert template["annotations"] == {"geo.geocluster.io/template-hash": r.template_hash(c)}
    assert r.build_leader_service(c)["spec"]["selector"]["geo.geocluster.io/role"] == "leader"
    assert r.build_follower_service(c)["spec"]["selector"]["geo.geocluster.io/role"] == "follower"
    kubernetes_validate.validate(sts, "1.33", strict=True)


def test_the_leader_is_whoever_status_names():
    c = cluster(followers=2)
    assert (r.leader_pod(c), r.follower_pods(c)) == ("fleet-0", ["fleet-1", "fleet-2"])
    moved = dataclasses.replace(c, leader="fleet-2")
    assert (r.leader_pod(moved), r.follower_pods(moved)) == ("fleet-2", ["fleet-0", "fleet-1"])
    cm = r.build_configmap(moved)["data"]
    assert cm["leaderMember"] == "fleet-2" and cm["leader"].startswith("fleet-2.fleet-members.")
    # the template does not name the leader: a switchover changes no pod
    assert r.template_hash(moved) == r.template_hash(c)
    assert r.template_hash(cluster(followers=2, image="geo:2")) != r.template_hash(c)
    # scaling down past the leader keeps its pod (the StatefulSet removes the highest first)
    high = dataclasses.replace(cluster(followers=0), leader="fleet-2")
    assert r.build_statefulset(high)["spec"]["replicas"] == 3
    # a v1alpha1 cluster's leader: every new pod follows it until the migration's switchover
    legacy = dataclasses.replace(c, leader="fleet-leader-0")
    assert r.follower_pods(legacy) == ["fleet-0", "fleet-1", "fleet-2"]
    assert r.build_configmap(legacy)["data"]["leader"].startswith("fleet-leader-0.fleet-members.")


def test_generated_password_by_default():
    """No authSecretRef: the pods read `<name>-auth`, which the builder makes from a password
    it is given (the handler draws it); the opt-out gives an explicitly empty password."""
    c = cluster()
    ref = {"secretKeyRef": {"name": "fleet-auth", "key": "password"}}
    container = r.build_statefulset(c)["spec"]["template"]["spec"]["containers"][0]
    assert [e["valueFrom"] for e in container["env"]][:2] == [ref, ref]
    secret = r.build_auth_secret(c, "s3cret")
    assert secret["metadata"]["name"] == "fleet-auth" and secret["type"] == "Opaque"
    assert secret["data"] == {"password": "czNjcmV0"}  # base64
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "Secret" not in {o["kind"] for o in r.build_all(c)}  # created once, never applied
    named = cluster(server={"authSecretRef": {"name": "s"}})
    assert r.build_auth_secret(named, "x") is None and r.auth_ref(named).name == "s"
    off = cluster(server={"generatePassword": False})
    assert r.build_auth_secret(off, "x") is None and r.auth_ref(off) is None
    env = r.build_statefulset(off)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[:2] == [{"name": "GEOSERVER_REQUIREPASS", "value": ""},
                       {"name": "GEOSERVER_LEADERAUTH", "value": ""}]  # fmt: skip


def test_pods_mount_no_service_account_token():
    for sts in (r.build_statefulset(FULL), r.build_statefulset(cluster())):
        assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_network_policy_admits_clients_members_operator_and_scrapers():
    c = r.Cluster("fleet", "geo", "uid-1", parse_spec({}), operator_namespace="geocluster-system")
    policy = r.build_network_policy(c)
    assert policy["metadata"]["name"] == "fleet"
    assert policy["spec"]["podSelector"] == {"matchLabels": r.selector(c)}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open
    geo = [{"protocol": "TCP", "port": 9851}]
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": geo},  # default clients: this namespace
        {"from": [
            {"podSelector": {"matchLabels": r.selector(c)}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "geocluster-system"}},
             "podSelector": {"matchLabels": r.OPERATOR_POD_LABELS}},
        ], "ports": geo},
        {"ports": [{"protocol": "TCP", "port": 9852}]},  # metrics from anywhere, that port only
    ]  # fmt: skip
    # the operator's pods carry the labels the chart and manifests give them
    assert r.OPERATOR_POD_LABELS == {"app.kubernetes.io/part-of": "geocluster",
                                     "app.kubernetes.io/component": "operator"}  # fmt: skip


def test_network_policy_peers_from_the_spec():
    rules = r.build_network_policy(FULL)["spec"]["ingress"]
    assert rules[0]["from"] == [
        {"podSelector": {"matchLabels": {"app": "dispatch"}}},
        {"namespaceSelector": {"matchLabels": {"team": "fleet"}},
         "podSelector": {"matchExpressions": [
             {"key": "tier", "operator": "In", "values": ["api", "worker"]}]}},
        {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}},
    ]  # fmt: skip
    assert rules[1]["from"][1]["namespaceSelector"] == {}  # operator namespace unknown: any
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert rules[2]["from"] == [{"namespaceSelector": monitoring}]
    no_clients = r.build_network_policy(cluster(networkPolicy={"clients": []}, metrics={"enabled": False}))
    assert [rule["from"][0] for rule in no_clients["spec"]["ingress"]] == [
        {"podSelector": {"matchLabels": r.selector(cluster())}}
    ]  # members and the operator only; no metrics port
    off = cluster(networkPolicy={"enabled": False})
    assert r.build_network_policy(off) is None and ("NetworkPolicy", "fleet") in r.unwanted(off)
    # only a Certificate a former spec.tls.issuerRef made (a DELETE that finds none is "absent")
    assert r.unwanted(cluster()) == [("Certificate", "fleet-tls")]


def test_auth_from_secret_without_leaking_it():
    c = cluster(server={"authSecretRef": {"name": "s", "key": "pw"}})
    container = r.build_statefulset(c)["spec"]["template"]["spec"]["containers"][0]
    ref = {"secretKeyRef": {"name": "s", "key": "pw"}}
    assert container["env"][:2] == [
        {"name": "GEOSERVER_REQUIREPASS", "valueFrom": ref},
        {"name": "GEOSERVER_LEADERAUTH", "valueFrom": ref},
    ]
    assert not any("pass" in a or "auth" in a for a in container["args"])  # not in `ps`


def test_probes_and_security():
    pod = r.build_statefulset(cluster())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "geoserver"}
    assert "tcpSocket" in container["livenessProbe"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "metrics", "containerPort": 9852, "protocol": "TCP"} in container["ports"]


def test_services_select_roles():
    c = cluster()
    assert r.build_leader_service(c)["spec"]["selector"]["geo.geocluster.io/role"] == "leader"
    assert r.build_follower_service(c)["metadata"]["name"] == "fleet-readonly"
    headless = r.build_headless_service(c)["spec"]
    assert headless["clusterIP"] == "None" and "geo.geocluster.io/role" not in headless["selector"]


def test_scheduling_presets():
    pod = r.build_statefulset(FULL)["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert pod["securityContext"]["fsGroup"] == 2000
    none = r.build_statefulset(cluster(scheduling={"antiAffinity": "none"}))
    assert "affinity" not in none["spec"]["template"]["spec"]


def test_pdb_optional():
    assert r.build_pdb(cluster())["spec"]["maxUnavailable"] == 1
    assert r.build_pdb(cluster(scheduling={"podDisruptionBudget": {"enabled": False}})) is None


def test_with_removals_nulls_only_what_the_live_object_has_and_we_dropped():
    from geocluster.kube import is_subset, with_removals

    live = {"podAntiAffinity": {"required": [1], "preferred": [2]}, "extra": {"a": 1}}
    want = {"podAntiAffinity": {"preferred": [3]}}
    patch = with_removals(want, live)
    assert patch == {"podAntiAffinity": {"preferred": [3], "required": None}, "extra": None}
    assert with_removals(None, {"disk": "ssd"}) is None  # a whole field dropped
    assert with_removals([1], [1, 2]) == [1]  # lists are replaced whole
    assert is_subset({"a": None, "b": 1}, {"b": 1})  # a null is satisfied by absence


def test_quantities_compare_by_value_as_the_api_server_stores_them():
    """The API server canonicalises quantities (`1.5Gi` -> `1536Mi`, CPU `0.5` -> `500m`): read
    back, they must not look like a change (a Warning and a no-op patch on every reconcile)."""
    from geocluster.kube import is_subset

    assert is_subset({"storage": "1.5Gi"}, {"storage": "1536Mi"})
    assert is_subset({"cpu": "0.5", "memory": "1G"}, {"cpu": "500m", "memory": "1000M"})
    assert not is_subset({"storage": "1Gi"}, {"storage": "2Gi"})
    assert not is_subset({"image": "geo:1.5"}, {"image": "geo:1.50"})
    assert not is_subset({"policy": "Always"}, {"policy": "Never"})


# --- spec.tls ---------------------------------------------------------------------------------

POD_DNS = "fleet-0.fleet-members.geo.svc.cluster.local"


def _container(sts: dict) -> dict:
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container


def _flags(args: list[str]) -> dict[str, str]:
    return {a: b for a, b in itertools.pairwise(args) if a.startswith("--tls")}


@pytest.mark.parametrize(("client_auth", "value"), [("none", "no"), ("optional", "optional"),
                                                     ("required", "yes")])  # fmt: skip
def test_tls_members_run_with_the_mounted_secret(client_auth, value):
    c = cluster(tls={"secretName": "fleet-certs", "clientAuth": client_auth})
    for sts in (r.build_statefulset(c),):
        kubernetes_validate.validate(sts, "1.33", strict=True)
        pod, container = sts["spec"]["template"]["spec"], _container(sts)
        volume = {"name": "tls", "secret": {"secretName": "fleet-certs", "defaultMode": 0o440}}
        assert volume in pod["volumes"]
        mount = {"name": "tls", "mountPath": "/etc/geoserver/tls", "readOnly": True}
        assert mount in container["volumeMounts"]
        assert _flags(container["args"]) == {
            "--tls-cert-file": "/etc/geoserver/tls/tls.crt",
            "--tls-key-file": "/etc/geoserver/tls/tls.key",
            "--tls-ca-cert-file": "/etc/geoserver/tls/ca.crt",
            "--tls-auth-clients": value,
            "--tls-replication": "yes",
        }
        assert container["livenessProbe"]["tcpSocket"] == {"port": "geoserver"}
    # followers dial (and verify) the leader by its pod DNS name, which the certificate names
    assert r.build_configmap(c)["data"]["leader"] == f"{POD_DNS}:9851"
    assert r.pod_dns(c, r.leader_pod(c)) == POD_DNS


def test_no_tls_no_volume_no_flags():
    sts = r.build_statefulset(cluster())
    assert [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert not _flags(_container(sts)["args"]) and r.build_certificate(cluster()) is None
    assert _container(sts)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "geoserver"}


@pytest.mark.parametrize(
    ("spec", "probe"),
    [
        ({}, {"httpGet": {"path": "/healthz", "port": "metrics"}}),  # metrics listener: plaintext
        ({"metrics": {"enabled": False}},
         {"httpGet": {"path": "/healthz", "port": "geoserver", "scheme": "HTTPS"}}),
        ({"metrics": {"enabled": False}, "tls": {"clientAuth": "optional"}},
         {"httpGet": {"path": "/healthz", "port": "geoserver", "scheme": "HTTPS"}}),
    ],
)
def test_tls_readiness_probe_the_kubelet_can_pass(spec, probe):
    tls = {"secretName": "s", **spec.pop("tls", {})}
    got = r.readiness_probe(cluster(tls=tls, **spec))
    assert {k: v for k, v in got.items() if k in ("httpGet", "exec")} == probe


def test_certificate_for_issuer_ref():
    c = cluster(tls={"issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}})
    cert = r.build_certificate(c)
    assert cert["apiVersion"] == "cert-manager.io/v1" and cert["kind"] == "Certificate"
    assert cert["metadata"]["name"] == "fleet-tls"
    assert cert["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = cert["spec"]
    assert spec["secretName"] == "fleet-tls"
    assert spec["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert spec["dnsNames"] == [
        "*.fleet-members.geo.svc.cluster.local",  # every member pod, also after scaling
        "fleet-members.geo.svc.cluster.local",
        "fleet", "fleet.geo", "fleet.geo.svc", "fleet.geo.svc.cluster.local",
        "fleet-readonly", "fleet-readonly.geo", "fleet-readonly.geo.svc",
        "fleet-readonly.geo.svc.cluster.local",
        "localhost",
    ]  # fmt: skip
    assert spec["ipAddresses"] == ["127.0.0.1"]
    assert {"server auth", "client auth"} <= set(spec["usages"])  # members are clients too
    # the pods mount the Secret cert-manager writes, and it is never a thing to remove
    pod = r.build_statefulset(c)["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "fleet-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert ("Certificate", "fleet-tls") not in r.unwanted(c)
    assert r.build_certificate(cluster(tls={"secretName": "x"})) is None
    assert ("Certificate", "fleet-tls") in r.unwanted(cluster(tls={"secretName": "x"}))


def test_certificate_names_cover_every_member_and_service():
    """Each name a member is reached by matches a dnsName (leftmost-label wildcards, RFC 6125)."""
    c = cluster(followers=3, clusterDomain="example.internal", tls={"issuerRef": {"name": "x"}})
    names = r.build_certificate(c)["spec"]["dnsNames"]

    def covered(host: str) -> bool:
        return any(n == host or (n.startswith("*.") and host.partition(".")[2] == n[2:]) for n in names)

    pods = [r.leader_pod(c), *r.follower_pods(c)]
    assert all(covered(r.pod_dns(c, p)) for p in pods)
    services = [r.build_headless_service(c), r.build_leader_service(c), r.build_follower_service(c)]
    for svc in services:
        assert covered(f"{svc['metadata']['name']}.geo.svc.example.internal")
    assert covered(r.leader_dns(c)) and covered("localhost")


def test_pod_and_service_fields_of_the_spec():
    """imagePullSecrets, priorityClassName, podLabels/podAnnotations and serviceAccountName on
    the pods (the token still unmounted); type, annotations and source ranges on the two client
    Services, never on the headless one."""
    c = cluster(imagePullSecrets=["regcred"], priorityClassName="geo-high", serviceAccountName="geo",
                podLabels={"team": "fleet"}, podAnnotations={"sidecar.istio.io/inject": "false"},
                service={"type": "LoadBalancer", "annotations": {"lb/internal": "true"},
                         "loadBalancerSourceRanges": ["10.0.0.0/8"]})  # fmt: skip
    sts = r.build_statefulset(c)
    kubernetes_validate.validate(sts, "1.33", strict=True)
    pod = sts["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "geo-high"
    assert pod["serviceAccountName"] == "geo" and pod["automountServiceAccountToken"] is False
    meta = sts["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "fleet" and meta["labels"].items() >= r.selector(c).items()
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert meta["annotations"][r.TEMPLATE_HASH] == r.template_hash(c) != r.template_hash(cluster())
    for svc in (r.build_leader_service(c), r.build_follower_service(c)):
        kubernetes_validate.validate(svc, "1.33", strict=True)
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
        assert svc["metadata"]["annotations"] == {"lb/internal": "true"}
    headless = r.build_headless_service(c)
    assert "type" not in headless["spec"] and "annotations" not in headless["metadata"]
    plain = r.build_statefulset(cluster())["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "priorityClassName", "serviceAccountName"} & set(plain)
    assert r.build_leader_service(cluster())["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"podLabels": {"app.kubernetes.io/instance": "x"}}, "are the operator's"),
        ({"podLabels": {"geo.geocluster.io/role": "leader"}}, "are the operator's"),
        ({"podAnnotations": {"geo.geocluster.io/template-hash": "x"}}, "is the operator's"),
        ({"service": {"loadBalancerSourceRanges": ["10.0.0.0/8"]}}, "needs service.type LoadBalancer"),
        ({"service": {"type": "ExternalName"}}, "spec.service.type"),
    ],
)
def test_pod_and_service_fields_refused(fields, message):
    from geocluster.spec import SpecError

    with pytest.raises(SpecError, match=message):
        parse_spec(fields)
