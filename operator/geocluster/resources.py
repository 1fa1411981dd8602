"""Pure builders: a GeoCluster (metadata + validated spec) -> Kubernetes object dicts.

Invariants: every object carries the same ``app.kubernetes.io/*`` labels from :func:`labels`
and a controller owner reference to the GeoCluster (so deleting it garbage-collects them);
selectors come from :func:`selector` only. Nothing here does I/O.

The leader is a role, not a pod (docs/operator.md#high-availability): one StatefulSet
``<name>`` runs every member (``<name>-0`` ... ``<name>-<followers>``), the operator puts
``geo.geocluster.io/role=leader|follower`` on the pods and the Services select by it. Every
member starts as a follower of the leader the ConfigMap names (its own name included: geoserver
refuses to follow itself, so the named leader serves reads and refuses writes until the
operator tells it ``FOLLOW no one``): a restarted ex-leader never takes a write first.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .spec import (
    API_VERSION,
    GEOSERVER_PORT,
    GROUP,
    KIND,
    GeoClusterSpec,
    NetworkPolicyPeer,
    SecretKeyRef,
    TLSSpec,
    dump,
)

ROLE_LABEL = f"{GROUP}/role"
# On the pod template, so on every pod: which template a pod was made from (the operator
# replaces outdated pods itself, in its order: updateStrategy OnDelete).
TEMPLATE_HASH = f"{GROUP}/template-hash"
DATA_DIR = "/data"
# geoserver reads its passwords from these variables, so they never appear in its arguments.
REQUIREPASS_ENV = "GEOSERVER_REQUIREPASS"
LEADERAUTH_ENV = "GEOSERVER_LEADERAUTH"
# The leader's host:port from the ConfigMap, read when the container starts (each restart reads
# the operator's current view); `--follow $(GEOCLUSTER_LEADER)` in the arguments.
LEADER_ENV = "GEOCLUSTER_LEADER"
LEADER_KEY = "leader"
UID = 10001
PASSWORD_KEY = "password"
TLS_DIR = "/etc/geoserver/tls"  # the TLS Secret's keys as files: tls.crt, tls.key, ca.crt
CLIENT_AUTH = {"none": "no", "optional": "optional", "required": "yes"}  # -> tls-auth-clients
CERT_MANAGER_API = "cert-manager.io/v1"
# Labels the chart and manifests put on the operator's pod: the NetworkPolicy admits its probes.
OPERATOR_POD_LABELS = {"app.kubernetes.io/part-of": "geocluster", "app.kubernetes.io/component": "operator"}


@dataclass(frozen=True)
class Cluster:
    """What the builders need of a GeoCluster object."""

    name: str
    namespace: str
    uid: str
    spec: GeoClusterSpec
    # where the operator runs (its probes must get through the NetworkPolicy); None = unknown,
    # then operator pods of any namespace are admitted
    operator_namespace: str | None = None
    # the member that leads (status.leader); None = not decided yet: the first pod
    leader: str | None = None

    @classmethod
    def from_body(
        cls, body: dict[str, Any], spec: GeoClusterSpec, operator_namespace: str | None = None,
        leader: str | None = None,
    ) -> Cluster:
        """``leader`` overrides the body's status.leader (a fresher read of the status)."""
        meta = body["metadata"]
        namespace = meta.get("namespace", "default")
        leader = leader or (body.get("status") or {}).get("leader") or None
        return cls(meta["name"], namespace, meta.get("uid", ""), spec, operator_namespace, leader)


# --- names and labels -----------------------------------------------------------------------


def sts_name(c: Cluster) -> str:
    """The one StatefulSet of all members."""
    return c.name


def legacy_sts_names(c: Cluster) -> tuple[str, str]:
    """The leader and follower StatefulSets of v1alpha1 clusters made before roles moved to
    labels (docs/upgrade.md): migrated away, then deleted."""
    return f"{c.name}-leader", f"{c.name}-follower"


def headless_name(c: Cluster) -> str:
    return f"{c.name}-members"


def config_name(c: Cluster) -> str:
    return f"{c.name}-config"


def replicas(c: Cluster) -> int:
    """Pods of the StatefulSet: one leader and spec.followers followers, and never fewer than
    the leader's ordinal needs (scaling down past the leader waits for a switchover to a lower
    ordinal: the StatefulSet removes the highest ordinals first)."""
    return max(c.spec.followers + 1, ordinal(c.leader or "") + 1)


def member_pods(c: Cluster) -> list[str]:
    """Every member pod, in ordinal order."""
    return [f"{sts_name(c)}-{i}" for i in range(replicas(c))]


