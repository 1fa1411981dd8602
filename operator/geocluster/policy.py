"""Pure decisions for one GeoCluster tick: what is due, who diverged, what to repair.

``decide(spec, status, members, now, ...)`` takes what the probes saw and the previous status
(the only memory across ticks and operator restarts) and returns a frozen :class:`Decision`:
actions to take, Events to record and the new status. No I/O, no clock: ``now`` is passed in.

Rules (see docs/operator.md):
- At most one action per tick: a repair, else a shrink, else one follower resync.
- Nothing is judged while a shrink or a resync is in flight or queued (sizes legitimately
  differ then); a finding must persist for ``gracePeriodSeconds`` before a repair.
- Repairs climb ``divergence.ladder`` (resync -> restart) per member; past its end the
  operator gives up on that member (Degraded). The leader is never repaired. Repairs are
  counted in ``repairHistory`` against ``maxRepairsPerHour``.
- Intent is written to status before the action is taken, so a restarted operator sees the
  action in flight and does not repeat it (at most once).
- A follower that refuses a full resync (``replication_state: refused``: its leader is new
  and much smaller, or empty) keeps the only copy of data the leader lacks: it is never
  repaired or resynced (a RESYNC is refused again, a restart changes nothing, forcing would
  wipe it). It is reported instead: Event ``ResyncRefused`` once, Degraded ``ResyncRefused``
  until it clears; a person decides (``RESYNC FORCE`` on it, or promote it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from . import conditions as cond
from .spec import (
    GeoClusterSpec,
    GeoClusterStatus,
    MemberStatus,
    RepairRecord,
    ResyncRecord,
    ShrinkRecord,
    dump,
    parse_time,
    rfc3339,
)

SHRINK_TIMEOUT = timedelta(hours=1)
SHRINK_RETRY = timedelta(minutes=5)
SHRINK_LOST = timedelta(minutes=1)  # a leader neither shrinking nor done by then lost it
RESTART_TIMEOUT = timedelta(minutes=15)  # a restarted pod that never answers (Pending, no node)
HOUR = timedelta(hours=1)
STARTED = "started"


@dataclass(frozen=True)
class Member:
    """What one probe of one member found (a finding, never an exception)."""

    name: str
    role: Literal["leader", "follower"]
    address: str | None = None
    reachable: bool = False
    aof_size: int | None = None
    caught_up: bool | None = None
    following: str | None = None
    shrinking: bool = False
    resyncs: int | None = None
    last_shrink_time: float = 0.0
    last_shrink_result: str = ""
    error: str | None = None
    caught_up_once: bool | None = None  # follower: caught up at least once in this process
    num_objects: int | None = None
    replication_state: str | None = None  # follower: connecting, resyncing, streaming, refused ...
    num_hooks: int | None = None  # hooks and channels defined (SERVER num_hooks, as Tile38 counts)
    pending_events: int | None = None  # hook events queued, not yet delivered (leader delivers)
    replication_error: str | None = None  # follower: why replication stops (a refusal: why refused)


@dataclass(frozen=True)
class Triggers:
    """Manual requests (annotations) and the pause switch."""

    shrink_now: bool = False
    resync_member: str | None = None
    paused: bool = False

    @classmethod
    def from_requests(cls, requests: dict[str, str], paused: str = "") -> Triggers:
        """From request name -> value ("shrink": anything, "resync": member), as the operator
        reads them from annotations and the local runtime from trigger files."""
        return cls(
            shrink_now="shrink" in requests,
            resync_member=(requests.get("resync") or "").strip() or None,
            paused=paused.strip().lower() in ("true", "1", "yes"),
        )


@dataclass(frozen=True)
class Action:
    kind: Literal["shrink", "resync", "restart"]
    member: str
    reason: str
    repair: bool = False


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """Everything the handler must do this tick; ``status`` is the full new status."""

    actions: tuple[Action, ...]
    events: tuple[Event, ...]
    status: dict[str, Any]
    consumed: tuple[str, ...] = ()  # manual triggers used up: "shrink", "resync"
    settled: tuple[tuple[str, str], ...] = ()  # repairs finished this tick: (action, "ok"/"error")


# --- small pure helpers ---------------------------------------------------------------------


def load_status(raw: dict[str, Any] | None) -> GeoClusterStatus:
    """Our part of a status dict (kopf keeps its own keys there too)."""
    known = {f.alias or n for n, f in GeoClusterStatus.model_fields.items()}
    return GeoClusterStatus.model_validate({k: v for k, v in (raw or {}).items() if k in known})


_RECORDS = {"lastShrink": ShrinkRecord, "lastResync": ResyncRecord}


def status_patch(st: GeoClusterStatus) -> dict[str, Any]:
    """Serialized status where cleared fields are null, so merge-patch removes them: top-level
    fields, and the fields of the record objects (a new lastShrink must not keep the previous
    one's sizeAfter). Lists (members, with their lastRepair) are replaced whole by merge-patch,
    so their items carry no nulls."""
    out = dump(st)
    for name, info in GeoClusterStatus.model_fields.items():
        out.setdefault(info.alias or name, None)
    for key, model in _RECORDS.items():
        if isinstance(out.get(key), dict):
            for name, info in model.model_fields.items():
                out[key].setdefault(info.alias or name, None)
    return out


def cron_fired(expr: str | None, tz: str, since: datetime, now: datetime) -> bool:
    """Whether a cron occurrence lies in (since, now].

    Occurrences are computed on the zone's wall clock and placed at their first pass, so the
    hour repeated when clocks go back fires once, as a Kubernetes CronJob does. `since` may lie
    in the second pass (a shrink by size or by hand then): wall-clock occurrences whose first
    pass is already behind it are skipped, not taken as due."""
    if not expr:
        return False
    zone = ZoneInfo(tz)
    occurrences = croniter(expr, since.astimezone(zone).replace(tzinfo=None))
    while True:
        following = occurrences.get_next(datetime).replace(tzinfo=zone).astimezone(UTC)
        if following > since:
            return following <= now


def finding(
    m: Member, leader: Member, spec: GeoClusterSpec, leader_aliases: frozenset[str] = frozenset()
) -> str | None:
    """Why a follower looks diverged right now, or None. ``leader_aliases``: the addresses
    besides the leader's probed one that mean the leader (in a cluster, its DNS name)."""
    if not m.reachable:
        return f"unreachable: {m.error or 'no reply'}"
    if refused(m):
        return refusal(m)
    if not m.caught_up:
        return "not caught up"
    if m.aof_size is not None and leader.aof_size is not None:
        diff = abs(m.aof_size - leader.aof_size)
        tol = spec.divergence
        if diff > tol.tolerance_bytes and diff > tol.tolerance_ratio * leader.aof_size:
            return f"aof_size {m.aof_size} vs leader {leader.aof_size} while caught up"
    # caught up with someone else (a FOLLOW by hand, a stale leader): equal sizes prove nothing
    if m.following and leader.address and m.following not in {leader.address, *leader_aliases}:
        return f"following {m.following}, not the leader"
    return None


REFUSED = "full resync refused"  # how geoserver's refusal starts; a member's divergence too


def refused(m: Member) -> bool:
    """A follower refusing a full resync from its leader (not broken: see the module rules)."""
    return m.role == "follower" and m.reachable and m.replication_state == "refused"


def refusal(m: Member) -> str:
    """The follower's own words for its refusal, as its divergence."""
    why = (m.replication_error or "").strip() or REFUSED
    return why if why.startswith(REFUSED) else f"{REFUSED}: {why}"


def _refused_status(ms: MemberStatus | None) -> bool:
    return bool(ms and ms.divergence and ms.divergence.startswith(REFUSED))


def _ago(record_time: str | None, now: datetime) -> timedelta:
    t = parse_time(record_time)
    return now - t if t else timedelta.max


# --- the decision ---------------------------------------------------------------------------


@dataclass
class _Tick:
    """Mutable scratchpad of one decide() call; frozen into a Decision at the end."""

    spec: GeoClusterSpec
    st: GeoClusterStatus
    now: datetime
    leader: Member | None
    followers: list[Member]
    triggers: Triggers
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)
    settled: list[tuple[str, str]] = field(default_factory=list)
    budget_blocked: str | None = None
    budget_unjudged: bool = False  # repairs were not weighed against the budget this tick
    auth_error: str | None = None
    tls_error: str | None = None
    leader_aliases: frozenset[str] = frozenset()
    failover_blocked: tuple[str, str] | None = None
    migrating: str | None = None  # the old leader of a fromLeader migration not detached yet

    @property
    def stamp(self) -> str:
        return rfc3339(self.now)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def member(self, name: str) -> MemberStatus | None:
        return next((m for m in self.st.members if m.name == name), None)

    def observed(self, name: str) -> Member | None:
        return next((m for m in self.followers if m.name == name), None)


