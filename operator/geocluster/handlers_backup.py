"""kopf handlers for spec.backup: a timer per GeoCluster that asks ``backup_policy.decide``,
records intent in the status, streams the backup from a member, settles the outcome.

- Members come from ``status.members`` as the main timer last probed them (address, role,
  caught-up, aof_size): this timer does not probe again, and a wrong pick is caught anyway
  (the backup itself checks size and AOFMD5).
- On demand: the annotation ``geo.geocluster.io/backup-now`` (any value); removed once taken.
- The status fields ``lastBackup``, ``lastSuccessfulBackup``, ``backups``, ``backupFailures`` are
  written only here (the main timer leaves them alone), so the two timers never undo each other.
- kopf runs one invocation of a timer per object at a time; ``lastBackup.result: started`` keeps
  a restarted operator from a second backup until ``timeoutSeconds`` (then it counts as lost).
- S3 credentials come from ``spec.backup.s3Credentials`` (a Secret) or boto3's default chain
  (IRSA, instance profile); a ``file://`` destination is a volume mounted into the operator.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from . import backup, backup_policy, bootstrap_state, kube, metrics
from . import resources as res
from .handlers import OPERATOR_NAMESPACE, REGISTRY, TICK_SECONDS, _password, _tls
from .spec import GROUP, PLURAL, VERSION, SpecError, parse_spec, parse_time

BACKUP_ANNOTATION = f"{GROUP}/backup-now"
PAUSE_ANNOTATION = f"{GROUP}/paused"
_bootstrap_warned: set[str] = set()  # uid/generation warned about spec.bootstrap
BACKUP_TICK_SECONDS = float(os.environ.get("GEOCLUSTER_BACKUP_TICK_SECONDS", TICK_SECONDS))


def _secret(namespace: str):
    def read(name: str, key: str) -> str:
        return kube.read_secret_key(namespace, name, key)

    return read


@kopf.timer(GROUP, VERSION, PLURAL, interval=BACKUP_TICK_SECONDS, id="backups", registry=REGISTRY)
async def backups(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Due? Intent first, then the backup (in a worker thread), then its outcome."""
    meta = body["metadata"]
    _warn_bootstrap(body)
    requested = BACKUP_ANNOTATION in (meta.get("annotations") or {})
    if not (body.get("spec") or {}).get("backup") and not requested:
        return  # nothing to do (the usual case): no API read
    ns, name, now = meta["namespace"], meta["name"], datetime.now(UTC)
    # fresh: this body may predate our last status write, a spec change or the annotation's removal
    fresh = await asyncio.to_thread(_read, ns, name)
    try:
        spec = parse_spec(dict(fresh.get("spec") or {}))
    except SpecError:
        return  # reported by reconcile
    status, annotations = dict(fresh.get("status") or {}), fresh["metadata"].get("annotations") or {}
    manual = BACKUP_ANNOTATION in annotations
    if last_ok := parse_time(status.get("lastSuccessfulBackup")):  # also after an operator restart
        metrics.backup_taken_at(ns, name, last_ok.timestamp())
    paused = spec.paused or annotations.get(PAUSE_ANNOTATION, "").strip().lower() in ("true", "1", "yes")
    paused = paused or bootstrap_state.migrating(spec, status)  # the leader copies the old one
    decision = backup_policy.decide(spec.backup, status, backup_policy.members_from_status(status), now,
                                    created=parse_time(meta.get("creationTimestamp")) or now,
                                    manual=manual, paused=paused)
    if decision.start or decision.events or decision.consumed:
        await asyncio.to_thread(kube.patch_status, ns, name, decision.status)  # intent first
    if decision.consumed:
        await asyncio.to_thread(kube.patch_annotations, ns, name, {BACKUP_ANNOTATION: None})
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    start = decision.start
    if start is None or spec.backup is None:
        return
    cluster = res.Cluster.from_body(body, spec, OPERATOR_NAMESPACE)
    try:
        source = await asyncio.to_thread(_source, cluster, status, start)
        s3 = await asyncio.to_thread(backup.s3_options, spec.backup, _secret(ns))
        out = await asyncio.to_thread(backup.run, spec.backup, name, source, start.name, now, s3)
        patch, event = backup_policy.settle_patch({**status, **decision.status}, now=datetime.now(UTC),
                                                  size=out.size, aof_size=out.aof_size,
                                                  duration=out.duration, location=out.location,
                                                  backups=out.backups)
        metrics.backup_done(ns, name, out.size, out.duration, now.timestamp())
        if out.deleted:
            logger.info("retention deleted backups %s", ", ".join(out.deleted))
    except Exception as exc:  # every failure is a failed attempt: recorded, retried by the policy
        logger.warning("backup %s failed: %s", start.name, exc)
        patch, event = backup_policy.settle_patch({**status, **decision.status}, now=datetime.now(UTC),
                                                  error=str(exc))
        metrics.backup_failed(ns, name)
    await asyncio.to_thread(kube.patch_status, ns, name, patch)
    kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _warn_bootstrap(body: kopf.Body) -> None:
    """fromBackup/fromAOF are applied by the members' init container (resources.restore_args);
    say once per GeoCluster and generation when that cannot work: a file:// or path source
    outside the data volume (the init container mounts only that)."""
    meta = body["metadata"]
    key = f"{meta.get('uid', meta['name'])}/{meta.get('generation')}"
    if key in _bootstrap_warned:
        return
    warning = bootstrap_warning((body.get("spec") or {}).get("bootstrap") or {})
    if warning is not None:
        _bootstrap_warned.add(key)
        kopf.warn(body, reason=warning[0], message=warning[1])


def bootstrap_warning(boot: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) for a spec.bootstrap the operator cannot apply as asked, else None."""
    store = boot.get("fromBackup") or boot.get("fromAOF") or {}
    source = store.get("source") or "" if isinstance(store, dict) else ""
    path = source.removeprefix("file://") if source.startswith(("file://", "/")) else None
    if path is not None and not path.startswith(f"{res.DATA_DIR}/"):
        return ("BootstrapSourceNotMounted", f"spec.bootstrap source {source} is not visible to the "
                f"members' init container (it mounts only {res.DATA_DIR}): use s3:// (docs/backup.md)")
    return None


def _read(namespace: str, name: str) -> dict[str, Any]:
    return kube.client.CustomObjectsApi(kube.api()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)


def _source(cluster: res.Cluster, status: dict[str, Any], start: backup_policy.BackupStart) -> backup.Source:
    """The chosen member's address, with the cluster's password and TLS."""
    member = next((m for m in status.get("members") or [] if m.get("name") == start.source), {})
    if not member.get("address"):
        raise backup.BackupError(f"{start.source} has no address")
    password, auth_error = _password(cluster)
    tls, tls_error = _tls(cluster)
    if auth_error or tls_error:
        raise backup.BackupError(auth_error or tls_error or "")
    return backup.Source(start.source, start.source_role, member["address"], password, tls,
                         res.pod_dns(cluster, start.source) if tls is not None else None)


from . import handlers_bootstrap  # noqa: E402, F401 - registers the bootstrap timer on REGISTRY
