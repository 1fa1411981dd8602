"""kopf handlers: thin glue from Kubernetes events and timers to builders, probes and policy.

- create/update/resume: validate the spec, create the generated password Secret if it is
  missing (never patched: no rotation), apply every other desired object idempotently.
- a timer per GeoCluster (fixed short tick; the probe interval is enforced here and the
  policy decides what is due): probe members -> ``policy.decide`` -> write status (intent
  first) -> act -> Events and metrics.
Deletion relies on ownerReferences; kopf's finalizer (added for the timer) is released as soon
as the timer stops, so deleting a GeoCluster does not hang while the operator runs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from . import conditions, kube, metrics, probe
from . import resources as res
from .policy import Action, Decision, Triggers, apply_outcome, decide, load_status, status_patch
from .spec import (
    GEOSERVER_PORT,
    GROUP,
    PLURAL,
    VERSION,
    GeoClusterSpec,
    SpecError,
    check_name,
    parse_spec,
)
from .spec import parse_time as _parse_time

SHRINK_ANNOTATION = f"{GROUP}/shrink-now"
RESYNC_ANNOTATION = f"{GROUP}/resync"
PAUSE_ANNOTATION = f"{GROUP}/paused"
TICK_SECONDS = float(os.environ.get("GEOCLUSTER_TICK_SECONDS", "5"))
# The operator's own namespace (the chart and manifests set it from the downward API): the
# NetworkPolicy of every GeoCluster admits the operator's pods from there only.
OPERATOR_NAMESPACE = os.environ.get("POD_NAMESPACE") or None
PROBE_TIMEOUT = float(os.environ.get("GEOCLUSTER_PROBE_TIMEOUT", "3"))

REGISTRY = kopf.OperatorRegistry()
_last_probe: dict[str, float] = {}  # uid -> monotonic time; losing it on restart is harmless


def registry() -> kopf.OperatorRegistry:
    """The registry holding this module's handlers (passed to kopf.operator)."""
    return REGISTRY


@kopf.on.startup(registry=REGISTRY)
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"


@kopf.on.login(registry=REGISTRY)
def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """$GEOCLUSTER_K8S_URL (tests, local API proxies) or the usual kubeconfig/in-cluster."""
    url = os.environ.get("GEOCLUSTER_K8S_URL")
    if url:
        return kopf.ConnectionInfo(server=url, insecure=True)
    return kopf.login_via_client(**kwargs)