def decide(
    spec: GeoClusterSpec,
    status: dict[str, Any] | None,
    members: list[Member],
    now: datetime,
    *,
    created: datetime,
    generation: int | None = None,
    triggers: Triggers = Triggers(),
    auth_error: str | None = None,
    tls_error: str | None = None,
    leader_aliases: frozenset[str] = frozenset(),
    failover_blocked: tuple[str, str] | None = None,
    migrating: str | None = None,
) -> Decision:
    """One tick of the policy. See the module docstring for the rules. ``auth_error``: the
    members could not be probed because the auth Secret is unavailable (Degraded); ``tls_error``
    the same for the TLS Secret (spec.tls).
    ``leader_aliases``: what followers may follow besides the leader's probed address.
    ``failover_blocked``: (reason, message) of a failover that is due but may not happen
    (``failover.decide``), reported as Degraded.
    ``migrating``: the old leader's address while a ``bootstrap.fromLeader`` live migration is
    not detached (``bootstrap_state.migrating``): a leader that answers but follows someone is
    then migrating, not unavailable (Ready False and Degraded False, reason ``Migrating``)."""
    st = load_status(status)
    previous_conditions = list(st.conditions)
    leader = next((m for m in members if m.role == "leader"), None)
    followers = sorted((m for m in members if m.role == "follower"), key=lambda m: m.name)
    t = _Tick(
        spec, st, now, leader, followers, triggers, auth_error=auth_error, tls_error=tls_error,
        leader_aliases=leader_aliases, failover_blocked=failover_blocked, migrating=migrating,
    )
    _refresh_members(t)
    st.repair_history = [h for h in st.repair_history if _ago(h, now) < HOUR]
    _settle_shrink(t)
    _settle_resync(t)
    _settle_repairs(t)
    _judge(t)
    if not t.actions and _in_flight(t) in (None, "Queued"):
        _schedule(t, created)
    _finish(t, previous_conditions, generation)
    return Decision(tuple(t.actions), tuple(t.events), status_patch(st), tuple(t.consumed), tuple(t.settled))


