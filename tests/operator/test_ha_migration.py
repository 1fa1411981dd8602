"""A v1alpha1 cluster (StatefulSets `<name>-leader` and `<name>-follower`, roles in their pod
templates) moves to the one StatefulSet without losing a write (docs/upgrade.md#to-one-statefulset):
the new pods follow the old leader, a switchover once all caught up, then the old StatefulSets go.

The real kopf operator runs against kmock's emulated Kubernetes API — the only thing mocked: it
has no controllers or garbage collector, so the test plays them — and real geoserver processes
stand in for the pods (opharness.py).
"""

from __future__ import annotations

import pytest
from geocluster import probe
from opharness import (
    CM_KEY,
    GC_URL,
    GROUP,
    NAME,
    NS,
    SPEC,
    VERSION,
    KopfEmulator,
    Operator,
    add_pod,
    events,
    eventually,
    gc_status,
    leading,
    pod,
    pod_ip,
    remove_pod,
    requests,
    start_member,
    stats,
)  # fmt: skip

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(90)]
STS = "apps/v1/statefulsets"
OLD_LEADER, OLD_FOLLOWER = f"{NAME}-leader-0", f"{NAME}-follower-0"


def legacy_sts(name: str, role: str) -> dict:
    labels = {"app.kubernetes.io/name": "geoserver", "app.kubernetes.io/instance": NAME,
              f"{GROUP}/role": role}  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"replicas": 1, "serviceName": f"{NAME}-members", "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": []}}}}  # fmt: skip


async def test_v1alpha1_statefulsets_migrate_to_one_without_losing_a_write(api, members):
    # the cluster as the previous operator version left it: a writable leader with data
    for name, role in ((f"{NAME}-leader", "leader"), (f"{NAME}-follower", "follower")):
        await api.post(f"/apis/apps/v1/namespaces/{NS}/statefulsets", json=legacy_sts(name, role))
    members.start(OLD_LEADER, pod_ip(OLD_LEADER))
    await add_pod(api, OLD_LEADER, pod_ip(OLD_LEADER), "leader")
    members.start(OLD_FOLLOWER, pod_ip(OLD_FOLLOWER), f"{pod_ip(OLD_LEADER)}:9851")
    await add_pod(api, OLD_FOLLOWER, pod_ip(OLD_FOLLOWER), "follower")
    written = [f"t{i}" for i in range(40)]
    async with probe.Client(f"{pod_ip(OLD_LEADER)}:9851") as c:
        for key in written:
            await c.command("SET", "fleet", key, "POINT", "33", "-115")

    op = await Operator().start()
    try:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
                "metadata": {"name": NAME, "namespace": NS}, "spec": SPEC}  # fmt: skip
        await api.post(GC_URL, json=body)
        # the new StatefulSet's pods follow the old leader, which the ConfigMap names
        await eventually(lambda: api.objects[CM_KEY]["data"]["leaderMember"] == OLD_LEADER, what="ConfigMap")
        await eventually(lambda: api.objects[STS, NS, NAME]["spec"]["replicas"] == 3, what="StatefulSet")
        for k in range(3):
            await start_member(api, members, pod(k))
        await eventually(lambda: gc_status(api).get("lastFailover", {}).get("result") == "ok",
                         timeout=30, what="the migration's switchover")  # fmt: skip
        rec = gc_status(api)["lastFailover"]
        assert (rec["kind"], rec["old"], rec["new"]) == ("switchover", OLD_LEADER, pod(0))
        assert rec["behindBytes"] == 0
        await eventually(lambda: len(requests(api, "DELETE", "/statefulsets/")) == 2, what="old ones deleted")
        assert sorted(r.url.path.rsplit("/", 1)[-1] for r in requests(api, "DELETE", "/statefulsets/")) == [
            f"{NAME}-follower", f"{NAME}-leader"]  # fmt: skip
        # the Event is posted after the deletes it reports: wait for it, then exactly one
        await eventually(lambda: events(api, "MigrationCompleted"), what="MigrationCompleted Event")
        (done,) = events(api, "MigrationCompleted")
        assert "PVCs are kept" in done["message"]
        for name in (OLD_LEADER, OLD_FOLLOWER):  # the garbage collector's part
            await remove_pod(api, members, name)
        await leading(pod_ip(pod(0)))
        await eventually(lambda: api.objects[CM_KEY]["data"]["leaderMember"] == pod(0), what="ConfigMap")
        async with probe.Client(f"{pod_ip(pod(0))}:9851") as c:
            await c.command("SET", "fleet", "after", "POINT", "33", "-115")
            for key in written:  # every acknowledged write of the old leader
                assert (await c.command("GET", "fleet", key))["ok"]
        await eventually(lambda: gc_status(api)["readyFollowers"] == 2, timeout=20, what="followers")
        for k in (1, 2):
            s = await stats(pod_ip(pod(k)))
            assert s["following"] == f"{pod_ip(pod(0))}:9851" and s["caught_up"]
        assert gc_status(api)["leader"] == pod(0)
    finally:
        await op.stop()
