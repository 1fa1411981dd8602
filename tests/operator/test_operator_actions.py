"""Manual triggers, pausing, operator metrics and unreachable members, end to end.

The real kopf operator (tests/operator/opharness.py) runs against kmock's emulated Kubernetes
API — the only thing mocked — and real geoserver processes on 127.a.b.x:9851 (opharness.ip) stand in for pods.
"""

from __future__ import annotations

import asyncio

import pytest
from geocluster import probe
from opharness import (
    GC_KEY,
    GC_URL,
    LEADER_IP,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    add_pod,
    annotate,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    ip,
    make_diverge,
    member,
    requests,
    start_cluster,
    stats,
    status_refreshes,
)  # fmt: skip

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]

SHRINK, RESYNC, PAUSE = "geo.geocluster.io/shrink-now", "geo.geocluster.io/resync", "geo.geocluster.io/paused"
F0, F1 = f"{NAME}-1", f"{NAME}-2"


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


async def test_manual_shrink_and_resync_triggers(api, members, operator):
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    leader_before = await stats(LEADER_IP)

    # the annotation also wakes the update handler; make its re-apply slow, so that it finishes
    # after the timer has recorded (and finished) the shrink: it must not write back old status
    api.delays = (("GET", f"/configmaps/{NAME}-config", 1.0),)
    await annotate(api, {SHRINK: "1"})
    await eventually(lambda: gc_status(api)["lastShrink"]["result"] == "ok", what="manual shrink")
    assert gc_status(api)["lastShrink"]["reason"] == "manual"
    api.delays = ()
    assert SHRINK not in annotations(api)
    assert (await stats(LEADER_IP))["last_shrink_time"] > leader_before["last_shrink_time"]
    # afterShrink: both followers resynced, one at a time
    await eventually(
        lambda: gc_status(api)["lastResync"] == {**gc_status(api)["lastResync"], "member": F1, "result": "ok"}
        and not gc_status(api).get("pendingResyncs"),
        what="followers resynced after the shrink",
    )  # fmt: skip
    assert [e["message"].split()[1] for e in events(api, "ResyncStarted")] == [F0, F1]

    before = (await stats(ip(3)))["resyncs"]
    await annotate(api, {RESYNC: F0})
    await eventually(lambda: RESYNC not in annotations(api), what="resync annotation consumed")
    await eventually(lambda: gc_status(api)["lastResync"]["reason"] == "manual", what="manual resync")
    await eventually(lambda: gc_status(api)["lastResync"]["result"] == "ok", what="manual resync ok")
    assert gc_status(api)["lastResync"]["member"] == F0
    assert (await stats(ip(3)))["resyncs"] > before

    # a resync naming a non-member: one InvalidTrigger Warning, annotation removed, nothing done
    resyncs = [(await stats(ip))["resyncs"] for ip in (ip(3), ip(4))]
    started = len(events(api, "ResyncStarted"))
    await annotate(api, {RESYNC: "nobody-0"})
    await eventually(lambda: events(api, "InvalidTrigger"), what="InvalidTrigger")
    await eventually(lambda: RESYNC not in annotations(api), what="bad annotation consumed")
    await status_refreshes(api, 2)
    (warning,) = events(api, "InvalidTrigger")
    assert warning["type"] == "Warning" and "nobody-0" in warning["message"]
    assert len(events(api, "ResyncStarted")) == started
    assert [(await stats(ip))["resyncs"] for ip in (ip(3), ip(4))] == resyncs


async def test_paused_by_spec_or_annotation_takes_no_action_but_keeps_status_fresh(api, members, operator):
    await start_cluster(api, members, {**SPEC, "paused": True})
    await eventually(lambda: gc_status(api)["phase"] == "Paused", what="Paused")
    await make_diverge(members, F0, ip(3))
    await annotate(api, {SHRINK: "1"})
    leader_before = await stats(LEADER_IP)
    # FOLLOW's own full resync must be over before its counter is the baseline
    await eventually(lambda: member(api, F0)["divergence"].startswith("aof_size"), what="caught up, 2x")
    f0_resyncs = (await stats(ip(3)))["resyncs"]

    async def still_paused(why: str) -> None:
        # status keeps following the members while nothing is done to them
        async with probe.Client(f"{LEADER_IP}:9851") as c:
            await c.command("SET", "fleet", why, "POINT", "33", "-115")
        size = (await stats(LEADER_IP))["aof_size"]
        await eventually(lambda: gc_status(api)["leaderAofSize"] == size, what=f"fresh status ({why})")
        await eventually(lambda: member(api, F0)["divergence"], what=f"{F0} diverged ({why})")
        await status_refreshes(api, 2)  # > gracePeriodSeconds with the repair due all along
        assert member(api, F0)["divergedSince"] and member(api, F0)["reachable"]
        assert gc_status(api)["phase"] == "Paused"
        assert condition(api, "Progressing")["reason"] == "Paused"
        for reason in ("ShrinkStarted", "ResyncStarted", "RepairStarted"):
            assert not events(api, reason), reason
        assert not requests(api, "DELETE", "/pods/")
        assert SHRINK in annotations(api)  # manual triggers wait for the pause to end
        assert (await stats(LEADER_IP))["last_shrink_time"] == leader_before["last_shrink_time"]
        assert (await stats(ip(3)))["resyncs"] == f0_resyncs

    await still_paused("spec")
    await annotate(api, {PAUSE: "true"})
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"paused": False}})
    await eventually(lambda: api.objects[GC_KEY]["spec"]["paused"] is False)
    await still_paused("annotation")

    await annotate(api, {PAUSE: None})  # unpause: the due repair and the waiting shrink go ahead
    await eventually(lambda: events(api, "RepairStarted"), what="repair after unpause")
    await eventually(lambda: gc_status(api)["lastShrink"]["reason"] == "manual", what="shrink after unpause")
    await eventually(lambda: SHRINK not in annotations(api), what="shrink-now consumed")
    assert events(api, "RepairStarted")[0]["message"].startswith(f"resync {F0}")