def _refresh_members(t: _Tick) -> None:
    """Rebuild status.members from observations, carrying per-member repair state."""
    old = {m.name: m for m in t.st.members}
    fresh = []
    for m in ([t.leader] if t.leader else []) + t.followers:
        prev = old.get(m.name)
        ms = MemberStatus(
            name=m.name,
            role=m.role,
            pod=m.name,
            address=m.address,
            reachable=m.reachable,
            aof_size=m.aof_size,
            caught_up=m.caught_up if m.role == "follower" else None,
        )
        if prev and m.role == "follower":
            ms.diverged_since, ms.last_repair = prev.diverged_since, prev.last_repair
            ms.repairs, ms.gave_up = prev.repairs, prev.gave_up
            ms.healthy_since = prev.healthy_since
        if m.role == "follower" and t.leader:
            ms.divergence = finding(m, t.leader, t.spec, t.leader_aliases)
        if _refused_status(ms) and not _refused_status(prev):  # once per refusal, not every tick
            t.event("Warning", "ResyncRefused", f"{m.name}: {refusal(m)}; no repair is tried "
                    f"(RESYNC FORCE on {m.name} accepts the leader's data, a promote keeps its)")
        if m.role == "follower":
            _track_health(t, ms)
        fresh.append(ms)
    t.st.members = fresh
    t.st.leader = t.leader.name if t.leader else None
    t.st.leader_aof_size = t.leader.aof_size if t.leader else None
    t.st.hooks = t.leader.num_hooks if t.leader else None
    t.st.pending_events = t.leader.pending_events if t.leader else None