def ordinal(pod: str) -> int:
    """The StatefulSet ordinal of a pod name (0 for a name without one)."""
    tail = pod.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def leader_pod(c: Cluster) -> str:
    """The member that leads (status.leader), else the first pod."""
    return c.leader or member_pods(c)[0]


def follower_pods(c: Cluster) -> list[str]:
    """Every member pod but the leader."""
    return [p for p in member_pods(c) if p != leader_pod(c)]


def auth_secret_name(c: Cluster) -> str:
    """The Secret the operator generates when the spec names none."""
    return f"{c.name}-auth"


def auth_ref(c: Cluster) -> SecretKeyRef | None:
    """The Secret key holding the members' password: spec.server.authSecretRef, else the
    generated ``<name>-auth``, or None when generatePassword is false (no password)."""
    server = c.spec.server
    if server.auth_secret_ref is not None:
        return server.auth_secret_ref
    if server.generate_password:
        return SecretKeyRef(name=auth_secret_name(c), key=PASSWORD_KEY)
    return None


def pod_dns(c: Cluster, pod: str) -> str:
    """Stable DNS name of a member pod (via the headless Service)."""
    return f"{pod}.{headless_name(c)}.{c.namespace}.svc.{c.spec.cluster_domain}"


def leader_dns(c: Cluster) -> str:
    """Stable DNS name of the leader pod: what followers follow (and, with TLS, verify)."""
    return pod_dns(c, leader_pod(c))


def tls_secret_name(c: Cluster) -> str | None:
    """The Secret the members' certificate is in: spec.tls.secretName, or ``<name>-tls``
    that cert-manager fills for issuerRef; None without TLS."""
    tls = c.spec.tls
    if tls is None:
        return None
    return tls.secret_name or certificate_name(c)


def certificate_name(c: Cluster) -> str:
    """The cert-manager Certificate (and its Secret) the operator creates for issuerRef."""
    return f"{c.name}-tls"


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


def geoserver_args(c: Cluster) -> list[str]:
    """Command line of geoserver in a member container."""
    s = c.spec
    args = ["geoserver", "--host", "0.0.0.0", "--port", str(GEOSERVER_PORT), "--dir", DATA_DIR]
    args += ["--appendfsync", s.server.appendfsync]
    if s.metrics.enabled:
        args += ["--metrics-addr", f"0.0.0.0:{s.metrics.port}"]
    if s.tls is not None:
        args += _tls_args(s.tls)
    # every member, the named leader too: only the operator's FOLLOW no one makes a leader
    args += ["--follow", f"$({LEADER_ENV})"]
    return args + list(s.server.extra_args)


def _tls_args(tls: TLSSpec) -> list[str]:
    """TLS-only port, replication over TLS verifying the leader's DNS name with ca.crt, and
    the files of the mounted Secret (reloaded when kubelet updates them)."""
    return [
        "--tls-cert-file", f"{TLS_DIR}/tls.crt",
        "--tls-key-file", f"{TLS_DIR}/tls.key",
        "--tls-ca-cert-file", f"{TLS_DIR}/ca.crt",
        "--tls-auth-clients", CLIENT_AUTH[tls.client_auth],
        "--tls-replication", "yes",
    ]  # fmt: skip


# An exec readiness probe for TLS with required client certificates and no metrics port: the
# kubelet's httpGet can present no client certificate. The container's own python, stdlib
# only; HEALTHZ over RESP on loopback with the pod's own certificate, as a member would.
_EXEC_HEALTHZ = (
    "import socket,ssl,sys\n"
    "d=sys.argv[1]\n"
    "c=ssl.create_default_context(cafile=d+'/ca.crt')\n"
    "c.check_hostname=False\n"
    "c.load_cert_chain(d+'/tls.crt',d+'/tls.key')\n"
    "s=c.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2])),3))\n"
    "s.sendall(b'*1\\r\\n$7\\r\\nHEALTHZ\\r\\n')\n"
    "r=s.recv(256)\n"
    "sys.exit(0 if r.startswith(b'+') or b'\"ok\":true' in r else 1)\n"
)


