"""Pure builders: a GeoCluster (metadata + validated spec) -> Kubernetes object dicts.

Invariants: every object carries the same ``app.kubernetes.io/*`` labels from :func:`labels`
and a controller owner reference to the GeoCluster (so deleting it garbage-collects them);
selectors come from :func:`selector` only. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import API_VERSION, GEOSERVER_PORT, GROUP, KIND, GeoClusterSpec

ROLE_LABEL = f"{GROUP}/role"
DATA_DIR = "/data"
# geoserver reads its passwords from these variables, so they never appear in its arguments.
REQUIREPASS_ENV = "GEOSERVER_REQUIREPASS"
LEADERAUTH_ENV = "GEOSERVER_LEADERAUTH"
UID = 10001


@dataclass(frozen=True)
class Cluster:
    """What the builders need of a GeoCluster object."""

    name: str
    namespace: str
    uid: str
    spec: GeoClusterSpec

    @classmethod
    def from_body(cls, body: dict[str, Any], spec: GeoClusterSpec) -> Cluster:
        meta = body["metadata"]
        return cls(meta["name"], meta.get("namespace", "default"), meta.get("uid", ""), spec)


# --- names and labels -----------------------------------------------------------------------


def leader_sts_name(c: Cluster) -> str:
    return f"{c.name}-leader"


def follower_sts_name(c: Cluster) -> str:
    return f"{c.name}-follower"


def headless_name(c: Cluster) -> str:
    return f"{c.name}-members"


def leader_pod(c: Cluster) -> str:
    return f"{leader_sts_name(c)}-0"


def follower_pods(c: Cluster) -> list[str]:
    return [f"{follower_sts_name(c)}-{i}" for i in range(c.spec.followers)]


def leader_dns(c: Cluster) -> str:
    """Stable DNS name of the leader pod (via the headless Service)."""
    return f"{leader_pod(c)}.{headless_name(c)}.{c.namespace}.svc.{c.spec.cluster_domain}"


def selector(c: Cluster, role: str | None = None) -> dict[str, str]:
    """Labels that select this cluster's pods (of one role, if given)."""
    out = {"app.kubernetes.io/name": "geoserver", "app.kubernetes.io/instance": c.name}
    if role:
        out[ROLE_LABEL] = role
    return out


def labels(c: Cluster, role: str | None = None) -> dict[str, str]:
    """Selector labels plus the descriptive app.kubernetes.io ones."""
    out = {
        **selector(c, role),
        "app.kubernetes.io/part-of": "geocluster",
        "app.kubernetes.io/managed-by": "geocluster-operator",
    }
    out["app.kubernetes.io/component"] = role or "cluster"
    return out


def _meta(c: Cluster, name: str, role: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": c.namespace,
        "labels": labels(c, role),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": c.name,
                "uid": c.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


# --- pods -------------------------------------------------------------------------------------


def geoserver_args(c: Cluster, role: str) -> list[str]:
    """Command line of geoserver in a member container."""
    s = c.spec
    args = ["geoserver", "--host", "0.0.0.0", "--port", str(GEOSERVER_PORT), "--dir", DATA_DIR]
    args += ["--appendfsync", s.server.appendfsync]
    if s.metrics.enabled:
        args += ["--metrics-addr", f"0.0.0.0:{s.metrics.port}"]
    if role == "follower":
        args += ["--follow", f"{leader_dns(c)}:{GEOSERVER_PORT}"]
    return args + list(s.server.extra_args)


def _container(c: Cluster, role: str) -> dict[str, Any]:
    s = c.spec
    ports = [{"name": "geoserver", "containerPort": GEOSERVER_PORT, "protocol": "TCP"}]
    if s.metrics.enabled:
        ports.append({"name": "metrics", "containerPort": s.metrics.port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "geoserver",
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": geoserver_args(c, role),
        "ports": ports,
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "geoserver"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        # TCP, not /healthz: a follower catching up is not ready, but must not be killed.
        "livenessProbe": {
            "tcpSocket": {"port": "geoserver"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            **(s.security_context.container or {}),
        },
    }
    if s.resources:
        container["resources"] = s.resources
    # always set (empty without auth): geoserver prefers a given password, even empty, over the
    # one a CONFIG REWRITE saved on the volume, so dropping authSecretRef really drops it
    names = [REQUIREPASS_ENV] + ([LEADERAUTH_ENV] if role == "follower" else [])
    ref = s.server.auth_secret_ref
    source: dict[str, Any] = (
        {"valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}} if ref else {"value": ""}
    )
    container["env"] = [{"name": name, **source} for name in names]
    return container


def _affinity(c: Cluster) -> dict[str, Any] | None:
    term = {
        "labelSelector": {"matchLabels": selector(c)},
        "topologyKey": "kubernetes.io/hostname",
    }
    preset = c.spec.scheduling.anti_affinity
    if preset == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if preset == "preferred":
        weighted = {"weight": 100, "podAffinityTerm": term}
        return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [weighted]}}
    return None


def _pod_spec(c: Cluster, role: str) -> dict[str, Any]:
    s = c.spec
    pod: dict[str, Any] = {
        "containers": [_container(c, role)],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
            **(s.security_context.pod or {}),
        },
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
    }
    if affinity := _affinity(c):
        pod["affinity"] = affinity
    if s.scheduling.topology_spread:
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(c)},
            }
        ]
    if s.scheduling.node_selector:
        pod["nodeSelector"] = dict(s.scheduling.node_selector)
    if s.scheduling.tolerations:
        pod["tolerations"] = list(s.scheduling.tolerations)
    return pod


