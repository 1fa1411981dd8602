"""The local runtime and a follower that refuses a full resync, with real geoserver processes
(only the clock is fake): the leader comes back on a wiped data dir with failover off, its
follower refuses to be wiped, and the cluster reports ResyncRefused instead of repairing it."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from local_lib import FAST, client, condition, member, merged, pid, tick_until

pytestmark = pytest.mark.timeout(120)

SPEC = merged(FAST, followers=1, failover={"enabled": False})
FOLLOWER = "follower-1"


async def test_follower_refusing_an_empty_leader_is_reported_never_restarted(make_cluster, clock):
    cluster = await make_cluster(SPEC)
    lead = cluster.sup.leader
    w = client(cluster, lead.name)
    for i in range(200):
        w.execute_command("SET", "fleet", f"t{i}", "POINT", 33, -115)
    await tick_until(cluster, lambda: any(m.num_objects == 200 and m.caught_up for m in cluster.members
                                          if m.name == FOLLOWER), clock, what="replicated")
    follower_pid = pid(cluster, FOLLOWER)
    os.kill(lead.popen.pid, signal.SIGKILL)
    lead.popen.wait(5)
    shutil.rmtree(cluster.state.member_dir(lead.name))  # a lost volume: a new, empty leader
    await tick_until(cluster, lambda: (member(cluster, FOLLOWER).get("divergence") or "")
                     .startswith("full resync refused"), clock, what="the refusal", timeout=40)

    events, actions = [], []
    for _ in range(40):  # 10 simulated minutes: many grace periods and ladder rungs
        clock.advance(15)
        decision = await cluster.tick()
        events += decision.events
        actions += decision.actions
    assert actions == [], actions  # no RESYNC, no restart
    assert pid(cluster, FOLLOWER) == follower_pid
    assert cluster.sup.procs[FOLLOWER].restarts == 0
    assert not {"RepairStarted", "RepairGaveUp"} & {e.reason for e in events}
    degraded = condition(cluster.status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ResyncRefused"), degraded
    assert "RESYNC FORCE" in degraded["message"]
    r = client(cluster, FOLLOWER)
    assert r.execute_command("SCAN", "fleet", "COUNT") == 200  # its data kept, and served

    r.execute_command("RESYNC", "FORCE")  # a person decides the leader is right
    await tick_until(cluster, lambda: condition(cluster.status, "Degraded")["status"] == "False"
                     and member(cluster, FOLLOWER).get("divergence") is None, clock,
                     what="back to normal", timeout=40)
    assert r.execute_command("SCAN", "fleet", "COUNT") == 0
    assert pid(cluster, FOLLOWER) == follower_pid
