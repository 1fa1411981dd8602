"""The policy and a follower that refuses a full resync (``replication_state: refused``), over
simulated time: reported (Event once, Degraded, divergence), never repaired, back to normal
once it clears. Pure: no cluster, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from geocluster import failover
from geocluster.policy import Member, Triggers, decide, finding
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
WHY = "full resync refused: the leader has 3 objects, fewer than 0.5 x our 1000"
NO_TRIGGERS = Triggers()
LEADER = Member("gc-leader-0", "leader", "127.0.0.2:9851", True, 200, num_objects=3)


def follower(i: int, state="streaming", error=None, caught_up=True, size=200) -> Member:
    return Member(f"gc-follower-{i}", "follower", f"127.0.0.{3 + i}:9851", True, size, caught_up,
                  following="127.0.0.2:9851", num_objects=1000, replication_state=state,
                  replication_error=error, caught_up_once=True, resyncs=1)


def refusing(i: int, error=WHY) -> Member:
    return follower(i, "refused", error, caught_up=False, size=90_000)


class Sim:
    """Feeds each decision's status into the next tick, as the operator does."""

    def __init__(self, status=None):
        self.status, self.now = status or {}, T0
        self.actions: list = []
        self.events: list = []

    def tick(self, members, seconds=10, triggers=NO_TRIGGERS):
        d = decide(SPEC, self.status, members, self.now, created=CREATED, triggers=triggers)
        self.status = d.status
        self.actions += d.actions
        self.events += d.events
        self.now += timedelta(seconds=seconds)
        return d

    def run(self, members, seconds: int, step=10):
        for _ in range(seconds // step):
            self.tick(members, step)

    def member(self, name):
        return next(m for m in self.status["members"] if m["name"] == name)

    def degraded(self):
        return next(c for c in self.status["conditions"] if c["type"] == "Degraded")

    def reasons(self):
        return [e.reason for e in self.events]


def test_refusing_follower_is_reported_never_repaired_for_an_hour():
    sim = Sim()
    sim.tick([LEADER, follower(0), follower(1)])
    sim.run([LEADER, refusing(0), follower(1)], 3600)
    assert sim.actions == []  # no RESYNC, no restart, no give-up: nothing to climb
    warned = [e for e in sim.events if e.reason == "ResyncRefused"]
    assert len(warned) == 1, sim.reasons()  # once, not every tick (and not twice in one)
    assert warned[0].type == "Warning" and WHY in warned[0].message
    assert "RESYNC FORCE" in warned[0].message
    assert not {"RepairStarted", "RepairGaveUp", "RepairBudgetExhausted"} & set(sim.reasons())
    deg = sim.degraded()
    assert (deg["status"], deg["reason"]) == ("True", "ResyncRefused")
    assert "gc-follower-0 refuses" in deg["message"]
    assert "RESYNC FORCE" in deg["message"] and "promote" in deg["message"]
    ms = sim.member("gc-follower-0")
    assert ms["divergence"] == WHY
    assert ms.get("repairs", 0) == 0 and not ms.get("gaveUp") and ms.get("divergedSince") is None
    assert sim.status["phase"] == "Degraded" and sim.status["readyFollowers"] == 1
    # a restarted operator reads the same status: no second Event
    again = Sim(sim.status)
    again.now = sim.now
    again.run([LEADER, refusing(0), follower(1)], 60)
    assert "ResyncRefused" not in again.reasons() and again.actions == []


def test_once_it_clears_the_cluster_is_normal_again_and_a_new_refusal_is_announced():
    sim = Sim()
    sim.run([LEADER, refusing(0), follower(1)], 120)
    sim.run([LEADER, follower(0), follower(1)], 120)  # RESYNC FORCE by a person, or leader restored
    deg = sim.degraded()
    assert (deg["status"], deg["reason"]) == ("False", "AsExpected")
    assert sim.member("gc-follower-0").get("divergence") is None
    assert sim.status["phase"] == "Running" and sim.actions == []
    sim.run([LEADER, refusing(0), follower(1)], 60)
    assert sim.reasons().count("ResyncRefused") == 2


def test_the_refusal_text_is_the_followers_own():
    assert finding(refusing(0), LEADER, SPEC) == WHY
    # replication_error of a failed reconnect is not a refusal's text: the state says refused
    assert finding(refusing(0, "connection refused"), LEADER, SPEC) == \
        "full resync refused: connection refused"
    assert finding(refusing(0, None), LEADER, SPEC) == "full resync refused"


def test_a_repair_resync_that_meets_a_refusal_settles_at_once_and_the_ladder_stops():
    sim = Sim()
    behind = follower(0, "connecting", caught_up=False)
    sim.run([LEADER, behind, follower(1)], 70)  # past the grace period: RESYNC
    assert [(a.kind, a.member) for a in sim.actions] == [("resync", "gc-follower-0")]
    sim.tick([LEADER, refusing(0), follower(1)])
    assert sim.status["lastResync"]["result"] == f"error: {WHY}"
    assert "ResyncFailed" in sim.reasons()
    sim.run([LEADER, refusing(0), follower(1)], 3600)
    assert len(sim.actions) == 1  # no restart, no further resync
    assert sim.degraded()["reason"] == "ResyncRefused"


def test_manual_and_scheduled_resyncs_skip_a_refusing_follower():
    sim = Sim()
    sim.tick([LEADER, refusing(0), follower(1)], triggers=Triggers(resync_member="gc-follower-0"))
    assert sim.actions == []
    skipped = [e for e in sim.events if e.reason == "ResyncSkipped"]
    assert skipped and "RESYNC FORCE" in skipped[0].message
    sim.status["pendingResyncs"] = ["gc-follower-0", "gc-follower-1"]  # after a shrink
    sim.tick([LEADER, refusing(0), follower(1)])
    sim.tick([LEADER, refusing(0), follower(1)])
    assert [(a.kind, a.member) for a in sim.actions] == [("resync", "gc-follower-1")]


def test_two_refusing_followers_get_one_event_each_and_one_condition():
    sim = Sim()
    sim.run([LEADER, refusing(0), refusing(1)], 600)
    assert sim.reasons().count("ResyncRefused") == 2 and sim.actions == []
    assert sim.degraded()["message"].startswith("gc-follower-0, gc-follower-1 refuse ")


def test_the_advised_promote_of_a_refusing_follower_is_a_failover_to_it():
    """The Degraded message's "promote it": with the leader much smaller than the refusing
    follower, a person's promote is a forced failover to that follower (its data kept)."""
    d = failover.decide(SPEC, {}, [LEADER, refusing(0), refusing(1)], T0, promote="gc-follower-0")
    assert d.promotion is not None
    assert (d.promotion.kind, d.promotion.new) == ("failover", "gc-follower-0")
