"""Switchover and failover of the local runtime: the real control loop (real clock) over real
geoserver processes, under a Writer that logs every acknowledged write.

- switchover (`promote`) 10 times in a row: 0 acknowledged writes lost;
- kill -9 of the leader: a follower takes writes within delay + 10 s, lost acknowledged writes
  within the reported bound (lastFailover.behindBytes), every member ends with the same AOF;
- SIGSTOP of the leader (a partition stand-in): fenced, after SIGCONT it never takes a write;
- `geocluster promote` and `status`, and `up` resuming with the new leader.
- a leader back on an empty data dir: failed over, not followed.
Thresholds are generous: two shared cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from geocluster.local import LocalCluster
from geocluster.localstate import StateDir
from local_lib import FAST, Writer, manifest, merged, write_manifest

pytestmark = pytest.mark.timeout(240)

DELAY = 2
SPEC = merged(FAST, failover={"delay": DELAY, "maxFailoversPerHour": 10},
              divergence={"gracePeriodSeconds": 20})
ORDER = ["leader", "follower-1", "follower-2"]
MIN_RECORD = 40  # bytes of the smallest `SET fleet w<n> POINT ..` record in the AOF


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (redis.RedisError, KeyError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await running(spec)``: a started cluster whose loop runs on the real clock."""
    clusters: list[tuple[LocalCluster, asyncio.Event, asyncio.Task]] = []

    async def start(spec: dict[str, Any]) -> LocalCluster:
        cluster = LocalCluster(manifest(tmp_path, spec), StateDir(tmp_path / "state"))
        await cluster.start()
        stopping = asyncio.Event()
        clusters.append((cluster, stopping, asyncio.create_task(cluster.run(stopping))))
        await until(lambda: healthy(cluster), 30, "Ready")
        return cluster

    yield start
    for cluster, stopping, task in clusters:
        stopping.set()
        await task
        await cluster.stop()


def healthy(cluster: LocalCluster) -> bool:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in cluster.status.get("conditions", []))
    return ready and all(m.reachable and (m.role == "leader" or m.caught_up) for m in cluster.members)


def last_failover(cluster: LocalCluster) -> dict[str, Any]:
    return cluster.status.get("lastFailover") or {}


def identical_aofs(cluster: LocalCluster) -> bool:
    files = [(cluster.state.member_dir(n) / "appendonly.aof").read_bytes() for n in cluster.sup.procs]
    return all(f == files[0] for f in files)


async def settled(cluster: LocalCluster, writer: Writer) -> None:
    """Writer stopped, every member caught up and with the same AOF bytes."""
    writer.stop()
    await until(lambda: healthy(cluster) and identical_aofs(cluster), 60, "identical members")


async def test_repeated_switchovers_lose_no_acknowledged_write(running):
    cluster = await running(SPEC)
    writer = Writer(cluster)
    writer.start()
    await until(lambda: len(writer.acked) > 200, 10, "writes")
    pauses = []
    for _ in range(10):
        old = cluster.sup.leader.name
        target = ORDER[(ORDER.index(old) + 1) % len(ORDER)]  # each member leads in turn
        before = time.monotonic()
        cluster.state.request("promote", target)
        cluster.wake.set()
        await until(lambda: last_failover(cluster).get("new") == target  # noqa: B023
                    and last_failover(cluster).get("result") == "ok", 20, f"switchover to {target}")
        assert cluster.sup.leader.name == target and cluster.state.read_cluster()["leader"] == target
        rec = last_failover(cluster)
        assert rec["kind"] == "switchover" and rec["old"] == old and rec["behindBytes"] == 0
        await until(lambda: healthy(cluster) and writer.acked[-1][2] == target, 20,  # noqa: B023
                    "writes on the new leader, all followers caught up")
        pauses.append((rec["writePauseMs"], writer.longest_gap(before, time.monotonic())))
    await settled(cluster, writer)
    assert writer.lost(cluster.sup.leader.port) == []
    assert len(writer.acked) > 200  # clients saw the pause as `read only` / `not the leader`:
    assert {"read only", "not the leader"} & set(writer.errors), writer.errors
    assert all(ms < 5000 for ms, _ in pauses), pauses
    # the old leaders are followers now: they refuse writes
    for p in cluster.sup.procs.values():
        if p.role == "follower":
            r = redis.Redis(port=p.port, protocol=2)
            with pytest.raises(redis.ResponseError, match="not the leader"):
                r.execute_command("SET", "fleet", "x", "POINT", 1, 1)


async def test_killed_leader_fails_over_within_delay_and_loss_is_bounded(running):
    cluster = await running(SPEC)
    writer = Writer(cluster)
    writer.start()
    bound = 0
    for _ in range(3):
        await until(lambda: healthy(cluster) and len(writer.acked) > 100, 60, "healthy and writing")
        old = cluster.sup.leader
        killed_at = time.monotonic()
        os.kill(old.popen.pid, signal.SIGKILL)
        first = await until(lambda: writer.first_ack_after(killed_at, not_by=old.name),  # noqa: B023
                            DELAY + 10, "a new leader taking writes")
        assert first[1] - killed_at < DELAY + 10
        rec = last_failover(cluster)
        assert rec["kind"] == "failover" and rec["old"] == old.name and rec["result"] == "ok"
        assert rec["new"] == cluster.sup.leader.name != old.name
        bound += rec["behindBytes"]
        await until(lambda: cluster.sup.procs[old.name].running, 10, "the ex-leader restarted")  # noqa: B023
        assert cluster.sup.procs[old.name].role == "follower"
    await settled(cluster, writer)
    lost = writer.lost(cluster.sup.leader.port)
    assert len(lost) * MIN_RECORD <= bound, (lost, bound)


