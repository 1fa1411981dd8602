"""The README's "Try it" order, in-process over real geoserver members (fake clock only):
`geocluster resync follower-1`, then at once `redis-cli -p PORT FOLLOW no one` on it.

The resync is in flight when the follower stops following; nothing is judged while a resync is
in flight, so without help it could only wait out followerResync.timeoutSeconds (600 s by
default: ten minutes of "resync started", Progressing, Ready=False). The loop re-points the
member at the leader instead, and the resync settles as soon as it has caught up again."""

from __future__ import annotations

import asyncio

import pytest
from local_lib import FAST, client, condition, merged, tick_until

pytestmark = pytest.mark.timeout(90)


def ready(cluster) -> bool:
    return condition(cluster.status, "Ready").get("status") == "True"


async def test_follow_no_one_during_a_resync_is_refollowed_not_waited_out(make_cluster, clock):
    cluster = await make_cluster(merged(FAST, followers=1, followerResync={"timeoutSeconds": 600}))
    leader = client(cluster, "leader")
    for i in range(50):
        leader.execute_command("SET", "fleet", f"truck{i}", "POINT", 33 + i / 100, -115)
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready")

    cluster.state.request("resync", "follower-1")
    decision = await cluster.tick()
    assert [(a.kind, a.member) for a in decision.actions] == [("resync", "follower-1")]
    assert cluster.status["lastResync"]["result"] == "started"
    follower = client(cluster, "follower-1")
    follower.execute_command("FOLLOW", "no", "one")  # before any tick could see it caught up
    for _ in range(50):  # the follower has taken it (real time; the fake clock stands still)
        if b"following" not in follower.execute_command("SERVER"):
            break
        await asyncio.sleep(0.05)

    def settled():
        rec = cluster.status["lastResync"]
        return rec["result"] != "started" and rec

    # 1 s per tick: a few dozen ticks of fake time, far below the 600 s timeout
    rec = await tick_until(cluster, settled, clock, step=1, timeout=30, what="the resync settled")
    assert rec["result"] == "ok", rec
    leader_address = cluster.sup.leader.address
    assert next(m for m in cluster.members if m.name == "follower-1").following == leader_address
    await tick_until(cluster, lambda: ready(cluster), clock, what="Ready again")
    assert follower.execute_command("SCAN", "fleet", "COUNT") == 50
