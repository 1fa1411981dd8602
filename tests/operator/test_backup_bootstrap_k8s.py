"""spec.bootstrap on Kubernetes: the members' init container (pure builder tests), and the exact
command line it gets run as a real `geocluster` subprocess against real backups taken from a
real geoserver, into a tmp dir standing in for the pod's data volume (the only emulation: the
volume mount, by swapping /data for that dir, and secretKeyRef env, by reading a dict).

- a directory backup restores into an empty dir (size and md5 as the manifest says, and a
  geoserver started on it serves the data); into a dir with an AOF it is a no-op (a restarted pod);
  a truncated backup fails with one clear line and leaves nothing behind;
- an S3 backup (moto's server on 127.0.0.1) restores with the credentials the builder's env names;
- fromAOF copies an existing AOF, also from S3 with the credentials of its Secret (and fails
  with one line without them); fromLeader and no bootstrap build no init container;
- the report the command writes to the termination log (the operator reads it from the pod
  status: restored bytes and md5, skipped, or why a backup was refused).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from geocluster import backup
from geocluster import resources as r
from geocluster.backupstore import Catalog, open_store
from geocluster.handlers_backup import bootstrap_warning
from geocluster.spec import SpecError, parse_spec
from helpers import GeoServer, s3_server

BIN = Path(sys.executable).parent  # where `geocluster` is installed, as /opt/geocluster/bin in the image
SECRET = {"ACCESS_KEY_ID": "test", "ACCESS_SECRET_KEY": "test"}


def cluster(**spec: Any) -> r.Cluster:
    return r.Cluster("fleet", "geo", "uid-1", parse_spec(spec))


def pod(c: r.Cluster) -> dict[str, Any]:
    return r.build_statefulset(c)["spec"]["template"]["spec"]


def run_init(c: r.Cluster, data: Path, secret: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """Run the init container's command as built, with /data mounted at ``data``, the
    termination log at ``data``.log (``.report`` on the result: what the kubelet would hand
    the API as the termination message) and its secretKeyRef env resolved from ``secret``."""
    init = pod(c)["initContainers"][0]
    log = data.with_suffix(".log")
    log.unlink(missing_ok=True)
    argv = [str(data) if a == r.DATA_DIR else str(log) if a == r.TERMINATION_LOG else a
            for a in init["command"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    for var in init.get("env", []):
        ref = var["valueFrom"]["secretKeyRef"]
        env[var["name"]] = (secret or {})[ref["key"]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    out.report = json.loads(log.read_text()) if log.exists() else None  # type: ignore[attr-defined]
    return out


@pytest.fixture(scope="module")
def leader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(tmp_path_factory.mktemp("src")).start()
    c = server.client()
    for i in range(200):
        c.execute_command("SET", "fleet", f"t{i}", "FIELD", "speed", i, "POINT", 33 + i / 1e3, -115)
    c.execute_command("SET", "fleet", "ttl", "EX", 3600, "POINT", 1, 2)
    yield server
    server.stop()


def take(server: GeoServer, url: str, s3: backup.S3Options | None = None) -> backup.BackupManifest:
    catalog = Catalog(open_store(url, s3), "old")
    return backup.take(catalog, backup.Source("old-1", "follower", f"127.0.0.1:{server.port}"))


# --- builders ---------------------------------------------------------------------------------


def test_no_init_container_without_a_restore():
    for c in (cluster(), cluster(bootstrap={"fromLeader": {"address": "old:9851"}})):
        assert "initContainers" not in pod(c) and r.restore_args(c) is None
    assert r.template_hash(cluster()) == r.template_hash(cluster())


def test_from_backup_init_container():
    c = cluster(image="geo:1", bootstrap={"fromBackup": {
        "source": "s3://bkp/prod", "name": "20300101T000000Z", "cluster": "old",
        "endpointURL": "http://minio:9000", "region": "eu-1",
        "s3Credentials": {"secretName": "s3", "sessionTokenKey": "TOKEN"}}})
    spec = pod(c)
    [init] = spec["initContainers"]
    assert init["name"] == r.BOOTSTRAP_CONTAINER and init["image"] == "geo:1"
    assert init["command"] == [
        "geocluster", "restore", "--to", "/data", "--if-empty", "--report", "/dev/termination-log",
        "--from", "s3://bkp/prod",
        "--cluster", "old", "--backup", "20300101T000000Z", "--endpoint-url", "http://minio:9000",
        "--region", "eu-1"]  # fmt: skip
    assert init["env"] == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "s3", "key": "ACCESS_SECRET_KEY"}}},
        {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "TOKEN"}}},
    ]
    # the pod's data volume (the PVC) and scratch, as hardened as geoserver's container
    assert init["volumeMounts"] == [{"name": "data", "mountPath": "/data"},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    assert init["securityContext"] == spec["containers"][0]["securityContext"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"  # no report: the error's lines
    kubernetes_validate.validate(r.build_statefulset(c), "1.33", strict=True)
    assert r.template_hash(c) != r.template_hash(cluster(image="geo:1"))


def test_defaults_and_from_aof():
    c = cluster(bootstrap={"fromBackup": {"source": "file:///data/bk"}})
    [init] = pod(c)["initContainers"]
    assert init["command"][-6:] == ["--from", "file:///data/bk", "--cluster", "fleet", "--backup", "latest"]
    assert "env" not in init  # no s3Credentials: boto3's default chain (IRSA, instance role)
    aof = cluster(bootstrap={"fromAOF": {"source": "s3://old/appendonly.aof"}})
    [init] = pod(aof)["initContainers"]
    assert init["command"] == ["geocluster", "restore", "--to", "/data", "--if-empty", "--report",
                               "/dev/termination-log", "--aof", "s3://old/appendonly.aof"]
    assert "env" not in init
    creds = cluster(bootstrap={"fromAOF": {"source": "s3://old/appendonly.aof", "endpointURL": "http://m:9000",
                                           "region": "eu-1", "s3Credentials": {"secretName": "old-s3"}}})
    [init] = pod(creds)["initContainers"]
    assert init["command"][-6:] == ["--aof", "s3://old/appendonly.aof", "--endpoint-url", "http://m:9000",
                                    "--region", "eu-1"]
    assert [e["valueFrom"]["secretKeyRef"] for e in init["env"]] == [
        {"name": "old-s3", "key": "ACCESS_KEY_ID"}, {"name": "old-s3", "key": "ACCESS_SECRET_KEY"}]
    kubernetes_validate.validate(r.build_statefulset(creds), "1.33", strict=True)


@pytest.mark.parametrize(("bootstrap", "error"), [
    ({"fromAOF": "s3://old/a.aof"}, "spec.bootstrap.fromAOF: fromAOF is an object: {source: s3://old/a.aof}"),
    ({"fromAOF": {"source": "/data/a.aof", "s3Credentials": {"secretName": "s"}}},
     "spec.bootstrap.fromAOF: s3Credentials: only for an s3:// source"),
    ({"fromAOF": {"source": "s3://old"}}, "spec.bootstrap.fromAOF.source: String should match pattern"),
    ({"fromAOF": {"source": "s3://old/a", "s3Credentials": {}}},
     "spec.bootstrap.fromAOF.s3Credentials.secretName: Field required"),
    ({"fromBackup": {"source": "file:///data/b", "endpointURL": "http://m:9000"}},
     "spec.bootstrap.fromBackup: endpointURL: only for an s3:// source"),
    ({"fromLeader": {"address": "old:99999"}},
     "spec.bootstrap.fromLeader.address: port 99999 is not in 1-65535"),
    ({"fromLeader": {"address": "old"}}, "spec.bootstrap.fromLeader.address: String should match pattern"),
    ({"fromLeader": {"address": "old:9851", "catchUpTimeoutSeconds": 0}},
     "spec.bootstrap.fromLeader.catchUpTimeoutSeconds: Input should be greater than or equal to 1"),
    ({"fromLeader": {"address": "old:9851"}, "fromAOF": {"source": "/data/a"}},
     "spec.bootstrap: give exactly one of fromBackup, fromAOF, fromLeader"),
])
def test_invalid_bootstrap_specs_are_refused_clearly(bootstrap, error):
    with pytest.raises(SpecError) as exc:
        parse_spec({"bootstrap": bootstrap})
    assert str(exc.value).startswith(error), str(exc.value)


def test_warnings_only_for_what_is_not_applied():
    assert bootstrap_warning({"fromLeader": {"address": "old:9851"}}) is None  # handlers_bootstrap's
    assert bootstrap_warning({"fromBackup": {"source": "s3://bkp/p"}}) is None
    assert bootstrap_warning({"fromAOF": {"source": "s3://old/a.aof"}}) is None
    assert bootstrap_warning({"fromBackup": {"source": "file:///data/bk"}}) is None
    for source in ({"fromBackup": {"source": "file:///backups"}}, {"fromAOF": {"source": "/mnt/old.aof"}}):
        assert bootstrap_warning(source)[0] == "BootstrapSourceNotMounted"
    assert bootstrap_warning({}) is None


# --- the command line, run ----------------------------------------------------------------------


def test_init_command_restores_once_and_refuses_a_truncated_backup(leader, tmp_path):
    root = tmp_path / "bk"
    m = take(leader, f"file://{root}")
    c = cluster(bootstrap={"fromBackup": {"source": f"file://{root}", "cluster": "old"}})
    data = tmp_path / "pvc"
    out = run_init(c, data)
    assert out.returncode == 0, out.stderr
    assert f"restored {m.name}" in out.stdout
    assert out.report["result"] == "restored" and out.report["aofSize"] == m.aof_size
    assert out.report["md5"] == m.md5 and out.report["backup"] == m.name
    aof = data / backup.AOF_FILE
    assert aof.stat().st_size == m.aof_size
    server = GeoServer(data).start()
    try:
        assert server.json("AOFMD5", 0, m.aof_size)["md5"] == m.md5
        assert server.json("SCAN", "fleet", "COUNT")["count"] == 201
    finally:
        server.stop()
    before = aof.read_bytes()
    again = run_init(c, data)  # the pod restarted: its volume is kept, not restored over
    assert again.returncode == 0 and "not restored (--if-empty)" in again.stdout
    assert again.report["result"] == "skipped"
    assert aof.read_bytes() == before

    obj = root / "old" / m.name / m.object
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    empty = tmp_path / "pvc2"
    bad = run_init(c, empty)
    assert bad.returncode == 1
    [line] = bad.stderr.strip().splitlines()
    assert f"backup {m.name} refused" in line and "truncated" in line
    assert bad.report["result"] == "error" and line.removeprefix("Error: ") == bad.report["message"]
    assert not empty.exists() or list(empty.iterdir()) == []  # nothing a geoserver could serve


def test_init_command_restores_from_s3_with_the_secret_env(leader, tmp_path):
    with s3_server("backups") as url:
        s3 = backup.S3Options(endpoint_url=url, region="us-east-1", access_key_id="test",
                              secret_access_key="test")
        m = take(leader, "s3://backups/prod", s3)
        c = cluster(bootstrap={"fromBackup": {"source": "s3://backups/prod", "cluster": "old",
                                              "endpointURL": url, "region": "us-east-1",
                                              "s3Credentials": {"secretName": "s3"}}})
        out = run_init(c, tmp_path / "pvc", SECRET)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "pvc" / backup.AOF_FILE).stat().st_size == m.aof_size


def test_init_command_copies_an_aof_from_s3_with_its_secret(leader, tmp_path):
    """fromAOF's own endpoint, region and Secret: without the Secret's keys boto3 has no
    credentials (its default chain is empty here) and the restore fails with one line."""
    with s3_server("old-tile38", key="ak", secret="sk") as url:
        s3 = backup.S3Options(endpoint_url=url, region="us-east-1", access_key_id="ak",
                              secret_access_key="sk")
        with open(leader.aof_path, "rb") as f:
            open_store("s3://old-tile38", s3).put("dump/appendonly.aof", f)
        boot = {"source": "s3://old-tile38/dump/appendonly.aof", "endpointURL": url, "region": "us-east-1"}
        bare = run_init(cluster(bootstrap={"fromAOF": boot}), tmp_path / "pvc0")
        assert bare.returncode == 1 and "credentials" in bare.stderr.lower(), bare.stderr
        assert len(bare.stderr.strip().splitlines()) == 1 and bare.report["result"] == "error"
        c = cluster(bootstrap={"fromAOF": {**boot, "s3Credentials": {"secretName": "old-s3"}}})
        out = run_init(c, tmp_path / "pvc", {"ACCESS_KEY_ID": "ak", "ACCESS_SECRET_KEY": "sk"})
        assert out.returncode == 0, out.stderr
        copied = (tmp_path / "pvc" / backup.AOF_FILE).read_bytes()
        assert copied == leader.aof_path.read_bytes()
        assert out.report["result"] == "restored" and out.report["aofSize"] == len(copied)


def test_init_command_copies_an_aof(leader, tmp_path):
    c = cluster(bootstrap={"fromAOF": {"source": str(leader.aof_path)}})  # as an existing Tile38's AOF
    out = run_init(c, tmp_path / "pvc")
    assert out.returncode == 0, out.stderr
    copied = (tmp_path / "pvc" / backup.AOF_FILE).read_bytes()
    assert len(copied) == leader.stats()["aof_size"] and copied == leader.aof_path.read_bytes()
    assert run_init(c, tmp_path / "pvc").stdout.endswith("not restored (--if-empty)\n")
