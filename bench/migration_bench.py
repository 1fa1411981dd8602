"""Live migration (bootstrap.fromLeader): catch-up time and the write pause at detach.

    .venv/bin/python bench/migration_bench.py [--objects 100000] [--repeats 3]

Per repeat: an "old" geoserver with a password (standing in for a Tile38 leader) holding N
points, a new empty geoserver told to follow it the way the operator does it
(``migration.follow``: CONFIG SET leaderauth, FOLLOW), then a writer that writes as fast as one
connection can, logging every acknowledged write; ``migration.detach`` (the steps both runtimes
share: READONLY on the old leader, wait for every byte, FOLLOW no one) while it writes. Reported:
seconds from FOLLOW until the new one is caught up, the write pause as detach measures it
(READONLY yes -> writable), the writer's longest gap between two acknowledged writes (its own
switch to the new leader included), and acknowledged writes missing on the new leader (must be
0). Times are wall clock on this (shared) machine; medians and maxima over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from geocluster import migration  # noqa: E402
from helpers import GeoServer  # noqa: E402


class Writer(threading.Thread):
    """SET as fast as it can on the old leader; on `read only` moves to the new one."""

    def __init__(self, old: GeoServer, new: GeoServer):
        super().__init__(daemon=True)
        self.ports = {"old": (old.port, "oldpw"), "new": (new.port, "newpw")}
        self.acked: list[str] = []
        self.gap, self.done = 0.0, threading.Event()

    def run(self) -> None:
        target, n, last = "old", 0, time.monotonic()
        conn = redis.Redis(port=self.ports[target][0], password=self.ports[target][1], protocol=2)
        while not self.done.is_set():
            n += 1
            try:
                conn.execute_command("SET", "w", f"w{n}", "POINT", 10, 10)
                self.acked.append(f"w{n}")
                now = time.monotonic()
                self.gap, last = max(self.gap, now - last), now
            except redis.RedisError as exc:
                if target == "old" and "read only" in str(exc):
                    target = "new"
                    conn = redis.Redis(port=self.ports[target][0], password=self.ports[target][1], protocol=2)

    def missing(self, server: GeoServer) -> int:
        r = redis.Redis(port=server.port, password="newpw", protocol=2, socket_timeout=60)
        missing = 0
        for start in range(0, len(self.acked), 2000):  # bounded batches (output buffer limits)
            pipe = r.pipeline(transaction=False)
            for oid in self.acked[start:start + 2000]:
                pipe.execute_command("GET", "w", oid)
            replies = pipe.execute(raise_on_error=False)
            missing += sum(1 for got in replies if got is None or isinstance(got, Exception))
        return missing


def fill(server: GeoServer, objects: int) -> None:
    r = redis.Redis(port=server.port, password="oldpw", protocol=2, socket_timeout=120)
    pipe = r.pipeline(transaction=False)
    for i in range(objects):
        pipe.execute_command("SET", "fleet", f"t{i}", "FIELD", "speed", i % 120, "POINT",
                             30 + (i % 10000) / 1e3, -100 - (i // 10000) / 1e3)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


async def once(objects: int, tmp: Path) -> dict:
    old = GeoServer(tmp / "old", args=["--requirepass", "oldpw"]).start()
    new = GeoServer(tmp / "new", args=["--requirepass", "newpw"]).start()
    try:
        fill(old, objects)
        o = migration.Endpoint("old", f"127.0.0.1:{old.port}", "oldpw")
        n = migration.Endpoint("new", f"127.0.0.1:{new.port}", "newpw")
        started = time.monotonic()
        await migration.follow(n, o.address, "oldpw")
        while True:
            was, now = await asyncio.gather(o.observe(), n.observe("follower", timeout=30))
            if now.caught_up and now.aof_size == was.aof_size:
                break
            await asyncio.sleep(0.05)
        catch_up = time.monotonic() - started
        writer = Writer(old, new)
        writer.start()
        await asyncio.sleep(1.0)
        done = await migration.detach(o, n, timeout=60)
        await asyncio.sleep(1.0)
        writer.done.set()
        writer.join(10)
        return {"catch_up_s": round(catch_up, 2), "aof_bytes_caught_up": was.aof_size,
                "pause_ms": done.write_pause_ms,
                "longest_gap_ms": round(writer.gap * 1000), "acked": len(writer.acked),
                "missing": writer.missing(new)}
    finally:
        old.stop()
        new.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(asyncio.run(once(args.objects, Path(tmp))))
        print(json.dumps(runs[-1]), flush=True)
    for key in ("catch_up_s", "pause_ms", "longest_gap_ms", "missing"):
        values = [r[key] for r in runs]
        print(f"{key:15} median {statistics.median(values)}  max {max(values)}")


if __name__ == "__main__":
    main()
