"""Table-driven tests of the pure policy over simulated time (no cluster, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from geocluster.policy import Action, Member, Triggers, apply_outcome, decide, finding
from geocluster.spec import parse_spec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CREATED = T0 - timedelta(days=1)

SPEC = parse_spec(
    {
        "followers": 2,
        "aofShrink": {"schedule": None},
        "divergence": {"gracePeriodSeconds": 60, "maxRepairsPerHour": 3, "toleranceBytes": 100},
    }
)


def leader(size=1000, **kw) -> Member:
    return Member("gc-leader-0", "leader", "127.0.0.2:9851", True, size, **kw)


def follower(i: int, size=1000, caught_up=True, reachable=True, **kw) -> Member:
    return Member(f"gc-follower-{i}", "follower", f"127.0.0.{3 + i}:9851", reachable, size, caught_up, **kw)


NO_TRIGGERS = Triggers()
HEALTHY = [leader(), follower(0), follower(1)]


class Sim:
    """Feeds each decision's status into the next tick, as the operator does."""

    def __init__(self, spec=SPEC, status=None):
        self.spec, self.status, self.now = spec, status or {}, T0
        self.actions: list[tuple[int, Action]] = []
        self.events: list[str] = []

    def tick(self, members, seconds=10, triggers=NO_TRIGGERS):
        d = decide(self.spec, self.status, members, self.now, created=CREATED, triggers=triggers)
        self.status = d.status
        self.actions += [(int((self.now - T0).total_seconds()), a) for a in d.actions]
        self.events += [e.reason for e in d.events]
        self.now += timedelta(seconds=seconds)
        return d

    def run(self, members, seconds: int, step=10):
        for _ in range(seconds // step):
            self.tick(members, step)

    def member(self, name):
        return next(m for m in self.status["members"] if m["name"] == name)

    def condition(self, type_):
        return next(c for c in self.status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (follower(0), None),
        (follower(0, size=2000), "aof_size 2000 vs leader 1000 while caught up"),  # the seed
        (follower(0, size=2000, caught_up=False), "not caught up"),
        (follower(0, reachable=False, error="refused"), "unreachable: refused"),
        (follower(0, following="127.0.0.2:9851"), None),  # the leader's probed address
        (follower(0, following="gc-leader-0.gc-members.ns.svc.cluster.local:9851"), None),  # alias
        (follower(0, following="10.0.0.9:9851"), "following 10.0.0.9:9851, not the leader"),
        (follower(0, size=2000, following="10.0.0.9:9851"), "aof_size 2000 vs leader 1000 while caught up"),
    ],
)
def test_findings_need_both_tolerances(f, expected):
    spec = parse_spec({"divergence": {"toleranceRatio": 0.1, "toleranceBytes": 100}})
    aliases = frozenset({"gc-leader-0.gc-members.ns.svc.cluster.local:9851"})
    assert finding(f, leader(), spec, aliases) == expected
    # within the byte tolerance, no finding even at 2x
    loose = parse_spec({"divergence": {"toleranceBytes": 10_000}})
    if f.reachable and f.caught_up and f.following in (None, "127.0.0.2:9851"):
        assert finding(f, leader(), loose, aliases) is None


def test_healthy_cluster_is_ready_and_quiet():
    sim = Sim()
    sim.run(HEALTHY, 300)
    assert sim.actions == []
    assert sim.condition("Ready")["status"] == "True"
    assert sim.condition("Degraded")["status"] == "False"
    assert sim.status["readyFollowers"] == 2 and sim.status["leader"] == "gc-leader-0"
    assert sim.events == ["Ready"]  # announced once, not every tick


def test_status_shows_the_leaders_hooks_and_queue_depth():
    sim = Sim()
    sim.tick([leader(num_hooks=3, pending_events=7), follower(0, num_hooks=3, pending_events=0)])
    assert sim.status["hooks"] == 3 and sim.status["pendingEvents"] == 7  # the leader's, not a sum
    sim.tick([Member("gc-leader-0", "leader"), follower(0)])  # the leader did not answer
    assert sim.status.get("hooks") is None and sim.status.get("pendingEvents") is None  # unknown


