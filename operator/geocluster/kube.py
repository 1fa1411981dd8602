"""Thin, blocking Kubernetes API access for the handlers (kopf runs sync work in threads).

``apply`` is an idempotent upsert: create, and on 409 read the live object and merge-patch it
only if the desired fields differ, so a second pass changes nothing. Immutable StatefulSet
fields are never patched. Everything returns plain camelCase dicts.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from .spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
MERGE = "application/merge-patch+json"
IMMUTABLE = {"StatefulSet": ("volumeClaimTemplates", "selector", "serviceName")}
# Pod-template fields the spec sets or leaves out (scheduling, securityContext). A merge-patch
# keeps what it does not mention, so keys the live object has and the spec no longer wants are
# sent as null (removed), or a required anti-affinity, a nodeSelector or a toleration could
# never be taken back. The API server defaults none of them, so nothing else is fought over.
OWNED_POD_FIELDS = ("affinity", "topologySpreadConstraints", "nodeSelector", "tolerations", "securityContext")


@functools.cache
def api() -> client.ApiClient:
    """ApiClient from $GEOCLUSTER_K8S_URL (tests), in-cluster config, or kubeconfig."""
    url = os.environ.get("GEOCLUSTER_K8S_URL")
    if url:
        cfg = client.Configuration()
        cfg.host, cfg.verify_ssl = url, False
        return client.ApiClient(cfg)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _to_dict(obj: Any) -> dict[str, Any]:
    return api().sanitize_for_serialization(obj)


# Kinds of other projects' CRDs we create: (group, version, plural). Their API may be absent
# (cert-manager not installed): calls then fail with 404, which callers report.
CUSTOM = {"Certificate": ("cert-manager.io", "v1", "certificates")}


def _custom_ops(kind: str, verbs: tuple[str, ...]):
    """The ``_ops`` signatures (``create(ns, body)``, ``read(name, ns)``, ``patch(name, ns,
    body, _content_type=)``, ``delete(name, ns)``) over CustomObjectsApi."""
    objs, (group, version, plural) = client.CustomObjectsApi(api()), CUSTOM[kind]
    table = {
        "create": lambda ns, body: objs.create_namespaced_custom_object(group, version, ns, plural, body),
        "read": lambda name, ns: objs.get_namespaced_custom_object(group, version, ns, plural, name),
        "patch": lambda name, ns, body, **kw: objs.patch_namespaced_custom_object(
            group, version, ns, plural, name, body, **kw
        ),
        "delete": lambda name, ns: objs.delete_namespaced_custom_object(group, version, ns, plural, name),
    }
    return tuple(table[verb] for verb in verbs)


def _ops(kind: str, verbs: tuple[str, ...] = ("create", "read", "patch")):
    """Bound API methods (create, read, patch by default) for a kind we manage."""
    if kind in CUSTOM:
        return _custom_ops(kind, verbs)
    core, apps, policy = client.CoreV1Api(api()), client.AppsV1Api(api()), client.PolicyV1Api(api())
    table = {
        "ConfigMap": (core, "config_map"),
        "Secret": (core, "secret"),
        "Service": (core, "service"),
        "StatefulSet": (apps, "stateful_set"),
        "PodDisruptionBudget": (policy, "pod_disruption_budget"),
        "NetworkPolicy": (client.NetworkingV1Api(api()), "network_policy"),
    }
    group, suffix = table[kind]
    return tuple(getattr(group, f"{verb}_namespaced_{suffix}") for verb in verbs)


def _same_quantity(want: str, have: str) -> bool:
    """Whether two strings are the same Kubernetes quantity: the API server stores quantities
    in canonical form (`1.5Gi` comes back as `1536Mi`, `0.5` CPU as `500m`)."""
    try:
        return parse_quantity(want) == parse_quantity(have)
    except ValueError:
        return False


def is_subset(want: Any, have: Any) -> bool:
    """True if every field of ``want`` is present and equal in ``have`` (server extras allowed;
    quantities compared by value)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(is_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    if isinstance(want, str) and isinstance(have, str) and want != have:
        return _same_quantity(want, have)
    return want == have


def with_removals(want: Any, have: Any) -> Any:
    """``want`` plus a null for every dict key ``have`` has and ``want`` lacks, at any depth
    (lists are replaced whole by a merge-patch and need none)."""
    if not (isinstance(want, dict) and isinstance(have, dict)):
        return want
    out = {k: with_removals(v, have.get(k)) for k, v in want.items()}
    out.update({k: None for k in have if k not in want})
    return out


def _null_removed_pod_fields(body: dict[str, Any], live: dict[str, Any]) -> None:
    """For a StatefulSet: null what the spec dropped from the owned pod-template fields."""
    want = (((body.get("spec") or {}).get("template") or {}).get("spec")) or {}
    have = (((live.get("spec") or {}).get("template") or {}).get("spec")) or {}
    if not want:
        return
    template = body["spec"]["template"] = dict(body["spec"]["template"])
    template["spec"] = pod = dict(want)
    for field in OWNED_POD_FIELDS:
        if field in have:
            pod[field] = with_removals(pod.get(field), have[field])


def _other_controller(want: dict[str, Any], live: dict[str, Any]) -> str | None:
    """`Kind/name` of the live object's controller when it is not the one we would set."""
    ours = {r.get("uid") for r in want["metadata"].get("ownerReferences") or [] if r.get("controller")}
    for ref in live.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") not in ours:
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def apply(obj: dict[str, Any]) -> str:
    """Create or bring up to date; returns "created", "patched" or "unchanged", followed by
    "; immutable: <fields>" when the spec asks for changes Kubernetes will not make (e.g. a
    StatefulSet's volumeClaimTemplates): those are left as they are and reported, not retried.
    An existing object controlled by someone else is left alone: "conflict: owned by Kind/name"."""
    create, read, patch = _ops(obj["kind"])
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        create(ns, obj)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    live = _to_dict(read(name, ns))
    owner = _other_controller(obj, live)
    if owner:  # another GeoCluster's (or anyone's) object with our name: never taken over
        return f"conflict: owned by {owner}"
    body = {**obj, "spec": dict(obj.get("spec", {}))} if "spec" in obj else dict(obj)
    live_spec = live.get("spec") or {}
    frozen = [f for f in IMMUTABLE.get(obj["kind"], ())
              if f in body.get("spec", {}) and not is_subset(body["spec"][f], live_spec.get(f))]
    for field in IMMUTABLE.get(obj["kind"], ()):
        body["spec"].pop(field, None)
    if obj["kind"] == "StatefulSet":
        _null_removed_pod_fields(body, live)
    note = f"; immutable: {', '.join(frozen)}" if frozen else ""
    if is_subset(body, live):
        return "unchanged" + note
    patch(name, ns, body, _content_type=MERGE)
    log.info("patched %s %s/%s", obj["kind"], ns, name)
    return "patched" + note


def create_if_absent(obj: dict[str, Any]) -> str:
    """Create an object unless one of that name exists, which is then left exactly as it is:
    never patched or adopted (a generated password is not rotated); "created" or "exists"."""
    create, read = _ops(obj["kind"], ("create", "read"))
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        read(name, ns)
        return "exists"
    except ApiException as exc:
        if exc.status != 404:
            raise
    try:
        create(ns, obj)
    except ApiException as exc:
        if exc.status != 409:  # created meanwhile (another reconcile): that one stays
            raise
        return "exists"
    log.info("created %s %s/%s", obj["kind"], ns, name)
    return "created"


def remove(kind: str, namespace: str, name: str) -> str:
    """Delete an object we no longer want; returns "deleted" or "absent"."""
    (delete,) = _ops(kind, ("delete",))
    try:
        delete(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return "absent"
    log.info("deleted %s %s/%s", kind, namespace, name)
    return "deleted"


def list_pods(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Pods with all the given labels (filtered here too: not every API server filters)."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=selector)
    out = [_to_dict(p) for p in pods.items]
    return [p for p in out if labels.items() <= (p["metadata"].get("labels") or {}).items()]


def delete_pod(namespace: str, name: str) -> bool:
    """Delete a pod (its StatefulSet makes a new one); False when it was already gone."""
    try:
        client.CoreV1Api(api()).delete_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


def read_secret_key(namespace: str, name: str, key: str) -> str:
    return read_secret_keys(namespace, name, (key,))[key]


def read_secret_keys(namespace: str, name: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Decoded values of some keys of one Secret (one read); KeyError names a missing key."""
    import base64

    data = client.CoreV1Api(api()).read_namespaced_secret(name, namespace).data or {}
    return {key: base64.b64decode(data[key]).decode() for key in keys}


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE
    )


def read_geocluster(namespace: str, name: str) -> dict[str, Any]:
    """The GeoCluster as the API has it now (annotations and status from one read)."""
    objs = client.CustomObjectsApi(api())
    return dict(objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def read_status(namespace: str, name: str) -> dict[str, Any]:
    return dict(read_geocluster(namespace, name).get("status") or {})


def patch_annotations(namespace: str, name: str, annotations: dict[str, str | None]) -> None:
    client.CustomObjectsApi(api()).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"metadata": {"annotations": annotations}},
        _content_type=MERGE,
    )


def patch_pod_labels(namespace: str, name: str, labels: dict[str, str | None]) -> None:
    """Merge-patch a pod's labels (None removes one): the role label the Services select by."""
    client.CoreV1Api(api()).patch_namespaced_pod(
        name, namespace, {"metadata": {"labels": labels}}, _content_type=MERGE
    )


def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One object we manage as a dict, or None when it does not exist."""
    (get,) = _ops(kind, ("read",))
    try:
        return _to_dict(get(name, namespace))
    except ApiException as exc:
        if exc.status != 404:
            raise
        return None


def patch(kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
    """Merge-patch part of an object we manage (e.g. the ConfigMap's leader, at once)."""
    (merge,) = _ops(kind, ("patch",))
    merge(name, namespace, body, _content_type=MERGE)
