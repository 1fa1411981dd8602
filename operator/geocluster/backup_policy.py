"""Pure backup decisions: when a backup is due, from which member, what to retry, what to delete.

``decide(spec, status, members, now, ...)`` returns a frozen :class:`BackupDecision`; the
caller (the kopf timer in handlers_backup, or the local loop) records the new status first,
then takes the backup, then calls :func:`settle` with the outcome. No I/O, no clock.

Rules:
- Due when the cron ``schedule`` (in ``timeZone``) fired since the last scheduled attempt (or
  since the cluster was created), or on request (annotation / ``geocluster backup``).
- Never two at once: while ``lastBackup`` is ``started`` nothing starts; one still started after
  ``timeoutSeconds`` is lost (an operator restart mid-backup) and counts as failed.
- Never during a shrink (the leader's file is being replaced; a follower would be resynced
  right after): the backup waits, still due, and starts once the shrink is settled.
- A failed attempt is retried up to ``maxRetries`` times, after 1, 2, 4 ... minutes (capped at
  an hour); then the schedule's next occurrence tries again.
- Source: with ``target: prefer-follower`` the reachable, caught-up follower with the largest
  ``aof_size`` (ties by name), else the leader; with ``leader`` the leader. No reachable member
  is a failed attempt (retried like any other).
- Retention keeps the newest complete backup always, then at most ``count`` and none older than
  ``maxAge``; incomplete backups (no manifest) older than the timeout are removed too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .policy import Event, Member, cron_fired, load_status, status_patch
from .spec import BackupRecord, BackupRetention, BackupSpec, GeoClusterStatus, parse_time, rfc3339

STARTED = "started"
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)
BACKUP_KEYS = ("lastBackup", "lastSuccessfulBackup", "backups", "backupFailures")
# status fields the main timer does not write: the backup timer's, and handlers_bootstrap's
STATUS_KEYS = (*BACKUP_KEYS, "bootstrap")
_NAME = re.compile(r"^(\d{8}T\d{6}Z)")
_AGE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@dataclass(frozen=True)
class BackupStart:
    """Take backup ``name`` from ``source`` now."""

    name: str
    source: str
    source_role: str
    reason: str
    attempt: int


@dataclass(frozen=True)
class BackupDecision:
    start: BackupStart | None
    events: tuple[Event, ...]
    status: dict[str, Any]  # the backup fields of the status (BACKUP_KEYS), as a merge-patch
    consumed: bool = False  # the manual request was used up
    waiting: str | None = None  # why a due backup did not start


def backup_name(moment: datetime) -> str:
    """Sortable UTC name of a backup taken at ``moment``."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def name_time(name: str) -> datetime | None:
    """The time a backup name encodes, or None for other names."""
    m = _NAME.match(name)
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if m else None


