"""Pure leadership decisions: switchover (asked for) and failover (the leader is lost).

``decide(spec, status, members, now, promote=...)`` returns a frozen :class:`LeaderDecision`:
at most one :class:`Promotion`, the Events, the new status, and what the runtime may do with a
dead leader meanwhile. The runtime acts (fence, promote, re-point) and reports back with
:func:`finish`. No I/O, no clock: ``now`` is passed in (docs/local.md#switchover-and-failover).

Rules:
- **Switchover** (``promote=<follower>``, consumed): only with a reachable leader and a target
  that is reachable and caught up now; the runtime stops writes on the leader (READONLY yes),
  waits until the target's aof_size equals the leader's, then promotes it: nothing is lost.
  With the leader unreachable, a promote is a forced failover to that follower if it is a
  valid candidate (a person's decision: no delay, no budget).
- **The leader is failing** when it is unreachable, or when it holds fewer than
  ``EMPTY_RATIO`` x the objects of a follower that is *not* caught up with it (a leader back on
  an empty data dir: the followers refuse its resync). A caught-up follower has the leader's
  data, so a FLUSHDB replicated to it is not a failure.
- **Failover** when the leader has been failing continuously for ``failover.delay`` seconds
  (a leader that answers once restarts the count: a flapping leader is not failed over; the
  budget bounds ping-pong), ``failover.enabled``, not paused, and fewer than
  ``maxFailoversPerHour`` automatic failovers in the last hour (else Degraded
  ``FailoverBudgetExhausted``).
- **Candidate**: a follower that is reachable, has caught up at least once, is not in a full
  resync, and *was caught up when the leader was last seen healthy* (``leaderWatch``; a
  follower keeps that place until it is seen resyncing, refusing or restarted); among
  those the largest aof_size (then name), never an empty one while another holds objects.
  The last rule is the shrink/resync one: after a leader's AOFSHRINK, or during a resync,
  followers are resyncing (not caught up) and serve an older copy, so none qualifies and the
  failover is **blocked** (Degraded ``FailoverBlocked``) instead of promoting older data; the
  runtime then restarts the leader in place, as without failover.
- ``hold_leader``: while a failover may still come, the runtime must not restart a dead leader
  as leader (it would take writes again). Otherwise (disabled, blocked) it restarts it in place.
- One leader at a time: the runtime fences the old leader (READONLY, or kills its process when
  it does not answer) *before* promoting; the old leader comes back only as a follower.
- **Leader lease** (fencing by time, :func:`lease_plan`): the runtime renews the lease of a
  healthy leader (geoserver ``LEASE``, anchored at the member's clock reading) and passes
  ``lease_until``, the latest end it may have granted. A leader that does not answer is only
  replaced once that lease must have lapsed (``lease_until`` + margin), automatic or
  requested: a leader cut off but still running has stopped taking writes by then, even if
  no kill or pod deletion reaches it. The failover therefore comes after ``max(delay, the
  time since the last renewal + lease + margin)``; the lease is half the delay, but at least
  ``LEASE_RENEWALS`` renewal intervals. Each promotion takes a new epoch (:func:`next_epoch`),
  revoking the old leader's lease at it when it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from .policy import HOUR, Event, Member, load_status, status_patch
from .spec import FailoverRecord, GeoClusterSpec, LeaderWatch, parse_time, rfc3339

EMPTY_RATIO = 0.5  # as geoserver's resync-min-ratio default: "much smaller" than a follower
STARTED = "started"
LEASE_RENEWALS = 3  # a lease outlasts this many renewal intervals (a missed renewal is no outage)
LEASE_MARGIN = 1.0  # seconds added before a lease counts as lapsed (clock rates, rounding) ...
LEASE_DRIFT = 0.01  # ... plus this share of its length


@dataclass(frozen=True)
class LeasePlan:
    """The lease a runtime grants its leader, and when it may count it lapsed."""

    seconds: float  # each grant's length
    margin: float  # added to the end of the last grant before the leader counts as fenced
    renew_every: float  # how often the runtime renews

    @property
    def ms(self) -> int:
        return max(1, round(self.seconds * 1000))


def lease_plan(spec: GeoClusterSpec, renew_every: float) -> LeasePlan:
    """Half the failover delay, but at least LEASE_RENEWALS renewals long (a spec field
    ``failover.leaseSeconds`` would make it explicit)."""
    seconds = max(spec.failover.delay / 2, LEASE_RENEWALS * renew_every)
    return LeasePlan(seconds, LEASE_MARGIN + LEASE_DRIFT * seconds, renew_every)


def lease_lapsed_in(plan: LeasePlan, lease_until: datetime | None, now: datetime) -> float:
    """Seconds until a lease granted up to ``lease_until`` must have lapsed (0: it has)."""
    if lease_until is None:
        return 0.0
    return max(0.0, (lease_until - now).total_seconds() + plan.margin)


def next_epoch(current: int, seen: list[int | None]) -> int:
    """The epoch a promotion takes: above the recorded one and any a member has seen."""
    return max([current, *(e for e in seen if e is not None)]) + 1


def lease_end(previous: datetime | None, read_at: datetime | None, plan: LeasePlan) -> datetime | None:
    """The latest end a lease may have after a grant whose clock reading arrived at
    ``read_at`` (None: no grant was sent), whether or not the grant was applied."""
    if read_at is None:
        return previous
    end = read_at + timedelta(seconds=plan.seconds)
    return end if previous is None else max(previous, end)


@dataclass(frozen=True)
class Promotion:
    """Make ``new`` the leader in place of ``old``."""

    kind: Literal["switchover", "failover"]
    old: str
    new: str
    reason: str
    old_reachable: bool  # fence by READONLY (and wait, for a switchover) or by killing it
    behind_bytes: int  # estimate from the probes; the runtime measures the real one


@dataclass(frozen=True)
class LeaderDecision:
    promotion: Promotion | None
    events: tuple[Event, ...]
    status: dict[str, Any]
    consumed: tuple[str, ...] = ()  # "promote"
    blocked: tuple[str, str] | None = None  # (Degraded reason, message)
    hold_leader: bool = False  # do not restart a dead leader in place: a failover may come
    due_in: float | None = None  # seconds until a failover would be due


def _ago(stamp: str | None, now: datetime) -> timedelta:
    t = parse_time(stamp)
    return now - t if t else timedelta.max


def failing(leader: Member | None, followers: list[Member]) -> str | None:
    """What is wrong with the leader right now, or None."""
    if leader is None:
        return "no leader"
    if not leader.reachable:
        return f"unreachable: {leader.error or 'no reply'}"
    if leader.num_objects is None or any(f.reachable and f.caught_up for f in followers):
        return None  # a caught-up follower has the leader's data: it is what was written
    n = leader.num_objects
    holders = [
        f for f in followers
        if f.reachable and not f.caught_up and f.num_objects and n < EMPTY_RATIO * f.num_objects
    ]
    if not holders:
        return None
    best = max(holders, key=lambda f: f.num_objects or 0)
    what = "empty" if leader.num_objects == 0 else "much smaller than a follower"
    return f"{what}: {leader.num_objects} objects, {best.name} holds {best.num_objects}"


def _still_current(f: Member, watch: LeaderWatch) -> bool:
    """A follower caught up at the previous look keeps its place until it is seen starting over
    (a full resync, a refusal, a restart): probes of one tick race with the leader's death, and
    a stream cut by it turns ``caught_up`` false before the leader is seen gone."""
    return (f.name in watch.caught_up and f.reachable and bool(f.caught_up_once)
            and f.replication_state not in ("resyncing", "refused"))


def ineligible(f: Member, watch: LeaderWatch | None) -> str | None:
    """Why a follower may not be promoted by a failover, or None."""
    if not f.reachable:
        return "unreachable"
    if not f.caught_up_once:
        return "never caught up"
    if f.replication_state == "resyncing":
        return "in a full resync (serves an older copy)"
    if watch is None or f.name not in watch.caught_up:
        return "not caught up when the leader was last seen"
    return None


def candidate(followers: list[Member], watch: LeaderWatch | None) -> tuple[Member | None, str]:
    """The follower a failover promotes, or None and why none."""
    pool, why = [], []
    for f in sorted(followers, key=lambda m: m.name):
        reason = ineligible(f, watch)
        if reason:
            why.append(f"{f.name} {reason}")
        else:
            pool.append(f)
    if any(f.num_objects for f in pool):
        for f in [f for f in pool if f.num_objects == 0]:
            why.append(f"{f.name} empty while others hold data")
            pool.remove(f)
    if not pool:
        return None, "; ".join(why) or "no followers"
    return max(pool, key=lambda f: f.aof_size or 0), ""  # max keeps the first (by name) of equals


def decide(
    spec: GeoClusterSpec,
    status: dict[str, Any] | None,
    members: list[Member],
    now: datetime,
    *,
    promote: str | None = None,
    paused: bool = False,
    lease: LeasePlan | None = None,
    lease_until: datetime | None = None,
) -> LeaderDecision:
    """One tick of the leadership policy (see the module docstring). ``lease``/``lease_until``:
    the runtime's lease and the latest end it may have granted the leader (None: no lease)."""
    wait = lease_lapsed_in(lease, lease_until, now) if lease is not None else 0.0
    st = load_status(status)
    stamp = rfc3339(now)
    leader = next((m for m in members if m.role == "leader"), None)
    followers = sorted((m for m in members if m.role == "follower"), key=lambda m: m.name)
    events: list[Event] = []
    st.failover_history = [h for h in st.failover_history if _ago(h, now) < HOUR]
    watch = st.leader_watch or LeaderWatch()
    st.leader_watch = watch
    wrong = failing(leader, followers)
    if wrong is None:
        assert leader is not None
        watch.last_seen, watch.aof_size = stamp, leader.aof_size
        watch.caught_up = [f.name for f in followers if f.caught_up or _still_current(f, watch)]
        watch.failing_since = watch.failing = None
    else:
        watch.failing_since, watch.failing = watch.failing_since or stamp, wrong

    def done(promotion: Promotion | None = None, **kw: Any) -> LeaderDecision:
        if promotion:
            st.last_failover = FailoverRecord(
                time=stamp, kind=promotion.kind, old=promotion.old, new=promotion.new,
                reason=promotion.reason, behind_bytes=promotion.behind_bytes, result=STARTED,
            )
            kind = "Switchover" if promotion.kind == "switchover" else "Failover"
            events.append(Event("Normal" if kind == "Switchover" else "Warning", f"{kind}Started",
                                f"{promotion.old} -> {promotion.new}: {promotion.reason}"))
        return LeaderDecision(promotion, tuple(events), status_patch(st), **kw)

    consumed: tuple[str, ...] = ()
    if promote is not None:
        consumed = ("promote",)
        promotion, complaint = _requested(promote.strip(), leader, followers, watch, wrong)
        if promotion is not None and not promotion.old_reachable and wait > 0:
            # a forced failover waits for the old lease too; the request stays until then
            return done(hold_leader=True, due_in=wait)
        if promotion is not None:
            return done(promotion, consumed=consumed)
        events.append(Event("Warning", "InvalidTrigger", f"promote: {complaint}"))
    if wrong is None:
        return done(hold_leader=spec.failover.enabled, consumed=consumed)
    return _after_failing(done, spec, st, leader, followers, watch, now, paused, wait, consumed=consumed)


