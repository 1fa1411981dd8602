"""Switchover and failover of the local runtime: write downtime and acknowledged-write loss.

    python bench/failover_bench.py [--rounds 10] [--stop-rounds 3] [--delay 2] [--objects 20000]
                                   [--appendfsync always]

Runs `geocluster up`'s control loop in-process (real clock, 1 s probe interval) over real
geoserver processes (a leader and two followers), preloads ``--objects`` points, and keeps one
client writing ``SET`` as fast as it can to whoever leads, logging every acknowledged write.
Then, ``--rounds`` times each:
  1. switchover (``promote`` of the next follower): the write pause the runtime measured
     (READONLY on the old leader to promotion done) and the longest gap between acknowledged
     writes seen by the client (includes its reconnect), and lost acknowledged writes;
  2. kill -9 of the leader: time until the first write acknowledged by the new leader (target
     <= delay + 10 s), the bound the runtime reported (lastFailover.behindBytes) and the
     acknowledged writes actually lost.
Then ``--stop-rounds`` times SIGSTOP of the leader (then SIGCONT): the same figures.
Not a test: prints a Markdown table, never fails CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "local")]

from geocluster.local import LocalCluster  # noqa: E402
from geocluster.localstate import StateDir  # noqa: E402
from helpers import _encode  # noqa: E402
from local_lib import FAST, Writer, manifest, merged  # noqa: E402


def preload(port: int, n: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for base in range(0, n, 5000):
            top = min(n, base + 5000)
            sock.sendall(b"".join(_encode(["SET", "base", f"id{i}", "POINT", 33 + i * 1e-5, -115])
                                  for i in range(base, top)))
            want, got = (top - base) * 5, 0
            while got < want:
                got += len(sock.recv(1 << 20))


async def until(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except Exception:  # a bench keeps polling
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("gave up waiting")


def healthy(c: LocalCluster) -> bool:
    return all(m.reachable and (m.role == "leader" or m.caught_up) for m in c.members) and any(
        x["type"] == "Ready" and x["status"] == "True" for x in c.status.get("conditions", []))


async def main(args: argparse.Namespace) -> None:
    spec = merged(FAST, failover={"delay": args.delay, "maxFailoversPerHour": 100},
                  server={"appendfsync": args.appendfsync}, divergence={"gracePeriodSeconds": 60})
    tmp = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    cluster = LocalCluster(manifest(tmp, spec), StateDir(tmp / "state"))
    await cluster.start()
    stopping = asyncio.Event()
    loop = asyncio.create_task(cluster.run(stopping))
    preload(cluster.sup.leader.port, args.objects)
    await until(lambda: healthy(cluster), 120)
    writer = Writer(cluster)
    writer.start()
    switch, fail, stop = [], [], []
    try:
        for _ in range(args.rounds):
            await until(lambda: healthy(cluster) and len(writer.acked) > 50, 120)
            order = sorted(cluster.sup.procs)
            target = order[(order.index(cluster.sup.leader.name) + 1) % len(order)]
            lost_before, t0 = len(writer.lost(cluster.sup.leader.port)), time.monotonic()
            cluster.state.request("promote", target)
            cluster.wake.set()
            await until(lambda: (r := cluster.status.get("lastFailover") or {}).get("new") == target  # noqa: B023
                        and r.get("result") == "ok", 30)
            await until(lambda: writer.acked[-1][2] == target, 30)  # noqa: B023
            await asyncio.sleep(0.5)
            rec = cluster.status["lastFailover"]
            lost = len(writer.lost(cluster.sup.leader.port)) - lost_before
            switch.append((rec["writePauseMs"], writer.longest_gap(t0, time.monotonic()) * 1000, lost))

            await until(lambda: healthy(cluster), 120)
            old = cluster.sup.leader
            acked_before = len(writer.acked)
            killed = time.monotonic()
            os.kill(old.popen.pid, signal.SIGKILL)
            first = await until(lambda: writer.first_ack_after(killed, not_by=old.name), args.delay + 30)  # noqa: B023
            await until(lambda: healthy(cluster), 120)
            rec = cluster.status["lastFailover"]
            acked = {oid for oid, _, _ in writer.acked[:acked_before]}
            lost = len([o for o in writer.lost(cluster.sup.leader.port) if o in acked])
            fail.append((first[1] - killed, rec["behindBytes"], lost))
        for _ in range(args.stop_rounds):  # SIGSTOP: a partition stand-in, fenced by SIGKILL
            await until(lambda: healthy(cluster), 120)
            old = cluster.sup.leader
            old_pid, acked_before = old.popen.pid, len(writer.acked)
            stopped = time.monotonic()
            os.kill(old_pid, signal.SIGSTOP)
            first = await until(lambda: writer.first_ack_after(stopped, not_by=old.name), args.delay + 30)  # noqa: B023
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGCONT)
            await until(lambda: healthy(cluster), 120)
            rec = cluster.status["lastFailover"]
            acked = {oid for oid, _, _ in writer.acked[:acked_before]}
            lost = len([o for o in writer.lost(cluster.sup.leader.port) if o in acked])
            stop.append((first[1] - stopped, rec["behindBytes"], lost))
    finally:
        writer.stop()
        stopping.set()
        await loop
        await cluster.stop()
    print(f"\n{args.rounds} rounds, delay {args.delay}s, probe interval 1s, {args.objects} objects, "
          f"appendfsync {args.appendfsync}, {len(writer.acked)} writes acknowledged; errors seen by the "
          f"client: {dict(writer.errors)}\n")
    print("| figure | median | max |\n|---|---|---|")
    for label, values in [
        ("switchover: writes refused (runtime, ms)", [s[0] for s in switch]),
        ("switchover: longest gap between acks (client, ms)", [s[1] for s in switch]),
        ("switchover: acknowledged writes lost", [s[2] for s in switch]),
        ("kill -9: time to a write acked by the new leader (s)", [f[0] for f in fail]),
        ("kill -9: reported loss bound (behindBytes)", [f[1] for f in fail]),
        ("kill -9: acknowledged writes lost", [f[2] for f in fail]),
        ("SIGSTOP: time to a write acked by the new leader (s)", [f[0] for f in stop]),
        ("SIGSTOP: reported loss bound (behindBytes)", [f[1] for f in stop]),
        ("SIGSTOP: acknowledged writes lost", [f[2] for f in stop]),
    ]:
        if not values:
            continue
        print(f"| {label} | {statistics.median(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--delay", type=int, default=2)
    ap.add_argument("--stop-rounds", type=int, default=3)
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--appendfsync", default="always", choices=["always", "everysec", "no"])
    asyncio.run(main(ap.parse_args()))
