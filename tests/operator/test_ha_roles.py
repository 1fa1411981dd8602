"""Pure decisions of roles.py over simulated state: update ordering (followers one at a time,
each after the previous caught up, then switchover or restart of the leader, or waiting for a
person), role labels, re-pointing, and the v1alpha1 migration plan."""

from __future__ import annotations

import pytest
from geocluster import roles
from geocluster.policy import Member
from geocluster.spec import parse_spec

KEY = "geo.geocluster.io/role"
LEADER_ADDR = "127.0.0.2:9851"
NEW, OLD = "h-new", "h-old"


def leader(name: str = "gc-0", **kw) -> Member:
    return Member(name, "leader", LEADER_ADDR, True, 1000, **kw)


def follower(name: str, caught_up: bool = True, size: int = 1000, **kw) -> Member:
    kw.setdefault("following", LEADER_ADDR)
    return Member(name, "follower", f"127.0.0.{10 + int(name[-1])}:9851", True, size, caught_up, **kw)


def pods(hashes: dict[str, str | None], deleting: tuple[str, ...] = ()) -> dict[str, roles.Pod]:
    return {n: roles.Pod(n, {}, h, n in deleting) for n, h in hashes.items()}


def simulate(spec: dict, steps: int = 12) -> list[tuple[str, str | None]]:
    """A 3-member cluster on template OLD updated to NEW: apply each step as a controller would
    (a deleted pod comes back on NEW, caught up a tick later; a switchover moves the leader)."""
    s = parse_spec(spec)
    lead = "gc-0"
    hashes = {f"gc-{k}": OLD for k in range(3)}
    behind: set[str] = set()
    done = []
    for _ in range(steps):
        members = [leader(lead) if n == lead else follower(n, caught_up=n not in behind) for n in hashes]
        behind.clear()
        step = roles.plan_update(s, pods(hashes), members, lead, NEW)
        if step.kind == "none":
            break
        done.append((step.kind, step.member))
        if step.kind == "delete":
            hashes[step.member] = NEW
            behind.add(step.member)  # back, not caught up yet: the next step must wait
        elif step.kind == "switchover":
            lead = step.member
        elif step.kind == "supervised":
            break
    return done


def test_followers_first_one_at_a_time_then_switchover_then_the_old_leader():
    assert simulate({"followers": 2}) == [
        ("delete", "gc-2"), ("wait", None),  # the next only after this one caught up
        ("delete", "gc-1"), ("wait", None),
        ("switchover", "gc-1"),  # to an updated, caught-up follower (largest aof, then name)
        ("delete", "gc-0"),  # the old leader, a follower now, last
    ]


def test_primary_update_method_restart_and_strategy_supervised():
    restart = simulate({"followers": 2, "failover": {"primaryUpdateMethod": "restart"}})
    assert [s for s in restart if s[0] != "wait"] == [("delete", "gc-2"), ("delete", "gc-1"),
                                                      ("delete", "gc-0")]  # fmt: skip
    supervised = simulate({"followers": 2, "failover": {"primaryUpdateStrategy": "supervised"}})
    assert supervised[-1] == ("supervised", "gc-0")
    assert ("switchover", "gc-1") not in supervised and ("delete", "gc-0") not in supervised


def test_a_single_member_is_restarted_in_place():
    s = parse_spec({"followers": 0})
    step = roles.plan_update(s, pods({"gc-0": OLD}), [leader()], "gc-0", NEW)
    assert (step.kind, step.member) == ("delete", "gc-0")


@pytest.mark.parametrize(
    ("members", "hashes", "deleting", "why"),
    [
        ([leader(), follower("gc-1", caught_up=False), follower("gc-2")], None, (), "gc-1 is not caught up"),
        ([leader(), Member("gc-1", "follower", None, False), follower("gc-2")], None, (),
         "gc-1 does not answer"),
        ([leader(following="x:1"), follower("gc-1"), follower("gc-2")], None, (), "gc-0 is not leading yet"),
        ([leader(), follower("gc-1"), follower("gc-2")], None, ("gc-1",), "gc-1 has no pod yet"),
    ],
)
def test_nothing_is_deleted_while_a_member_is_not_back_and_in_step(members, hashes, deleting, why):
    s = parse_spec({"followers": 2})
    state = pods(hashes or {"gc-0": OLD, "gc-1": OLD, "gc-2": OLD}, deleting)
    step = roles.plan_update(s, state, members, "gc-0", NEW)
    assert (step.kind, step.reason) == ("wait", why)


