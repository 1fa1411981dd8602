"""spec.bootstrap through the real kopf operator against the emulated Kubernetes API (kmock).

Emulated: only the Kubernetes API (kmock) and what its controllers and the kubelet would do (the
harness plays them): Pod objects for member processes, and, for fromBackup/fromAOF, the init
container's run and the state the kubelet reports for it. The init container's command is the
one the StatefulSet's template carries, run for real (`geocluster restore`) against real backups;
its report becomes the termination message in the pod status, as the kubelet hands it on.

- fromLeader: a live migration from a standalone geoserver with its own password (standing in
  for a Tile38 leader) under a writer that logs every acknowledged write: the new leader follows
  it (status.bootstrap following -> caught-up), the annotation geo.geocluster.io/detach fences
  the old one and detaches (detached, writePauseMs, condition Bootstrapped), the follower is
  re-pointed, and no acknowledged write is missing on the new leader or its follower;
- fromBackup / fromAOF: status.bootstrap pending -> restoring -> restored (bytes, md5 as the
  manifest says) from the pod status, kept across main-timer ticks; a truncated backup is
  refused: phase failed, condition Bootstrapped False / RestoreRefused, a BootstrapFailed Warning;
  fromAOF from S3 (moto's server on 127.0.0.1) with the credentials of its Secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from geocluster import backup, probe
from geocluster import resources as res
from geocluster.backupstore import Catalog, open_store
from geocluster.spec import parse_spec
from helpers import GeoServer, s3_server
from opharness import (
    GC_URL,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    add_pod,
    annotate,
    annotations,
    events,
    eventually,
    gc_status,
    ip,
    pod,
    pod_ip,
    start_member,
    status_refreshes,
)

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(120)]
DETACH = "geo.geocluster.io/detach"
BIN = Path(sys.executable).parent


def secret(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def boot(api) -> dict:
    return gc_status(api).get("bootstrap") or {}


def bootstrapped(api) -> dict:
    return next(c for c in gc_status(api)["conditions"] if c["type"] == "Bootstrapped")


async def create(api, spec: dict) -> None:
    body = {"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}
    await api.post(GC_URL, json=body)


# --- fromLeader: live migration -------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes to the old leader; on `read only` (the detach fenced it) moves to the new leader.
    Logs every acknowledged write, and the longest gap between two acknowledged writes."""

    def __init__(self, old: tuple[str, str], new: tuple[str, str]):
        super().__init__(daemon=True)
        self.targets = {"old": old, "new": new}
        self.acked: list[str] = []
        self.done = threading.Event()
        self.longest_gap = 0.0

    def _conn(self, which: str) -> redis.Redis:
        host, password = self.targets[which]
        return redis.Redis(host=host, port=9851, password=password, protocol=2, socket_timeout=2)

    def run(self) -> None:
        target, n, last = "old", 0, time.monotonic()
        conn = self._conn(target)
        while not self.done.is_set():
            n += 1
            try:
                conn.execute_command("SET", "fleet", f"w{n}", "FIELD", "n", n, "POINT", 10, 10)
                self.acked.append(f"w{n}")
                now = time.monotonic()
                self.longest_gap, last = max(self.longest_gap, now - last), now
            except redis.RedisError as exc:
                if target == "old" and "read only" in str(exc):
                    target, conn = "new", self._conn("new")
                time.sleep(0.002)
            time.sleep(0.003)

    def missing_on(self, host: str, password: str) -> list[str]:
        r = redis.Redis(host=host, port=9851, password=password, protocol=2, socket_timeout=10)
        r.response_callbacks.clear()
        pipe = r.pipeline(transaction=False)
        for oid in self.acked:
            pipe.execute_command("GET", "fleet", oid)
        replies = pipe.execute(raise_on_error=False)
        return [oid for oid, got in zip(self.acked, replies, strict=True)
                if got is None or isinstance(got, Exception)]