def _track_health(t: _Tick, ms: MemberStatus) -> None:
    """healthySince; a member healthy for a whole grace period starts the ladder afresh (one
    healthy probe is not enough: a flapping member must still climb the ladder)."""
    healthy = t.leader is not None and t.leader.reachable and ms.divergence is None
    ms.healthy_since = (ms.healthy_since or t.stamp) if healthy else None
    grace = timedelta(seconds=t.spec.divergence.grace_period_seconds)
    if healthy and (ms.repairs or ms.gave_up) and _ago(ms.healthy_since, t.now) >= grace:
        ms.repairs, ms.gave_up = 0, False


def _settle_shrink(t: _Tick) -> None:
    """Close a shrink in flight once the leader reports it done (or it timed out)."""
    rec, leader = t.st.last_shrink, t.leader
    if not rec or rec.result != STARTED:
        return
    done = (
        leader is not None
        and leader.reachable
        and not leader.shrinking
        and leader.last_shrink_time > (rec.server_time_before or 0.0)
    )
    if done:
        assert leader is not None
        ok = leader.last_shrink_result in ("", "ok")
        rec.result = "ok" if ok else leader.last_shrink_result
        rec.size_after = leader.aof_size
        if ok:
            t.event("Normal", "ShrinkSucceeded", f"AOF {rec.size_before} -> {rec.size_after} bytes")
            if t.spec.follower_resync.after_shrink:
                t.st.pending_resyncs = [m.name for m in t.followers]
        else:
            t.event("Warning", "ShrinkFailed", rec.result)
    elif (
        leader is not None
        and leader.reachable
        and not leader.shrinking
        and _ago(rec.time, t.now) > SHRINK_LOST
    ):  # restarted mid-shrink: its shrink state is gone, so "done" can never show up
        rec.result = "error: the leader is not shrinking and reports no newer shrink (restarted?)"
        t.event("Warning", "ShrinkFailed", rec.result)
    elif _ago(rec.time, t.now) > SHRINK_TIMEOUT:
        rec.result = "error: timed out"
        t.event("Warning", "ShrinkFailed", f"no result after {SHRINK_TIMEOUT}")


def _settle_resync(t: _Tick) -> None:
    """Close a resync in flight once the follower is caught up again (or it timed out)."""
    rec = t.st.last_resync
    if not rec or rec.result != STARTED:
        return
    m = t.observed(rec.member)
    ms = t.member(rec.member)
    progressed = m is not None and (
        rec.resyncs_before is None or m.resyncs is None or m.resyncs > rec.resyncs_before
    )
    if m is not None and m.reachable and m.caught_up and progressed:
        rec.result = "ok"
        t.event("Normal", "ResyncSucceeded", f"{rec.member} caught up (aof_size {m.aof_size})")
    elif m is not None and refused(m):  # waiting out the timeout would not change that
        rec.result = f"error: {refusal(m)}"
        t.event("Warning", "ResyncFailed", f"{rec.member}: {rec.result}")
    elif m is None or _ago(rec.time, t.now).total_seconds() > t.spec.follower_resync.timeout_seconds:
        rec.result = "error: timed out" if m else "error: member gone"
        t.event("Warning", "ResyncFailed", f"{rec.member}: {rec.result}")
    rep = ms.last_repair if ms else None
    if rec.result != STARTED and rep and rep.result == STARTED and rep.action == "resync":
        rep.result = rec.result
        t.settled.append(("resync", "ok" if rec.result == "ok" else "error"))


