"""Operator metrics (prometheus-client), fed from the policy's Events and the handlers' actions."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

from .policy import Action, Decision, Member

_LABELS = ("namespace", "cluster")

SHRINKS = Counter("geocluster_shrinks_total", "AOF shrinks by result.", [*_LABELS, "result"])
RESYNCS = Counter("geocluster_resyncs_total", "Follower resyncs by result.", [*_LABELS, "result"])
REPAIRS = Counter("geocluster_repairs_total", "Repairs by action and result.", [*_LABELS, "action", "result"])
PROBE_ERRORS = Counter(
    "geocluster_probe_errors_total", "Members that did not answer SERVER.", [*_LABELS, "member"]
)
DIVERGENCE = Gauge(
    "geocluster_divergence_ratio",
    "Follower aof_size / leader aof_size (1.0 = in step).",
    [*_LABELS, "member"],
)

PROMOTIONS = Counter(
    "geocluster_promotions_total", "Switchovers and failovers by result.", [*_LABELS, "kind", "result"]
)
POD_UPDATES = Counter(
    "geocluster_pod_updates_total", "Member pods deleted to pick up a new pod template.", _LABELS
)

_EVENT_COUNTERS = {
    "ShrinkSucceeded": (SHRINKS, {"result": "ok"}),
    "ShrinkFailed": (SHRINKS, {"result": "error"}),
    "ResyncSucceeded": (RESYNCS, {"result": "ok"}),
    "ResyncFailed": (RESYNCS, {"result": "error"}),
    "RepairGaveUp": (REPAIRS, {"action": "giveUp", "result": "gaveUp"}),
}


def serve(host: str, port: int) -> None:
    """Expose /metrics on host:port (a daemon thread)."""
    start_http_server(port, addr=host)


def record(namespace: str, cluster: str, members: list[Member], decision: Decision) -> None:
    """Update gauges from observations and counters from the decision's events/actions."""
    leader = next((m for m in members if m.role == "leader"), None)
    for m in members:
        if not m.reachable:
            PROBE_ERRORS.labels(namespace, cluster, m.name).inc()
        if m.role == "follower" and leader and leader.aof_size and m.aof_size is not None:
            DIVERGENCE.labels(namespace, cluster, m.name).set(m.aof_size / leader.aof_size)
    for event in decision.events:
        if event.reason in _EVENT_COUNTERS:
            counter, extra = _EVENT_COUNTERS[event.reason]
            counter.labels(namespace=namespace, cluster=cluster, **extra).inc()
    for action in decision.actions:
        if action.repair:
            REPAIRS.labels(namespace, cluster, action.kind, "started").inc()
    for action_kind, result in decision.settled:
        REPAIRS.labels(namespace, cluster, action_kind, result).inc()


def action_failed(namespace: str, cluster: str, action: Action) -> None:
    """An action could not even be started."""
    if action.repair:
        REPAIRS.labels(namespace, cluster, action.kind, "error").inc()
    elif action.kind == "shrink":
        SHRINKS.labels(namespace, cluster, "error").inc()
    else:
        RESYNCS.labels(namespace, cluster, "error").inc()


def promotion(namespace: str, cluster: str, kind: str, result: str) -> None:
    """A switchover or failover finished (result ok or error)."""
    PROMOTIONS.labels(namespace, cluster, kind, result).inc()


def pod_updated(namespace: str, cluster: str) -> None:
    """A member pod was deleted so that its StatefulSet recreates it from the new template."""
    POD_UPDATES.labels(namespace, cluster).inc()


BACKUPS = Counter("geocluster_backups_total", "Backups by result.", [*_LABELS, "result"])
BACKUP_LAST_SUCCESS = Gauge(
    "geocluster_backup_last_success_timestamp_seconds",
    "Unix time the last successful backup was taken (alert when too old: docs/runbook.md).", _LABELS,
)
BACKUP_DURATION = Gauge(
    "geocluster_backup_duration_seconds", "Duration of the last successful backup.", _LABELS
)
BACKUP_BYTES = Gauge("geocluster_backup_bytes", "Stored bytes of the last successful backup.", _LABELS)


def backup_done(namespace: str, cluster: str, size: int, duration: float, finished: float) -> None:
    """A backup succeeded."""
    BACKUPS.labels(namespace, cluster, "ok").inc()
    BACKUP_LAST_SUCCESS.labels(namespace, cluster).set(finished)
    BACKUP_DURATION.labels(namespace, cluster).set(duration)
    BACKUP_BYTES.labels(namespace, cluster).set(size)


def backup_failed(namespace: str, cluster: str) -> None:
    """A backup attempt failed (it is retried by the policy)."""
    BACKUPS.labels(namespace, cluster, "error").inc()


def backup_taken_at(namespace: str, cluster: str, when: float) -> None:
    """The last successful backup's time, from status (kept across operator restarts)."""
    BACKUP_LAST_SUCCESS.labels(namespace, cluster).set(when)