async def server_stats(host: str, password: str) -> dict:
    async with probe.Client(f"{host}:9851", password) as c:
        return (await c.command("SERVER"))["stats"]


async def test_live_migration_from_a_running_leader_loses_no_acknowledged_write(api, members):
    old_ip, pw, old_pw = ip(40), "cluster-pw", "old-pw"
    await asyncio.to_thread(members.start, "old", old_ip, password=old_pw)
    async with probe.Client(f"{old_ip}:9851", old_pw) as c:
        for i in range(300):
            await c.command("SET", "fleet", f"t{i}", "FIELD", "speed", str(i), "POINT", "33", "-115")
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json=secret("geo-auth", {"password": pw}))
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json=secret("old-auth", {"password": old_pw}))
    spec = {**SPEC, "followers": 1, "server": {"authSecretRef": {"name": "geo-auth"}},
            "bootstrap": {"fromLeader": {"address": f"{old_ip}:9851",
                                         "authSecretRef": {"name": "old-auth"}}}}
    operator = await Operator().start()
    writer = None
    try:
        for k in range(2):  # every member starts following the ConfigMap's leader, as in a pod
            await start_member(api, members, pod(k), spec=spec, password=pw)
        await create(api, spec)
        started = time.monotonic()
        await eventually(lambda: boot(api).get("phase") == "caught-up", 30, what="caught up")
        catch_up = time.monotonic() - started
        rec = boot(api)
        assert rec["kind"] == "fromLeader" and rec["source"] == f"{old_ip}:9851" and rec["caughtUp"]
        assert rec["aofSize"] == rec["sourceAofSize"] > 0 and rec["member"] == pod(0)
        await eventually(lambda: bootstrapped(api)["reason"] == "CaughtUp", 10, what="Bootstrapped")
        assert bootstrapped(api)["status"] == "False"
        leader = await server_stats(pod_ip(pod(0)), pw)
        assert leader["following"] == f"{old_ip}:9851" and leader["num_objects"] == 300
        await status_refreshes(api, 3)  # the main timer leaves it following (bootstrap_state.migrating)
        assert (await server_stats(pod_ip(pod(0)), pw))["following"] == f"{old_ip}:9851"
        await eventually(lambda: events(api, "MigrationCaughtUp"), 10, what="the MigrationCaughtUp Event")

        writer = Writer((old_ip, old_pw), (pod_ip(pod(0)), pw))
        writer.start()
        await eventually(lambda: len(writer.acked) > 100, 20, what="writes on the old leader")
        await annotate(api, {DETACH: "1"})
        await eventually(lambda: boot(api).get("phase") == "detached", 30, what="detached")
        after = len(writer.acked)
        await eventually(lambda: len(writer.acked) > after + 50, 20, what="writes on the new leader")
        writer.done.set()
        await asyncio.to_thread(writer.join, 10)

        rec = boot(api)
        assert rec["result"] == "ok" and rec["detached"] and rec["writePauseMs"] >= 0
        assert DETACH not in annotations(api)
        # the main timer may write a conditions list read before this one: re-asserted next tick
        await eventually(lambda: bootstrapped(api)["reason"] == "Detached", 10, what="Bootstrapped")
        assert bootstrapped(api)["status"] == "True"
        await eventually(lambda: events(api, "MigrationDetached"), 10, what="the MigrationDetached Event")
        leader = await server_stats(pod_ip(pod(0)), pw)
        assert not leader.get("following")
        with pytest.raises(redis.ResponseError, match="read only"):  # the old leader stays fenced
            redis.Redis(host=old_ip, port=9851, password=old_pw).execute_command("SET", "fleet", "x",
                                                                                  "POINT", 1, 1)
        assert await asyncio.to_thread(writer.missing_on, pod_ip(pod(0)), pw) == []

        async def follower_in_step() -> bool:
            f, lead = await server_stats(pod_ip(pod(1)), pw), await server_stats(pod_ip(pod(0)), pw)
            return f.get("caught_up") and f["aof_size"] == lead["aof_size"]

        deadline = time.monotonic() + 30
        while not await follower_in_step():
            assert time.monotonic() < deadline, "the follower did not catch up with the new leader"
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(writer.missing_on, pod_ip(pod(1)), pw) == []
        print(f"\nmigration: caught up {catch_up:.2f} s after create; detach paused writes "
              f"{rec['writePauseMs']} ms (status); longest gap between acknowledged writes "
              f"{writer.longest_gap * 1000:.0f} ms; {len(writer.acked)} writes acknowledged")
    finally:
        if writer is not None:
            writer.done.set()
        await operator.stop()