def test_seed_2x_after_shrink_is_repaired_after_grace_then_restarted():
    """Follower reports 2x the leader's aof_size with caught_up true (Tile38 1.30 seed)."""
    sim = Sim()
    diverged = [leader(), follower(0, size=2000, resyncs=0), follower(1)]
    sim.run(diverged, 70)
    assert [(at, a.kind, a.member) for at, a in sim.actions] == [(60, "resync", "gc-follower-0")]
    assert sim.member("gc-follower-0")["lastRepair"]["action"] == "resync"
    # the resync "completes" (resyncs counter moves) but the size is still 2x
    still = [leader(), follower(0, size=2000, resyncs=1), follower(1)]
    sim.run(still, 70)
    assert [a.kind for _, a in sim.actions] == ["resync", "restart"]
    assert sim.member("gc-follower-0")["repairs"] == 2
    # after the restart the pod does not answer: waited for (a pod being recreated), then,
    # past RESTART_TIMEOUT, the restart failed and the ladder is exhausted: give up, Degraded
    gone = [leader(), follower(0, reachable=False, size=None), follower(1)]
    sim.run(gone, 120)
    assert sim.member("gc-follower-0")["lastRepair"]["result"] == "started"
    assert sim.condition("Degraded")["status"] == "False"
    sim.run(gone, 900)
    assert [a.kind for _, a in sim.actions] == ["resync", "restart"]
    assert "did not answer within" in " ".join(sim.events) or "RestartFailed" in sim.events
    assert sim.member("gc-follower-0")["gaveUp"] is True
    assert sim.condition("Degraded")["reason"] == "RepairsExhausted"
    assert "RepairGaveUp" in sim.events and sim.status["phase"] == "Degraded"


def restart_only(grace: int):
    divergence = {"gracePeriodSeconds": grace, "ladder": ["restart"], "toleranceBytes": 100}
    return parse_spec({"followers": 2, "aofShrink": {"schedule": None}, "divergence": divergence})


def test_a_restart_is_judged_a_grace_period_after_the_pod_answers_again():
    """Found in review: the grace period of a restart ran from the delete, so a follower that
    came back 30 s later and was still catching up was failed (and given up on) early."""
    sim = Sim(restart_only(grace=120))
    sim.run([leader(), follower(0, size=9000), follower(1)], 130, step=10)
    assert [a.kind for _, a in sim.actions] == ["restart"]
    sim.run([leader(), follower(0, reachable=False, size=None), follower(1)], 30, step=10)
    catching_up = [leader(), follower(0, size=10, caught_up=False), follower(1)]
    sim.run(catching_up, 110, step=10)  # answered again 110 s ago: within its grace period
    assert sim.member("gc-follower-0")["lastRepair"]["result"] == "started"
    assert "RestartFailed" not in sim.events
    sim.run(catching_up, 20, step=10)
    assert "RestartFailed" in sim.events and sim.member("gc-follower-0")["gaveUp"] is True


def test_a_restarted_pod_stuck_pending_does_not_block_other_repairs_forever():
    """Found in review: a restart whose pod never got an IP stayed in flight for good, so no
    other follower was ever repaired and nothing turned Degraded."""
    sim = Sim(restart_only(grace=60))
    sim.run([leader(), follower(0, size=9000), follower(1)], 70, step=10)
    stuck = [leader(), Member("gc-follower-0", "follower", None, False, error="no pod IP"),
             follower(1, size=9000)]  # fmt: skip
    sim.run(stuck, 600, step=30)
    assert [a.member for _, a in sim.actions] == ["gc-follower-0"]  # waited for, nothing else yet
    sim.run(stuck, 600, step=30)
    assert [a.member for _, a in sim.actions] == ["gc-follower-0", "gc-follower-1"]
    assert sim.condition("Degraded")["reason"] == "RepairsExhausted"


def test_flapping_member_is_never_repaired_and_not_degraded():
    sim = Sim()
    for i in range(40):
        sim.tick([leader(), follower(0, size=2000 if i % 4 < 2 else 1000), follower(1)], 15)
    assert sim.actions == []
    assert sim.condition("Degraded")["status"] == "False"


def test_budget_exhausted_blocks_repairs_and_degrades():
    ladder = {"gracePeriodSeconds": 0, "maxRepairsPerHour": 1, "ladder": ["resync"] * 4}
    spec = parse_spec({"aofShrink": {"schedule": None}, "divergence": ladder})
    sim = Sim(spec)
    # two members diverged with caught_up false: each resync "finishes" instantly (timeout 0)
    sim.tick([leader(), follower(0, caught_up=False, resyncs=0), follower(1)])
    assert len(sim.actions) == 1
    done = [leader(), follower(0, resyncs=1, size=5000), follower(1, caught_up=False)]
    sim.run(done, 600)
    assert len(sim.actions) == 1
    assert sim.condition("Degraded")["reason"] == "RepairBudgetExhausted"
    sim.run(done, 3600)  # an hour later the budget allows another repair
    assert len(sim.actions) == 2


