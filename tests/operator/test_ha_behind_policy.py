"""behindBytes re-measured right before the promotion (failover.loss_bound, pure): the decision's
estimate comes from probes one tick old, and the candidate may gain bytes between the decision
and its promotion; and the watch a promotion leaves behind (failover.finish caught_up=), so a
new leader lost before the next look can still be failed over."""

from __future__ import annotations

from geocluster import failover
from geocluster.policy import Member
from test_failover_policy import DEAD, Sim, follower, leader


def promotion_after_the_leader_died(target_size: int) -> failover.Promotion:
    """The leader seen healthy at 1000 bytes, then dead; the follower probed at ``target_size``."""
    sim = Sim()
    sim.tick([leader(size=1000), follower(1, size=1000), follower(2, size=900)])
    d = None
    for _ in range(10):
        d = sim.tick([DEAD, follower(1, size=target_size), follower(2, size=target_size - 100)])
        if d.promotion:
            break
    assert d is not None and d.promotion is not None and d.promotion.new == "follower-1"
    return d.promotion


def test_the_decision_estimates_from_its_probes_and_the_bound_uses_the_size_at_promotion():
    pr = promotion_after_the_leader_died(target_size=800)
    assert pr.behind_bytes == 200  # estimate: leader last seen at 1000, target probed at 800
    # between the decision and the promotion the target applied 150 more bytes
    assert failover.loss_bound(pr, known=1000, target_now=950) == 50
    # it applied all of them: nothing acknowledged is missing
    assert failover.loss_bound(pr, known=1000, target_now=1000) == 0
    # the local runtime knows the killed leader's file (it wrote 68 bytes after the last look)
    assert failover.loss_bound(pr, known=1068, target_now=1000) == 68
    # never negative, and the estimate stands when the target does not answer the re-probe
    assert failover.loss_bound(pr, known=1000, target_now=1200) == 0
    assert failover.loss_bound(pr, known=1000, target_now=None) == 200


def test_what_followers_heard_from_an_unreachable_leader_widens_the_bound():
    pr = promotion_after_the_leader_died(target_size=800)
    # another follower's last handshake saw the leader at 1100, after the policy's last look
    assert failover.loss_bound(pr, known=1000, target_now=950, heard=[1100, None]) == 150
    reachable = failover.Promotion("failover", "leader", "follower-1", "empty", True, 0)
    # an old leader that answers: what followers heard is not counted, what it holds is
    assert failover.loss_bound(reachable, known=1000, target_now=1000, heard=[5000], old_held=300) == 300
    assert failover.loss_bound(reachable, known=1000, target_now=900, old_held=0) == 100


def test_an_empty_leader_promotion_counts_what_it_took_since_it_came_back():
    sim = Sim()
    sim.tick([leader(size=1000, objects=100), follower(1), follower(2)])
    empty = leader(size=40, objects=0)
    stale = [follower(1, caught_up=False, replication_state="refused"),
             follower(2, caught_up=False, replication_state="refused")]
    d = None
    for _ in range(10):
        d = sim.tick([empty, *stale])
        if d.promotion:
            break
    assert d is not None and d.promotion is not None and d.promotion.old_reachable
    pr = d.promotion
    assert pr.behind_bytes == 40  # the target had all 1000; the empty leader's 40 are lost
    # re-probed: the fenced empty leader took one more write (60 bytes) before its READONLY
    assert failover.loss_bound(pr, known=1000, target_now=1000, old_held=100) == 100


def after_switchover(caught_up: list[str] | None) -> Sim:
    """A switchover leader -> follower-1 whose new leader dies before the next look."""
    sim = Sim()
    sim.tick([leader(), follower(1), follower(2)])
    d = sim.tick([leader(), follower(1), follower(2)], promote="follower-1")
    assert d.promotion is not None and d.promotion.kind == "switchover"
    sim.status = failover.finish(d.status, sim.now, "ok", behind_bytes=0, leader="follower-1",
                                 caught_up=caught_up, leader_aof_size=1000)
    sim.promotions.clear()
    return sim


def members_with_follower_1_dead():
    new_leader = Member("follower-1", "leader", "127.0.0.1:9852", False, None,
                                 error="connection refused")
    old = Member("leader", "follower", "127.0.0.1:9851", True, 1000, False,
                          num_objects=100, caught_up_once=True, replication_state="reconnecting")
    return [new_leader, old, follower(2, caught_up=False)]


def test_a_leader_lost_right_after_its_switchover_is_failed_over():
    sim = after_switchover(caught_up=["follower-2", "leader", "follower-1"])
    assert sim.status["leaderWatch"]["caughtUp"] == ["follower-2", "leader"]  # the new leader not
    assert sim.status["leaderWatch"]["aofSize"] == 1000
    sim.run(members_with_follower_1_dead(), 60)
    assert [p.new for _, p in sim.promotions] == ["follower-2"]  # first by name among equals
    assert sim.promotions[0][1].old == "follower-1"


def test_without_the_seeded_watch_it_would_be_blocked():
    sim = after_switchover(caught_up=None)  # what finish() did before: an empty watch
    sim.run(members_with_follower_1_dead(), 60)
    assert sim.promotions == []
    assert sim.degraded()["reason"] == "FailoverBlocked"


def test_seeded_followers_lose_their_place_once_seen_resyncing():
    sim = after_switchover(caught_up=["follower-2", "leader"])
    new_leader = Member("follower-1", "leader", "127.0.0.1:9852", True, 1200, num_objects=100)
    old = Member("leader", "follower", "127.0.0.1:9851", True, 1200, True, num_objects=100,
                 caught_up_once=True, replication_state="streaming")
    sim.tick([new_leader, old, follower(2, caught_up=False, replication_state="resyncing")])
    assert sim.status["leaderWatch"]["caughtUp"] == ["leader"]  # follower-2 starts over: out