async def test_detach_from_a_lost_old_leader_needs_force(api, members):
    """The old leader is gone: a plain detach is refused (it cannot be fenced), with a DetachFailed
    Warning and the migration going on; detach=force makes the new leader lead anyway."""
    old_ip, pw = ip(41), "cluster-pw"
    await asyncio.to_thread(members.start, "old", old_ip)
    async with probe.Client(f"{old_ip}:9851") as c:
        for i in range(50):
            await c.command("SET", "fleet", f"t{i}", "POINT", "33", "-115")
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json=secret("geo-auth", {"password": pw}))
    spec = {**SPEC, "followers": 0, "server": {"authSecretRef": {"name": "geo-auth"}},
            "bootstrap": {"fromLeader": {"address": f"{old_ip}:9851", "catchUpTimeoutSeconds": 2}}}
    operator = await Operator().start()
    try:
        await start_member(api, members, pod(0), spec=spec, password=pw)
        await create(api, spec)
        await eventually(lambda: boot(api).get("phase") == "caught-up", 30, what="caught up")
        members.stop("old")
        await annotate(api, {DETACH: "yes"})
        await eventually(lambda: events(api, "DetachFailed", "Warning"), 20, what="DetachFailed")
        await eventually(lambda: DETACH not in annotations(api), 10, what="the request removed")
        assert "cannot make the old leader read-only" in boot(api)["message"]
        assert boot(api)["phase"] in ("following", "caught-up")
        assert (await server_stats(pod_ip(pod(0)), pw))["following"] == f"{old_ip}:9851"
        await annotate(api, {DETACH: "force"})
        await eventually(lambda: boot(api).get("phase") == "detached", 20, what="detached")
        assert "NOT fenced" in boot(api)["message"]
        async with probe.Client(f"{pod_ip(pod(0))}:9851", pw) as c:
            await c.command("SET", "fleet", "after", "POINT", "1", "1")
            assert (await c.command("SCAN", "fleet", "COUNT"))["count"] == 51
    finally:
        await operator.stop()


async def test_detach_without_a_migration_is_refused(api, members):
    operator = await Operator().start()
    try:
        await create(api, {**SPEC, "followers": 0})
        await annotate(api, {DETACH: "force"})
        await eventually(lambda: events(api, "DetachRefused", "Warning"), 15, what="DetachRefused")
        await eventually(lambda: DETACH not in annotations(api), 10, what="the request removed")
    finally:
        await operator.stop()


# --- fromBackup / fromAOF: the init container, as the kubelet reports it ----------------------------