async def test_stopped_leader_is_fenced_and_never_takes_a_write_after_sigcont(running):
    cluster = await running(SPEC)
    writer = Writer(cluster)
    writer.start()
    await until(lambda: len(writer.acked) > 100, 10, "writes")
    old = cluster.sup.leader
    old_pid, old_port = old.popen.pid, old.port
    os.kill(old_pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    await until(lambda: last_failover(cluster).get("result") == "ok", DELAY + 20, "failover")
    assert last_failover(cluster)["old"] == old.name and cluster.sup.leader is not old
    await until(lambda: writer.first_ack_after(stopped_at, not_by=old.name), 10, "writes on the new leader")
    with contextlib.suppress(ProcessLookupError):
        os.kill(old_pid, signal.SIGCONT)  # the partition heals
    resumed = time.monotonic()
    await until(lambda: cluster.sup.procs[old.name].running, 10, "the ex-leader back")
    assert cluster.sup.procs[old.name].popen.pid != old_pid  # the stopped process was killed
    r = redis.Redis(port=old_port, protocol=2, socket_timeout=5)
    for _ in range(20):  # from start-up on it is a follower: never `OK`
        with pytest.raises(redis.RedisError):
            r.execute_command("SET", "fleet", "fenced", "POINT", 1, 1)
        await asyncio.sleep(0.1)
    assert all(a[2] != old.name for a in writer.acked if a[1] > stopped_at + 1)  # 1 s: acks in flight
    assert resumed > stopped_at
    await settled(cluster, writer)
    assert len(writer.lost(cluster.sup.leader.port)) * MIN_RECORD <= last_failover(cluster)["behindBytes"]


def test_cli_promote_status_and_up_resumes_with_the_new_leader(tmp_path):
    """`geocluster promote` as a subprocess against a running `up`; status shows the new leader
    and lastFailover; after Ctrl-C a new `up` resumes with that leader, data intact."""
    from test_cli import geocluster, start_up, wait_ready

    manifest = write_manifest(tmp_path / "geocluster.yaml", SPEC, name="fo")
    state = tmp_path / "state"

    def port_of(name: str) -> int:
        info = json.loads((state / "cluster.json").read_text())
        return next(m["port"] for m in info["members"] if m["name"] == name)

    up = start_up(manifest, state)
    try:
        wait_ready(state)
        redis.Redis(port=port_of("leader")).execute_command("SET", "fleet", "kept", "POINT", 33, -115)
        bad = geocluster("promote", "leader", "--state-dir", str(state), check=False)
        assert bad.returncode == 1 and "not a follower" in bad.stderr
        out = geocluster("promote", "follower-2", "--state-dir", str(state)).stdout
        assert "switchover leader -> follower-2: ok" in out and "0 bytes behind" in out
        st = wait_ready(state)
        assert st["leader"] == "follower-2" and st["lastFailover"]["kind"] == "switchover"
        table = geocluster("status", "--state-dir", str(state)).stdout
        assert "leader follower-2" in table and "last switchover" in table
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)
        up = start_up(manifest, state)
        st = wait_ready(state)
        assert st["leader"] == "follower-2"
        info = json.loads((state / "cluster.json").read_text())
        assert info["leader"] == "follower-2"
        assert {m["name"]: m["role"] for m in info["members"]}["leader"] == "follower"
        r = redis.Redis(port=port_of("follower-2"), protocol=2)
        r.response_callbacks.clear()
        assert r.execute_command("GET", "fleet", "kept")
        r.execute_command("SET", "fleet", "after", "POINT", 33, -115)  # the resumed leader takes writes
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)


async def test_leader_back_on_an_empty_data_dir_is_failed_over_not_followed(running):
    """A leader restarted on a wiped data dir (a lost PVC) answers, but with nothing: the
    followers refuse its resync and keep the data; after the delay a follower is promoted, and
    the empty ex-leader (fenced with READONLY first) full-resyncs from it."""
    cluster = await running(SPEC)
    lead = cluster.sup.leader
    r = redis.Redis(port=lead.port, protocol=2)
    for i in range(200):
        r.execute_command("SET", "fleet", f"t{i}", "POINT", 33, -115)
    await until(lambda: healthy(cluster) and all(
        m.num_objects == 200 for m in cluster.members), 20, "replicated")
    os.kill(lead.popen.pid, signal.SIGKILL)
    lead.popen.wait(5)
    shutil.rmtree(cluster.state.member_dir(lead.name))
    cluster.sup.start(lead)  # back at once, as a kubelet would restart it on a new volume
    await until(lambda: last_failover(cluster).get("result") == "ok", DELAY + 20, "failover")
    rec = last_failover(cluster)
    assert rec["old"] == lead.name and rec["kind"] == "failover" and "empty" in rec["reason"]
    assert cluster.sup.leader is not lead and lead.role == "follower"
    new = redis.Redis(port=cluster.sup.leader.port, protocol=2)
    new.response_callbacks.clear()
    assert new.execute_command("SCAN", "fleet", "COUNT") == 200
    await until(lambda: healthy(cluster) and identical_aofs(cluster), 30, "the ex-leader resynced")
    old = redis.Redis(port=lead.port, protocol=2)
    old.response_callbacks.clear()
    assert old.execute_command("SCAN", "fleet", "COUNT") == 200
    with pytest.raises(redis.ResponseError, match="not the leader"):
        old.execute_command("SET", "fleet", "x", "POINT", 1, 1)
