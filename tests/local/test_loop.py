"""The control loop in-process (fake clock) over real geoserver processes: replication, scheduled
shrinks with follower resyncs, divergence repair up the ladder, budgets, dead processes."""

from __future__ import annotations

import pytest
from local_lib import (
    FAST,
    client,
    condition,
    kill9,
    member,
    merged,
    pid,
    pid_alive,
    tick_until,
)

pytestmark = pytest.mark.timeout(60)


def ready(cluster) -> bool:
    return condition(cluster.status, "Ready").get("status") == "True"


async def test_up_replicates_and_reports_ready(make_cluster, clock):
    cluster = await make_cluster(FAST)
    leader = client(cluster, "leader")
    for i in range(20):
        leader.execute_command("SET", "fleet", f"truck{i}", "POINT", 33 + i / 100, -115)

    def replicated():
        return all(client(cluster, f).execute_command("SCAN", "fleet", "COUNT") == 20
                   for f in ("follower-1", "follower-2"))

    await tick_until(cluster, lambda: ready(cluster) and replicated(), clock, what="Ready + replicated")
    st = cluster.state.read_status()
    assert st["phase"] == "Running" and st["readyFollowers"] == 2 and st["leader"] == "leader"
    assert {m["name"] for m in st["members"]} == {"leader", "follower-1", "follower-2"}
    info = cluster.state.read_cluster()
    assert all(m["process"] and pid_alive(m["process"]["pid"]) for m in info["members"])
    assert info["supervisor"]["pid"] and cluster.state.supervisor()


async def test_scheduled_shrink_then_followers_resynced_to_leader_size(make_cluster, clock):
    cluster = await make_cluster(merged(FAST, aofShrink={"schedule": "*/5 * * * *"}))
    leader = client(cluster, "leader")
    for i in range(300):  # overwrites: a shrink makes the AOF much smaller
        leader.execute_command("SET", "fleet", f"truck{i % 10}", "POINT", 33 + i / 1000, -115)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    assert "lastShrink" not in cluster.status or cluster.status["lastShrink"] is None  # 00:01: not due
    before = {m.name: m.resyncs for m in cluster.members}
    size_before = member(cluster, "leader")["aofSize"]

    clock.advance(5 * 60)  # past 00:05
    decision = await cluster.tick()
    assert [(a.kind, a.member, a.reason) for a in decision.actions] == [("shrink", "leader", "schedule")]

    def settled():
        st = cluster.status
        sizes = {m["name"]: m["aofSize"] for m in st["members"]}
        return (st["lastShrink"]["result"] == "ok" and not st.get("pendingResyncs")
                and st["lastResync"]["result"] == "ok" and len(set(sizes.values())) == 1)

    await tick_until(cluster, settled, clock, what="shrink + resyncs settled")
    after = {m.name: m.resyncs for m in cluster.members}
    assert after["follower-1"] > before["follower-1"] and after["follower-2"] > before["follower-2"]
    sizes = {m["name"]: m["aofSize"] for m in cluster.status["members"]}
    assert sizes["leader"] < size_before
    assert cluster.state.read_status()["lastShrink"]["reason"] == "schedule"