def _restarting(ms: MemberStatus) -> bool:
    rep = ms.last_repair
    return bool(rep and rep.action == "restart" and rep.result == STARTED)


def _restart_in_flight(t: _Tick) -> bool:
    """A restart is in flight until it settles (however long the pod takes to come back)."""
    return any(_restarting(ms) for ms in t.st.members)


def _settle_repairs(t: _Tick) -> None:
    """A restart repair is done when the member is healthy again, and failed when the member
    still diverges a grace period after it answers again (a pod without an IP is waited for,
    up to RESTART_TIMEOUT: a pod stuck Pending must not block every other repair for good)."""
    grace = timedelta(seconds=t.spec.divergence.grace_period_seconds)
    for ms in t.st.members:
        rep = ms.last_repair
        if not rep or not _restarting(ms):
            continue
        if ms.divergence is None:
            rep.result = "ok"
            t.settled.append(("restart", "ok"))
            t.event("Normal", "RestartSucceeded", f"{ms.name} is healthy after restart")
        elif (
            ms.address is not None
            and ms.diverged_since is not None
            and _ago(ms.diverged_since, t.now) >= grace
            and _ago(rep.time, t.now) > timedelta(0)
        ):
            rep.result = f"error: {ms.divergence}"
            t.settled.append(("restart", "error"))
            t.event("Warning", "RestartFailed", f"{ms.name} still diverges after restart: {ms.divergence}")
        elif not ms.reachable and _ago(rep.time, t.now) > RESTART_TIMEOUT:
            rep.result = f"error: did not answer within {RESTART_TIMEOUT} of the restart"
            t.settled.append(("restart", "error"))
            t.event("Warning", "RestartFailed", f"{ms.name}: {rep.result}")


def _in_flight(t: _Tick) -> str | None:
    st = t.st
    if st.last_shrink and st.last_shrink.result == STARTED:
        return "Shrinking"
    if t.leader and t.leader.shrinking:
        return "Shrinking"
    if st.last_resync and st.last_resync.result == STARTED:
        return "Resyncing"
    if st.pending_resyncs:
        return "Queued"
    return None


def _judge(t: _Tick) -> None:
    """Track divergence over time and pick at most one repair."""
    if _in_flight(t) or not t.leader or not t.leader.reachable:
        for ms in t.st.members:
            ms.diverged_since = None
        t.budget_unjudged = True
        return
    grace = timedelta(seconds=t.spec.divergence.grace_period_seconds)
    due: list[MemberStatus] = []
    for ms in t.st.members:
        if ms.role != "follower":
            continue
        if ms.divergence is None or _refused_status(ms):
            ms.diverged_since = None  # a refusal is reported, never repaired (module rules)
            continue
        if ms.address is None or (_restarting(ms) and not ms.reachable):
            # no pod (IP) yet, or a restarted pod not answering yet: waited for; the grace
            # period of a restart starts when the new pod answers
            ms.diverged_since = None
            continue
        ms.diverged_since = ms.diverged_since or t.stamp
        if not ms.gave_up and _ago(ms.diverged_since, t.now) >= grace:
            due.append(ms)
    restarting = _restart_in_flight(t)
    t.budget_unjudged = restarting
    for ms in sorted(due, key=lambda m: (m.diverged_since or "", m.name)):
        if restarting or _repair(t, ms):
            break


