"""Switchover and failover of the local runtime: write downtime and acknowledged-write loss.

    python bench/failover_bench.py [--rounds 10] [--stop-rounds 10] [--delay 2] [--objects 20000]
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
Then ``--stop-rounds`` times SIGSTOP of the leader (then SIGCONT): the same figures, and the
writes the woken old process took when tried directly (must be 0: it was fenced).
After each kill -9 and SIGSTOP round the writer pauses until every member's AOF is
byte-identical (the killed ex-leader back as a follower, resynced): yes/no per round.

``--kubernetes``: the Kubernetes path instead. The real kopf operator runs against kmock's
emulated API (no kube-apiserver here; tests/operator/opharness.py plays the StatefulSet
controller), real geoserver processes stand in for the pods, and the writer goes to the member
``status.leader`` names (the write Service's endpoint, without kube-proxy's propagation).
``--rounds`` switchovers by the promote annotation (the operator's writePauseMs, the client's
longest gap, lost writes), then ``--stop-rounds`` partitions of the leader (SIGSTOP; its pod is
deleted by the fencing, its process is never killed): time to a write on the new leader, the
lease length, loss, and the writes the woken old leader accepted (must be 0).
Not a test: prints a Markdown table, never fails CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "local")]

from geocluster.local import LocalCluster  # noqa: E402
from geocluster.localstate import StateDir  # noqa: E402
from helpers import _encode  # noqa: E402
from local_lib import FAST, Writer, manifest, merged  # noqa: E402

MIN_RECORD = 40  # bytes of the smallest `SET fleet w<n> POINT ..` record (as tests/local)


class PausingWriter(Writer):
    """local_lib's Writer (same ids, same log) that can be paused between writes."""

    def __init__(self, cluster: LocalCluster):
        super().__init__(cluster)
        self.go = threading.Event()
        self.go.set()

    def run(self) -> None:
        import redis

        n, conn, name = 0, None, ""
        while not self.done.is_set():
            if not self.go.wait(0.1):
                continue
            if conn is None:
                lead = self.cluster.sup.leader
                name = lead.name
                conn = redis.Redis(port=lead.port, protocol=2, socket_timeout=self.timeout,
                                   socket_connect_timeout=self.timeout)
            n += 1
            try:
                conn.execute_command("SET", self.key, f"w{n}", "POINT", 33 + (n % 1000) / 1000, -115)
                self.acked.append((f"w{n}", time.monotonic(), name))
            except redis.RedisError as exc:
                self.errors[str(exc).split(":")[0][:60]] += 1
                conn.close()
                conn = None
                time.sleep(0.005)
        if conn is not None:
            conn.close()


def identical(c: LocalCluster) -> bool:
    files = [(c.state.member_dir(n) / "appendonly.aof").read_bytes() for n in c.sup.procs]
    return all(f == files[0] for f in files)


async def settle(c: LocalCluster, writer: PausingWriter) -> bool:
    """Writes paused until every member is caught up with byte-identical AOFs (60 s at most)."""
    writer.go.clear()
    await asyncio.sleep(0.2)  # a write in flight lands
    try:
        await until(lambda: healthy(c) and identical(c), 60)
        return True
    except TimeoutError:
        return False
    finally:
        writer.go.set()


