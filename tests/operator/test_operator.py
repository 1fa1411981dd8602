"""The real kopf operator end to end, against kmock's emulated API and live member processes.

Only the Kubernetes API is emulated (see conftest.py); members are processes on 127.a.b.x:9851
reached through the Pod objects' podIP, exactly as the operator reaches pods in a cluster.
"""

from __future__ import annotations

import asyncio

import pytest
from geocluster.spec import GROUP, VERSION
from opharness import (
    GC_KEY,
    GC_URL,
    LEADER_IP,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    condition,
    eventually,
    gc_status,
    ip,
    make_diverge,
    member,
    repairs,
    requests,
    start_cluster,
    start_member,
    stats,
)  # fmt: skip

ROLE = "geo.geocluster.io/role"

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]


async def test_create_makes_objects_and_status(api, members):
    op = await Operator().start()
    try:
        await start_cluster(api, members)
        await eventually(lambda: api.objects["apps/v1/statefulsets", NS, NAME])
        sts = api.objects["apps/v1/statefulsets", NS, NAME]
        assert sts["spec"]["replicas"] == 3  # the leader and 2 followers
        assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
        assert sts["metadata"]["ownerReferences"][0]["uid"] == api.objects[GC_KEY]["metadata"]["uid"]
        for kind, name in [("v1/services", NAME), ("v1/services", f"{NAME}-readonly"),
                           ("v1/services", f"{NAME}-members"), ("v1/configmaps", f"{NAME}-config"),
                           ("policy/v1/poddisruptionbudgets", NAME)]:  # fmt: skip
            # the handler applies objects one by one: wait for each, not only the StatefulSet
            await eventually(lambda kind=kind, name=name: api.objects[kind, NS, name], what=name)
            assert api.objects[kind, NS, name]["metadata"]["labels"]
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        st = gc_status(api)
        assert st["leader"] == f"{NAME}-0" and st["readyFollowers"] == 2
        assert st["observedGeneration"] == 1 and st["phase"] == "Running"
        assert {m["role"] for m in st["members"]} == {"leader", "follower"}
        # the role labels the operator put on the pods, and the Services selecting them
        roles = {k: api.objects["v1/pods", NS, f"{NAME}-{k}"]["metadata"]["labels"][ROLE] for k in range(3)}
        assert roles == {0: "leader", 1: "follower", 2: "follower"}
        assert api.objects["v1/services", NS, NAME]["spec"]["selector"][ROLE] == "leader"
        assert api.objects["v1/services", NS, f"{NAME}-readonly"]["spec"]["selector"][ROLE] == "follower"
        data = api.objects["v1/configmaps", NS, f"{NAME}-config"]["data"]
        assert data["leaderMember"] == f"{NAME}-0" and data["leader"].startswith(f"{NAME}-0.{NAME}-members.")
        assert f"app.kubernetes.io/instance={NAME}" in st["selector"] and "follower" in st["selector"]
        # scale out: update handler patches the followers StatefulSet; nothing else is rewritten
        posts = len(requests(api, "POST", "/statefulsets"))
        await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"followers": 3}})
        await eventually(
            lambda: api.objects["apps/v1/statefulsets", NS, NAME]["spec"]["replicas"] == 4
        )
        assert len(requests(api, "POST", "/statefulsets")) in (posts, posts + 1)
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
                gc_status(api)["lastResync"]["member"] == f"{NAME}-2"
                and gc_status(api)["lastResync"]["result"] == "ok"
            ),
            what="both followers resynced",
        )
        for addr in (ip(3), ip(4)):
            follower = await stats(addr)
            assert follower["resyncs"] >= 1 and follower["caught_up"]
            assert follower["aof_size"] == (await stats(LEADER_IP))["aof_size"]
        assert (await stats(LEADER_IP))["last_shrink_result"] == "ok"
        reasons = [r.data.get("reason") for r in requests(api, "POST", "/events")]
        assert "ShrinkStarted" in reasons and "ShrinkSucceeded" in reasons
        assert reasons.count("ResyncSucceeded") == 2
    finally:
        await op.stop()


@pytest.mark.parametrize(
    ("decoy_objects", "finding"),
    [(200, "aof_size"), (0, "following")],  # the seed's size gap; equal sizes, wrong leader
    ids=["size-differs", "same-size-wrong-leader"],
)
async def test_diverged_follower_resync_then_pod_delete(api, members, decoy_objects, finding):
    op = await Operator().start()
    try:
        await start_cluster(api, members)
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        await make_diverge(members, f"{NAME}-1", ip(3), decoy_objects)
        await eventually(
            lambda: (member(api, f"{NAME}-1").get("divergence") or "").startswith(finding),
            what=f"a '{finding}' finding",
        )
        pod_url = f"/pods/{NAME}-1"
        await eventually(lambda: requests(api, "DELETE", pod_url), what="pod delete")
        await eventually(lambda: len(repairs(api)) == 2, what="the restart's Event (posted after acting)")
        assert repairs(api) == ["resync gc-1", "restart gc-1"]
        assert member(api, f"{NAME}-1")["lastRepair"]["action"] == "restart"
        # the StatefulSet controller's part: a fresh pod following the real leader
        members.stop(f"{NAME}-1")
        await start_member(api, members, f"{NAME}-1", fresh=True)
        await eventually(lambda: member(api, f"{NAME}-1")["lastRepair"]["result"] == "ok", what="ok")
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
    await make_diverge(members, f"{NAME}-1", ip(3))
    await eventually(lambda: member(api, f"{NAME}-1")["repairs"] == 1, what="repair 1")
    await eventually(lambda: repairs(api), what="the resync's Event")
    await op.stop()  # mid-repair: the resync was started and recorded, its outcome not yet seen
    op = await Operator().start()
    try:
        await eventually(lambda: requests(api, "DELETE", f"/pods/{NAME}-1"), what="del")
        await eventually(lambda: len(repairs(api)) == 2, what="the restart's Event")
        assert repairs(api) == ["resync gc-1", "restart gc-1"]  # no 2nd resync
        assert member(api, f"{NAME}-1")["repairs"] == 2
    finally:
        await op.stop()
