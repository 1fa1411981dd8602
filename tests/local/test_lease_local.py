"""The leader lease in the local runtime, with real processes on the real clock: the healthy
leader holds a valid lease at the cluster's epoch; a switchover moves it to the new leader at
the next epoch and revokes the old one's; a SIGSTOPped leader has stopped taking writes (its
lease lapsed) before the runtime kills it and promotes a follower."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from test_failover import SPEC, last_failover, running, until  # noqa: F401  (running: a fixture)

pytestmark = pytest.mark.timeout(240)


def stats(port: int) -> dict:
    r = redis.Redis(port=port, protocol=2, socket_timeout=5)
    flat = r.execute_command("SERVER")
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def epoch(cluster) -> int:
    return cluster.state.read_cluster()["leaderEpoch"]


async def test_leader_holds_a_lease_and_a_switchover_moves_it_to_the_next_epoch(running):  # noqa: F811
    cluster = await running(SPEC)
    lead = cluster.sup.leader
    first = epoch(cluster)
    await until(lambda: stats(lead.port).get("lease_state") == b"valid", 10, "a lease on the leader")
    assert int(stats(lead.port)["lease_epoch"]) == first
    for p in cluster.sup.procs.values():
        if p is not lead:
            assert "lease_state" not in stats(p.port)  # followers are never given one
    cluster.state.request("promote", "follower-1")
    cluster.wake.set()
    await until(lambda: last_failover(cluster).get("result") == "ok", 20, "switchover")
    new = cluster.sup.procs["follower-1"]
    assert epoch(cluster) == first + 1
    assert (stats(new.port)["lease_state"], int(stats(new.port)["lease_epoch"])) == (b"valid", first + 1)
    old = stats(lead.port)
    assert (old["lease_state"], int(old["lease_epoch"])) == (b"revoked", first + 1)
    r = redis.Redis(port=lead.port, protocol=2)
    with pytest.raises(redis.ResponseError, match=r"lease epoch .* (older|revoked)"):
        r.execute_command("LEASE", str(first), "60000")  # a stale renewal cannot revive it
    redis.Redis(port=new.port, protocol=2).execute_command("SET", "fleet", "a", "POINT", 1, 1)


async def test_stopped_leader_has_stopped_taking_writes_before_it_is_killed(running):  # noqa: F811
    cluster = await running(SPEC)
    lead = cluster.sup.leader
    await until(lambda: stats(lead.port).get("lease_state") == b"valid", 10, "a lease on the leader")
    seen: list[object] = []
    kill = cluster._kill

    async def kill_after_a_look(p):
        # the partition heals for a moment just before the STONITH: the old leader, awake,
        # must refuse writes by its own clock (the lease), not because it was killed
        os.kill(p.popen.pid, signal.SIGCONT)
        r = redis.Redis(port=p.port, protocol=2, socket_timeout=5)
        try:
            r.execute_command("SET", "fleet", "split-brain", "POINT", 1, 1)
            seen.append("OK")
        except redis.ResponseError as exc:
            seen.append(str(exc))
        seen.append(stats(p.port)["lease_state"])
        return await kill(p)

    cluster._kill = kill_after_a_look
    os.kill(lead.popen.pid, signal.SIGSTOP)
    await until(lambda: last_failover(cluster).get("result") == "ok", 30, "failover")
    assert last_failover(cluster)["old"] == "leader" and cluster.sup.leader is not lead
    assert len(seen) == 2 and str(seen[0]).startswith("LEASE expired") and seen[1] == b"expired", seen
