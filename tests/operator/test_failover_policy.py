"""The pure leadership policy (geocluster.failover) over simulated time: switchover requests,
failover after the delay, candidate choice, the empty leader, budgets, a flapping leader and a
leader lost during a shrink/resync. Each tick also runs policy.decide, as the runtime does,
so the Degraded reasons are checked where users see them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from geocluster import failover
from geocluster.policy import Member, decide
from geocluster.spec import parse_spec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SPEC = parse_spec({"followers": 2, "aofShrink": {"schedule": None}, "failover": {"delay": 30}})


def leader(size=1000, objects=100, reachable=True, **kw) -> Member:
    return Member("leader", "leader", "127.0.0.1:9851", reachable, size, num_objects=objects, **kw)


def follower(i: int, size=1000, caught_up=True, reachable=True, objects=100, **kw) -> Member:
    kw.setdefault("caught_up_once", True)
    kw.setdefault("replication_state", "streaming" if caught_up else "reconnecting")
    return Member(f"follower-{i}", "follower", f"127.0.0.1:{9851 + i}", reachable, size, caught_up,
                  num_objects=objects, **kw)


DEAD = leader(reachable=False, size=None, objects=None, error="connection refused")
HEALTHY = [leader(), follower(1), follower(2)]


class Sim:
    """Feeds each tick's status into the next; records promotions with their time."""

    def __init__(self, spec=SPEC):
        self.spec, self.status, self.now = spec, {}, T0
        self.promotions: list[tuple[int, failover.Promotion]] = []
        self.events: list[str] = []
        self.last: failover.LeaderDecision | None = None

    def tick(self, members, seconds=5, promote=None):
        d = failover.decide(self.spec, self.status, members, self.now, promote=promote)
        p = decide(self.spec, d.status, members, self.now, created=T0, failover_blocked=d.blocked)
        self.status, self.last = p.status, d
        self.events += [e.reason for e in d.events + p.events]
        if d.promotion:
            self.promotions.append((int((self.now - T0).total_seconds()), d.promotion))
            self.status = failover.finish(self.status, self.now, "ok", leader=d.promotion.new)
        self.now += timedelta(seconds=seconds)
        return d

    def run(self, members, seconds, step=5):
        for _ in range(seconds // step):
            self.tick(members, step)

    def degraded(self):
        return next(c for c in self.status["conditions"] if c["type"] == "Degraded")


def test_healthy_cluster_holds_the_leader_and_never_promotes():
    sim = Sim()
    sim.run(HEALTHY, 300)
    assert sim.promotions == [] and sim.last.hold_leader
    assert sim.status["leaderWatch"]["caughtUp"] == ["follower-1", "follower-2"]


def test_failover_after_the_delay_to_the_largest_caught_up_follower():
    sim = Sim()
    sim.tick([leader(2000), follower(1, 1900), follower(2, 2000)])
    lost = [DEAD, follower(1, 1900, caught_up=False), follower(2, 1990, caught_up=False)]
    d = sim.tick(lost)
    assert d.promotion is None and d.hold_leader and d.due_in == 30
    sim.run(lost, 25)
    assert sim.promotions == []
    sim.tick(lost)
    ((at, p),) = sim.promotions
    assert at == 35 and (p.kind, p.old, p.new, p.old_reachable) == ("failover", "leader", "follower-2", False)
    assert p.behind_bytes == 10  # the leader's last seen aof_size minus the candidate's
    rec = sim.status["lastFailover"]
    assert rec["old"] == "leader" and rec["new"] == "follower-2" and rec["result"] == "ok"
    assert sim.status["leader"] == "follower-2" and "FailoverStarted" in sim.events


@pytest.mark.parametrize(
    "bad, why",
    [
        (dict(reachable=False, error="timeout"), "unreachable"),
        (dict(caught_up_once=False), "never caught up"),
        (dict(replication_state="resyncing"), "in a full resync"),
    ],
)
def test_candidate_must_be_reachable_caught_up_once_and_not_resyncing(bad, why):
    sim = Sim()
    sim.tick([leader(2000), follower(1, 2000), follower(2, 1000)])
    lost = [DEAD, follower(1, 2000, caught_up=False, **bad), follower(2, 1000, caught_up=False)]
    sim.run(lost, 40)
    ((_, p),) = sim.promotions
    assert p.new == "follower-2"
    assert why in (failover.ineligible(lost[1], None) or why)


def test_never_an_empty_candidate_when_another_holds_data():
    sim = Sim()
    sim.tick([leader(2000), follower(1, 2000, objects=0), follower(2, 500)])
    sim.run([DEAD, follower(1, 2000, False, objects=0), follower(2, 500, False)], 40)
    assert [p.new for _, p in sim.promotions] == ["follower-2"]


def test_no_candidate_blocks_the_failover_and_releases_the_leader_for_a_restart():
    sim = Sim()
    sim.tick([leader(), follower(1, caught_up=False), follower(2, reachable=False, caught_up=False)])
    sim.run([DEAD, follower(1, caught_up=False), follower(2, reachable=False, caught_up=False)], 40)
    assert sim.promotions == []
    assert not sim.last.hold_leader and sim.last.blocked[0] == "FailoverBlocked"
    deg = sim.degraded()
    assert deg["status"] == "True" and deg["reason"] == "FailoverBlocked"
    assert "follower-1 not caught up when the leader was last seen" in deg["message"]


def test_leader_lost_during_a_shrink_resync_round_is_not_failed_over_to_older_data():
    """After the leader's AOFSHRINK every follower resyncs: none is caught up, each serves its
    older copy. Losing the leader then blocks the failover (a person decides, or the leader
    comes back) instead of promoting a follower without the writes since the shrink."""
    sim = Sim()
    sim.tick(HEALTHY)
    shrinking = [leader(400), follower(1, 1000, False, replication_state="resyncing"),
                 follower(2, 1000, False, replication_state="resyncing")]
    sim.tick(shrinking)
    sim.run([DEAD, follower(1, 1000, False), follower(2, 1000, False)], 60)
    assert sim.promotions == [] and sim.degraded()["reason"] == "FailoverBlocked"
    # the leader comes back: the cluster heals, no promotion ever happened
    sim.run(HEALTHY, 20)
    assert sim.promotions == [] and sim.degraded()["status"] == "False"


def test_flapping_leader_is_not_failed_over():
    sim = Sim()
    sim.tick(HEALTHY)
    for _ in range(20):  # down 25 s, up once, down again: never 30 s in a row
        sim.run([DEAD, follower(1, caught_up=False), follower(2, caught_up=False)], 25)
        sim.tick(HEALTHY)
    assert sim.promotions == []


def test_failover_budget_then_degraded():
    spec = parse_spec({"failover": {"delay": 10, "maxFailoversPerHour": 2}})
    sim = Sim(spec)
    current = "leader"
    names = ["leader", "follower-1", "follower-2"]
    for _ in range(3):
        others = [n for n in names if n != current]
        healthy = [Member(current, "leader", "a:1", True, 1000, num_objects=10)] + [
            Member(n, "follower", f"{n}:1", True, 1000, True, caught_up_once=True, num_objects=10,
                   replication_state="streaming") for n in others]
        sim.tick(healthy)
        lost = [replace(healthy[0], reachable=False, aof_size=None)] + [
            replace(m, caught_up=False) for m in healthy[1:]]
        sim.run(lost, 20)
        if sim.promotions and sim.promotions[-1][1].old == current:
            current = sim.promotions[-1][1].new
    assert len(sim.promotions) == 2
    deg = sim.degraded()
    assert deg["reason"] == "FailoverBudgetExhausted" and "2 failovers/hour" in deg["message"]
    assert not sim.last.hold_leader
    sim.now += timedelta(hours=1)  # the budget refills
    sim.run(lost, 10)
    assert len(sim.promotions) == 3


def test_failover_disabled_never_promotes_and_restarts_in_place():
    sim = Sim(parse_spec({"failover": {"enabled": False}}))
    sim.tick(HEALTHY)
    sim.run([DEAD, follower(1, caught_up=False), follower(2, caught_up=False)], 120)
    assert sim.promotions == [] and not sim.last.hold_leader
    assert sim.degraded()["reason"] == "LeaderUnavailable"


@pytest.mark.parametrize("objects, failed", [(0, True), (40, True), (60, False)])
def test_empty_or_much_smaller_leader_counts_as_failed(objects, failed):
    sim = Sim()
    sim.tick(HEALTHY)
    # back on an empty data dir: the followers refuse its resync, keep 100 objects each
    back = [leader(size=50, objects=objects), follower(1, 1000, False, replication_state="refused"),
            follower(2, 900, False, replication_state="refused")]
    sim.run(back, 40)
    if failed:
        ((_, p),) = sim.promotions
        assert p.new == "follower-1" and p.old_reachable
        assert p.behind_bytes == 50  # what the empty leader took since it came back is lost
    else:
        assert sim.promotions == []


def test_flushdb_replicated_to_a_caught_up_follower_is_not_a_failure():
    sim = Sim()
    sim.tick(HEALTHY)
    sim.run([leader(objects=0), follower(1, objects=0), follower(2, caught_up=False)], 60)
    assert sim.promotions == []


def test_switchover_needs_a_reachable_caught_up_target_and_is_lossless():
    sim = Sim()
    d = sim.tick(HEALTHY, promote="follower-2")
    assert d.consumed == ("promote",)
    ((_, p),) = sim.promotions
    assert (p.kind, p.old, p.new, p.behind_bytes) == ("switchover", "leader", "follower-2", 0)
    assert p.old_reachable
    assert "SwitchoverStarted" in sim.events


@pytest.mark.parametrize(
    "members, target, complaint",
    [
        (HEALTHY, "follower-9", "is not a follower"),
        (HEALTHY, "leader", "is not a follower"),
        ([leader(), follower(1, caught_up=False), follower(2)], "follower-1", "not reachable and caught up"),
    ],
)
def test_invalid_promote_is_consumed_with_a_warning(members, target, complaint):
    sim = Sim()
    d = sim.tick(members, promote=target)
    assert d.promotion is None and d.consumed == ("promote",)
    assert any(complaint in e.message for e in d.events if e.reason == "InvalidTrigger")


def test_promote_with_the_leader_gone_is_a_forced_failover_without_delay():
    sim = Sim()
    sim.tick(HEALTHY)
    d = sim.tick([DEAD, follower(1, 900, caught_up=False), follower(2, 1000, caught_up=False)],
                 promote="follower-1")
    assert d.promotion.kind == "failover" and d.promotion.new == "follower-1"
    assert d.promotion.behind_bytes == 100 and "requested" in d.promotion.reason
    # a member in a full resync is refused even so
    sim2 = Sim()
    sim2.tick(HEALTHY)
    d = sim2.tick([DEAD, follower(1, replication_state="resyncing", caught_up=False), follower(2)],
                  promote="follower-1")
    assert d.promotion is None and "in a full resync" in d.events[0].message


def test_paused_blocks_the_failover():
    sim = Sim(parse_spec({"paused": True, "failover": {"delay": 10}}))
    sim.tick(HEALTHY)
    sim.run([DEAD, follower(1, caught_up=False), follower(2, caught_up=False)], 30)
    assert sim.promotions == [] and sim.last.blocked == ("FailoverBlocked", sim.last.blocked[1])
    assert "paused" in sim.last.blocked[1]


def test_finish_records_the_measured_loss_and_pause():
    sim = Sim()
    d = sim.tick(HEALTHY, promote="follower-1")
    st = failover.finish(d.status, T0, "ok", behind_bytes=0, write_pause_ms=12, leader="follower-1")
    assert st["lastFailover"]["writePauseMs"] == 12 and st["leader"] == "follower-1"
    failed = failover.finish(d.status, T0, "error: target did not catch up")
    assert failed["lastFailover"]["result"].startswith("error") and failed.get("leader") != "follower-1"


def test_followers_cut_off_in_the_tick_the_leader_dies_stay_candidates():
    """The probes of one tick race with the leader's death: the leader answered, then its
    streams were cut (followers reconnecting, not caught up). They were current a moment ago."""
    sim = Sim()
    sim.tick(HEALTHY)
    sim.tick([leader(), follower(1, caught_up=False), follower(2, 990, caught_up=False)])
    sim.run([DEAD, follower(1, caught_up=False), follower(2, 990, caught_up=False)], 40)
    assert [p.new for _, p in sim.promotions] == ["follower-1"]