def _repair(t: _Tick, ms: MemberStatus) -> bool:
    """Climb the ladder for one member. True when an action was chosen (or blocked)."""
    ladder, budget = t.spec.divergence.ladder, t.spec.divergence.max_repairs_per_hour
    if ms.repairs >= len(ladder):
        ms.gave_up = True
        ms.last_repair = RepairRecord(time=t.stamp, action="giveUp", result="needs a person")
        t.event("Warning", "RepairGaveUp", f"{ms.name}: {ms.divergence}; ladder exhausted")
        return False
    if t.triggers.paused or t.spec.paused:
        t.budget_unjudged = True
        return True
    if len(t.st.repair_history) >= budget:
        t.budget_blocked = f"{ms.name} needs repair but {budget} repairs/hour are used up"
        return True
    action = ladder[ms.repairs]
    m = t.observed(ms.name)
    ms.repairs += 1
    ms.last_repair = RepairRecord(time=t.stamp, action=action, result=STARTED)
    ms.diverged_since = t.stamp  # a fresh grace period for the repair to work
    t.st.repair_history.append(t.stamp)
    if action == "resync":
        t.st.last_resync = ResyncRecord(
            time=t.stamp,
            member=ms.name,
            result=STARTED,
            resyncs_before=m.resyncs if m else None,
            reason="repair",
        )
    t.actions.append(Action(action, ms.name, ms.divergence or "diverged", repair=True))
    t.event("Warning", "RepairStarted", f"{action} {ms.name}: {ms.divergence}")
    return True


def _schedule(t: _Tick, created: datetime) -> None:
    """Shrinks first, then queued resyncs, manual resyncs and resync rounds."""
    if t.triggers.paused or t.spec.paused or not t.leader:
        return
    reason = _shrink_reason(t, created)
    if reason:
        _start_shrink(t, reason)
        return
    rs = t.spec.follower_resync
    since = parse_time(t.st.last_resync_round) or created
    tz = t.spec.aof_shrink.time_zone
    if not t.st.pending_resyncs and cron_fired(rs.schedule, tz, since, t.now):
        t.st.pending_resyncs = [m.name for m in t.followers]
        t.st.last_resync_round = t.stamp
    manual = t.triggers.resync_member
    if manual:
        t.consumed.append("resync")
        if t.observed(manual) is None:
            t.event("Warning", "InvalidTrigger", f"resync: {manual} is not a follower")
        else:
            _start_resync(t, manual, "manual")
            return
    if t.st.pending_resyncs:
        _start_resync(t, t.st.pending_resyncs.pop(0), "afterShrink or schedule")


def _shrink_reason(t: _Tick, created: datetime) -> str | None:
    leader, last, cfg = t.leader, t.st.last_shrink, t.spec.aof_shrink
    if not leader or not leader.reachable:
        return None
    if t.triggers.shrink_now:
        t.consumed.append("shrink")
        return "manual"
    failed = bool(last and last.result.startswith("error"))
    if last and failed and _ago(last.time, t.now) < SHRINK_RETRY:
        return None
    if last and failed and last.reason == "schedule" and cfg.schedule:
        return "schedule"  # retried, not skipped until the next one; no schedule, no retries
    since = parse_time(last.time) if last else created
    if cron_fired(cfg.schedule, cfg.time_zone, since or created, t.now):
        return "schedule"
    trig = cfg.size_trigger
    if trig and leader.aof_size is not None:
        base = last.size_after if last and last.size_after else None
        threshold = max(trig.min_size_bytes, trig.growth_factor * base if base else 0)
        if leader.aof_size >= threshold:
            return "size"
    return None