def test_leader_is_never_repaired():
    sim = Sim(parse_spec({"divergence": {"gracePeriodSeconds": 0}, "aofShrink": {"schedule": None}}))
    sim.run([replace(leader(), reachable=False, error="x"), follower(0), follower(1)], 600)
    assert sim.actions == []
    assert sim.condition("Degraded")["reason"] == "LeaderUnavailable"
    assert sim.condition("Ready")["reason"] == "LeaderUnavailable"


def test_one_member_repaired_at_a_time():
    sim = Sim()
    bad = [leader(), follower(0, size=3000, resyncs=0), follower(1, size=3000, resyncs=0)]
    sim.run(bad, 120)
    kinds = [(a.kind, a.member) for _, a in sim.actions]
    assert kinds[0] == ("resync", "gc-follower-0")
    assert ("resync", "gc-follower-1") not in kinds[:1]
    # no second repair while the first resync is still in flight
    assert len(kinds) == 1


def test_scheduled_shrink_then_resync_each_follower_one_at_a_time():
    spec = SPEC.model_copy(
        update={"aof_shrink": parse_spec({"aofShrink": {"schedule": "0 13 * * *",
                                         "timeZone": "Europe/Berlin"}}).aof_shrink}
    )  # fmt: skip
    sim = Sim(spec)
    sim.tick(HEALTHY)  # 12:00 UTC = 13:00 Berlin: the cron fired since CREATED
    assert [a.kind for _, a in sim.actions] == ["shrink"]
    assert sim.status["lastShrink"]["result"] == "started"
    # shrink in flight: the follower is 2x, but nothing is judged and nothing else starts
    shrinking = [leader(shrinking=True), follower(0, size=2000), follower(1)]
    sim.run(shrinking, 300)
    assert len(sim.actions) == 1
    assert all(m.get("divergedSince") is None for m in sim.status["members"])
    done = [leader(size=400, last_shrink_time=1.0, last_shrink_result="ok"),
            follower(0, size=1000, resyncs=0), follower(1, size=1000, resyncs=0)]  # fmt: skip
    sim.tick(done)
    assert sim.status["lastShrink"] | {"time": None} == {
        "time": None, "result": "ok", "sizeBefore": 1000, "sizeAfter": 400,
        "reason": "schedule", "serverTimeBefore": 0.0}  # fmt: skip
    assert sim.status["pendingResyncs"] == ["gc-follower-1"]  # follower-0 started at once
    assert [(a.kind, a.member) for _, a in sim.actions][1:] == [("resync", "gc-follower-0")]
    sim.run(done, 100)  # follower-0 has not moved its resync counter: still in flight
    assert len(sim.actions) == 2
    after = [done[0], follower(0, size=400, resyncs=1), follower(1, size=1000, resyncs=0)]
    sim.tick(after)
    sim.tick(after)
    assert [(a.kind, a.member) for _, a in sim.actions][2:] == [("resync", "gc-follower-1")]
    healed = [done[0], follower(0, size=400, resyncs=1), follower(1, size=400, resyncs=1)]
    sim.run(healed, 24 * 3600 - 2000, step=600)  # next day's 13:00 is not reached yet
    assert len(sim.actions) == 3 and sim.status["lastResync"]["result"] == "ok"
    assert sim.status["phase"] == "Running"


def test_size_trigger_uses_size_after_last_shrink():
    spec = parse_spec({"aofShrink": {"schedule": None, "sizeTrigger": {
        "growthFactor": 2, "minSizeBytes": 500}}})  # fmt: skip
    status = {"lastShrink": {"time": "2026-01-05T00:00:00Z", "result": "ok", "sizeAfter": 800}}
    sim = Sim(spec, status)
    sim.tick([leader(size=1500), follower(0, size=1500), follower(1, size=1500)])
    assert sim.actions == []
    sim.tick([leader(size=1600), follower(0, size=1600), follower(1, size=1600)])
    assert [a.reason for _, a in sim.actions] == ["size"]


