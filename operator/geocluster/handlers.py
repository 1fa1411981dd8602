"""kopf handlers: thin glue from Kubernetes events and timers to builders, probes and policy.

- create/update/resume: validate the spec, create the generated password Secret if it is
  missing (never patched: no rotation), apply every other desired object idempotently.
- a timer per GeoCluster (fixed short tick; the probe interval is enforced here and the
  policy decides what is due): probe members -> ``failover.decide`` (switchover, failover;
  intent first, then promote) -> one update or migration step (``roles``) -> keep the view
  true (ConfigMap leader, role labels, the named leader leading, followers following it) ->
  ``policy.decide`` -> write status (intent first) -> act -> Events and metrics.
- the leader lease (docs/operator.md#leader-lease): every tick first renews the lease of the
  leader the last full tick saw healthy (geoserver ``LEASE``, at the epoch the ConfigMap keeps
  under ``leaderEpoch``); ``failover.decide`` is told the latest end it may have granted, and
  each promotion takes the next epoch, revoking the old leader's lease when it answers.
Deletion relies on ownerReferences; kopf's finalizer (added for the timer) is released as soon
as the timer stops, so deleting a GeoCluster does not hang while the operator runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from . import conditions, failover, kube, metrics, probe, roles
from . import resources as res
from .backup_policy import STATUS_KEYS as BACKUP_STATUS_KEYS
from .bootstrap_state import migrating
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
PROMOTE_ANNOTATION = f"{GROUP}/promote"
# A restart on request (any value): taken up at once, its time kept in RESTARTING_ANNOTATION
# (operator-owned) until every member pod created before it has been restarted, in the order of
# a template update (roles.plan_update); `kubectl rollout restart` does nothing under OnDelete.
RESTART_ANNOTATION = f"{GROUP}/restart"
RESTARTING_ANNOTATION = f"{GROUP}/restart-since"
# How the operator names the leader in FOLLOW: by its pod DNS name (what TLS verifies), or with
# GEOCLUSTER_FOLLOW_BY=ip by its pod IP (clusters without pod DNS: the emulated-API tests).
FOLLOW_BY_IP = os.environ.get("GEOCLUSTER_FOLLOW_BY", "dns") == "ip"
CATCH_UP_TIMEOUT = float(os.environ.get("GEOCLUSTER_CATCH_UP_TIMEOUT", "30"))
TICK_SECONDS = float(os.environ.get("GEOCLUSTER_TICK_SECONDS", "5"))
# The operator's own namespace (the chart and manifests set it from the downward API): the
# NetworkPolicy of every GeoCluster admits the operator's pods from there only.
OPERATOR_NAMESPACE = os.environ.get("POD_NAMESPACE") or None
PROBE_TIMEOUT = float(os.environ.get("GEOCLUSTER_PROBE_TIMEOUT", "3"))

REGISTRY = kopf.OperatorRegistry()
log = logging.getLogger(__name__)
_last_probe: dict[str, float] = {}  # uid -> monotonic time; losing it on restart is harmless
_migrated: set[str] = set()  # uids seen without the v1alpha1 StatefulSets: not looked up again
_last_step: dict[str, str] = {}  # uid -> the update step last announced (one Event per step)
EPOCH_KEY = "leaderEpoch"  # ConfigMap data: the leader lease's epoch (docs/operator.md#leader-lease)
# a tick renews the lease; one may take up to the probe timeout longer than the interval
RENEW_EVERY = TICK_SECONDS + PROBE_TIMEOUT


@dataclass
class _LeaseTrack:
    """What the operator knows of the lease it grants one cluster's leader (in memory: a
    restarted operator assumes a lease granted just before it started)."""

    until: datetime | None  # the latest end of a lease it may have granted
    leader: str | None = None  # the member renewals go to, and how to reach it
    address: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    server_name: str | None = None
    healthy: bool = False  # the last full tick found nothing wrong with it: renew
    epoch: int = 1
    cluster: res.Cluster | None = None


_leases: dict[str, _LeaseTrack] = {}


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
    # the leader from a fresh read: this body may predate a promotion, and the ConfigMap it
    # writes is what restarting members follow
    live = kube.read_status(body["metadata"]["namespace"], body["metadata"]["name"])
    cluster = res.Cluster.from_body(body, spec, OPERATOR_NAMESPACE, leader=_leader_of(body, live))
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
    """Probe, decide leadership, act on it, update/migrate, keep the view true, then the
    repair/shrink policy. Invalid specs are reported by reconcile, not here."""
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return
    meta = body["metadata"]
    uid = meta.get("uid", meta["name"])
    plan = failover.lease_plan(spec, RENEW_EVERY)
    track = _leases.setdefault(uid, _LeaseTrack(datetime.now(UTC) + timedelta(seconds=plan.seconds)))
    await _renew(track, plan, spec)
    if time.monotonic() - _last_probe.get(uid, 0.0) < (
        spec.divergence.probe_interval_seconds - TICK_SECONDS / 2
    ):
        return
    _last_probe[uid] = time.monotonic()
    # the object read fresh, whole: right after a promotion this body may still name the old
    # leader (acting on that would make it lead again), and triggers, generation and status
    # must be of one moment (a trigger used once, Ready judged against its own generation)
    live = await asyncio.to_thread(kube.read_geocluster, meta["namespace"], meta["name"])
    try:
        spec = parse_spec(dict(live.get("spec") or {}))
    except SpecError:
        return
    meta = {**meta, **(live.get("metadata") or {})}
    status = dict(live.get("status") or {})
    view = {**body, "metadata": meta, "spec": live.get("spec") or {}, "status": status}
    legacy = await asyncio.to_thread(_legacy, view)
    cluster = res.Cluster.from_body(view, spec, OPERATOR_NAMESPACE,
                                    leader=_leader_of(view, status, legacy))  # fmt: skip
    password, auth_error = await asyncio.to_thread(_password, cluster)
    tls, tls_error = await asyncio.to_thread(_tls, cluster)
    ctx = _Ctx(cluster, password, tls, body, logger, legacy)
    pods = await asyncio.to_thread(_pods, cluster)
    members = await _observe(cluster, password, auth_error or tls_error, tls, pods)
    annotations = meta.get("annotations") or {}
    triggers = _triggers(annotations)
    restart_since = await _take_restart(cluster, body, annotations)
    blocked = None
    if not (auth_error or tls_error):  # nothing was probed: nothing about the leader is known
        status = await _recover(ctx, status, members)
        track.epoch = await asyncio.to_thread(_config_epoch, cluster)
        lead = failover.decide(spec, status, members, datetime.now(UTC),
                               promote=annotations.get(PROMOTE_ANNOTATION), paused=triggers.paused,
                               lease=plan, lease_until=track.until)
        status, blocked = lead.status, lead.blocked
        if lead.promotion or lead.consumed:
            await _write_status(cluster, status)  # intent first, then the trigger goes
            await _remove_annotations(cluster, [PROMOTE_ANNOTATION] if lead.consumed else [])
        _post(body, lead.events)
        if lead.promotion:
            status, ctx, members = await _promote(ctx, members, pods, lead.promotion, status)
        else:
            status, ctx, members = await _step(ctx, members, pods, status, triggers.paused,
                                               restart_since)  # fmt: skip
        _track_leader(track, ctx, members, status)
        if lead.promotion is None:
            await _renew(track, plan, spec)  # before _converge may make it lead
        members = await _converge(ctx, members, pods, status)
    decision = decide(
        spec,
        status,
        members,
        datetime.now(UTC),
        created=_parse_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        generation=meta.get("generation"),
        triggers=triggers,
        auth_error=auth_error,
        tls_error=tls_error,
        leader_aliases=frozenset({f"{res.leader_dns(ctx.cluster)}:{GEOSERVER_PORT}"}),
        failover_blocked=blocked,
        migrating=_old_leader(spec, status),
    )
    cluster = ctx.cluster
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
    _post(body, decision.events)
    metrics.record(cluster.namespace, cluster.name, [] if auth_error or tls_error else members, decision)


def _old_leader(spec: GeoClusterSpec, status: dict[str, Any]) -> str | None:
    """The old leader of a live migration not detached yet (the policy's ``migrating``)."""
    boot = spec.bootstrap
    return boot.from_leader.address if boot and boot.from_leader and migrating(spec, status) else None


def _post(body: kopf.Body, events: Any) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


# --- the leader lease (docs/operator.md#leader-lease) --------------------------------------


async def _renew(track: _LeaseTrack, plan: failover.LeasePlan, spec: GeoClusterSpec) -> None:
    """Renew the lease of the leader last seen healthy (failover on only: only then does the
    operator promote by itself); the end it may have granted goes into ``track.until``."""
    if not (spec.failover.enabled and track.healthy and track.address):
        return
    grant = await probe.grant_lease(track.address, track.epoch, plan.ms, track.password, PROBE_TIMEOUT,
                                    tls=track.tls, server_name=track.server_name, adopt=True)
    track.until = failover.lease_end(track.until, grant.read_at, plan)
    if grant.error and grant.read_at is not None:
        log.warning("lease renewal of %s: %s", track.leader, grant.error)
    if grant.info is not None and grant.info.epoch > track.epoch and track.cluster is not None:
        track.epoch = grant.info.epoch  # the ConfigMap lost it (recreated): record it again
        await asyncio.to_thread(_set_config_epoch, track.cluster, track.epoch)


def _track_leader(track: _LeaseTrack, ctx: _Ctx, members: list[probe.Member],
                  status: dict[str, Any]) -> None:
    """Point the renewals at the named leader, while the policy finds nothing wrong with it."""
    leader = next((m for m in members if m.role == "leader"), None)
    watch = status.get("leaderWatch") or {}
    track.leader = leader.name if leader else None
    track.address = leader.address if leader else None
    track.server_name = ctx.server_name(leader.name) if leader else None
    track.password, track.tls, track.cluster = ctx.password, ctx.tls, ctx.cluster
    track.healthy = leader is not None and leader.reachable and not watch.get("failing")


def _config_epoch(cluster: res.Cluster) -> int:
    """The lease epoch the ConfigMap records (1 before any promotion)."""
    live = kube.read("ConfigMap", cluster.namespace, res.config_name(cluster)) or {}
    try:
        return max(1, int((live.get("data") or {}).get(EPOCH_KEY) or 1))
    except ValueError:
        return 1


def _set_config_epoch(cluster: res.Cluster, epoch: int) -> None:
    if kube.read("ConfigMap", cluster.namespace, res.config_name(cluster)) is None:
        kube.apply(res.build_configmap(cluster))
    kube.patch("ConfigMap", cluster.namespace, res.config_name(cluster), {"data": {EPOCH_KEY: str(epoch)}})


# --- leadership on Kubernetes (docs/operator.md#high-availability) ----------------------------


@dataclass(frozen=True)
class _Ctx:
    """What every leadership step needs: the cluster (its ``leader`` is the current view)."""

    cluster: res.Cluster
    password: str | None
    tls: ssl.SSLContext | None
    body: Any
    logger: Any
    legacy: tuple[str, ...] = ()  # v1alpha1 StatefulSets still present

    def server_name(self, member: str) -> str:
        return res.pod_dns(self.cluster, member)

    async def send(self, m: probe.Member, *args: str) -> Any:
        if m.address is None:
            raise probe.ProbeError(f"{m.name} has no address")
        return await probe.send(m.address, *args, password=self.password, tls=self.tls,
                                server_name=self.server_name(m.name))  # fmt: skip

    def follow_target(self, leader: probe.Member) -> tuple[str, str]:
        """(host, port) followers are told to FOLLOW: the leader's pod DNS name, or its IP."""
        if FOLLOW_BY_IP and leader.address:
            host, _, port = leader.address.rpartition(":")
            return host, port
        return res.pod_dns(self.cluster, leader.name), str(GEOSERVER_PORT)


def _leader_of(body: Any, status: dict[str, Any], legacy: tuple[str, ...] = ()) -> str | None:
    """The current leader: status.leader; a v1alpha1 cluster's leader pod before any tick."""
    leader = status.get("leader") or (body.get("status") or {}).get("leader")
    if not leader and legacy:
        return f"{body['metadata']['name']}-leader-0"
    return leader or None


def _legacy(body: Any) -> tuple[str, ...]:
    """The v1alpha1 leader/follower StatefulSets of this cluster that still exist."""
    meta = body["metadata"]
    uid = meta.get("uid", meta["name"])
    if uid in _migrated:
        return ()
    names = (f"{meta['name']}-leader", f"{meta['name']}-follower")
    found = tuple(n for n in names if kube.read("StatefulSet", meta["namespace"], n) is not None)
    if not found:
        _migrated.add(uid)
    return found


def _pods(cluster: res.Cluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in kube.list_pods(cluster.namespace, res.selector(cluster))}


def _views(pods: dict[str, dict[str, Any]]) -> dict[str, roles.Pod]:
    return {
        name: roles.Pod(name, dict(p["metadata"].get("labels") or {}),
                        (p["metadata"].get("annotations") or {}).get(res.TEMPLATE_HASH),
                        bool(p["metadata"].get("deletionTimestamp")), p["metadata"].get("creationTimestamp"))
        for name, p in pods.items()
    }  # fmt: skip


async def _recover(ctx: _Ctx, status: dict[str, Any], members: list[probe.Member]) -> dict[str, Any]:
    """A promotion recorded as started is one an operator did not finish (it runs within a
    tick): settle it as interrupted; the named leader (status.leader, which moves only once
    the target leads) gets READONLY no, and the rest converges to it as after any restart."""
    rec = (status.get("lastFailover") or {})
    if rec.get("result") != failover.STARTED:
        return status
    status = failover.finish(status, datetime.now(UTC), "error: interrupted (operator restarted)")
    leader = next((m for m in members if m.role == "leader"), None)
    if leader is not None and leader.reachable and not leader.following:
        try:
            await ctx.send(leader, "READONLY", "no")
        except probe.ProbeError as exc:
            ctx.logger.warning("READONLY no on %s after an interrupted promotion: %s", leader.name, exc)
    await _write_status(ctx.cluster, status)
    return status


async def _promote(ctx: _Ctx, members: list[probe.Member], pods: dict[str, dict[str, Any]],
                   pr: failover.Promotion, status: dict[str, Any]):
    """Carry out a switchover or failover (the same steps as the local runtime): fence the
    old leader (READONLY yes; a leader that does not answer loses its role label and its pod),
    for a switchover wait until the target has all of its AOF, FOLLOW no one on the target,
    then record the new view (status.leader, ConfigMap), flip the role labels (the Services
    follow) and re-point the followers, the old leader last. Returns (status, ctx, members)."""
    cluster, kind = ctx.cluster, pr.kind.capitalize()
    by = {m.name: m for m in members}
    old, new = by.get(pr.old), by[pr.new]
    track = _leases.setdefault(ctx.body["metadata"].get("uid", cluster.name), _LeaseTrack(None))
    plan = failover.lease_plan(cluster.spec, RENEW_EVERY)
    seen = await asyncio.gather(*(_lease_info(ctx, m) for m in (old, new) if m is not None and m.reachable))
    epoch = failover.next_epoch(track.epoch, [i.epoch if i else None for i in seen])
    await asyncio.to_thread(_set_config_epoch, cluster, epoch)  # the new epoch before anyone holds it
    track.epoch, track.healthy = epoch, False  # no renewal of the old leader from here on
    fenced_at = time.monotonic()
    behind = 0
    try:
        # the target's lease first, outside the write pause: as a follower it refuses writes anyway
        granted = await _grant(ctx, new, epoch, plan.ms)
        if not granted.ok:
            raise probe.ProbeError(f"lease for {new.name}: {granted.error}")
        if pr.old_reachable and old is not None:
            await ctx.send(old, "READONLY", "yes")  # writes now get a `read only` error: retry
            fenced_at = time.monotonic()
            if pr.kind == "switchover":
                await _wait_caught_up(ctx, old, new)
        else:
            await _fence(ctx, pr.old, pods)
        if pr.kind == "failover":
            behind = await _loss_bound(ctx, pr, members, status)
        track.until = failover.lease_end(None, granted.read_at, plan)
        await ctx.send(new, "FOLLOW", "no", "one")
        await ctx.send(new, "READONLY", "no")  # one left by an interrupted switchover
    except Exception as exc:  # not promoted: the old leader stays (writes resume there)
        ctx.logger.warning("%s %s -> %s failed: %s", pr.kind, pr.old, pr.new, exc)
        track.epoch = epoch + 1  # the old leader leads on, at a newer epoch than the target's
        await asyncio.to_thread(_set_config_epoch, cluster, track.epoch)
        await _grant(ctx, new, track.epoch, 0)
        if pr.old_reachable and old is not None:
            try:
                regrant = await _grant(ctx, old, track.epoch, plan.ms)
                track.until = failover.lease_end(track.until, regrant.read_at, plan)
                await ctx.send(old, "READONLY", "no")
            except probe.ProbeError as again:
                ctx.logger.warning("READONLY no on %s: %s", old.name, again)
        status = failover.finish(status, datetime.now(UTC), f"error: {exc}")
        await _write_status(cluster, status)
        kopf.warn(ctx.body, reason=f"{kind}Failed", message=f"{pr.old} -> {pr.new}: {exc}")
        metrics.promotion(cluster.namespace, cluster.name, pr.kind, "error")
        return status, ctx, members
    pause_ms = round((time.monotonic() - fenced_at) * 1000)
    if pr.old_reachable and old is not None:  # revoked at the new epoch (READONLY fences it
        await _grant(ctx, old, epoch, 0)  # meanwhile): a stale renewal cannot revive it
    holders = failover.holders(pr, load_status(status).leader_watch)  # the decision's view
    status = failover.finish(status, datetime.now(UTC), "ok", behind_bytes=behind,
                             write_pause_ms=pause_ms, leader=pr.new, caught_up=holders)  # fmt: skip
    await _write_status(cluster, status)  # the new view before anyone follows it
    ctx = replace(ctx, cluster=replace(cluster, leader=pr.new))
    await asyncio.to_thread(_set_config_leader, ctx.cluster)
    members = [replace(m, role="leader" if m.name == pr.new else "follower")
               if m.name in (pr.new, pr.old) else m for m in members]  # fmt: skip
    await _label(ctx, _views(pods), members)
    members = [replace(m, following=None) for m in members]  # everyone follows the new one now
    await _repoint(ctx, members, last=pr.old)
    message = (f"{pr.old} -> {pr.new} ({pr.reason}): writes paused {pause_ms} ms, the new leader "
               f"lacked at most {behind} bytes of the old one's AOF")  # fmt: skip
    kopf.event(ctx.body, type="Normal" if pr.kind == "switchover" else "Warning",
               reason=f"{kind}Succeeded", message=message)  # fmt: skip
    ctx.logger.warning("%s", message)
    metrics.promotion(cluster.namespace, cluster.name, pr.kind, "ok")
    if ctx.legacy:  # off the v1alpha1 StatefulSets: their pods must not come back as leaders
        await _remove_legacy(ctx)
        ctx = replace(ctx, legacy=())
    pods = await asyncio.to_thread(_pods, ctx.cluster)
    members = await _observe(ctx.cluster, ctx.password, None, ctx.tls, pods)
    return status, ctx, members


async def _lease_info(ctx: _Ctx, m: probe.Member) -> probe.LeaseInfo | None:
    if m.address is None:
        return None
    return await probe.lease_info(m.address, ctx.password, PROBE_TIMEOUT, tls=ctx.tls,
                                  server_name=ctx.server_name(m.name))


async def _grant(ctx: _Ctx, m: probe.Member, epoch: int, ms: int) -> probe.Renewal:
    """LEASE on one member (ms 0: revoke); failures are in the result, never raised."""
    if m.address is None:
        return probe.Renewal(None, None, f"{m.name} has no address")
    return await probe.grant_lease(m.address, epoch, ms, ctx.password, PROBE_TIMEOUT, tls=ctx.tls,
                                   server_name=ctx.server_name(m.name))


async def _stats_now(ctx: _Ctx, m: probe.Member) -> dict[str, Any] | None:
    if m.address is None:
        return None
    try:
        async with probe.Client(m.address, ctx.password, PROBE_TIMEOUT, tls=ctx.tls,
                                server_name=ctx.server_name(m.name)) as c:
            return (await c.command("SERVER"))["stats"]
    except (probe.ProbeError, KeyError):
        return None


async def _loss_bound(ctx: _Ctx, pr: failover.Promotion, members: list[probe.Member],
                      status: dict[str, Any]) -> int:
    """The failover's ``behindBytes``, measured right before the promotion: the target's
    aof_size now against the most the old leader was known to hold (its size when last seen
    healthy, or what any follower last heard from it), plus, for an old leader that answers
    (an empty or much smaller one, fenced by now), everything it holds (written since it came
    back, lost). With the old leader unreachable, writes it acknowledged after the followers
    last heard from it (until its lease lapsed) are not counted: docs/operator.md#leader-lease."""
    others = [m for m in members if m.role == "follower" and m.reachable]
    found = await asyncio.gather(*(_stats_now(ctx, m) for m in others))
    now = {m.name: st for m, st in zip(others, found, strict=True) if st is not None}
    target = now.get(pr.new)
    if target is None or not isinstance(target.get("aof_size"), int):
        return pr.behind_bytes  # it did not answer: the last probe's estimate
    heard = [st.get("leader_aof_size") for st in now.values()]
    known = max([(status.get("leaderWatch") or {}).get("aofSize") or 0,
                 *(h for h in heard if isinstance(h, int) and not pr.old_reachable)])
    behind = max(0, known - target["aof_size"])
    if pr.old_reachable:
        old = next((m for m in members if m.name == pr.old), None)
        held = await _stats_now(ctx, old) if old is not None else None
        behind += int((held or {}).get("aof_size") or 0)
    return behind


async def _fence(ctx: _Ctx, name: str, pods: dict[str, dict[str, Any]]) -> None:
    """An old leader that does not answer: no Service routes to it (role label removed) and
    its pod goes (the kubelet kills the process if it lives; the StatefulSet's new pod reads the
    new leader from the ConfigMap and follows it). A v1alpha1 leader pod goes with its
    StatefulSet, whose template would start it as a leader again."""
    ns = ctx.cluster.namespace
    if name in pods:
        try:
            await asyncio.to_thread(kube.patch_pod_labels, ns, name, {res.ROLE_LABEL: None})
        except kube.ApiException as exc:
            if exc.status != 404:
                raise
    if name not in res.member_pods(ctx.cluster) and ctx.legacy:
        await asyncio.to_thread(kube.remove, "StatefulSet", ns, res.legacy_sts_names(ctx.cluster)[0])
    await asyncio.to_thread(kube.delete_pod, ns, name)


async def _wait_caught_up(ctx: _Ctx, old: probe.Member, new: probe.Member) -> None:
    """Until the target has applied all of the (read-only) old leader's AOF."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    if new.address is None or old.address is None:
        raise probe.ProbeError("no address")

    def client(m: probe.Member) -> probe.Client:  # one connection each: writes wait meanwhile
        assert m.address is not None
        return probe.Client(m.address, ctx.password, PROBE_TIMEOUT, tls=ctx.tls,
                            server_name=ctx.server_name(m.name))  # fmt: skip

    async with client(new) as target, client(old) as leader:
        while True:
            want = (await leader.command("SERVER"))["stats"].get("aof_size")
            have = (await target.command("SERVER"))["stats"].get("aof_size")
            if want is not None and have == want:
                return
            if time.monotonic() > deadline:
                raise probe.ProbeError(f"{new.name} at aof_size {have}, leader at {want} "
                                       f"after {CATCH_UP_TIMEOUT:.0f}s")  # fmt: skip
            await asyncio.sleep(0.005)


def _set_config_leader(cluster: res.Cluster) -> None:
    """The ConfigMap's leader keys, as members read them when they start."""
    data = {k: v for k, v in res.build_configmap(cluster)["data"].items()
            if k in (res.LEADER_KEY, "leaderMember")}  # fmt: skip
    live = kube.read("ConfigMap", cluster.namespace, res.config_name(cluster))
    if live is None:
        kube.apply(res.build_configmap(cluster))
    elif {k: (live.get("data") or {}).get(k) for k in data} != data:
        kube.patch("ConfigMap", cluster.namespace, res.config_name(cluster), {"data": data})


async def _label(ctx: _Ctx, pods: dict[str, roles.Pod], members: list[probe.Member]) -> None:
    """Role labels on the member pods; the old leader's is changed before the new one's, so the
    write Service never has two. v1alpha1 pods keep their StatefulSets' labels."""
    cluster = ctx.cluster
    changes = roles.role_labels(pods, res.member_pods(cluster), res.leader_pod(cluster), res.ROLE_LABEL)
    for name in sorted(changes, key=lambda n: changes[n] == "leader"):
        try:
            await asyncio.to_thread(kube.patch_pod_labels, cluster.namespace, name,
                                    {res.ROLE_LABEL: changes[name]})  # fmt: skip
        except kube.ApiException as exc:  # gone meanwhile: labelled when it is back
            ctx.logger.info("role label on %s: %s %s", name, exc.status, exc.reason)


async def _repoint(ctx: _Ctx, members: list[probe.Member], last: str | None = None) -> None:
    """FOLLOW the leader on every reachable follower following someone else (``last`` after the
    others); a follower that refuses stays as it is until the next tick."""
    leader = next((m for m in members if m.role == "leader"), None)
    aliases = frozenset({f"{res.leader_dns(ctx.cluster)}:{GEOSERVER_PORT}"})
    ours = frozenset({f"{res.pod_dns(ctx.cluster, m.name)}:{GEOSERVER_PORT}" for m in members}
                     | {m.address for m in members if m.address})  # fmt: skip
    names = roles.to_repoint(members, leader, aliases, ours)
    if leader is None or not names:
        return
    host, port = ctx.follow_target(leader)
    by = {m.name: m for m in members}
    for name in sorted(names, key=lambda n: n == last):
        try:
            await ctx.send(by[name], "FOLLOW", host, port)
            if name == last:
                await ctx.send(by[name], "READONLY", "no")  # a follower now: refuses writes anyway
            ctx.logger.info("%s: FOLLOW %s:%s (was following %s)", name, host, port,
                            by[name].following or "no one")  # fmt: skip
        except probe.ProbeError as exc:
            ctx.logger.warning("%s: FOLLOW %s:%s failed: %s", name, host, port, exc)


async def _converge(ctx: _Ctx, members: list[probe.Member], pods: dict[str, dict[str, Any]],
                    status: dict[str, Any]) -> list[probe.Member]:
    """Keep the view true every tick: the ConfigMap names the leader, role labels match, the
    named leader leads (it starts following itself, like every member: FOLLOW no one once it
    is not failing, so an empty one is never made a leader over followers holding data) and
    the followers follow it."""
    await asyncio.to_thread(_set_config_leader, ctx.cluster)
    await _label(ctx, _views(pods), members)
    leader = next((m for m in members if m.role == "leader"), None)
    followers = [m for m in members if m.role == "follower"]
    if (leader is not None and leader.reachable and leader.following
            and failover.failing(leader, followers) is None
            and not migrating(ctx.cluster.spec, status)):  # fromLeader: handlers_bootstrap detaches
        try:
            await ctx.send(leader, "FOLLOW", "no", "one")
            await ctx.send(leader, "READONLY", "no")
            kopf.event(ctx.body, type="Normal", reason="LeaderStarted",
                       message=f"{leader.name} leads (was following {leader.following})")
            # its followers tried it while it refused them: FOLLOW again, so they connect now
            # rather than after their back-off (geoserver retries at once on that)
            waiting = {m.name for m in followers if m.reachable and not m.caught_up}
            await _repoint(ctx, [replace(m, following=None) if m.name in waiting or m is leader else m
                                 for m in members])  # fmt: skip
            # to the repair policy it still does not lead this tick: its followers connect now
            return [replace(m, reachable=False, error="starting to lead") if m is leader else m
                    for m in members]  # fmt: skip
        except probe.ProbeError as exc:
            ctx.logger.warning("FOLLOW no one on %s: %s", leader.name, exc)
    await _repoint(ctx, members)
    # a named leader that does not lead (yet) takes no writes: unavailable to the repair policy,
    # whose followers cannot be caught up meanwhile (no repair clock runs for them)
    return [replace(m, reachable=False, error=f"not leading yet: follows {m.following}")
            if m.role == "leader" and m.reachable and m.following else m for m in members]  # fmt: skip


def _busy(status: dict[str, Any]) -> str | None:
    """Something in flight that a pod deletion must not cut short."""
    st = load_status(status)
    if st.last_shrink and st.last_shrink.result == failover.STARTED:
        return "a shrink is running"
    if st.last_resync and st.last_resync.result == failover.STARTED:
        return "a resync is running"
    if st.pending_resyncs:
        return "resyncs are queued"
    if any(m.last_repair and m.last_repair.result == failover.STARTED for m in st.members):
        return "a repair is running"
    return None


async def _take_restart(cluster: res.Cluster, body: Any, annotations: dict[str, str]) -> str | None:
    """The time of the restart in progress; a new request (RESTART_ANNOTATION) is consumed into
    RESTARTING_ANNOTATION with the time it was taken up."""
    if RESTART_ANNOTATION not in annotations:
        return annotations.get(RESTARTING_ANNOTATION)
    since = _now_str()
    await asyncio.to_thread(kube.patch_annotations, cluster.namespace, cluster.name,
                            {RESTART_ANNOTATION: None, RESTARTING_ANNOTATION: since})  # fmt: skip
    kopf.event(body, type="Normal", reason="RestartRequested",
               message=f"restart {annotations[RESTART_ANNOTATION]!r}: every member, followers first, "
               "then a switchover, then the old leader")  # fmt: skip
    return since


async def _step(ctx: _Ctx, members: list[probe.Member], pods: dict[str, dict[str, Any]],
                status: dict[str, Any], paused: bool = False, restart_since: str | None = None):
    """At most one migration or update step (roles.plan_migration, roles.plan_update); a
    restart request makes the pods created before it outdated too, until none is left."""
    cluster, spec = ctx.cluster, ctx.cluster.spec
    if restart_since and _now_str() <= restart_since:
        # creation times have seconds only: wait out the request's second, so a pod restarted
        # for it is never taken for one created before it (and restarted twice)
        return status, ctx, members
    views = _views(pods)
    leader = res.leader_pod(cluster)
    step = roles.plan_migration(bool(ctx.legacy), leader, res.member_pods(cluster), members, views)
    restart = roles.restart_pending({n: v for n, v in views.items() if n in res.member_pods(cluster)},
                                    restart_since)  # fmt: skip
    if step.kind == "none" and not (paused or spec.paused):
        step = roles.plan_update(spec, views, members, leader, res.template_hash(cluster), _busy(status),
                                 restart)  # fmt: skip
    back = all(n in views and not views[n].deleting for n in res.member_pods(cluster))
    if restart_since and not restart and step.kind == "none" and back:
        await asyncio.to_thread(kube.patch_annotations, cluster.namespace, cluster.name,
                                {RESTARTING_ANNOTATION: None})  # fmt: skip
        kopf.event(ctx.body, type="Normal", reason="RestartCompleted",
                   message=f"every member restarted since {restart_since}")
    uid = ctx.body["metadata"].get("uid", cluster.name)
    announce = _last_step.get(uid) != f"{step.kind} {step.member} {step.reason}"
    _last_step[uid] = f"{step.kind} {step.member} {step.reason}"
    if step.kind == "removeLegacy":
        await _remove_legacy(ctx)
        return status, replace(ctx, legacy=()), members
    if step.kind == "delete" and step.member:
        kopf.event(ctx.body, type="Normal", reason="PodUpdating", message=f"{step.member}: {step.reason}")
        await asyncio.to_thread(kube.delete_pod, cluster.namespace, step.member)
        metrics.pod_updated(cluster.namespace, cluster.name)
    elif step.kind == "switchover" and step.member:
        lead = failover.decide(spec, status, members, datetime.now(UTC), promote=step.member)
        _post(ctx.body, [e for e in lead.events if e.reason != "InvalidTrigger"])
        if lead.promotion is not None:
            await _write_status(cluster, lead.status)
            return await _promote(ctx, members, pods, lead.promotion, lead.status)
    elif step.kind in ("wait", "supervised") and announce and step.reason:
        ctx.logger.info("update/migration waits: %s", step.reason)
        if step.kind == "supervised":
            kopf.event(ctx.body, type="Normal", reason="LeaderUpdatePending", message=step.reason)
    return status, ctx, members


async def _remove_legacy(ctx: _Ctx) -> None:
    """Delete the v1alpha1 StatefulSets (their pods go with them; their PVCs stay: see
    docs/upgrade.md)."""
    for name in ctx.legacy:
        await asyncio.to_thread(kube.remove, "StatefulSet", ctx.cluster.namespace, name)
    kopf.event(ctx.body, type="Normal", reason="MigrationCompleted",
               message=f"{res.leader_pod(ctx.cluster)} leads from StatefulSet {res.sts_name(ctx.cluster)}; "
               f"removed {', '.join(ctx.legacy)} (their PVCs are kept: docs/upgrade.md)")  # fmt: skip


async def _remove_annotations(cluster: res.Cluster, keys: list[str]) -> None:
    if keys:
        await asyncio.to_thread(kube.patch_annotations, cluster.namespace, cluster.name,
                                dict.fromkeys(keys))  # fmt: skip


async def _write_status(cluster: res.Cluster, status: dict[str, Any]) -> None:
    """The timer's status write, without observedGeneration: only reconcile sets that (once it
    has applied a generation), and this body's copy may be older than what reconcile wrote."""
    # the backup fields are handlers_backup's: a body read before its write must not undo it
    patch = {k: v for k, v in status.items()
             if k != "observedGeneration" and k not in BACKUP_STATUS_KEYS}
    patch["selector"] = ",".join(f"{k}={v}" for k, v in res.selector(cluster, "follower").items())
    await asyncio.to_thread(kube.patch_status, cluster.namespace, cluster.name, patch)


def _triggers(annotations: dict[str, str]) -> Triggers:
    names = {"shrink": SHRINK_ANNOTATION, "resync": RESYNC_ANNOTATION}
    requests = {kind: annotations[key] for kind, key in names.items() if key in annotations}
    return Triggers.from_requests(requests, annotations.get(PAUSE_ANNOTATION, ""))


async def _observe(cluster: res.Cluster, password: str | None, auth_error: str | None,
                   tls: ssl.SSLContext | None = None,
                   pods: dict[str, dict[str, Any]] | None = None) -> list[probe.Member]:
    """Pod IPs from the API (filtered client-side), then SERVER on each member (over TLS,
    verified by pod DNS name, when spec.tls is set). The roles are the operator's view
    (status.leader), not what the members say. Without the password or the TLS Secret
    nobody is probed: every member is a finding naming the Secret (nothing is judged)."""
    if pods is None:
        pods = await asyncio.to_thread(_pods, cluster)
    ips = {n: (p.get("status") or {}).get("podIP") for n, p in pods.items()
           if not p["metadata"].get("deletionTimestamp")}  # fmt: skip
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


from . import handlers_backup  # noqa: E402, F401 - registers the backup timer on REGISTRY
