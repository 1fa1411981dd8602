"""The lease half of the pure leadership policy over simulated time (geocluster.failover): a
leader that does not answer is replaced only once the lease the runtime may have granted it
must have lapsed, whatever the delay says; renewals go on only while the leader is healthy;
epochs only go up; a reachable leader (fenced by READONLY) does not wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from geocluster import failover
from geocluster.policy import Member
from geocluster.spec import parse_spec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def spec(delay: int):
    return parse_spec({"followers": 2, "aofShrink": {"schedule": None}, "failover": {"delay": delay}})


def leader(reachable=True, objects=100) -> Member:
    return Member("leader", "leader", "127.0.0.1:9851", reachable, 1000 if reachable else None,
                  num_objects=objects if reachable else None, error=None if reachable else "refused")


def follower(i: int, caught_up=True, objects=100) -> Member:
    return Member(f"follower-{i}", "follower", f"127.0.0.1:{9851 + i}", True, 1000, caught_up,
                  num_objects=objects, caught_up_once=True,
                  replication_state="streaming" if caught_up else "reconnecting")


HEALTHY = [leader(), follower(1), follower(2)]
LOST = [leader(False), follower(1, False), follower(2, False)]


class Sim:
    """A runtime over simulated time: renews the lease each tick while the leader is healthy
    (as local.py and handlers.py do), records when promotions happen."""

    def __init__(self, delay: int, renew_every: float, tick: float = 1.0):
        self.spec = spec(delay)
        self.plan = failover.lease_plan(self.spec, renew_every)
        self.status: dict = {}
        self.now = T0
        self.tick_s = tick
        self.until: datetime | None = None
        self.promoted_at: float | None = None
        self.renewals: list[float] = []

    def elapsed(self) -> float:
        return (self.now - T0).total_seconds()

    def tick(self, members, promote=None, reachable_for_renewal=None):
        d = failover.decide(self.spec, self.status, members, self.now, promote=promote,
                            lease=self.plan, lease_until=self.until)
        self.status = d.status
        if d.promotion and self.promoted_at is None:
            self.promoted_at = self.elapsed()
            if not d.promotion.old_reachable:  # never two leaders: its lease has lapsed
                assert self.until is None or self.now >= self.until + timedelta(seconds=self.plan.margin)
            self.status = failover.finish(self.status, self.now, "ok", leader=d.promotion.new)
        healthy = (self.status.get("leaderWatch") or {}).get("failing") is None
        if healthy and not d.promotion:  # the runtime renews only a healthy leader
            self.until = failover.lease_end(self.until, self.now, self.plan)
            self.renewals.append(self.elapsed())
        self.now += timedelta(seconds=self.tick_s)
        return d


def test_plan_is_half_the_delay_but_at_least_three_renewals():
    assert failover.lease_plan(spec(30), 5).seconds == 15
    assert failover.lease_plan(spec(2), 1).seconds == 3  # 3 renewals of 1 s: longer than the delay
    plan = failover.lease_plan(spec(30), 5)
    assert plan.ms == 15000 and plan.margin > failover.LEASE_MARGIN


def test_delay_longer_than_the_lease_promotes_after_the_delay():
    sim = Sim(delay=30, renew_every=1)
    for _ in range(10):
        sim.tick(HEALTHY)
    last_renewal = sim.renewals[-1]
    while sim.promoted_at is None:
        sim.tick(LOST)
        assert sim.elapsed() < 100
    assert sim.renewals[-1] == last_renewal  # no renewal once the leader was failing
    assert sim.promoted_at == 10 + 30  # failing from t=10, the delay (30) > lease (15) + margin


def test_lease_longer_than_the_delay_holds_the_failover_until_it_lapsed():
    sim = Sim(delay=2, renew_every=3, tick=1)  # a lease of 9 s: three renewals
    for _ in range(5):
        sim.tick(HEALTHY)
    renewed = sim.renewals[-1]
    d = None
    while sim.promoted_at is None:
        d = sim.tick(LOST)
        if sim.promoted_at is None:
            assert d.hold_leader and d.due_in and d.due_in > 0
    assert sim.promoted_at >= renewed + sim.plan.seconds + sim.plan.margin
    assert sim.promoted_at < renewed + sim.plan.seconds + sim.plan.margin + 1 + 1e-9  # the next tick


def test_a_forced_promote_waits_for_the_lease_and_keeps_the_request():
    sim = Sim(delay=60, renew_every=2)
    sim.tick(HEALTHY)
    renewed = sim.now - timedelta(seconds=1)
    d = sim.tick(LOST, promote="follower-1")
    assert d.promotion is None and d.consumed == () and d.due_in > 0  # the trigger stays
    while sim.promoted_at is None:
        d = sim.tick(LOST, promote="follower-1")
    assert d.consumed == ("promote",) and d.promotion.new == "follower-1"
    assert sim.now >= renewed + timedelta(seconds=sim.plan.seconds + sim.plan.margin)
    assert sim.promoted_at < 60  # a person's promote: no delay, only the lease


def test_a_reachable_failing_leader_is_fenced_by_readonly_without_waiting():
    sim = Sim(delay=2, renew_every=5)  # a 15 s lease
    sim.tick(HEALTHY)
    empty = [leader(objects=0), follower(1, False), follower(2, False)]
    while sim.promoted_at is None:
        sim.tick(empty)
    assert sim.promoted_at < sim.plan.seconds  # READONLY fences it: no lease wait


def test_switchover_does_not_wait_for_the_lease():
    sim = Sim(delay=30, renew_every=5)
    sim.tick(HEALTHY)
    d = sim.tick(HEALTHY, promote="follower-2")
    assert d.promotion is not None and d.promotion.kind == "switchover"


def test_no_lease_known_promotes_after_the_delay_alone():
    d = failover.decide(spec(2), {"leaderWatch": {"failingSince": "2026-01-05T11:59:00Z",
                                                  "caughtUp": ["follower-1", "follower-2"],
                                                  "failing": "unreachable"}},
                        LOST, T0, lease=failover.lease_plan(spec(2), 1), lease_until=None)
    assert d.promotion is not None


def test_epochs_only_go_up():
    assert failover.next_epoch(0, []) == 1
    assert failover.next_epoch(4, [2, None, 7]) == 8
    plan = failover.lease_plan(spec(30), 5)
    first = failover.lease_end(None, T0, plan)
    assert failover.lease_end(first, None, plan) == first  # no reading: nothing was sent
    assert failover.lease_end(first, T0 - timedelta(seconds=5), plan) == first  # never shortens
    assert failover.lease_lapsed_in(plan, first, T0) == plan.seconds + plan.margin
    assert failover.lease_lapsed_in(plan, first, first + timedelta(seconds=plan.margin)) == 0