def test_paused_keeps_status_fresh_but_acts_never():
    sim = Sim(parse_spec({"paused": True, "divergence": {"gracePeriodSeconds": 0, "toleranceBytes": 1}}))
    sim.run([leader(), follower(0, size=9999), follower(1)], 600)
    sim.tick(HEALTHY, triggers=Triggers(shrink_now=True))
    assert sim.actions == [] and sim.status["phase"] == "Paused"
    assert sim.member("gc-follower-0")["aofSize"] == 1000


def test_manual_triggers():
    sim = Sim()
    d = sim.tick(HEALTHY, triggers=Triggers(shrink_now=True))
    assert [a.kind for a in d.actions] == ["shrink"] and d.consumed == ("shrink",)
    sim2 = Sim()
    d = sim2.tick(HEALTHY, triggers=Triggers(resync_member="gc-leader-0"))
    assert d.actions == () and d.consumed == ("resync",)
    assert "InvalidTrigger" in [e.reason for e in d.events]
    d = sim2.tick(HEALTHY, triggers=Triggers(resync_member="gc-follower-1"))
    assert [(a.kind, a.member) for a in d.actions] == [("resync", "gc-follower-1")]


def test_restart_of_operator_mid_repair_does_not_repeat_it():
    """All memory is in status: a fresh decide() on the saved status sees the resync in flight."""
    sim = Sim()
    bad = [leader(), follower(0, size=2000, resyncs=0), follower(1)]
    sim.run(bad, 70)
    assert len(sim.actions) == 1
    restarted = Sim(status=dict(sim.status))
    restarted.now = sim.now
    restarted.run(bad, 100)
    assert restarted.actions == []


def test_failed_action_is_recorded():
    sim = Sim()
    d = sim.tick(HEALTHY, triggers=Triggers(shrink_now=True))
    status = apply_outcome(d.status, d.actions[0], "connection refused")
    assert status["lastShrink"]["result"] == "error: connection refused"
    sim.status = status
    sim.tick(HEALTHY)  # no immediate retry of a failed shrink
    assert len(sim.actions) == 1


def test_pod_without_ip_is_waited_for_not_repaired():
    """A deleted pod being recreated, or a new pod of a scale-out, has no IP yet: the StatefulSet
    is working on it; repairing (RESYNC to nowhere, deleting a missing pod) cannot help."""
    sim = Sim()
    settled: list = []
    diverged = [leader(), follower(0, size=2000, resyncs=0), follower(1)]
    sim.run(diverged, 70)
    d = sim.tick([leader(), follower(0, size=2000, resyncs=1), follower(1)])
    settled += d.settled
    sim.run([leader(), follower(0, size=2000, resyncs=1), follower(1)], 70)
    assert [a.kind for _, a in sim.actions] == ["resync", "restart"]
    recreating = [leader(), replace(follower(0, reachable=False, size=None), address=None), follower(1)]
    sim.run(recreating, 300)  # far past the grace period: still waiting, not given up
    assert [a.kind for _, a in sim.actions] == ["resync", "restart"]
    assert not sim.member("gc-follower-0")["gaveUp"] and "RepairGaveUp" not in sim.events
    assert sim.condition("Progressing")["reason"] == "Repairing"
    assert sim.condition("Ready")["status"] == "False"
    d = sim.tick(HEALTHY)
    settled += d.settled
    assert sim.member("gc-follower-0")["lastRepair"]["result"] == "ok"
    assert settled == [("resync", "ok"), ("restart", "ok")]  # what the repairs metric counts
    # scale-out: the third follower's pod does not exist yet
    spec3 = parse_spec({**SPEC.model_dump(by_alias=True), "followers": 3})
    sim = Sim(spec3)
    sim.run([*HEALTHY, replace(follower(2, reachable=False, size=None), address=None)], 300)
    assert not sim.actions and sim.condition("Progressing")["reason"] == "Scaling"
    assert sim.member("gc-follower-2")["reachable"] is False