def taken_by(port: int, tries: int = 20) -> int:
    """Writes a member on ``port`` acknowledges, of ``tries`` sent to it directly."""
    import redis

    r = redis.Redis(port=port, protocol=2, socket_timeout=2, socket_connect_timeout=2)
    taken = 0
    for j in range(tries):
        with contextlib.suppress(redis.RedisError):
            r.execute_command("SET", "fleet", f"split{j}", "POINT", 1, 1)
            taken += 1
    return taken


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
    writer = PausingWriter(cluster)
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
            same = await settle(cluster, writer)
            acked = {oid for oid, _, _ in writer.acked[:acked_before]}
            lost = len([o for o in writer.lost(cluster.sup.leader.port) if o in acked])
            fail.append((first[1] - killed, rec["behindBytes"], lost, same))
            print(f"kill -9 {old.name}: writable after {first[1] - killed:.2f}s, bound "
                  f"{rec['behindBytes']}, lost {lost}, identical {same}", file=sys.stderr)
        for _ in range(args.stop_rounds):  # SIGSTOP: a partition stand-in, fenced by SIGKILL
            await until(lambda: healthy(cluster), 120)
            old = cluster.sup.leader
            old_pid, acked_before = old.popen.pid, len(writer.acked)
            stopped = time.monotonic()
            os.kill(old_pid, signal.SIGSTOP)
            first = await until(lambda: writer.first_ack_after(stopped, not_by=old.name), args.delay + 30)  # noqa: B023
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGCONT)
            taken = await asyncio.to_thread(taken_by, old.port)  # the woken old one, directly
            await until(lambda: healthy(cluster), 120)
            rec = cluster.status["lastFailover"]
            same = await settle(cluster, writer)
            acked = {oid for oid, _, _ in writer.acked[:acked_before]}
            lost = len([o for o in writer.lost(cluster.sup.leader.port) if o in acked])
            stop.append((first[1] - stopped, rec["behindBytes"], lost, same, taken))
            print(f"SIGSTOP {old.name}: writable after {first[1] - stopped:.2f}s, bound "
                  f"{rec['behindBytes']}, lost {lost}, identical {same}, woken took {taken}/20",
                  file=sys.stderr)
    finally:
        writer.stop()
        stopping.set()
        await loop
        await cluster.stop()
    print(f"\n{args.rounds} rounds, delay {args.delay}s, probe interval 1s, {args.objects} objects, "
          f"appendfsync {args.appendfsync}, {len(writer.acked)} writes acknowledged; errors seen by the "
          f"client: {dict(writer.errors)}\n")
    print_table([
        ("switchover: writes refused (runtime, ms)", [s[0] for s in switch]),
        ("switchover: longest gap between acks (client, ms)", [s[1] for s in switch]),
        ("switchover: acknowledged writes lost", [s[2] for s in switch]),
        ("kill -9: time to a write acked by the new leader (s)", [f[0] for f in fail]),
        ("kill -9: reported loss bound (behindBytes)", [f[1] for f in fail]),
        ("kill -9: acknowledged writes lost", [f[2] for f in fail]),
        ("SIGSTOP: time to a write acked by the new leader (s)", [f[0] for f in stop]),
        ("SIGSTOP: reported loss bound (behindBytes)", [f[1] for f in stop]),
        ("SIGSTOP: acknowledged writes lost", [f[2] for f in stop]),
        ("SIGSTOP: writes the woken old leader took (of 20)", [f[4] for f in stop]),
    ])
    within = [f for f in fail + stop if f[2] * MIN_RECORD <= f[1]]
    print(f"\nlost x {MIN_RECORD} bytes <= behindBytes in {len(within)} of {len(fail) + len(stop)} "
          f"failovers; members byte-identical after {sum(f[3] for f in fail + stop)} of "
          f"{len(fail) + len(stop)}; kill -9 writable within delay + 10 s in "
          f"{sum(f[0] <= args.delay + 10 for f in fail)} of {len(fail)}; switchovers losing a "
          f"write: {sum(s[2] > 0 for s in switch)} of {len(switch)}")


def print_table(rows: list[tuple[str, list[float]]]) -> None:
    """The figures as a Markdown table (median and max), rows without values left out."""
    print("| figure | median | max |\n|---|---|---|")
    for label, values in rows:
        if values:
            print(f"| {label} | {statistics.median(values):.1f} | {max(values):.1f} |")


