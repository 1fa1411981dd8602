"""kopf timer for spec.bootstrap on Kubernetes: status.bootstrap, and the live migration.

The member pods have no API token, so this timer observes bootstrap itself and
``bootstrap_state`` judges it (docs/backup.md#bootstrap-on-kubernetes):

- ``fromBackup`` / ``fromAOF``: the members' ``bootstrap`` init container state and termination
  message in the pod status (the report ``geocluster restore --report`` wrote): pending,
  restoring, restored (bytes, backup, md5), skipped, or failed (a refused backup: condition
  ``Bootstrapped`` False/RestoreRefused and a ``BootstrapFailed`` Warning).
- ``fromLeader``: every member starts following the leader the ConfigMap names, as always; this
  timer then points the leader at the old leader (``CONFIG SET leaderauth``, ``FOLLOW host
  port``), and the main timer leaves it following (``bootstrap_state.migrating``). The followers
  wait (``cannot follow a follower``). On ``geo.geocluster.io/detach`` (``force``: even if the
  old leader cannot be fenced) it runs ``migration.detach`` (the local runtime's steps: READONLY
  on the old leader, every byte, FOLLOW no one), gives the leader its own leaderauth back and
  re-points the followers at it.
- ``status.bootstrap`` is written only here (the main timer leaves it alone, as the backup
  fields); the ``Bootstrapped`` condition is kept by the main timer's merge and re-asserted here.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from . import bootstrap_state as bs
from . import conditions, kube, migration, probe
from . import resources as res
from .handlers import FOLLOW_BY_IP, OPERATOR_NAMESPACE, REGISTRY, TICK_SECONDS, _password, _tls
from .policy import Member
from .spec import GEOSERVER_PORT, GROUP, PLURAL, VERSION, Condition, SpecError, dump, parse_spec, rfc3339

BOOTSTRAP_TICK_SECONDS = float(os.environ.get("GEOCLUSTER_BOOTSTRAP_TICK_SECONDS", TICK_SECONDS))


@kopf.timer(GROUP, VERSION, PLURAL, interval=BOOTSTRAP_TICK_SECONDS, id="bootstrap", registry=REGISTRY)
async def bootstrap(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Observe the bootstrap, take the migration's next step, record the phase."""
    meta = body["metadata"]
    requested = bs.DETACH_ANNOTATION in (meta.get("annotations") or {})
    if not (body.get("spec") or {}).get("bootstrap") and not requested:
        return  # the usual case: no API read
    if _settled(body) and not requested:
        return  # restored, skipped or detached, and the condition says so
    ns, name = meta["namespace"], meta["name"]
    fresh = await asyncio.to_thread(kube.read_geocluster, ns, name)
    try:
        spec = parse_spec(dict(fresh.get("spec") or {}))
    except SpecError:
        return  # reported by reconcile
    status, annotations = dict(fresh.get("status") or {}), fresh["metadata"].get("annotations") or {}
    request = annotations.get(bs.DETACH_ANNOTATION) if bs.DETACH_ANNOTATION in annotations else None
    boot = spec.bootstrap
    if boot is None or boot.from_leader is None:
        if request is not None:
            await _remove_request(ns, name)
            kopf.warn(body, reason="DetachRefused",
                      message="not migrating: spec.bootstrap.fromLeader is not set")
        if boot is None:
            return
        request = None
    cluster = res.Cluster.from_body(fresh, spec, OPERATOR_NAMESPACE)
    pods = await asyncio.to_thread(_pods, cluster)
    previous = bs.record_of(status)
    now = datetime.now(UTC)
    if boot.from_leader is None:
        store = boot.store
        assert store is not None
        leader = res.leader_pod(cluster)
        states = {p: bs.init_state(pods.get(p), p) for p in res.member_pods(cluster)}
        out = bs.restore_outcome("fromAOF" if boot.from_aof else "fromBackup", store.destination, previous,
                                 states.pop(leader), list(states.values()), now)
    else:
        out = await _migrate(cluster, pods, previous, request, body, logger)
        status = {}  # a detach takes a while: the conditions are read again before the write
    await _record(cluster, body, status, previous, out)


def _settled(body: kopf.Body) -> bool:
    """A migration done and visible: nothing to observe any more. (A restore is watched on:
    a member that starts later on a new volume restores too, and may fail.)"""
    status = body.get("status") or {}
    if not ((body.get("spec") or {}).get("bootstrap") or {}).get("fromLeader"):
        return False
    phase = (status.get("bootstrap") or {}).get("phase")
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == bs.CONDITION), None)
    return phase in bs.DONE and cond is not None and cond.get("status") == "True"


def _pods(cluster: res.Cluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in kube.list_pods(cluster.namespace, res.selector(cluster))}


def _address(pods: dict[str, dict[str, Any]], name: str) -> str | None:
    pod = pods.get(name) or {}
    ip = None if pod.get("metadata", {}).get("deletionTimestamp") else (pod.get("status") or {}).get("podIP")
    return f"{ip}:{GEOSERVER_PORT}" if ip else None


async def _remove_request(ns: str, name: str) -> None:
    await asyncio.to_thread(kube.patch_annotations, ns, name, {bs.DETACH_ANNOTATION: None})


