"""AOFSHRINK and full-resync figures on a large dataset (issue: durability/replication).

    python bench/replication_bench.py [--objects 1000000]

Measures, with real geoserver processes on 127.0.0.1:
  1. GET latency p50/p99 idle, then while AOFSHRINK runs (target: p99 during shrink <= 2x idle)
  2. the time a new follower needs for a full resync of the shrunk AOF (target <= 30 s for 1M)
  3. follower RSS / leader RSS after shrink + resync (target <= 1.1)
Not a test: prints figures, never fails CI.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import GeoServer, _encode, wait_until


def bulk_load(server: GeoServer, n: int) -> float:
    """Pipelined SETs over one raw socket, 10k per batch; returns seconds."""
    started = time.perf_counter()
    with socket.create_connection((server.host, server.port)) as sock:
        batch = 10_000
        for base in range(0, n, batch):
            payload = b"".join(
                _encode(["SET", "fleet", f"id{i}", "FIELD", "speed", i % 90,
                         "POINT", 33 + (i % 7919) * 9e-5, -115.36 + (i // 7919) * 5.7e-3])
                for i in range(base, min(n, base + batch))
            )
            sock.sendall(payload)
            want = (min(n, base + batch) - base) * 5  # one "+OK\r\n" per SET
            got = 0
            while got < want:
                got += len(sock.recv(1 << 20))
    return time.perf_counter() - started


def get_latencies(server: GeoServer, n: int, stop_when=None) -> list[float]:
    c = server.client()
    out = []
    for i in range(n):
        t = time.perf_counter()
        c.execute_command("GET", "fleet", f"id{(i * 7919) % 1000}")
        out.append(time.perf_counter() - t)
        if stop_when is not None and stop_when():
            break
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e6 if len(values) > 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="geobench-"))
    leader = GeoServer(base / "leader").start()
    follower = None
    try:
        secs = bulk_load(leader, args.objects)
        print(f"loaded {args.objects:,} objects in {secs:.1f} s ({args.objects / secs:,.0f}/s)")
        # churn so the shrink has something to remove
        bulk_load(leader, min(args.objects, 200_000))
        idle = get_latencies(leader, 3000)
        before = leader.stats()
        leader.json("AOFSHRINK")
        shrinking = get_latencies(leader, 1_000_000, stop_when=lambda: not leader.stats()["aof_shrinking"])
        wait_until(lambda: leader.stats()["last_shrink_time"] > before["last_shrink_time"], 600)
        after = leader.stats()
        print(f"AOFSHRINK: {before['aof_size']:,} -> {after['aof_size']:,} bytes in "
              f"{after['last_shrink_duration_ms'] / 1000:.1f} s ({after['last_shrink_result']})")
        print(f"GET idle:   p50 {pct(idle, 50):.0f} µs  p99 {pct(idle, 99):.0f} µs  (n={len(idle)})")
        print(f"GET shrink: p50 {pct(shrinking, 50):.0f} µs  p99 {pct(shrinking, 99):.0f} µs  "
              f"(n={len(shrinking)})  p99 ratio {pct(shrinking, 99) / pct(idle, 99):.2f}x")
        follower = GeoServer(base / "follower", args=["--follow", f"127.0.0.1:{leader.port}"])
        t0 = time.perf_counter()
        follower.start()
        wait_until(lambda: follower.stats().get("caught_up"), 600, interval=0.05)
        resync = time.perf_counter() - t0
        fst, lst = follower.stats(), leader.stats()
        print(f"full resync of {lst['num_objects']:,} objects ({lst['aof_size']:,} bytes): {resync:.1f} s")
        print(f"aof_size follower/leader: {fst['aof_size']}/{lst['aof_size']}")
        print(f"RSS follower/leader: {fst['mem_alloc'] / 2**20:.0f} MiB / {lst['mem_alloc'] / 2**20:.0f} MiB"
              f" = {fst['mem_alloc'] / lst['mem_alloc']:.2f}")
        follower.json("RESYNC")  # a second resync on a live follower: memory must not double
        time.sleep(0.5)
        wait_until(lambda: follower.stats().get("caught_up"), 600, interval=0.05)
        fst = follower.stats()
        print(f"after a second RESYNC: RSS follower/leader = {fst['mem_alloc'] / lst['mem_alloc']:.2f}")
    finally:
        leader.kill9()
        if follower is not None:
            follower.kill9()


if __name__ == "__main__":
    main()