async def test_diverged_follower_is_refollowed_and_resynced(make_cluster, clock):
    """`FOLLOW no one` by hand, then a rogue write: the first ladder step FOLLOWs the leader again
    before its RESYNC (a RESYNC alone could only fail with "not a follower"), and the full resync
    replaces the rogue dataset without a restart."""
    cluster = await make_cluster(merged(FAST, followers=1))
    client(cluster, "leader").execute_command("SET", "fleet", "a", "POINT", 33, -115)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    f = client(cluster, "follower-1")
    f.execute_command("FOLLOW", "no", "one")
    f.execute_command("SET", "rogue", "x", "POINT", 1, 1)  # now its AOF is no prefix of the leader's
    first_pid = pid(cluster, "follower-1")

    await tick_until(cluster, lambda: member(cluster, "follower-1").get("divergedSince"), clock,
                     what="divergence noticed")
    assert member(cluster, "follower-1")["divergence"] == "not caught up"
    assert not member(cluster, "follower-1").get("lastRepair")  # within the grace period: no action

    def repaired(action):
        rep = member(cluster, "follower-1").get("lastRepair") or {}
        return rep.get("action") == action and rep.get("result") != "started" and rep

    rep = await tick_until(cluster, lambda: repaired("resync"), clock, step=10, what="resync repair")
    assert rep["result"] == "ok"
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready again")
    assert pid(cluster, "follower-1") == first_pid  # healed without a restart
    assert b"rogue" not in f.execute_command("KEYS", "*")  # replaced by the leader's dataset
    assert client(cluster, "follower-1").execute_command("EXISTS", "fleet", "a") == 1
    sizes = {m["name"]: m["aofSize"] for m in cluster.status["members"]}
    assert sizes["follower-1"] == sizes["leader"]
    assert condition(cluster.status, "Degraded")["status"] == "False"


@pytest.mark.parametrize(
    ("divergence", "reason"),
    [({"maxRepairsPerHour": 1}, "RepairBudgetExhausted"), ({"ladder": ["resync"]}, "RepairsExhausted")],
    ids=["budget", "ladder"],
)
async def test_exhausted_repairs_degrade_without_restart_loop(make_cluster, clock, divergence, reason):
    cluster = await make_cluster(merged(FAST, followers=1, divergence={**FAST["divergence"], **divergence}))
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    f = client(cluster, "follower-1")
    # A divergence no RESYNC can heal: the follower's leaderauth is wrong (set at runtime, so only
    # a restart would clear it), and it follows no one: every FOLLOW the ladder sends fails auth.
    f.execute_command("CONFIG", "SET", "leaderauth", "wrong")
    f.execute_command("FOLLOW", "no", "one")
    first_pid = pid(cluster, "follower-1")
    await tick_until(cluster, lambda: condition(cluster.status, "Degraded").get("reason") == reason,
                     clock, step=10, what=reason)
    for _ in range(10):  # much later: still degraded, never restarted
        clock.advance(60)
        decision = await cluster.tick()
        assert not [a for a in decision.actions if a.kind == "restart"]
    assert pid(cluster, "follower-1") == first_pid
    assert condition(cluster.status, "Degraded")["status"] == "True"
    assert cluster.state.read_status()["phase"] == "Degraded"


async def test_killed_follower_is_restarted_and_catches_up(make_cluster, clock):
    cluster = await make_cluster(FAST)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    old = kill9(cluster, "follower-2")
    client(cluster, "leader").execute_command("SET", "fleet", "late", "POINT", 33, -115)

    def caught_up():
        m = member(cluster, "follower-2")
        return (pid(cluster, "follower-2") != old and m["reachable"] and m.get("caughtUp")
                and client(cluster, "follower-2").execute_command("EXISTS", "fleet", "late") == 1)

    await tick_until(cluster, caught_up, clock, what="follower-2 back and caught up")
    assert cluster.sup.procs["follower-2"].restarts == 1
    assert not member(cluster, "follower-2").get("lastRepair")  # the supervisor's job, not a repair


async def test_killed_leader_is_restarted_with_its_data(make_cluster, clock):
    """With failover off, a dead leader is restarted in place (failover: test_failover.py)."""
    cluster = await make_cluster(merged(FAST, failover={"enabled": False}))
    leader = client(cluster, "leader")
    for i in range(50):
        leader.execute_command("SET", "fleet", f"truck{i}", "POINT", 33, -115)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    old, port = kill9(cluster, "leader"), cluster.sup.procs["leader"].port

    await tick_until(cluster, lambda: member(cluster, "leader")["reachable"], clock, what="leader back")
    assert pid(cluster, "leader") != old and cluster.sup.procs["leader"].port == port
    assert client(cluster, "leader").execute_command("SCAN", "fleet", "COUNT") == 50
    client(cluster, "leader").execute_command("SET", "fleet", "after", "POINT", 33, -115)
    await tick_until(
        cluster,
        lambda: ready(cluster)
        and all(client(cluster, f).execute_command("SCAN", "fleet", "COUNT") == 51
                for f in ("follower-1", "follower-2")),
        clock,
        what="followers caught up with the restarted leader",
    )


