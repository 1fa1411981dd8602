"""Backup and restore throughput for N objects (default 1M points with a field), to a directory
and to S3 (moto's server on 127.0.0.1), per compression; and how a new follower is fastest
bootstrapped: a full stream from the leader, or the restored backup plus an incremental catch-up.

    .venv/bin/python bench/backup_bench.py [--objects 1000000] [--out results.json]

Every backup is taken from a real geoserver (a caught-up follower, as the operator does) over
the replication protocol and verified (size, AOFMD5); every restore is verified (size, md5)
before the file is placed. Times are wall clock on this (shared) machine; CPU seconds (of the
geoserver processes from /proc, and of this process, which also runs moto's server and does the
hashing and compression) survive the load of other jobs better.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from geocluster import backup  # noqa: E402
from geocluster.backupstore import Catalog, S3Options, open_store  # noqa: E402
from helpers import GeoServer, free_port, wait_until  # noqa: E402


def fill(server: GeoServer, objects: int) -> None:
    r = redis.Redis(port=server.port, protocol=2, socket_timeout=120)
    pipe = r.pipeline(transaction=False)
    for i in range(objects):
        pipe.execute_command("SET", "fleet", f"truck{i}", "FIELD", "speed", i % 120,
                             "POINT", 30 + (i % 10000) / 1e3, -100 - (i // 10000) / 1e3)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def cpu(server: GeoServer) -> float:
    """user+system CPU seconds of a geoserver process so far."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def caught_up(server: GeoServer, size: int) -> bool:
    s = server.stats()
    return bool(s.get("caught_up")) and s.get("aof_size") == size


def mb(n: int) -> float:
    return round(n / 1e6, 1)


def run(objects: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    out: dict[str, Any] = {"objects": objects, "runs": []}
    moto = None
    try:
        from moto.server import ThreadedMotoServer

        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        s3 = S3Options(endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                       access_key_id="k", secret_access_key="s")
        boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket="bench")
        leader = GeoServer(tmp / "leader").start()
        t = time.monotonic()
        fill(leader, objects)
        out["fill_seconds"] = round(time.monotonic() - t, 1)
        size = leader.stats()["aof_size"]
        out["aof_bytes"] = size
        follower = GeoServer(tmp / "follower", args=["--follow", f"127.0.0.1:{leader.port}"]).start()
        t, lead0 = time.monotonic(), cpu(leader)
        wait_until(lambda: caught_up(follower, size), 600, 0.05, message="follower caught up")
        out["follower_full_sync_seconds"] = round(time.monotonic() - t, 2)
        out["follower_full_sync_cpu"] = round(cpu(follower), 2)  # from its start: no data before
        out["follower_full_sync_leader_cpu"] = round(cpu(leader) - lead0, 2)
        source = backup.Source("follower", "follower", f"127.0.0.1:{follower.port}")
        for where in ("file", "s3"):
            for compression in ("none", "gzip"):
                url = f"file://{tmp}/bk-{compression}" if where == "file" else f"s3://bench/{compression}"
                catalog = Catalog(open_store(url, s3), "bench")
                t, c0, f0 = time.monotonic(), time.process_time(), cpu(follower)
                m = backup.take(catalog, source, compression=compression)
                took, took_cpu = time.monotonic() - t, time.process_time() - c0
                source_cpu = cpu(follower) - f0
                target = tmp / f"restore-{where}-{compression}"
                t, c0 = time.monotonic(), time.process_time()
                backup.restore(catalog, m.name, target)
                restored, restored_cpu = time.monotonic() - t, time.process_time() - c0
                out["runs"].append({
                    "destination": where, "compression": compression, "aof_mb": mb(m.aof_size),
                    "stored_mb": mb(m.stored_size), "backup_seconds": round(took, 2),
                    "backup_mb_per_s": round(m.aof_size / 1e6 / took, 1),
                    "restore_seconds": round(restored, 2),
                    "restore_mb_per_s": round(m.aof_size / 1e6 / restored, 1),
                    "backup_cpu": round(took_cpu, 2), "backup_source_cpu": round(source_cpu, 2),
                    "restore_cpu": round(restored_cpu, 2),
                })
                print(json.dumps(out["runs"][-1]), flush=True)
                if (where, compression) != ("file", "gzip"):
                    shutil.rmtree(target)
        # a new follower from the restored backup: load it, then catch up incrementally
        seeded = tmp / "restore-file-gzip"
        t, lead0 = time.monotonic(), cpu(leader)
        second = GeoServer(seeded, args=["--follow", f"127.0.0.1:{leader.port}"]).start(wait=False)
        wait_until(lambda: caught_up(second, size), 600, 0.05, message="seeded follower caught up")
        out["follower_from_backup_seconds"] = round(time.monotonic() - t, 2)
        out["follower_from_backup_cpu"] = round(cpu(second), 2)  # loading the file + the catch-up
        out["follower_from_backup_leader_cpu"] = round(cpu(leader) - lead0, 2)
        out["follower_from_backup_resyncs"] = second.stats()["resyncs"]
        for s in (second, follower, leader):
            s.stop()
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = run(args.objects)
    result["cpu"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
