"""High availability end to end: switchover by annotation, failover after the delay, the
ex-leader back as a follower, and pod-template updates that keep the leader writable.

The real kopf operator (tests/operator/opharness.py) runs against kmock's emulated Kubernetes
API — the only thing mocked: it has no StatefulSet controller or kubelet, so the tests play
them (:class:`Controller`: a deleted pod comes back, started as its ConfigMap says) — and real
geoserver processes on 127.a.b.x:9851 stand in for the pods.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis
from geocluster import probe
from opharness import (
    CM_KEY,
    GC_URL,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Members,
    Operator,
    annotate,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    leading,
    pod,
    pod_ip,
    remove_pod,
    requests,
    start_cluster,
    start_member,
    stats,
    status_refreshes,
)  # fmt: skip

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(90)]

PROMOTE = "geo.geocluster.io/promote"
ROLE = "geo.geocluster.io/role"
HA_SPEC = {**SPEC, "failover": {"delay": 2, "maxFailoversPerHour": 3}}


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


def role(api, name: str) -> str | None:
    obj = api.objects["v1/pods", NS, name]
    return None if obj.deleted else obj["metadata"]["labels"].get(ROLE)


def in_step(api) -> bool:
    st = gc_status(api)
    return st["readyFollowers"] == 2 and all(m.get("aofSize") == st["leaderAofSize"] for m in st["members"])


def roles(api, count: int = 3) -> dict[str, str | None]:
    return {pod(k): role(api, pod(k)) for k in range(count)}


async def write(address: str, key: str) -> None:
    async with probe.Client(f"{address}:9851") as c:
        await c.command("SET", "fleet", key, "POINT", "33", "-115")


async def following(name: str, leader: str) -> bool:
    s = await stats(pod_ip(name))
    return s.get("following") == f"{pod_ip(leader)}:9851" and s["caught_up"]


async def refuses_writes(address: str) -> bool:
    try:
        await write(address, "probe-write")
    except probe.ProbeError as exc:
        return "not the leader" in str(exc) or "read only" in str(exc)
    return False


class Controller:
    """The StatefulSet controller and kubelet: a member pod the operator deleted comes back
    (same volume) from the current template, following the leader its ConfigMap names now."""

    def __init__(self, api, members: Members, count: int):
        self.api, self.members, self.count = api, members, count
        self.recreated: list[str] = []
        self.task: asyncio.Task | None = None

    def gone(self, name: str) -> bool:
        try:
            return self.api.objects["v1/pods", NS, name].deleted
        except KeyError:
            return True

    async def run(self) -> None:
        while True:
            for k in range(self.count):
                if self.gone(pod(k)):
                    self.members.stop(pod(k))
                    await start_member(self.api, self.members, pod(k))
                    self.recreated.append(pod(k))
            await asyncio.sleep(0.1)

    def __enter__(self) -> Controller:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def test_switchover_by_annotation_moves_labels_services_and_status(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    assert roles(api) == {pod(0): "leader", pod(1): "follower", pod(2): "follower"}
    acknowledged = []
    for i in range(50):
        await write(pod_ip(pod(0)), f"t{i}")
        acknowledged.append(f"t{i}")

    await annotate(api, {PROMOTE: pod(2)})
    await eventually(lambda: gc_status(api)["leader"] == pod(2), what="status.leader moved")
    rec = gc_status(api)["lastFailover"]
    assert (rec["kind"], rec["old"], rec["new"], rec["result"]) == ("switchover", pod(0), pod(2), "ok")
    assert rec["behindBytes"] == 0 and rec["writePauseMs"] >= 0
    assert PROMOTE not in annotations(api)
    # the write Service (role=leader) now selects only the new leader, the read one the others
    await eventually(lambda: roles(api) == {pod(0): "follower", pod(1): "follower", pod(2): "leader"},
                     what="role labels flipped")  # fmt: skip
    await eventually(lambda: api.objects[CM_KEY]["data"]["leaderMember"] == pod(2), what="ConfigMap")
    await leading(pod_ip(pod(2)))
    await write(pod_ip(pod(2)), "after")
    assert await refuses_writes(pod_ip(pod(0)))  # the old leader is a follower now
    for k in (0, 1):  # re-pointed after the new view was recorded: the old leader last
        await eventually_async(lambda k=k: following(pod(k), pod(2)))
    async with probe.Client(f"{pod_ip(pod(0))}:9851") as c:  # zero acknowledged writes lost
        for key in [*acknowledged, "after"]:
            assert (await c.command("GET", "fleet", key))["ok"]
    (started,) = events(api, "SwitchoverStarted")
    assert started["type"] == "Normal" and f"{pod(0)} -> {pod(2)}" in started["message"]
    assert events(api, "SwitchoverSucceeded")

    # a promote of something that is not a follower: one Warning, consumed, nothing moves
    await annotate(api, {PROMOTE: "nobody-7"})
    await eventually(lambda: events(api, "InvalidTrigger"), what="InvalidTrigger")
    await eventually(lambda: PROMOTE not in annotations(api), what="consumed")
    assert gc_status(api)["leader"] == pod(2) and len(events(api, "SwitchoverStarted")) == 1


async def test_leader_gone_fails_over_after_the_delay_and_returns_as_follower(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    for i in range(30):
        await write(pod_ip(pod(0)), f"t{i}")
    await eventually(lambda: in_step(api), what="all in step")

    await remove_pod(api, members, pod(0))  # its node is gone: no process, no Pod object
    await eventually(lambda: gc_status(api)["leaderWatch"].get("failingSince"), what="failing")
    assert gc_status(api)["leader"] == pod(0)  # the delay first: not at once
    await eventually(lambda: gc_status(api).get("lastFailover", {}).get("result") == "ok",
                     timeout=20, what="failover")  # fmt: skip
    rec = gc_status(api)["lastFailover"]
    assert rec["kind"] == "failover" and rec["old"] == pod(0) and rec["new"] in (pod(1), pod(2))
    assert rec["behindBytes"] == 0  # both followers had every byte the leader was last seen with
    new = rec["new"]
    assert gc_status(api)["leader"] == new  # recorded first, then the ConfigMap and labels follow
    await eventually(lambda: api.objects[CM_KEY]["data"]["leaderMember"] == new, what="ConfigMap")
    await eventually(lambda: role(api, new) == "leader", what="the new leader's label")
    await write(pod_ip(new), "after-failover")
    (warning,) = events(api, "FailoverStarted")
    assert warning["type"] == "Warning" and "unreachable" in warning["message"]

    # the old leader's pod comes back (same volume): it follows the new leader, never leads
    await start_member(api, members, pod(0))
    assert await refuses_writes(pod_ip(pod(0)))
    await eventually(lambda: role(api, pod(0)) == "follower", what="labelled follower")
    other = ({pod(1), pod(2)} - {new}).pop()
    await eventually(lambda: gc_status(api)["readyFollowers"] == 2, timeout=20, what="back in step")
    for name in (pod(0), other):
        await eventually_async(lambda name=name: following(name, new))
    assert await refuses_writes(pod_ip(pod(0)))
    async with probe.Client(f"{pod_ip(pod(0))}:9851") as c:
        assert (await c.command("GET", "fleet", "after-failover"))["ok"]
    assert gc_status(api)["leader"] == new and len(events(api, "FailoverStarted")) == 1


async def test_leader_back_empty_is_failed_over_not_followed(api, members, operator):
    """The leader's pod returns at once but on an empty volume (a lost PVC): it is not made the
    leader (its followers hold data it lacks), and after the delay the best follower is
    promoted; the empty one then follows it and gets the data."""
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    for i in range(30):
        await write(pod_ip(pod(0)), f"t{i}")
    await eventually(lambda: in_step(api), what="all in step")
    await remove_pod(api, members, pod(0))
    await start_member(api, members, pod(0), fresh=True)  # same name, empty data dir
    await eventually(lambda: gc_status(api).get("lastFailover", {}).get("result") == "ok",
                     timeout=20, what="failover away from the empty leader")  # fmt: skip
    rec = gc_status(api)["lastFailover"]
    assert rec["kind"] == "failover" and rec["old"] == pod(0) and rec["new"] in (pod(1), pod(2))
    assert not events(api, "LeaderStarted")[1:]  # only at creation: the empty one never led
    new = rec["new"]
    async with probe.Client(f"{pod_ip(pod(0))}:9851") as c:
        await eventually_async(lambda: c.command("GET", "fleet", "t29"), timeout=20)
    assert (await stats(pod_ip(pod(0))))["following"] == f"{pod_ip(new)}:9851"
    assert await refuses_writes(pod_ip(pod(0)))


async def test_failover_disabled_waits_for_the_leader(api, members, operator):
    spec = {**HA_SPEC, "failover": {"enabled": False, "delay": 1}}
    await start_cluster(api, members, spec)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await remove_pod(api, members, pod(0))
    await eventually(lambda: condition(api, "Ready")["reason"] == "LeaderUnavailable", what="not Ready")
    await asyncio.sleep(2.5)  # past the delay: nothing may be promoted
    assert gc_status(api)["leader"] == pod(0) and not events(api, "FailoverStarted")
    await start_member(api, members, pod(0))  # back with its data: it leads again
    await leading(pod_ip(pod(0)))
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready again")


async def test_template_change_updates_followers_first_then_switches_over(api, members, operator):
    await start_cluster(api, members, HA_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await write(pod_ip(pod(0)), "before")
    with Controller(api, members, 3) as controller:
        await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"resources": {"limits": {"memory": "1Gi"}}}})
        await eventually(lambda: gc_status(api).get("lastFailover", {}).get("result") == "ok",
                         timeout=40, what="the switchover of the update")  # fmt: skip
        await eventually(lambda: len(controller.recreated) == 3
                         and condition(api, "Ready")["status"] == "True",
                         timeout=40, what="every pod updated")  # fmt: skip
    deleted = [r.url.path.rsplit("/", 1)[-1] for r in requests(api, "DELETE", "/pods/")]
    assert deleted == [pod(2), pod(1), pod(0)]  # the followers (highest first), the old leader last
    rec = gc_status(api)["lastFailover"]
    assert (rec["kind"], rec["old"], rec["reason"]) == ("switchover", pod(0), "requested")
    assert rec["new"] in (pod(1), pod(2))
    switched = [e["reason"] for e in events(api) if e["reason"] in ("PodUpdating", "SwitchoverStarted")]
    assert switched == ["PodUpdating", "PodUpdating", "SwitchoverStarted", "PodUpdating"]
    want = api.objects["apps/v1/statefulsets", NS, NAME]["spec"]["template"]["metadata"]["annotations"]
    for k in range(3):
        assert api.objects["v1/pods", NS, pod(k)]["metadata"]["annotations"] == want
    # the leader was writable all along but for the switchover's pause
    leader = gc_status(api)["leader"]
    await write(pod_ip(leader), "after")
    async with aioredis.Redis(host=pod_ip(pod(0)), port=9851, protocol=2) as r:
        await eventually_async(lambda: r.execute_command("GET", "fleet", "after"))


async def eventually_async(call, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(Exception):
                if await call():
                    return
            await asyncio.sleep(0.1)


async def test_supervised_update_waits_for_a_persons_switchover(api, members, operator):
    spec = {**HA_SPEC, "failover": {**HA_SPEC["failover"], "primaryUpdateStrategy": "supervised"}}
    await start_cluster(api, members, spec)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    with Controller(api, members, 3) as controller:
        await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"image": "geoserver:next"}})
        await eventually(lambda: events(api, "LeaderUpdatePending"), timeout=40, what="waiting for a person")
        assert sorted(controller.recreated) == [pod(1), pod(2)]  # the followers only
        await status_refreshes(api, 3)
        assert gc_status(api)["leader"] == pod(0) and not events(api, "SwitchoverStarted")
        await annotate(api, {PROMOTE: pod(1)})
        await eventually(lambda: len(controller.recreated) == 3 and gc_status(api)["leader"] == pod(1),
                         timeout=40, what="switched over, then the old leader updated")  # fmt: skip
    deleted = [r.url.path.rsplit("/", 1)[-1] for r in requests(api, "DELETE", "/pods/")]
    assert deleted == [pod(2), pod(1), pod(0)]