def retry_delay(attempt: int) -> timedelta:
    """Wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    return min(RETRY_BASE * 2 ** (attempt - 1), RETRY_CAP)


def pick_source(members: list[Member], target: str = "prefer-follower") -> Member | None:
    """The member to read the AOF prefix from (see the module docstring)."""
    leader = next((m for m in members if m.role == "leader" and m.reachable), None)
    if target == "leader":
        return leader
    ready = [m for m in members if m.role == "follower" and m.reachable and m.caught_up
             and m.aof_size is not None and (leader is None or leader.aof_size is None
                                              or m.aof_size == leader.aof_size)]
    if ready:
        return sorted(ready, key=lambda m: (-(m.aof_size or 0), m.name))[0]
    return leader


def _patch(st: GeoClusterStatus) -> dict[str, Any]:
    full = status_patch(st)
    return {k: full.get(k) for k in BACKUP_KEYS}


def decide(
    spec: BackupSpec | None,
    status: dict[str, Any] | None,
    members: list[Member],
    now: datetime,
    *,
    created: datetime,
    manual: bool = False,
    paused: bool = False,
) -> BackupDecision:
    """What to do about backups this tick (see the module docstring)."""
    st = load_status(status)
    events: list[Event] = []
    if spec is None:
        if manual:
            events.append(Event("Warning", "BackupNotConfigured",
                                "backup requested but spec.backup is not set"))
        return BackupDecision(None, tuple(events), _patch(st), consumed=manual)
    last = st.last_backup
    if last and last.result == STARTED:
        started = parse_time(last.time) or now
        if now - started < timedelta(seconds=spec.timeout_seconds):
            return BackupDecision(None, (), _patch(st), waiting="a backup is in flight")
        st = settle(st, error=f"lost: not finished after {spec.timeout_seconds}s", now=now)
        events.append(Event("Warning", "BackupFailed", f"{last.name}: lost (timed out)"))
        last = st.last_backup
    reason, attempt = _due(spec, st, now, created, manual)
    if reason is None:
        return BackupDecision(None, tuple(events), _patch(st))
    leader = next((m for m in members if m.role == "leader"), None)
    shrinking = (st.last_shrink is not None and st.last_shrink.result == STARTED) or (
        leader is not None and leader.shrinking)
    if shrinking or paused:
        why = "a shrink is in flight" if shrinking else "paused"
        return BackupDecision(None, tuple(events), _patch(st), waiting=why)
    name = backup_name(now)
    source = pick_source(members, spec.target)
    if source is None:
        st.last_backup = BackupRecord(time=rfc3339(now), name=name, result="error: no reachable member",
                                      reason=reason, attempt=attempt)
        st.backup_failures += 1
        events.append(Event("Warning", "BackupFailed", f"{name}: no reachable member to back up from"))
        return BackupDecision(None, tuple(events), _patch(st), consumed=manual)
    st.last_backup = BackupRecord(time=rfc3339(now), name=name, result=STARTED, reason=reason,
                                  attempt=attempt, source=source.name)
    events.append(Event("Normal", "BackupStarted", f"{name} from {source.name} ({reason}"
                        + (f", attempt {attempt})" if attempt > 1 else ")")))
    start = BackupStart(name, source.name, source.role, reason, attempt)
    return BackupDecision(start, tuple(events), _patch(st), consumed=manual)


def _due(spec: BackupSpec, st: GeoClusterStatus, now: datetime, created: datetime,
         manual: bool) -> tuple[str | None, int]:
    """(reason, attempt) of a backup due now, or (None, 0)."""
    last = st.last_backup
    if manual:
        return "manual", 1
    failed = last is not None and last.result.startswith("error")
    if last and failed:
        if now - (parse_time(last.time) or now) < retry_delay(last.attempt):
            return None, 0
        if last.attempt <= spec.max_retries:
            return "retry", last.attempt + 1
    since = (parse_time(last.time) if last else None) or created
    if cron_fired(spec.schedule, spec.time_zone, since, now):
        return "schedule", 1
    return None, 0


def settle(st: GeoClusterStatus, *, now: datetime, error: str | None = None, size: int | None = None,
           aof_size: int | None = None, duration: float | None = None, location: str | None = None,
           backups: int | None = None) -> GeoClusterStatus:
    """The status after the in-flight backup ended (``error`` None: it succeeded)."""
    st = st.model_copy(deep=True)
    if st.last_backup is None:
        return st
    rec = st.last_backup
    rec.result = "ok" if error is None else f"error: {error}"
    rec.size, rec.aof_size, rec.duration_seconds = size, aof_size, duration
    rec.location = location or rec.location
    if error is None:
        st.last_successful_backup = rec.time
        st.backup_failures = 0
    else:
        st.backup_failures += 1
    if backups is not None:
        st.backups = backups
    return st


def settle_patch(status: dict[str, Any] | None, **outcome: Any) -> tuple[dict[str, Any], Event]:
    """:func:`settle` on a status dict: the merge-patch of the backup fields and the Event."""
    st = settle(load_status(status), **outcome)
    rec = st.last_backup
    assert rec is not None
    if outcome.get("error") is None:
        event = Event("Normal", "BackupSucceeded", f"{rec.name}: {rec.aof_size} AOF bytes, {rec.size} "
                      f"stored, {rec.duration_seconds}s, from {rec.source} to {rec.location}")
    else:
        event = Event("Warning", "BackupFailed", f"{rec.name} (attempt {rec.attempt}): {outcome['error']}")
    return _patch(st), event


def max_age(retention: BackupRetention) -> timedelta | None:
    if not retention.max_age:
        return None
    return int(retention.max_age[:-1]) * _AGE_UNITS[retention.max_age[-1]]


def expired(complete: list[tuple[str, datetime]], incomplete: list[str], retention: BackupRetention,
            now: datetime, *, in_flight: str | None = None,
            incomplete_after: timedelta = timedelta(hours=1)) -> list[str]:
    """Backup names to delete: complete ones past ``count`` or ``maxAge`` (never the newest),
    and incomplete ones (no manifest) older than ``incomplete_after`` (never ``in_flight``)."""
    newest_first = sorted(complete, key=lambda b: b[1], reverse=True)
    limit, age = retention.count, max_age(retention)
    out = [name for i, (name, when) in enumerate(newest_first)
           if i > 0 and ((limit is not None and i >= limit) or (age is not None and now - when > age))]
    for name in incomplete:
        when = name_time(name)
        if name != in_flight and when is not None and now - when > incomplete_after:
            out.append(name)
    return sorted(out)


def members_from_status(status: dict[str, Any] | None) -> list[Member]:
    """The members as the main timer last saw them (status.members), for :func:`pick_source`."""
    return [Member(ms.name, ms.role, ms.address, reachable=ms.reachable, aof_size=ms.aof_size,
                   caught_up=ms.caught_up) for ms in load_status(status).members]
