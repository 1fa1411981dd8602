"""Two real operator replicas with kopf peering: only the higher priority acts; the other takes
over when it goes. Mocked: only the Kubernetes API (kmock, see opharness.py); the members are
real geoserver processes, and the shrinks are counted on the leader's own /metrics."""

from __future__ import annotations

import logging
import re
import urllib.request

import pytest
from geocluster.handlers import SHRINK_ANNOTATION as SHRINK
from opharness import (
    LEADER_IP,
    KopfEmulator,
    Operator,
    annotate,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    start_cluster,
    status_refreshes,
)

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]
PEERING = "geocluster"
PEERING_KEY = ("kopf.dev/v1/clusterkopfpeerings", None, PEERING)


def leader_shrinks() -> int:
    """Successful AOFSHRINKs the leader ran, from its own Prometheus counter."""
    with urllib.request.urlopen(f"http://{LEADER_IP}:9851/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    found = re.search(r'^geoserver_aof_shrinks_total\{result="ok"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def peers(api) -> dict:
    return dict(api.objects[PEERING_KEY].get("status") or {})


async def test_only_the_higher_priority_replica_acts_and_the_other_takes_over(api, members, caplog):
    caplog.set_level(logging.INFO, logger="kopf")
    # kopf patches the peering object but never creates it (the chart ships it)
    await api.post(
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        json={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}},
    )
    low = await Operator(peering=PEERING, priority=100).start()
    high = Operator(peering=PEERING, priority=200)
    try:
        # kopf starts every replica paused until it has read the peering; let low read it alone
        # first, so that its pause for high is a transition it logs
        await eventually(lambda: "Resuming operations" in caplog.text, what="low alone and active")
        await high.start()
        await eventually(lambda: len(peers(api)) == 2, what="both replicas in the peering")
        await eventually(
            lambda: re.search(r"Pausing operations in favour of \[<Peer [^>]*priority=200", caplog.text),
            what="low pauses for high",
        )
        await start_cluster(api, members)
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")

        await annotate(api, {SHRINK: "1"})
        await eventually(lambda: gc_status(api)["lastShrink"]["result"] == "ok", what="the shrink")
        await eventually(lambda: SHRINK not in annotations(api), what="trigger consumed")
        await status_refreshes(api, 3)  # a paused replica acting late would show up by now
        assert leader_shrinks() == 1
        assert len(events(api, "ShrinkStarted")) == 1 and len(events(api, "ShrinkSucceeded")) == 1

        resumed = caplog.text.count("Resuming operations")
        await high.stop()  # leaves the peering on a clean exit; low resumes at once
        await eventually(lambda: len(peers(api)) == 1, what="high gone from the peering")
        await eventually(lambda: caplog.text.count("Resuming operations") > resumed, what="low resumes")
        await annotate(api, {SHRINK: "2"})
        await eventually(lambda: len(events(api, "ShrinkSucceeded")) == 2, what="low's shrink")
        assert leader_shrinks() == 2 and len(events(api, "ShrinkStarted")) == 2
    finally:
        await high.stop()
        await low.stop()
