"""The whole path through the real `geocluster` CLI and real processes: `up` a cluster with
spec.backup on S3 (moto's server on 127.0.0.1, credentials from a Secret in the manifest),
write data with fields and TTLs, `geocluster backup` (to S3) and `backup --to file://...`,
`geocluster backups` of both, `down --purge`, then `up -f` two new clusters bootstrapped from
each backup: SCAN of every key equal, AOFMD5 of the restored AOF equal to the manifest's.
`geocluster restore` fills an empty dir and refuses one with data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from helpers import GeoServer, s3_server, wait_until
from local_lib import FAST, merged

GEOCLUSTER = [sys.executable, "-c", "from geocluster.cli import main; main()"]
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
          "stringData": {"ACCESS_KEY_ID": "test", "ACCESS_SECRET_KEY": "test"}}


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with s3_server("backups") as url:
        yield url


def geocluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # `backups --from`
    out = subprocess.run([*GEOCLUSTER, *args], capture_output=True, text=True, timeout=120, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"geocluster {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def write(path: Path, name: str, spec: dict[str, Any]) -> Path:
    doc = {"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster", "metadata": {"name": name},
           "spec": spec}
    path.write_text(yaml.safe_dump_all([doc, SECRET], sort_keys=False))
    return path


def status(state: Path) -> dict[str, Any]:
    """The status `up` writes (what `geocluster status -o json` prints), read directly: fast."""
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def ready(state: Path) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status(state)
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
        return st if ok else None

    return wait_until(check, 60, 0.3, message=f"{state.name} Ready")


class Up:
    """`geocluster up -f` in the background."""

    def __init__(self, manifest: Path, state: Path):
        self.state = state
        self.proc = subprocess.Popen([*GEOCLUSTER, "up", "-f", str(manifest), "--state-dir", str(state),
                                      "--port", "0", "--no-live"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def leader_port(self) -> int:
        info = json.loads((self.state / "cluster.json").read_text())
        return next(m["port"] for m in info["members"] if m["name"] == info["leader"])

    def down(self, purge: bool = False) -> None:
        geocluster("down", "--state-dir", str(self.state), *(["--purge"] if purge else []))
        self.proc.wait(30)


def data(port: int) -> dict[str, Any]:
    srv = GeoServer(Path("/x"), port=port)
    out: dict[str, Any] = {k: sorted((o["id"], str(o["object"]), o.get("fields"))
                                     for o in srv.json("SCAN", k, "LIMIT", 100000)["objects"])
                           for k in ("fleet", "zones")}
    out["ttl"] = srv.json("TTL", "fleet", "ttl")["ttl"] > 0
    return out


def test_backup_to_s3_and_a_dir_then_bootstrap_new_clusters_from_each(tmp_path, s3_url):
    backup_spec = {"destination": "s3://backups/cli", "endpointURL": s3_url, "region": "us-east-1",
                   "s3Credentials": {"secretName": "s3"}}
    src = write(tmp_path / "src.yaml", "src", merged(FAST, followers=1, backup=backup_spec))
    up = Up(src, tmp_path / "src")
    try:
        ready(up.state)
        r = redis.Redis(port=up.leader_port(), protocol=2)
        pipe = r.pipeline(transaction=False)
        for i in range(2000):
            pipe.execute_command("SET", "fleet", f"t{i}", "FIELD", "speed", i, "POINT", 30 + i / 1e3, -100)
        pipe.execute_command("SET", "fleet", "ttl", "EX", 3600, "FIELD", "x", 1, "POINT", 1, 1)
        pipe.execute_command("SET", "zones", "z", "OBJECT", '{"type":"Point","coordinates":[1,2]}')
        pipe.execute()
        wait_until(lambda: all(m.get("caughtUp") for m in status(up.state)["members"]
                               if m["role"] == "follower"), 30, 0.3, message="caught up")
        to_s3 = geocluster("backup", "--state-dir", str(up.state)).stdout
        assert "ok" in to_s3 and "from follower-1" in to_s3 and "s3://backups/cli/src/" in to_s3
        time.sleep(1.1)  # backup names are whole seconds
        to_dir = geocluster("backup", "--state-dir", str(up.state), "--to", f"file://{tmp_path}/bk").stdout
        assert f"file://{tmp_path}/bk/src/" in to_dir
        bad = geocluster("backup", "--state-dir", str(up.state), "--to", "ftp://x", check=False)
        assert bad.returncode == 1 and "unsupported destination" in bad.stderr
        listed = json.loads(geocluster("backups", "--state-dir", str(up.state), "-o", "json").stdout)
        in_dir = json.loads(geocluster("backups", "--from", f"file://{tmp_path}/bk", "--cluster", "src",
                                       "-o", "json").stdout)
        assert len(listed) == 1 and len(in_dir) == 1
        table = geocluster("backups", "--from", "s3://backups/cli", "--cluster", "src",
                           "--endpoint-url", s3_url, "--region", "us-east-1").stdout
        assert listed[0]["name"] in table and "gzip" in table
        before = data(up.leader_port())
        st = status(up.state)
        assert st["lastBackup"]["result"] == "ok" and st["lastSuccessfulBackup"]
    finally:
        up.down(purge=True)
    assert not up.state.exists()

    for name, source in [("from-dir", {"source": f"file://{tmp_path}/bk", "cluster": "src"}),
                         ("from-s3", {"source": "s3://backups/cli", "cluster": "src", "endpointURL": s3_url,
                                      "region": "us-east-1", "s3Credentials": {"secretName": "s3"}})]:
        manifest = (in_dir if name == "from-dir" else listed)[0]
        path = write(tmp_path / f"{name}.yaml", name, merged(FAST, followers=1,
                                                              bootstrap={"fromBackup": source}))
        new = Up(path, tmp_path / name)
        try:
            st = ready(new.state)
            assert st["bootstrap"]["kind"] == "fromBackup" and st["bootstrap"]["result"] == "ok"
            port = new.leader_port()
            assert data(port) == before
            restored = GeoServer(Path("/x"), port=port).json("AOFMD5", 0, manifest["aofSize"])
            assert restored["md5"] == manifest["md5"]
        finally:
            new.down(purge=True)


def test_restore_command(tmp_path):
    server = GeoServer(tmp_path / "g").start()
    try:
        server.client().execute_command("SET", "k", "a", "POINT", 1, 1)
        from geocluster import backup
        from geocluster.backupstore import Catalog, open_store

        catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "c")
        m = backup.take(catalog, backup.Source("g", "leader", f"127.0.0.1:{server.port}"))
    finally:
        server.stop()
    out = geocluster("restore", "--from", f"file://{tmp_path}/bk", "--cluster", "c", "--to",
                     str(tmp_path / "d"))
    assert f"restored {m.name}" in out.stdout
    assert (tmp_path / "d" / "appendonly.aof").stat().st_size == m.aof_size
    again = geocluster("restore", "--from", f"file://{tmp_path}/bk", "--cluster", "c", "--to",
                       str(tmp_path / "d"), check=False)
    assert again.returncode == 1 and "not empty" in again.stderr
    kept = geocluster("restore", "--from", f"file://{tmp_path}/bk", "--cluster", "c", "--to",
                      str(tmp_path / "d"), "--if-empty")
    assert "not restored (--if-empty)" in kept.stdout
