"""Shared helpers (imported by the test modules; fixtures are in conftest.py) for the offline
shipping checks (chart, manifests, CRD, Dockerfile).

Everything here runs without a cluster or Docker: helm renders, kubernetes-validate checks the
built-in kinds against the Kubernetes 1.33 OpenAPI schemas (strict: unknown fields are errors),
and custom resources are checked against their CRD's own openAPIV3Schema with jsonschema.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "geocluster"
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.33"
SPEC_PY = ROOT / "operator" / "geocluster" / "spec.py"


def tool(name: str) -> str | None:
    """The pinned binary from .ci/install-tools if present, else one on PATH."""
    pinned = ROOT / ".tools" / "bin" / name
    if pinned.is_file():
        return str(pinned)
    return shutil.which(name)


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_all(text: str) -> list[dict[str, Any]]:
    """YAML documents of a stream, without the empty ones."""
    return [d for d in yaml.safe_load_all(text) if d]


def helm_template(helm: str, values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    cmd = [helm, "template", "geocluster", str(CHART), "--namespace", "geocluster-system"]
    if values is not None:
        cmd += ["-f", str(values)]
    return load_all(run([*cmd, *extra]).stdout)


# --- custom resources: validate against the CRD's own schema ---------------------------------


def crd_docs() -> dict[str, dict[str, Any]]:
    """Every CRD shipped in the chart's crds/, by spec.names.kind."""
    out = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in load_all(path.read_text()):
            out[doc["spec"]["names"]["kind"]] = doc
    return out


def to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema draft 4.

    Draft 4 shares OpenAPI 3.0's boolean exclusiveMinimum/Maximum. ``nullable`` becomes a
    null type. Objects with ``properties`` and no ``x-kubernetes-preserve-unknown-fields``
    get ``additionalProperties: false``: the API server would prune (drop) unknown fields
    silently, and `kubectl apply` with field validation rejects them; either way a typo in
    an example is a bug we want to see here.
    """
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    out.pop("default", None)
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def cr_validator(kind: str) -> jsonschema.Draft4Validator:
    crd = crd_docs()[kind]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # The API server always accepts these at the root; it validates metadata itself.
    schema.setdefault("properties", {}).update(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        }
    )
    return jsonschema.Draft4Validator(schema)


# --- prometheus-operator kinds: no schema offline, check the fields we use --------------------

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP},
}
_ENDPOINT = {
    "type": "object",
    "required": ["port"],
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
        "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
    },
}
_NS_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}},
    },
}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["matchLabels"],
    "properties": {"matchLabels": _STR_MAP},
}


def _monitor_schema(endpoints: str) -> dict:
    """ServiceMonitor and PodMonitor differ only in what their endpoint list is called."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"enum": ["monitoring.coreos.com/v1"]},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints],
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": _NS_SELECTOR,
                    endpoints: {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
            },
        },
    }


_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "record": {"type": "string"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}
MONITOR_SCHEMAS = {
    "ServiceMonitor": _monitor_schema("endpoints"),
    "PodMonitor": _monitor_schema("podMetricsEndpoints"),
    # the fields of monitoring.coreos.com/v1 PrometheusRule we use; promtool checks the rules
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"enum": ["monitoring.coreos.com/v1"]},
            "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                    "properties": {"name": {"type": "string", "minLength": 1}, "interval": {"type": "string"},
                                   "rules": {"type": "array", "minItems": 1, "items": _RULE}}}}}},
        },
    },
}  # fmt: skip


# --- cert-manager kinds (cert-manager.io/v1): no schema offline either; the fields we use ------