def _spec_or_invalid(body: kopf.Body) -> GeoClusterSpec | None:
    """Parsed spec, or None after recording an InvalidSpec condition (once)."""
    try:
        check_name(body["metadata"]["name"])
        return parse_spec(dict(body.get("spec") or {}))
    except SpecError as exc:
        st = load_status(dict(body.get("status") or {}))
        now, gen = _now_str(), body["metadata"].get("generation")
        new = conditions.invalid_spec(st.conditions, str(exc), now, gen)
        if conditions.changed(st.conditions, new) or st.observed_generation != gen:
            kopf.warn(body, reason="InvalidSpec", message=str(exc))  # once per generation
        # only the fields this handler owns: the timer may have written newer status meanwhile
        st.conditions = new
        patch = {"conditions": status_patch(st)["conditions"], "phase": "Invalid", "observedGeneration": gen}
        kube.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], patch)
        return None


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=REGISTRY)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=REGISTRY)
@kopf.on.update(GROUP, VERSION, PLURAL, registry=REGISTRY)
def reconcile(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Apply the desired objects; an invalid spec is reported, not retried."""
    spec = _spec_or_invalid(body)
    if spec is None:
        raise kopf.PermanentError("invalid spec; see the Degraded condition")
    cluster = res.Cluster.from_body(body, spec, OPERATOR_NAMESPACE)
    changes: dict[str, str] = {}
    if secret := res.build_auth_secret(cluster, secrets.token_urlsafe(32)):  # before the pods
        changes[f"Secret/{secret['metadata']['name']}"] = kube.create_if_absent(secret)
    cert_missing = _apply_certificate(cluster, body, changes)  # before the pods, too
    changes.update({f"{o['kind']}/{o['metadata']['name']}": kube.apply(o) for o in res.build_all(cluster)})
    for kind, name in res.unwanted(cluster):  # e.g. a PDB turned off after it was created
        try:
            changes[f"{kind}/{name}"] = kube.remove(kind, cluster.namespace, name)  # 404 = absent
        except kube.ApiException as exc:  # e.g. RBAC from before spec.tls: not worth failing for
            if kind not in kube.CUSTOM or exc.status != 403:
                raise
            changes[f"{kind}/{name}"] = f"not removed: {exc.status} {exc.reason}"
    for obj, result in changes.items():
        if result.startswith("conflict: "):  # e.g. GeoCluster `a-readonly` vs `a`'s Service
            kopf.warn(body, reason="NameConflict",
                      message=f"{obj} exists and is {result.removeprefix('conflict: ')}; left alone "
                      "(rename this GeoCluster)")
        if "; immutable: " in result:  # e.g. storage size/class: needs a new StatefulSet + PVCs
            fields = result.partition("; immutable: ")[2]
            kopf.warn(body, reason="ImmutableFieldChanged",
                      message=f"{obj}: {fields} cannot change in place; kept as they are "
                      "(see docs/operator.md: changing storage)")
    logger.info("applied: %s", changes)
    # Only observedGeneration, and Pending for a new object (no phase even now): the rest of status
    # is the timer's, and this body may be older than what the timer wrote meanwhile (a whole-status
    # write here lost a shrink recorded while the objects were applied). An Invalid phase is
    # replaced by the timer's first tick on the now valid spec.
    patch: dict[str, Any] = {"observedGeneration": body["metadata"].get("generation")}
    if not (body.get("status") or {}).get("phase") and not kube.read_status(
        cluster.namespace, cluster.name
    ).get("phase"):
        patch["phase"] = "Pending"
    if cert_missing:  # everything else is applied; retried, so installing cert-manager heals it
        raise kopf.TemporaryError(cert_missing, delay=CERT_RETRY_SECONDS)
    kube.patch_status(cluster.namespace, cluster.name, patch)


CERT_RETRY_SECONDS = 120


def _apply_certificate(cluster: res.Cluster, body: kopf.Body, changes: dict[str, str]) -> str | None:
    """Apply the cert-manager Certificate of spec.tls.issuerRef; when the API has no such kind
    (cert-manager not installed) warn and return why, instead of failing the whole reconcile."""
    cert = res.build_certificate(cluster)
    if cert is None:
        return None
    try:
        changes[f"Certificate/{cert['metadata']['name']}"] = kube.apply(cert)
        return None
    except kube.ApiException as exc:
        if exc.status != 404:
            raise
    why = (f"cannot create Certificate {cert['metadata']['name']}: the API has no "
           f"{res.CERT_MANAGER_API} certificates (is cert-manager installed?); spec.tls.issuerRef "
           f"needs it, or use spec.tls.secretName; retrying every {CERT_RETRY_SECONDS} s")  # fmt: skip
    kopf.warn(body, reason="CertManagerMissing", message=why)
    return why


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, registry=REGISTRY)
async def tick(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Probe, decide, record intent, act. Invalid specs are reported by reconcile, not here."""
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return
    meta = body["metadata"]
    uid = meta.get("uid", meta["name"])
    if time.monotonic() - _last_probe.get(uid, 0.0) < (
        spec.divergence.probe_interval_seconds - TICK_SECONDS / 2
    ):
        return
    _last_probe[uid] = time.monotonic()
    cluster = res.Cluster.from_body(body, spec, OPERATOR_NAMESPACE)
    password, auth_error = await asyncio.to_thread(_password, cluster)
    tls, tls_error = await asyncio.to_thread(_tls, cluster)
    members = await _observe(cluster, password, auth_error or tls_error, tls)
    decision = decide(
        spec,
        dict(body.get("status") or {}),
        members,
        datetime.now(UTC),
        created=_parse_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        generation=meta.get("generation"),
        triggers=_triggers(meta.get("annotations") or {}),
        auth_error=auth_error,
        tls_error=tls_error,
        leader_aliases=frozenset({f"{res.leader_dns(cluster)}:{GEOSERVER_PORT}"}),
    )
    await _write_status(cluster, decision.status)
    status = decision.status
    # Triggers go right after the intent, before acting: an operator that dies mid-action, or a
    # trigger that outlives its action, must not run it again once the action has settled.
    try:
        await _consume(cluster, decision)
        untriggered = None
    except Exception as exc:  # the trigger stays; not acting keeps the action at most once
        untriggered = f"could not remove the trigger annotation: {exc}"
    for action in decision.actions:
        if untriggered:
            status = await _failed(cluster, action, status, body, logger, untriggered)
        else:
            status = await _act(cluster, members, action, status, body, logger, password, tls)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    metrics.record(cluster.namespace, cluster.name, [] if auth_error or tls_error else members, decision)


async def _write_status(cluster: res.Cluster, status: dict[str, Any]) -> None:
    """The timer's status write, without observedGeneration: only reconcile sets that (once it
    has applied a generation), and this body's copy may be older than what reconcile wrote."""
    patch = {k: v for k, v in status.items() if k != "observedGeneration"}
    patch["selector"] = ",".join(f"{k}={v}" for k, v in res.selector(cluster, "follower").items())
    await asyncio.to_thread(kube.patch_status, cluster.namespace, cluster.name, patch)


def _triggers(annotations: dict[str, str]) -> Triggers:
    names = {"shrink": SHRINK_ANNOTATION, "resync": RESYNC_ANNOTATION}
    requests = {kind: annotations[key] for kind, key in names.items() if key in annotations}
    return Triggers.from_requests(requests, annotations.get(PAUSE_ANNOTATION, ""))


async def _observe(cluster: res.Cluster, password: str | None, auth_error: str | None,
                   tls: ssl.SSLContext | None = None) -> list[probe.Member]:
    """Pod IPs from the API (filtered client-side), then SERVER on each member (over TLS,
    verified by pod DNS name, when spec.tls is set). Without the password or the TLS Secret
    nobody is probed: every member is a finding naming the Secret (nothing is judged)."""
    pods = await asyncio.to_thread(kube.list_pods, cluster.namespace, res.selector(cluster))
    ips = {p["metadata"]["name"]: (p.get("status") or {}).get("podIP") for p in pods}
    targets: list[Any] = [(res.leader_pod(cluster), "leader", ips.get(res.leader_pod(cluster)))]
    targets += [(n, "follower", ips.get(n)) for n in res.follower_pods(cluster)]
    targets = [(n, r, f"{ip}:{GEOSERVER_PORT}" if ip else None) for n, r, ip in targets]
    if auth_error:
        return [probe.Member(n, r, a, reachable=False, error=auth_error) for n, r, a in targets]
    names = {n: res.pod_dns(cluster, n) for n, _, _ in targets}
    return await probe.observe_all(targets, password, PROBE_TIMEOUT, tls=tls, server_names=names)


def _tls(cluster: res.Cluster) -> tuple[ssl.SSLContext | None, str | None]:
    """(context, None) trusting the TLS Secret's ca.crt (and presenting its certificate when
    clients must), (None, why) when it cannot be read, (None, None) without spec.tls."""
    name, tls = res.tls_secret_name(cluster), cluster.spec.tls
    if name is None or tls is None:
        return None, None
    keys = ("ca.crt", "tls.crt", "tls.key") if tls.client_auth == "required" else ("ca.crt",)
    try:
        pem = kube.read_secret_keys(cluster.namespace, name, keys)
        return probe.tls_context(pem["ca.crt"], pem.get("tls.crt"), pem.get("tls.key")), None
    except Exception as exc:  # 404/403, a missing key, bad PEM: reported, never raised
        why = f"{exc.status} {exc.reason}" if isinstance(exc, kube.ApiException) else repr(exc)
        hint = (f" (the Certificate {res.certificate_name(cluster)} has not been issued yet?)"
                if tls.issuer_ref is not None else "")  # fmt: skip
        return None, f"TLS Secret {name!r} ({', '.join(keys)}) unavailable: {why}{hint}"


def _password(cluster: res.Cluster) -> tuple[str | None, str | None]:
    """(password, None), or (None, why) when the auth Secret (named or generated) or its key
    cannot be read; (None, None) when the members run without a password."""
    ref = res.auth_ref(cluster)
    if ref is None:
        return None, None
    try:
        try:
            return kube.read_secret_key(cluster.namespace, ref.name, ref.key), None
        except kube.ApiException as exc:
            # the generated one: not made yet (this tick ran ahead of reconcile) or deleted
            generated = res.build_auth_secret(cluster, secrets.token_urlsafe(32))
            if exc.status != 404 or generated is None:
                raise
            kube.create_if_absent(generated)
            return kube.read_secret_key(cluster.namespace, ref.name, ref.key), None
    except Exception as exc:  # 404/403, a missing key, bad base64: reported, never raised
        why = f"{exc.status} {exc.reason}" if isinstance(exc, kube.ApiException) else repr(exc)
        return None, f"Secret {ref.name!r} key {ref.key!r} unavailable: {why}"


async def _act(cluster, members, action: Action, status, body, logger, password,
               tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """Carry out one action; on failure record it in status and as a Warning."""
    address = next((m.address for m in members if m.name == action.member), None)
    try:
        if action.kind == "restart":
            await asyncio.to_thread(kube.delete_pod, cluster.namespace, action.member)
        elif address is None:
            raise probe.ProbeError(f"{action.member} has no address")
        else:
            await probe.start_action(address, action.kind, password, tls=tls,
                                     server_name=res.pod_dns(cluster, action.member))
        logger.info("%s %s: started (%s)", action.kind, action.member, action.reason)
        return status
    except Exception as exc:  # any failure to start is recorded, never crashes the timer
        return await _failed(cluster, action, status, body, logger, str(exc))


async def _failed(cluster, action: Action, status, body, logger, error: str) -> dict[str, Any]:
    """Record an action that could not start: status, a Warning and the metrics."""
    logger.warning("%s %s failed: %s", action.kind, action.member, error)
    kopf.warn(body, reason="ActionFailed", message=f"{action.kind} {action.member}: {error}")
    metrics.action_failed(cluster.namespace, cluster.name, action)
    status = apply_outcome(status, action, error)
    await _write_status(cluster, status)
    return status


async def _consume(cluster: res.Cluster, decision: Decision) -> None:
    """Remove the manual-trigger annotations the policy used up."""
    keys = {"shrink": SHRINK_ANNOTATION, "resync": RESYNC_ANNOTATION}
    gone: dict[str, str | None] = {keys[c]: None for c in decision.consumed}
    if gone:
        await asyncio.to_thread(kube.patch_annotations, cluster.namespace, cluster.name, gone)


def _now_str() -> str:
    from .spec import rfc3339

    return rfc3339(datetime.now(UTC))
