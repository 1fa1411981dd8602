"""The backup library against real geoservers: a directory and a real S3 API on 127.0.0.1 (moto
in server mode). Backups from a follower and from the leader, every compression, restore into
an empty data dir and compare SCAN (fields, TTLs, GeoJSON, strings), HOOKS and AOFMD5; corrupt,
truncated and incomplete backups are refused with a clear error; retention deletes whole
backups; bad destinations are named."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from geocluster import backup
from geocluster.backupstore import BackupError, Catalog, S3Options, open_store
from helpers import GeoServer, free_port, s3_server, wait_until

KEYS = ("fleet", "zones")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Options]:
    """A real S3 endpoint (moto's server) on a free port, with the bucket `backups`."""
    with s3_server("backups") as url:
        yield S3Options(endpoint_url=url, region="us-east-1", access_key_id="test",
                        secret_access_key="test")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GeoServer, GeoServer]]:
    """A leader with data (fields, TTLs, GeoJSON, strings) and a caught-up follower."""
    d = tmp_path_factory.mktemp("pair")
    leader = GeoServer(d / "leader").start()
    follower = GeoServer(d / "follower", args=["--follow", f"127.0.0.1:{leader.port}"]).start()
    c = leader.client()
    # a hook (an endpoint nobody listens on: delivery retries quietly) is part of the dataset
    c.execute_command("SETHOOK", "h1", "http://127.0.0.1:9/hook", "NEARBY", "fleet", "FENCE",
                      "POINT", 33, -115, 500)
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        pipe.execute_command("SET", "fleet", f"truck{i}", "FIELD", "speed", i % 90, "FIELD", "fuel", i % 7,
                             "POINT", 33 + i / 1e4, -115 - i / 1e4)
    pipe.execute_command("SET", "fleet", "ttl1", "EX", 3600, "POINT", 1, 2)
    pipe.execute_command("SET", "zones", "z1", "OBJECT",
                         '{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}')
    pipe.execute_command("SET", "zones", "label", "STRING", "hello world")
    pipe.execute_command("DEL", "fleet", "truck7")
    pipe.execute()
    wait_until(lambda: follower.stats().get("caught_up")
               and follower.stats()["aof_size"] == leader.stats()["aof_size"], message="caught up")
    yield leader, follower
    follower.stop()
    leader.stop()


def scan_all(server: GeoServer) -> dict[str, list]:
    """Every object of every key, with fields (TTLs as present/absent)."""
    out = {}
    for key in KEYS:
        reply = server.json("SCAN", key, "LIMIT", 100000)
        out[key] = sorted((o["id"], str(o["object"]), o.get("fields")) for o in reply["objects"])
    out["ttl1"] = [server.json("TTL", "fleet", "ttl1")["ttl"] > 0]
    out["hooks"] = [(h["name"], h["command"], h["endpoints"]) for h in server.json("HOOKS", "*")["hooks"]]
    return out


def source(server: GeoServer, name: str, role: str) -> backup.Source:
    return backup.Source(name, role, f"127.0.0.1:{server.port}")


def restored(tmp_path: Path, catalog: Catalog, name: str) -> tuple[GeoServer, backup.BackupManifest]:
    manifest = backup.restore(catalog, name, tmp_path / "restored")
    server = GeoServer(tmp_path / "restored").start()
    return server, manifest


@pytest.mark.parametrize("where", ["file", "s3"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_round_trip_from_the_follower(pair, s3, tmp_path, where, compression):
    leader, follower = pair
    url = f"file://{tmp_path}/bk" if where == "file" else f"s3://backups/{tmp_path.name}/{compression}"
    catalog = Catalog(open_store(url, s3), "geo")
    m = backup.take(catalog, source(follower, "follower-1", "follower"), compression=compression)
    size = leader.stats()["aof_size"]
    assert (m.aof_size, m.source, m.compression, m.objects) == (size, "follower-1", compression, 3002)
    assert m.md5 == leader.json("AOFMD5", 0, size)["md5"]
    assert [b.name for b in catalog.list()] == [m.name]
    server, got = restored(tmp_path, catalog, "latest")
    try:
        assert got.name == m.name
        assert server.json("AOFMD5", 0, m.aof_size)["md5"] == m.md5
        assert scan_all(server) == scan_all(leader)
    finally:
        server.stop()


def test_backup_from_the_leader_is_a_prefix_while_writes_go_on(pair, tmp_path):
    leader, _ = pair
    catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "geo")
    before = leader.stats()["aof_size"]
    m = backup.take(catalog, source(leader, "leader", "leader"), compression="gzip")
    leader.client().execute_command("SET", "fleet", "late", "POINT", 5, 5)  # after: not in it
    assert m.aof_size == before and m.source_role == "leader"
    assert leader.json("AOFMD5", 0, m.aof_size)["md5"] == m.md5
    backup.verify(catalog, m.name)


@pytest.mark.skipif(importlib.util.find_spec("zstandard") is None,
                    reason="zstandard is not installed (zstd is optional)")
def test_zstd_round_trip(pair, tmp_path):
    _, follower = pair
    catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "geo")
    m = backup.take(catalog, source(follower, "f", "follower"), compression="zstd")
    assert backup.verify(catalog, m.name).object.endswith(".zst")


