"""probe.py against a real geoserver process (or the fake, see opharness) and a dead address."""

from __future__ import annotations

import pytest
from geocluster import probe
from opharness import ip


async def test_unreachable_member_is_a_finding_not_an_exception():
    m = await probe.observe("gc-follower-0", "follower", "127.0.0.1:1", timeout=0.5)
    assert m.reachable is False and m.error and m.aof_size is None
    m = await probe.observe("gc-follower-1", "follower", None)
    assert m.reachable is False and m.error == "no pod IP yet"


async def test_observe_leader_and_follower(members):
    members.start("l", ip(20))
    members.start("f", ip(21), follow=f"{ip(20)}:9851")
    leader = await probe.observe("l", "leader", f"{ip(20)}:9851")
    assert leader.reachable and leader.aof_size is not None and leader.caught_up is None
    with pytest.raises(probe.ProbeError):
        await probe.send(f"{ip(20)}:9851", "RESYNC")  # a leader refuses RESYNC
    assert (await probe.send(f"{ip(20)}:9851", "AOFSHRINK"))["ok"] is True
    follower = await probe.observe("f", "follower", f"{ip(21)}:9851")
    assert follower.reachable and follower.following == f"{ip(20)}:9851"
    assert follower.caught_up in (True, False) and follower.resyncs is not None


async def test_refused_connection_fails_fast_with_its_cause():
    """redis-py retries by default (3x, backoff): a refused member then looked like a timeout
    after the whole probe timeout, and a RESYNC to it took seconds."""
    import time

    start = time.monotonic()
    m = await probe.observe("gc-follower-0", "follower", f"{ip(30)}:9851", timeout=3)
    assert "Connect call failed" in m.error or "refused" in m.error.lower()
    with pytest.raises(probe.ProbeError, match="ConnectionError"):
        await probe.send(f"{ip(30)}:9851", "RESYNC")
    assert time.monotonic() - start < 1.0


async def test_connection_is_closed_when_auth_or_output_fails(monkeypatch):
    """__aexit__ does not run if __aenter__ raises: the client must close itself there."""
    closed: list[bool] = []

    async def refuse(self, *args):
        raise probe.ProbeError("WRONGPASS")

    monkeypatch.setattr(probe.Client, "command", refuse)
    client = probe.Client("127.0.0.1:1", password="x")

    async def aclose():
        closed.append(True)

    monkeypatch.setattr(client._redis, "aclose", aclose)
    with pytest.raises(probe.ProbeError):
        async with client:
            pass
    assert closed == [True]


async def test_observe_reports_hooks_and_the_queue(members):
    """A hook whose endpoint is down keeps its event queued: the probe reports the hook and
    channel count and the queue depth that status.hooks / status.pendingEvents show."""
    members.start("l", ip(22))
    addr = f"{ip(22)}:9851"
    await probe.send(addr, "SETHOOK", "h1", "http://127.0.0.1:1/down", "NEARBY", "fleet", "FENCE",
                     "POINT", "33", "-115", "5000")
    await probe.send(addr, "SETCHAN", "c1", "NEARBY", "fleet", "FENCE", "POINT", "33", "-115", "5000")
    await probe.send(addr, "SET", "fleet", "truck", "POINT", "33", "-115")
    leader = await probe.observe("l", "leader", addr)
    assert leader.num_hooks == 2
    assert leader.pending_events is not None and leader.pending_events >= 1