def run_init(spec: dict, data: Path, env_secret: dict[str, str] | None = None) -> tuple[int, str]:
    """The init container as the template has it, /data at ``data``; (exit code, termination
    message): its report, or (FallbackToLogsOnError) its last log lines when it wrote none."""
    c = res.Cluster(NAME, NS, "", parse_spec(spec))
    init = res.build_statefulset(c)["spec"]["template"]["spec"]["initContainers"][0]
    log = data.parent / f"{data.name}.termination-log"
    argv = [str(data) if a == res.DATA_DIR else str(log) if a == res.TERMINATION_LOG else a
            for a in init["command"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    for var in init.get("env", []):
        env[var["name"]] = (env_secret or {})[var["valueFrom"]["secretKeyRef"]["key"]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    message = log.read_text() if log.exists() else ""
    return out.returncode, message or (out.stderr if out.returncode else "")


async def kubelet(api, name: str, state: dict, last: dict | None = None, restarts: int = 0) -> None:
    """The kubelet reports the bootstrap init container's state of pod ``name``."""
    st = {"name": "bootstrap", "state": state, "restartCount": restarts, "ready": False,
          "image": "geo:1", "imageID": "geo@sha256:0"}
    if last:
        st["lastState"] = last
    status = {"podIP": pod_ip(name), "phase": "Pending", "initContainerStatuses": [st]}
    await api.patch(f"/api/v1/namespaces/{NS}/pods/{name}", json={"status": status})


def terminated(code: int, message: str) -> dict:
    return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "message": message}}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    server = GeoServer(tmp_path_factory.mktemp("src")).start()
    c = server.client()
    for i in range(200):
        c.execute_command("SET", "fleet", f"t{i}", "FIELD", "speed", i, "POINT", 33 + i / 1e3, -115)
    yield server
    server.stop()


async def test_restore_phases_from_the_pod_status_and_a_refused_backup(api, members, source, tmp_path):
    root = tmp_path / "bk"
    catalog = Catalog(open_store(f"file://{root}"), "old")
    good = backup.take(catalog, backup.Source("old-0", "leader", f"127.0.0.1:{source.port}"))
    spec = {**SPEC, "followers": 1, "bootstrap": {"fromBackup": {"source": f"file://{root}", "cluster": "old",
                                                                 "name": good.name}}}
    operator = await Operator().start()
    try:
        for k in range(2):
            await add_pod(api, pod(k), pod_ip(pod(k)))
        await create(api, spec)
        await kubelet(api, pod(0), {"waiting": {"reason": "PodInitializing"}})
        await eventually(lambda: boot(api).get("phase") == "pending", 15, what="pending")
        await eventually(lambda: bootstrapped(api)["reason"] == "Pending", 10, what="Bootstrapped")
        assert bootstrapped(api)["status"] == "False"
        await kubelet(api, pod(0), {"running": {"startedAt": "2030-01-01T00:00:00Z"}})
        await eventually(lambda: boot(api).get("phase") == "restoring", 15, what="restoring")
        code, message = await asyncio.to_thread(run_init, spec, tmp_path / "pvc-0")
        assert code == 0, message
        await kubelet(api, pod(0), terminated(code, message))
        await eventually(lambda: boot(api).get("phase") == "restored", 15, what="restored")
        rec = boot(api)
        assert rec["kind"] == "fromBackup" and rec["aofSize"] == good.aof_size and rec["finished"]
        assert rec["source"] == catalog.location(good.name) and good.md5 in rec["message"]
        await eventually(lambda: bootstrapped(api)["reason"] == "Restored", 10, what="Bootstrapped")
        assert bootstrapped(api)["status"] == "True"
        await eventually(lambda: events(api, "BootstrapRestored"), 10, what="the BootstrapRestored Event")
        await status_refreshes(api, 3)  # the main timer writes its conditions: Bootstrapped stays
        await eventually(lambda: bootstrapped(api)["status"] == "True", 10, what="Bootstrapped kept")
        assert boot(api) == rec
        server = GeoServer(tmp_path / "pvc-0").start()  # what the restored volume serves
        try:
            assert server.json("AOFMD5", 0, good.aof_size)["md5"] == good.md5
        finally:
            server.stop()

    finally:
        await operator.stop()


async def test_a_truncated_backup_is_refused_with_a_condition_and_never_served(api, members, source,
                                                                                tmp_path):
    root = tmp_path / "bk"
    catalog = Catalog(open_store(f"file://{root}"), "old")
    good = backup.take(catalog, backup.Source("old-0", "leader", f"127.0.0.1:{source.port}"))
    obj = root / "old" / good.name / good.object
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    spec = {**SPEC, "followers": 1,
            "bootstrap": {"fromBackup": {"source": f"file://{root}", "cluster": "old"}}}
    operator = await Operator().start()
    try:
        for k in range(2):
            await add_pod(api, pod(k), pod_ip(pod(k)))
        await create(api, spec)
        code, message = await asyncio.to_thread(run_init, spec, tmp_path / "pvc-1")
        assert code == 1
        await kubelet(api, pod(1), {"waiting": {"reason": "CrashLoopBackOff"}}, terminated(code, message), 2)
        await eventually(lambda: boot(api).get("phase") == "failed", 15, what="failed")
        await eventually(lambda: bootstrapped(api)["reason"] == "RestoreRefused", 10, what="Bootstrapped")
        cond = bootstrapped(api)
        assert cond["status"] == "False" and cond["reason"] == "RestoreRefused"
        assert f"backup {good.name} refused" in cond["message"] and "truncated" in cond["message"]
        assert "restarts: 2" in boot(api)["message"] and boot(api)["member"] == pod(1)  # a follower's
        def refusals() -> list[dict]:
            return [e for e in events(api, "BootstrapFailed", "Warning") if "truncated" in e["message"]]

        await eventually(refusals, 10, what="the BootstrapFailed Warning")
        [warning] = refusals()
        assert pod(1) in warning["message"]
        await status_refreshes(api, 3)  # the main timer keeps the condition
        await eventually(lambda: bootstrapped(api)["reason"] == "RestoreRefused", 10, what="kept")
        assert not (tmp_path / "pvc-1" / backup.AOF_FILE).exists()
    finally:
        await operator.stop()


async def test_from_aof_in_s3_with_credentials_is_restored(api, members, source, tmp_path):
    with s3_server("old-tile38", key="ak", secret="sk") as url:
        s3 = backup.S3Options(endpoint_url=url, region="us-east-1", access_key_id="ak",
                              secret_access_key="sk")
        with open(source.aof_path, "rb") as f:
            open_store("s3://old-tile38", s3).put("dump/appendonly.aof", f)
        await api.post(f"/api/v1/namespaces/{NS}/secrets",
                       json=secret("old-s3", {"ACCESS_KEY_ID": "ak", "ACCESS_SECRET_KEY": "sk"}))
        spec = {**SPEC, "followers": 0, "bootstrap": {"fromAOF": {
            "source": "s3://old-tile38/dump/appendonly.aof", "endpointURL": url, "region": "us-east-1",
            "s3Credentials": {"secretName": "old-s3"}}}}
        operator = await Operator().start()
        try:
            await add_pod(api, pod(0), pod_ip(pod(0)))
            await create(api, spec)
            sts = await eventually(lambda: api.objects[("apps/v1/statefulsets", NS, NAME)], 15, what="sts")
            init = sts["spec"]["template"]["spec"]["initContainers"][0]
            assert {e["valueFrom"]["secretKeyRef"]["name"] for e in init["env"]} == {"old-s3"}
            code, message = await asyncio.to_thread(run_init, spec, tmp_path / "pvc",
                                                    {"ACCESS_KEY_ID": "ak", "ACCESS_SECRET_KEY": "sk"})
            assert code == 0, message
            assert json.loads(message)["aofSize"] == source.aof_path.stat().st_size
            await kubelet(api, pod(0), terminated(code, message))
            await eventually(lambda: boot(api).get("phase") == "restored", 15, what="restored")
            rec = boot(api)
            assert rec["kind"] == "fromAOF" and rec["aofSize"] == source.aof_path.stat().st_size
            assert rec["source"] == "s3://old-tile38/dump/appendonly.aof"
            assert (tmp_path / "pvc" / backup.AOF_FILE).read_bytes() == source.aof_path.read_bytes()
        finally:
            await operator.stop()