def test_failed_scheduled_shrink_is_retried_after_shrink_retry():
    cron = parse_spec({"aofShrink": {"schedule": "0 3 * * *"}}).aof_shrink
    spec = SPEC.model_copy(update={"aof_shrink": cron})
    sim = Sim(spec)
    sim.now = T0.replace(hour=3, minute=0, second=30)
    d = sim.tick(HEALTHY, seconds=60)
    assert [a.reason for a in d.actions] == ["schedule"]
    sim.status = apply_outcome(d.status, d.actions[0], "connection refused")
    sim.run(HEALTHY, 180, step=60)  # within SHRINK_RETRY: no retry yet
    assert len(sim.actions) == 1
    sim.run(HEALTHY, 180, step=60)  # past it: retried, not skipped until tomorrow's 03:00
    assert [a.reason for _, a in sim.actions] == ["schedule", "schedule"]
    # a successful shrink ends the retries
    shrunk = leader(size=400, last_shrink_time=1.0, last_shrink_result="ok")
    done = [shrunk, follower(0, 400), follower(1, 400)]
    sim.tick(done)
    assert sim.status["lastShrink"]["result"] == "ok"
    sim.run(done, 3600, step=60)
    assert len(sim.actions) == 2 + 2  # only the two after-shrink resyncs


def test_no_retries_once_the_schedule_is_removed():
    """A failed scheduled shrink (a full disk) is not retried after `schedule: null`."""
    cron = parse_spec({"aofShrink": {"schedule": "0 3 * * *"}}).aof_shrink
    sim = Sim(SPEC.model_copy(update={"aof_shrink": cron}))
    sim.now = T0.replace(hour=3, minute=0, second=30)
    d = sim.tick(HEALTHY, seconds=60)
    sim.status = apply_outcome(d.status, d.actions[0], "no space left on device")
    sim.spec = SPEC  # schedule: null
    sim.run(HEALTHY, 7200, step=60)
    assert [a.kind for _, a in sim.actions] == ["shrink"]


def test_a_shrink_the_leader_lost_is_failed_not_waited_for_an_hour():
    """The leader restarted mid-shrink (its shrink state lives in memory): it is neither
    shrinking nor reports a newer shrink, so the shrink is failed after SHRINK_LOST and a
    diverged follower is repaired, instead of everything waiting for SHRINK_TIMEOUT."""
    sim = Sim()
    d = sim.tick(HEALTHY, triggers=Triggers(shrink_now=True))
    assert [a.kind for a in d.actions] == ["shrink"]
    sim.tick([leader(shrinking=True), follower(0), follower(1)], seconds=30)
    restarted = [leader(), follower(0, size=50_000), follower(1)]  # last_shrink_time 0 again
    sim.run(restarted, 60, step=30)
    assert sim.status["lastShrink"]["result"].startswith("error: the leader is not shrinking")
    assert "ShrinkFailed" in sim.events
    sim.run(restarted, 180, step=30)
    assert ("resync", "gc-follower-0") in [(a.kind, a.member) for _, a in sim.actions[1:]]  # repaired


def test_a_leader_pod_without_an_ip_is_waited_for_not_degraded():
    """A new cluster, or a leader pod being rolled: not Ready, Progressing=Scaling, and no
    Degraded Warning; a leader with an address that does not answer is Degraded."""
    sim = Sim()
    pending = Member("gc-leader-0", "leader", None, False, error="no pod IP")
    d = sim.tick([pending, follower(0), follower(1)])
    assert sim.condition("Degraded")["status"] == "False" and sim.condition("Ready")["status"] == "False"
    assert sim.condition("Progressing")["reason"] == "Scaling"
    assert not [e for e in d.events if e.type == "Warning"]
    silent = Member("gc-leader-0", "leader", "127.0.0.2:9851", False, error="refused")
    sim.tick([silent, follower(0), follower(1)])
    assert sim.condition("Degraded")["reason"] == "LeaderUnavailable"


def test_one_healthy_probe_does_not_reset_the_ladder():
    """Only health for a whole grace period starts the ladder afresh: a member that flaps between
    long divergences climbs to a restart instead of being resynced forever."""
    sim = Sim()  # grace 60 s, ticks every 10 s
    sim.run([leader(), follower(0, size=2000, resyncs=0), follower(1)], 70)  # resync at 60
    sim.run([leader(), follower(0, resyncs=1), follower(1)], 40)  # healthy 70..100: 30 s
    sim.run([leader(), follower(0, size=2000, resyncs=1), follower(1)], 50)  # diverged 110..150
    sim.tick([leader(), follower(0, resyncs=1), follower(1)])  # one healthy probe at 160
    assert sim.member("gc-follower-0")["repairs"] == 1
    sim.run([leader(), follower(0, size=2000, resyncs=1), follower(1)], 80)  # due at 230
    assert [(at, a.kind) for at, a in sim.actions] == [(60, "resync"), (230, "restart")]
    # healthy for a whole grace period: back to the first rung
    sim.run(HEALTHY, 70)
    assert sim.member("gc-follower-0")["repairs"] == 0
    assert sim.member("gc-follower-0")["healthySince"]