def test_busy_waits_and_an_up_to_date_cluster_does_nothing():
    s = parse_spec({"followers": 2})
    members = [leader(), follower("gc-1"), follower("gc-2")]
    state = pods({"gc-0": OLD, "gc-1": OLD, "gc-2": OLD})
    busy = roles.plan_update(s, state, members, "gc-0", NEW, busy="a shrink is running")
    assert (busy.kind, busy.reason) == ("wait", "a shrink is running")
    assert roles.plan_update(s, pods(dict.fromkeys(state, NEW)), members, "gc-0", NEW) == roles.NONE
    # a pod from before this operator version (no hash annotation) is outdated too
    unknown = pods({"gc-0": NEW, "gc-1": NEW, "gc-2": None})
    assert roles.plan_update(s, unknown, members, "gc-0", NEW).member == "gc-2"


def test_switchover_target_is_the_most_advanced_caught_up_follower():
    s = parse_spec({"followers": 2})
    members = [leader(), follower("gc-1", size=900), follower("gc-2", size=1000)]
    step = roles.plan_update(s, pods({"gc-0": OLD, "gc-1": NEW, "gc-2": NEW}), members, "gc-0", NEW)
    assert (step.kind, step.member) == ("switchover", "gc-2")


def test_role_labels_only_where_they_differ():
    state = {"gc-0": roles.Pod("gc-0", {KEY: "follower"}), "gc-1": roles.Pod("gc-1", {KEY: "follower"}),
             "gc-2": roles.Pod("gc-2", {}), "gc-3": roles.Pod("gc-3", {}, deleting=True)}  # fmt: skip
    names = ["gc-0", "gc-1", "gc-2", "gc-3", "gc-4"]  # gc-4: no pod yet
    assert roles.role_labels(state, names, "gc-0", KEY) == {"gc-0": "leader", "gc-2": "follower"}


def test_repoint_followers_of_a_stale_view_not_of_strangers():
    ours = frozenset({LEADER_ADDR, "127.0.0.11:9851", "gc-1.gc-members.ns.svc.cluster.local:9851"})
    aliases = frozenset({"gc-0.gc-members.ns.svc.cluster.local:9851"})
    members = [
        leader(),
        follower("gc-1"),  # fine
        follower("gc-2", following="gc-1.gc-members.ns.svc.cluster.local:9851"),  # the old leader
        follower("gc-3", following=None),  # following no one: a second leader
        follower("gc-4", following="10.9.9.9:9851"),  # someone else's: the repair ladder's case
        follower("gc-5", following="gc-0.gc-members.ns.svc.cluster.local:9851"),  # by DNS: fine
    ]
    assert roles.to_repoint(members, members[0], aliases, ours) == ["gc-2", "gc-3"]
    # a leader that does not lead (yet) is no one to point at
    assert roles.to_repoint(members, leader(following="x:1"), aliases, ours) == []


def test_migration_plan():
    new = ["gc-0", "gc-1", "gc-2"]
    state = pods(dict.fromkeys(new, NEW))
    caught = [leader("gc-leader-0"), *(follower(n) for n in new)]
    assert roles.plan_migration(False, "gc-0", new, caught, state) == roles.NONE
    behind = [leader("gc-leader-0"), follower("gc-0", caught_up=False), follower("gc-1"), follower("gc-2")]
    step = roles.plan_migration(True, "gc-leader-0", new, behind, state)
    assert (step.kind, step.reason) == ("wait", "migration: gc-0 is not caught up")
    step = roles.plan_migration(True, "gc-leader-0", new, caught, state)
    assert (step.kind, step.member) == ("switchover", "gc-0")
    assert roles.plan_migration(True, "gc-0", new, caught, state).kind == "removeLegacy"