WATCH_RULE = "not caught up when the leader was last seen"


def _requested(name: str, leader: Member | None, followers: list[Member], watch: LeaderWatch,
               wrong: str | None) -> tuple[Promotion | None, str]:
    """A person's promote: a switchover, or with the leader failing a forced failover."""
    target = next((f for f in followers if f.name == name), None)
    if target is None or leader is None:
        return None, f"{name!r} is not a follower"
    if wrong is None:
        if target.reachable and target.caught_up:
            return Promotion("switchover", leader.name, target.name, "requested", True, 0), ""
        return None, f"{target.name} is not reachable and caught up"
    why = ineligible(target, watch)
    if why not in (None, WATCH_RULE):
        return None, f"{target.name} cannot lead: {why}"
    # the leader is failing and a person chose: no delay, no budget, the watch rule waived
    reason = f"requested while the leader is {wrong}" + (f" ({target.name} was {why})" if why else "")
    return _failover(leader, target, watch, reason), ""


def _after_failing(done: Any, spec: GeoClusterSpec, st: Any, leader: Member | None,
                   followers: list[Member], watch: LeaderWatch, now: datetime, paused: bool,
                   lease_wait: float = 0.0, **kw: Any) -> LeaderDecision:
    """The leader is failing: wait out the delay, then fail over, or say why not."""
    fo = spec.failover
    if not fo.enabled or leader is None:
        return done(**kw)
    since = _ago(watch.failing_since, now).total_seconds()
    if since < fo.delay:
        return done(hold_leader=True, due_in=fo.delay - since, **kw)
    best, why = candidate(followers, watch)
    gone = f"leader {leader.name} {watch.failing} for {since:.0f}s"
    if best is None:
        return done(blocked=("FailoverBlocked", f"{gone}; no follower can lead: {why}"), **kw)
    if paused or spec.paused:
        return done(blocked=("FailoverBlocked", f"{gone}; paused"), **kw)
    if len(st.failover_history) >= fo.max_failovers_per_hour:
        msg = f"{gone}; {fo.max_failovers_per_hour} failovers/hour are used up"
        return done(blocked=("FailoverBudgetExhausted", msg), **kw)
    if not leader.reachable and lease_wait > 0:  # it may still take writes: not two leaders
        return done(hold_leader=True, due_in=lease_wait, **kw)
    st.failover_history.append(rfc3339(now))
    return done(_failover(leader, best, watch, gone), **kw)