def test_restart_that_does_not_help_is_recorded_failed():
    """A restarted member still diverged a grace period after it answers again: the restart is
    settled as an error (metrics, Progressing no longer Repairing) and the ladder moves on."""
    div = {"gracePeriodSeconds": 60, "toleranceBytes": 100, "ladder": ["restart", "restart", "resync"]}
    spec = parse_spec({"aofShrink": {"schedule": None}, "divergence": div})
    sim = Sim(spec)
    settled: list = []
    bad = [leader(), follower(0, size=2000), follower(1)]
    for _ in range(7):
        settled += sim.tick(bad).settled
    assert [(at, a.kind) for at, a in sim.actions] == [(60, "restart")]
    for _ in range(5):  # 70..110: the restarted member answers, still 2x, within the grace period
        settled += sim.tick(bad).settled
    assert sim.member("gc-follower-0")["lastRepair"]["result"] == "started" and not settled
    d = sim.tick(bad)  # 120: a grace period after the restart
    settled += d.settled
    (failed,) = [e for e in d.events if e.reason == "RestartFailed"]
    assert failed.type == "Warning" and "aof_size 2000 vs leader 1000" in failed.message
    assert settled == [("restart", "error")]
    assert [(at, a.kind) for at, a in sim.actions] == [(60, "restart"), (120, "restart")]


def test_one_restart_in_flight_at_a_time_even_with_no_grace():
    """A restarted pod being recreated (no IP) keeps its restart in flight: with
    gracePeriodSeconds 0 the next diverged follower is not restarted on the next tick."""
    div = {"gracePeriodSeconds": 0, "toleranceBytes": 100, "ladder": ["restart"]}
    spec = parse_spec({"aofShrink": {"schedule": None}, "divergence": div})
    sim = Sim(spec)
    sim.tick([leader(), follower(0, size=2000), follower(1, size=2000)])
    assert [(a.kind, a.member) for _, a in sim.actions] == [("restart", "gc-follower-0")]
    recreating = replace(follower(0, reachable=False, size=None), address=None)
    sim.run([leader(), recreating, follower(1, size=2000)], 300)
    assert len(sim.actions) == 1
    assert sim.condition("Progressing")["reason"] == "Repairing"


def test_budget_exhausted_does_not_flap_during_shrinks_resyncs_or_pause():
    ladder = {"gracePeriodSeconds": 0, "maxRepairsPerHour": 1, "ladder": ["resync"] * 4}
    spec = parse_spec({"aofShrink": {"schedule": None}, "divergence": {**ladder, "toleranceBytes": 100}})
    sim = Sim(spec)
    sim.tick([leader(), follower(0, caught_up=False, resyncs=0), follower(1)])
    done = [leader(), follower(0, resyncs=1, size=5000), follower(1)]
    sim.run(done, 60)
    assert sim.condition("Degraded")["reason"] == "RepairBudgetExhausted"
    sim.tick(done, triggers=Triggers(shrink_now=True))  # a shrink in flight: repairs not weighed
    sim.run([leader(shrinking=True), *done[1:]], 60)
    assert sim.condition("Degraded")["reason"] == "RepairBudgetExhausted"
    sim.run(done, 60, step=10)
    sim.tick(done, triggers=Triggers(paused=True))
    sim.run(done, 60)
    assert sim.condition("Degraded")["reason"] == "RepairBudgetExhausted"
    assert sim.events.count("RepairBudgetExhausted") == 1  # one Warning, not one per flap
    sim.run(done, 3600)  # the budget frees up: repaired, no longer blocked
    assert sim.condition("Degraded")["reason"] != "RepairBudgetExhausted"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies the operator's status writes."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def test_new_records_clear_the_previous_ones_fields_under_merge_patch():
    stored = {"lastShrink": {"time": "2026-01-05T00:00:00Z", "result": "ok", "sizeBefore": 900,
                             "sizeAfter": 800, "reason": "schedule", "serverTimeBefore": 1.0},
              "lastResync": {"time": "2026-01-05T00:00:00Z", "member": "gc-follower-1", "result": "ok",
                             "resyncsBefore": 3, "reason": "manual"}}  # fmt: skip
    d = decide(SPEC, stored, [leader(), follower(0), follower(1)], T0, created=CREATED,
               triggers=Triggers(shrink_now=True))  # fmt: skip
    merged = merge_patch(stored, d.status)
    assert merged["lastShrink"]["result"] == "started" and "sizeAfter" not in merged["lastShrink"]
    no_shrink = {k: v for k, v in stored.items() if k != "lastShrink"}
    d = decide(SPEC, no_shrink, [leader(), follower(0, resyncs=None), follower(1)], T0, created=CREATED,
               triggers=Triggers(resync_member="gc-follower-0"))  # fmt: skip
    merged = merge_patch(no_shrink, d.status)
    assert merged["lastResync"]["member"] == "gc-follower-0" and "resyncsBefore" not in merged["lastResync"]


