"""The leader lease and the restart annotation with the real kopf operator against kmock's
emulated Kubernetes API (the only thing mocked: no kube-apiserver runs here) and real geoserver
processes standing in for the pods (tests/operator/opharness.py):

- the operator renews the leader's lease (it stays valid well past its own length);
- a switchover moves the lease to the next epoch (ConfigMap ``leaderEpoch``) and revokes the
  old leader's;
- a leader on a "partitioned node" (SIGSTOPped, its pod deleted but its process never killed)
  is failed over only once its lease lapsed: woken up, it refuses every write by itself;
- ``geo.geocluster.io/restart`` restarts every member, followers first, then a switchover,
  then the old leader, and is consumed.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from geocluster import probe
from opharness import (
    CM_KEY,
    NS,
    KopfEmulator,
    Operator,
    annotate,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    pod,
    pod_ip,
    requests,
    start_cluster,
    stats,
)  # fmt: skip
from test_ha_operator import HA_SPEC, Controller, write

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(120)]

PROMOTE = "geo.geocluster.io/promote"
RESTART = "geo.geocluster.io/restart"


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


async def lease(name: str) -> tuple[str | None, int | None]:
    s = await stats(pod_ip(name))
    return s.get("lease_state"), s.get("lease_epoch")


async def until_async(check, timeout: float = 20.0, what: str = "condition"):
    async with asyncio.timeout(timeout):
        while True:
            try:
                if result := await check():
                    return result
            except (probe.ProbeError, KeyError):
                pass
            await asyncio.sleep(0.1)


def epoch(api) -> int:
    return int(api.objects[CM_KEY]["data"].get("leaderEpoch") or 1)


async def test_the_operator_renews_the_lease_and_a_switchover_moves_it(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await until_async(lambda: _is(pod(0), "valid"), what="a lease on the leader")
    remaining = (await stats(pod_ip(pod(0))))["lease_remaining_ms"]
    await asyncio.sleep(2 * remaining / 1000)  # twice its length: only renewals keep it valid
    assert (await lease(pod(0)))[0] == "valid"
    await write(pod_ip(pod(0)), "before")
    first = epoch(api)
    await annotate(api, {PROMOTE: pod(1)})
    await eventually(lambda: gc_status(api)["lastFailover"]["result"] == "ok", what="switchover")
    assert epoch(api) == first + 1
    assert await lease(pod(1)) == ("valid", first + 1)
    assert await lease(pod(0)) == ("revoked", first + 1)
    async with probe.Client(f"{pod_ip(pod(0))}:9851") as c:
        with pytest.raises(probe.ProbeError, match=r"older than|revoked"):
            await c.command("LEASE", str(first), "60000")  # a stale operator cannot revive it
    await until_async(lambda: _writes(pod(1)), what="writes on the new leader")
    async with probe.Client(f"{pod_ip(pod(1))}:9851") as c:  # as if the ConfigMap were recreated
        await c.command("LEASE", "9", "60000")
    await eventually(lambda: epoch(api) == 9, what="the member's higher epoch adopted")
    assert (await lease(pod(1)))[0] == "valid"


async def _is(name: str, state: str) -> bool:
    return (await lease(name))[0] == state


async def _writes(name: str) -> bool:
    await write(pod_ip(name), "w")
    return True


async def test_a_partitioned_leader_that_keeps_running_never_takes_a_write(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await until_async(lambda: _is(pod(0), "valid"), what="a lease on the leader")
    for i in range(20):
        await write(pod_ip(pod(0)), f"t{i}")
    stopped = members.procs[pod(0)]
    os.kill(stopped.pid, signal.SIGSTOP)  # unreachable; no kubelet will ever kill it
    try:
        await eventually(lambda: gc_status(api).get("lastFailover", {}).get("result") == "ok",
                         timeout=40, what="failover")  # fmt: skip
    finally:
        os.kill(stopped.pid, signal.SIGCONT)  # the partition heals
    rec = gc_status(api)["lastFailover"]
    assert rec["old"] == pod(0) and rec["kind"] == "failover" and rec["behindBytes"] == 0
    assert requests(api, "DELETE", f"/pods/{pod(0)}")  # fenced on the API side too
    assert stopped.poll() is None  # ... but the process lives on, still leading
    assert not (await stats(pod_ip(pod(0)))).get("following")
    for _ in range(10):  # it refuses writes by its own clock: never two leaders
        with pytest.raises(probe.ProbeError, match="LEASE expired"):
            await write(pod_ip(pod(0)), "split-brain")
    await until_async(lambda: _writes(rec["new"]), what="writes on the new leader")
    assert await lease(rec["new"]) == ("valid", epoch(api))


async def test_restart_annotation_restarts_followers_first_then_switches_over(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await write(pod_ip(pod(0)), "before")
    await asyncio.sleep(1.1)  # the pods' creation second is over (timestamps have seconds)
    with Controller(api, members, 3) as controller:
        await annotate(api, {RESTART: "2026-12-02T10:00:00Z"})
        await eventually(lambda: events(api, "RestartCompleted"), timeout=60, what="restart done")
        assert sorted(controller.recreated) == [pod(0), pod(1), pod(2)]
    deleted = [r.url.path.rsplit("/", 1)[-1] for r in requests(api, "DELETE", "/pods/")]
    assert deleted == [pod(2), pod(1), pod(0)]  # followers (highest first), the old leader last
    assert RESTART not in annotations(api) and "geo.geocluster.io/restart-since" not in annotations(api)
    rec = gc_status(api)["lastFailover"]
    assert (rec["kind"], rec["old"], rec["result"]) == ("switchover", pod(0), "ok")
    steps = [(e["reason"], e["message"]) for e in events(api)
             if e["reason"] in ("PodUpdating", "SwitchoverStarted")]
    assert [r for r, _ in steps] == ["PodUpdating", "PodUpdating", "SwitchoverStarted", "PodUpdating"]
    assert all("restart requested" in m for r, m in steps if r == "PodUpdating")
    assert api.objects["v1/pods", NS, pod(0)]  # back, as a follower
    await eventually(lambda: condition(api, "Ready")["status"] == "True", timeout=30, what="Ready again")
