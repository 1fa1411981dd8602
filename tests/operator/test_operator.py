"""The real kopf operator end to end, against kmock's emulated API and live member processes.

Only the Kubernetes API is emulated (see conftest.py); members are processes on 127.0.0.x:9851
reached through the Pod objects' podIP, exactly as the operator reaches pods in a cluster.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from geocluster import probe
from geocluster.spec import GROUP, PLURAL, VERSION
from opharness import KopfEmulator, Members, Operator

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]

NS, NAME = "ns1", "gc"
GC_URL = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
GC_KEY = (f"{GROUP}/{VERSION}/{PLURAL}", NS, NAME)
LEADER_IP = "127.0.0.2"
SPEC = {
    "followers": 2,
    "aofShrink": {"schedule": None},
    "followerResync": {"timeoutSeconds": 5},
    "divergence": {"gracePeriodSeconds": 1, "probeIntervalSeconds": 1, "toleranceBytes": 100},
}


async def eventually(check, timeout: float = 15.0, what: str = "condition", api=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _quiet():
            if result := check():
                return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last status: {_LAST.get('status')}")


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ in (KeyError, StopIteration, TypeError, IndexError)


_LAST: dict = {}


def gc_status(api) -> dict:
    _LAST["status"] = dict(api.objects[GC_KEY].get("status") or {})
    return _LAST["status"]


def member(api, name) -> dict:
    return next(m for m in gc_status(api)["members"] if m["name"] == name)


def condition(api, type_) -> dict:
    return next(c for c in gc_status(api)["conditions"] if c["type"] == type_)


async def stats(ip: str) -> dict:
    async with probe.Client(f"{ip}:9851") as c:
        return (await c.command("SERVER"))["stats"]


async def add_pod(api, name: str, ip: str, role: str) -> None:
    labels = {
        "app.kubernetes.io/name": "geoserver",
        "app.kubernetes.io/instance": NAME,
        f"{GROUP}/role": role,
    }
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "labels": labels},
           "status": {"podIP": ip, "phase": "Running"}}  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/pods", json=pod)


async def start_cluster(api, members: Members, spec=SPEC, **meta) -> None:
    """Play the StatefulSet controller: processes + Pod objects, then create the GeoCluster."""
    await asyncio.to_thread(members.start, f"{NAME}-leader-0", LEADER_IP)
    await add_pod(api, f"{NAME}-leader-0", LEADER_IP, "leader")
    for i in range(spec["followers"]):
        ip = f"127.0.0.{3 + i}"
        await asyncio.to_thread(members.start, f"{NAME}-follower-{i}", ip, f"{LEADER_IP}:9851")
        await add_pod(api, f"{NAME}-follower-{i}", ip, "follower")
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS, **meta}, "spec": spec}  # fmt: skip
    await api.post(GC_URL, json=body)


async def make_diverge(members: Members, name: str, ip: str) -> None:
    """Point a follower at a decoy leader with more data: caught up, but the wrong size.

    RESYNC cannot fix that (it resyncs from the decoy), so the ladder must go on to restart.
    """
    decoy = "127.0.0.9"
    await asyncio.to_thread(members.start, "decoy", decoy)
    if members.real:
        async with probe.Client(f"{decoy}:9851") as c:
            for i in range(200):
                await c.command("SET", "fleet", f"t{i}", "POINT", "33", "-115")
    else:
        async with probe.Client(f"{decoy}:9851") as c:
            await c.command("FAKE", "SET", "50000")
    async with probe.Client(f"{ip}:9851") as c:
        await c.command("FOLLOW", decoy, "9851")


def requests(api, method: str, path_part: str) -> list:
    return [r for r in api if r.method.value.upper() == method and path_part in str(r.url)]


def repairs(api) -> list[str]:
    """'<action> <member>' of every RepairStarted Event posted, in order."""
    events = [r.data for r in requests(api, "POST", "/events")]
    return [" ".join(e["message"].split()[:2]).rstrip(":") for e in events
            if e.get("reason") == "RepairStarted"]  # fmt: skip


async def test_create_makes_objects_and_status(api, members):
    op = await Operator().start()
    try:
        await start_cluster(api, members)
        await eventually(lambda: api.objects["apps/v1/statefulsets", NS, f"{NAME}-follower"])
        sts = api.objects["apps/v1/statefulsets", NS, f"{NAME}-follower"]
        assert sts["spec"]["replicas"] == 2
        assert sts["metadata"]["ownerReferences"][0]["uid"] == api.objects[GC_KEY]["metadata"]["uid"]
        for kind, name in [("v1/services", NAME), ("v1/services", f"{NAME}-readonly"),
                           ("v1/services", f"{NAME}-members"), ("v1/configmaps", f"{NAME}-config"),
                           ("policy/v1/poddisruptionbudgets", NAME)]:  # fmt: skip
            assert api.objects[kind, NS, name]["metadata"]["labels"]
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        st = gc_status(api)
        assert st["leader"] == f"{NAME}-leader-0" and st["readyFollowers"] == 2
        assert st["observedGeneration"] == 1 and st["phase"] == "Running"
        assert {m["role"] for m in st["members"]} == {"leader", "follower"}
        # scale out: update handler patches the followers StatefulSet; nothing else is rewritten
        posts = len(requests(api, "POST", "/statefulsets"))
        await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"followers": 3}})
        await eventually(
            lambda: api.objects["apps/v1/statefulsets", NS, f"{NAME}-follower"]["spec"]["replicas"] == 3
        )
        assert len(requests(api, "POST", "/statefulsets")) in (posts, posts + 2)
        assert not requests(api, "PATCH", "/configmaps/")
    finally:
        await op.stop()


async def test_scheduled_shrink_then_followers_resync(api, members):
    spec = {**SPEC, "aofShrink": {"schedule": "0 0 1 1 *"}}  # fired once since "last year"
    op = await Operator().start()
    try:
        await start_cluster(api, members, spec, creationTimestamp="2020-01-01T00:00:00Z")
        await eventually(lambda: gc_status(api)["lastShrink"]["result"] == "ok", what="shrink")
        shrink = gc_status(api)["lastShrink"]
        assert shrink["reason"] == "schedule" and shrink["sizeAfter"] <= shrink["sizeBefore"]
        await eventually(
            lambda: (
                gc_status(api)["lastResync"]["member"] == f"{NAME}-follower-1"
                and gc_status(api)["lastResync"]["result"] == "ok"
            ),
            what="both followers resynced",
        )
        for ip in ("127.0.0.3", "127.0.0.4"):
            follower = await stats(ip)
            assert follower["resyncs"] >= 1 and follower["caught_up"]
            assert follower["aof_size"] == (await stats(LEADER_IP))["aof_size"]
        assert (await stats(LEADER_IP))["last_shrink_result"] == "ok"
        reasons = [r.data.get("reason") for r in requests(api, "POST", "/events")]
        assert "ShrinkStarted" in reasons and "ShrinkSucceeded" in reasons
        assert reasons.count("ResyncSucceeded") == 2
    finally:
        await op.stop()


async def test_diverged_follower_resync_then_pod_delete(api, members):
    op = await Operator().start()
    try:
        await start_cluster(api, members)
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        await make_diverge(members, f"{NAME}-follower-0", "127.0.0.3")
        pod_url = f"/pods/{NAME}-follower-0"
        await eventually(lambda: requests(api, "DELETE", pod_url), what="pod delete")
        assert repairs(api) == ["resync gc-follower-0", "restart gc-follower-0"]
        assert member(api, f"{NAME}-follower-0")["lastRepair"]["action"] == "restart"
        # the StatefulSet controller's part: a fresh pod following the real leader
        members.stop(f"{NAME}-follower-0")
        await asyncio.to_thread(
            members.start, f"{NAME}-follower-0", "127.0.0.3", "127.0.0.2:9851", fresh=True
        )
        await add_pod(api, f"{NAME}-follower-0", "127.0.0.3", "follower")
        await eventually(lambda: member(api, f"{NAME}-follower-0")["lastRepair"]["result"] == "ok", what="ok")
        assert len(gc_status(api)["repairHistory"]) == 2
        assert condition(api, "Degraded")["status"] == "False"
    finally:
        await op.stop()


async def test_invalid_spec_is_a_condition_not_a_crash_loop(api, members):
    op = await Operator().start()
    try:
        bad = {**SPEC, "aofShrink": {"schedule": "every day"}, "folowers": 1}
        await api.post(GC_URL, json={"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
                                     "metadata": {"name": NAME, "namespace": NS}, "spec": bad})  # fmt: skip
        await eventually(lambda: condition(api, "Degraded")["reason"] == "InvalidSpec")
        message = condition(api, "Degraded")["message"]
        assert "spec.aofShrink.schedule" in message and "spec.folowers: unknown field" in message
        assert gc_status(api)["phase"] == "Invalid"
        await asyncio.sleep(1.5)  # several timer ticks later: still one Warning, no objects
        warnings = [r for r in requests(api, "POST", "/events") if r.data["reason"] == "InvalidSpec"]
        assert len(warnings) == 1
        assert not requests(api, "POST", "/statefulsets")
        # fixing the spec recovers
        await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"aofShrink": {"schedule": None},
                                                            "folowers": None}})  # fmt: skip
        await eventually(lambda: requests(api, "POST", "/statefulsets"), what="objects")
    finally:
        await op.stop()


async def test_operator_restart_mid_repair_does_not_repeat_it(api, members):
    spec = {**SPEC, "divergence": {**SPEC["divergence"], "gracePeriodSeconds": 2}}
    op = await Operator().start()
    await start_cluster(api, members, spec)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await make_diverge(members, f"{NAME}-follower-0", "127.0.0.3")
    await eventually(lambda: member(api, f"{NAME}-follower-0")["repairs"] == 1, what="repair 1")
    await eventually(lambda: repairs(api), what="the resync's Event")
    await op.stop()  # mid-repair: the resync was started and recorded, its outcome not yet seen
    op = await Operator().start()
    try:
        await eventually(lambda: requests(api, "DELETE", f"/pods/{NAME}-follower-0"), what="del")
        assert repairs(api) == ["resync gc-follower-0", "restart gc-follower-0"]  # no 2nd resync
        assert member(api, f"{NAME}-follower-0")["repairs"] == 2
    finally:
        await op.stop()