def test_auth_secret_unavailable_degrades_and_judges_nothing():
    unprobed = [Member(m.name, m.role, m.address, reachable=False, error="Secret 'a' unavailable")
                for m in (leader(), follower(0), follower(1))]  # fmt: skip
    sim = Sim(parse_spec({"divergence": {"gracePeriodSeconds": 0}, "aofShrink": {"schedule": None}}))
    for _ in range(10):
        d = decide(sim.spec, sim.status, unprobed, sim.now, created=CREATED,
                   triggers=Triggers(shrink_now=True), auth_error="Secret 'a' unavailable")  # fmt: skip
        sim.status, sim.now = d.status, sim.now + timedelta(seconds=10)
        assert not d.actions
    assert sim.condition("Degraded")["reason"] == "AuthSecretUnavailable"
    assert sim.condition("Degraded")["message"] == "Secret 'a' unavailable"


def test_decide_keeps_observed_generation():
    d = decide(SPEC, {"observedGeneration": 3}, HEALTHY, T0, created=CREATED, generation=5)
    assert d.status["observedGeneration"] == 3


@pytest.mark.parametrize("observed", [None, 4])
def test_not_ready_until_the_generation_is_applied(observed):
    """kstatus: healthy members running an older (or no) applied spec are not Ready yet."""
    status = {} if observed is None else {"observedGeneration": observed}
    d = decide(SPEC, status, HEALTHY, T0, created=CREATED, generation=5)
    ready, progressing = (
        next(c for c in d.status["conditions"] if c["type"] == t) for t in ("Ready", "Progressing")
    )
    assert (
        ready["status"] == "False" and ready["reason"] == "Reconciling" and "generation 5" in ready["message"]
    )
    assert progressing["status"] == "True" and progressing["reason"] == "Reconciling"
    d = decide(SPEC, {**d.status, "observedGeneration": 5}, HEALTHY, T0, created=CREATED, generation=5)
    assert next(c for c in d.status["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert [e.reason for e in d.events] == ["Ready"]


def test_cron_fires_once_in_the_hour_repeated_when_clocks_go_back():
    """Europe/Berlin leaves summer time on 2026-10-25: 02:00-03:00 local happens twice.
    `30 2 * * *` fires at its first pass (00:30 UTC) and not again an hour later."""
    from datetime import UTC, datetime

    from geocluster.policy import cron_fired

    before = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, the repeated hour
    assert cron_fired("30 2 * * *", "Europe/Berlin", before, first)
    assert not cron_fired("30 2 * * *", "Europe/Berlin", first, second)
    assert cron_fired("30 2 * * *", "Europe/Berlin", first, datetime(2026, 10, 26, 1, 30, tzinfo=UTC))
    # a shrink in the second pass before 02:30 (by size, or by hand): 02:30's first pass is
    # behind it, so nothing is due until tomorrow (it used to fire on every probe until 02:30)
    second_pass = datetime(2026, 10, 25, 1, 5, tzinfo=UTC)  # 02:05 CET
    a_minute_later = datetime(2026, 10, 25, 1, 6, tzinfo=UTC)
    assert not cron_fired("30 2 * * *", "Europe/Berlin", second_pass, a_minute_later)
    assert not cron_fired("30 2 * * *", "Europe/Berlin", second_pass, second)
    assert cron_fired("30 2 * * *", "Europe/Berlin", second_pass, datetime(2026, 10, 26, 1, 30, tzinfo=UTC))
    assert not cron_fired("30 1 * * *", "America/New_York", datetime(2026, 11, 1, 6, 5, tzinfo=UTC),
                          datetime(2026, 11, 1, 6, 5, 30, tzinfo=UTC))  # fmt: skip
