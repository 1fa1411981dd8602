"""Backups and bootstrap in the local runtime, with real geoserver processes: scheduled backups
in the loop (fake clock) with retention, bootstrap fromBackup / fromAOF, a corrupt backup that
stops `up` before any member serves it, and a live migration (fromLeader) from a standalone
geoserver under a writer that logs every acknowledged write, then `detach`: none is missing.
The whole path through the real CLI (dir and S3) is in test_local_backup_cli.py."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from geocluster import probe
from geocluster.backupstore import Catalog, open_store
from geocluster.local import LocalCluster
from geocluster.localstate import StateDir, load_manifest
from helpers import GeoServer, wait_until
from local_lib import FAST, FakeClock, manifest, merged, tick_until, write_manifest


def write_data(port: int, n: int = 500) -> None:
    r = redis.Redis(port=port, protocol=2, socket_timeout=10)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("SET", "fleet", f"t{i}", "FIELD", "speed", i, "POINT", 33 + i / 1e3, -115)
    pipe.execute_command("SET", "fleet", "ttl", "EX", 3600, "POINT", 1, 1)
    pipe.execute_command("SET", "zones", "z", "OBJECT", '{"type":"Point","coordinates":[1,2]}')
    pipe.execute()


def scan(port: int) -> dict[str, Any]:
    srv = GeoServer(Path("/nonexistent"), port=port)
    out: dict[str, Any] = {}
    for key in ("fleet", "zones"):
        reply = srv.json("SCAN", key, "LIMIT", 100000)
        out[key] = sorted((o["id"], str(o["object"]), o.get("fields")) for o in reply["objects"])
    out["ttl"] = srv.json("TTL", "fleet", "ttl")["ttl"] > 0
    return out


def md5(port: int, size: int) -> str:
    return GeoServer(Path("/nonexistent"), port=port).json("AOFMD5", 0, size)["md5"]


async def caught_up(cluster: LocalCluster, clock: FakeClock) -> None:
    leader = cluster.sup.leader.name

    def done() -> bool:
        ms = cluster.status.get("members", [])
        return bool(ms) and all(m.get("caughtUp") for m in ms if m["name"] != leader)

    await tick_until(cluster, done, clock, what="followers caught up")


async def test_scheduled_backups_from_a_follower_with_retention(make_cluster, clock, tmp_path):
    dest = f"file://{tmp_path}/bk"
    spec = merged(FAST, followers=1, backup={"destination": dest, "schedule": "*/5 * * * *",
                                             "retention": {"count": 2}})
    cluster = await make_cluster(spec)
    write_data(cluster.sup.leader.port)
    await caught_up(cluster, clock)
    names: list[str] = []
    for _ in range(3):  # three occurrences of */5
        before = (cluster.status.get("lastBackup") or {}).get("name")
        await tick_until(cluster, lambda b=before: (cluster.status.get("lastBackup") or {}).get("name") != b
                         and cluster.status["lastBackup"]["result"] == "ok", clock, step=30, what="a backup")
        names.append(cluster.status["lastBackup"]["name"])
    rec = cluster.status["lastBackup"]
    assert (rec["source"], rec["reason"]) == ("follower-1", "schedule")
    assert rec["location"] == f"{dest}/t/{names[-1]}"
    assert [n[11:13] for n in names] == ["05", "10", "15"]  # minutes: 00:05, 00:10, 00:15
    catalog = Catalog(open_store(dest), "t")
    assert [m.name for m in catalog.list()] == names[1:]  # count 2: the oldest deleted
    assert cluster.status["backups"] == 2 and cluster.status["backupFailures"] == 0
    m = catalog.get("latest")
    assert m.md5 == md5(cluster.sup.leader.port, m.aof_size)


async def test_a_failing_destination_is_retried_and_recorded(make_cluster, clock, tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")  # the destination path is a file: every put fails
    spec = merged(FAST, followers=0, backup={"destination": f"file://{tmp_path}/good", "maxRetries": 1})
    cluster = await make_cluster(spec)
    cluster.state.request("backup", f"file://{blocked}")  # `geocluster backup --to ...`
    await tick_until(cluster, lambda: (cluster.status.get("lastBackup") or {}).get("result", "").startswith(
        "error"), clock, what="a failed backup")
    assert cluster.status["backupFailures"] == 1
    await tick_until(cluster, lambda: cluster.status["lastBackup"]["attempt"] == 2
                     and cluster.status["lastBackup"]["result"] != "started", clock, step=30, what="a retry")
    assert cluster.status["backupFailures"] == 2 and cluster.status["lastBackup"]["reason"] == "retry"
    assert str(blocked) in cluster.status["lastBackup"]["result"]  # the retry went to --to's URL too
    assert "backup" not in cluster.state.triggers() and not (tmp_path / "good").exists()


async def start(tmp_path: Path, name: str, spec: dict[str, Any], clock: FakeClock) -> LocalCluster:
    (tmp_path / name).mkdir(exist_ok=True)
    cluster = LocalCluster(manifest(tmp_path / name, spec), StateDir(tmp_path / name / "state"), clock)
    await cluster.start()
    return cluster


@pytest.fixture
async def source_backup(make_cluster, clock, tmp_path) -> tuple[str, dict[str, Any], Any]:
    """A cluster `t` with data, backed up once into a directory, then stopped and deleted."""
    dest = f"file://{tmp_path}/bk"
    cluster = await make_cluster(merged(FAST, followers=1, backup={"destination": dest}))
    write_data(cluster.sup.leader.port)
    await caught_up(cluster, clock)
    cluster.state.request("backup")
    await tick_until(cluster, lambda: (cluster.status.get("lastBackup") or {}).get("result") == "ok",
                     clock, what="the backup")
    data = scan(cluster.sup.leader.port)
    await cluster.stop()
    shutil.rmtree(cluster.state.path)  # the cluster is gone; the backup stays
    return dest, data, Catalog(open_store(dest), "t").get("latest")


async def test_bootstrap_from_backup_leader_and_followers(source_backup, clock, tmp_path):
    dest, data, m = source_backup
    spec = merged(FAST, followers=2, bootstrap={"fromBackup": {"source": dest, "cluster": "t"}})
    cluster = await start(tmp_path, "new", spec, clock)
    try:
        await caught_up(cluster, clock)
        leader = cluster.sup.leader.port
        assert scan(leader) == data
        assert md5(leader, m.aof_size) == m.md5
        boot = cluster.status["bootstrap"]
        assert (boot["kind"], boot["result"], boot["aofSize"]) == ("fromBackup", "ok", m.aof_size)
        assert boot["source"] == f"{dest}/t/{m.name}"
        for name in ("follower-1", "follower-2"):  # started from the same file: no full resync
            port = cluster.sup.procs[name].port
            assert md5(port, m.aof_size) == m.md5
            assert GeoServer(Path("/x"), port=port).stats()["resyncs"] == 0
    finally:
        await cluster.stop()
    again = LocalCluster(cluster.manifest, cluster.state, clock)  # a restart does not bootstrap again
    await again.start()
    try:
        assert scan(again.sup.leader.port) == data
    finally:
        await again.stop()


async def test_a_corrupt_backup_stops_up_before_any_member_serves(source_backup, clock, tmp_path):
    dest, _, m = source_backup
    obj = Path(dest.removeprefix("file://")) / "t" / m.name / m.object
    obj.write_bytes(obj.read_bytes()[:-10])  # truncated
    spec = merged(FAST, followers=1,
                  bootstrap={"fromBackup": {"source": dest, "cluster": "t", "name": m.name}})
    why = f"bootstrap: backup {m.name} refused: .* has {m.stored_size - 10} bytes"
    with pytest.raises(RuntimeError, match=why):
        await start(tmp_path, "bad", spec, clock)
    assert not list((tmp_path / "bad" / "state").glob("members/*/appendonly.aof"))
    missing = merged(FAST, followers=0, bootstrap={"fromBackup": {"source": dest, "cluster": "nope"}})
    with pytest.raises(RuntimeError, match="no complete backup of 'nope'"):
        await start(tmp_path, "missing", missing, clock)


async def test_bootstrap_from_an_aof_file(clock, tmp_path):
    old = GeoServer(tmp_path / "tile38").start()
    write_data(old.port, 200)
    data = scan(old.port)
    old.stop()
    spec = merged(FAST, followers=1, bootstrap={"fromAOF": {"source": str(old.aof_path)}})
    cluster = await start(tmp_path, "aof", spec, clock)
    try:
        await caught_up(cluster, clock)
        assert scan(cluster.sup.leader.port) == data
        boot = cluster.status["bootstrap"]
        assert boot["kind"] == "fromAOF" and boot["phase"] == "restored" and boot["aofSize"] > 0
    finally:
        await cluster.stop()


class OldLeaderWriter(threading.Thread):
    """Writes to the old leader; on `read only` (detach fenced it) moves to the new leader.
    Every acknowledged write is logged with who acknowledged it."""

    def __init__(self, old_port: int, new_port: int, old_password: str):
        super().__init__(daemon=True)
        self.ports = {"old": old_port, "new": new_port}
        self.passwords = {"old": old_password, "new": None}
        self.acked: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        target, n = "old", 0
        conn = redis.Redis(port=self.ports[target], password=self.passwords[target], protocol=2,
                           socket_timeout=2)
        while not self.done.is_set():
            n += 1
            try:
                conn.execute_command("SET", "fleet", f"w{n}", "FIELD", "n", n, "POINT", 10, 10)
                self.acked.append((f"w{n}", target))
            except redis.RedisError as exc:
                self.errors.append(str(exc))
                if target == "old" and "read only" in str(exc):
                    target = "new"
                    conn = redis.Redis(port=self.ports[target], protocol=2, socket_timeout=2)  # no password
                time.sleep(0.002)
            if n % 50 == 0:
                time.sleep(0.001)

    def missing_on(self, port: int) -> list[str]:
        r = redis.Redis(port=port, protocol=2, socket_timeout=10)
        r.response_callbacks.clear()
        pipe = r.pipeline(transaction=False)
        for oid, _ in self.acked:
            pipe.execute_command("GET", "fleet", oid)
        replies = pipe.execute(raise_on_error=False)
        return [oid for (oid, _), got in zip(self.acked, replies, strict=True)
                if got is None or isinstance(got, Exception)]


async def test_live_migration_from_a_standalone_geoserver(clock, tmp_path):
    old = GeoServer(tmp_path / "old", args=["--requirepass", "oldpw"]).start()
    old_client = redis.Redis(port=old.port, protocol=2, password="oldpw")
    old_client.execute_command("SET", "fleet", "before", "POINT", 1, 1)
    spec = merged(FAST, followers=1, bootstrap={"fromLeader": {
        "address": f"127.0.0.1:{old.port}", "authSecretRef": {"name": "old-auth"}}})
    (tmp_path / "mig").mkdir()
    path = tmp_path / "mig" / "geocluster.yaml"
    write_manifest(path, spec, name="mig")
    path.write_text(path.read_text() + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: old-auth}\n"
                    "stringData: {password: oldpw}\n")
    cluster = LocalCluster(load_manifest(path), StateDir(tmp_path / "mig" / "state"), clock)
    await cluster.start()
    writer = None
    try:
        leader = cluster.sup.leader
        assert cluster.status["bootstrap"]["result"] == "following"
        writer = OldLeaderWriter(old.port, leader.port, "oldpw")
        await tick_until(cluster, lambda: GeoServer(Path("/x"), port=leader.port).stats().get("caught_up"),
                         clock, what="the new leader caught up with the old")
        await tick_until(cluster, lambda: cluster.status["bootstrap"].get("phase") == "caught-up", clock,
                         what="status.bootstrap caught-up")
        boot = cluster.status["bootstrap"]
        assert boot["aofSize"] == boot["sourceAofSize"] > 0 and boot["caughtUp"]
        new_srv = GeoServer(Path("/x"), port=leader.port)
        refused = new_srv.json("SET", "fleet", "x", "POINT", 1, 1)  # a follower until detached
        assert not refused["ok"] and "not the leader" in refused["err"]
        writer.start()
        wait_until(lambda: len(writer.acked) > 300, 20, message="writes to the old leader")
        cluster.state.request("detach")
        await tick_until(cluster, lambda: cluster.status["bootstrap"]["result"] == "ok", clock, what="detach")
        wait_until(lambda: any(t == "new" for _, t in writer.acked[-5:]), 20,
                   message="writes to the new leader")
        time.sleep(0.2)
        writer.done.set()
        writer.join(10)
        by = {t for _, t in writer.acked}
        assert by == {"old", "new"}, writer.errors[:5]
        assert writer.missing_on(leader.port) == []
        assert GeoServer(Path("/x"), port=leader.port).json("GET", "fleet", "before")["ok"]
        follower = cluster.sup.procs["follower-1"].port
        wait_until(lambda: GeoServer(Path("/x"), port=follower).stats().get("caught_up"), 30,
                   message="the follower follows the new leader")
        await tick_until(cluster, lambda: GeoServer(Path("/x"), port=follower).stats()["aof_size"]
                         == GeoServer(Path("/x"), port=leader.port).stats()["aof_size"], clock,
                         what="in step")
        assert writer.missing_on(follower) == []
        boot = cluster.status["bootstrap"]
        assert boot["detached"] and boot["phase"] == "detached" and boot["writePauseMs"] >= 0
    finally:
        if writer is not None:
            writer.done.set()
        await cluster.stop()
        old.stop()


async def test_backup_over_tls_with_a_password(clock, tmp_path):
    """Members TLS-only with a password: the backup dials TLS (verified with the cluster's CA)
    and AUTHs, like the probes."""
    (tmp_path / "tls").mkdir()
    path = write_manifest(tmp_path / "tls" / "geocluster.yaml", merged(
        FAST, followers=1, server={"appendfsync": "always", "authSecretRef": {"name": "pw"}},
        backup={"destination": f"file://{tmp_path}/bk"}), name="tls")
    path.write_text(path.read_text() + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: pw}\n"
                    "stringData: {password: s3cret}\n")
    cluster = LocalCluster(load_manifest(path), StateDir(tmp_path / "tls" / "state"), clock, tls=True)
    await cluster.start()
    try:
        for i in range(50):
            await probe.send(cluster.sup.leader.address, "SET", "fleet", f"t{i}", "POINT", "1", "2",
                             password="s3cret", ca_file=cluster.sup.ca_file)
        await caught_up(cluster, clock)
        cluster.state.request("backup")
        await tick_until(cluster, lambda: (cluster.status.get("lastBackup") or {}).get("result")
                         not in (None, "started"), clock, what="the backup")
        assert cluster.status["lastBackup"]["result"] == "ok", cluster.status["lastBackup"]
        m = Catalog(open_store(f"file://{tmp_path}/bk"), "tls").get("latest")
        assert m.source == "follower-1" and m.aof_size > 0
    finally:
        await cluster.stop()


async def test_detach_refuses_an_old_leader_it_cannot_fence_unless_forced(clock, tmp_path):
    old = GeoServer(tmp_path / "old").start()
    redis.Redis(port=old.port, protocol=2).execute_command("SET", "fleet", "a", "POINT", 1, 1)
    spec = merged(FAST, followers=0, bootstrap={"fromLeader": {"address": f"127.0.0.1:{old.port}"}})
    cluster = await start(tmp_path, "gone", spec, clock)
    try:
        leader = GeoServer(Path("/x"), port=cluster.sup.leader.port)
        wait_until(lambda: leader.stats().get("caught_up"), 20, message="following the old leader")
        old.stop()  # the old leader is gone: it cannot be made read-only
        cluster.state.request("detach")
        await cluster.tick()
        boot = cluster.status["bootstrap"]
        assert boot["result"] == "following" and "cannot make the old leader read-only" in boot["message"]
        assert not leader.json("SET", "fleet", "b", "POINT", 1, 1)["ok"]  # still a follower
        cluster.state.request("detach", "force")
        await cluster.tick()
        assert cluster.status["bootstrap"]["result"] == "ok"
        assert leader.json("SET", "fleet", "b", "POINT", 1, 1)["ok"]
        assert leader.json("GET", "fleet", "a")["ok"]
    finally:
        await cluster.stop()
        old.stop()
