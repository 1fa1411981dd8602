"""Scale: NEARBY IDS 1 km at 100k, 1M and 5M points beside redis-server GEOSEARCH.

    python bench/core_scale.py [--sizes 100000,1000000,5000000] [--cores cpp] [--repeats 3]
                               [--requests 30000] [--no-docs]

Issue 15 asks that NEARBY latency stay flat from 100k to 5M objects. One collection grows in
stages in one geoserver per `--cores` entry (see bench/geo_vs_redis.py; default the compiled core)
and in redis-server beside it, at a constant density: the city density of bench/geo_vs_redis.py
(100k points in 0.72 x 0.72 degrees, ~51 within 1 km), so a stage of n points fills a square of
0.72 * sqrt(n / 100k) degrees from (0, 0) and adds its points uniformly in the part of it the last
stage did not cover. The per-query work (hits, candidates) then stays the same and what grows is
the index: the collection's size, its cells and hash tables, cache misses. After each stage,
with redis-benchmark (50 clients, -P 1 and -P 16, queries uniform over the stage's square):

    NEARBY fleet LIMIT 100 IDS POINT <lat> <lon> 1000
                                      vs  GEOSEARCH fleet FROMLONLAT <lon> <lat> BYRADIUS 1 km

(bench/geo_vs_redis.py's NEARBY workload). Servers on CPU 0, the client on CPU 1; alternating
repeats, medians; server CPU µs per op (psutil), redis-benchmark's ops/s and p50 latency (ms).
Writes its table into docs/benchmarks.md unless --no-docs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geo_vs_redis import (
    CLIENTS,
    call,
    cpu_seconds,
    encode,
    ensure_redis,
    free_port,
    label,
    machine,
    pin,
    start_geoserver,
    start_redis,
    stop,
    write_docs,
)

BEGIN, END = "<!-- core_scale:begin -->", "<!-- core_scale:end -->"
BASE_POINTS, BASE_SIDE = 100_000, 0.72  # bench/geo_vs_redis.py's city: 100k points in 0.72 x 0.72 degrees
COORD = "__rand_int__e-8"  # with -r side * 1e8: [0, side) degrees (redis-benchmark draws below 2^31)
TARGET = "flat"


def side_of(n: int) -> float:
    return BASE_SIDE * math.sqrt(n / BASE_POINTS)


def stage(start: int, n: int, inner: float, side: float,
          rnd: random.Random) -> Iterator[tuple[str, float, float]]:
    """Points truck<start>.. truck<n-1>, uniform in [0, side)^2 outside [0, inner)^2."""
    i = start
    while i < n:
        lat, lon = rnd.random() * side, rnd.random() * side
        if lat < inner and lon < inner:
            continue
        yield f"truck{i}", lat, lon
        i += 1


def load(port: int, commands: Iterator[bytes], batch: int = 5000) -> float:
    """Pipelined load of encoded commands in batches over one connection; returns seconds."""
    import socket

    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        while True:
            chunk = [c for _, c in zip(range(batch), commands, strict=False)]
            if not chunk:
                break
            s.sendall(b"".join(chunk))
            seen, buf = 0, b""
            while seen < len(chunk):
                buf += s.recv(1 << 20)
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                for line in lines:
                    if line.startswith(b"-"):
                        raise SystemExit(f"load failed: {line.decode()}")
                    seen += 1
    return time.perf_counter() - started


def benchmark(port: int, pid: int, command: list[str], pipeline: int, requests: int,
              rand_range: str) -> tuple[float, float, float]:
    """(ops/s, server CPU µs per op, p50 latency ms) of one redis-benchmark run."""
    cmd = [*pin(1), "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS),
           "-n", str(requests), "-P", str(pipeline), "-r", rand_range, "--csv", *command]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    used = cpu_seconds(pid) - before
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({out.returncode}): "
                           f"{out.stdout[-500:]} {out.stderr[-500:]}")
    return float(rows[-1][1]), used / requests * 1e6, float(rows[-1][4])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000,5000000")
    p.add_argument("--cores", default="cpp", help="comma-separated, as bench/geo_vs_redis.py --cores")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=30_000, help="requests per redis-benchmark run")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = args.cores.split(",")
    cores = [label(c) for c in specs]
    ensure_redis()
    env = machine()
    print(env, flush=True)
    rows: list[list[str]] = []
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="core_scale-") as tmp:
        workdir = Path(tmp)
        procs: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            port = free_port()
            procs["redis"] = (port, start_redis(port, workdir, False))
            for spec in specs:
                port = free_port()
                procs[label(spec)] = (port, start_geoserver(port, workdir, False, spec))
            order = list(procs)
            have, inner = 0, 0.0
            for n in sizes:
                side = side_of(n)
                took: dict[str, float] = {}
                for name, (port, _proc) in procs.items():
                    pts = stage(have, n, inner, side, random.Random(38 + n))
                    if name == "redis":
                        cmds = (encode(["GEOADD", "fleet", repr(lo), repr(la), i]) for i, la, lo in pts)
                    else:
                        cmds = (encode(["SET", "fleet", i, "POINT", repr(la), repr(lo)]) for i, la, lo in pts)
                    took[name] = load(port, cmds)
                    print(f"{n:,} points: loaded {n - have:,} more into {name} in {took[name]:.1f}s",
                          flush=True)
                loads.append(f"{n // 1000:,}k: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))
                have, inner = n, side
                lat0 = lon0 = repr(side / 2)
                hits = call(procs[order[-1]][0], ["NEARBY", "fleet", "COUNT", "POINT", lat0, lon0, "1000"])
                count = hits.split(b"\r\n", 1)[0].decode()
                print(f"  within 1 km of the center: {count}", flush=True)
                rand_range = str(int(side * 1e8))
                geo_cmd = ["NEARBY", "fleet", "LIMIT", "100", "IDS", "POINT", COORD, COORD, "1000"]
                redis_cmd = ["GEOSEARCH", "fleet", "FROMLONLAT", COORD, COORD, "BYRADIUS", "1", "km"]
                for pipeline in (1, 16):
                    res: dict[str, list[tuple[float, float, float]]] = {}
                    for repeat in range(args.repeats):
                        for name in order if repeat % 2 == 0 else order[::-1]:
                            port, proc = procs[name]
                            cmd = redis_cmd if name == "redis" else geo_cmd
                            res.setdefault(name, []).append(
                                benchmark(port, proc.pid, cmd, pipeline, args.requests, rand_range))

                    def med(name: str, k: int, res: dict = res) -> float:
                        return statistics.median(r[k] for r in res[name])

                    row = [f"{n:,}", f"-P {pipeline}",
                           f"{med('redis', 0):,.0f} ({med('redis', 1):.1f}; {med('redis', 2):.2f})"]
                    for c in cores:
                        row += [f"{med(c, 0):,.0f} ({med(c, 1):.1f}; {med(c, 2):.2f})",
                                f"{med(c, 0) / med('redis', 0):.2f}x ({med('redis', 1) / med(c, 1):.2f}x)"]
                    rows.append(row)
                    print("  " + " | ".join(row), flush=True)
        finally:
            stop(procs)
    pinned = "servers on CPU 0, redis-benchmark on CPU 1" if pin(0) else "not pinned"
    lines = [
        f"Run: `python bench/core_scale.py --sizes {args.sizes} --cores {args.cores} "
        f"--repeats {args.repeats}` "
        f"({time.strftime('%Y-%m-%d')}; one collection grown in stages at the city density, ~51 points "
        f"per 1 km circle; {CLIENTS} clients; {args.requests:,} requests per run; {pinned}; medians of "
        f"{args.repeats} alternating repeats; pipelined load per stage: {'; '.join(loads)}).",
        "",
        f"Machine: {env}.",
        "",
        "ops/s (server CPU µs per op; redis-benchmark's p50 latency in ms); geoserver/redis: ops/s ratio "
        "and in brackets the CPU ratio (redis CPU µs per op / geoserver CPU µs per op).",
        "",
        "| points | pipeline | redis GEOSEARCH | "
        + " | ".join(f"geoserver {c} NEARBY | {c}/redis" for c in cores) + " |",
        "|---:|---:|---:|" + "---:|---:|" * len(cores),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    section = "\n".join(lines) + "\n"
    print()
    print(section)
    if not args.no_docs:
        write_docs(section, BEGIN, END, "Scale (latest run)")


if __name__ == "__main__":
    main()
