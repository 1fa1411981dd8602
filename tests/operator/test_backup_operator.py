"""spec.backup through the real kopf operator against the emulated Kubernetes API (kmock), with
real geoserver members on loopback addresses and real backups: the backup-now annotation takes
a verified backup from a caught-up follower into a directory and into S3 (moto's server, keys
from a Secret in the API), status.lastBackup/backups and Events are written, the main timer
does not undo them, metrics are set; without spec.backup the annotation is a Warning, and a
spec.bootstrap.fromAOF on a path the init container cannot see is one too.

Emulated: only the Kubernetes API (kmock) and the pods' controller (the harness plays it)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from geocluster import backup, probe
from geocluster.backupstore import Catalog, S3Options, open_store
from helpers import s3_server
from opharness import (
    LEADER_IP,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    annotate,
    annotations,
    events,
    eventually,
    gc_status,
    start_cluster,
    status_refreshes,
)
from prometheus_client import REGISTRY

ANNOTATION = "geo.geocluster.io/backup-now"
pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with s3_server("geo", key="k", secret="s") as url:
        yield url


async def write(count: int = 300) -> None:
    async with probe.Client(f"{LEADER_IP}:9851") as c:
        for i in range(count):
            await c.command("SET", "fleet", f"t{i}", "FIELD", "speed", str(i), "POINT", "33", "-115")


def in_step(api) -> bool:
    ms = gc_status(api)["members"]
    size = next(m["aofSize"] for m in ms if m["role"] == "leader")
    return size > 0 and all(m.get("caughtUp") and m["aofSize"] == size for m in ms if m["role"] == "follower")


async def backed_up(api) -> dict:
    await eventually(lambda: (gc_status(api).get("lastBackup") or {}).get("result") not in (None, "started"),
                     30, what="the backup settled")
    return gc_status(api)["lastBackup"]


@pytest.mark.parametrize("where", ["file", "s3"])
async def test_backup_now_annotation(api, members, tmp_path: Path, where, s3_url):
    if where == "file":
        spec_backup = {"destination": f"file://{tmp_path}/bk"}
        s3 = S3Options()
    else:
        spec_backup = {"destination": "s3://geo/k8s", "endpointURL": s3_url, "region": "us-east-1",
                       "s3Credentials": {"secretName": "s3"}}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": NS},
                  "data": {k: base64.b64encode(v.encode()).decode()
                           for k, v in {"ACCESS_KEY_ID": "k", "ACCESS_SECRET_KEY": "s"}.items()}}
        await api.post(f"/api/v1/namespaces/{NS}/secrets", json=secret)
        s3 = S3Options(endpoint_url=s3_url, region="us-east-1", access_key_id="k", secret_access_key="s")
    operator = await Operator().start()
    try:
        await start_cluster(api, members, spec={**SPEC, "backup": spec_backup})
        await write()
        await eventually(lambda: in_step(api), 20, what="followers in step")
        await annotate(api, {ANNOTATION: "now"})
        rec = await backed_up(api)
        assert rec["result"] == "ok", rec
        followers = [m["name"] for m in gc_status(api)["members"] if m["role"] == "follower"]
        assert rec["reason"] == "manual" and rec["source"] in followers
        assert ANNOTATION not in annotations(api)
        await eventually(lambda: events(api, "BackupSucceeded"), 10, what="the BackupSucceeded Event")
        assert len(events(api, "BackupStarted")) == 1 and not events(api, "BackupFailed")
        st = gc_status(api)
        assert st["backups"] == 1 and st["lastSuccessfulBackup"] == rec["time"] and st["backupFailures"] == 0
        catalog = Catalog(open_store(spec_backup["destination"], s3), NAME)
        m = backup.verify(catalog, rec["name"])
        async with probe.Client(f"{LEADER_IP}:9851") as c:
            assert (await c.command("AOFMD5", "0", str(m.aof_size)))["md5"] == m.md5
        await status_refreshes(api, 3)  # the main timer writes status: lastBackup stays
        assert dict(gc_status(api)["lastBackup"]) == dict(rec)
        labels = {"namespace": NS, "cluster": NAME}
        assert REGISTRY.get_sample_value("geocluster_backup_last_success_timestamp_seconds", labels) > 0
        assert REGISTRY.get_sample_value("geocluster_backup_bytes", labels) == m.stored_size
    finally:
        await operator.stop()


async def test_a_failed_backup_is_recorded_and_without_spec_backup_the_request_warns(api, members, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    operator = await Operator().start()
    try:
        await start_cluster(api, members, spec={**SPEC, "backup": {"destination": f"file://{blocked}",
                                                                    "maxRetries": 0}})
        await eventually(lambda: in_step(api) or True, 5)
        await annotate(api, {ANNOTATION: "1"})
        rec = await backed_up(api)
        assert rec["result"].startswith("error: ") and gc_status(api)["backupFailures"] == 1
        await eventually(lambda: events(api, "BackupFailed", "Warning"), 10, what="a BackupFailed Warning")
        await api.patch(f"/apis/geo.geocluster.io/v1alpha1/namespaces/{NS}/geoclusters/{NAME}",
                        json={"spec": {"backup": None, "bootstrap": {"fromAOF": {"source": "/mnt/old.aof"}}}})
        await annotate(api, {ANNOTATION: "1"})
        await eventually(lambda: events(api, "BackupNotConfigured", "Warning"), 15, what="a Warning")
        await eventually(lambda: ANNOTATION not in annotations(api), 10, what="the request removed")
        await eventually(lambda: events(api, "BootstrapSourceNotMounted", "Warning"), 10, what="a Warning")
    finally:
        await operator.stop()