async def main_kubernetes(args: argparse.Namespace) -> None:
    """The Kubernetes path (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "tests" / "operator"))
    os.environ.setdefault("GEOCLUSTER_TICK_SECONDS", "0.3")
    os.environ.setdefault("GEOCLUSTER_PROBE_TIMEOUT", "1")
    os.environ.setdefault("GEOCLUSTER_FOLLOW_BY", "ip")
    import redis.asyncio as aioredis
    from geocluster import failover, kube
    from geocluster.spec import parse_spec, parse_time
    from kmock._internal import apps
    from opharness import (
        RESOURCES,
        SPEC,
        KopfEmulator,
        Members,
        Operator,
        annotate,
        gc_status,
        pod,
        pod_ip,
        start_cluster,
        start_member,
    )
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    promote = "geo.geocluster.io/promote"
    spec = {**SPEC, "failover": {"delay": args.delay, "maxFailoversPerHour": 100},
            "divergence": {**SPEC["divergence"], "gracePeriodSeconds": 60}}
    handlers_mod = __import__("geocluster.handlers", fromlist=["RENEW_EVERY"])
    lease = failover.lease_plan(parse_spec(spec), handlers_mod.RENEW_EVERY)
    tmp = Path(tempfile.mkdtemp(prefix="failover-k8s-bench-"))
    members = Members(tmp)
    acked: list[tuple[str, float, str]] = []
    errors: dict[str, int] = {}
    stop_writing = asyncio.Event()

    async def write_loop(api) -> None:
        conns: dict[str, aioredis.Redis] = {}
        i = 0
        while not stop_writing.is_set():
            leader = (gc_status(api).get("leader") if api.objects else None) or pod(0)
            r = conns.setdefault(leader, aioredis.Redis(host=pod_ip(leader), port=9851, protocol=2,
                                                        socket_timeout=0.5, socket_connect_timeout=0.5,
                                                        retry=Retry(NoBackoff(), 0)))
            try:
                await r.execute_command("SET", "fleet", f"w{i}", "POINT", 33, -115)
                acked.append((f"w{i}", time.monotonic(), leader))
                i += 1
                await asyncio.sleep(args.write_interval)  # a steady writer, not a saturating one
            except Exception as exc:  # counted, retried
                key = str(exc).split(" (")[0][:40]
                errors[key] = errors.get(key, 0) + 1
                conns.pop(leader, None)
                await asyncio.sleep(0.005)

    def gap(since: float) -> float:
        times = [t for _, t, _ in acked if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def lost(api) -> int:
        """Writes acknowledged so far that the current leader does not hold."""
        snapshot = list(acked)
        leader = gc_status(api)["leader"]
        async with aioredis.Redis(host=pod_ip(leader), port=9851, protocol=2) as r:
            r.response_callbacks.clear()
            have = set()
            cursor = 0
            while True:
                reply = await r.execute_command("SCAN", "fleet", "CURSOR", cursor, "LIMIT", 10000, "IDS")
                cursor, ids = int(reply[0]), reply[1]
                have.update(x.decode() for x in ids)
                if cursor == 0:
                    break
        return len([k for k, _, _ in snapshot if k not in have])

    switch, stops = [], []
    async with KopfEmulator() as api, apps.Server(api):
        os.environ["GEOCLUSTER_K8S_URL"] = str(api.url).rstrip("/")
        kube.api.cache_clear()
        for resource, info in RESOURCES.items():
            api.resources[resource] = info
        op = await Operator().start()
        writer = None
        try:
            await start_cluster(api, members, spec)
            await until(lambda: gc_status(api)["readyFollowers"] == 2, 60)
            writer = asyncio.create_task(write_loop(api))
            for k in range(args.rounds):
                await until(lambda: gc_status(api)["readyFollowers"] == 2 and len(acked) > 50, 60)
                old = gc_status(api)["leader"]
                target = next(pod(j) for j in ((k + 1) % 3, (k + 2) % 3) if pod(j) != old)
                t0, before = time.monotonic(), await lost(api)
                await annotate(api, {promote: target})
                await until(lambda: (r := gc_status(api).get("lastFailover") or {}).get("new") == target  # noqa: B023
                            and r.get("result") == "ok" and acked[-1][2] == target, 60)  # noqa: B023
                await asyncio.sleep(0.5)
                pause = gc_status(api)["lastFailover"]["writePauseMs"]
                switch.append((pause, gap(t0) * 1000, await lost(api) - before))
            for _ in range(args.stop_rounds):  # once both followers count as candidates
                await until(lambda: len(gc_status(api)["leaderWatch"]["caughtUp"]) == 2, 120)
                old = gc_status(api)["leader"]
                proc = members.procs[old]
                before = await lost(api)
                stopped, stopped_wall = time.monotonic(), time.time()
                os.kill(proc.pid, signal.SIGSTOP)
                await until(lambda: gc_status(api)["leader"] != old, args.delay + 60)  # noqa: B023
                promoted = time.monotonic()
                try:
                    first = await until(lambda: next((a for a in acked if a[1] > stopped  # noqa: B023
                                                      and a[2] != old), None), args.delay + 60)  # noqa: B023
                except TimeoutError:
                    print("no failover; status:", gc_status(api), "errors:", errors)
                    raise
                os.kill(proc.pid, signal.SIGCONT)
                taken = 0
                async with aioredis.Redis(host=pod_ip(old), port=9851, protocol=2, socket_timeout=2) as r:
                    for j in range(20):
                        with contextlib.suppress(Exception):
                            await r.execute_command("SET", "fleet", f"split{j}", "POINT", 1, 1)
                            taken += 1
                rec = gc_status(api)["lastFailover"]
                started = parse_time(rec["time"]).timestamp() - stopped_wall  # 1 s resolution
                loss = await lost(api) - before
                moved = promoted - stopped
                stops.append((first[1] - stopped, rec["behindBytes"], loss, taken, started, moved))
                members.stop(old)  # the node is back: the kubelet restarts the pod, as a follower
                await start_member(api, members, old, spec=spec)
        finally:
            stop_writing.set()
            if writer is not None:
                await writer
            await op.stop()
            members.close()
    print(f"\nKubernetes path (kopf on kmock's emulated API, real geoservers): {args.rounds} switchovers, "
          f"{args.stop_rounds} SIGSTOP partitions, delay {args.delay}s, lease {lease.seconds:.1f}s "
          f"(+{lease.margin:.2f}s margin), tick {os.environ['GEOCLUSTER_TICK_SECONDS']}s, "
          f"{len(acked)} writes acknowledged; errors seen by the client: {errors}\n")
    print_table([
        ("switchover: writes refused (operator, ms)", [s[0] for s in switch]),
        ("switchover: longest gap between acks (client, ms)", [s[1] for s in switch]),
        ("switchover: acknowledged writes lost", [s[2] for s in switch]),
        ("partition (SIGSTOP): failover started after (s; status time, whole s)", [f[4] for f in stops]),
        ("partition (SIGSTOP): status.leader moved after (s)", [f[5] for f in stops]),
        ("partition (SIGSTOP): time to a write acked by the new leader (s)", [f[0] for f in stops]),
        ("partition: reported loss bound (behindBytes)", [f[1] for f in stops]),
        ("partition: acknowledged writes lost", [f[2] for f in stops]),
        ("partition: writes the woken old leader took (of 20)", [f[3] for f in stops]),
    ])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--delay", type=int, default=2)
    ap.add_argument("--stop-rounds", type=int, default=10)
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--appendfsync", default="always", choices=["always", "everysec", "no"])
    ap.add_argument("--kubernetes", action="store_true", help="the emulated-API path (see above)")
    ap.add_argument("--write-interval", type=float, default=0.005,
                    help="--kubernetes: seconds between writes (a saturating writer keeps followers "
                    "from ever being seen caught up, which blocks failovers: FailoverBlocked)")
    parsed = ap.parse_args()
    asyncio.run(main_kubernetes(parsed) if parsed.kubernetes else main(parsed))