def metric(name: str, **labels: str) -> float:
    """A sample from the prometheus_client registry the operator exports (0 if never set)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"namespace": NS, "cluster": NAME, **labels}) or 0.0


async def test_operator_metrics_after_a_shrink_and_a_repair(api, members, operator):
    names = {
        "shrink_ok": ("geocluster_shrinks_total", {"result": "ok"}),
        "shrink_err": ("geocluster_shrinks_total", {"result": "error"}),
        "resync_ok": ("geocluster_resyncs_total", {"result": "ok"}),
        "resync_started": ("geocluster_repairs_total", {"action": "resync", "result": "started"}),
        "resync_done": ("geocluster_repairs_total", {"action": "resync", "result": "ok"}),
        "restart_started": ("geocluster_repairs_total", {"action": "restart", "result": "started"}),
        "restart_ok": ("geocluster_repairs_total", {"action": "restart", "result": "ok"}),
        "probe_errors_f0": ("geocluster_probe_errors_total", {"member": F0}),
        "probe_errors_f1": ("geocluster_probe_errors_total", {"member": F1}),
    }
    base = {k: metric(n, **lb) for k, (n, lb) in names.items()}

    def delta() -> dict[str, float]:
        return {k: metric(n, **lb) - base[k] for k, (n, lb) in names.items()}

    await start_cluster(api, members)
    async with probe.Client(f"{LEADER_IP}:9851") as c:
        for i in range(20):  # some data, so that a ratio to the leader's aof_size exists
            await c.command("SET", "fleet", f"t{i % 5}", "POINT", "33", "-115")
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    await annotate(api, {SHRINK: "1"})
    await eventually(lambda: delta()["resync_ok"] == 2, what="shrink + 2 resyncs counted")
    assert delta() == {**dict.fromkeys(names, 0.0), "shrink_ok": 1, "resync_ok": 2}
    await eventually(lambda: metric("geocluster_divergence_ratio", member=F0) == 1.0, what="ratio 1")

    await make_diverge(members, F0, ip(3))
    await eventually(lambda: metric("geocluster_divergence_ratio", member=F0) > 1.5, what="ratio > 1.5")
    await eventually(lambda: requests(api, "DELETE", f"/pods/{F0}"), what="restart repair")
    members.stop(F0)  # the pod is gone until the StatefulSet recreates it
    await eventually(lambda: delta()["probe_errors_f0"] >= 1, what="probe error counted")
    await asyncio.to_thread(members.start, F0, ip(3), f"{LEADER_IP}:9851", fresh=True)
    await add_pod(api, F0, ip(3), "follower")
    await eventually(lambda: delta()["restart_ok"] == 1, what="restart ok counted")
    d = delta()
    assert d["resync_started"] == 1 and d["restart_started"] == 1
    assert d["resync_done"] == 1  # the resync ran (it just did not cure the divergence)
    assert d["shrink_ok"] == 1 and d["shrink_err"] == 0 and d["probe_errors_f1"] == 0
    assert metric("geocluster_divergence_ratio", member=F0) == 1.0
    assert metric("geocluster_divergence_ratio", member=F1) == 1.0


async def test_unreachable_member_is_a_finding_not_a_crash(api, members, operator):
    """A pod whose podIP has no geoserver listening: reachable=false, repaired after the grace
    period (the RESYNC cannot connect: ActionFailed; then the pod is deleted), timer unharmed."""
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    members.stop(F1)  # the pod object keeps its podIP; nothing listens there any more
    await eventually(lambda: member(api, F1)["reachable"] is False, what="reachable=false")
    assert (
        member(api, F1)["divergence"].startswith("unreachable") and "Connect" in member(api, F1)["divergence"]
    )
    assert condition(api, "Ready")["status"] == "False" and member(api, F0)["reachable"]
    await eventually(lambda: events(api, "ActionFailed"), what="RESYNC to a dead member fails")
    await eventually(lambda: requests(api, "DELETE", f"/pods/{F1}"), what="restart (pod delete)")
    await eventually(lambda: len(events(api, "RepairStarted")) == 2, what="the restart's Event")
    assert [e["message"].split(":")[0] for e in events(api, "RepairStarted")] == [
        f"resync {F1}",
        f"restart {F1}",
    ]
    assert "resync" in events(api, "ActionFailed")[0]["message"]
    await status_refreshes(api, 2)  # the timer keeps running
    assert not events(api, type_="Error")  # kopf posts handler failures as Error events
    assert member(api, F0)["reachable"] and member(api, F0).get("divergence") is None
    # the deleted pod is being recreated (no IP yet): waited for, not given up on
    assert member(api, F1)["lastRepair"] == {**member(api, F1)["lastRepair"], "result": "started"}
    assert condition(api, "Progressing")["reason"] == "Repairing" and not events(api, "RepairGaveUp")