def _start_shrink(t: _Tick, reason: str) -> None:
    assert t.leader is not None
    t.st.last_shrink = ShrinkRecord(
        time=t.stamp,
        result=STARTED,
        size_before=t.leader.aof_size,
        reason=reason,
        server_time_before=t.leader.last_shrink_time,
    )
    t.actions.append(Action("shrink", t.leader.name, reason))
    t.event("Normal", "ShrinkStarted", f"AOFSHRINK on {t.leader.name} ({reason})")


def _start_resync(t: _Tick, name: str, reason: str) -> None:
    m = t.observed(name)
    if name in t.st.pending_resyncs:
        t.st.pending_resyncs.remove(name)
    if m is None or not m.reachable:
        t.event("Warning", "ResyncSkipped", f"{name} is not reachable")
        return
    if refused(m):  # a plain RESYNC is refused again; RESYNC FORCE is a person's decision
        t.event("Warning", "ResyncSkipped", f"{name} refuses a full resync: RESYNC FORCE on it to accept")
        return
    t.st.last_resync = ResyncRecord(
        time=t.stamp, member=name, result=STARTED, resyncs_before=m.resyncs, reason=reason
    )
    t.actions.append(Action("resync", name, reason))
    t.event("Normal", "ResyncStarted", f"RESYNC {name} ({reason})")


def _finish(t: _Tick, previous: list, generation: int | None) -> None:
    """Counts, phase and conditions; Events for condition changes."""
    st, spec = t.st, t.spec
    st.ready_followers = sum(1 for ms in st.members if ms.role == "follower" and ms.divergence is None)
    # observedGeneration is not ours: the reconcile handler sets it once it applied a generation
    leader_ok = bool(t.leader and t.leader.reachable)
    leader_waiting = bool(t.leader and t.leader.address is None)  # created or rolled: no IP yet
    gave_up = [ms.name for ms in st.members if ms.gave_up]
    refusing = [ms.name for ms in st.members if ms.role == "follower" and _refused_status(ms)]
    paused = t.triggers.paused or spec.paused
    flight = _in_flight(t)
    busy = "Resyncing" if flight == "Queued" else flight
    busy = busy or ("Repairing" if t.actions else None)
    busy = busy or ("Repairing" if _restart_in_flight(t) else None)
    if leader_waiting or any(m.address is None for m in t.followers):
        busy = busy or "Scaling"
    # Ready speaks for the current spec: until reconcile has applied this generation (kstatus:
    # observedGeneration == generation) the members may still run the previous one
    applied = generation is None or st.observed_generation == generation
    if not applied:
        busy = busy or "Reconciling"
    migration = _migration(t)
    busy = busy or ("Migrating" if migration else None)
    ready = leader_ok and st.ready_followers >= spec.followers and applied and migration is None
    reason = "AllMembersReady" if ready else "LeaderUnavailable" if not leader_ok else "NotReady"
    message = f"{st.ready_followers}/{spec.followers} followers ready"
    if leader_ok and not applied:
        reason, message = "Reconciling", f"generation {generation} not applied yet; {message}"
    if migration is not None:  # not "leader does not answer": it answers, and copies the old one
        reason, message = MIGRATING, migration
    verdicts = [
        cond.Verdict(cond.READY, ready, reason, message),
        cond.Verdict(cond.PROGRESSING, bool(busy), busy or ("Paused" if paused else "Idle")),
        _degraded(leader_ok or leader_waiting, gave_up, _budget_blocked(t, previous), t.auth_error,
                  t.failover_blocked, t.tls_error, refusing, migration),
    ]
    st.conditions = cond.merge(st.conditions, verdicts, t.stamp, generation)
    for c in cond.changed(previous, st.conditions):
        if c.type == cond.DEGRADED and c.status == "True" and c.reason != "ResyncRefused":
            t.event("Warning", c.reason, c.message)  # each refusing member had its own Event
        elif c.type == cond.READY and c.status == "True":
            t.event("Normal", "Ready", c.message)
    degraded = any(c.type == cond.DEGRADED and c.status == "True" for c in st.conditions)
    st.phase = "Paused" if paused else "Degraded" if degraded else "Running" if ready else "Progressing"