async def _migrate(cluster: res.Cluster, pods: dict[str, dict[str, Any]], previous: Any,
                   request: str | None, body: kopf.Body, logger: kopf.Logger) -> bs.Outcome:
    """One step of the live migration (bootstrap_state.leader_outcome decides which)."""
    spec = cluster.spec
    assert spec.bootstrap is not None and spec.bootstrap.from_leader is not None
    boot = spec.bootstrap.from_leader
    password, auth_error = await asyncio.to_thread(_password, cluster)
    tls, tls_error = await asyncio.to_thread(_tls, cluster)
    old_password, old_error = await asyncio.to_thread(_old_password, cluster)
    name = res.leader_pod(cluster)
    address = _address(pods, name)
    new = migration.Endpoint(name, address or "", password, tls=tls,
                             server_name=res.pod_dns(cluster, name) if tls is not None else None)
    old = migration.Endpoint("old leader", boot.address, old_password)
    if auth_error or tls_error or old_error or address is None:
        why = auth_error or tls_error or old_error or "no pod IP yet"
        leader = Member(name, "leader", address, reachable=False, error=why)
        return bs.leader_outcome(boot, previous, leader, None, datetime.now(UTC), request)
    leader, was = await asyncio.gather(new.observe("follower"), old.observe())
    blocked = None
    if old_password and not password:
        blocked = ("fromLeader.authSecretRef needs a password on this cluster too (server.generatePassword "
                   "or server.authSecretRef): geoserver sends the old leader's password only to a leader "
                   "an authenticated client named")
    out = bs.leader_outcome(boot, previous, leader, was, datetime.now(UTC), request, blocked)
    if out.consumed or out.detach:  # intent first, then the request goes
        await _record(cluster, body, {}, previous, bs.Outcome(out.record))
    if out.consumed:
        await _remove_request(cluster.namespace, cluster.name)
    if out.follow:
        try:
            await migration.follow(new, boot.address, old_password)
            logger.info("%s: FOLLOW %s (live migration)", name, boot.address)
        except probe.ProbeError as exc:
            return _with_message(out, f"FOLLOW {boot.address} on {name} failed: {exc}")
    if not out.detach:
        return out if not out.consumed else bs.Outcome(out.record, out.events)
    try:
        done = await migration.detach(old, new, force=out.force, timeout=boot.catch_up_timeout_seconds)
    except migration.DetachError as exc:
        logger.warning("detach failed: %s", exc)
        return bs.detach_failed(out.record, datetime.now(UTC), str(exc))
    try:  # its own password again, for when it follows a member of this cluster (a switchover)
        await new.send("CONFIG", "SET", "leaderauth", password or "")
    except probe.ProbeError as exc:
        logger.warning("%s: CONFIG SET leaderauth failed: %s", name, exc)
    await _repoint(cluster, pods, new, logger)
    return bs.detached(out.record, datetime.now(UTC), done.aof_size, done.write_pause_ms, done.fenced)


def _with_message(out: bs.Outcome, message: str) -> bs.Outcome:
    return bs.Outcome(out.record.model_copy(update={"message": message}), out.events)


def _old_password(cluster: res.Cluster) -> tuple[str | None, str | None]:
    """(the old leader's password from fromLeader.authSecretRef, None) or (None, why)."""
    boot = cluster.spec.bootstrap
    ref = boot.from_leader.auth_secret_ref if boot and boot.from_leader else None
    if ref is None:
        return None, None
    try:
        return kube.read_secret_key(cluster.namespace, ref.name, ref.key), None
    except Exception as exc:  # 404/403, a missing key: reported, never raised
        why = f"{exc.status} {exc.reason}" if isinstance(exc, kube.ApiException) else repr(exc)
        return None, f"Secret {ref.name!r} key {ref.key!r} (fromLeader.authSecretRef) unavailable: {why}"


async def _repoint(cluster: res.Cluster, pods: dict[str, dict[str, Any]], leader: migration.Endpoint,
                   logger: kopf.Logger) -> None:
    """FOLLOW the new leader on every follower: they waited with `cannot follow a follower`
    (geoserver connects at once on a FOLLOW of the leader it waits for)."""
    host, port = (leader.address.rpartition(":")[0], str(GEOSERVER_PORT)) if FOLLOW_BY_IP else (
        res.pod_dns(cluster, leader.name), str(GEOSERVER_PORT))
    for name in res.follower_pods(cluster):
        address = _address(pods, name)
        if address is None:
            continue
        member = migration.Endpoint(name, address, leader.password, tls=leader.tls,
                                    server_name=res.pod_dns(cluster, name) if leader.tls else None)
        try:
            await member.send("FOLLOW", host, port)
        except probe.ProbeError as exc:  # the main timer re-points it later
            logger.warning("%s: FOLLOW %s:%s failed: %s", name, host, port, exc)


async def _record(cluster: res.Cluster, body: kopf.Body, status: dict[str, Any], previous: Any,
                  out: bs.Outcome) -> None:
    """status.bootstrap and the Bootstrapped condition when they changed, then the Events."""
    if not status:  # re-read: the conditions list is replaced whole by a merge-patch
        status = await asyncio.to_thread(kube.read_status, cluster.namespace, cluster.name)
    patch: dict[str, Any] = {}
    if previous is None or dump(previous) != dump(out.record):
        patch["bootstrap"] = bs.status_patch(out.record)
    current = [Condition.model_validate(c) for c in status.get("conditions") or []]
    mine = conditions.merge([c for c in current if c.type == bs.CONDITION], [bs.verdict(out.record)],
                            rfc3339(datetime.now(UTC)), None)
    if [dump(c) for c in current if c.type == bs.CONDITION] != [dump(c) for c in mine]:
        patch["conditions"] = [dump(c) for c in current if c.type != bs.CONDITION] + [dump(c) for c in mine]
    if patch:
        await asyncio.to_thread(kube.patch_status, cluster.namespace, cluster.name, patch)
    for event in out.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
