"""Manual triggers, pausing, operator metrics and unreachable members, end to end.

The real kopf operator (tests/operator/opharness.py) runs against kmock's emulated Kubernetes
API — the only thing mocked — and real geoserver processes on 127.0.0.x:9851 stand in for pods.
"""

from __future__ import annotations

import pytest
from geocluster import probe
from opharness import (
    GC_KEY,
    GC_URL,
    LEADER_IP,
    NAME,
    SPEC,
    KopfEmulator,
    Operator,
    annotate,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    make_diverge,
    member,
    requests,
    start_cluster,
    stats,
    status_refreshes,
)  # fmt: skip

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]

SHRINK, RESYNC, PAUSE = "geo.geocluster.io/shrink-now", "geo.geocluster.io/resync", "geo.geocluster.io/paused"
F0, F1 = f"{NAME}-follower-0", f"{NAME}-follower-1"


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


async def test_manual_shrink_and_resync_triggers(api, members, operator):
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    leader_before = await stats(LEADER_IP)

    await annotate(api, {SHRINK: "1"})
    await eventually(lambda: gc_status(api)["lastShrink"]["result"] == "ok", what="manual shrink")
    assert gc_status(api)["lastShrink"]["reason"] == "manual"
    assert SHRINK not in annotations(api)
    assert (await stats(LEADER_IP))["last_shrink_time"] > leader_before["last_shrink_time"]
    # afterShrink: both followers resynced, one at a time
    await eventually(
        lambda: gc_status(api)["lastResync"] == {**gc_status(api)["lastResync"], "member": F1, "result": "ok"}
        and not gc_status(api).get("pendingResyncs"),
        what="followers resynced after the shrink",
    )  # fmt: skip
    assert [e["message"].split()[1] for e in events(api, "ResyncStarted")] == [F0, F1]

    before = (await stats("127.0.0.3"))["resyncs"]
    await annotate(api, {RESYNC: F0})
    await eventually(lambda: RESYNC not in annotations(api), what="resync annotation consumed")
    await eventually(lambda: gc_status(api)["lastResync"]["reason"] == "manual", what="manual resync")
    await eventually(lambda: gc_status(api)["lastResync"]["result"] == "ok", what="manual resync ok")
    assert gc_status(api)["lastResync"]["member"] == F0
    assert (await stats("127.0.0.3"))["resyncs"] > before

    # a resync naming a non-member: one InvalidTrigger Warning, annotation removed, nothing done
    resyncs = [(await stats(ip))["resyncs"] for ip in ("127.0.0.3", "127.0.0.4")]
    started = len(events(api, "ResyncStarted"))
    await annotate(api, {RESYNC: "nobody-0"})
    await eventually(lambda: events(api, "InvalidTrigger"), what="InvalidTrigger")
    await eventually(lambda: RESYNC not in annotations(api), what="bad annotation consumed")
    await status_refreshes(api, 2)
    (warning,) = events(api, "InvalidTrigger")
    assert warning["type"] == "Warning" and "nobody-0" in warning["message"]
    assert len(events(api, "ResyncStarted")) == started
    assert [(await stats(ip))["resyncs"] for ip in ("127.0.0.3", "127.0.0.4")] == resyncs


async def test_paused_by_spec_or_annotation_takes_no_action_but_keeps_status_fresh(api, members, operator):
    await start_cluster(api, members, {**SPEC, "paused": True})
    await eventually(lambda: gc_status(api)["phase"] == "Paused", what="Paused")
    await make_diverge(members, F0, "127.0.0.3")
    await annotate(api, {SHRINK: "1"})
    leader_before = await stats(LEADER_IP)
    f0_resyncs = (await stats("127.0.0.3"))["resyncs"]

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
        assert (await stats("127.0.0.3"))["resyncs"] == f0_resyncs

    await still_paused("spec")
    await annotate(api, {PAUSE: "true"})
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"paused": False}})
    await eventually(lambda: api.objects[GC_KEY]["spec"]["paused"] is False)
    await still_paused("annotation")

    await annotate(api, {PAUSE: None})  # unpause: the due repair and the waiting shrink go ahead
    await eventually(lambda: events(api, "RepairStarted"), what="repair after unpause")
    await eventually(lambda: gc_status(api)["lastShrink"]["reason"] == "manual", what="shrink after unpause")
    assert SHRINK not in annotations(api)
    assert events(api, "RepairStarted")[0]["message"].startswith(f"resync {F0}")