async def test_manual_triggers_are_consumed(make_cluster, clock):
    cluster = await make_cluster(merged(FAST, followers=1))
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    cluster.state.request("shrink")
    decision = await cluster.tick()
    assert [(a.kind, a.reason) for a in decision.actions] == [("shrink", "manual")]
    assert "shrink" not in cluster.state.triggers()
    def resynced():
        return not cluster.status.get("pendingResyncs") and (cluster.status.get("lastResync") or {}).get(
            "result") == "ok"

    await tick_until(cluster, resynced, clock, what="after-shrink resync")
    cluster.state.request("resync", "follower-1")
    decision = await cluster.tick()
    assert [(a.kind, a.member, a.reason) for a in decision.actions] == [("resync", "follower-1", "manual")]
    assert cluster.state.triggers() == {}


async def test_manual_trigger_is_consumed_before_acting(make_cluster, clock, monkeypatch):
    """A trigger still present while acting runs again after the action settles if `up` dies."""
    from geocluster import probe

    cluster = await make_cluster(merged(FAST, followers=1))
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    seen: list[dict] = []
    send = probe.send

    async def spy(address, *args, **kw):
        seen.append(cluster.state.triggers())
        return await send(address, *args, **kw)

    monkeypatch.setattr(probe, "send", spy)
    cluster.state.request("shrink")
    decision = await cluster.tick()
    assert [a.kind for a in decision.actions] == ["shrink"]
    assert seen == [{}]


async def test_member_in_crash_back_off_is_waited_for_not_repaired(make_cluster, clock):
    """Supervision is not a repair: a member the supervisor is backing off from restarting is not
    judged unreachable and repaired (which would skip the back-off and use the repair budget)."""
    cluster = await make_cluster(merged(FAST, followers=1))
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    cluster.sup.procs["follower-1"].crashes = 5  # the next restart waits 2**4 s (real time)
    kill9(cluster, "follower-1")
    for _ in range(8):  # 80 s of fake time: far past the 30 s grace period
        clock.advance(10)
        decision = await cluster.tick()
        assert not decision.actions
    assert not cluster.sup.procs["follower-1"].running  # still backing off
    m = member(cluster, "follower-1")
    assert not m.get("lastRepair") and m["reachable"] is False and "back-off" in m["divergence"]
    assert condition(cluster.status, "Progressing")["reason"] == "Scaling"


async def test_follower_with_a_tampered_aof_comes_back_equal_to_the_leader(make_cluster, clock):
    """A follower's AOF tampered with while it is down (a rogue record appended): restarted by
    the supervisor, it loads the rogue object, finds its file is no longer a prefix of the
    leader's, resyncs in full, and ends with the leader's aof_size and without the rogue."""
    cluster = await make_cluster(FAST)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")
    client(cluster, "leader").execute_command("SET", "fleet", "a", "POINT", 33, -115)
    kill9(cluster, "follower-1")
    aof = cluster.state.member_dir("follower-1") / "appendonly.aof"
    with open(aof, "ab") as fh:
        fh.write(b"*5\r\n$3\r\nSET\r\n$5\r\nrogue\r\n$1\r\nx\r\n$6\r\nSTRING\r\n$3\r\nbad\r\n")

    def healed():
        m = member(cluster, "follower-1")
        lead = member(cluster, "leader")
        f = client(cluster, "follower-1")
        return (m["reachable"] and m.get("caughtUp") and m.get("aofSize") == lead.get("aofSize")
                and f.execute_command("KEYS", "*") == [b"fleet"]  # the rogue key is gone
                and f.execute_command("EXISTS", "fleet", "a") == 1)

    await tick_until(cluster, healed, clock, what="follower-1 equal to the leader again")
    assert aof.read_bytes() == (cluster.state.member_dir("leader") / "appendonly.aof").read_bytes()