def _statefulset(c: Cluster, name: str, role: str, replicas: int) -> dict[str, Any]:
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": c.spec.storage.size}},
    }
    if c.spec.storage.storage_class_name:
        pvc_spec["storageClassName"] = c.spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(c, name, role),
        "spec": {
            "replicas": replicas,
            "serviceName": headless_name(c),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(c, role)},
            "template": {
                "metadata": {"labels": labels(c, role)},
                "spec": _pod_spec(c, role),
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(c, role)},
                    "spec": pvc_spec,
                }
            ],
        },
    }


def build_leader_statefulset(c: Cluster) -> dict[str, Any]:
    """The leader: always exactly one pod, ``<name>-leader-0``."""
    return _statefulset(c, leader_sts_name(c), "leader", 1)


def build_follower_statefulset(c: Cluster) -> dict[str, Any]:
    """spec.followers pods, each started with ``--follow`` to the leader's DNS name."""
    return _statefulset(c, follower_sts_name(c), "follower", c.spec.followers)


# --- services, config, PDB --------------------------------------------------------------------


def _service(c: Cluster, name: str, role: str | None, headless: bool) -> dict[str, Any]:
    ports = [{"name": "geoserver", "port": GEOSERVER_PORT, "targetPort": "geoserver"}]
    if c.spec.metrics.enabled:
        ports.append({"name": "metrics", "port": c.spec.metrics.port, "targetPort": "metrics"})
    spec: dict[str, Any] = {"selector": selector(c, role), "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = True  # followers must find a not-yet-ready leader
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(c, name, role), "spec": spec}


def build_headless_service(c: Cluster) -> dict[str, Any]:
    """Stable per-pod DNS names for all members."""
    return _service(c, headless_name(c), None, headless=True)


def build_leader_service(c: Cluster) -> dict[str, Any]:
    """Read-write endpoint: the leader only."""
    return _service(c, c.name, "leader", headless=False)


def build_follower_service(c: Cluster) -> dict[str, Any]:
    """Read-only endpoint: the followers."""
    return _service(c, f"{c.name}-readonly", "follower", headless=False)


def build_configmap(c: Cluster) -> dict[str, Any]:
    """Connection facts for clients and humans (the pods take their settings from args)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(c, f"{c.name}-config", None),
        "data": {
            "leader": f"{leader_dns(c)}:{GEOSERVER_PORT}",
            "readWriteService": f"{c.name}.{c.namespace}.svc:{GEOSERVER_PORT}",
            "readOnlyService": f"{c.name}-readonly.{c.namespace}.svc:{GEOSERVER_PORT}",
            "appendfsync": c.spec.server.appendfsync,
        },
    }


def build_pdb(c: Cluster) -> dict[str, Any] | None:
    """PodDisruptionBudget over all members, or None when disabled."""
    pdb = c.spec.scheduling.pod_disruption_budget
    if not pdb.enabled:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(c, c.name, None),
        "spec": {"maxUnavailable": pdb.max_unavailable, "selector": {"matchLabels": selector(c)}},
    }


def unwanted(c: Cluster) -> list[tuple[str, str]]:
    """(kind, name) of optional objects the spec turned off, to delete if they exist."""
    if c.spec.scheduling.pod_disruption_budget.enabled:
        return []
    return [("PodDisruptionBudget", c.name)]


def build_all(c: Cluster) -> list[dict[str, Any]]:
    """Every desired object, in apply order (Services before StatefulSets)."""
    objs = [
        build_configmap(c),
        build_headless_service(c),
        build_leader_service(c),
        build_follower_service(c),
        build_leader_statefulset(c),
        build_follower_statefulset(c),
        build_pdb(c),
    ]
    return [o for o in objs if o is not None]