MIGRATING = "Migrating"


def _migration(t: _Tick) -> str | None:
    """The conditions' message while a live migration holds the leader following: the leader
    answers (a probe that reached it saw ``following``), so it is not unavailable. None when not
    migrating, or when the leader does not answer at all (LeaderUnavailable, as always)."""
    lead, old = t.leader, t.migrating
    if old is None or lead is None or lead.following is None:
        return None
    if lead.following == old:
        return (f"{lead.name} follows the old leader {old} until detached (annotation "
                "geo.geocluster.io/detach); status.bootstrap shows the progress")
    return (f"{lead.name} follows {lead.following}, not yet the old leader {old}: it is pointed "
            "there next (status.bootstrap shows the progress)")


def _budget_blocked(t: _Tick, previous: list) -> str | None:
    """Why repairs wait for the budget. On a tick that did not weigh repairs (a shrink or resync
    in flight, a restart in flight, paused) the previous verdict stands while the hour's budget
    is still used up, so Degraded does not flap (and warn again) around every such tick."""
    if t.budget_blocked or not t.budget_unjudged:
        return t.budget_blocked
    if len(t.st.repair_history) < t.spec.divergence.max_repairs_per_hour:
        return None
    before = next((c for c in previous if c.type == cond.DEGRADED), None)
    if before and before.status == "True" and before.reason == "RepairBudgetExhausted":
        return before.message
    return None


def _degraded(leader_ok: bool, gave_up: list[str], blocked: str | None, auth: str | None,
              failover: tuple[str, str] | None = None, tls: str | None = None,
              refusing: list[str] | None = None, migration: str | None = None) -> cond.Verdict:
    if auth:
        return cond.Verdict(cond.DEGRADED, True, "AuthSecretUnavailable", auth)
    if tls:
        return cond.Verdict(cond.DEGRADED, True, "TLSSecretUnavailable", tls)
    if failover:
        return cond.Verdict(cond.DEGRADED, True, *failover)
    if refusing:
        who = ", ".join(refusing) + (" refuses" if len(refusing) == 1 else " refuse")
        msg = (f"{who} a full resync from a leader holding far fewer objects (new or emptied?); "
               "no repair is tried. Check the leader's data (restore it if lost). To accept the "
               "leader's data: RESYNC FORCE on the member; to keep the member's: promote it "
               "(fail over to it). See docs/runbook.md#resyncrefused")
        return cond.Verdict(cond.DEGRADED, True, "ResyncRefused", msg)
    if gave_up:
        msg = f"gave up repairing {', '.join(gave_up)}: needs a person"
        return cond.Verdict(cond.DEGRADED, True, "RepairsExhausted", msg)
    if blocked:
        return cond.Verdict(cond.DEGRADED, True, "RepairBudgetExhausted", blocked)
    if migration is not None:  # expected while migrating: no Warning, nothing a person must fix
        return cond.Verdict(cond.DEGRADED, False, MIGRATING, migration)
    if not leader_ok:
        return cond.Verdict(cond.DEGRADED, True, "LeaderUnavailable", "leader does not answer")
    return cond.Verdict(cond.DEGRADED, False, "AsExpected")


def apply_outcome(status: dict[str, Any], action: Action, error: str | None) -> dict[str, Any]:
    """Status after an action failed to start (nothing changes when it started fine)."""
    st = load_status(status)
    if error is None:
        return status_patch(st)
    result = f"error: {error}"
    if action.kind == "shrink" and st.last_shrink:
        st.last_shrink.result = result
    if action.kind == "resync" and st.last_resync and st.last_resync.member == action.member:
        st.last_resync.result = result
    for ms in st.members:
        if ms.name == action.member and ms.last_repair and ms.last_repair.result == STARTED:
            ms.last_repair.result = result
    return status_patch(st)