def readiness_probe(c: Cluster) -> dict[str, Any]:
    """HEALTHZ as the kubelet can reach it: /healthz on the geoserver port (HTTPS with TLS:
    the kubelet does not verify), or on the plaintext metrics listener when TLS asks for
    client certificates, or an exec of HEALTHZ with the pod's own certificate without one."""
    s = c.spec
    timing = {"periodSeconds": 5, "failureThreshold": 3}
    if s.tls is None:
        return {"httpGet": {"path": "/healthz", "port": "geoserver"}, **timing}
    if s.metrics.enabled:  # the metrics listener serves /healthz too, always plaintext
        return {"httpGet": {"path": "/healthz", "port": "metrics"}, **timing}
    if s.tls.client_auth != "required":
        return {"httpGet": {"path": "/healthz", "port": "geoserver", "scheme": "HTTPS"}, **timing}
    command = ["python", "-c", _EXEC_HEALTHZ, TLS_DIR, str(GEOSERVER_PORT)]
    return {"exec": {"command": command}, "timeoutSeconds": 5, **timing}


def _container(c: Cluster) -> dict[str, Any]:
    s = c.spec
    ports = [{"name": "geoserver", "containerPort": GEOSERVER_PORT, "protocol": "TCP"}]
    if s.metrics.enabled:
        ports.append({"name": "metrics", "containerPort": s.metrics.port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "geoserver",
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": geoserver_args(c),
        "ports": ports,
        "readinessProbe": readiness_probe(c),
        # TCP, not /healthz: a follower catching up is not ready, but must not be killed (with
        # TLS too: the connection is opened and closed, no handshake is needed).
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
    if s.tls is not None:
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if s.resources:
        container["resources"] = s.resources
    # always set (empty without auth): geoserver prefers a given password, even empty, over the
    # one a CONFIG REWRITE saved on the volume, so dropping authSecretRef really drops it
    ref = auth_ref(c)
    source: dict[str, Any] = (
        {"valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}} if ref else {"value": ""}
    )
    leader = {"valueFrom": {"configMapKeyRef": {"name": config_name(c), "key": LEADER_KEY}}}
    container["env"] = [{"name": name, **source} for name in (REQUIREPASS_ENV, LEADERAUTH_ENV)]
    container["env"].append({"name": LEADER_ENV, **leader})  # before args use it: $(...)
    return container


# --- bootstrap (spec.bootstrap.fromBackup / fromAOF: docs/backup.md#kubernetes) --------------

BOOTSTRAP_CONTAINER = "bootstrap"
# boto3's own variables: `geocluster restore` takes credentials from its default chain
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
TERMINATION_LOG = "/dev/termination-log"  # the kubelet's default terminationMessagePath


def restore_args(c: Cluster) -> list[str] | None:
    """The init container's command line: `geocluster restore --if-empty` into the data volume
    (a pod whose volume has an AOF, e.g. after a restart, keeps it), reporting its result as the
    container's termination message (the operator reads it from the pod status: the pods have
    no API token), or None when the spec asks no restore (no bootstrap, or fromLeader: the
    operator makes the leader follow the old one instead)."""
    boot = c.spec.bootstrap
    store = boot.store if boot is not None else None
    if boot is None or store is None:
        return None
    args = ["geocluster", "restore", "--to", DATA_DIR, "--if-empty", "--report", TERMINATION_LOG]
    if boot.from_aof is not None:
        args += ["--aof", boot.from_aof.destination]
    else:
        b = boot.from_backup
        assert b is not None
        args += ["--from", b.destination, "--cluster", b.cluster or c.name, "--backup", b.name]
    if store.endpoint_url:
        args += ["--endpoint-url", store.endpoint_url]
    if store.region:
        args += ["--region", store.region]
    return args


def bootstrap_init_container(c: Cluster) -> dict[str, Any] | None:
    """Every member restores the same verified backup before geoserver starts: the leader
    serves it, followers then catch up from the leader by prefix (AOFMD5) instead of a full
    stream. A corrupt or truncated backup fails the container, so the pod never serves it."""
    args = restore_args(c)
    if args is None:
        return None
    main = _container(c)
    container: dict[str, Any] = {
        "name": BOOTSTRAP_CONTAINER,
        "image": c.spec.image,
        "imagePullPolicy": c.spec.image_pull_policy,
        "command": args,
        "volumeMounts": [m for m in main["volumeMounts"] if m["name"] in ("data", "tmp")],
        "securityContext": main["securityContext"],
        # the report written to TERMINATION_LOG, or the error's last log lines if none was
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if c.spec.resources:
        container["resources"] = c.spec.resources
    store = c.spec.bootstrap.store if c.spec.bootstrap else None
    if store is not None and store.s3_credentials is not None:
        creds = store.s3_credentials
        keys = (creds.access_key_id_key, creds.secret_access_key_key, creds.session_token_key)
        container["env"] = [
            {"name": env, "valueFrom": {"secretKeyRef": {"name": creds.secret_name, "key": key}}}
            for env, key in zip(S3_ENV, keys, strict=True) if key
        ]
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


def _pod_spec(c: Cluster) -> dict[str, Any]:
    s = c.spec
    pod: dict[str, Any] = {
        "containers": [_container(c)],
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
        # geoserver never talks to the Kubernetes API: a stolen pod gets no token to use there
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
    }
    if (init := bootstrap_init_container(c)) is not None:
        pod["initContainers"] = [init]
    if (secret := tls_secret_name(c)) is not None:
        # 0440 + fsGroup: readable by geoserver (uid/gid 10001), the key by nobody else
        pod["volumes"].append({"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}})
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
    if s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    if s.priority_class_name:
        pod["priorityClassName"] = s.priority_class_name
    if s.service_account_name:  # its token stays unmounted (automountServiceAccountToken above)
        pod["serviceAccountName"] = s.service_account_name
    return pod


def _template_meta(c: Cluster) -> dict[str, Any]:
    """Pod template metadata: spec.podLabels under the operator's labels, spec.podAnnotations
    under the template hash (neither can replace the operator's: the spec refuses them)."""
    annotations = {**c.spec.pod_annotations, TEMPLATE_HASH: template_hash(c)}
    return {"labels": {**c.spec.pod_labels, **labels(c)}, "annotations": annotations}


def template_hash(c: Cluster) -> str:
    """A digest of the pod template (labels and spec): the same spec, the same hash. The
    leader is not in it (members read it from the ConfigMap), so a switchover changes none."""
    template = {"labels": {**c.spec.pod_labels, **labels(c)}, "annotations": c.spec.pod_annotations,
                "spec": _pod_spec(c)}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def build_statefulset(c: Cluster) -> dict[str, Any]:
    """Every member, ``<name>-0`` ... ``<name>-<followers>``. OnDelete: the operator replaces
    pods itself, followers first and the leader after a switchover (rollout.plan_update);
    the role label is the operator's, on the pods, never in the template."""
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": c.spec.storage.size}},
    }
    if c.spec.storage.storage_class_name:
        pvc_spec["storageClassName"] = c.spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(c, sts_name(c), None),
        "spec": {
            "replicas": replicas(c),
            "serviceName": headless_name(c),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": selector(c)},
            "template": {
                "metadata": _template_meta(c),
                "spec": _pod_spec(c),
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(c)},
                    "spec": pvc_spec,
                }
            ],
        },
    }


# --- services, config, PDB --------------------------------------------------------------------


def _service(c: Cluster, name: str, role: str | None, headless: bool) -> dict[str, Any]:
    ports = [{"name": "geoserver", "port": GEOSERVER_PORT, "targetPort": "geoserver"}]
    if c.spec.metrics.enabled:
        ports.append({"name": "metrics", "port": c.spec.metrics.port, "targetPort": "metrics"})
    spec: dict[str, Any] = {"selector": selector(c, role), "ports": ports}
    meta = _meta(c, name, role)
    if headless:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = True  # followers must find a not-yet-ready leader
    else:  # the client Services: spec.service
        svc = c.spec.service
        spec["type"] = svc.type
        if svc.load_balancer_source_ranges:
            spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
        if svc.annotations:
            meta["annotations"] = dict(svc.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


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
        "metadata": _meta(c, config_name(c), None),
        "data": {
            LEADER_KEY: f"{leader_dns(c)}:{GEOSERVER_PORT}",  # members read it when they start
            "leaderMember": leader_pod(c),
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


def build_auth_secret(c: Cluster, password: str) -> dict[str, Any] | None:
    """The generated password Secret (created once, never patched: the password is not
    rotated), or None when the spec names its own Secret or wants no password."""
    if c.spec.server.auth_secret_ref is not None or not c.spec.server.generate_password:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(c, auth_secret_name(c), None),
        "type": "Opaque",
        "data": {PASSWORD_KEY: base64.b64encode(password.encode()).decode()},
    }


def tls_dns_names(c: Cluster) -> list[str]:
    """Every name a client, a follower or the operator may verify a member by: each pod (the
    wildcard under the headless Service, so scaling needs no new certificate), the headless,
    read-write and read-only Services in all their short forms, and localhost."""
    domain = f"{c.namespace}.svc.{c.spec.cluster_domain}"
    names = [f"*.{headless_name(c)}.{domain}", f"{headless_name(c)}.{domain}"]
    for service in (c.name, f"{c.name}-readonly"):
        names += [service, f"{service}.{c.namespace}", f"{service}.{c.namespace}.svc", f"{service}.{domain}"]
    return [*names, "localhost"]


def build_certificate(c: Cluster) -> dict[str, Any] | None:
    """The cert-manager Certificate for spec.tls.issuerRef (server and client usages: members
    present it to each other as clients too), or None without one."""
    tls = c.spec.tls
    if tls is None or tls.issuer_ref is None:
        return None
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": _meta(c, certificate_name(c), None),
        "spec": {
            "secretName": certificate_name(c),
            "secretTemplate": {"labels": labels(c)},
            "issuerRef": dump(tls.issuer_ref),
            "dnsNames": tls_dns_names(c),
            "ipAddresses": ["127.0.0.1"],
            "usages": ["digital signature", "server auth", "client auth"],  # ECDSA: no key encipherment
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        },
    }


def _peers(peers: list[NetworkPolicyPeer]) -> list[dict[str, Any]]:
    return [dump(p) for p in peers]


def _operator_peer(c: Cluster) -> dict[str, Any]:
    namespaces: dict[str, Any] = (
        {"matchLabels": {"kubernetes.io/metadata.name": c.operator_namespace}} if c.operator_namespace else {}
    )
    return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}


def build_network_policy(c: Cluster,
                         egress_to: list[NetworkPolicyPeer] | None = None) -> dict[str, Any] | None:
    """Ingress to the members: the geoserver port from spec.networkPolicy.clients, the
    members themselves (followers dial the leader) and the operator's pods (probes); the
    metrics port from spec.networkPolicy.metricsFrom (any source when empty). None when
    disabled.

    Egress is open unless `egress_to` is given (no spec field asks for it yet: build_all passes
    nothing; docs/security.md#member-egress): then members may reach DNS, each other's
    geoserver port, and only the `egress_to` peers besides, which must list whatever else a
    member dials: hook endpoints (the leader delivers SETHOOK events to any URL a client
    names), the object store of spec.bootstrap (the init container), a fromLeader old leader."""
    policy = c.spec.network_policy
    if not policy.enabled:
        return None
    port = [{"protocol": "TCP", "port": GEOSERVER_PORT}]
    members = {"podSelector": {"matchLabels": selector(c)}}
    rules: list[dict[str, Any]] = []
    if policy.clients:
        rules.append({"from": _peers(policy.clients), "ports": port})
    rules.append({"from": [members, _operator_peer(c)], "ports": port})
    if c.spec.metrics.enabled:
        rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": c.spec.metrics.port}]}
        if policy.metrics_from:
            rule["from"] = _peers(policy.metrics_from)
        rules.append(rule)
    spec: dict[str, Any] = {"podSelector": {"matchLabels": selector(c)}, "policyTypes": ["Ingress"],
                            "ingress": rules}
    if egress_to is not None:
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = member_egress(c, egress_to)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(c, c.name, None),
        "spec": spec,
    }


DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def member_egress(c: Cluster, egress_to: list[NetworkPolicyPeer]) -> list[dict[str, Any]]:
    """The egress rules of a member when egress is restricted: DNS on port 53 to any address
    (cluster DNS runs in different namespaces and under different labels per distribution,
    and node-local caches listen on a link-local address), the geoserver port of the other
    members (a follower dials its leader by pod DNS name), and `egress_to` on any port."""
    rules: list[dict[str, Any]] = [
        {"ports": list(DNS_PORTS)},
        {"to": [{"podSelector": {"matchLabels": selector(c)}}],
         "ports": [{"protocol": "TCP", "port": GEOSERVER_PORT}]},
    ]
    if egress_to:
        rules.append({"to": _peers(egress_to)})
    return rules


def unwanted(c: Cluster) -> list[tuple[str, str]]:
    """(kind, name) of optional objects the spec turned off, to delete if they exist."""
    out = []
    if not c.spec.scheduling.pod_disruption_budget.enabled:
        out.append(("PodDisruptionBudget", c.name))
    if not c.spec.network_policy.enabled:
        out.append(("NetworkPolicy", c.name))
    if c.spec.tls is None or c.spec.tls.issuer_ref is None:
        out.append(("Certificate", certificate_name(c)))
    return out


def build_all(c: Cluster) -> list[dict[str, Any]]:
    """Every desired object but the generated Secret and the Certificate (applied first, on
    their own: cert-manager may be missing), in apply order (Services and the NetworkPolicy
    before the StatefulSets whose pods they serve and guard)."""
    objs = [
        build_configmap(c),
        build_headless_service(c),
        build_leader_service(c),
        build_follower_service(c),
        build_network_policy(c),
        build_statefulset(c),
        build_pdb(c),
    ]
    return [o for o in objs if o is not None]
