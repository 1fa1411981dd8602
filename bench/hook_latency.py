"""End-to-end hook event latency to a local HTTP receiver, and what delivery costs the writes.

    python bench/hook_latency.py [--rate 1000] [--seconds 10] [--appendfsync everysec]

Starts one geoserver process (its own data dir) and, in this process, an aiohttp receiver and a
redis.asyncio client on one event loop (one clock for both ends). Three phases of `--seconds`
each at `--rate` SET/s, every SET moving a new object into a fence:
  1. no hook: SET round-trip latency without fences (the baseline);
  2. SETHOOK to the receiver (DETECT enter): per event, the time from sending the SET that causes
     it to the receiver reading the POST (enqueue, queue.db commit, worker, HTTP); events lost;
  3. the same hook pointed at a receiver that never answers (hook-timeout 2 s): SET latency
     while delivery times out, to show a hanging endpoint does not slow the writes.
Prints a Markdown table (p50 / p99 / max). Not a test: never fails CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
import redis.asyncio as aioredis
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import free_port, wait_until  # noqa: E402

FENCE = ["NEARBY", "fleet", "FENCE", "DETECT", "enter", "POINT", 33.5, -115.5, 5000]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(name: str, values: list[float], cpu_us: float | None = None, extra: str = "") -> str:
    ms = [v * 1000 for v in values]
    cpu = f"{cpu_us:.0f}" if cpu_us is not None else ""
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |"
            f" {cpu} | {extra} |")


class CpuMeter:
    """geoserver's CPU seconds (user + system) across a phase: contention on a shared machine
    stretches latencies, much less the CPU a SET and its event cost the server."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self._now()

    def _now(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def per(self, n: int) -> float:
        return (self._now() - self.start) / n * 1e6


class Receiver:
    def __init__(self, hang: bool = False) -> None:
        self.arrived: dict[str, float] = {}
        self.hang = hang
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived.setdefault(orjson.loads(body)["id"], time.monotonic())
        if self.hang:
            await asyncio.sleep(3600)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def paced_sets(client: aioredis.Redis, prefix: str, rate: int, seconds: float) -> tuple[dict, list]:
    """SET a new object inside the fence `rate` times a second; send times and round trips."""
    sent: dict[str, float] = {}
    rtts: list[float] = []
    n = int(rate * seconds)
    start = time.monotonic()
    pending: set[asyncio.Task] = set()

    async def one(oid: str) -> None:
        t = time.monotonic()
        sent[oid] = t
        await client.execute_command("SET", "fleet", oid, "POINT", 33.5, -115.5)
        rtts.append(time.monotonic() - t)

    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(f"{prefix}{i}"))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return sent, rtts


async def run(args: argparse.Namespace) -> list[str]:
    data = Path(tempfile.mkdtemp(prefix="hookbench-"))
    port = free_port()
    log = open(data / "server.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "geoserver", "--port", str(port), "--dir", str(data / "d"),
                             "--appendfsync", args.appendfsync, "--hook-timeout", "2"],
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    lines = []
    try:
        pool = aioredis.BlockingConnectionPool(port=port, protocol=2, max_connections=256, timeout=None)
        client = aioredis.Redis(connection_pool=pool)
        wait_until(lambda: proc.poll() is None and _ping(port), 20, message="geoserver")
        cpu = CpuMeter(proc.pid)
        _, base = await paced_sets(client, "base", args.rate, args.seconds)
        lines.append(row("SET, no hook", base, cpu.per(len(base))))

        receiver = Receiver()
        await receiver.start()
        await client.execute_command("SETHOOK", "bench", f"http://127.0.0.1:{receiver.port}/hook", *FENCE)
        cpu, own = CpuMeter(proc.pid), time.process_time()
        sent, rtts = await paced_sets(client, "hooked", args.rate, args.seconds)
        deadline = time.monotonic() + 30
        while len(receiver.arrived) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        hooked_cpu = cpu.per(len(sent))  # SET + its event's queueing and delivery
        latencies = [receiver.arrived[oid] - t for oid, t in sent.items() if oid in receiver.arrived]
        lost = len(sent) - len(latencies)
        lines.append(row("SET, hook to a live receiver", rtts, hooked_cpu))
        own_us = (time.process_time() - own) / len(sent) * 1e6  # this process: client and receiver
        lines.append(row("event: SET sent -> POST received", latencies,
                         extra=f"{lost} not delivered; bench process {own_us:.0f} µs CPU per SET+event"))
        await receiver.stop()

        hanging = Receiver(hang=True)
        await hanging.start()
        await client.execute_command("SETHOOK", "bench", f"http://127.0.0.1:{hanging.port}/hook", *FENCE)
        cpu = CpuMeter(proc.pid)
        _, stalled = await paced_sets(client, "stalled", args.rate, args.seconds)
        lines.append(row("SET, hook to a receiver that never answers", stalled, cpu.per(len(stalled))))
        await client.aclose()
        await hanging.stop()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    return lines


def _ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(port=port, socket_timeout=1).ping())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="SET (and events) per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    args = parser.parse_args()
    lines = asyncio.run(run(args))
    print(f"{args.rate} SET/s for {args.seconds:g} s per phase, appendfsync {args.appendfsync}\n")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| what | samples | p50 ms | p99 ms | max ms | server CPU µs per SET | |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