def _failover(leader: Member, target: Member, watch: LeaderWatch, reason: str) -> Promotion:
    behind = max(0, (watch.aof_size or 0) - (target.aof_size or 0))
    if leader.reachable:  # an empty leader: what it took since it came back is lost too
        behind += leader.aof_size or 0
    return Promotion("failover", leader.name, target.name, reason, leader.reachable, behind)


def loss_bound(pr: Promotion, known: int | None, target_now: int | None, *,
               heard: list[int | None] | tuple[int | None, ...] = (),
               old_held: int | None = None) -> int:
    """``behindBytes`` measured right before the promotion, replacing the decision's estimate
    (``pr.behind_bytes``, from probes one tick old: the target may have applied more since).

    ``known``: the most the old leader is known to have held (its aof_size when last seen
    healthy; the local runtime: the killed leader's AOF file, the exact end of what it
    acknowledged); ``target_now``: the target's aof_size re-probed now (None: it did not answer,
    the estimate stands); ``heard``: the ``leader_aof_size`` other followers last got from an
    unreachable old leader (it may have grown after it was last seen); ``old_held``: an old
    leader that answers (an empty or much smaller one, fenced by now) holds bytes written since it
    came back, none of them on the target: all counted."""
    if target_now is None:
        return pr.behind_bytes
    most = max([known or 0, *(h for h in heard if h is not None and not pr.old_reachable)])
    behind = max(0, most - target_now)
    if pr.old_reachable:
        behind += old_held or 0
    return behind