_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
]  # fmt: skip
_STR_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}}
_CERTIFICATE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": {"type": "string", "minLength": 1},
        "secretTemplate": {"type": "object", "additionalProperties": False,
                           "properties": {"labels": _STR_MAP, "annotations": _STR_MAP}},
        "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                      "properties": {"name": {"type": "string", "minLength": 1},
                                     "kind": {"type": "string"}, "group": {"type": "string"}}},
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": _STR_LIST,
        "ipAddresses": _STR_LIST,
        "isCA": {"type": "boolean"},
        "duration": {"type": "string"},
        "renewBefore": {"type": "string"},
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": {"type": "object", "additionalProperties": False, "properties": {
            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
            "size": {"type": "integer"},
            "encoding": {"enum": ["PKCS1", "PKCS8"]},
            "rotationPolicy": {"enum": ["Never", "Always"]}}},
    },
}  # fmt: skip
_ISSUER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "selfSigned": {"type": "object", "additionalProperties": False},
        "ca": {"type": "object", "additionalProperties": False, "required": ["secretName"],
               "properties": {"secretName": {"type": "string", "minLength": 1}}},
    },
}  # fmt: skip


def _cert_manager_schema(spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {**_METADATA, "required": ["name"]}  # examples leave the namespace to kubectl -n
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"enum": ["cert-manager.io/v1"]}, "metadata": metadata, "spec": spec},
    }


CERT_MANAGER_SCHEMAS = {
    "Certificate": _cert_manager_schema(_CERTIFICATE_SPEC),
    "Issuer": _cert_manager_schema(_ISSUER_SPEC),
    "ClusterIssuer": _cert_manager_schema(_ISSUER_SPEC),
}


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one object: built-in kinds strictly against Kubernetes, CRs against their CRD.

    Fails the test with the object's kind/name and the error path.
    """
    kind = obj.get("kind")
    where = f"{kind}/{obj.get('metadata', {}).get('name')}"
    crds = crd_docs()
    if kind in crds:
        errors = sorted(cr_validator(kind).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            pytest.fail(
                f"{where} does not match its CRD schema:\n"
                + "\n".join(f"  {'.'.join(map(str, e.path))}: {e.message}" for e in errors)
            )
        return
    if kind in MONITOR_SCHEMAS or kind in CERT_MANAGER_SCHEMAS:
        try:
            jsonschema.Draft7Validator({**MONITOR_SCHEMAS, **CERT_MANAGER_SCHEMAS}[kind]).validate(obj)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"{where}: no Kubernetes {K8S_VERSION} schema and no CRD shipped for kind {kind}")
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")


# --- RBAC: the exact rules the operator needs --------------------------------------------------

ALL_WRITE = {"get", "list", "watch", "create", "patch", "update", "delete"}
NAMESPACED_RULES: dict[tuple[str, str], set[str]] = {
    ("geo.geocluster.io", "geoclusters"): {"get", "list", "watch", "patch", "update"},
    ("geo.geocluster.io", "geoclusters/status"): {"get", "list", "watch", "patch", "update"},
    # children carry ownerReferences with blockOwnerDeletion: clusters with the
    # OwnerReferencesPermissionEnforcement admission plugin (OpenShift) demand this
    ("geo.geocluster.io", "geoclusters/finalizers"): {"update"},
    ("apps", "statefulsets"): ALL_WRITE,
    ("", "services"): ALL_WRITE,
    ("", "configmaps"): ALL_WRITE,
    ("policy", "poddisruptionbudgets"): ALL_WRITE,
    # patch: the role label the Services select by; delete: repairs, updates, fencing
    ("", "pods"): {"get", "list", "watch", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("networking.k8s.io", "networkpolicies"): ALL_WRITE,
    # probes AUTH with the password of authSecretRef or the generated <name>-auth, which the
    # operator creates once (handlers.reconcile); never lists, rewrites or deletes Secrets
    ("", "secrets"): {"get", "create"},
    # spec.tls.issuerRef: the Certificate <name>-tls, applied (create, get + patch when it
    # exists) and deleted when issuerRef goes; never listed or watched
    ("cert-manager.io", "certificates"): {"get", "create", "patch", "delete"},
}
CLUSTER_READ_RULES: dict[tuple[str, str], set[str]] = {
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
PEERING_VERBS = {"get", "list", "watch", "patch"}
CLUSTER_PEERING = {("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS}
NAMESPACED_PEERING = {("kopf.dev", "kopfpeerings"): PEERING_VERBS}


def rules_table(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, the union over a (Cluster)Role's rules.

    Fails on wildcards and resourceNames/nonResourceURLs, which this operator never needs.
    """
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {role['metadata']['name']}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table