def test_zstd_without_the_package_is_a_clear_error(monkeypatch, pair, tmp_path):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "geo")
    with pytest.raises(BackupError, match="zstd needs the zstandard package"):
        backup.take(catalog, source(pair[1], "f", "follower"), compression="zstd")


def corrupt(catalog_root: Path, name: str, how: str) -> None:
    obj = catalog_root / "geo" / name / "appendonly.aof.gz"
    data = obj.read_bytes()
    if how == "truncated":
        obj.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # same size, a byte changed inside the compressed data
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 0xFF
        obj.write_bytes(bytes(raw))
    elif how == "reencoded":  # a valid gzip of different content, same stored size in the manifest
        body = gzip.decompress(data).replace(b"truck1", b"truckX", 1)
        obj.write_bytes(gzip.compress(body))
        manifest = catalog_root / "geo" / name / "backup.json"
        doc = json.loads(manifest.read_text())
        doc["storedSize"] = obj.stat().st_size
        manifest.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["truncated", "flipped", "reencoded"])
def test_corrupt_or_truncated_backups_are_refused(pair, tmp_path, how):
    root = tmp_path / "bk"
    catalog = Catalog(open_store(f"file://{root}"), "geo")
    m = backup.take(catalog, source(pair[1], "f", "follower"), compression="gzip")
    corrupt(root, m.name, how)
    with pytest.raises(BackupError, match=f"backup {m.name} refused"):
        backup.restore(catalog, m.name, tmp_path / "restored")
    assert not (tmp_path / "restored" / "appendonly.aof").exists()  # nothing left to serve
    assert list((tmp_path / "restored").glob(".*")) == []


def test_incomplete_backups_are_not_listed_and_retention_deletes_whole_backups(pair, tmp_path):
    root = tmp_path / "bk"
    catalog = Catalog(open_store(f"file://{root}"), "geo")
    names = []
    for i in range(3):
        names.append(backup.take(catalog, source(pair[1], "f", "follower"), name=f"2030010{i}T000000Z").name)
    (root / "geo" / names[2] / "backup.json").unlink()  # as if the upload was cut
    assert [m.name for m in catalog.list()] == names[:2]
    assert catalog.names() == names
    with pytest.raises(BackupError, match="no complete backup"):
        backup.restore(catalog, names[2], tmp_path / "r")
    catalog.delete(names[:1])
    assert catalog.names() == names[1:] and not (root / "geo" / names[0]).exists()


def test_restore_refuses_a_data_dir_with_data(pair, tmp_path):
    catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "geo")
    m = backup.take(catalog, source(pair[1], "f", "follower"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "appendonly.aof").write_bytes(b"*1\r\n$4\r\nPING\r\n")
    with pytest.raises(BackupError, match="not empty"):
        backup.restore(catalog, m.name, tmp_path / "dir")


def test_s3_errors_and_bad_destinations_are_named(s3, tmp_path):
    for url, why in [("http://x/y", "unsupported destination"), ("file://host/x", "local path"),
                     ("s3:///x", "name a bucket")]:
        with pytest.raises(BackupError, match=why):
            open_store(url, s3)
    missing = Catalog(open_store("s3://no-such-bucket/x", s3), "geo")
    with pytest.raises(BackupError, match="NoSuchBucket"):
        missing.list()
    empty = Catalog(open_store(f"s3://backups/{tmp_path.name}-empty", s3), "geo")
    with pytest.raises(BackupError, match="no complete backup of 'geo'"):
        empty.get("latest")


def test_unreachable_source_and_wrong_password(pair, tmp_path):
    catalog = Catalog(open_store(f"file://{tmp_path}/bk"), "geo")
    with pytest.raises(BackupError, match="cannot connect"):
        backup.take(catalog, backup.Source("gone", "leader", f"127.0.0.1:{free_port()}"))
    with pytest.raises(BackupError, match="AUTH"):
        backup.take(catalog, backup.Source("f", "follower", f"127.0.0.1:{pair[1].port}", password="nope"))
    assert catalog.names() == []


def test_from_aof_copies_a_file_and_an_s3_object(pair, s3, tmp_path):
    leader, _ = pair
    size = leader.stats()["aof_size"]
    shutil.copyfile(leader.aof_path, tmp_path / "tile38.aof")
    assert backup.restore_aof(str(tmp_path / "tile38.aof"), tmp_path / "a") >= size
    store = open_store(f"s3://backups/{tmp_path.name}-aof", s3)
    store.put("appendonly.aof", io.BytesIO((tmp_path / "tile38.aof").read_bytes()))
    assert backup.restore_aof(f"s3://backups/{tmp_path.name}-aof/appendonly.aof", tmp_path / "b", s3) >= size
    server = GeoServer(tmp_path / "b").start()
    try:
        assert server.stats()["num_objects"] >= 3002
    finally:
        server.stop()
    with pytest.raises(BackupError, match="No such file"):
        backup.restore_aof(str(tmp_path / "missing.aof"), tmp_path / "c")