def holders(pr: Promotion, watch: LeaderWatch | None) -> list[str]:
    """The members that hold a prefix of the new leader's data at the promotion (``finish``'s
    ``caught_up``): those caught up with the old leader when it was last seen (``watch``, the
    decision's view), and for a switchover the old leader itself, which has the new one's bytes
    exactly; after a failover, never the old leader."""
    before = list(watch.caught_up) if watch else []
    return [*before, pr.old] if pr.kind == "switchover" else [n for n in before if n != pr.old]


def finish(status: dict[str, Any], now: datetime, result: str, *, behind_bytes: int | None = None,
           write_pause_ms: int | None = None, leader: str | None = None,
           caught_up: list[str] | None = None, leader_aof_size: int | None = None) -> dict[str, Any]:
    """Status after the runtime acted on a promotion: ``result`` "ok" or "error: ...";
    ``leader``: the member that leads now. ``caught_up``: members that hold a prefix of the new
    leader's data at the promotion (a switchover's old leader, the followers caught up with
    the old leader): they count as caught up with the new one when it was last seen (its
    promotion), so a new leader lost before the next look can still be failed over; each keeps
    that place only until it is seen starting over (``_still_current``: a full resync, a
    refusal, a restart). ``leader_aof_size``: the new leader's aof_size at its promotion."""
    st = load_status(status)
    rec = st.last_failover
    if rec is not None and rec.result == STARTED:
        rec.result = result
        if behind_bytes is not None:
            rec.behind_bytes = behind_bytes
        rec.write_pause_ms = write_pause_ms
    if leader is not None and result == "ok":
        st.leader = leader
        st.leader_watch = LeaderWatch(last_seen=rfc3339(now), aof_size=leader_aof_size,
                                      caught_up=sorted(set(caught_up or ()) - {leader}))
    return status_patch(st)
